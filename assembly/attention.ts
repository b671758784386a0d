// Stage 2: block-sparse attention with FlashAttention's online softmax in the log2 domain, skipping
// the exponentials and P.V of a key block whose row maxima say it is negligible. The same driver,
// with FP32 QK and every allowed block, is the dense baseline (attend_dense).
//
// Loop order per query block: key blocks outer, groups of 4 query rows inner, so a key block's K
// codes and V rows stay in cache while every row group of the query block passes over them. The
// pvThreshold decision is taken per such group of 4 rows (the reference decides per GPU warp).
// Scores are key-major (microkernels.ts), so each row group's maxima, sums and rescaling factors
// are single vectors, one lane per row.
//
// Sums over long key ranges are blocked: O and l accumulate FOLD key blocks at a time in scratch
// and are then added into the running totals, so float32 rounding grows with the number of
// chunks plus FOLD rather than with the number of key blocks (relative L1 at 80K keys: README).
import { P, Head } from './params';
import { param, paramf, ptr, exp2v, exp2s, zeroRow, madd, hsum, hmax, headParam, headParamf } from './simd';
import { qk_4x8, pv_4x8, qk_1x8, pv_1x32, qkSteps, qRowBytes, kKeyBytes, SplatByLoad, SplatByShuffle, ValuesF32, ValuesBf16 } from './microkernels';
import { lastKeyBlock } from './predict';

const ROWS = 4;
const LANES = i32x4(0, 1, 2, 3);
const NEG_INF = f32x4.splat(-Infinity);
const F32_MAX = f32x4.splat(3.4028234663852886e38);
/** Key blocks per chunk of the blocked sums. */
const FOLD = 32;

/**
 * Bytes of per-worker scratch that attention needs: the scores of a row group; per row the running
 * maximum m, the chunk's sum l, the maximum and sum of the totals; then the chunk's O rows.
 */
export function attention_scratch_bytes(bq: i32, bk: i32, dp: i32): i32 {
  return ROWS * bk * 4 + bq * 16 + bq * dp * 4;
}

// 2^(m - mo) for a new maximum m over the old mo, in the exponent base of m (0 while m is -Infinity,
// so that rows with nothing visible yet scale by 0 instead of NaN).
@inline function baseOf(m: v128): v128 {
  return v128.bitselect(f32x4.splat(0), m, f32x4.eq(m, NEG_INF));
}

/** M for the block-sparse path: the mask and pvThreshold's skipping apply. */
type Masked = i32;
/** M for dense attention: every allowed block, nothing skipped. */
type Full = i64;
/** R for tiles of one row group (decode steps, grouped one-row steps): the *_step entries. */
type Step = f32;
/** R for larger tiles. A separate instance, since the step's extra loads in the same function
 * slowed whole-sequence calls by a fifth though they never ran there. */
type Block = f64;

