// Register-blocked microkernels of Stage 2, in the XNNPACK manner: 4 query rows x 8 keys for QK^T,
// 4 rows x 8 channels for P.V. Q values are broadcast (load32_splat) and K is pre-packed in groups of 4
// keys (quantize.ts), so every lane of an accumulator is a finished score: no horizontal sums.
// QK has three element types, chosen at compile time:
//   f32 - dense FP32 attention: one channel per step;
//   i16 - INT8 codes widened to i16 pairs, i32x4.dot_i16x8_s;
//   i8  - INT8 codes as i8 quads, two relaxed i8 x i7 dots (relaxed module only; the split
//         +127-shifted K, see quantize_k).
import { madd } from './simd';

/** The relaxed i8 x i7 dot path (T = i8). */
@inline export function isRelaxedDot<T>(): bool {
  return isInteger<T>() && sizeof<T>() == 1;
}

/** Bytes of one packed K group (4 keys) per step of the QK loop. */
@inline export function kStepBytes<T>(): usize {
  return isRelaxedDot<T>() ? 32 : 16;
}

/** Steps of the QK loop for dp channels. */
@inline export function qkSteps<T>(dp: i32): i32 {
  if (isFloat<T>()) return dp;
  return isRelaxedDot<T>() ? dp >> 2 : dp >> 1;
}

/** Bytes of one Q row. */
@inline export function qRowBytes<T>(dp: i32): usize {
  return <usize>dp * sizeof<T>();
}

/** Bytes of one packed K group of 4 keys. */
@inline export function kGroupBytes<T>(dp: i32): usize {
  return isFloat<T>() ? <usize>dp << 4 : <usize>dp << 3;
}

@inline function kdot<T>(a: v128, b: v128, b2: v128, acc: v128): v128 {
  if (isFloat<T>()) return madd(a, b, acc);
  // (The relaxed dot only exists in the relaxed module; the engine never asks the baseline one for it.)
  if (isRelaxedDot<T>() && ASC_FEATURE_RELAXED_SIMD) {
    // The i16 form, widened by hand: Node 20's baseline compiler (Liftoff) doubles the result of
    // i32x4.relaxed_dot_i8x16_i7x16_add_s, while this form is right in every tier and lowers to the
    // same instructions (pmaddubsw, pmaddwd, paddd) in the optimizing one.
    const ones = i16x8.splat(1);
    const lo = i32x4.dot_i16x8_s(i16x8.relaxed_dot_i8x16_i7x16_s(a, b), ones);
    const hi = i32x4.dot_i16x8_s(i16x8.relaxed_dot_i8x16_i7x16_s(a, b2), ones);
    return i32x4.add(acc, i32x4.add(lo, hi));
  }
  return i32x4.add(acc, i32x4.dot_i16x8_s(a, b));
}

@inline function score<T>(acc: v128, corr: i32, mul: v128): v128 {
  if (isFloat<T>()) return f32x4.mul(acc, mul);
  return f32x4.mul(f32x4.convert_i32x4_s(i32x4.sub(acc, i32x4.splat(corr))), mul);
}

/**
 * S[4][8] = (Q[4 rows] . K[8 keys]) * mul, written at s (row stride sStride bytes).
 * corr points at the 4 rows' QSUM (relaxed i8 x i7 path only; ignored otherwise).
 */
