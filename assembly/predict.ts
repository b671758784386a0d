// Stage 1: block prediction. Pool each query/key block to its mean, measure the block's
// self-similarity, score the compressed attention map and keep the key blocks that matter.
import { P, Head } from './params';
import { param, paramf, ptr, dotRow, madd, hsum, headParam, headParamf } from './simd';

// Mean of the block's valid rows (minus `mean`, the K smoothing) into dst, and the block's
// self-similarity: the mean pairwise cosine, |sum_a x_a / |x_a||^2 / n^2, in O(nD).
@inline export function poolBlock(src: usize, mean: usize, rows: i32, dp: i32, dst: usize): f32 {
  for (let d = 0; d < dp; d += 4) store<v128>(dst + (<usize>d << 2), f32x4.splat(0));
  // The unit-vector sum is built in the same pass, in a second accumulator row after dst.
  const unit = dst + (<usize>dp << 2);
  for (let d = 0; d < dp; d += 4) store<v128>(unit + (<usize>d << 2), f32x4.splat(0));
  for (let r = 0; r < rows; r++) {
    const x = src + (<usize>r * dp << 2);
    let nn = f32x4.splat(0);
    for (let d = 0; d < dp; d += 4) {
      const o = <usize>d << 2;
      const v = f32x4.sub(load<v128>(x + o), load<v128>(mean + o));
      nn = madd(v, v, nn);
      store<v128>(dst + o, f32x4.add(load<v128>(dst + o), v));
    }
    const norm = sqrt<f32>(hsum(nn));
    if (norm == 0) continue; // a zero row adds 0 to every cosine
    const inv = f32x4.splat(<f32>1 / norm);
    for (let d = 0; d < dp; d += 4) {
      const o = <usize>d << 2;
      const v = f32x4.sub(load<v128>(x + o), load<v128>(mean + o));
      store<v128>(unit + o, madd(v, inv, load<v128>(unit + o)));
    }
  }
  const invn = f32x4.splat(<f32>1 / <f32>rows);
  for (let d = 0; d < dp; d += 4) {
    const o = <usize>d << 2;
    store<v128>(dst + o, f32x4.mul(load<v128>(dst + o), invn));
  }
  const u = dotRow(unit, unit, dp);
  return u / (<f32>rows * <f32>rows);
}

/** Pooled mean and self-similarity of query blocks: tile = (b * H + h) * NQB + i. */
export function pool_q(p: usize, t0: i32, t1: i32, worker: i32): void {
  const dp = param(p, P.DP), bq = param(p, P.BQ), nqb = param(p, P.NQB), nq = param(p, P.NQ);
  const zero = ptr(p, P.KMEAN) + (<usize>param(p, P.B) * param(p, P.HKV) * dp << 2);
  const tmp = ptr(p, P.SCRATCH) + <usize>worker * param(p, P.SCRATCH_STRIDE);
  for (let t = t0; t < t1; t++) {
    const i = t % nqb;
    const src = ptr(p, P.Q) + (<usize>t * bq * dp << 2);
    const sim = poolBlock(src, zero, min(bq, nq - i * bq), dp, tmp);
    memory.copy(ptr(p, P.QBAR) + (<usize>t * dp << 2), tmp, <usize>dp << 2);
    store<f32>(ptr(p, P.QSIM) + (<usize>t << 2), sim);
  }
}

/** Pooled mean and self-similarity of smoothed key blocks: tile = (b * HKV + hk) * NKB + j. */
export function pool_k(p: usize, t0: i32, t1: i32, worker: i32): void {
  const dp = param(p, P.DP), bk = param(p, P.BK), nkb = param(p, P.NKB), nk = param(p, P.NK);
  const tmp = ptr(p, P.SCRATCH) + <usize>worker * param(p, P.SCRATCH_STRIDE);
  for (let t = t0; t < t1; t++) {
    const j = t % nkb;
    const src = ptr(p, P.K) + (<usize>t * bk * dp << 2);
    const mean = ptr(p, P.KMEAN) + (<usize>(t / nkb) * dp << 2);
    const sim = poolBlock(src, mean, min(bk, nk - j * bk), dp, tmp);
    memory.copy(ptr(p, P.KBAR) + (<usize>t * dp << 2), tmp, <usize>dp << 2);
    store<f32>(ptr(p, P.KSIM) + (<usize>t << 2), sim);
  }
}

// Block order of a mask row: probability descending, ties to the lower block index.
@inline function worse(prob: usize, a: i32, b: i32): bool {
  const pa = load<f64>(prob + (<usize>a << 3)), pb = load<f64>(prob + (<usize>b << 3));
  return pa < pb || (pa == pb && a > b);
}

