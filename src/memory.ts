// Layout of one call's buffers in WebAssembly memory. TypeScript owns the memory: kernels allocate
// nothing and find every buffer through the parameter block (assembly/params.ts), so the same
// layout can later be read by several instances sharing the memory.
import { P, Head } from '../assembly/params.js';
import { PARAMS_OFFSET } from './tiles.js';

export const PAGE = 65536;
/** wasm32 addresses 4 GiB; engines may refuse less, which grow() reports. */
export const MAX_BYTES = 65536 * PAGE;
/** The first page is left to the module's own static data (it has none today). */
const BASE = PAGE;
/**
 * Buffers and each worker's scratch start on their own 4 KiB pages. With 64-byte alignment, the
 * scratch of two workers sat side by side, and one core's hardware prefetches into the other's
 * lines (prefetchers stop at page boundaries) made dense attention on 2 threads 8-10% slower in a
 * third of the runs on this project's VM (bench notes in the README).
 */
const ALIGN = 4096;

export interface Dims {
  B: number; H: number; HKV: number; NQ: number; NK: number; D: number;
  DP: number; BQ: number; BK: number; NQB: number; NKB: number;
}

export type Job = 'mask' | 'sparse' | 'dense' | 'append';

/** A KV cache's buffers (src/kvcache.ts): offsets of its K-side slots and V. */
export interface CacheRegion {
  at: Partial<Record<P, number>>;
}

/** What a call lays out beyond its job's buffers. */
export interface PlanOptions {
  /** where the call's buffers start: above every KV cache's region */
  base?: number;
  /** the sparse job has heads whose QK runs in FP32, which read packed FP32 Q and K too */
  fp32?: boolean;
  /** K and V are a KV cache's: only Q's side is laid out */
  cache?: CacheRegion;
  /** split-KV: key ranges per query tile (1: none) */
  splits?: number;
  /** bytes of one query tile's split records (the kernels' part_bytes) */
  partBytes?: number;
  /** each row's log-sum-exp is returned */
  lse?: boolean;
  /** new rows per kv head staged for kv_append */
  newRows?: number;
}

export function dimsOf(B: number, H: number, HKV: number, NQ: number, NK: number, D: number, BQ: number, BK: number): Dims {
  return {
    B, H, HKV, NQ, NK, D, BQ, BK,
    DP: Math.ceil(D / 8) * 8,
    NQB: Math.ceil(NQ / BQ),
    NKB: Math.ceil(NK / BK),
  };
}

/**
 * Rows of each head's Q that kernels read: the real rows rounded up to a group of 4 (Stage 2's row
 * groups), as qRowsRead in assembly/simd.ts. The padding rows beyond them are never written.
 */
export function qRowsRead(d: Dims): number {
  return Math.min(d.NQB * d.BQ, Math.ceil(d.NQ / 4) * 4);
}

export interface Plan {
  /** byte offset of each buffer, by parameter slot */
  at: Partial<Record<P, number>>;
  params: number;
  end: number;
}

/**
 * Byte offsets for a job. Rows are padded to whole blocks and channels to DP (a multiple of 8),
 * with zeros, so that kernels never test for edges inside their hot loops.
 */
export function plan(d: Dims, job: Job, workers: number, scratch: number, o: PlanOptions = {}): Plan {
  const at: Partial<Record<P, number>> = {};
  let end = o.base ?? BASE;
  const take = (bytes: number) => {
    const off = end;
    end += Math.ceil(bytes / ALIGN) * ALIGN;
    return off;
  };
  const params = PARAMS_OFFSET;
  const qRows = d.B * d.H * d.NQB * d.BQ;
  const kRows = d.B * d.HKV * d.NKB * d.BK;
  const qBlocks = d.B * d.H * d.NQB, kBlocks = d.B * d.HKV * d.NKB;
  const kSide = job !== 'append' && !o.cache;
  if (job !== 'append') at[P.Q] = take(qRows * d.DP * 4);
  if (kSide) {
    at[P.K] = take(kRows * d.DP * 4);
    if (job !== 'mask') at[P.V] = take(kRows * d.DP * 4);
    // K means, then one row of zeros that the Q kernels use as "no mean".
    at[P.KMEAN] = take((d.B * d.HKV + 1) * d.DP * 4);
  }
  if (o.newRows !== undefined) {
    at[P.KNEW] = take(d.HKV * o.newRows * d.DP * 4);
    at[P.VNEW] = take(d.HKV * o.newRows * d.DP * 4);
  }
  if (job === 'dense' || o.fp32) {
    at[P.QF] = take(qRows * d.DP * 4);
    if (kSide) at[P.KF] = take(kRows * d.DP * 4);
  }
  if (job === 'mask' || job === 'sparse') {
    at[P.QBAR] = take(qBlocks * d.DP * 4);
    at[P.QSIM] = take(qBlocks * 4);
    if (kSide) {
      at[P.KBAR] = take(kBlocks * d.DP * 4);
      at[P.KSIM] = take(kBlocks * 4);
    }
    at[P.MASK] = take(qBlocks * d.NKB);
    at[P.HEADS] = take(d.H * Head.COUNT * 4);
    if (o.cache) at[P.KEPT] = take(qBlocks * 4);
  }
  if (job === 'sparse') {
    at[P.QC] = take(qRows * d.DP * 2);
    at[P.QSCALE] = take(qBlocks * 4);
    if (kSide) {
      at[P.KC] = take(kRows * d.DP);
      at[P.KSCALE] = take(kBlocks * 4);
    }
  }
  if (job === 'sparse' || job === 'dense') {
    at[P.OUT] = take(qRows * d.DP * 4);
    if (o.lse) at[P.LSE] = take(qRows * 4);
    if ((o.splits ?? 1) > 1) at[P.PART] = take(qBlocks * o.partBytes!);
  }
  // One maximum per tile of the inputs (assembly/check.ts): at most 64 KiB of K or V, and of Q one
  // or more heads' rows, or up to 64 KiB of one head's.
  const tiles = (bytes: number) => Math.ceil(bytes / 65536);
  const qTiles = d.B * d.H * tiles(qRowsRead(d) * d.DP * 4);
  at[P.TILEMAX] = take((qTiles + (kSide ? tiles(kRows * d.DP * 4) * 2 : 0)) * 4);
  const stride = Math.ceil(Math.max(2 * d.DP * 4, d.NKB * 20, scratch) / ALIGN) * ALIGN;
  at[P.SCRATCH_STRIDE] = stride;
  at[P.SCRATCH] = take(stride * workers);
  if (o.cache) Object.assign(at, o.cache.at);
  return { at, params, end };
}

