// Register-blocked microkernels of Stage 2, in the XNNPACK manner: 4 query rows x 8 keys for QK^T,
// 4 rows x 8 channels for P.V. Every lane of an accumulator is a finished dot product: no
// horizontal sums. Layouts (quantize.ts writes them):
//   Q: rows in groups of 4, interleaved: per step one 16-byte vector of the 4 rows' next 4 bytes
//      (the relaxed dot: two, see below);
//   K: keys in groups of 8, per step the 8 keys' values of that step's channels;
//   S and P: key-major, one vector per key holding the 4 rows, so that the softmax in between is
//            vertical (row maxima and sums come out as vectors).
// QK has three element types, chosen at compile time:
//   f32 - dense FP32 attention: a step is one channel, two vectors of 4 keys;
//   i16 - i16 Q codes, i32x4.dot_i16x8_s: a step is a pair of channels, one vector of the 8 keys'
//         INT8 codes, widened to i16 as it is loaded;
//   i8  - the relaxed i8 x i7 dot: a step is a quad, two vectors of 4 keys' INT8 codes, against
//         Q's codes split into q+ = max(q, 0) and q- = max(-q, 0), both in [0, 127] as the dot's
//         second operand must be on every engine (see quantize_q).
// Both INT8 paths read one byte per K code: a decode step is bound by reading K and V.
// A Q (or P) lane is broadcast in one of two ways, chosen at run time (P.SPLAT):
//   load    - load32_splat from memory: fewest instructions where loads are cheap;
//   shuffle - one vector load and four lane shuffles: for engines that bounds-check every memory
//             access in software (Deno, which leaves V8's trap handler off), where a load also
//             costs a compare and branch.
import { madd, transpose4, bf16Low, bf16High } from './simd';

// The broadcast variant is a type parameter (B) rather than a flag, so that each compiled instance
// holds only its own loop: the optimizers did not fold a constant flag through the inlined driver.
/** B for broadcasts by load32_splat. */
export type SplatByLoad = i32;
/** B for broadcasts by a vector load and lane shuffles. */
export type SplatByShuffle = v128;

/** V for FP32 value rows. */
export type ValuesF32 = f32;
/** V for bfloat16 value rows (a KV cache's copy for sparse steps), widened to FP32 as they load. */
export type ValuesBf16 = u16;

@inline function byShuffle<B>(): bool {
  return sizeof<B>() == 16;
}

/** The relaxed i8 x i7 dot path (T = i8). */
@inline export function isRelaxedDot<T>(): bool {
  return isInteger<T>() && sizeof<T>() == 1;
}

/** Bytes of a 4-row group of Q per step of the QK loop: q+ then q- for the relaxed dot. */
@inline export function qStepBytes<T>(): usize {
  return isRelaxedDot<T>() ? 32 : 16;
}

/** Bytes of an 8-key group of K per step of the QK loop. */
@inline function kStepBytes<T>(): usize {
  return isInteger<T>() && !isRelaxedDot<T>() ? 16 : 32;
}

/** Steps of the QK loop for dp channels. */
@inline export function qkSteps<T>(dp: i32): i32 {
  if (isFloat<T>()) return dp;
  return isRelaxedDot<T>() ? dp >> 2 : dp >> 1;
}

/** Bytes of one Q row (a group of 4 rows takes 4 times as many, interleaved). */
@inline export function qRowBytes<T>(dp: i32): usize {
  return isRelaxedDot<T>() ? <usize>dp << 1 : <usize>dp * sizeof<T>();
}

/** Bytes of one packed key: FP32, or one byte per INT8 code. */
@inline export function kKeyBytes<T>(dp: i32): usize {
  return isFloat<T>() ? <usize>dp << 2 : <usize>dp;
}

// Keys 0-3 (half 0) or 4-7 (half 1) of an 8-key group at one step, in the lanes kdot expects.
@inline function keys<T>(kp: usize, half: i32): v128 {
  if (isFloat<T>() || isRelaxedDot<T>()) return half ? load<v128>(kp, 16) : load<v128>(kp);
  return half ? i16x8.extend_high_i8x16_s(load<v128>(kp)) : i16x8.extend_low_i8x16_s(load<v128>(kp));
}