// T: the QK element type (f32, or INT8 codes: i16 or i8, see microkernels.ts); B: the broadcast;
// M: block-sparse or dense; R: the tile's rows; V: FP32 values, or a KV cache's bfloat16 copy
// (P.VH). FP32 QK also serves block-sparse heads whose INT8 error is too large.
@inline function attend<T, B, M, R, V>(p: usize, t0: i32, t1: i32, worker: i32): void {
  const sparse = sizeof<M>() == 4, step = sizeof<R>() == 4;
  const dp = param(p, P.DP), h = param(p, P.H), hkv = param(p, P.HKV);
  const nq = param(p, P.NQ), nk = param(p, P.NK), bq = param(p, P.BQ), bk = param(p, P.BK);
  const nqb = param(p, P.NQB), nkb = param(p, P.NKB), causal = param(p, P.CAUSAL) != 0;
  const shift = nk - nq;

  // Weights are 2^(s - m - vshift): input_range's guard against P.V overflow, 0 for most inputs.
  const vshift = f32x4.splat(paramf(p, P.VSHIFT));

  const s = ptr(p, P.SCRATCH) + <usize>worker * param(p, P.SCRATCH_STRIDE);
  const mrow = s + (<usize>bk << 4), lrow = mrow + (<usize>bq << 2);
  const mtot = lrow + (<usize>bq << 2), ltot = mtot + (<usize>bq << 2);
  const chunk = ltot + (<usize>bq << 2);

  const rowBytes = <usize>dp << 2, vRowBytes = <usize>dp * sizeof<V>();
  const vBase = sizeof<V>() == 2 ? ptr(p, P.VH) : ptr(p, P.V);
  const qBytes = qRowBytes<T>(dp), keyBytes = kKeyBytes<T>(dp), steps = qkSteps<T>(dp);
  const qBase = isFloat<T>() ? ptr(p, P.QF) : ptr(p, P.QC);
  const kBase = isFloat<T>() ? ptr(p, P.KF) : ptr(p, P.KC);

  const kstride = param(p, P.KSTRIDE), splits = param(p, P.SPLITS), span = param(p, P.SPAN);
  const group = sparse ? param(p, P.GROUP) : 0;

  for (let t = t0; t < t1; t++) {
    // Tile t is key range `part` of query tile qt: a query block of one head, or (group > 1) the
    // one-row queries of a kv head's G query heads, lane r the head's r-th.
    const qt = t / splits, part = t - qt * splits;
    const bh = group > 1 ? (qt / hkv) * h + (qt % hkv) * group : qt / nqb, i = group > 1 ? 0 : qt - bh * nqb;
    const head = bh % h, bhk = group > 1 ? qt : (bh / h) * hkv + head / (h / hkv);
    const row0 = i * bq, rows = group > 1 ? group : min(bq, nq - row0);
    const lambda = !sparse ? f32x4.splat(Infinity)
      : group > 1 ? lanesOf(p, head, rows, Head.PV) : f32x4.splat(headParamf(p, head, Head.PV));
    const out = splits > 1 ? partOf(p, t) : ptr(p, P.OUT) + <usize>qt * bq * rowBytes;
    const q = qBase + <usize>qt * bq * qBytes;
    // Q's dequantization scale (and scale * log2 e), per row of a group.
    const qs = isFloat<T>() ? f32x4.splat(paramf(p, P.QK_MUL)) : group > 1 ? scalesOf(p, bh, rows)
      : f32x4.splat(load<f32>(ptr(p, P.QSCALE) + (<usize>qt << 2)));
    const maskRow = ptr(p, P.MASK) + <usize>(group > 1 ? bh : qt) * nkb;
    // Only the row groups that hold real rows are read back: a one-row step clears 4 rows, not bq.
    const used = (rows + ROWS - 1) & ~(ROWS - 1);
    zeroRow(out, used * dp);
    zeroRow(chunk, used * dp);
    for (let rg = 0; rg < bq; rg += ROWS) {
      store<v128>(mrow + (<usize>rg << 2), NEG_INF);
      store<v128>(lrow + (<usize>rg << 2), f32x4.splat(0));
      store<v128>(mtot + (<usize>rg << 2), NEG_INF);
      store<v128>(ltot + (<usize>rg << 2), f32x4.splat(0));
    }

    const last = min(lastKeyBlock(p, i), (part + 1) * span - 1);
    let visited = 0, touched = 0;
    for (let j = part * span; j <= last; j++) {
      // Which rows keep the block: all, or (groups) those whose head's mask row has it.
      let kept = i32x4.splat(-1);
      // One row's work (`one`, row r of the tile): a one-row tile, or in a grouped step a block
      // that one head alone keeps, as most of a group's blocks are when each head ranks its own.
      // Whole-sequence tiles (R = Block) never take the lane form: in their instance its code
      // slowed them by 4-6% (bench/ab.js), so every use of it below is guarded by `step`.
      let one = rows == 1, r = 0;
      if (sparse) {
        if (group > 1) {
          kept = keptLanes(maskRow, nkb, j, rows);
          if (step) {
            const bits = i32x4.bitmask(kept) & ((1 << rows) - 1);
            if (bits == 0) continue;
            if (popcnt(bits) == 1) {
              one = true;
              r = ctz(bits);
            }
          } else if (!v128.any_true(kept)) continue;
        } else if (load<u8>(maskRow + j) == 0) continue;
      }
      if (++visited % FOLD == 0) fold(out, chunk, mrow, lrow, mtot, ltot, rows, dp);
      const key0 = j * bk, kt = bhk * kstride + j;
      const kp = kBase + <usize>kt * bk * keyBytes;
      const vp = vBase + <usize>kt * bk * vRowBytes;
      let mul = isFloat<T>() ? qs : f32x4.mul(qs, f32x4.splat(load<f32>(ptr(p, P.KSCALE) + (<usize>kt << 2))));
      if (step && one) mul = laneOf(mul, r);
      const valid = min(bk, nk - key0);

      for (let rg = 0; rg < rows; rg += ROWS) {
        // S's vectors: one per key, its lanes the 4 rows; or for one row, 4 keys each, so that the
        // softmax exponentiates each key once rather than in four identical lanes.
        const vectors = one ? bk >> 2 : bk;
        let mb = NEG_INF;
        for (let g = 0; g < bk; g += 8) {
          const kg = kp + <usize>g * keyBytes;
          // A decode step's tile (one row group) finds its blocks in memory, not in cache: loading
          // a line of each V row as QK passes its key overlaps those misses with QK's arithmetic,
          // where PV's own loads would wait for them.
          if (step) touched ^= touch(vp + <usize>g * vRowBytes, 8 * vRowBytes);
          mb = f32x4.pmax(mb, one ? qk_1x8<T>(step ? q + (<usize>r << 2) : q, kg, steps, mul, s + (<usize>g << 2))
            : qk_4x8<T, B>(q + <usize>rg * qBytes, kg, steps, mul, s + (<usize>g << 4)));
        }
        // Keys past the end, or after a row's diagonal, score -Infinity; the maxima are taken again.
        const seen = causal ? min(valid, row0 + rg + (step ? r : 0) + shift + 1 - key0) : valid;
        if (seen < bk || (!(step && one) && !i32x4.all_true(kept))) {
          const visible = v128.and(kept, i32x4.min_s(i32x4.splat(valid), i32x4.add(i32x4.splat(seen), LANES)));
          mb = NEG_INF;
          for (let k = 0; k < vectors; k++) {
            const at = s + (<usize>k << 4);
            const show = one ? i32x4.lt_s(i32x4.add(i32x4.splat(k << 2), LANES), i32x4.splat(seen)) : i32x4.lt_s(i32x4.splat(k), visible);
            const v = v128.bitselect(load<v128>(at), NEG_INF, show);
            store<v128>(at, v);
            mb = f32x4.pmax(mb, v);
          }
          if (one) mb = f32x4.splat(hmax(mb));
        }
        // One row's state is its lane of the row group's, in every lane.
        let mo = load<v128>(mrow + (<usize>rg << 2));
        if (step && one) mo = laneOf(mo, r);
        const mn = f32x4.pmax(mo, mb);
        if (sparse) {
          // Skip unless some real row's block maximum comes within lambda of its running maximum.
          // NaN (a row with nothing visible yet) compares false: such a row never blocks a skip.
          const near = f32x4.gt(f32x4.add(f32x4.sub(mb, mn), step && one ? laneOf(lambda, r) : lambda), f32x4.splat(0));
          const real = i32x4.lt_s(i32x4.add(i32x4.splat(rg), LANES), i32x4.splat(rows));
          if (!v128.any_true(v128.and(near, real))) continue;
        }
        // A row with nothing visible yet keeps maximum -Infinity; it exponentiates against 0.
        const base = baseOf(mn);
        const alpha = exp2v(f32x4.sub(mo, base));
        const ebase = f32x4.add(base, vshift);
        let sum = f32x4.splat(0);
        for (let k = 0; k < vectors; k++) {
          const at = s + (<usize>k << 4);
          const e = exp2v(f32x4.sub(load<v128>(at), ebase));
          store<v128>(at, e);
          sum = f32x4.add(sum, e);
        }
        const lp = lrow + (<usize>rg << 2);
        if (step && one) {
          const at = <usize>r << 2;
          store<f32>(lp + at, load<f32>(lp + at) * f32x4.extract_lane(alpha, 0) + hsum(sum));
          store<f32>(mrow + (<usize>rg << 2) + at, f32x4.extract_lane(mn, 0));
          pv_1x32<V>(chunk + <usize>r * rowBytes, s, vp, vRowBytes, valid, dp, alpha);
        } else {
          // A one-row tile's state here is its row's value in every lane.
          if (one) sum = f32x4.splat(hsum(sum));
          store<v128>(lp, f32x4.add(f32x4.mul(load<v128>(lp), alpha), sum));
          store<v128>(mrow + (<usize>rg << 2), mn);
          if (one) pv_1x32<V>(chunk, s, vp, vRowBytes, valid, dp, alpha);
          else pv_4x8<B, V>(chunk + <usize>rg * rowBytes, rowBytes, s, vp, vRowBytes, valid, dp, alpha);
        }
      }
    }
    fold(out, chunk, mrow, lrow, mtot, ltot, rows, dp);
    store<i32>(s, touched); // kept, so that no optimizer drops the touching loads

    if (splits > 1) {
      // A partial result: O and l relative to 2^(m + vshift), merged by merge_splits.
      const rec = out + <usize>bq * rowBytes;
      memory.copy(rec, mtot, <usize>rows << 2);
      memory.copy(rec + (<usize>bq << 2), ltot, <usize>rows << 2);
      continue;
    }
    for (let rg = 0; rg < rows; rg += ROWS) {
      const l = load<v128>(ltot + (<usize>rg << 2));
      const inv = v128.bitselect(f32x4.div(f32x4.splat(1), l), f32x4.splat(0), f32x4.gt(l, f32x4.splat(0)));
      scaleRow(out + <usize>rg * rowBytes, dp, v128.shuffle<f32>(inv, inv, 0, 0, 0, 0));
      scaleRow(out + <usize>(rg + 1) * rowBytes, dp, v128.shuffle<f32>(inv, inv, 1, 1, 1, 1));
      scaleRow(out + <usize>(rg + 2) * rowBytes, dp, v128.shuffle<f32>(inv, inv, 2, 2, 2, 2));
      scaleRow(out + <usize>(rg + 3) * rowBytes, dp, v128.shuffle<f32>(inv, inv, 3, 3, 3, 3));
    }
    storeLse(p, qt, rows, mtot, ltot, paramf(p, P.VSHIFT));
  }
}

