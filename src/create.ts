// Makes an engine from createSparge's options. Shared by both entries: what differs between them
// (starting workers, reading a module's URL) comes in as a Host, so that the single-thread entry
// (src/single.ts) reaches no node: module and no worker script, not even through a dynamic import.
import { Engine, type Tensor, type TensorWithLse, type BlockMask, type SpargeOptions, type DenseOptions, type AttentionResult, type PerHead, type QKPrecision, type OrderOption } from './engine.js';
import {
  type Features, type SimdChoice, type ModuleKind, type WasmSource, type WasmSources, type Int8Dot, type Splat,
  checkWasm, chooseModule, compileModule, detect, checkInt8Dot, resolveInt8Dot, checkSplat, resolveSplat, isUrl,
} from './loader.js';
import type { TensorLike, BlockMaskLike } from './checks.js';
import { checkOptions } from './checks.js';
import { MAX_BYTES, PAGE } from './memory.js';
import type { Pool } from './pool.js';
import { type Sample, type CalibrateOptions, type Calibration, type TunedParams, calibrate } from './calibrate.js';
import { type KVCache, type KVCacheOptions, type AppendOptions, KVCacheImpl } from './kvcache.js';

// The public types, which both entries export.
export type {
  Tensor, TensorWithLse, KVCache, KVCacheOptions, AppendOptions, TensorLike, BlockMask, BlockMaskLike, SpargeOptions, DenseOptions, AttentionResult, PerHead, QKPrecision, OrderOption, Features,
  SimdChoice, ModuleKind, WasmSource, WasmSources, Int8Dot, Splat, Sample, CalibrateOptions, Calibration, TunedParams,
};

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
  /**
   * Where the worker script (dist/src/worker.js, self-contained) is, for bundlers that move files;
   * by default ./worker.js next to the library's module. Used by Web Workers and worker_threads.
   */
  workerUrl?: string | URL;
}

export interface Sparge {
  readonly threads: number;
  readonly features: Features;
  /** bytes of WebAssembly memory held; it grows to the largest call and is reused (0 after dispose) */
  readonly memoryBytes: number;
  attention(q: TensorLike, k: TensorLike, v: TensorLike, options?: SpargeOptions): Promise<AttentionResult>;
  predictMask(q: TensorLike, k: TensorLike, options?: SpargeOptions): Promise<BlockMask>;
  blockSparseAttention(q: TensorLike, k: TensorLike, v: TensorLike, mask: BlockMaskLike, options?: SpargeOptions): Promise<AttentionResult>;
  /** with returnLse: true the tensor also carries lse, each row's log-sum-exp */
  denseAttention(q: TensorLike, k: TensorLike, v: TensorLike, options?: DenseOptions): Promise<Tensor | TensorWithLse>;
  /** the sparsest per-head settings whose output stays within options.target on the samples */
  calibrate(samples: Sample | Sample[], options?: CalibrateOptions): Promise<Calibration>;
  /** a KV cache in this engine's memory, for chunked prefill and decoding (src/kvcache.ts) */
  createKVCache(options: KVCacheOptions): KVCache;
  dispose(): Promise<void>;
}

/** A pool that started, with the shared memory and module it runs. */
export interface Threads {
  pool: Pool;
  memory: WebAssembly.Memory;
  module: WebAssembly.Module;
  workers: 'web' | 'worker_threads';
}

/** What an entry brings: how it reads a module's URL and, if it has any, how it starts workers. */
export interface Host {
  read(url: URL): Promise<BufferSource>;
  /** Why this entry never starts workers; else hardwareThreads and startPool are given. */
  singleThread?: string;
  hardwareThreads?(): Promise<number>;
  /** Starts `size` workers running the `${kind}-shared` build, or says why it cannot. */
  startPool?(kind: 'relaxed' | 'baseline', sources: WasmSources | undefined, size: number, workerUrl: URL | undefined): Promise<Threads | string>;
}

