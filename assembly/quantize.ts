// Stage 0: K smoothing and per-block symmetric INT8 quantization of Q and K (SageAttention style),
// plus the FP32 packing of Q and K used by the dense path. Codes are laid out for the QK
// microkernels (microkernels.ts): Q in groups of 4 rows interleaved by step, K in groups of 8 keys
// interleaved along D, so that one broadcast of a Q channel (FP32), pair (i16 path) or quad
// (relaxed dot) meets four keys in one vector instruction.
import { P } from './params';
import { param, paramf, ptr, hmax, truncInRange, transpose4 } from './simd';
import { isRelaxedDot, kStepBytes, qRowBytes } from './microkernels';

const SIGN = i32x4.splat(0x80000000);
/** transpose4's multiplier when it only moves data. */
const ONE = f32x4.splat(1);

/** Per-channel mean of K over the valid tokens of one (batch, kv head): tile = b * HKV + hk. */
export function k_mean(p: usize, t0: i32, t1: i32): void {
  const dp = param(p, P.DP), nk = param(p, P.NK), nkp = param(p, P.NKB) * param(p, P.BK);
  for (let t = t0; t < t1; t++) {
    meanOf(ptr(p, P.K) + (<usize>t * nkp * dp << 2), nk, dp, ptr(p, P.KMEAN) + (<usize>t * dp << 2));
  }
}

/** dst = the mean of n rows of dp floats at src. */
@inline export function meanOf(src: usize, n: i32, dp: i32, dst: usize): void {
  const inv = f32x4.splat(<f32>1 / <f32>n);
  for (let d = 0; d < dp; d += 4) {
    const o = <usize>d << 2;
    let s = f32x4.splat(0);
    for (let r = 0; r < n; r++) s = f32x4.add(s, load<v128>(src + (<usize>r * dp << 2) + o));
    store<v128>(dst + o, f32x4.mul(s, inv));
  }
}

@inline function absMax(src: usize, mean: usize, rows: i32, dp: i32): f32 {
  let m = f32x4.splat(0);
  for (let r = 0; r < rows; r++) {
    const row = src + (<usize>r * dp << 2);
    for (let d = 0; d < dp; d += 4) {
      const o = <usize>d << 2;
      m = f32x4.pmax(m, f32x4.abs(f32x4.sub(load<v128>(row + o), load<v128>(mean + o))));
    }
  }
  return hmax(m);
}

// Eight codes round((x - mean) * inv) with ties away from zero, as the reference rounds, in i16 lanes.
@inline function codes8(x: usize, mean: usize, inv: v128): v128 {
  const a = f32x4.mul(f32x4.sub(load<v128>(x), load<v128>(mean)), inv);
  const b = f32x4.mul(f32x4.sub(load<v128>(x, 16), load<v128>(mean, 16)), inv);
  const ha = v128.or(f32x4.splat(0.5), v128.and(a, SIGN));
  const hb = v128.or(f32x4.splat(0.5), v128.and(b, SIGN));
  return i16x8.narrow_i32x4_s(
    truncInRange(f32x4.add(a, ha)),
    truncInRange(f32x4.add(b, hb)),
  );
}

// The four 4-byte lanes of c to g and g + a1, a2, a3: the steps (or halves of steps) that one
// vector of codes spreads over in the kernels' layouts.
@inline function storeLanes(g: usize, c: v128, a1: usize, a2: usize, a3: usize): void {
  v128.store32_lane(g, c, 0);
  v128.store32_lane(g + a1, c, 1);
  v128.store32_lane(g + a2, c, 2);
  v128.store32_lane(g + a3, c, 3);
}

@inline function blockScale(amax: f32): f32 {
  return amax > 0 ? <f32>127 / amax : 0;
}

// The codes' layout follows the QK path of the call (P.QK_MODE, see microkernels.ts): T = i16 for
// i32x4.dot_i16x8_s, T = i8 for the relaxed i8 x i7 dot. The choice is made once per tile range.

