// Input range, run in parallel before any stage. NaN or Infinity in Q, K or V would poison a whole
// block's quantization scale, so such a call is refused. Finite inputs of any size are brought
// into a range where no sum of the later stages can overflow or underflow, by powers of two (exact):
// Q and K are multiplied by 2^QEXP and 2^KEXP and the score multipliers by the inverse, so scores
// keep their float32 values bit for bit, and V's weights are divided by 2^VSHIFT inside Stage 2
// (attention.ts), which the final division by the weights' sum undoes. Calls whose scores
// themselves could leave float32's range are refused (STATUS 2) and TypeScript names the bound.
import { P } from './params';
import { param, ptr, qRowsRead } from './simd';

/** Bytes of one tile. */
const TILE: usize = 1 << 16;
/** |bits| at or above this is Infinity or NaN. */
const NONFINITE: i32 = 0x7f800000;
/** Inputs whose max |x| lies in [2^-LIMIT, 2^LIMIT] are used as they are: no sum of squares, dot
 * product or mean over 2^26 rows of 1024 channels leaves float32's normal range. */
const LIMIT = 40;
/** Largest score bound accepted: differences of two scores stay below float32's maximum, 2^128. */
const SCORE_LIMIT = 125;

@inline function tilesOf(bytes: usize): i32 {
  return <i32>((bytes + TILE - 1) / TILE);
}

// Q's tiles cover only the rows that kernels read (qRowsRead), head by head: several heads' rows to
// a tile, or one head's rows over several tiles.
@inline function qHeads(p: usize): i32 {
  return param(p, P.B) * param(p, P.H);
}

@inline function qHeadBytes(p: usize): usize {
  const nqb = param(p, P.NQB);
  return <usize>((nqb - 1) * param(p, P.BQ) + qRowsRead(p, nqb - 1)) * param(p, P.DP) << 2;
}

@inline function qHeadStride(p: usize): usize {
  return <usize>param(p, P.NQB) * param(p, P.BQ) * param(p, P.DP) << 2;
}

/** Heads per Q tile; 0 where one head takes several tiles. */
@inline function qHeadsPerTile(p: usize): i32 {
  const hb = qHeadBytes(p);
  return hb > 0 && hb <= TILE ? <i32>(TILE / hb) : 0;
}

@inline function qTiles(p: usize): i32 {
  const per = qHeadsPerTile(p);
  return per > 0 ? (qHeads(p) + per - 1) / per : qHeads(p) * tilesOf(qHeadBytes(p));
}

// A KV cache's keys and values were checked when appended (TypeScript keeps their maxima).
@inline function kBytes(p: usize): usize {
  if (param(p, P.CACHED)) return 0;
  return <usize>param(p, P.B) * param(p, P.HKV) * param(p, P.NKB) * param(p, P.BK) * param(p, P.DP) << 2;
}

/** Tiles of input_max: Q's, then K's, then V's (when the call has V). */
export function input_max_tiles(p: usize): i32 {
  return qTiles(p) + tilesOf(kBytes(p)) * (ptr(p, P.V) != 0 ? 2 : 1);
}

/** Tiles of prescale: Q's and K's. */
export function prescale_tiles(p: usize): i32 {
  return qTiles(p) + tilesOf(kBytes(p));
}

// Input tile t is tileRuns runs of tileBytes bytes, the first at tileStart, each Q's head stride
// after the last: Q's tiles first (the rows of each head that kernels read), then K's and V's
// (their whole buffers, 64 KiB at a time).
@inline function tileRuns(p: usize, t: i32): i32 {
  const per = qHeadsPerTile(p);
  return t < qTiles(p) && per > 0 ? min(per, qHeads(p) - t * per) : 1;
}

@inline function tileStart(p: usize, t: i32): usize {
  const tq = qTiles(p), tk = tilesOf(kBytes(p));
  if (t < tq) {
    const per = qHeadsPerTile(p), n = tilesOf(qHeadBytes(p));
    if (per > 0) return ptr(p, P.Q) + <usize>(t * per) * qHeadStride(p);
    return ptr(p, P.Q) + <usize>(t / n) * qHeadStride(p) + <usize>(t % n) * TILE;
  }
  if (t < tq + tk) return ptr(p, P.K) + <usize>(t - tq) * TILE;
  return ptr(p, P.V) + <usize>(t - tq - tk) * TILE;
}

@inline function tileBytes(p: usize, t: i32): usize {
  const tq = qTiles(p);
  if (t < tq) {
    const hb = qHeadBytes(p);
    return qHeadsPerTile(p) > 0 ? hb : min(TILE, hb - <usize>(t % tilesOf(hb)) * TILE);
  }
  return min(TILE, kBytes(p) - <usize>((t - tq) % tilesOf(kBytes(p))) * TILE);
}

/** TILEMAX[t] = max |bits| of tile t (as integers, so one maximum finds NaN, Infinity and max |x|). */
export function input_max(p: usize, t0: i32, t1: i32): void {
  const abs = i32x4.splat(0x7fffffff), stride = qHeadStride(p);
  for (let t = t0; t < t1; t++) {
    const at = tileStart(p, t), bytes = tileBytes(p, t);
    let m = i32x4.splat(0);
    for (let r = 0; r < tileRuns(p, t); r++) {
      const from = at + <usize>r * stride, end = from + bytes;
      for (let o = from; o < end; o += 16) m = i32x4.max_s(m, v128.and(load<v128>(o), abs));
    }
    m = i32x4.max_s(m, v128.shuffle<i32>(m, m, 2, 3, 0, 1));
    store<i32>(ptr(p, P.TILEMAX) + (<usize>t << 2), max(i32x4.extract_lane(m, 0), i32x4.extract_lane(m, 1)));
  }
}

