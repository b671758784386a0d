// sparge-wasm: SpargeAttn (training-free sparse + INT8 quantized attention) on WebAssembly SIMD128.
import { Engine, type Tensor, type BlockMask, type SpargeOptions, type DenseOptions, type AttentionResult } from './engine.js';
import { type Features, type SimdChoice, chooseModule, compileModule, detect } from './loader.js';
import type { TensorLike, BlockMaskLike } from './checks.js';
import { checkOptions } from './checks.js';

export type { Tensor, TensorLike, BlockMask, BlockMaskLike, SpargeOptions, DenseOptions, AttentionResult, Features, SimdChoice };
export { DEFAULT_BLOCK_Q, DEFAULT_BLOCK_K } from './engine.js';

export interface CreateOptions {
  /** number of threads, or 'auto'; 1 runs on the calling thread */
  threads?: number | 'auto';
  /** which WebAssembly build to load */
  simd?: SimdChoice;
}

export interface Sparge {
  readonly threads: number;
  readonly features: Features;
  /** bytes of WebAssembly memory held; it grows to the largest call and is reused */
  readonly memoryBytes: number;
  attention(q: TensorLike, k: TensorLike, v: TensorLike, options?: SpargeOptions): Promise<AttentionResult>;
  predictMask(q: TensorLike, k: TensorLike, options?: SpargeOptions): Promise<BlockMask>;
  blockSparseAttention(q: TensorLike, k: TensorLike, v: TensorLike, mask: BlockMaskLike, options?: SpargeOptions): Promise<AttentionResult>;
  denseAttention(q: TensorLike, k: TensorLike, v: TensorLike, options?: DenseOptions): Promise<Tensor>;
  dispose(): Promise<void>;
}

export async function createSparge(options: CreateOptions = {}): Promise<Sparge> {
  const o = checkOptions(options, ['threads', 'simd']);
  const threads = o.threads;
  if (threads !== undefined && threads !== 'auto' && !(Number.isInteger(threads) && (threads as number) >= 1)) {
    throw new RangeError(`options.threads must be a positive integer or 'auto', got ${JSON.stringify(threads)}`);
  }
  const kind = chooseModule(o.simd);
  const found = detect();
  const features: Features = {
    ...found,
    sharedArrayBuffer: typeof SharedArrayBuffer !== 'undefined',
    threads: false,
    threadsReason: 'the worker pool is not built yet: every call runs on the calling thread',
    module: kind,
  };
  let engine: Engine | undefined = new Engine(await compileModule(kind), features);
  const live = () => {
    if (!engine) throw new Error('this sparge engine was disposed');
    return engine;
  };
  // Calls are synchronous inside; the async signatures leave room for the worker pool.
  return {
    get threads() { return live().threads; },
    features,
    get memoryBytes() { return live().memoryBytes; },
    attention: async (q, k, v, opts) => live().attention(q, k, v, opts),
    predictMask: async (q, k, opts) => live().predictMask(q, k, opts),
    blockSparseAttention: async (q, k, v, mask, opts) => live().blockSparseAttention(q, k, v, mask, opts),
    denseAttention: async (q, k, v, opts) => live().denseAttention(q, k, v, opts),
    dispose: async () => { engine = undefined; },
  };
}
