// A KV cache for chunked prefill and decoding: the keys and values of one sequence live in the
// engine's memory in the layouts the kernels read (packed FP32 keys, V rows and their bfloat16
// copy for sparse steps, and per key block its INT8 codes, pooled key and self-similarity), made
// once as tokens arrive (assembly/kvcache.ts).
// A call over the cache writes only its queries and reads only the blocks it attends to: its
// serial work is O(new tokens + output), never O(history).
//
// Decoding has one query row per head, too few tiles for the threads, so each query tile's key
// blocks are cut into fixed ranges of SPAN blocks whose partial results merge by log-sum-exp
// (flash-decoding, llama.cpp's split-KV). The ranges depend on the shapes only, never on the
// threads, so results are bitwise the same on any number of threads.
import { P } from '../assembly/params.js';
import {
  type Layout, type TensorLike, checkTensor, checkLayout, checkBool, checkNumber, checkBlock, checkOptions, checkOutput, checkSignal, checkFinite,
} from './checks.js';
import {
  type Engine, type Call, type AttentionResult, type Tensor, type TensorWithLse, type SpargeOptions, type DenseOptions,
  SPARGE_KEYS, DENSE_KEYS, DEFAULT_BLOCK_Q, allowedBlocks, checkDensePrecision, denseKernel, relaid,
} from './engine.js';
import { type CacheRegion, type Job, Planner, dimsOf } from './memory.js';
import type { Stage } from './tiles.js';

export interface KVCacheOptions {
  /** key/value heads (Hkv); query heads may be any multiple of them (GQA) */
  heads: number;
  headDim: number;
  /** tokens to reserve; the cache grows past it as needed (default 4096) */
  capacity?: number;
  /** key block size of Stage 1 and of the INT8 codes (default 64) */
  blockK?: number;
  /** of the tensors passed to append and of the queries: 'HND' (default) or 'NHD'; batch 1 */
  layout?: Layout;
  /**
   * Smooth the keys' INT8 codes by a fixed vector, the mean of the first tokens appended (default
   * true; softmax is unchanged by it, the codes' error is smaller)
   */
  smoothK?: boolean;
  /**
   * The values a sparse step (at most 4 query rows) reads: 'bf16' (default), a bfloat16 copy kept
   * beside the FP32 values, half the bytes to read, each value's relative error at most 2^-9;
   * 'fp32' keeps no copy (a fifth less memory). Dense calls and longer queries read FP32.
   */
  sparseValues?: 'bf16' | 'fp32';
}

export interface AppendOptions {
  signal?: AbortSignal;
}

export interface KVCache {
  /** tokens held, counting appends made and not yet finished */
  readonly length: number;
  /** tokens the cache holds without growing */
  readonly capacity: number;
  readonly heads: number;
  readonly headDim: number;
  readonly blockK: number;
  /** new tokens' keys and values: dims [Hkv, n, D] or [1, Hkv, n, D] (NHD: [n, Hkv, D], [1, n, Hkv, D]) */
  append(k: TensorLike, v: TensorLike, options?: AppendOptions): Promise<void>;
  /** sparse attention of q (the last Nq tokens' queries when causal) over every token appended */
  attention(q: TensorLike, options?: SpargeOptions): Promise<AttentionResult>;
  /** dense FP32 attention of q over every token appended */
  denseAttention(q: TensorLike, options?: DenseOptions): Promise<Tensor | TensorWithLse>;
  /** keeps the first n tokens (rollback, speculative decoding) */
  truncate(n: number): void;
  clear(): void;
  /** returns the cache's memory to the engine */
  dispose(): Promise<void>;
}

/** Key blocks per split of a decode step: 1024 keys, about half a megabyte of K and V per tile. */
const SPAN_BLOCKS = 16;
const DEFAULT_CAPACITY = 4096;
/** Keys are used as appended (assembly/check.ts rescales a call's inputs, not a cache's). */
const K_LIMIT = 2 ** 40;

export class KVCacheImpl implements KVCache {
  readonly heads: number;
  readonly headDim: number;
  readonly blockK: number;
  private readonly layout: Layout;
  private readonly smoothK: boolean;
  private readonly bf16Values: boolean;
  private readonly dp: number;
  /** blocks per kv head that the region holds */
  private blocks: number;
  private region?: CacheRegion & { base: number };
  /** tokens in memory, and tokens counting the calls made (they differ while appends are queued) */
  private stored = 0;
  private logical = 0;
  /** the partial last block must be made again before it is read (after truncate or a failed append) */
  private dirty = false;
  private kmax = 0;
  private vmax = 0;
  private disposed = false;
  private readonly planner = new Planner();