/** Restores the heap below `start` in order[0, end): the best block on top. */
function siftDown(prob: usize, order: usize, start: i32, end: i32): void {
  let root = start;
  while (true) {
    let child = 2 * root + 1;
    if (child >= end) return;
    let c = load<i32>(order + (<usize>child << 2));
    if (child + 1 < end) {
      const c2 = load<i32>(order + (<usize>(child + 1) << 2));
      if (worse(prob, c, c2)) { child++; c = c2; }
    }
    const r = load<i32>(order + (<usize>root << 2));
    if (!worse(prob, r, c)) return;
    store<i32>(order + (<usize>root << 2), c);
    store<i32>(order + (<usize>child << 2), r);
    root = child;
  }
}

// Best-first selection without allocation: a heap of the block indices (O(n)), from which each
// take moves the best remaining block to the end of the live range. A rule that keeps k of n
// blocks costs O(n + k log n), not a sort of all n: a decode step over a long history keeps a tenth.

function heapify(prob: usize, order: usize, n: i32): void {
  for (let j = 0; j < n; j++) store<i32>(order + (<usize>j << 2), j);
  for (let s = n / 2 - 1; s >= 0; s--) siftDown(prob, order, s, n);
}

/** Moves the best of order[0, live) to order[live - 1]. */
@inline function takeBest(prob: usize, order: usize, live: i32): void {
  const top = load<i32>(order);
  store<i32>(order, load<i32>(order + (<usize>(live - 1) << 2)));
  store<i32>(order + (<usize>(live - 1) << 2), top);
  siftDown(prob, order, 0, live - 1);
}

/** Index of the last key block that query block i may see (-1: none). */
@inline export function lastKeyBlock(p: usize, i: i32): i32 {
  const nkb = param(p, P.NKB);
  if (!param(p, P.CAUSAL)) return nkb - 1;
  const nq = param(p, P.NQ), bq = param(p, P.BQ);
  const lastKey = min((i + 1) * bq, nq) - 1 + param(p, P.NK) - nq;
  return lastKey < 0 ? -1 : min(nkb - 1, lastKey / param(p, P.BK));
}

/**
 * Rows of the block mask. Per query head, tile = (b * H + h) * NQB + i. With P.SHARED (GQA), tile =
 * (b * HKV + hk) * NQB + i: the kv head's G query heads rank its key blocks together, by their
 * probabilities averaged, and each keeps its own count of that one ranking, so the blocks the
 * group reads are those of its most demanding head rather than the union of G separate picks.
 */
export function predict(p: usize, t0: i32, t1: i32, worker: i32): void {
  const dp = param(p, P.DP), h = param(p, P.H), hkv = param(p, P.HKV);
  const nqb = param(p, P.NQB), nkb = param(p, P.NKB);
  const kstride = param(p, P.KSTRIDE), cached = param(p, P.CACHED) != 0, cdf = param(p, P.CDF_MODE) != 0;
  const heads = param(p, P.SHARED) != 0 ? h / hkv : 1;
  const prob = ptr(p, P.SCRATCH) + <usize>worker * param(p, P.SCRATCH_STRIDE);
  const order = prob + (<usize>nkb << 3), one = order + (<usize>nkb << 2);
  for (let t = t0; t < t1; t++) {
    const bg = t / nqb, i = t - bg * nqb;
    // The tile's query heads bh0 .. bh0 + heads - 1 (as b * H + head), and their kv head.
    const bh0 = bg * heads, bhk = (bh0 / h) * hkv + (bh0 % h) / (h / hkv);
    const kbar = ptr(p, P.KBAR) + (<usize>bhk * kstride * dp << 2);
    const ksim = ptr(p, P.KSIM) + (<usize>bhk * kstride << 2);
    const last = lastKeyBlock(p, i);

    // One head's top-k needs only the order of its scores, which exp keeps; the CDF rule and a
    // group's mean need the probabilities.
    if (heads == 1) blockProbs(p, bh0 * nqb + i, kbar, ksim, last, prob, cdf);
    else {
      for (let j = 0; j < nkb; j++) store<f64>(prob + (<usize>j << 3), 0);
      for (let r = 0; r < heads; r++) {
        blockProbs(p, (bh0 + r) * nqb + i, kbar, ksim, last, one, true);
        for (let j = 0; j < nkb; j++) {
          const at = <usize>j << 3;
          store<f64>(prob + at, load<f64>(prob + at) + load<f64>(one + at) / <f64>heads);
        }
      }
    }
    heapify(prob, order, nkb);

    // Take the best blocks, as many as the tile's most demanding head keeps; they end up in
    // order[nkb - taken, nkb), best last, and each head keeps a suffix of that range.
    // all: every head's cdfThreshold is 1 or more, so every head keeps every block.
    let taken = 0, all = cdf;
    if (cdf) {
      let most: f64 = 0;
      for (let r = 0; r < heads; r++) {
        const tau = <f64>headParamf(p, (bh0 + r) % h, Head.CDF);
        most = max(most, tau);
        all = all && tau >= 1;
      }
      let run = 0.0;
      // tau = 1 keeps every block, as in exact arithmetic; the rounded running sum can pass 1 early.
      if (!all) {
        while (taken < nkb) {
          run += load<f64>(prob + (<usize>load<i32>(order) << 3));
          if (run > most && most < 1) break;
          takeBest(prob, order, nkb - taken++);
        }
        if (taken == 0) takeBest(prob, order, nkb - taken++);
      }
    } else {
      for (let r = 0; r < heads; r++) taken = max(taken, min(headParam(p, (bh0 + r) % h, Head.NKEEP), nkb));
      for (let k = 0; k < taken; k++) takeBest(prob, order, nkb - k);
    }

    for (let r = 0; r < heads; r++) {
      const head = (bh0 + r) % h, tq = (bh0 + r) * nqb + i;
      let keep = all ? nkb : min(headParam(p, head, Head.NKEEP), nkb);
      if (cdf && !all) {
        const tau = <f64>headParamf(p, head, Head.CDF);
        if (tau >= 1) keep = nkb;
        else {
          let run = 0.0;
          keep = 0;
          while (keep < taken) {
            run += load<f64>(prob + (<usize>load<i32>(order + (<usize>(nkb - 1 - keep) << 2)) << 3));
            if (run > tau) break;
            keep++;
          }
          keep = max(keep, 1);
        }
      }
      writeRow(p, tq, head, ksim, order, keep, last, cached);
    }
  }
}

