// Small vector helpers shared by every stage. Each is inlined, so the relaxed/baseline choice is made
// at compile time (ASC_FEATURE_RELAXED_SIMD) and costs nothing in the hot loops.
import { P } from './params';

@inline export function param(p: usize, slot: P): i32 {
  return load<i32>(p + (<usize>slot << 2));
}

@inline export function paramf(p: usize, slot: P): f32 {
  return load<f32>(p + (<usize>slot << 2));
}

@inline export function ptr(p: usize, slot: P): usize {
  return <usize>load<u32>(p + (<usize>slot << 2));
}

/** acc + a * b; fused (and twice as fast) where relaxed SIMD is on. */
@inline export function madd(a: v128, b: v128, acc: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, acc);
  return f32x4.add(acc, f32x4.mul(a, b));
}

@inline export function hsum(v: v128): f32 {
  const s = f32x4.add(v, v128.shuffle<f32>(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1);
}

@inline export function hmax(v: v128): f32 {
  const s = f32x4.max(v, v128.shuffle<f32>(v, v, 2, 3, 0, 1));
  return max(f32x4.extract_lane(s, 0), f32x4.extract_lane(s, 1));
}

/** Dot product of two f32 rows of n floats (n a multiple of 8). */
@inline export function dotRow(a: usize, b: usize, n: i32): f32 {
  let s0 = f32x4.splat(0);
  let s1 = f32x4.splat(0);
  for (let d = 0; d < n; d += 8) {
    const o = <usize>d << 2;
    s0 = madd(load<v128>(a + o), load<v128>(b + o), s0);
    s1 = madd(load<v128>(a + o, 16), load<v128>(b + o, 16), s1);
  }
  return hsum(f32x4.add(s0, s1));
}

/** dst[0..n) = 0 for n floats, n a multiple of 4. */
@inline export function zeroRow(dst: usize, n: i32): void {
  const z = f32x4.splat(0);
  for (let d = 0; d < n; d += 4) store<v128>(dst + (<usize>d << 2), z);
}

// 2^x for x <= 0: x = n + f with n = nearest(x), f in [-1/2, 1/2]; 2^f by its degree-6 Taylor
// polynomial (relative error < 2e-7, below f32 rounding of the P.V sums); 2^n from exponent bits.
// Inputs at or below -127 (including -inf) give exactly 0 because the exponent field becomes 0.
@inline export function exp2v(x: v128): v128 {
  x = f32x4.max(x, f32x4.splat(-127.0));
  const n = f32x4.nearest(x);
  const f = f32x4.sub(x, n);
  let y = f32x4.splat(1.5403530393381608e-4);
  y = madd(y, f, f32x4.splat(1.3333558146428443e-3));
  y = madd(y, f, f32x4.splat(9.618129107628477e-3));
  y = madd(y, f, f32x4.splat(5.550410866482158e-2));
  y = madd(y, f, f32x4.splat(2.402265069591007e-1));
  y = madd(y, f, f32x4.splat(6.931471805599453e-1));
  y = madd(y, f, f32x4.splat(1.0));
  const e = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(n), i32x4.splat(127)), 23);
  return f32x4.mul(y, e);
}

@inline export function exp2s(x: f32): f32 {
  return f32x4.extract_lane(exp2v(f32x4.splat(x)), 0);
}