/** One load per 64-byte line of [at, at + bytes), XORed. */
@inline function touch(at: usize, bytes: usize): i32 {
  let x = 0;
  for (let b: usize = 0; b < bytes; b += 64) x ^= load<i32>(at + b);
  return x;
}

/** Lane r of v in every lane. */
@inline function laneOf(v: v128, r: i32): v128 {
  return i8x16.swizzle(v, i8x16.add(i8x16.splat(<i8>(r << 2)), i8x16(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3)));
}

/** Query head `head`'s setting `field` and the next heads' in lanes [0, n), Infinity beyond. */
@inline function lanesOf(p: usize, head: i32, n: i32, field: Head): v128 {
  let v = f32x4.splat(Infinity);
  v = f32x4.replace_lane(v, 0, headParamf(p, head, field));
  if (n > 1) v = f32x4.replace_lane(v, 1, headParamf(p, head + 1, field));
  if (n > 2) v = f32x4.replace_lane(v, 2, headParamf(p, head + 2, field));
  if (n > 3) v = f32x4.replace_lane(v, 3, headParamf(p, head + 3, field));
  return v;
}

/** QSCALE of query tiles bh .. bh + n - 1 (one-row heads of a group) in lanes [0, n), 0 beyond. */
@inline function scalesOf(p: usize, bh: i32, n: i32): v128 {
  const at = ptr(p, P.QSCALE) + (<usize>bh << 2);
  let v = f32x4.splat(0);
  v = f32x4.replace_lane(v, 0, load<f32>(at));
  if (n > 1) v = f32x4.replace_lane(v, 1, load<f32>(at, 4));
  if (n > 2) v = f32x4.replace_lane(v, 2, load<f32>(at, 8));
  if (n > 3) v = f32x4.replace_lane(v, 3, load<f32>(at, 12));
  return v;
}