// acc + Q's broadcast step x (and for the relaxed dot its negative part xn) . 4 keys' step k.
@inline function kdot<T>(x: v128, xn: v128, k: v128, acc: v128): v128 {
  if (isFloat<T>()) return madd(x, k, acc);
  // (The relaxed dot only exists in the relaxed module; the engine never asks the baseline one for it.)
  if (isRelaxedDot<T>() && ASC_FEATURE_RELAXED_SIMD) {
    // Each i16 lane of k.q+ - k.q- is one pair's k.q, within +-2 * 127 * 127, so the difference
    // is exact in i16. Widened by hand: Node 20's baseline compiler (Liftoff) doubles the result
    // of i32x4.relaxed_dot_i8x16_i7x16_add_s, while this form is right in every tier.
    const pair = i16x8.sub(i16x8.relaxed_dot_i8x16_i7x16_s(k, x), i16x8.relaxed_dot_i8x16_i7x16_s(k, xn));
    return i32x4.add(acc, i32x4.dot_i16x8_s(pair, i16x8.splat(1)));
  }
  return i32x4.add(acc, i32x4.dot_i16x8_s(x, k));
}

@inline function score<T>(acc: v128): v128 {
  return isFloat<T>() ? acc : f32x4.convert_i32x4_s(acc);
}

/**
 * S[8 keys] (one vector of 4 rows each, at s, s + 16, ...) = (Q[4 rows] . K[8 keys]) * mul[row];
 * returns the 4 rows' maxima over these keys.
 */
@inline export function qk_4x8<T, B>(q: usize, k: usize, steps: i32, mul: v128, s: usize): v128 {
  const shuf = byShuffle<B>(), relaxed = isRelaxedDot<T>();
  let a00 = i32x4.splat(0), a01 = a00, a10 = a00, a11 = a00;
  let a20 = a00, a21 = a00, a30 = a00, a31 = a00;
  // Two pointers stepped once per iteration: no per-load address arithmetic in the loop.
  let qp = q, kp = k;
  const end = q + <usize>steps * qStepBytes<T>();
  while (qp < end) {
    const b0 = keys<T>(kp, 0), b1 = keys<T>(kp, 1);
    let x = i32x4.splat(0), y = x;
    if (shuf) {
      x = load<v128>(qp);
      if (relaxed) y = load<v128>(qp, 16);
    }
    const x0 = shuf ? v128.shuffle<i32>(x, x, 0, 0, 0, 0) : v128.load32_splat(qp);
    const y0 = !relaxed ? x0 : shuf ? v128.shuffle<i32>(y, y, 0, 0, 0, 0) : v128.load32_splat(qp, 16);
    a00 = kdot<T>(x0, y0, b0, a00); a01 = kdot<T>(x0, y0, b1, a01);
    const x1 = shuf ? v128.shuffle<i32>(x, x, 1, 1, 1, 1) : v128.load32_splat(qp, 4);
    const y1 = !relaxed ? x1 : shuf ? v128.shuffle<i32>(y, y, 1, 1, 1, 1) : v128.load32_splat(qp, 20);
    a10 = kdot<T>(x1, y1, b0, a10); a11 = kdot<T>(x1, y1, b1, a11);
    const x2 = shuf ? v128.shuffle<i32>(x, x, 2, 2, 2, 2) : v128.load32_splat(qp, 8);
    const y2 = !relaxed ? x2 : shuf ? v128.shuffle<i32>(y, y, 2, 2, 2, 2) : v128.load32_splat(qp, 24);
    a20 = kdot<T>(x2, y2, b0, a20); a21 = kdot<T>(x2, y2, b1, a21);
    const x3 = shuf ? v128.shuffle<i32>(x, x, 3, 3, 3, 3) : v128.load32_splat(qp, 12);
    const y3 = !relaxed ? x3 : shuf ? v128.shuffle<i32>(y, y, 3, 3, 3, 3) : v128.load32_splat(qp, 28);
    a30 = kdot<T>(x3, y3, b0, a30); a31 = kdot<T>(x3, y3, b1, a31);
    qp += qStepBytes<T>();
    kp += kStepBytes<T>();
  }
  // Scaled after the transpose, where lanes are rows: mul may hold one multiplier per row.
  const m = transpose4(s, 16, score<T>(a00), score<T>(a10), score<T>(a20), score<T>(a30), mul);
  return f32x4.pmax(m, transpose4(s + 64, 16, score<T>(a01), score<T>(a11), score<T>(a21), score<T>(a31), mul));
}

