// Calibration: the sparsest per-head settings whose output stays within an error target against
// exact attention, on a few samples of one attention layer (the reference's autotune, which takes
// GPU hours, as a handful of calls). Heads are independent, so every candidate evaluation is one
// attention call per sample that tries a different setting on each head at once: all heads bisect
// in lockstep, and the cost does not grow with the number of heads.
import type { AttentionResult, OrderOption, QKPrecision, SpargeOptions, Tensor } from './engine.js';
import { blockCounts, DEFAULT_BLOCK_Q, DEFAULT_BLOCK_K } from './engine.js';
import { type Layout, type Shape, type TensorLike, checkTensor, checkLayout, checkBool, checkNumber, checkBlock, checkOptions, checkSignal, checkOrder } from './checks.js';
import { dimsOf } from './memory.js';

export interface Sample {
  q: TensorLike;
  k: TensorLike;
  v: TensorLike;
}

export interface CalibrateOptions {
  /** bound on each head's relative L1 against exact attention, pooled over the samples */
  target?: number;
  causal?: boolean;
  scale?: number;
  layout?: Layout;
  blockQ?: number;
  blockK?: number;
  signal?: AbortSignal;
  onProgress?: (p: { done: number; total: number }) => void;
  /** the token order of the attention calls (SpargeOptions.order): every sample has its length; not in params, give it to the calls too */
  order?: OrderOption;
}

/** Settings to spread into an attention call: plain JSON. */
export interface TunedParams {
  blockQ: number;
  blockK: number;
  cdfThreshold: number[];
  simThreshold: number[];
  pvThreshold: number[];
  /** QK's precision per head: FP32 where INT8 alone would take too much of the target */
  precision: QKPrecision[];
}

export interface Calibration {
  params: TunedParams;
  /** per query head, on the samples: Stage 1 sparsity, L1 against exact attention, and L1 of INT8
   * QK alone (every block kept), which decides the head's precision */
  heads: { sparsity: number; l1: number; int8L1: number }[];
  /** Stage 1 sparsity over all samples and heads */
  sparsity: number;
  target: number;
  /** what the search cost: attention calls per sample, dense and sparse */
  calls: { dense: number; sparse: number };
}

/** What calibrate needs of the engine. */
export interface Attend {
  attention(q: TensorLike, k: TensorLike, v: TensorLike, o: SpargeOptions): Promise<AttentionResult>;
  denseAttention(q: TensorLike, k: TensorLike, v: TensorLike, o: { causal: boolean; scale?: number; layout: Layout; signal?: AbortSignal; order?: OrderOption }): Promise<Tensor>;
}

const KEYS = ['target', 'causal', 'scale', 'layout', 'blockQ', 'blockK', 'signal', 'onProgress', 'order'] as const;

// The search. simThreshold on a short grid: the released per-head tunings sit mostly near -1 (no
// forcing), and a forced block only adds density. cdfThreshold as 1 - 10^-x, bisected over x,
// where the useful values (0.7 to 0.99999) are evenly spread. pvThreshold as 2^y, bisected over y.
const SIM_GRID = [-1, 0.5];
const CDF_STEPS = 5, X_LO = 0.5, X_HI = 5;
const PV_STEPS = 4, Y_LO = -1, Y_HI = Math.log2(50);
// Shares of the target: Stage 1 takes most, PV skipping the rest, and the last tenth is headroom
// for inputs the calibration did not see.
const STAGE1_SHARE = 0.8, TOTAL_SHARE = 0.9;
/** Heads whose sparsity stays below this gain less than Stage 1 costs (about 3% of a call): they keep every block. */
const MIN_GAIN = 0.03;
/** A head whose INT8 QK alone takes more than this share of the target runs QK in FP32. */
const INT8_SHARE = 0.5;

const cdfOf = (x: number) => 1 - 10 ** -x;

