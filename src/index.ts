// sparge-wasm: SpargeAttn (training-free sparse + INT8 quantized attention) on WebAssembly SIMD128.
import { Engine, type Tensor, type BlockMask, type SpargeOptions, type DenseOptions, type AttentionResult, type PerHead, type QKPrecision } from './engine.js';
import {
  type Features, type SimdChoice, type ModuleKind, type WasmSource, type WasmSources, type Int8Dot, type Splat,
  checkWasm, chooseModule, compileModule, detect, checkInt8Dot, resolveInt8Dot, checkSplat, resolveSplat,
} from './loader.js';
import type { TensorLike, BlockMaskLike } from './checks.js';
import { checkOptions } from './checks.js';
import { MAX_BYTES, PAGE } from './memory.js';
import { Pool, workerKind } from './pool.js';
import { type Sample, type CalibrateOptions, type Calibration, type TunedParams, calibrate } from './calibrate.js';

export type {
  Tensor, TensorLike, BlockMask, BlockMaskLike, SpargeOptions, DenseOptions, AttentionResult, PerHead, QKPrecision, Features, SimdChoice,
  ModuleKind, WasmSource, WasmSources, Int8Dot, Splat, Sample, CalibrateOptions, Calibration, TunedParams,
};
export { DEFAULT_BLOCK_Q, DEFAULT_BLOCK_K } from './engine.js';

export interface CreateOptions {
  /** number of threads, or 'auto'; 1 runs on the calling thread */
  threads?: number | 'auto';
  /** which WebAssembly build to load */
  simd?: SimdChoice;
  /**
   * The INT8 dot product of the QK kernel (results are the same, speed is not): 'i16' is
   * i32x4.dot_i16x8_s, 'relaxed' the relaxed i8 x i7 dot (relaxed module only); 'auto' picks i16
   * where the engine lowers the relaxed dot x86-style, where it measured slower.
   */
  int8Dot?: 'auto' | Int8Dot;
  /**
   * How Stage 2 broadcasts a Q or P lane (results are the same, speed is not): 'load' is
   * load32_splat, 'shuffle' a vector load and lane shuffles; 'auto' picks load in Node and Chromium
   * (V8 with guard-page bounds checks) and shuffle elsewhere (Deno, Bun), as measured fastest.
   */
  splat?: 'auto' | Splat;
  /**
   * The builds to use instead of loading build/sparge.<kind>.wasm next to the package, for runtimes
   * and bundlers that forbid fetching or compiling at run time. Only the builds given are used:
   * threads need the '-shared' build of the chosen kind, one thread the plain one.
   */
  wasm?: WasmSources;
}

export interface Sparge {
  readonly threads: number;
  readonly features: Features;
  /** bytes of WebAssembly memory held; it grows to the largest call and is reused (0 after dispose) */
  readonly memoryBytes: number;
  attention(q: TensorLike, k: TensorLike, v: TensorLike, options?: SpargeOptions): Promise<AttentionResult>;
  predictMask(q: TensorLike, k: TensorLike, options?: SpargeOptions): Promise<BlockMask>;
  blockSparseAttention(q: TensorLike, k: TensorLike, v: TensorLike, mask: BlockMaskLike, options?: SpargeOptions): Promise<AttentionResult>;
  denseAttention(q: TensorLike, k: TensorLike, v: TensorLike, options?: DenseOptions): Promise<Tensor>;
  /** the sparsest per-head settings whose output stays within options.target on the samples */
  calibrate(samples: Sample | Sample[], options?: CalibrateOptions): Promise<Calibration>;
  dispose(): Promise<void>;
}

/** Threads the machine offers: navigator.hardwareConcurrency, else Node's os.availableParallelism(). */
async function hardwareThreads(): Promise<number> {
  const nav = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator;
  if (nav?.hardwareConcurrency) return nav.hardwareConcurrency;
  try {
    const os = await import('node:os');
    return os.availableParallelism?.() ?? os.cpus().length;
  } catch {
    return 1;
  }
}

