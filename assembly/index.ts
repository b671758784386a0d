// The module's exports: one entry per stage, each over a range of tiles [t0, t1) so that a pool
// of workers can split any stage by handing out tile ranges.
export { input_max, input_max_tiles, input_range, prescale, prescale_tiles } from './check';
export { k_mean, quantize_q, quantize_k, pack_q_f32, pack_k_f32 } from './quantize';
export { pool_q, pool_k, predict } from './predict';
export {
  attend_sparse, attend_sparse_step_i16_load, attend_sparse_step_i16_shuffle, attend_sparse_step_i8_load,
  attend_sparse_step_i8_shuffle, attend_sparse_f32, attend_dense, attend_dense_step, merge_splits,
  attention_scratch_bytes, part_bytes, relaxed_dot_probe,
} from './attention';
export { kv_append, kv_append_scratch_bytes } from './kvcache';