function checkSamples(samples: unknown, layout: Layout): { list: Sample[]; shapes: { q: Shape; k: Shape }[] } {
  const list = Array.isArray(samples) ? samples : [samples];
  if (list.length === 0) throw new RangeError('samples must hold at least one { q, k, v }');
  let first: { H: number; Hkv: number; D: number } | undefined;
  const shapes = list.map((s, i) => {
    const at = Array.isArray(samples) ? `samples[${i}]` : 'samples';
    if (s === null || typeof s !== 'object') throw new TypeError(`${at} must be an object { q, k, v }, got ${s === null ? 'null' : typeof s}`);
    const q = checkTensor(`${at}.q`, (s as Sample).q, layout), k = checkTensor(`${at}.k`, (s as Sample).k, layout);
    checkTensor(`${at}.v`, (s as Sample).v, layout);
    const shape = { H: q.H, Hkv: k.H, D: q.D };
    first ??= shape;
    if (shape.H !== first.H || shape.Hkv !== first.Hkv || shape.D !== first.D) {
      throw new RangeError(`${at}: every sample must have the same heads and head dim (H ${first.H}, Hkv ${first.Hkv}, D ${first.D}), got H ${shape.H}, Hkv ${shape.Hkv}, D ${shape.D}`);
    }
    return { q, k };
  });
  return { list: list as Sample[], shapes };
}

/** Per head: sum |o - ref| and sum |ref|, for outputs in `layout` with H heads of D channels. */
function addL1(err: Float64Array, mass: Float64Array, o: Float32Array, ref: Float32Array, dims: readonly number[], layout: Layout, H: number): void {
  const D = dims[dims.length - 1], N = layout === 'HND' ? dims[dims.length - 2] : dims[dims.length - 3];
  for (let i = 0; i < o.length; i += D) {
    const h = layout === 'HND' ? Math.floor(i / (N * D)) % H : Math.floor(i / D) % H;
    let e = 0, m = 0;
    for (let d = i; d < i + D; d++) {
      e += Math.abs(o[d] - ref[d]);
      m += Math.abs(ref[d]);
    }
    err[h] += e;
    mass[h] += m;
  }
}