/** A shared memory for the pool, or why there can be none here. */
function sharedMemory(): WebAssembly.Memory | string {
  if (typeof SharedArrayBuffer === 'undefined') {
    return 'SharedArrayBuffer is not available (in a browser: the page is not cross-origin isolated)';
  }
  try {
    return new WebAssembly.Memory({ initial: 2, maximum: MAX_BYTES / PAGE, shared: true });
  } catch (e) {
    return `a shared WebAssembly.Memory could not be created: ${(e as Error).message}`;
  }
}

export async function createSparge(options: CreateOptions = {}): Promise<Sparge> {
  const o = checkOptions(options, ['threads', 'simd', 'wasm', 'int8Dot', 'splat']);
  const asked = o.threads ?? 'auto';
  if (asked !== 'auto' && !(Number.isInteger(asked) && (asked as number) >= 1)) {
    throw new RangeError(`options.threads must be a positive integer or 'auto', got ${JSON.stringify(asked)}`);
  }
  const sources = checkWasm(o.wasm);
  const kind = chooseModule(o.simd, sources);
  const int8Dot = checkInt8Dot(o.int8Dot, kind);
  const splat = resolveSplat(checkSplat(o.splat));
  const want = asked === 'auto' ? await hardwareThreads() : (asked as number);
  const features: Features = {
    ...detect(),
    sharedArrayBuffer: typeof SharedArrayBuffer !== 'undefined',
    threads: false,
    module: kind,
    int8Dot: 'i16',
    splat,
  };

  let pool: Pool | undefined;
  let memory: WebAssembly.Memory | undefined;
  let module: WebAssembly.Module | undefined;
  if (want > 1) {
    const shared = sharedMemory();
    const workers = await workerKind();
    if (sources && !sources[`${kind}-shared`]) features.threadsReason = `options.wasm holds no '${kind}-shared' module`;
    else if (typeof shared === 'string') features.threadsReason = shared;
    else if (!workers) features.threadsReason = 'this runtime has neither Web Workers nor worker_threads';
    else {
      module = await compileModule(`${kind}-shared`, sources);
      try {
        pool = await Pool.create(workers, module, shared, want);
        memory = shared;
        features.threads = true;
        features.workers = workers;
      } catch (e) {
        features.threadsReason = `workers could not be started: ${(e as Error).message}`;
      }
    }
  } else {
    features.threadsReason = asked === 'auto' ? 'this machine offers one thread' : 'threads: 1 was asked for';
  }
  if (!pool) {
    module = await compileModule(kind, sources);
    memory = new WebAssembly.Memory({ initial: 2, maximum: MAX_BYTES / PAGE });
  }

  let engine: Engine | undefined = new Engine(module!, memory!, features, pool);
  features.int8Dot = resolveInt8Dot(int8Dot, () => engine!.relaxedDotProbe());
  const live = () => {
    if (!engine) throw new Error('this sparge engine was disposed');
    return engine;
  };
  // Properties keep answering after dispose(): the threads the engine ran with, and no memory held.
  const threads = engine.threads;
  const api: Sparge = {
    threads,
    features,
    get memoryBytes() { return engine?.memoryBytes ?? 0; },
    attention: async (q, k, v, opts) => live().attention(q, k, v, opts),
    predictMask: async (q, k, opts) => live().predictMask(q, k, opts),
    blockSparseAttention: async (q, k, v, mask, opts) => live().blockSparseAttention(q, k, v, mask, opts),
    denseAttention: async (q, k, v, opts) => live().denseAttention(q, k, v, opts),
    calibrate: async (samples, opts) => calibrate(live(), samples, opts),
    dispose: async () => {
      const e = engine;
      engine = undefined;
      await e?.dispose();
    },
  };
  // Not part of the API: lets the tests force a failure inside the workers.
  Object.defineProperty(api, 'debugRun', { value: (p: number, stages: [string, number][]) => live().debugRun(p, stages) });
  Object.defineProperty(api, 'debugTerminate', { value: (i: number) => live().debugTerminate(i) });
  return api;
}
