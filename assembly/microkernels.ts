// Register-blocked microkernels of Stage 2, in the XNNPACK manner: 4 query rows x 8 keys for QK^T,
// 4 rows x 8 channels for P.V. Every lane of an accumulator is a finished dot product: no
// horizontal sums. Layouts (quantize.ts writes them):
//   Q: rows in groups of 4, interleaved: per step one 16-byte vector of the 4 rows' next 4 bytes;
//   K: keys in groups of 8: per step two vectors of 4 keys (the relaxed dot: four, see below);
//   S and P: key-major, one vector per key holding the 4 rows, so that the softmax in between is
//            vertical (row maxima and sums come out as vectors).
// QK has three element types, chosen at compile time:
//   f32 - dense FP32 attention: a step is one channel;
//   i16 - INT8 codes widened to i16, i32x4.dot_i16x8_s: a step is a pair of channels;
//   i8  - INT8 codes, two relaxed i8 x i7 dots on the split +127-shifted K (see quantize_k): a quad.
// A Q (or P) lane is broadcast in one of two ways, chosen at run time (P.SPLAT):
//   load    - load32_splat from memory: fewest instructions where loads are cheap;
//   shuffle - one vector load and four lane shuffles: for engines that bounds-check every memory
//             access in software (Deno, which leaves V8's trap handler off), where a load also
//             costs a compare and branch.
import { madd, transpose4 } from './simd';

// The broadcast variant is a type parameter (B) rather than a flag, so that each compiled instance
// holds only its own loop: the optimizers did not fold a constant flag through the inlined driver.
/** B for broadcasts by load32_splat. */
export type SplatByLoad = i32;
/** B for broadcasts by a vector load and lane shuffles. */
export type SplatByShuffle = v128;

@inline function byShuffle<B>(): bool {
  return sizeof<B>() == 16;
}

/** The relaxed i8 x i7 dot path (T = i8). */
@inline export function isRelaxedDot<T>(): bool {
  return isInteger<T>() && sizeof<T>() == 1;
}

/** Bytes of one vector of 4 keys per step of the QK loop (half an 8-key step). */
@inline export function kStepBytes<T>(): usize {
  return isRelaxedDot<T>() ? 32 : 16;
}

/** Steps of the QK loop for dp channels. */
@inline export function qkSteps<T>(dp: i32): i32 {
  if (isFloat<T>()) return dp;
  return isRelaxedDot<T>() ? dp >> 2 : dp >> 1;
}

/** Bytes of one Q row (a group of 4 rows takes 4 times as many, interleaved). */
@inline export function qRowBytes<T>(dp: i32): usize {
  return <usize>dp * sizeof<T>();
}