/** All lanes set where row r < n keeps key block j (mask rows nkb apart), and beyond n. */
@inline function keptLanes(maskRow: usize, nkb: i32, j: i32, n: i32): v128 {
  const at = maskRow + j;
  let v = i32x4.splat(1);
  v = i32x4.replace_lane(v, 0, load<u8>(at));
  if (n > 1) v = i32x4.replace_lane(v, 1, load<u8>(at + nkb));
  if (n > 2) v = i32x4.replace_lane(v, 2, load<u8>(at + 2 * nkb));
  if (n > 3) v = i32x4.replace_lane(v, 3, load<u8>(at + 3 * nkb));
  return i32x4.ne(v, i32x4.splat(0));
}

/** Split t's record in PART: bq rows of O, then the rows' maxima m and sums l. */
@inline function partOf(p: usize, t: i32): usize {
  const bq = param(p, P.BQ), dp = param(p, P.DP);
  return ptr(p, P.PART) + <usize>t * bq * (dp + 2) * 4;
}

/** Bytes of PART for `tiles` query tiles: one record per split (see partOf). */
export function part_bytes(tiles: i32, splits: i32, bq: i32, dp: i32): f64 {
  return <f64>tiles * splits * bq * (dp + 2) * 4;
}

/**
 * ln sum_j exp(scale q.k_j) of each row, where the caller asked for it (P.LSE): the sums are
 * relative to 2^(m + vshift), in the log2 domain of the scores. A row that sees no key gets -Infinity.
 */