export async function calibrate(engine: Attend, samples: unknown, options?: CalibrateOptions): Promise<Calibration> {
  const o = checkOptions(options, KEYS);
  const layout = checkLayout(o.layout);
  const { list, shapes } = checkSamples(samples, layout);
  const target = checkNumber('target', o.target, 0.05, 0, 1, '(]');
  const causal = checkBool('causal', o.causal, false);
  const scale = o.scale === undefined ? undefined : checkNumber('scale', o.scale, 0, 0, Infinity, '()');
  const blockQ = checkBlock('options.blockQ', o.blockQ, DEFAULT_BLOCK_Q);
  const blockK = checkBlock('options.blockK', o.blockK, DEFAULT_BLOCK_K);
  const signal = checkSignal(o.signal);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') {
    throw new TypeError(`options.onProgress must be a function, got ${typeof o.onProgress}`);
  }
  const onProgress = o.onProgress as CalibrateOptions['onProgress'];
  const H = shapes[0].q.H;
  // Checked against every sample here, so that a bad one is refused before any call computes.
  for (const sh of shapes) checkOrder(o.order, sh.q, sh.k, causal);
  const order = o.order as OrderOption | undefined;
  const common = { causal, scale, layout, blockQ, blockK, signal, order };

  // The dense references, every block kept, the Stage 1 and PV searches, and the final check.
  const total = 1 + 1 + SIM_GRID.length * CDF_STEPS + PV_STEPS + 1;
  let done = 0;
  const step = () => {
    done++;
    onProgress?.({ done, total });
  };

  const refs: Float32Array[] = [];
  for (const s of list) refs.push((await engine.denseAttention(s.q, s.k, s.v, { causal, scale, layout, signal, order })).data);
  step();

  /** Per head: L1 pooled over the samples, and Stage 1 sparsity (selected over allowed blocks). */
  const evaluate = async (settings: SpargeOptions) => {
    const err = new Float64Array(H), mass = new Float64Array(H), kept = new Float64Array(H), allowed = new Float64Array(H);
    for (let i = 0; i < list.length; i++) {
      const s = list[i];
      const res = await engine.attention(s.q, s.k, s.v, { ...common, ...settings, returnMask: true });
      addL1(err, mass, res.output.data, refs[i], res.output.dims, layout, H);
      const d = dimsOf(shapes[i].q.B, H, shapes[i].k.H, shapes[i].q.N, shapes[i].k.N, shapes[i].q.D, blockQ, blockK);
      const counts = blockCounts(res.mask!.data, d, causal);
      for (let h = 0; h < H; h++) {
        kept[h] += counts.kept[h];
        allowed[h] += counts.allowed[h];
      }
    }
    step();
    return Array.from({ length: H }, (_, h) => ({
      l1: mass[h] > 0 ? err[h] / mass[h] : 0,
      sparsity: allowed[h] > 0 ? 1 - kept[h] / allowed[h] : 0,
    }));
  };

  // Every block kept: what INT8 QK costs alone. Heads where that leaves too little of the target
  // for sparsity compute QK in FP32 (twice the QK work, none of the quantization error).
  const full = await evaluate({ cdfThreshold: 1, simThreshold: -1, pvThreshold: 50 });
  const precision: QKPrecision[] = full.map((r) => (r.l1 > INT8_SHARE * target ? 'f32' : 'int8'));

  // Stage 1: per head, the sparsest (simThreshold, cdfThreshold) within its share of the target.
  const best = Array.from({ length: H }, () => ({ sim: -1, cdf: 1, sparsity: 0 }));
  for (const sim of SIM_GRID) {
    const lo = new Array<number>(H).fill(X_LO), hi = new Array<number>(H).fill(X_HI);
    for (let it = 0; it < CDF_STEPS; it++) {
      const mid = lo.map((l, h) => (l + hi[h]) / 2);
      const r = await evaluate({ cdfThreshold: mid.map(cdfOf), simThreshold: sim, pvThreshold: 50, precision });
      for (let h = 0; h < H; h++) {
        if (r[h].l1 <= STAGE1_SHARE * target) {
          hi[h] = mid[h];
          if (r[h].sparsity > best[h].sparsity) best[h] = { sim, cdf: cdfOf(mid[h]), sparsity: r[h].sparsity };
        } else {
          lo[h] = mid[h];
        }
      }
    }
  }
  for (const b of best) {
    if (b.sparsity < MIN_GAIN) Object.assign(b, { sim: -1, cdf: 1, sparsity: 0 });
  }
  const cdfThreshold = best.map((b) => b.cdf), simThreshold = best.map((b) => b.sim);

  // Stage 2: per head, the smallest pvThreshold (most skipping) that keeps the whole target share.
  const ylo = new Array<number>(H).fill(Y_LO), yhi = new Array<number>(H).fill(Y_HI);
  const pvThreshold = new Array<number>(H).fill(50);
  for (let it = 0; it < PV_STEPS; it++) {
    const mid = ylo.map((l, h) => (l + yhi[h]) / 2);
    const r = await evaluate({ cdfThreshold, simThreshold, pvThreshold: mid.map((y) => 2 ** y), precision });
    for (let h = 0; h < H; h++) {
      if (r[h].l1 <= TOTAL_SHARE * target) {
        yhi[h] = mid[h];
        pvThreshold[h] = 2 ** mid[h];
      } else {
        ylo[h] = mid[h];
      }
    }
  }

  const params: TunedParams = { blockQ, blockK, cdfThreshold, simThreshold, pvThreshold, precision };
  const final = await evaluate(params);
  const selected = final.reduce((a, r) => a + r.sparsity, 0) / H;
  return {
    params,
    heads: final.map((r, h) => ({ sparsity: r.sparsity, l1: r.l1, int8L1: full[h].l1 })),
    sparsity: selected,
    target,
    calls: { dense: 1, sparse: done - 1 },
  };
}
