// The engine behind createSparge(): checks a call, lays its buffers out in WebAssembly memory,
// runs the stages' kernels over their tiles and reads the results back.
import { P, Head } from '../assembly/params.js';
import {
  type Layout, type Shape, type TensorLike, type BlockMaskLike,
  checkQKV, checkFinite, checkLayout, checkBool, checkNumber, checkPerHead, checkPrecision, checkBlock, checkOptions, checkMask, checkOutput, checkSignal, checkOrder,
} from './checks.js';
import type { TokenOrder } from './order.js';
import { type Dims, type Job, type Plan, type PlanOptions, type ParamViews, MAX_BYTES, PAGE, Planner, Regions, dimsOf, paramViews, qRowsRead, writeParams } from './memory.js';
import type { Features } from './loader.js';
import { type Kernels, type Stage, runLocal } from './tiles.js';
import type { Pool } from './pool.js';

export interface Tensor {
  data: Float32Array;
  dims: number[];
}

export interface BlockMask {
  /** 1 where query block i attends to key block j: [B, H, nq, nk] */
  data: Uint8Array;
  dims: number[];
  blockQ: number;
  blockK: number;
  /** 1 - selected / allowed blocks, over all batches and heads */
  sparsity: number;
}

export type QKPrecision = 'int8' | 'f32';

/** A setting for every query head, or an array of one per query head. */
export type PerHead = number | readonly number[];

/** options.order: hilbertOrder's result (its perm is used), or a permutation of the tokens. */
export type OrderOption = Pick<TokenOrder, 'perm'> | ArrayLike<number>;

export interface SpargeOptions {
  causal?: boolean;
  scale?: number;
  topk?: PerHead;
  cdfThreshold?: PerHead;
  simThreshold?: PerHead;
  pvThreshold?: PerHead;
  /** QK's precision: 'int8' (SageAttention's scheme, the default) or 'f32', for all heads or per head */
  precision?: QKPrecision | readonly QKPrecision[];
  attentionSink?: boolean;
  /**
   * GQA: the query heads of each key/value head rank its key blocks together (their Stage 1
   * probabilities averaged) and each keeps its own count of that one ranking, so the blocks read
   * per key/value head are the most demanding head's count, not the union of separate picks.
   * Cheaper decode steps at some accuracy per head; default false (each head ranks its own).
   */
  groupSelection?: boolean;
  smoothK?: boolean;
  blockQ?: number;
  blockK?: number;
  layout?: Layout;
  returnMask?: boolean;
  /** also return each output row's log-sum-exp, ln sum_j exp(scale q.k_j), as res.lse [B, H, Nq] */
  returnLse?: boolean;
  /** the result is written here (the output's exact length) and returned as output.data */
  output?: Float32Array;
  /** ends the call at the next tile; it rejects with the signal's reason */
  signal?: AbortSignal;
  /**
   * Self-attention over tokens taken in this order: q, k and v are packed in it and the output
   * (and lse) come back in the inputs' own order; a mask (returnMask, predictMask, or one given to
   * blockSparseAttention) is over blocks of the reordered tokens. Not with causal.
   */
  order?: OrderOption;
}

export interface DenseOptions {
  causal?: boolean;
  scale?: number;
  layout?: Layout;
  precision?: 'f32';
  /** the returned tensor also carries lse: each row's log-sum-exp, [B, H, Nq] */
  returnLse?: boolean;
  output?: Float32Array;
  signal?: AbortSignal;
  /** as SpargeOptions.order; the keys are summed in that order, so only rounding differs from a call without it */
  order?: OrderOption;
}

/** denseAttention's result with returnLse. */
export type TensorWithLse = Tensor & { lse: Tensor };

export interface AttentionResult {
  output: Tensor;
  sparsity: number;
  mask?: BlockMask;
  /** with returnLse: each output row's log-sum-exp, [B, H, Nq] ([H, Nq] for 3-d inputs) */
  lse?: Tensor;
}

const MASK_KEYS = [
  'causal', 'scale', 'topk', 'cdfThreshold', 'simThreshold', 'pvThreshold', 'attentionSink', 'groupSelection',
  'smoothK', 'blockQ', 'blockK', 'layout', 'returnMask', 'signal', 'precision',
] as const;
export const SPARGE_KEYS = [...MASK_KEYS, 'output', 'returnLse'] as const;
export const DENSE_KEYS = ['causal', 'scale', 'layout', 'precision', 'output', 'signal', 'returnLse'] as const;
// A KV cache's calls take the lists above: its queries are the last tokens, in their order.
const ORDERED_MASK_KEYS = [...MASK_KEYS, 'order'] as const;
const ORDERED_SPARGE_KEYS = [...SPARGE_KEYS, 'order'] as const;
const ORDERED_DENSE_KEYS = [...DENSE_KEYS, 'order'] as const;

