// Appending to a KV cache (src/kvcache.ts). The cache keeps, per kv head, the layouts Stage 1 and
// Stage 2 read: packed FP32 keys, V rows (and their bfloat16 copy, P.VH, for sparse steps), and
// per key block its INT8 codes and scale, pooled key and self-similarity. An append touches only
// the blocks that receive new rows: the partial block they extend is unpacked, completed and made
// again, so the work is O(new rows + one block) per head whatever the history. Appending no rows
// after LEN0 remakes the partial block of a cache truncated to LEN0 tokens.
import { P } from './params';
import { param, ptr, zeroRow, bf16x8 } from './simd';
import { meanOf, packKeys, unpackKeys, quantizeKeyBlock } from './quantize';
import { poolBlock } from './predict';

/** Per-worker scratch of kv_append: a block of rows, poolBlock's two accumulator rows, and two more. */
export function kv_append_scratch_bytes(bk: i32, dp: i32): i32 {
  return (bk + 4) * dp * 4;
}

/** The append of NNEW rows after LEN0 rows (NK = LEN0 + NNEW): tile = kv head. */
export function kv_append(p: usize, t0: i32, t1: i32, worker: i32): void {
  if (param(p, P.QK_MODE)) append<i8>(p, t0, t1, worker);
  else append<i16>(p, t0, t1, worker);
}

@inline function append<T>(p: usize, t0: i32, t1: i32, worker: i32): void {
  const dp = param(p, P.DP), bk = param(p, P.BK), kstride = param(p, P.KSTRIDE);
  const len0 = param(p, P.LEN0), nk = param(p, P.NK), nnew = param(p, P.NNEW);
  const stride = <usize>dp << 2;
  const rows = ptr(p, P.SCRATCH) + <usize>worker * param(p, P.SCRATCH_STRIDE);
  const pooled = rows + <usize>bk * stride, blockMean = pooled + 2 * stride, seen = blockMean + stride;
  for (let h = t0; h < t1; h++) {
    const knew = ptr(p, P.KNEW) + <usize>h * nnew * stride;
    const mean = ptr(p, P.KMEAN) + <usize>h * stride;
    // The smoothing vector is fixed by the first rows a cache receives (softmax ignores any fixed
    // shift of the keys, see ALGORITHM.md), so no block's codes need remaking as the mean drifts.
    if (len0 == 0 && nnew > 0 && param(p, P.SMOOTH)) meanOf(knew, nnew, dp, mean);
    const head = <usize>h * kstride;
    const vnew = ptr(p, P.VNEW) + <usize>h * nnew * stride;
    memory.copy(ptr(p, P.V) + (head * bk + len0) * stride, vnew, <usize>nnew * stride);
    const vh = ptr(p, P.VH);
    if (vh != 0) {
      const dst = vh + (head * bk + len0) * (stride >> 1);
      for (let i: usize = 0; i < <usize>nnew * dp; i += 8) store<v128>(dst + (i << 1), bf16x8(load<v128>(vnew + (i << 2)), load<v128>(vnew + (i << 2), 16)));
    }
    for (let j = len0 / bk; j * bk < nk; j++) {
      const key0 = j * bk, valid = min(bk, nk - key0), old = max(0, len0 - key0);
      const kt = head + j;
      const packed = ptr(p, P.KF) + kt * bk * stride;
      if (old > 0) unpackKeys(packed, rows, old, dp);
      memory.copy(rows + <usize>old * stride, knew + <usize>(key0 + old - len0) * stride, <usize>(valid - old) * stride);
      zeroRow(rows + <usize>valid * stride, (bk - valid) * dp);
      packKeys(rows, packed, bk, dp);
      // Self-similarity is measured around the mean of every key so far, which a full call's
      // smoothing (the mean of all its keys) approaches; the pooled key keeps the fixed vector.
      const psum = ptr(p, P.KPSUM) + (<usize>h * (kstride + 1) + j) * stride;
      meanOf(rows, valid, dp, blockMean);
      const n = f32x4.splat(<f32>valid), inv = f32x4.splat(<f32>1 / <f32>(key0 + valid));
      for (let d: usize = 0; d < stride; d += 16) {
        const total = f32x4.add(load<v128>(psum + d), f32x4.mul(load<v128>(blockMean + d), n));
        store<v128>(psum + stride + d, total);
        store<v128>(seen + d, f32x4.mul(total, inv));
        store<v128>(ptr(p, P.KBAR) + (kt * dp << 2) + d, f32x4.sub(load<v128>(blockMean + d), load<v128>(mean + d)));
      }
      store<f32>(ptr(p, P.KSIM) + (kt << 2), poolBlock(rows, seen, valid, dp, pooled));
      quantizeKeyBlock<T>(rows, mean, valid, bk, dp, ptr(p, P.KC) + kt * bk * dp, ptr(p, P.KSCALE) + (kt << 2));
    }
  }
}