@inline function quantizeQ<T>(p: usize, t0: i32, t1: i32): void {
  const dp = param(p, P.DP), bq = param(p, P.BQ);
  // A row of zeros that TypeScript keeps after the K means: Q is quantized without smoothing.
  const zero = ptr(p, P.KMEAN) + (<usize>param(p, P.B) * param(p, P.HKV) * dp << 2);
  // Grouped one-row steps (P.GROUP): head t's row goes to row t % G of its group's block.
  const group = param(p, P.GROUP);
  for (let t = t0; t < t1; t++) {
    const src = ptr(p, P.Q) + (<usize>t * bq * dp << 2);
    const row0 = group > 1 ? <usize>(t / group) * bq + t % group : <usize>t * bq;
    const amax = absMax(src, zero, bq, dp);
    store<f32>(ptr(p, P.QSCALE) + (<usize>t << 2), amax / 127 * paramf(p, P.QK_MUL));
    const inv = f32x4.splat(blockScale(amax));
    for (let r = 0; r < (group > 1 ? 1 : bq); r++) {
      const x = src + (<usize>r * dp << 2);
      const row = row0 + r;
      // The row's 4 bytes of each step go to lane (row & 3) of the group's step vector.
      const group = ptr(p, P.QC) + (row & ~3) * qRowBytes<T>(dp) + ((row & 3) << 2);
      let sum = i16x8.splat(0);
      for (let d = 0; d < dp; d += 8) {
        const c = codes8(x + (<usize>d << 2), zero, inv);
        if (isRelaxedDot<T>()) {
          const g = group + (<usize>d << 2), b = i8x16.narrow_i16x8_s(c, c);
          v128.store32_lane(g, b, 0);
          v128.store32_lane(g, b, 1, 16);
          sum = i16x8.add(sum, c);
        } else {
          storeLanes(group + (<usize>d << 3), c, 16, 32, 48);
        }
      }
      if (isRelaxedDot<T>()) {
        const s32 = i32x4.extadd_pairwise_i16x8_s(sum);
        const s = i32x4.add(s32, v128.shuffle<i32>(s32, s32, 2, 3, 0, 1));
        store<i32>(ptr(p, P.QSUM) + (row << 2), 127 * (i32x4.extract_lane(s, 0) + i32x4.extract_lane(s, 1)));
      }
    }
  }
}

/**
 * Q codes of one query block: tile = (b * H + h) * NQB + i. Writes QC rows (i16, or i8 for the
 * relaxed dot), QSCALE (dq * scale * log2 e) and, for the relaxed dot only, QSUM = 127 * sum(q8)
 * per row: the correction for the +127 shift of K codes (see quantize_k).
 */
export function quantize_q(p: usize, t0: i32, t1: i32): void {
  if (param(p, P.QK_MODE)) quantizeQ<i8>(p, t0, t1);
  else quantizeQ<i16>(p, t0, t1);
}

@inline function quantizeK<T>(p: usize, t0: i32, t1: i32): void {
  const dp = param(p, P.DP), bk = param(p, P.BK), nkb = param(p, P.NKB), nk = param(p, P.NK);
  for (let t = t0; t < t1; t++) {
    const bhk = t / nkb, j = t - bhk * nkb;
    const row0 = <usize>t * bk;
    quantizeKeyBlock<T>(ptr(p, P.K) + (row0 * dp << 2), ptr(p, P.KMEAN) + (<usize>bhk * dp << 2), min(bk, nk - j * bk), bk, dp,
      ptr(p, P.KC) + (row0 * dp << 1), ptr(p, P.KSCALE) + (<usize>t << 2));
  }
}

/**
 * INT8 codes of one key block (rows of dp floats at src, `rows` of its bk keys valid, the rest
 * coded 0) into its bk * dp codes at kc, and its dequantization scale into *kscale.
 */
@inline export function quantizeKeyBlock<T>(src: usize, mean: usize, rows: i32, bk: i32, dp: i32, kc: usize, kscale: usize): void {
  const amax = absMax(src, mean, rows, dp);
  store<f32>(kscale, amax / 127);
  const inv = f32x4.splat(blockScale(amax));
  for (let r = 0; r < bk; r++) {
    const x = src + (<usize>r * dp << 2);
    // Key r's 4 bytes of each step go to lane (r & 3) of the first or second vector of its
    // 8-key group's step (blocks are multiples of 16 keys, so groups never straddle them).
    const group = kc + (<usize>(r & ~7) * dp << 1) + <usize>((r >> 2) & 1) * kStepBytes<T>() + ((r & 3) << 2);
    for (let d = 0; d < dp; d += 8) {
      let c = r < rows ? codes8(x + (<usize>d << 2), mean + (<usize>d << 2), inv) : i16x8.splat(0);
      if (isRelaxedDot<T>()) {
        const u = i16x8.add(c, i16x8.splat(127));
        const ua = i16x8.shr_u(u, 1);
        // Bytes: ua of quads d and d+4, then ub of the same quads; stored as ua, ub of quad d in
        // one step, ua, ub of quad d+4 in the next.
        c = v128.shuffle<i32>(i8x16.narrow_i16x8_u(ua, i16x8.sub(u, ua)), c, 0, 2, 1, 3);
        storeLanes(group + (<usize>d << 4), c, 16, 64, 80);
      } else {
        storeLanes(group + (<usize>d << 4), c, 32, 64, 96);
      }
    }
  }
}