@inline function storeLse(p: usize, qt: i32, rows: i32, m: usize, l: usize, vshift: f32): void {
  const at = ptr(p, P.LSE);
  if (at == 0) return;
  const dst = at + (<usize>qt * param(p, P.BQ) << 2);
  for (let r = 0; r < rows; r++) {
    const sum = <f64>load<f32>(l + (<usize>r << 2));
    const lse = sum > 0 ? (<f64>load<f32>(m + (<usize>r << 2)) + <f64>vshift + Math.log2(sum)) * Math.LN2 : -Infinity;
    store<f32>(dst + (<usize>r << 2), <f32>lse);
  }
}

/**
 * Split-KV's merge: each query tile's SPLITS partial results, rescaled to their common maximum
 * and added in split order (so the result does not depend on which thread ran which split), then
 * normalized: tile = (b * H + h) * NQB + i.
 */
export function merge_splits(p: usize, t0: i32, t1: i32, worker: i32): void {
  const dp = param(p, P.DP), bq = param(p, P.BQ), nq = param(p, P.NQ), nqb = param(p, P.NQB);
  const splits = param(p, P.SPLITS);
  const rowBytes = <usize>dp << 2;
  // Per row: the common maximum, then the total sum.
  const s = ptr(p, P.SCRATCH) + <usize>worker * param(p, P.SCRATCH_STRIDE);
  const mrow = s, lrow = s + (<usize>bq << 2);
  const group = param(p, P.GROUP);
  for (let t = t0; t < t1; t++) {
    const rows = group > 1 ? group : min(bq, nq - (t % nqb) * bq);
    const out = ptr(p, P.OUT) + <usize>t * bq * rowBytes;
    const first = <i32>t * splits;
    for (let r = 0; r < rows; r++) {
      let m: f32 = -Infinity;
      for (let k = 0; k < splits; k++) m = max(m, load<f32>(partOf(p, first + k) + <usize>bq * rowBytes + (<usize>r << 2)));
      const o = out + <usize>r * rowBytes;
      zeroRow(o, dp);
      let l: f32 = 0;
      for (let k = 0; k < splits; k++) {
        const rec = partOf(p, first + k), stats = rec + <usize>bq * rowBytes + (<usize>r << 2);
        // 0 for a split that saw no key of this row (its maximum is -Infinity), and for every split when none did.
        const f = m == -Infinity ? <f32>0 : exp2s(load<f32>(stats) - m);
        l += f * load<f32>(stats + (<usize>bq << 2));
        const fv = f32x4.splat(f), src = rec + <usize>r * rowBytes;
        for (let d: usize = 0; d < rowBytes; d += 16) store<v128>(o + d, madd(load<v128>(src + d), fv, load<v128>(o + d)));
      }
      store<f32>(mrow + (<usize>r << 2), m);
      store<f32>(lrow + (<usize>r << 2), l);
      scaleRow(o, dp, f32x4.splat(l > 0 ? <f32>1 / l : 0));
    }
    storeLse(p, t, rows, mrow, lrow, paramf(p, P.VSHIFT));
  }
}