/**
 * Query tile tq's pooled probabilities over its kv head's key blocks (softmax of the compressed
 * scores) into prob; without `normalize`, the scores themselves (-Infinity for blocks not scored).
 */
@inline function blockProbs(p: usize, tq: i32, kbar: usize, ksim: usize, last: i32, prob: usize, normalize: bool): void {
  const dp = param(p, P.DP), nkb = param(p, P.NKB), scale = paramf(p, P.SCALE);
  const thr = headParamf(p, (tq / param(p, P.NQB)) % param(p, P.H), Head.SIM);
  const qbar = ptr(p, P.QBAR) + (<usize>tq * dp << 2);
  let top = -Infinity;
  for (let j = 0; j < nkb; j++) {
    let s = -Infinity;
    if (j <= last && load<f32>(ksim + (<usize>j << 2)) > thr) {
      s = <f64>(scale * dotRow(qbar, kbar + (<usize>j * dp << 2), dp));
    }
    store<f64>(prob + (<usize>j << 3), s);
    top = max(top, s);
  }
  if (!normalize) return;
  let sum = 0.0;
  for (let j = 0; j < nkb; j++) {
    const e = top == -Infinity ? 0.0 : Math.exp(load<f64>(prob + (<usize>j << 3)) - top);
    store<f64>(prob + (<usize>j << 3), e);
    sum += e;
  }
  if (sum > 0) for (let j = 0; j < nkb; j++) store<f64>(prob + (<usize>j << 3), load<f64>(prob + (<usize>j << 3)) / sum);
}

/** Query tile tq's mask row: its forced blocks, the `keep` best of order (its last entries), then the causal limit. */
@inline function writeRow(p: usize, tq: i32, head: i32, ksim: usize, order: usize, keep: i32, last: i32, cached: bool): void {
  const nkb = param(p, P.NKB), thr = headParamf(p, head, Head.SIM);
  const row = ptr(p, P.MASK) + <usize>tq * nkb;
  const forceRow = load<f32>(ptr(p, P.QSIM) + (<usize>tq << 2)) <= thr;
  for (let j = 0; j < nkb; j++) store<u8>(row + j, forceRow || load<f32>(ksim + (<usize>j << 2)) <= thr);
  for (let k = nkb - keep; k < nkb; k++) store<u8>(row + load<i32>(order + (<usize>k << 2)), 1);
  if (param(p, P.SINK)) store<u8>(row, 1);
  // A KV cache's newest block is read whatever its score: it holds the query's own position.
  if (cached && last >= 0) store<u8>(row + last, 1);
  for (let j = max(last + 1, 0); j < nkb; j++) store<u8>(row + j, 0);
  const kept = ptr(p, P.KEPT);
  if (kept != 0) {
    let n = 0;
    for (let j = 0; j <= last; j++) n += load<u8>(row + j);
    store<i32>(kept + (<usize>tq << 2), n);
  }
}