/** Default block sizes, by measurement: on the CPU 64 x 64 runs as fast as the reference GPU tiles (128 x 64) and keeps more accurate masks. */
export const DEFAULT_BLOCK_Q = 64;
export const DEFAULT_BLOCK_K = 64;

/** Stage 1's settings, one entry per query head. */
export interface Stage1Options {
  topk?: number[];
  cdfThreshold?: number[];
  simThreshold: number[];
  attentionSink: boolean;
  groupSelection: boolean;
}

/** A sparse call's options, checked: per-head values as arrays of H. */
export interface ParsedOptions {
  parsed: {
    topk: number[]; cdfThreshold: number[]; simThreshold: number[]; pvThreshold: number[]; fp32: boolean[];
    attentionSink: boolean; groupSelection: boolean; smoothK: boolean; returnMask: boolean;
  };
  stage1: Stage1Options;
}

export interface Call {
  dims: Dims;
  q: Shape;
  layout: Layout;
  causal: boolean;
  scale: number;
  output?: Float32Array;
  signal?: AbortSignal;
  /** per query head, for the sparse path: true where QK runs in FP32 */
  fp32?: boolean[];
  returnLse?: boolean;
  /** options.order: row i of each head in memory is the inputs' row perm[i], and so is output row i */
  perm?: Uint32Array;
}

/**
 * Call c laid out over other dims, written out field by field: the object spread that did this cost
 * about 15 microseconds of a decode step whose code was out of cache (bench/decode.js).
 */
export function relaid(c: Call, dims: Dims, fp32 = c.fp32): Call {
  return {
    dims, q: c.q, layout: c.layout, causal: c.causal, scale: c.scale, output: c.output, signal: c.signal, fp32, returnLse: c.returnLse, perm: c.perm,
  };
}

/** A call's inputs; a queued call holds copies of their data. */
export interface Inputs {
  q?: TensorLike;
  k?: TensorLike;
  v?: TensorLike;
  mask?: Uint8Array;
}

const copyOf = (t: TensorLike | undefined): TensorLike | undefined => t && { data: t.data.slice(), dims: t.dims };

/**
 * Whether every query tile is one row group of the kernels (at most 4 rows: decode steps, a KV
 * cache's grouped one-row steps), whose blocks come from memory rather than cache: the *_step
 * instances of Stage 2 read each block's V ahead of its arithmetic (assembly/attention.ts).
 */
const stepTiles = (d: Dims): boolean => d.NQ <= 4;

/** Stage 2's entry for sparse step tiles by the engine's INT8 dot and broadcast (assembly/attention.ts). */
const SPARSE_STEP = {
  i16: { load: 'attend_sparse_step_i16_load', shuffle: 'attend_sparse_step_i16_shuffle' },
  relaxed: { load: 'attend_sparse_step_i8_load', shuffle: 'attend_sparse_step_i8_shuffle' },
} as const;

/** The dense Stage 2 entry for a call's tiles. */
export const denseKernel = (d: Dims): string => (stepTiles(d) ? 'attend_dense_step' : 'attend_dense');

/** Number of key blocks query block i may see: the bottom-right-aligned causal rule. */
export function allowedBlocks(d: Dims, causal: boolean, i: number): number {
  if (!causal) return d.NKB;
  const lastKey = Math.min((i + 1) * d.BQ, d.NQ) - 1 + d.NK - d.NQ;
  return lastKey < 0 ? 0 : Math.min(d.NKB, Math.floor(lastKey / d.BK) + 1);
}

export class Engine {
  /** @internal */
  readonly k: Kernels;
  private plan?: Plan;
  /** @internal Long-lived regions (KV caches); calls lay out above them. */
  readonly regions = new Regions();
  /** calls run one after another: each lays out the whole memory */
  private queue: Promise<unknown> = Promise.resolve();
  /** calls submitted and not yet settled */
  private pending = 0;
  private views?: ParamViews;
  private readonly planner = new Planner();
  private lastOptions?: { key: unknown[]; parsed: ParsedOptions };
  private heads?: { buffer: ArrayBufferLike; at: number; n: number; i32: Int32Array; f32: Float32Array };