/**
 * O[4 rows][0..dp) = O * alpha[row] + P[0..nk)[4 rows] . V[nk][0..dp), 8 channels at a time.
 * o: row stride oStride; p: one vector of the 4 rows per key; v: row stride vStride, FP32 or
 * bfloat16 values (V).
 */
@inline export function pv_4x8<B, V>(
  o: usize, oStride: usize, p: usize, v: usize, vStride: usize, nk: i32, dp: i32, alpha: v128,
): void {
  const shuf = byShuffle<B>();
  const al0 = v128.shuffle<f32>(alpha, alpha, 0, 0, 0, 0), al1 = v128.shuffle<f32>(alpha, alpha, 1, 1, 1, 1);
  const al2 = v128.shuffle<f32>(alpha, alpha, 2, 2, 2, 2), al3 = v128.shuffle<f32>(alpha, alpha, 3, 3, 3, 3);
  const end = p + (<usize>nk << 4), bf16 = sizeof<V>() == 2;
  for (let d = 0; d < dp; d += 8) {
    const od = o + (<usize>d << 2);
    let o00 = f32x4.mul(load<v128>(od), al0), o01 = f32x4.mul(load<v128>(od, 16), al0);
    let o10 = f32x4.mul(load<v128>(od + oStride), al1), o11 = f32x4.mul(load<v128>(od + oStride, 16), al1);
    let o20 = f32x4.mul(load<v128>(od + 2 * oStride), al2), o21 = f32x4.mul(load<v128>(od + 2 * oStride, 16), al2);
    let o30 = f32x4.mul(load<v128>(od + 3 * oStride), al3), o31 = f32x4.mul(load<v128>(od + 3 * oStride, 16), al3);
    let vp = v + <usize>d * sizeof<V>(), pp = p;
    while (pp < end) {
      const w = load<v128>(vp);
      const v0 = bf16 ? bf16Low(w) : w, v1 = bf16 ? bf16High(w) : load<v128>(vp, 16);
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
@inline export function qk_1x8<T>(q: usize, k: usize, steps: i32, mul: v128, s: usize): v128 {
  const relaxed = isRelaxedDot<T>(), qs = qStepBytes<T>(), ks = kStepBytes<T>();
  let a0 = i32x4.splat(0), a1 = a0, e0 = a0, e1 = a0;
  let qp = q, kp = k;
  const end = q + <usize>steps * qs;
  while (qp < end) {
    const x = v128.load32_splat(qp), y = v128.load32_splat(qp + qs);
    const xn = relaxed ? v128.load32_splat(qp, 16) : x, yn = relaxed ? v128.load32_splat(qp + qs, 16) : y;
    a0 = kdot<T>(x, xn, keys<T>(kp, 0), a0); a1 = kdot<T>(x, xn, keys<T>(kp, 1), a1);
    e0 = kdot<T>(y, yn, keys<T>(kp + ks, 0), e0); e1 = kdot<T>(y, yn, keys<T>(kp + ks, 1), e1);
    qp += 2 * qs;
    kp += 2 * ks;
  }
  const s0 = f32x4.mul(score<T>(isFloat<T>() ? f32x4.add(a0, e0) : i32x4.add(a0, e0)), mul);
  const s1 = f32x4.mul(score<T>(isFloat<T>() ? f32x4.add(a1, e1) : i32x4.add(a1, e1)), mul);
  store<v128>(s, s0);
  store<v128>(s, s1, 16);
  const m = f32x4.pmax(s0, s1), m2 = f32x4.pmax(m, v128.shuffle<f32>(m, m, 2, 3, 0, 1));
  return f32x4.pmax(m2, v128.shuffle<f32>(m2, m2, 1, 0, 3, 2));
}

/**
 * O[row 0][0..dp) = O * alpha[0] + P[0..nk) . V[nk][0..dp), P's key k at p + 4 k, 32 channels
 * at a time (8 for the rest): each pass reads whole lines of every V row, where 8-channel
 * passes read part of a line and came back for the rest (a 1-row dense step 20-25% faster).
 * V: FP32 or bfloat16 values.
 */
@inline export function pv_1x32<V>(o: usize, p: usize, v: usize, vStride: usize, nk: i32, dp: i32, alpha: v128): void {
  const al = v128.shuffle<f32>(alpha, alpha, 0, 0, 0, 0), bf16 = sizeof<V>() == 2;
  const end = p + (<usize>nk << 2);
  let d = 0;
  for (; d + 32 <= dp; d += 32) {
    const od = o + (<usize>d << 2);
    let o0 = f32x4.mul(load<v128>(od), al), o1 = f32x4.mul(load<v128>(od, 16), al);
    let o2 = f32x4.mul(load<v128>(od, 32), al), o3 = f32x4.mul(load<v128>(od, 48), al);
    let o4 = f32x4.mul(load<v128>(od, 64), al), o5 = f32x4.mul(load<v128>(od, 80), al);
    let o6 = f32x4.mul(load<v128>(od, 96), al), o7 = f32x4.mul(load<v128>(od, 112), al);
    let vp = v + <usize>d * sizeof<V>(), pp = p;
    while (pp < end) {
      const p0 = v128.load32_splat(pp);
      if (bf16) {
        const x0 = load<v128>(vp), x1 = load<v128>(vp, 16), x2 = load<v128>(vp, 32), x3 = load<v128>(vp, 48);
        o0 = madd(p0, bf16Low(x0), o0); o1 = madd(p0, bf16High(x0), o1);
        o2 = madd(p0, bf16Low(x1), o2); o3 = madd(p0, bf16High(x1), o3);
        o4 = madd(p0, bf16Low(x2), o4); o5 = madd(p0, bf16High(x2), o5);
        o6 = madd(p0, bf16Low(x3), o6); o7 = madd(p0, bf16High(x3), o7);
      } else {
        o0 = madd(p0, load<v128>(vp), o0); o1 = madd(p0, load<v128>(vp, 16), o1);
        o2 = madd(p0, load<v128>(vp, 32), o2); o3 = madd(p0, load<v128>(vp, 48), o3);
        o4 = madd(p0, load<v128>(vp, 64), o4); o5 = madd(p0, load<v128>(vp, 80), o5);
        o6 = madd(p0, load<v128>(vp, 96), o6); o7 = madd(p0, load<v128>(vp, 112), o7);
      }
      vp += vStride;
      pp += 4;
    }
    store<v128>(od, o0); store<v128>(od, o1, 16); store<v128>(od, o2, 32); store<v128>(od, o3, 48);
    store<v128>(od, o4, 64); store<v128>(od, o5, 80); store<v128>(od, o6, 96); store<v128>(od, o7, 112);
  }
  for (; d < dp; d += 8) {
    const od = o + (<usize>d << 2);
    let o0 = f32x4.mul(load<v128>(od), al), o1 = f32x4.mul(load<v128>(od, 16), al);
    let vp = v + <usize>d * sizeof<V>(), pp = p;
    while (pp < end) {
      const p0 = v128.load32_splat(pp), x = load<v128>(vp);
      o0 = madd(p0, bf16 ? bf16Low(x) : x, o0); o1 = madd(p0, bf16 ? bf16High(x) : load<v128>(vp, 16), o1);
      vp += vStride;
      pp += 4;
    }
    store<v128>(od, o0); store<v128>(od, o1, 16);
  }
}
