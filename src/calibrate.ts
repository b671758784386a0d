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
  /**
   * Tune for calls with groupSelection (GQA: a kv head's query heads share one ranking of its key
   * blocks); params then carry it. Every head keeps simThreshold -1: a head's forced blocks would
   * move its group's ranking, and with it the blocks of heads tuned apart from it.
   */
  groupSelection?: boolean;
}

/** Settings to spread into an attention call: plain JSON. */
export type TunedParams = {
  blockQ: number;
  blockK: number;
  simThreshold: number[];
  pvThreshold: number[];
  /** QK's precision per head: FP32 where INT8 alone would take too much of the target */
  precision: QKPrecision[];
  /** present when calibrated with groupSelection */
  groupSelection?: true;
} & ({ cdfThreshold: number[] } | { topk: number[] });

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

const KEYS = ['target', 'causal', 'scale', 'layout', 'blockQ', 'blockK', 'signal', 'onProgress', 'order', 'groupSelection'] as const;

// The search. Stage 1 runs the CDF rule at two simThresholds (the released per-head tunings sit
// mostly near -1, no forcing, and a forced block only adds density). Causal calls also try top-k:
// its count is of all key blocks, so it keeps a causal call's early rows whole, where mean-pooled
// CDF scores of RoPE keys drop a needed block in every row (llm_rope_causal: one block per row
// dropped at any cdfThreshold from 0.98 on, L1 0.39). Without a causal mask the CDF rule, which
// adapts to each row, held better on unseen inputs (image_frame3's worst head: 0.083 against top-k's
// 0.104). Each family is a 1-d search over x, where a larger x keeps more: cdfThreshold =
// 1 - 10^-x, topk = x; pvThreshold is 2^y. x stops at 5: running it to 7 (as close to 1 as an f32
// threshold gets, which Hilbert-ordered video needs for L1 0.01) cost the image and video cases
// 4-10% of their sparsity at target 0.05 in the same number of calls. A search first tries its
// sparsest end, which bounds every candidate's sparsity (a head whose bound is no better than what
// it has stops there), then bisects, and once a head has an L1 on each side of its goal,
// interpolates log L1 in x, which lands closer to the goal than bisection in as many calls. Six
// steps: with five, the probe took the step that image_frame3's whole-image heads needed to reach
// their passing range near 1 - 10^-5 (sparsity 0.14 against 0.52).
interface Family { mode: 'cdf' | 'topk'; sim: number; lo: number; hi: number; value: (x: number) => number }
const cdfOf = (x: number) => 1 - 10 ** -x;
const FAMILIES: Family[] = [
  { mode: 'cdf', sim: -1, lo: 0.1, hi: 5, value: cdfOf },
  { mode: 'cdf', sim: 0.5, lo: 0.1, hi: 5, value: cdfOf },
  { mode: 'topk', sim: -1, lo: 0.01, hi: 1, value: (x) => x },
];
const STAGE1_STEPS = 6, PV_STEPS = 4, Y_LO = -1, Y_HI = Math.log2(50);
// The share of the target both searches aim within. Stage 1 may take all of it (it skips whole
// blocks, so it saves more per unit of error than PV skipping does); PV skipping takes what Stage
// 1's search left. The last tenth is headroom for inputs the calibration did not see.
const SHARE = 0.9;
/** Interpolation aims this far under a goal, so that its candidate more often passes. */
const AIM = 0.95;
/** Top-k is searched only where a row has at least this many key blocks. */
const TOPK_MIN_BLOCKS = 16;
/** Heads whose sparsity stays below this gain less than Stage 1 costs (about 3% of a call): they keep every block. */
const MIN_GAIN = 0.03;
/** A head whose INT8 QK alone takes more than this share of the target runs QK in FP32. */
const INT8_SHARE = 0.5;

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

interface HeadResult { l1: number; sparsity: number }
/** A head's Stage 1 setting: the rule's value, simThreshold, and its measured result where known. */
interface Pick { sim: number; value: number; sparsity: number; result?: HeadResult }