  /**
   * memory: plain for one thread, shared (with the module's shared-memory build) for a pool.
   * The calling thread keeps an instance of its own for the one-thread path.
   */
  constructor(
    module: WebAssembly.Module,
    /** @internal */
    readonly memory: WebAssembly.Memory,
    readonly features: Features,
    private readonly pool?: Pool,
  ) {
    const instance = new WebAssembly.Instance(module, { env: { memory } });
    this.k = instance.exports as unknown as Kernels;
  }

  /** See relaxed_dot_probe in assembly/attention.ts. */
  relaxedDotProbe(): number {
    return this.k.relaxed_dot_probe(200);
  }

  get threads(): number {
    return this.pool?.size ?? 1;
  }

  async dispose(): Promise<void> {
    await this.queue.catch(() => {});
    await this.pool?.close();
  }

  /** Runs fn after every call queued before it, whatever their outcome. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => {});
    return next;
  }

  /** @internal */
  async exec(stages: Stage[], p = this.plan!.params, signal?: AbortSignal): Promise<void> {
    const todo = stages.filter(([, n]) => n > 0);
    if (this.pool) await this.pool.run(p, todo, signal, this.k);
    else await runLocal(this.k, this.memory.buffer, p, todo, signal);
  }

  /**
   * Takes a call's inputs when it is made: an idle engine copies them into its memory at once, a
   * busy one into copies of their data, so callers may reuse their buffers as soon as the call
   * returns its promise. body runs when the call's turn comes, with the memory laid out.
   */
  /** @internal stage(inputs) lays the call out and writes its inputs; body runs it. */
  submit<T>(signal: AbortSignal | undefined, inputs: Inputs, stage: (inputs: Inputs) => void, body: (inputs: Inputs) => Promise<T>): Promise<T> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const idle = this.pending === 0;
    if (idle) stage(inputs);
    else inputs = { q: copyOf(inputs.q), k: copyOf(inputs.k), v: copyOf(inputs.v), mask: inputs.mask?.slice() };
    this.pending++;
    return this.serial(async () => {
      try {
        signal?.throwIfAborted();
        if (!idle) stage(inputs);
        return await body(inputs);
      } finally {
        this.pending--;
      }
    });
  }

  /** @internal Runs fn in turn with the calls (for a KV cache's bookkeeping); at once when idle. */
  inTurn(fn: () => void): Promise<void> {
    if (this.pending === 0) {
      fn();
      return Promise.resolve();
    }
    this.pending++;
    return this.serial(async () => {
      try {
        fn();
      } finally {
        this.pending--;
      }
    });
  }

  private submitCall<T>(c: Call, job: Job, inputs: Inputs, body: (inputs: Inputs) => Promise<T>): Promise<T> {
    return this.submit(c.signal, inputs, (i) => this.stage(c, job, i), body);
  }

  /** Lays the call out in memory and writes its inputs there. */
  private stage(c: Call, job: Job, inputs: Inputs): void {
    this.prepare(c, job);
    this.writeInputs(c, inputs.q!, inputs.k!, inputs.v);
    if (inputs.mask) new Uint8Array(this.memory.buffer, this.plan!.at[P.MASK]!, inputs.mask.length).set(inputs.mask);
  }

  /** Bytes of WebAssembly memory in use (it grows to the largest call and is then reused). */
  get memoryBytes(): number {
    return this.memory.buffer.byteLength;
  }

  /** Checks a call's tensors and shared options; v (and options.output) only when there is an output. */
  call(q: unknown, k: unknown, v: unknown, o: Record<string, unknown>, needV: boolean, blockQ?: number, blockK?: number): Call {
    const layout = checkLayout(o.layout);
    const pr = checkQKV(q, k, v, layout, needV);
    const causal = checkBool('causal', o.causal, false);
    const scale = checkNumber('scale', o.scale, 1 / Math.sqrt(pr.q.D), 0, Infinity, '()');
    const bq = blockQ ?? checkBlock('options.blockQ', o.blockQ, DEFAULT_BLOCK_Q);
    const bk = blockK ?? checkBlock('options.blockK', o.blockK, DEFAULT_BLOCK_K);
    const dims = dimsOf(pr.q.B, pr.q.H, pr.k.H, pr.q.N, pr.k.N, pr.q.D, bq, bk);
    const output = needV ? checkOutput(o.output, pr.q.B * pr.q.H * pr.q.N * pr.q.D) : undefined;
    const returnLse = needV ? checkBool('returnLse', o.returnLse, false) : false;
    const perm = checkOrder(o.order, pr.q, pr.k, causal);
    return { dims, q: pr.q, layout, causal, scale, output, signal: checkSignal(o.signal), returnLse, perm };
  }

  /**
   * @internal Lays the call out and writes the parameter block; refuses before touching memory if
   * it cannot fit. extra: what a KV cache's calls add (src/kvcache.ts), with their own planner.
   */
  prepare(c: Call, job: Job, extra: PlanOptions = {}, scratch = 0, planner = this.planner): Plan {
    const d = c.dims;
    // A pool's calling thread takes tiles too, with the scratch after the workers'.
    const p = planner.plan(d, job, this.pool ? this.threads + 1 : 1, Math.max(scratch, this.k.attention_scratch_bytes(d.BQ, d.BK, d.DP)), {
      base: this.regions.top, fp32: c.fp32?.includes(true), lse: c.returnLse, ...extra,
    });
    if (p.end > MAX_BYTES) {
      throw new RangeError(
        `inputs too large: this call needs ${(p.end / 2 ** 30).toFixed(2)} GiB of WebAssembly memory, at most 4 GiB can be addressed`,
      );
    }
    this.reserve(p.end, 'this call');
    writeParams(this.params(), p, d, c.causal, c.scale);
    this.plan = p;
    const { i32 } = this.params();
    i32[P.QK_MODE] = this.features.int8Dot === 'relaxed' ? 1 : 0;
    i32[P.SPLAT] = this.features.splat === 'shuffle' ? 1 : 0;
    return p;
  }

  /** @internal Grows the memory to `end` bytes if needed; `what` names the need in the error. */
  reserve(end: number, what: string): void {
    const have = this.memory.buffer.byteLength;
    if (end <= have) return;
    try {
      this.memory.grow(Math.ceil((end - have) / PAGE));
    } catch {
      throw new RangeError(`inputs too large: ${what} needs ${end} bytes of WebAssembly memory and the engine refused to grow it`);
    }
  }

  /** @internal The parameter block, through views made again only when the memory's buffer changes (it grew). */
  params(): ParamViews {
    const buffer = this.memory.buffer;
    if (this.views?.buffer !== buffer) this.views = paramViews(buffer);
    return this.views;
  }

  /**
   * @internal Copies a user tensor into its padded HND buffer: rows of DP floats, NP rows per head.
   * The padding that kernels read is zeroed: every padding row of K and V, and Q's up to qRowsRead.
   */
  write(slot: P, t: TensorLike, H: number, N: number, NP: number, c: Call): void {
    const d = c.dims;
    const mem = new Float32Array(this.memory.buffer);
    const dst = this.plan!.at[slot]! / 4;
    const D = d.D, DP = d.DP, src = t.data, perm = c.perm;
    const read = slot === P.Q ? qRowsRead(d) : NP, pad = DP !== D ? 0 : N;
    if (pad < read) for (let bh = 0; bh < d.B * H; bh++) mem.fill(0, dst + (bh * NP + pad) * DP, dst + (bh * NP + read) * DP);
    const bulk = c.layout === 'HND' && DP === D && !perm;
    const from = bulk ? -1 : this.stagingFor(src, c);
    for (let b = 0; b < d.B; b++) {
      for (let h = 0; h < H; h++) {
        const head = dst + (b * H + h) * NP * DP;
        if (bulk) {
          const s = (b * H + h) * N * D;
          mem.set(src.subarray(s, s + N * D), head);
          continue;
        }
        for (let n = 0; n < N; n++) {
          const r = rowAt(c.layout, b, h, perm ? perm[n] : n, H, N, D);
          if (from >= 0) mem.copyWithin(head + n * DP, from + r, from + r + D);
          else mem.set(src.subarray(r, r + D), head + n * DP);
        }
      }
    }
  }

  /**
   * Where a gathered copy (NHD, `order`, padded rows) may first place its whole source, as float
   * index: one bulk copy, then a copyWithin per row inside the memory, measured at half the cost
   * of a subarray view and set per row. The output buffer is free until the kernels run; -1 (rows
   * copied from the source) where it is missing or too small.
   */
  private stagingFor(src: Float32Array, c: Call): number {
    const d = c.dims, at = this.plan!.at[P.OUT];
    if (at === undefined || src.length > d.B * d.H * d.NQB * d.BQ * d.DP) return -1;
    new Float32Array(this.memory.buffer).set(src, at / 4);
    return at / 4;
  }

  /** @internal */
  readOutput(c: Call): Tensor {
    const d = c.dims, { B, H, N, D } = c.q;
    const mem = new Float32Array(this.memory.buffer);
    const src = this.plan!.at[P.OUT]! / 4;
    const NP = d.NQB * d.BQ, DP = d.DP;
    const dims = c.layout === 'HND' ? [B, H, N, D] : [B, N, H, D];
    const outDims = c.q.threeD ? dims.slice(1) : dims;
    const whole = c.layout === 'HND' && DP === D && NP === N && !c.perm;
    if (c.output && whole) {
      c.output.set(mem.subarray(src, src + B * H * N * D));
      return { data: c.output, dims: outDims };
    }
    // Unpadded HND output is one block of memory: one copy, no zero-filled allocation first.
    if (whole) return { data: mem.slice(src, src + B * H * N * D), dims: outDims };
    const out = c.output ?? new Float32Array(B * H * N * D), perm = c.perm;
    const bulk = c.layout === 'HND' && DP === D && !perm;
    // Scattered rows are put in order inside the memory first, in Q's buffer, which the call no
    // longer reads (the reverse of write's staging), then leave in one copy.
    const staged = this.plan!.at[P.Q]! / 4;
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < H; h++) {
        const head = src + (b * H + h) * NP * DP;
        if (bulk) {
          out.set(mem.subarray(head, head + N * D), (b * H + h) * N * D);
          continue;
        }
        for (let n = 0; n < N; n++) {
          const o = staged + rowAt(c.layout, b, h, perm ? perm[n] : n, H, N, D);
          mem.copyWithin(o, head + n * DP, head + n * DP + D);
        }
      }
    }
    if (!bulk) out.set(mem.subarray(staged, staged + B * H * N * D));
    return { data: out, dims: outDims };
  }

  /** Copies the inputs into their padded buffers (see run for their check). */
  private writeInputs(c: Call, q: TensorLike, k: TensorLike, v: TensorLike | undefined): void {
    const d = c.dims;
    this.write(P.Q, q, d.H, d.NQ, d.NQB * d.BQ, c);
    this.write(P.K, k, d.HKV, d.NK, d.NKB * d.BK, c);
    if (v) this.write(P.V, v, d.HKV, d.NK, d.NKB * d.BK, c);
  }

  /**
   * Runs a call's stages after the input check, in one pass over the pool. The kernels find each
   * input's largest magnitude in parallel (assembly/check.ts): NaN or Infinity (which would
   * poison whole blocks' quantization scales), or scores beyond float32's range, end the call
   * before the first real stage. Only then is the input scanned again here, to name the argument
   * and index in the error. Finite inputs of any other magnitude are rescaled exactly.
   */
  /** @internal */
  async run(c: Call, stages: Stage[], inputs: Inputs): Promise<void> {
    const p = this.plan!.params;
    await this.exec([
      ['input_max', this.k.input_max_tiles(p)],
      ['input_range', 1],
      ['prescale', this.k.prescale_tiles(p)],
      ...stages,
    ], p, c.signal);
    const { i32, f32 } = this.params();
    if (i32[P.STATUS] === 1) {
      for (const name of ['q', 'k', 'v'] as const) if (inputs[name]) checkFinite(name, inputs[name]!);
    }
    if (i32[P.STATUS] === 2) {
      const D = c.q.D, bound = c.scale * Math.LOG2E * f32[P.QMAX] * f32[P.KMAX] * 2 * c.dims.DP;
      throw new RangeError(
        `q, k and options.scale: scores could reach ${bound.toExponential(2)} (options.scale ${c.scale} x log2(e) x max|q| ` +
          `${f32[P.QMAX].toExponential(2)} x max|k| ${f32[P.KMAX].toExponential(2)} x 2 x head dim ${D}${c.dims.DP !== D ? ` padded to ${c.dims.DP}` : ''}), ` +
          `beyond float32's range; the bound is 2^125 (${(2 ** 125).toExponential(2)}): lower options.scale or the magnitude of q or k`,
      );
    }
  }

  /** Zeros the K means (kept so without smoothing) and the zero row after them. */
  private clearMeans(c: Call): void {
    const d = c.dims;
    new Float32Array(this.memory.buffer, this.plan!.at[P.KMEAN]!, (d.B * d.HKV + 1) * d.DP).fill(0);
  }

  /** Stage 0 for the sparse path: K means, then INT8 codes of Q and K. */
  private quantizeStages(c: Call, smoothK: boolean): Stage[] {
    const d = c.dims;
    this.clearMeans(c);
    return [
      ['k_mean', smoothK ? d.B * d.HKV : 0],
      ['quantize_q', d.B * d.H * d.NQB],
      ['quantize_k', d.B * d.HKV * d.NKB],
    ];
  }

  /** The per-head records of Stage 1 and Stage 2 (params.ts, Head). */
  private headTable(c: Call): { i32: Int32Array; f32: Float32Array } {
    const buffer = this.memory.buffer, at = this.plan!.at[P.HEADS]!, n = c.dims.H * Head.COUNT;
    const h = this.heads;
    if (h?.buffer === buffer && h.at === at && h.n === n) return h;
    this.heads = { buffer, at, n, i32: new Int32Array(buffer, at, n), f32: new Float32Array(buffer, at, n) };
    return this.heads;
  }

  /** @internal */
  predictStages(c: Call, o: Stage1Options, cached = false): Stage[] {
    const d = c.dims;
    const { i32, f32 } = this.headTable(c);
    this.params().i32[P.CDF_MODE] = o.cdfThreshold ? 1 : 0;
    this.params().i32[P.SINK] = o.attentionSink ? 1 : 0;
    const shared = o.groupSelection && d.H > d.HKV;
    this.params().i32[P.SHARED] = shared ? 1 : 0;
    for (let h = 0; h < d.H; h++) {
      const r = h * Head.COUNT;
      if (o.cdfThreshold) f32[r + Head.CDF] = o.cdfThreshold[h];
      else i32[r + Head.NKEEP] = Math.max(1, Math.floor(o.topk![h] * d.NKB));
      f32[r + Head.SIM] = o.simThreshold[h];
    }
    return [
      ['pool_q', d.B * d.H * d.NQB],
      ['pool_k', cached ? 0 : d.B * d.HKV * d.NKB],
      ['predict', d.B * (shared ? d.HKV : d.H) * d.NQB],
    ];
  }

  /**
   * @internal Stage 2 of the sparse path, after packing FP32 Q and K when some heads' QK runs in
   * FP32; `splits` key ranges per query tile. cached: K is a KV cache's, packed already.
   */
  attendStages(c: Call, pvThreshold: number[], splits = 1, cached = false, tiles = c.dims.B * c.dims.H * c.dims.NQB): Stage[] {
    const d = c.dims;
    const { i32, f32 } = this.headTable(c);
    for (let h = 0; h < d.H; h++) {
      f32[h * Head.COUNT + Head.PV] = pvThreshold[h];
      i32[h * Head.COUNT + Head.FP32] = c.fp32?.[h] ? 1 : 0;
    }
    const merge: Stage[] = splits > 1 ? [['merge_splits', tiles]] : [];
    const attend = stepTiles(d) ? SPARSE_STEP[this.features.int8Dot][this.features.splat] : 'attend_sparse';
    if (!c.fp32?.includes(true)) return [[attend, tiles * splits], ...merge];
    return [
      ['pack_q_f32', tiles], ['pack_k_f32', cached ? 0 : d.B * d.HKV * d.NKB],
      [attend, tiles * splits], ['attend_sparse_f32', tiles * splits], ...merge,
    ];
  }

  /** @internal Each output row's log-sum-exp, [B, H, Nq] (3-d for 3-d inputs). */
  readLse(c: Call): Tensor {
    const d = c.dims, { B, H, N } = c.q, NP = d.NQB * d.BQ;
    const mem = new Float32Array(this.memory.buffer, this.plan!.at[P.LSE]!, B * H * NP);
    const data = new Float32Array(B * H * N), perm = c.perm;
    for (let bh = 0; bh < B * H; bh++) {
      if (!perm) data.set(mem.subarray(bh * NP, bh * NP + N), bh * N);
      else for (let n = 0; n < N; n++) data[bh * N + perm[n]] = mem[bh * NP + n];
    }
    return { data, dims: c.q.threeD ? [H, N] : [B, H, N] };
  }

  /** @internal */
  readMask(c: Call): BlockMask {
    const d = c.dims;
    const n = d.B * d.H * d.NQB * d.NKB;
    const data = new Uint8Array(this.memory.buffer, this.plan!.at[P.MASK]!, n).slice();
    return { data, dims: [d.B, d.H, d.NQB, d.NKB], blockQ: d.BQ, blockK: d.BK, sparsity: sparsityOf(data, d, c.causal) };
  }

  /** @internal Option checks shared by attention() and predictMask(), done before anything runs; H query heads. */
  sparseOptions(o: Record<string, unknown>, H: number): ParsedOptions {
    // A decode loop passes the same values at every step: they are parsed again only when they
    // change. Arrays may change in place between calls, so only plain values are compared.
    const key = [o.topk, o.cdfThreshold, o.simThreshold, o.pvThreshold, o.precision, o.attentionSink, o.groupSelection, o.smoothK, o.returnMask, H];
    const last = this.lastOptions;
    if (last && key.every((x, i) => x === last.key[i] && (x === null || typeof x !== 'object'))) return last.parsed;
    const parsed = {
      topk: checkPerHead('topk', o.topk, 0.5, 0, 1, '(]', H),
      cdfThreshold: checkPerHead('cdfThreshold', o.cdfThreshold, 1, 0, 1, '(]', H),
      simThreshold: checkPerHead('simThreshold', o.simThreshold, -0.1, -Infinity, Infinity, '()', H),
      pvThreshold: checkPerHead('pvThreshold', o.pvThreshold, 50, 0, Infinity, '', H),
      fp32: checkPrecision(o.precision, H),
      attentionSink: checkBool('attentionSink', o.attentionSink, false),
      groupSelection: checkBool('groupSelection', o.groupSelection, false),
      smoothK: checkBool('smoothK', o.smoothK, true),
      returnMask: checkBool('returnMask', o.returnMask, false),
    };
    if (o.topk !== undefined && o.cdfThreshold !== undefined) {
      throw new TypeError('options.topk and options.cdfThreshold: give one of them, not both');
    }
    const stage1: Stage1Options = {
      topk: o.cdfThreshold === undefined ? parsed.topk : undefined,
      cdfThreshold: o.cdfThreshold === undefined ? undefined : parsed.cdfThreshold,
      simThreshold: parsed.simThreshold,
      attentionSink: parsed.attentionSink,
      groupSelection: parsed.groupSelection,
    };
    this.lastOptions = { key, parsed: { parsed, stage1 } };
    return { parsed, stage1 };
  }

  attention(q: TensorLike, k: TensorLike, v: TensorLike, options?: SpargeOptions): Promise<AttentionResult> {
    const o = checkOptions(options, ORDERED_SPARGE_KEYS);
    const c = this.call(q, k, v, o, true);
    const { parsed, stage1 } = this.sparseOptions(o, c.q.H);
    c.fp32 = parsed.fp32;
    return this.submitCall(c, 'sparse', { q, k, v }, async (inputs) => {
      const [mean, ...codes] = this.quantizeStages(c, parsed.smoothK);
      await this.run(c, [mean, ...this.predictStages(c, stage1), ...codes, ...this.attendStages(c, parsed.pvThreshold)], inputs);
      const mask = this.readMask(c);
      const res: AttentionResult = { output: this.readOutput(c), sparsity: mask.sparsity };
      if (parsed.returnMask) res.mask = mask;
      if (c.returnLse) res.lse = this.readLse(c);
      return res;
    });
  }

  predictMask(q: TensorLike, k: TensorLike, options?: SpargeOptions): Promise<BlockMask> {
    const o = checkOptions(options, ORDERED_MASK_KEYS);
    const c = this.call(q, k, undefined, o, false);
    const { parsed, stage1 } = this.sparseOptions(o, c.q.H);
    return this.submitCall(c, 'mask', { q, k }, async (inputs) => {
      this.clearMeans(c);
      const d = c.dims;
      await this.run(c, [['k_mean', parsed.smoothK ? d.B * d.HKV : 0], ...this.predictStages(c, stage1)], inputs);
      return this.readMask(c);
    });
  }

  blockSparseAttention(q: TensorLike, k: TensorLike, v: TensorLike, mask: BlockMaskLike, options?: SpargeOptions): Promise<AttentionResult> {
    const o = checkOptions(options, ORDERED_SPARGE_KEYS);
    const given = mask as Partial<BlockMask> | undefined;
    const bq = blockOf('Q', given?.blockQ, o.blockQ, DEFAULT_BLOCK_Q);
    const bk = blockOf('K', given?.blockK, o.blockK, DEFAULT_BLOCK_K);
    const c = this.call(q, k, v, o, true, bq, bk);
    const { parsed } = this.sparseOptions(o, c.q.H);
    c.fp32 = parsed.fp32;
    const d = c.dims;
    const m = checkMask(mask, [d.B, d.H, d.NQB, d.NKB]);
    return this.submitCall(c, 'sparse', { q, k, v, mask: m }, async (inputs) => {
      await this.run(c, [...this.quantizeStages(c, parsed.smoothK), ...this.attendStages(c, parsed.pvThreshold)], inputs);
      const res: AttentionResult = { output: this.readOutput(c), sparsity: sparsityOf(inputs.mask!, d, c.causal) };
      if (c.returnLse) res.lse = this.readLse(c);
      if (parsed.returnMask) res.mask = { data: inputs.mask!.slice(), dims: [d.B, d.H, d.NQB, d.NKB], blockQ: bq, blockK: bk, sparsity: res.sparsity };
      return res;
    });
  }

  denseAttention(q: TensorLike, k: TensorLike, v: TensorLike, options?: DenseOptions): Promise<Tensor | TensorWithLse> {
    const o = checkOptions(options, ORDERED_DENSE_KEYS);
    checkDensePrecision(o.precision);
    const c = this.call(q, k, v, o, true, DEFAULT_BLOCK_Q, DEFAULT_BLOCK_K);
    const d = c.dims;
    return this.submitCall(c, 'dense', { q, k, v }, async (inputs) => {
      await this.run(c, [['pack_q_f32', d.B * d.H * d.NQB], ['pack_k_f32', d.B * d.HKV * d.NKB], [denseKernel(d), d.B * d.H * d.NQB]], inputs);
      return this.denseResult(c);
    });
  }

  /** @internal The output tensor of a dense call, with its rows' log-sum-exp where asked. */
  denseResult(c: Call): Tensor | TensorWithLse {
    const out = this.readOutput(c);
    return c.returnLse ? { ...out, lse: this.readLse(c) } : out;
  }

  /** Test hook: runs raw stages with a parameter block the caller chose (e.g. one that traps). */
  debugRun(params: number, stages: Stage[]): Promise<void> {
    // Counted as pending, so that a call made meanwhile queues instead of writing memory at once.
    this.pending++;
    return this.serial(() => this.exec(stages, params).finally(() => { this.pending--; }));
  }

  /** Test hook: ends worker i of the pool as a crash would. */
  debugTerminate(i: number): void {
    this.pool?.terminate(i);
  }
}