/** Bytes of one packed key: FP32, i16 codes, or the relaxed dot's two i8 halves. */
@inline export function kKeyBytes<T>(dp: i32): usize {
  return isFloat<T>() ? <usize>dp << 2 : <usize>dp << 1;
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

// A row's dot products as floats: the relaxed dot's +127 shift of K taken off (corr).
@inline function score<T>(acc: v128, corr: i32): v128 {
  if (isFloat<T>()) return acc;
  return f32x4.convert_i32x4_s(i32x4.sub(acc, i32x4.splat(corr)));
}

/**
 * S[8 keys] (one vector of 4 rows each, at s, s + 16, ...) = (Q[4 rows] . K[8 keys]) * mul[row];
 * returns the 4 rows' maxima over these keys. corr points at the rows' QSUM (relaxed dot only).
 */
@inline export function qk_4x8<T, B>(q: usize, k: usize, steps: i32, corr: usize, mul: v128, s: usize): v128 {
  const shuf = byShuffle<B>();
  let a00 = i32x4.splat(0), a01 = a00, a10 = a00, a11 = a00;
  let a20 = a00, a21 = a00, a30 = a00, a31 = a00;
  const kstep = kStepBytes<T>();
  // Two pointers stepped once per iteration: no per-load address arithmetic in the loop.
  let qp = q, kp = k;
  const end = q + (<usize>steps << 4);
  while (qp < end) {
    const b0 = load<v128>(kp);
    let b1: v128, c0: v128, c1: v128;
    if (isRelaxedDot<T>()) {
      c0 = load<v128>(kp, 16); b1 = load<v128>(kp, 32); c1 = load<v128>(kp, 48);
    } else {
      b1 = load<v128>(kp, 16); c0 = b0; c1 = b1;
    }
    let x = i32x4.splat(0);
    if (shuf) x = load<v128>(qp);
    const x0 = shuf ? v128.shuffle<i32>(x, x, 0, 0, 0, 0) : v128.load32_splat(qp);
    a00 = kdot<T>(x0, b0, c0, a00); a01 = kdot<T>(x0, b1, c1, a01);
    const x1 = shuf ? v128.shuffle<i32>(x, x, 1, 1, 1, 1) : v128.load32_splat(qp, 4);
    a10 = kdot<T>(x1, b0, c0, a10); a11 = kdot<T>(x1, b1, c1, a11);
    const x2 = shuf ? v128.shuffle<i32>(x, x, 2, 2, 2, 2) : v128.load32_splat(qp, 8);
    a20 = kdot<T>(x2, b0, c0, a20); a21 = kdot<T>(x2, b1, c1, a21);
    const x3 = shuf ? v128.shuffle<i32>(x, x, 3, 3, 3, 3) : v128.load32_splat(qp, 12);
    a30 = kdot<T>(x3, b0, c0, a30); a31 = kdot<T>(x3, b1, c1, a31);
    qp += 16;
    kp += 2 * kstep;
  }
  const relaxed = isRelaxedDot<T>();
  const k0 = relaxed ? load<i32>(corr) : 0, k1 = relaxed ? load<i32>(corr, 4) : 0;
  const k2 = relaxed ? load<i32>(corr, 8) : 0, k3 = relaxed ? load<i32>(corr, 12) : 0;
  // Scaled after the transpose, where lanes are rows: mul may hold one multiplier per row.
  const m = transpose4(s, 16, score<T>(a00, k0), score<T>(a10, k1), score<T>(a20, k2), score<T>(a30, k3), mul);
  return f32x4.pmax(m, transpose4(s + 64, 16, score<T>(a01, k0), score<T>(a11, k1), score<T>(a21, k2), score<T>(a31, k3), mul));
}

/**
 * O[4 rows][0..dp) = O * alpha[row] + P[0..nk)[4 rows] . V[nk][0..dp), 8 channels at a time.
 * o: row stride oStride; p: one vector of the 4 rows per key; v: row stride vStride.
 */
@inline export function pv_4x8<B>(
  o: usize, oStride: usize, p: usize, v: usize, vStride: usize, nk: i32, dp: i32, alpha: v128,
): void {
  const shuf = byShuffle<B>();
  const al0 = v128.shuffle<f32>(alpha, alpha, 0, 0, 0, 0), al1 = v128.shuffle<f32>(alpha, alpha, 1, 1, 1, 1);
  const al2 = v128.shuffle<f32>(alpha, alpha, 2, 2, 2, 2), al3 = v128.shuffle<f32>(alpha, alpha, 3, 3, 3, 3);
  const end = p + (<usize>nk << 4);
  for (let d = 0; d < dp; d += 8) {
    const od = o + (<usize>d << 2);
    let o00 = f32x4.mul(load<v128>(od), al0), o01 = f32x4.mul(load<v128>(od, 16), al0);
    let o10 = f32x4.mul(load<v128>(od + oStride), al1), o11 = f32x4.mul(load<v128>(od + oStride, 16), al1);
    let o20 = f32x4.mul(load<v128>(od + 2 * oStride), al2), o21 = f32x4.mul(load<v128>(od + 2 * oStride, 16), al2);
    let o30 = f32x4.mul(load<v128>(od + 3 * oStride), al3), o31 = f32x4.mul(load<v128>(od + 3 * oStride, 16), al3);
    let vp = v + (<usize>d << 2), pp = p;
    while (pp < end) {
      const v0 = load<v128>(vp), v1 = load<v128>(vp, 16);
      let x = f32x4.splat(0);
      if (shuf) x = load<v128>(pp);
      const p0 = shuf ? v128.shuffle<f32>(x, x, 0, 0, 0, 0) : v128.load32_splat(pp);
      o00 = madd(p0, v0, o00); o01 = madd(p0, v1, o01);
      const p1 = shuf ? v128.shuffle<f32>(x, x, 1, 1, 1, 1) : v128.load32_splat(pp, 4);
      o10 = madd(p1, v0, o10); o11 = madd(p1, v1, o11);
      const p2 = shuf ? v128.shuffle<f32>(x, x, 2, 2, 2, 2) : v128.load32_splat(pp, 8);
      o20 = madd(p2, v0, o20); o21 = madd(p2, v1, o21);
      const p3 = shuf ? v128.shuffle<f32>(x, x, 3, 3, 3, 3) : v128.load32_splat(pp, 12);
      o30 = madd(p3, v0, o30); o31 = madd(p3, v1, o31);
      vp += vStride;
      pp += 16;
    }
    store<v128>(od, o00); store<v128>(od, o01, 16);
    store<v128>(od + oStride, o10); store<v128>(od + oStride, o11, 16);
    store<v128>(od + 2 * oStride, o20); store<v128>(od + 2 * oStride, o21, 16);
    store<v128>(od + 3 * oStride, o30); store<v128>(od + 3 * oStride, o31, 16);
  }
}

// One query row (a decode step): the 4-row kernels would spend three quarters of their arithmetic
// on padding rows. Q, K and V keep the layouts above; S and P hold the row's scores 4 keys to a
// vector, key k at 4 k bytes, so the softmax works on every lane.

/**
 * S[8 keys] = (Q[row 0] . K[8 keys]) * mul, key k's score at s + 4 k; returns their maximum in
 * every lane. Even and odd steps accumulate apart, halving
 * the dependency chains that bind a one-row loop.
 */
@inline export function qk_1x8<T>(q: usize, k: usize, steps: i32, corr: usize, mul: v128, s: usize): v128 {
  let a0 = i32x4.splat(0), a1 = a0, e0 = a0, e1 = a0;
  const kstep = kStepBytes<T>();
  let qp = q, kp = k;
  const end = q + (<usize>steps << 4);
  while (qp < end) {
    const x = v128.load32_splat(qp), y = v128.load32_splat(qp, 16);
    const relaxed = isRelaxedDot<T>();
    const b0 = load<v128>(kp), b1 = load<v128>(kp, relaxed ? 32 : 16);
    const c0 = relaxed ? load<v128>(kp, 16) : b0, c1 = relaxed ? load<v128>(kp, 48) : b1;
    a0 = kdot<T>(x, b0, c0, a0); a1 = kdot<T>(x, b1, c1, a1);
    const n = kp + 2 * kstep;
    const d0 = load<v128>(n), d1 = load<v128>(n, relaxed ? 32 : 16);
    const f0 = relaxed ? load<v128>(n, 16) : d0, f1 = relaxed ? load<v128>(n, 48) : d1;
    e0 = kdot<T>(y, d0, f0, e0); e1 = kdot<T>(y, d1, f1, e1);
    qp += 32;
    kp += 4 * kstep;
  }
  const k0 = isRelaxedDot<T>() ? load<i32>(corr) : 0;
  const s0 = f32x4.mul(score<T>(isFloat<T>() ? f32x4.add(a0, e0) : i32x4.add(a0, e0), k0), mul);
  const s1 = f32x4.mul(score<T>(isFloat<T>() ? f32x4.add(a1, e1) : i32x4.add(a1, e1), k0), mul);
  store<v128>(s, s0);
  store<v128>(s, s1, 16);
  const m = f32x4.pmax(s0, s1), m2 = f32x4.pmax(m, v128.shuffle<f32>(m, m, 2, 3, 0, 1));
  return f32x4.pmax(m2, v128.shuffle<f32>(m2, m2, 1, 0, 3, 2));
}

/**
 * O[row 0][0..dp) = O * alpha[0] + P[0..nk) . V[nk][0..dp), P's key k at p + 4 k, 32 channels
 * at a time (8 for the rest): each pass reads two whole lines of every V row, where 8-channel
 * passes read half a line and came back for the rest (a 1-row dense step 20-25% faster).
 */
@inline export function pv_1x32(o: usize, p: usize, v: usize, vStride: usize, nk: i32, dp: i32, alpha: v128): void {
  const al = v128.shuffle<f32>(alpha, alpha, 0, 0, 0, 0);
  const end = p + (<usize>nk << 2);
  let d = 0;
  for (; d + 32 <= dp; d += 32) {
    const od = o + (<usize>d << 2);
    let o0 = f32x4.mul(load<v128>(od), al), o1 = f32x4.mul(load<v128>(od, 16), al);
    let o2 = f32x4.mul(load<v128>(od, 32), al), o3 = f32x4.mul(load<v128>(od, 48), al);
    let o4 = f32x4.mul(load<v128>(od, 64), al), o5 = f32x4.mul(load<v128>(od, 80), al);
    let o6 = f32x4.mul(load<v128>(od, 96), al), o7 = f32x4.mul(load<v128>(od, 112), al);
    let vp = v + (<usize>d << 2), pp = p;
    while (pp < end) {
      const p0 = v128.load32_splat(pp);
      o0 = madd(p0, load<v128>(vp), o0); o1 = madd(p0, load<v128>(vp, 16), o1);
      o2 = madd(p0, load<v128>(vp, 32), o2); o3 = madd(p0, load<v128>(vp, 48), o3);
      o4 = madd(p0, load<v128>(vp, 64), o4); o5 = madd(p0, load<v128>(vp, 80), o5);
      o6 = madd(p0, load<v128>(vp, 96), o6); o7 = madd(p0, load<v128>(vp, 112), o7);
      vp += vStride;
      pp += 4;
    }
    store<v128>(od, o0); store<v128>(od, o1, 16); store<v128>(od, o2, 32); store<v128>(od, o3, 48);
    store<v128>(od, o4, 64); store<v128>(od, o5, 80); store<v128>(od, o6, 96); store<v128>(od, o7, 112);
  }
  for (; d < dp; d += 8) {
    const od = o + (<usize>d << 2);
    let o0 = f32x4.mul(load<v128>(od), al), o1 = f32x4.mul(load<v128>(od, 16), al);
    let vp = v + (<usize>d << 2), pp = p;
    while (pp < end) {
      const p0 = v128.load32_splat(pp);
      o0 = madd(p0, load<v128>(vp), o0); o1 = madd(p0, load<v128>(vp, 16), o1);
      vp += vStride;
      pp += 4;
    }
    store<v128>(od, o0); store<v128>(od, o1, 16);
  }
}
