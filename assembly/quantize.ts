// Stage 0: K smoothing and per-block symmetric INT8 quantization of Q and K (SageAttention style),
// plus the FP32 packing of Q and K used by the dense path. Codes are laid out for the QK
// microkernels (microkernels.ts): Q in groups of 4 rows interleaved by step, K in groups of 8 keys
// interleaved along D, so that one broadcast of a Q channel (FP32), pair (i16 path) or quad
// (relaxed dot) meets four keys in one vector instruction. K takes one byte per code on both
// INT8 paths.
import { P } from './params';
import { param, paramf, ptr, hmax, truncInRange, transpose4, qRowsRead } from './simd';
import { isRelaxedDot, qRowBytes } from './microkernels';

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
  const dp = param(p, P.DP), bq = param(p, P.BQ), nqb = param(p, P.NQB);
  // A row of zeros that TypeScript keeps after the K means: Q is quantized without smoothing.
  const zero = ptr(p, P.KMEAN) + (<usize>param(p, P.B) * param(p, P.HKV) * dp << 2);
  // Grouped one-row steps (P.GROUP): head t's row goes to row t % G of its group's block.
  const group = param(p, P.GROUP);
  for (let t = t0; t < t1; t++) {
    const src = ptr(p, P.Q) + (<usize>t * bq * dp << 2);
    const row0 = group > 1 ? <usize>(t / group) * bq + t % group : <usize>t * bq;
    const rows = qRowsRead(p, t % nqb);
    const amax = absMax(src, zero, rows, dp);
    store<f32>(ptr(p, P.QSCALE) + (<usize>t << 2), amax / 127 * paramf(p, P.QK_MUL));
    const inv = f32x4.splat(blockScale(amax));
    for (let r = 0; r < (group > 1 ? 1 : rows); r++) {
      const x = src + (<usize>r * dp << 2);
      const row = row0 + r;
      // The row's 4 bytes of each step go to lane (row & 3) of the group's step vector.
      const group = ptr(p, P.QC) + (row & ~3) * qRowBytes<T>(dp) + ((row & 3) << 2);
      for (let d = 0; d < dp; d += 8) {
        const c = codes8(x + (<usize>d << 2), zero, inv);
        if (isRelaxedDot<T>()) {
          // Bytes: q+ of quads d and d+4, then q- of the same quads; a step holds a quad's q+
          // vector, then its q- vector.
          const b = i8x16.narrow_i16x8_u(i16x8.max_s(c, i16x8.splat(0)), i16x8.max_s(i16x8.neg(c), i16x8.splat(0)));
          storeLanes(group + (<usize>d << 3), b, 32, 16, 48);
        } else {
          storeLanes(group + (<usize>d << 3), c, 16, 32, 48);
        }
      }
    }
  }
}

/**
 * Q codes of one query block: tile = (b * H + h) * NQB + i. Writes QC rows and QSCALE (dq * scale
 * * log2 e). i16 path: i16 codes, vector = 4 rows x one D pair. Relaxed dot: the i8 x i7 dot's
 * second operand must lie in [0, 127] for engines to agree, so each code q goes in as
 * q+ = max(q, 0) and q- = max(-q, 0), and k.q = k.q+ - k.q-; a step is a quad, q+ vector then q-.
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
      ptr(p, P.KC) + row0 * dp, ptr(p, P.KSCALE) + (<usize>t << 2));
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
    // Key r's codes of each step: the relaxed dot's quad goes to lane (r & 3) of the step's first
    // or second vector; the i16 path's pair to 16-bit lane (r & 7) of the step's one vector.
    const group = kc + <usize>(r & ~7) * dp
      + (isRelaxedDot<T>() ? <usize>((r >> 2) & 1) * 16 + ((r & 3) << 2) : <usize>(r & 7) << 1);
    for (let d = 0; d < dp; d += 8) {
      const c = r < rows ? codes8(x + (<usize>d << 2), mean + (<usize>d << 2), inv) : i16x8.splat(0);
      const b = i8x16.narrow_i16x8_s(c, c), g = group + (<usize>d << 3);
      if (isRelaxedDot<T>()) {
        v128.store32_lane(g, b, 0);
        v128.store32_lane(g, b, 1, 32);
      } else {
        v128.store16_lane(g, b, 0);
        v128.store16_lane(g, b, 1, 16);
        v128.store16_lane(g, b, 2, 32);
        v128.store16_lane(g, b, 3, 48);
      }
    }
  }
}

/**
 * K codes of one key block of the smoothed K' = K - mean: tile = (b * HKV + hk) * NKB + j.
 * i16 path: vector = 8 keys x one D pair, widened to i16 by the kernel.
 * Relaxed dot: vector = 4 keys x one D quad, the dot's signed operand.
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
  const dp = param(p, P.DP), bq = param(p, P.BQ), nqb = param(p, P.NQB);
  const stride = <usize>dp << 2;
  for (let t = t0; t < t1; t++) {
    for (let r = 0; r < qRowsRead(p, t % nqb); r += 4) {
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