/** Where token n of head h, batch b starts in a tensor's data. */
function rowAt(layout: Layout, b: number, h: number, n: number, H: number, N: number, D: number): number {
  return layout === 'HND' ? ((b * H + h) * N + n) * D : ((b * N + n) * H + h) * D;
}

/** denseAttention computes in FP32 only; the option exists to say so. */
export function checkDensePrecision(p: unknown): void {
  if (p !== undefined && p !== 'f32') throw new RangeError(`options.precision must be 'f32', got ${JSON.stringify(p)}`);
}

/** A block size stated by a mask, by options, or both (then they must agree). */
function blockOf(which: 'Q' | 'K', fromMask: unknown, fromOptions: unknown, dflt: number): number {
  const m = checkBlock(`mask.block${which}`, fromMask, 0), o = checkBlock(`options.block${which}`, fromOptions, 0);
  if (m && o && m !== o) throw new RangeError(`mask.block${which} (${m}) and options.block${which} (${o}) differ; give one, or the same`);
  return m || o || dflt;
}

/** 1 - selected / allowed over all heads; blocks the causal rule forbids count in neither. */
export function sparsityOf(mask: Uint8Array, d: Dims, causal: boolean): number {
  const { kept, allowed } = blockCounts(mask, d, causal);
  const k = kept.reduce((a, b) => a + b, 0), n = allowed.reduce((a, b) => a + b, 0);
  return n === 0 ? 0 : 1 - k / n;
}

/** Per query head (summed over batches): blocks the mask keeps and blocks the causal rule allows. */
export function blockCounts(mask: Uint8Array, d: Dims, causal: boolean): { kept: Float64Array; allowed: Float64Array } {
  const kept = new Float64Array(d.H), allowed = new Float64Array(d.H);
  for (let bh = 0; bh < d.B * d.H; bh++) {
    for (let i = 0; i < d.NQB; i++) {
      const n = allowedBlocks(d, causal, i), row = (bh * d.NQB + i) * d.NKB;
      allowed[bh % d.H] += n;
      for (let j = 0; j < n; j++) kept[bh % d.H] += mask[row + j];
    }
  }
  return { kept, allowed };
}