  constructor(private readonly live: () => Engine, options: KVCacheOptions) {
    const o = checkOptions(options, ['heads', 'headDim', 'capacity', 'blockK', 'layout', 'smoothK', 'sparseValues']);
    this.heads = checkCount('heads', o.heads, undefined);
    this.headDim = checkCount('headDim', o.headDim, undefined);
    if (this.headDim > 1024) throw new RangeError(`options.headDim must be at most 1024, got ${this.headDim}`);
    this.blockK = checkBlock('options.blockK', o.blockK, 64);
    this.layout = checkLayout(o.layout);
    this.smoothK = checkBool('smoothK', o.smoothK, true);
    if (o.sparseValues !== undefined && o.sparseValues !== 'bf16' && o.sparseValues !== 'fp32') {
      throw new (typeof o.sparseValues === 'string' ? RangeError : TypeError)(`options.sparseValues must be 'bf16' or 'fp32', got ${String(o.sparseValues)}`);
    }
    this.bf16Values = o.sparseValues !== 'fp32';
    this.blocks = Math.ceil(checkCount('capacity', o.capacity, DEFAULT_CAPACITY) / this.blockK);
    this.dp = Math.ceil(this.headDim / 8) * 8;
    live();
  }

  get length(): number {
    return this.logical;
  }

  get capacity(): number {
    return this.blocks * this.blockK;
  }

  private engine(): Engine {
    if (this.disposed) throw new Error('this KV cache was disposed');
    return this.live();
  }