/**
 * plan() that remembers its last few layouts. A decode loop lays out the same calls at every step
 * (their key count changes, their key blocks once in blockK steps), and a step's code runs out of
 * cache between steps, where building a layout again costs about 20 microseconds of a 400
 * microsecond step (bench/decode.js, 16K keys). A KV cache keeps its own (src/kvcache.ts), so
 * that the calls of other caches or layers in between do not push its layouts out.
 */
export class Planner {
  private readonly kept: { key: unknown[]; plan: Plan }[] = [];

  plan(d: Dims, job: Job, workers: number, scratch: number, o: PlanOptions): Plan {
    // Everything plan() reads (NK only through NKB), compared as values.
    const key = [job, workers, scratch, d.B, d.H, d.HKV, d.NQ, d.DP, d.BQ, d.BK, d.NQB, d.NKB,
      o.base, o.fp32, o.lse, o.splits, o.partBytes, o.newRows, o.cache];
    const hit = this.kept.find((k) => k.key.every((x, i) => x === key[i]));
    if (hit) return hit.plan;
    if (this.kept.length === PLANS_KEPT) this.kept.shift();
    const made = { key, plan: plan(d, job, workers, scratch, o) };
    this.kept.push(made);
    return made.plan;
  }
}

/** Layouts a Planner keeps: a cache's sparse and dense steps, its appends, a longer chunk. */
const PLANS_KEPT = 4;

/** Views of the parameter block over one buffer of the memory: i32 and f32 by slot, f64 by slot / 2. */
export interface ParamViews {
  buffer: ArrayBufferLike;
  i32: Int32Array;
  f32: Float32Array;
  f64: Float64Array;
}

export function paramViews(buffer: ArrayBufferLike): ParamViews {
  return {
    buffer,
    i32: new Int32Array(buffer, PARAMS_OFFSET, P.COUNT),
    f32: new Float32Array(buffer, PARAMS_OFFSET, P.COUNT),
    f64: new Float64Array(buffer, PARAMS_OFFSET, P.COUNT >> 1),
  };
}

/**
 * Fills the parameter block: shapes, the causal flag, the scale and every buffer offset. Offsets
 * past 2 GiB read as negative here; the kernels read them as unsigned.
 */
export function writeParams({ i32, f32, f64 }: ParamViews, p: Plan, d: Dims, causal: boolean, scale: number): void {
  i32.fill(0);
  i32[P.B] = d.B; i32[P.H] = d.H; i32[P.HKV] = d.HKV; i32[P.NQ] = d.NQ; i32[P.NK] = d.NK;
  i32[P.DP] = d.DP; i32[P.BQ] = d.BQ; i32[P.BK] = d.BK; i32[P.NQB] = d.NQB; i32[P.NKB] = d.NKB;
  i32[P.CAUSAL] = causal ? 1 : 0;
  f32[P.SCALE] = scale;
  f32[P.QK_MUL] = scale * Math.LOG2E;
  // The same in float64, from which input_range derives them again when it rescales Q and K.
  f64[P.SCALE64 >> 1] = scale;
  f64[P.QK_MUL64 >> 1] = scale * Math.LOG2E;
  for (let slot = 0; slot < P.COUNT; slot++) {
    const off = p.at[slot as P];
    if (off !== undefined) i32[slot] = off;
  }
  i32[P.KSTRIDE] = d.NKB;
  i32[P.SPLITS] = 1;
  i32[P.SPAN] = d.NKB;
}

/**
 * A first-fit allocator of long-lived regions (KV caches) in WebAssembly memory, from the first
 * page up; each call lays its buffers out above `top`.
 */
export class Regions {
  private readonly used: { at: number; bytes: number }[] = [];

  get top(): number {
    const last = this.used[this.used.length - 1];
    return last ? last.at + last.bytes : BASE;
  }

  alloc(bytes: number): number {
    bytes = Math.ceil(bytes / ALIGN) * ALIGN;
    let at = BASE, i = 0;
    for (; i < this.used.length; i++) {
      if (this.used[i].at - at >= bytes) break;
      at = this.used[i].at + this.used[i].bytes;
    }
    this.used.splice(i, 0, { at, bytes });
    return at;
  }

  free(at: number): void {
    const i = this.used.findIndex((r) => r.at === at);
    if (i >= 0) this.used.splice(i, 1);
  }
}