/** A shared memory for the pool, or why there can be none here. */
export function sharedMemory(): WebAssembly.Memory | string {
  if (typeof SharedArrayBuffer === 'undefined') {
    return 'SharedArrayBuffer is not available (in a browser: the page is not cross-origin isolated)';
  }
  try {
    return new WebAssembly.Memory({ initial: 2, maximum: MAX_BYTES / PAGE, shared: true });
  } catch (e) {
    return `a shared WebAssembly.Memory could not be created: ${(e as Error).message}`;
  }
}

/** Validates options.workerUrl; a string resolves against the page's location where there is one. */
function checkWorkerUrl(url: unknown): URL | undefined {
  if (url === undefined || isUrl(url)) return url;
  if (typeof url !== 'string') {
    const got = url === null ? 'null' : (url as object)?.constructor?.name ?? typeof url;
    throw new TypeError(`options.workerUrl must be a URL or a URL string, got ${got}`);
  }
  const base = (globalThis as { location?: { href: string } }).location?.href;
  try {
    return new URL(url, base);
  } catch {
    throw new TypeError(`options.workerUrl is not a valid URL: ${JSON.stringify(url)} (a relative one needs a page's location to resolve against)`);
  }
}

export async function makeSparge(options: CreateOptions, host: Host): Promise<Sparge> {
  const o = checkOptions(options, ['threads', 'simd', 'wasm', 'int8Dot', 'splat', 'workerUrl']);
  const asked = o.threads ?? 'auto';
  if (asked !== 'auto' && !(Number.isInteger(asked) && (asked as number) >= 1)) {
    throw new RangeError(`options.threads must be a positive integer or 'auto', got ${JSON.stringify(asked)}`);
  }
  const sources = checkWasm(o.wasm);
  const { value: kind, reason: moduleReason } = chooseModule(o.simd, sources);
  const int8Dot = checkInt8Dot(o.int8Dot, kind);
  const { value: splat, reason: splatReason } = resolveSplat(checkSplat(o.splat));
  const workerUrl = checkWorkerUrl(o.workerUrl);
  const features: Features = {
    ...detect(),
    sharedArrayBuffer: typeof SharedArrayBuffer !== 'undefined',
    threads: false,
    module: kind,
    moduleReason,
    int8Dot: 'i16',
    int8DotReason: '',
    splat,
    splatReason,
  };

  let threads: Threads | undefined;
  if (host.singleThread !== undefined) features.threadsReason = host.singleThread;
  else {
    const want = asked === 'auto' ? await host.hardwareThreads!() : (asked as number);
    if (want > 1) {
      const started = await host.startPool!(kind, sources, want, workerUrl);
      if (typeof started === 'string') features.threadsReason = started;
      else {
        threads = started;
        features.threads = true;
        features.workers = started.workers;
      }
    } else {
      features.threadsReason = asked === 'auto' ? 'this machine offers one thread' : 'threads: 1 was asked for';
    }
  }
  const module = threads?.module ?? await compileModule(kind, sources, host.read);
  const memory = threads?.memory ?? new WebAssembly.Memory({ initial: 2, maximum: MAX_BYTES / PAGE });

  let engine: Engine | undefined = new Engine(module, memory, features, threads?.pool);
  const dot = resolveInt8Dot(int8Dot, kind, () => engine!.relaxedDotProbe());
  features.int8Dot = dot.value;
  features.int8DotReason = dot.reason;
  const live = () => {
    if (!engine) throw new Error('this sparge engine was disposed');
    return engine;
  };
  // Properties keep answering after dispose(): the threads the engine ran with, and no memory held.
  const threadCount = engine.threads;
  const api: Sparge = {
    threads: threadCount,
    features,
    get memoryBytes() { return engine?.memoryBytes ?? 0; },
    attention: async (q, k, v, opts) => live().attention(q, k, v, opts),
    predictMask: async (q, k, opts) => live().predictMask(q, k, opts),
    blockSparseAttention: async (q, k, v, mask, opts) => live().blockSparseAttention(q, k, v, mask, opts),
    denseAttention: async (q, k, v, opts) => live().denseAttention(q, k, v, opts),
    calibrate: async (samples, opts) => calibrate(live(), samples, opts),
    createKVCache: (opts) => new KVCacheImpl(live, opts),
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