const ruleOf = (mode: 'cdf' | 'topk', values: number[]) => (mode === 'cdf' ? { cdfThreshold: values } : { topk: values });

/** One head's search for the smallest x whose L1 stays within a goal, L1 falling as x grows: lo
 * fails (or is the range's end), hi passes (or is). */
class Interval {
  l1Lo = NaN;
  done = false;
  /** Two failing candidates gave the same L1: the same mask, a flat stretch (see next). */
  flat = false;
  /** l1Hi: the L1 at hi where known; the range's safe end is usually measured before the search. */
  constructor(public lo: number, public hi: number, public l1Hi = NaN) {}

  next(goal: number): number {
    const w = this.hi - this.lo;
    if (Number.isNaN(this.l1Lo)) return this.lo;
    // Mean-pooled CDF scores can drop the same blocks at every threshold short of 1 (RoPE keys,
    // stories260K): then the safe end decides at once whether anything in the range passes.
    if (this.flat && Number.isNaN(this.l1Hi)) return this.hi;
    if (!(this.l1Lo > this.l1Hi && this.l1Hi > 0)) return this.lo + w / 2;
    // Kept off the ends so the interval always shrinks by a sizeable share.
    const t = Math.log(this.l1Lo / (AIM * goal)) / Math.log(this.l1Lo / this.l1Hi);
    return this.lo + w * Math.min(0.85, Math.max(0.15, t));
  }

  record(x: number, l1: number, pass: boolean): void {
    if (pass) [this.hi, this.l1Hi] = [x, l1];
    else {
      this.flat ||= l1 === this.l1Lo;
      [this.lo, this.l1Lo] = [x, l1];
    }
    // The sparsest end passed: nothing in this range is sparser.
    if (this.hi === this.lo) this.done = true;
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
  const groupSelection = checkBool('groupSelection', o.groupSelection, false);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') {
    throw new TypeError(`options.onProgress must be a function, got ${typeof o.onProgress}`);
  }
  const onProgress = o.onProgress as CalibrateOptions['onProgress'];
  const H = shapes[0].q.H;
  // Checked against every sample here, so that a bad one is refused before any call computes.
  for (const sh of shapes) checkOrder(o.order, sh.q, sh.k, causal);
  const order = o.order as OrderOption | undefined;
  const common = { causal, scale, layout, blockQ, blockK, signal, order, groupSelection };

  // Top-k moves in steps of a key block: with few blocks a step is a large share of a row, and a
  // count tuned on one sample did not carry (stories260K, 4 blocks: one block dropped from the last
  // rows took a head from L1 0.044 to 0.100 on unseen text).
  const topkGrain = shapes.every((sh) => Math.ceil(sh.k.N / blockK) >= TOPK_MIN_BLOCKS);
  const families = FAMILIES.filter((f) => (f.mode === 'cdf' || (causal && topkGrain)) && (!groupSelection || f.sim === -1));
  // Progress: one step per call. The total is an upper bound that shrinks when a search ends early.
  let done = 0, total = 1 + 1 + families.length * STAGE1_STEPS + PV_STEPS + 1;
  const step = () => {
    done++;
    onProgress?.({ done, total });
  };

  const refs: Float32Array[] = [];
  for (const s of list) refs.push((await engine.denseAttention(s.q, s.k, s.v, { causal, scale, layout, signal, order })).data);
  step();

  /** Per head: L1 pooled over the samples, and Stage 1 sparsity (selected over allowed blocks). */
  const evaluate = async (settings: SpargeOptions): Promise<HeadResult[]> => {
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
    return Array.from({ length: H }, (_, h) => ({
      l1: mass[h] > 0 ? err[h] / mass[h] : 0,
      sparsity: allowed[h] > 0 ? 1 - kept[h] / allowed[h] : 0,
    }));
  };

  // Every block kept: what INT8 QK costs alone. Heads where that leaves too little of the target
  // for sparsity compute QK in FP32 (twice the QK work, none of the quantization error).
  const full = await evaluate({ cdfThreshold: 1, simThreshold: -1, pvThreshold: 50 });
  step();
  const precision: QKPrecision[] = full.map((r) => (r.l1 > INT8_SHARE * target ? 'f32' : 'int8'));