/**
 * K codes of one key block of the smoothed K' = K - mean: tile = (b * HKV + hk) * NKB + j.
 * i16 path: i16 codes, vector = 4 keys x one D pair (for i32x4.dot_i16x8_s).
 * Relaxed dot: u = k8 + 127 in [0, 254] is split into ua = u >> 1 and ub = u - ua, both in [0, 127],
 * so that the i8 x i7 dot sees a second operand inside its portable range on every engine;
 * vector = 4 keys x one D quad, ua then ub. The +127 is undone with QSUM.
 */
export function quantize_k(p: usize, t0: i32, t1: i32): void {
  if (param(p, P.QK_MODE)) quantizeK<i8>(p, t0, t1);
  else quantizeK<i16>(p, t0, t1);
}

// Rows [0, 4) of src (row stride `stride` bytes) transposed into dst: per channel one vector of the
// 4 rows, `step` bytes apart.
@inline function interleave4(src: usize, stride: usize, dst: usize, step: usize, dp: i32): void {
  for (let d = 0; d < dp; d += 4) {
    const o = <usize>d << 2;
    transpose4(dst + <usize>d * step, step, load<v128>(src + o), load<v128>(src + stride + o),
      load<v128>(src + 2 * stride + o), load<v128>(src + 3 * stride + o), ONE);
  }
}

/** FP32 Q for the dense path in interleaved groups of 4 rows: tile = (b * H + h) * NQB + i. */
export function pack_q_f32(p: usize, t0: i32, t1: i32): void {
  const dp = param(p, P.DP), bq = param(p, P.BQ);
  const stride = <usize>dp << 2;
  for (let t = t0; t < t1; t++) {
    for (let r = 0; r < bq; r += 4) {
      const off = (<usize>t * bq + r) * stride;
      interleave4(ptr(p, P.Q) + off, stride, ptr(p, P.QF) + off, 16, dp);
    }
  }
}

/** FP32 K for the dense path in groups of 8 keys, each step two vectors of 4: tile = (b * HKV + hk) * NKB + j. */
export function pack_k_f32(p: usize, t0: i32, t1: i32): void {
  const dp = param(p, P.DP), bk = param(p, P.BK);
  const stride = <usize>dp << 2;
  for (let t = t0; t < t1; t++) {
    const at = <usize>t * bk * stride;
    packKeys(ptr(p, P.K) + at, ptr(p, P.KF) + at, bk, dp);
  }
}

// Where keys g..g+3 of a block sit in the packed FP32 layout: their 8-key group, first or second half.
@inline function packedGroup(block: usize, g: i32, stride: usize): usize {
  return block + <usize>(g & ~7) * stride + ((g & 4) << 2);
}

/** Rows [0, bk) of a block (dp floats each) into the packed FP32 key layout. */
@inline export function packKeys(src: usize, dst: usize, bk: i32, dp: i32): void {
  const stride = <usize>dp << 2;
  for (let g = 0; g < bk; g += 4) interleave4(src + <usize>g * stride, stride, packedGroup(dst, g, stride), 32, dp);
}

/** The inverse of packKeys for keys [0, rows) rounded up to a multiple of 4. */
@inline export function unpackKeys(src: usize, dst: usize, rows: i32, dp: i32): void {
  const stride = <usize>dp << 2;
  for (let g = 0; g < rows; g += 4) {
    const from = packedGroup(src, g, stride), to = dst + <usize>g * stride;
    for (let d = 0; d < dp; d += 4) {
      const c = from + <usize>d * 32;
      transpose4(to + (<usize>d << 2), stride, load<v128>(c), load<v128>(c, 32), load<v128>(c, 64), load<v128>(c, 96), ONE);
    }
  }
}