  append(k: TensorLike, v: TensorLike, options?: AppendOptions): Promise<void> {
    try {
      const engine = this.engine();
      const o = checkOptions(options, ['signal']);
      const signal = checkSignal(o.signal);
      const n = this.checkNew(k, v);
      const kmax = maxAbs(k.data), vmax = maxAbs(v.data);
      if (!Number.isFinite(kmax)) checkFinite('k', k);
      if (!Number.isFinite(vmax)) checkFinite('v', v);
      if (kmax > K_LIMIT || (kmax > 0 && kmax < 1 / K_LIMIT)) {
        throw new RangeError(`k: a KV cache takes keys whose largest magnitude lies in [2^-40, 2^40], got ${kmax.toExponential(3)}; scale them (and options.scale inversely)`);
      }
      if (signal?.aborted) return Promise.reject(signal.reason);
      this.logical += n;
      return engine.submit(signal, { k, v }, (inputs) => {
        const len = this.stored + n;
        this.ensure(engine, len);
        const c = this.appendCall(len);
        engine.prepare(c, 'append', { cache: this.region, newRows: n }, engine.k.kv_append_scratch_bytes(this.blockK, this.dp), this.planner);
        engine.write(P.KNEW, inputs.k!, this.heads, n, n, c);
        engine.write(P.VNEW, inputs.v!, this.heads, n, n, c);
        this.setParams(engine, this.stored, n);
      }, async () => {
        // Aborted or failed, the blocks it touched may be half made: the partial one is made again before use.
        this.dirty = this.stored % this.blockK !== 0;
        await engine.exec([['kv_append', this.heads]], undefined, signal);
        this.stored += n;
        this.dirty = false;
        this.kmax = Math.max(this.kmax, kmax);
        this.vmax = Math.max(this.vmax, vmax);
      }).catch((e) => {
        this.logical -= n;
        throw e;
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  attention(q: TensorLike, options?: SpargeOptions): Promise<AttentionResult> {
    try {
      const engine = this.engine();
      const o = checkOptions(options, SPARGE_KEYS);
      const c0 = this.queryCall(q, o);
      const { parsed, stage1 } = engine.sparseOptions(o, c0.q.H);
      if (parsed.smoothK !== this.smoothK && o.smoothK !== undefined) {
        throw new RangeError(`options.smoothK: this cache's key codes were made at append with smoothK ${this.smoothK} (createKVCache's option)`);
      }
      // Grouped one-row steps take INT8 heads, at most 4 to a group (one row group of the kernels).
      const grouped = parsed.fp32.includes(true) || c0.q.H / this.heads > 4 ? undefined : this.grouped(c0);
      let c: Call, splits = 1;
      return engine.submit(c0.signal, { q }, (inputs) => {
        [c, splits] = this.stageQuery(engine, c0, 'sparse', inputs.q!, parsed.fp32);
        if (grouped) engine.params().i32[P.GROUP] = c0.q.H / this.heads;
      }, async (inputs) => {
        const tiles = c.dims.H * c.dims.NQB;
        const stages: Stage[] = [
          ...this.repair(),
          ...engine.predictStages(c, stage1, true),
          ['quantize_q', tiles],
          ...engine.attendStages(c, parsed.pvThreshold, splits, true, grouped ? this.heads : tiles),
        ];
        await engine.run(c, stages, inputs);
        this.dirty = false;
        const res: AttentionResult = { output: engine.readOutput(grouped ?? c), sparsity: this.sparsity(engine, c) };
        if (parsed.returnMask) res.mask = engine.readMask(c);
        if (c.returnLse) res.lse = engine.readLse(grouped ?? c);
        if (grouped) this.asQueried(c0, res.output, res.lse);
        return res;
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  denseAttention(q: TensorLike, options?: DenseOptions): Promise<Tensor | TensorWithLse> {
    try {
      const engine = this.engine();
      const o = checkOptions(options, DENSE_KEYS);
      checkDensePrecision(o.precision);
      const c0 = this.queryCall(q, o);
      const grouped = this.grouped(c0);
      let c: Call, splits = 1;
      return engine.submit(c0.signal, { q }, (inputs) => {
        [c, splits] = this.stageQuery(engine, grouped ?? c0, 'dense', inputs.q!);
      }, async (inputs) => {
        const tiles = c.dims.H * c.dims.NQB;
        const merge: Stage[] = splits > 1 ? [['merge_splits', tiles]] : [];
        await engine.run(c, [...this.repair(), ['pack_q_f32', tiles], [denseKernel(c.dims), tiles * splits], ...merge], inputs);
        this.dirty = false;
        const res = engine.denseResult(c);
        if (grouped) this.asQueried(c0, res, 'lse' in res ? res.lse : undefined);
        return res;
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  truncate(n: number): void {
    const engine = this.engine();
    if (!Number.isInteger(n) || n < 0 || n > this.logical) {
      throw new RangeError(`truncate(n): n must be an integer from 0 to the cache's length (${this.logical}), got ${n}`);
    }
    this.logical = n;
    void engine.inTurn(() => {
      this.stored = Math.min(this.stored, n);
      this.dirty = this.stored % this.blockK !== 0;
    });
  }

  clear(): void {
    this.truncate(0);
    void this.engine().inTurn(() => {
      this.kmax = 0;
      this.vmax = 0;
    });
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    this.logical = 0;
    let engine: Engine;
    try {
      engine = this.live();
    } catch {
      return; // the engine went first, and its memory with it
    }
    await engine.inTurn(() => {
      if (this.region) engine.regions.free(this.region.base);
      this.region = undefined;
    });
  }

  /** Checks an append's tensors against the cache; returns the number of new tokens. */
  private checkNew(k: TensorLike, v: TensorLike): number {
    const ks = checkTensor('k', k, this.layout);
    checkTensor('v', v, this.layout);
    if (ks.B !== 1) throw new RangeError(`k: a KV cache holds one sequence, so the batch size must be 1, got ${ks.B}`);
    if (ks.H !== this.heads) throw new RangeError(`k must have the cache's ${this.heads} heads, got ${ks.H}`);
    if (ks.D !== this.headDim) throw new RangeError(`k head dim must be the cache's ${this.headDim}, got ${ks.D}`);
    if (k.dims.length !== v.dims.length || k.dims.some((d, i) => d !== v.dims[i])) {
      throw new RangeError(`v.dims must equal k.dims [${k.dims.join(', ')}], got [${v.dims.join(', ')}]`);
    }
    return ks.N;
  }

  /** Checks a query call's tensor and options; its key length is fixed when it runs. */
  private queryCall(q: TensorLike, o: Record<string, unknown>): Call {
    const layout = this.layout;
    if (o.layout !== undefined && checkLayout(o.layout) !== layout) {
      throw new RangeError(`options.layout: this cache takes '${layout}' tensors (createKVCache's layout), got '${String(o.layout)}'`);
    }
    const qs = checkTensor('q', q, layout);
    if (qs.B !== 1) throw new RangeError(`q: a KV cache holds one sequence, so the batch size must be 1, got ${qs.B}`);
    if (qs.D !== this.headDim) throw new RangeError(`q head dim must be the cache's ${this.headDim}, got ${qs.D}`);
    if (qs.H % this.heads !== 0) throw new RangeError(`q heads (${qs.H}) must be a multiple of the cache's k/v heads (${this.heads})`);
    if (this.logical === 0) throw new RangeError('q: the KV cache is empty; append keys and values first');
    const causal = checkBool('causal', o.causal, false);
    if (causal && qs.N > this.logical) {
      throw new RangeError(`q has ${qs.N} rows but the cache holds ${this.logical} tokens: causal queries are the last tokens appended`);
    }
    const bk = checkBlock('options.blockK', o.blockK, this.blockK);
    if (bk !== this.blockK) throw new RangeError(`options.blockK must be the cache's ${this.blockK} (createKVCache's blockK), got ${bk}`);
    const bq = checkBlock('options.blockQ', o.blockQ, DEFAULT_BLOCK_Q);
    return {
      dims: dimsOf(1, qs.H, this.heads, qs.N, this.logical, qs.D, bq, this.blockK),
      q: qs, layout, causal,
      scale: checkNumber('scale', o.scale, 1 / Math.sqrt(qs.D), 0, Infinity, '()'),
      output: checkOutput(o.output, qs.H * qs.N * qs.D),
      signal: checkSignal(o.signal),
      returnLse: checkBool('returnLse', o.returnLse, false),
    };
  }

  /**
   * A dense one-row step with GQA as a call with Hkv heads of G rows each, non-causal (one row sees
   * every key): q's [H, 1, D] floats are [Hkv, G, D] as they lie, in either layout. The G query
   * heads of a group then share each read of their K and V blocks, as rows of the 4-row kernels,
   * instead of reading them G times.
   */
  private grouped(c0: Call): Call | undefined {
    const G = c0.q.H / this.heads;
    if (c0.q.N !== 1 || G === 1) return undefined;
    const c = relaid(c0, dimsOf(1, this.heads, this.heads, G, this.logical, this.headDim, c0.dims.BQ, this.blockK));
    c.causal = false;
    c.layout = 'HND';
    c.q = { B: 1, H: this.heads, N: G, D: this.headDim, threeD: true };
    return c;
  }

  /** A grouped step's output and log-sum-exps are the query heads' rows as they lie: gives them the caller's shape. */
  private asQueried(c0: Call, output: Tensor, lse?: Tensor): void {
    const { H, N, D, threeD } = c0.q, lead = threeD ? [] : [1];
    output.dims = [...lead, ...(c0.layout === 'HND' ? [H, N, D] : [N, H, D])];
    if (lse) lse.dims = [...lead, H, N];
  }

  /** An append's call: nk tokens after it, no queries. */
  private appendCall(nk: number): Call {
    return {
      dims: dimsOf(1, 1, this.heads, 0, nk, this.headDim, DEFAULT_BLOCK_Q, this.blockK),
      q: { B: 1, H: 1, N: 0, D: this.headDim, threeD: true }, layout: this.layout, causal: false, scale: 1,
    };
  }

  /** Lays out a query call over the tokens now in memory and writes q; returns it and its key splits. */
  private stageQuery(engine: Engine, c0: Call, job: Job, q: TensorLike, fp32?: boolean[]): [Call, number] {
    if (this.stored === 0) throw new RangeError('q: the KV cache is empty (its appends failed or were aborted)');
    const c = relaid(c0, dimsOf(1, c0.q.H, this.heads, c0.q.N, this.stored, this.headDim, c0.dims.BQ, this.blockK), fp32);
    const d = c.dims, splits = this.splits(c);
    engine.prepare(c, job, {
      cache: this.region, splits, newRows: 0, partBytes: engine.k.part_bytes(1, splits, d.BQ, d.DP),
    }, engine.k.kv_append_scratch_bytes(this.blockK, this.dp), this.planner);
    engine.write(P.Q, q, d.H, d.NQ, d.NQB * d.BQ, c);
    this.setParams(engine, this.stored, 0);
    const { i32, f32 } = engine.params();
    i32[P.CACHED] = 1;
    f32[P.KMAX] = this.kmax;
    f32[P.VMAX] = this.vmax;
    i32[P.SPLITS] = splits;
    i32[P.SPAN] = splits > 1 ? this.span(c) : d.NKB;
    return [c, splits];
  }

  /** Blocks per split: the tiles of a call stay about H * NKB / SPAN_BLOCKS whatever Nq. */
  private span(c: Call): number {
    return SPAN_BLOCKS * c.dims.NQB;
  }

  private splits(c: Call): number {
    return Math.ceil(c.dims.NKB / this.span(c));
  }

  private setParams(engine: Engine, len0: number, n: number): void {
    const { i32 } = engine.params();
    i32[P.KSTRIDE] = this.blocks;
    i32[P.LEN0] = len0;
    i32[P.NNEW] = n;
    i32[P.SMOOTH] = this.smoothK ? 1 : 0;
  }

  /** The stage that makes the partial block again after a truncate, where one is due. */
  private repair(): Stage[] {
    return this.dirty ? [['kv_append', this.heads]] : [];
  }

  /** 1 - kept / allowed blocks, from predict's count per query tile. */
  private sparsity(engine: Engine, c: Call): number {
    const d = c.dims, tiles = d.H * d.NQB;
    const kept = new Int32Array(engine.memory.buffer, engine.params().i32[P.KEPT], tiles);
    let k = 0, n = 0;
    for (let t = 0; t < tiles; t++) {
      k += kept[t];
      n += allowedBlocks(d, c.causal, t % d.NQB);
    }
    return n === 0 ? 0 : 1 - k / n;
  }

  /** Allocates the region on first use, and moves it to a larger one (doubling) when `tokens` do not fit. */
  private ensure(engine: Engine, tokens: number): void {
    const need = Math.ceil(tokens / this.blockK);
    if (this.region && need <= this.blocks) return;
    const blocks = this.region ? Math.max(2 * this.blocks, need) : Math.max(this.blocks, need);
    const next = this.layoutOf(engine, blocks);
    if (this.region) {
      const used = Math.ceil(this.stored / this.blockK), mem = new Uint8Array(engine.memory.buffer);
      const bk = this.blockK, dp = this.dp;
      // Bytes per block of each per-block buffer, each kv head's blocks contiguous; KPSUM has one
      // row more per head than blocks (the sum after the last).
      const perBlock: [P, number, number][] = [
        [P.KF, bk * dp * 4, 0], [P.V, bk * dp * 4, 0], [P.KC, bk * dp, 0], [P.KSCALE, 4, 0], [P.KBAR, dp * 4, 0], [P.KSIM, 4, 0], [P.KPSUM, dp * 4, 1],
        ...(this.bf16Values ? [[P.VH, bk * dp * 2, 0] as [P, number, number]] : []),
      ];
      for (const [slot, bytes, extra] of perBlock) {
        for (let h = 0; h < this.heads; h++) {
          const from = this.region.at[slot]! + h * (this.blocks + extra) * bytes;
          mem.copyWithin(next.at[slot]! + h * (blocks + extra) * bytes, from, from + (used + extra) * bytes);
        }
      }
      mem.copyWithin(next.at[P.KMEAN]!, this.region.at[P.KMEAN]!, this.region.at[P.KMEAN]! + (this.heads + 1) * dp * 4);
      engine.regions.free(this.region.base);
    }
    this.region = next;
    this.blocks = blocks;
  }

  /** A region for `blocks` key blocks per kv head: every buffer the cache keeps. */
  private layoutOf(engine: Engine, blocks: number): CacheRegion & { base: number } {
    const n = this.heads * blocks, bk = this.blockK, dp = this.dp;
    const sizes: [P, number][] = [
      [P.KF, n * bk * dp * 4], [P.V, n * bk * dp * 4], [P.KC, n * bk * dp], [P.KSCALE, n * 4],
      [P.KBAR, n * dp * 4], [P.KSIM, n * 4], [P.KMEAN, (this.heads + 1) * dp * 4], [P.KPSUM, (n + this.heads) * dp * 4],
      ...(this.bf16Values ? [[P.VH, n * bk * dp * 2] as [P, number]] : []),
    ];
    const align = (x: number) => Math.ceil(x / 64) * 64;
    const total = sizes.reduce((a, [, b]) => a + align(b), 0);
    const base = engine.regions.alloc(total);
    try {
      engine.reserve(engine.regions.top, 'the KV cache');
    } catch (e) {
      engine.regions.free(base);
      throw e;
    }
    const at: Partial<Record<P, number>> = {};
    let o = base;
    for (const [slot, bytes] of sizes) {
      at[slot] = o;
      o += align(bytes);
    }
    // The mean row is read before the first append writes it, and the zero row after it always;
    // each head's sums start from zero before its first block.
    new Uint8Array(engine.memory.buffer, at[P.KMEAN]!, (this.heads + 1) * dp * 4).fill(0);
    for (let h = 0; h < this.heads; h++) new Uint8Array(engine.memory.buffer, at[P.KPSUM]! + h * (blocks + 1) * dp * 4, dp * 4).fill(0);
    return { at, base };
  }
}

function checkCount(name: string, x: unknown, dflt: number | undefined): number {
  if (x === undefined && dflt !== undefined) return dflt;
  if (typeof x !== 'number' || !Number.isInteger(x) || x < 1) {
    throw new (typeof x === 'number' ? RangeError : TypeError)(`options.${name} must be a positive integer, got ${String(x)}`);
  }
  return x;
}

/** Largest magnitude; NaN if there is a NaN. */
function maxAbs(a: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const x = Math.abs(a[i]);
    if (!(x <= m)) {
      if (x !== x) return NaN;
      m = x;
    }
  }
  return m;
}