  // Stage 1: per head and rule, the sparsest setting within the share. A head's search ends when a
  // failing candidate is no sparser than its best: every later one keeps more blocks.
  const goal = SHARE * target;
  const dense = (): Pick => ({ sim: -1, value: 1, sparsity: 0 });
  const best = { cdf: Array.from({ length: H }, dense), topk: Array.from({ length: H }, dense) };
  for (const f of families) {
    // Top-k's safe end keeps every block: the first call measured it. The CDF rule's drops blocks.
    const search = full.map((r) => new Interval(f.lo, f.hi, f.mode === 'topk' ? r.l1 : NaN));
    for (let it = 0; it < STAGE1_STEPS; it++) {
      const xs = search.map((s) => (s.done ? s.hi : s.next(goal)));
      const r = await evaluate({ ...ruleOf(f.mode, xs.map(f.value)), simThreshold: f.sim, pvThreshold: 50, precision });
      for (let h = 0; h < H; h++) {
        if (search[h].done) continue;
        const pass = r[h].l1 <= goal, b = best[f.mode][h];
        search[h].record(xs[h], r[h].l1, pass);
        if (pass && r[h].sparsity > b.sparsity) best[f.mode][h] = { sim: f.sim, value: f.value(xs[h]), sparsity: r[h].sparsity, result: r[h] };
        if (!pass && (r[h].sparsity < MIN_GAIN || r[h].sparsity <= b.sparsity)) search[h].done = true;
      }
      if (search.every((s) => s.done)) total -= STAGE1_STEPS - 1 - it;
      step();
      if (search.every((s) => s.done)) break;
    }
  }

  // One rule for the layer (a call takes one): the one with more blocks dropped over all heads.
  const gain = (picks: Pick[]) => picks.reduce((a, p) => a + (p.sparsity >= MIN_GAIN ? p.sparsity : 0), 0);
  const mode = gain(best.topk) > gain(best.cdf) ? 'topk' : 'cdf';
  // A head kept whole with INT8 QK runs exactly the first call's setting (either rule at 1 keeps every block).
  const picks = best[mode].map((p, h) => (p.sparsity >= MIN_GAIN ? p : { ...dense(), result: precision[h] === 'int8' ? full[h] : undefined }));
  const rule = ruleOf(mode, picks.map((p) => p.value)), simThreshold = picks.map((p) => p.sim);

  // Stage 2: per head, the smallest pvThreshold (most skipping) still within the share.
  const search = picks.map((p, h) => new Interval(Y_LO, Y_HI, (p.result ?? full[h]).l1));
  const pvThreshold = new Array<number>(H).fill(50);
  const results = picks.map((p) => p.result);
  for (let it = 0; it < PV_STEPS; it++) {
    const ys = search.map((s) => s.next(goal));
    const r = await evaluate({ ...rule, simThreshold, pvThreshold: ys.map((y) => 2 ** y), precision });
    for (let h = 0; h < H; h++) {
      const pass = r[h].l1 <= goal;
      search[h].record(ys[h], r[h].l1, pass);
      if (pass) {
        pvThreshold[h] = 2 ** ys[h];
        results[h] = r[h];
      }
    }
    if (it === PV_STEPS - 1 && results.every((r) => r !== undefined)) total--;
    step();
  }

  // Heads are independent in a call, so each head's result was measured where its setting was tried;
  // one more call only for heads whose final setting no call has run.
  const params = { blockQ, blockK, ...rule, simThreshold, pvThreshold, precision, ...(groupSelection ? { groupSelection: true } : {}) } as TunedParams;
  let final = results as HeadResult[];
  if (results.some((r) => r === undefined)) {
    final = await evaluate(params);
    step();
  }
  const selected = final.reduce((a, r) => a + r.sparsity, 0) / H;
  return {
    params,
    heads: final.map((r, h) => ({ sparsity: r.sparsity, l1: r.l1, int8L1: full[h].l1 })),
    sparsity: selected,
    target,
    calls: { dense: 1, sparse: done - 1 },
  };
}