/**
 * Adds the chunk's O and l into the totals, rescaled from the totals' maximum to the running one,
 * and empties the chunk.
 */
@inline function fold(out: usize, chunk: usize, mrow: usize, lrow: usize, mtot: usize, ltot: usize, rows: i32, dp: i32): void {
  const rowBytes = <usize>dp << 2;
  for (let rg = 0; rg < rows; rg += ROWS) {
    const at = <usize>rg << 2;
    const m = load<v128>(mrow + at);
    const f = exp2v(f32x4.sub(load<v128>(mtot + at), baseOf(m)));
    store<v128>(ltot + at, f32x4.add(f32x4.mul(load<v128>(ltot + at), f), load<v128>(lrow + at)));
    store<v128>(lrow + at, f32x4.splat(0));
    store<v128>(mtot + at, m);
    const o = out + <usize>rg * rowBytes, c = chunk + <usize>rg * rowBytes;
    foldRow(o, c, rowBytes, v128.shuffle<f32>(f, f, 0, 0, 0, 0));
    foldRow(o + rowBytes, c + rowBytes, rowBytes, v128.shuffle<f32>(f, f, 1, 1, 1, 1));
    foldRow(o + 2 * rowBytes, c + 2 * rowBytes, rowBytes, v128.shuffle<f32>(f, f, 2, 2, 2, 2));
    foldRow(o + 3 * rowBytes, c + 3 * rowBytes, rowBytes, v128.shuffle<f32>(f, f, 3, 3, 3, 3));
  }
}

@inline function foldRow(o: usize, c: usize, rowBytes: usize, f: v128): void {
  for (let d: usize = 0; d < rowBytes; d += 16) {
    store<v128>(o + d, madd(load<v128>(o + d), f, load<v128>(c + d)));
    store<v128>(c + d, f32x4.splat(0));
  }
}

// The exact output is a weighted mean of V's rows, so it lies within float32's range; the clamp
// keeps the last rounding of a mean of values near float32's maximum from reaching Infinity.
@inline function scaleRow(o: usize, dp: i32, by: v128): void {
  for (let d = 0; d < dp; d += 4) {
    const x = f32x4.mul(load<v128>(o + (<usize>d << 2)), by);
    store<v128>(o + (<usize>d << 2), f32x4.pmax(f32x4.pmin(x, F32_MAX), f32x4.neg(F32_MAX)));
  }
}

/** Whether tile t's query head computes QK in FP32 (its record in HEADS; grouped steps have none). */
@inline function fp32Head(p: usize, t: i32): bool {
  if (param(p, P.GROUP) > 1) return false;
  return headParam(p, (t / (param(p, P.NQB) * param(p, P.SPLITS))) % param(p, P.H), Head.FP32) != 0;
}

/**
 * Stage 2 over the block mask with INT8 QK (P.QK_MODE picks the dot, P.SPLAT the broadcast):
 * tile = ((b * H + h) * NQB + i) * SPLITS + split. Tiles of FP32-QK heads are left to attend_sparse_f32: a separate
 * entry, since one function holding all six instances of the driver ran 16-29% slower.
 */
export function attend_sparse(p: usize, t0: i32, t1: i32, worker: i32): void {
  const shuf = param(p, P.SPLAT) != 0, relaxed = param(p, P.QK_MODE) != 0;
  for (let t = t0; t < t1; t++) {
    if (fp32Head(p, t)) continue;
    if (relaxed) {
      if (shuf) attend<i8, SplatByShuffle, Masked, Block, ValuesF32>(p, t, t + 1, worker);
      else attend<i8, SplatByLoad, Masked, Block, ValuesF32>(p, t, t + 1, worker);
    } else if (shuf) attend<i16, SplatByShuffle, Masked, Block, ValuesF32>(p, t, t + 1, worker);
    else attend<i16, SplatByLoad, Masked, Block, ValuesF32>(p, t, t + 1, worker);
  }
}