@inline export function qk_4x8<T>(
  q: usize, qStride: usize, k: usize, steps: i32, gStride: usize,
  corr: usize, mul: v128, s: usize, sStride: usize,
): void {
  let a00 = i32x4.splat(0), a01 = a00, a10 = a00, a11 = a00;
  let a20 = a00, a21 = a00, a30 = a00, a31 = a00;
  const kstep = kStepBytes<T>();
  // Pointers stepped once per iteration: no per-load address arithmetic in the loop.
  let q0 = q, q1 = q + qStride, q2 = q + 2 * qStride, q3 = q + 3 * qStride;
  let k0p = k, k1p = k + gStride;
  const end = q + (<usize>steps << 2);
  while (q0 < end) {
    const b0 = load<v128>(k0p), b1 = load<v128>(k1p);
    let c0 = b0, c1 = b1;
    if (isRelaxedDot<T>()) { c0 = load<v128>(k0p, 16); c1 = load<v128>(k1p, 16); }
    const x0 = v128.load32_splat(q0);
    a00 = kdot<T>(x0, b0, c0, a00); a01 = kdot<T>(x0, b1, c1, a01);
    const x1 = v128.load32_splat(q1);
    a10 = kdot<T>(x1, b0, c0, a10); a11 = kdot<T>(x1, b1, c1, a11);
    const x2 = v128.load32_splat(q2);
    a20 = kdot<T>(x2, b0, c0, a20); a21 = kdot<T>(x2, b1, c1, a21);
    const x3 = v128.load32_splat(q3);
    a30 = kdot<T>(x3, b0, c0, a30); a31 = kdot<T>(x3, b1, c1, a31);
    q0 += 4; q1 += 4; q2 += 4; q3 += 4;
    k0p += kstep; k1p += kstep;
  }
  const relaxed = isRelaxedDot<T>();
  const k0 = relaxed ? load<i32>(corr) : 0, k1 = relaxed ? load<i32>(corr, 4) : 0;
  const k2 = relaxed ? load<i32>(corr, 8) : 0, k3 = relaxed ? load<i32>(corr, 12) : 0;
  store<v128>(s, score<T>(a00, k0, mul)); store<v128>(s, score<T>(a01, k0, mul), 16);
  store<v128>(s + sStride, score<T>(a10, k1, mul)); store<v128>(s + sStride, score<T>(a11, k1, mul), 16);
  store<v128>(s + 2 * sStride, score<T>(a20, k2, mul)); store<v128>(s + 2 * sStride, score<T>(a21, k2, mul), 16);
  store<v128>(s + 3 * sStride, score<T>(a30, k3, mul)); store<v128>(s + 3 * sStride, score<T>(a31, k3, mul), 16);
}

/**
 * O[4 rows][0..dp) = O * alpha[row] + P[4 rows][0..nk) . V[nk][0..dp), 8 channels at a time.
 * o: row stride oStride; p: row stride pStride; v: row stride vStride; alpha: 4 f32.
 */
@inline export function pv_4x8(
  o: usize, oStride: usize, p: usize, pStride: usize, v: usize, vStride: usize,
  nk: i32, dp: i32, alpha: usize,
): void {
  const al0 = v128.load32_splat(alpha), al1 = v128.load32_splat(alpha, 4);
  const al2 = v128.load32_splat(alpha, 8), al3 = v128.load32_splat(alpha, 12);
  for (let d = 0; d < dp; d += 8) {
    const od = o + (<usize>d << 2);
    let o00 = f32x4.mul(load<v128>(od), al0), o01 = f32x4.mul(load<v128>(od, 16), al0);
    let o10 = f32x4.mul(load<v128>(od + oStride), al1), o11 = f32x4.mul(load<v128>(od + oStride, 16), al1);
    let o20 = f32x4.mul(load<v128>(od + 2 * oStride), al2), o21 = f32x4.mul(load<v128>(od + 2 * oStride, 16), al2);
    let o30 = f32x4.mul(load<v128>(od + 3 * oStride), al3), o31 = f32x4.mul(load<v128>(od + 3 * oStride, 16), al3);
    let vp = v + (<usize>d << 2);
    let r0 = p, r1 = p + pStride, r2 = p + 2 * pStride, r3 = p + 3 * pStride;
    const end = p + (<usize>nk << 2);
    while (r0 < end) {
      const v0 = load<v128>(vp), v1 = load<v128>(vp, 16);
      const p0 = v128.load32_splat(r0);
      o00 = madd(p0, v0, o00); o01 = madd(p0, v1, o01);
      const p1 = v128.load32_splat(r1);
      o10 = madd(p1, v0, o10); o11 = madd(p1, v1, o11);
      const p2 = v128.load32_splat(r2);
      o20 = madd(p2, v0, o20); o21 = madd(p2, v1, o21);
      const p3 = v128.load32_splat(r3);
      o30 = madd(p3, v0, o30); o31 = madd(p3, v1, o31);
      vp += vStride;
      r0 += 4; r1 += 4; r2 += 4; r3 += 4;
    }
    store<v128>(od, o00); store<v128>(od, o01, 16);
    store<v128>(od + oStride, o10); store<v128>(od + oStride, o11, 16);
    store<v128>(od + 2 * oStride, o20); store<v128>(od + 2 * oStride, o21, 16);
    store<v128>(od + 3 * oStride, o30); store<v128>(od + 3 * oStride, o31, 16);
  }
}