@inline function maxOf(p: usize, t0: i32, t1: i32): i32 {
  let m = 0;
  for (let t = t0; t < t1; t++) m = max(m, load<i32>(ptr(p, P.TILEMAX) + (<usize>t << 2)));
  return m;
}

/** The power of two that brings max |x| = m into [1, 2); 0 for all-zero inputs. */
@inline function exponentToOne(m: f32): i32 {
  if (m == 0) return 0;
  const e = <i32>((reinterpret<u64>(<f64>m) >> 52) & 0x7ff) - 1023;
  return min(126, max(-126, -e));
}

/** ceil(log2(x)) for x >= 1, from the bits (Math.log2 would add lookup tables to the module's static data). */
@inline function ceilLog2(x: f64): i32 {
  const bits = reinterpret<u64>(x);
  const e = <i32>(bits >> 52) - 1023;
  return (bits & 0xfffffffffffff) != 0 ? e + 1 : e;
}

@inline function pow2(e: i32): f64 {
  return reinterpret<f64>(<u64>(e + 1023) << 52);
}

@inline function outside(m: f32): bool {
  return m != 0 && (m > <f32>pow2(LIMIT) || m < <f32>pow2(-LIMIT));
}

/**
 * One tile, after input_max: sets STATUS, the maxima, QEXP and KEXP (with SCALE and QK_MUL
 * divided by their product) and VSHIFT.
 */
export function input_range(p: usize, t0: i32, t1: i32): void {
  if (t0 >= t1) return;
  const tq = qTiles(p), tk = tilesOf(kBytes(p));
  const hasV = ptr(p, P.V) != 0, cached = param(p, P.CACHED) != 0;
  const bq = maxOf(p, 0, tq);
  const bk = cached ? param(p, P.KMAX) : maxOf(p, tq, tq + tk);
  const bv = cached ? param(p, P.VMAX) : hasV ? maxOf(p, tq + tk, tq + 2 * tk) : 0;
  if (max(bq, max(bk, bv)) >= NONFINITE) {
    store<i32>(p + (<usize>P.STATUS << 2), 1);
    return;
  }
  const mq = reinterpret<f32>(bq), mk = reinterpret<f32>(bk), mv = reinterpret<f32>(bv);
  store<f32>(p + (<usize>P.QMAX << 2), mq);
  store<f32>(p + (<usize>P.KMAX << 2), mk);
  store<f32>(p + (<usize>P.VMAX << 2), mv);
  const qkMul = load<f64>(p + (<usize>P.QK_MUL64 << 2));
  let eq = 0, ek = 0;
  if (outside(mq) || outside(mk) || qkMul > pow2(100)) {
    eq = exponentToOne(mq);
    // A cache's K stays as appended: within [2^-LIMIT, 2^LIMIT], which kvcache.ts checks.
    ek = cached ? 0 : exponentToOne(mk);
    const undo = pow2(-(eq + ek));
    store<f32>(p + (<usize>P.SCALE << 2), <f32>(load<f64>(p + (<usize>P.SCALE64 << 2)) * undo));
    store<f32>(p + (<usize>P.QK_MUL << 2), <f32>(qkMul * undo));
  }
  store<i32>(p + (<usize>P.QEXP << 2), eq);
  store<i32>(p + (<usize>P.KEXP << 2), ek);
  // |score| <= scale log2(e) sum_d |q_d| |k'_d|, and smoothing (k' = k - mean) can double |k|.
  const bound = qkMul * <f64>param(p, P.DP) * <f64>mq * <f64>mk * 2;
  if (bound > pow2(SCORE_LIMIT)) {
    store<i32>(p + (<usize>P.STATUS << 2), 2);
    return;
  }
  // Stage 2's running sums: |O| <= l max|v| with l <= NK (each weight is at most 1).
  const vsum = <f64>mv * <f64>param(p, P.NK);
  const shift = vsum > pow2(SCORE_LIMIT) ? ceilLog2(vsum) - SCORE_LIMIT : 0;
  store<f32>(p + (<usize>P.VSHIFT << 2), <f32>shift);
}

/** Multiplies Q's tiles by 2^QEXP and K's by 2^KEXP where input_range chose to. */
export function prescale(p: usize, t0: i32, t1: i32): void {
  const tq = qTiles(p), stride = qHeadStride(p);
  for (let t = t0; t < t1; t++) {
    const e = param(p, t < tq ? P.QEXP : P.KEXP);
    if (e == 0) continue;
    const by = f32x4.splat(<f32>pow2(e));
    const at = tileStart(p, t), bytes = tileBytes(p, t);
    for (let r = 0; r < tileRuns(p, t); r++) {
      const from = at + <usize>r * stride, end = from + bytes;
      for (let o = from; o < end; o += 16) store<v128>(o, f32x4.mul(load<v128>(o), by));
    }
  }
}