// attend_sparse for tiles of at most 4 rows (NQ <= 4, or grouped one-row steps): one entry per
// INT8 dot and broadcast, which TypeScript picks from the engine's features (src/engine.ts,
// SPARSE_STEP). With all eight instances in one function (two dots, two broadcasts, FP32 or
// bfloat16 V) decode steps took 13-24% longer (bench/decode-loop.js), though whole-sequence calls
// gain nothing from splitting attend_sparse's four.

/** The step entry for the i16 dot, broadcasts by load32_splat. */
export function attend_sparse_step_i16_load(p: usize, t0: i32, t1: i32, worker: i32): void {
  stepTiles<i16, SplatByLoad>(p, t0, t1, worker);
}

/** The step entry for the i16 dot, broadcasts by shuffles. */
export function attend_sparse_step_i16_shuffle(p: usize, t0: i32, t1: i32, worker: i32): void {
  stepTiles<i16, SplatByShuffle>(p, t0, t1, worker);
}

/** The step entry for the relaxed i8 dot (empty in the baseline module, which never runs it). */
export function attend_sparse_step_i8_load(p: usize, t0: i32, t1: i32, worker: i32): void {
  if (ASC_FEATURE_RELAXED_SIMD) stepTiles<i8, SplatByLoad>(p, t0, t1, worker);
}

/** The step entry for the relaxed i8 dot, broadcasts by shuffles. */
export function attend_sparse_step_i8_shuffle(p: usize, t0: i32, t1: i32, worker: i32): void {
  if (ASC_FEATURE_RELAXED_SIMD) stepTiles<i8, SplatByShuffle>(p, t0, t1, worker);
}

// A KV cache's steps read its bfloat16 copy of V where it keeps one: they are bound by reading.
@inline function stepTiles<T, B>(p: usize, t0: i32, t1: i32, worker: i32): void {
  const bf16 = ptr(p, P.VH) != 0;
  for (let t = t0; t < t1; t++) {
    if (fp32Head(p, t)) continue;
    if (bf16) attend<T, B, Masked, Step, ValuesBf16>(p, t, t + 1, worker);
    else attend<T, B, Masked, Step, ValuesF32>(p, t, t + 1, worker);
  }
}

/** Stage 2 over the block mask for the heads whose QK runs in FP32: the other tiles of attend_sparse. */
export function attend_sparse_f32(p: usize, t0: i32, t1: i32, worker: i32): void {
  const shuf = param(p, P.SPLAT) != 0;
  for (let t = t0; t < t1; t++) {
    if (!fp32Head(p, t)) continue;
    if (shuf) attend<f32, SplatByShuffle, Masked, Block, ValuesF32>(p, t, t + 1, worker);
    else attend<f32, SplatByLoad, Masked, Block, ValuesF32>(p, t, t + 1, worker);
  }
}

/**
 * How this engine's i8 x i7 dot reads a second operand of b (TypeScript passes 200, so that no
 * optimizer folds the answer at build time): 200 where it is taken as unsigned (x86's pmaddubsw),
 * -56 where signed (Arm's sdot); 0 in the baseline module.
 */
export function relaxed_dot_probe(b: i32): i32 {
  if (!ASC_FEATURE_RELAXED_SIMD) return 0;
  return i16x8.extract_lane_s(i16x8.relaxed_dot_i8x16_i7x16_s(i8x16.splat(1), i8x16.splat(<i8>b)), 0) >> 1;
}

/** Dense FP32 flash attention (no mask, no skipping): tile = ((b * H + h) * NQB + i) * SPLITS + split. */
export function attend_dense(p: usize, t0: i32, t1: i32, worker: i32): void {
  if (param(p, P.SPLAT)) attend<f32, SplatByShuffle, Full, Block, ValuesF32>(p, t0, t1, worker);
  else attend<f32, SplatByLoad, Full, Block, ValuesF32>(p, t0, t1, worker);
}

/** attend_dense for tiles of at most 4 rows. */
export function attend_dense_step(p: usize, t0: i32, t1: i32, worker: i32): void {
  if (param(p, P.SPLAT)) attend<f32, SplatByShuffle, Full, Step, ValuesF32>(p, t0, t1, worker);
  else attend<f32, SplatByLoad, Full, Step, ValuesF32>(p, t0, t1, worker);
}
