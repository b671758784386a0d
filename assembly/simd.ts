// Small vector helpers shared by every stage. Each is inlined, so the relaxed/baseline choice is made
// at compile time (ASC_FEATURE_RELAXED_SIMD) and costs nothing in the hot loops.
import { P, Head } from './params';

@inline export function param(p: usize, slot: P): i32 {
  return load<i32>(p + (<usize>slot << 2));
}

@inline export function paramf(p: usize, slot: P): f32 {
  return load<f32>(p + (<usize>slot << 2));
}

/**
 * Rows of query block i that kernels read: its real rows rounded up to a group of 4, the rows of
 * Stage 2's tiles. TypeScript zeroes the padding rows in that group and leaves the rest unwritten
 * (a decode step writes 4 rows per head, not a block of 16 or 64).
 */
@inline export function qRowsRead(p: usize, i: i32): i32 {
  const bq = param(p, P.BQ);
  return min(bq, (param(p, P.NQ) - i * bq + 3) & ~3);
}

@inline export function ptr(p: usize, slot: P): usize {
  return <usize>load<u32>(p + (<usize>slot << 2));
}

@inline function headField(p: usize, h: i32, field: Head): usize {
  return ptr(p, P.HEADS) + ((<usize>h * Head.COUNT + field) << 2);
}

/** Query head h's setting `field` (params.ts, Head). */
@inline export function headParam(p: usize, h: i32, field: Head): i32 {
  return load<i32>(headField(p, h, field));
}

@inline export function headParamf(p: usize, h: i32, field: Head): f32 {
  return load<f32>(headField(p, h, field));
}

/**
 * Float to int32 by truncation, for values known to be in range: the relaxed form is a single
 * instruction, the saturating one a longer sequence; both agree in range.
 */
@inline export function truncInRange(v: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i32x4.relaxed_trunc_f32x4_s(v);
  return i32x4.trunc_sat_f32x4_s(v);
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

// pmax (a < b ? b : a) is one instruction on x86 where f32x4.max, which must order NaN and -0,
// is several; the kernels' operands are never NaN.
@inline export function hmax(v: v128): f32 {
  const s = f32x4.pmax(v, v128.shuffle<f32>(v, v, 2, 3, 0, 1));
  return max(f32x4.extract_lane(s, 0), f32x4.extract_lane(s, 1));
}

/**
 * Transposes 4 vectors of 4 lanes (a[0..3], b[0..3], ...) into 4 vectors (a[i], b[i], c[i], e[i]),
 * each times `by` (lane i by by[i]; a splat of 1 to move data exactly), stored at dst, dst + step,
 * dst + 2 step, dst + 3 step. Returns their lane-wise maximum.
 */
@inline export function transpose4(dst: usize, step: usize, a: v128, b: v128, c: v128, e: v128, by: v128): v128 {
  const ab0 = v128.shuffle<f32>(a, b, 0, 4, 1, 5), ab1 = v128.shuffle<f32>(a, b, 2, 6, 3, 7);
  const ce0 = v128.shuffle<f32>(c, e, 0, 4, 1, 5), ce1 = v128.shuffle<f32>(c, e, 2, 6, 3, 7);
  const t0 = f32x4.mul(v128.shuffle<f32>(ab0, ce0, 0, 1, 4, 5), by), t1 = f32x4.mul(v128.shuffle<f32>(ab0, ce0, 2, 3, 6, 7), by);
  const t2 = f32x4.mul(v128.shuffle<f32>(ab1, ce1, 0, 1, 4, 5), by), t3 = f32x4.mul(v128.shuffle<f32>(ab1, ce1, 2, 3, 6, 7), by);
  store<v128>(dst, t0);
  store<v128>(dst + step, t1);
  store<v128>(dst + 2 * step, t2);
  store<v128>(dst + 3 * step, t3);
  return f32x4.pmax(f32x4.pmax(t0, t1), f32x4.pmax(t2, t3));
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

// 2^x for x <= 0, as x = n + f with n an integer and f in [-1/2, 1/2]: 2^f by a degree-5
// polynomial fitted for relative error (under 2.5e-7 in f32, below the rounding of the P.V sums),
// 2^n straight into the exponent field. Adding 1.5 * 2^23 + 127 rounds x to an integer in the low
// mantissa bits, already biased, so no float-to-int conversion is needed (V8 expands those, and
// f32x4.max, into long sequences on x86; pmax is one instruction). Inputs at or below -127,
// -Infinity included, give exactly 0: the exponent field becomes 0.
const ROUND = f32x4.splat(12582912.0 + 127.0);

@inline export function exp2v(x: v128): v128 {
  x = f32x4.pmax(x, f32x4.splat(-127.0));
  const y = f32x4.add(x, ROUND);
  const f = f32x4.sub(x, f32x4.sub(y, ROUND));
  let p = f32x4.splat(1.3276467608809885e-3);
  p = madd(p, f, f32x4.splat(9.675542060809521e-3));
  p = madd(p, f, f32x4.splat(5.550713293681683e-2));
  p = madd(p, f, f32x4.splat(2.4022119710720702e-1));
  p = madd(p, f, f32x4.splat(6.931469670482597e-1));
  p = madd(p, f, f32x4.splat(1.0000000716572128));
  return f32x4.mul(p, i32x4.shl(y, 23));
}

@inline export function exp2s(x: f32): f32 {
  return f32x4.extract_lane(exp2v(f32x4.splat(x)), 0);
}

// bfloat16: a float32's upper 16 bits. A KV cache keeps such a copy of V for its sparse steps
// (src/kvcache.ts, sparseValues), which are bound by reading V: half the bytes of FP32.
const BF16_EXP = i32x4.splat(0x7f800000);

/** 8 floats (a, then b) rounded to bfloat16, to nearest with ties to even; a value that would round past float32's range is truncated instead. */
@inline export function bf16x8(a: v128, b: v128): v128 {
  return v128.shuffle<i16>(bf16Round(a), bf16Round(b), 1, 3, 5, 7, 9, 11, 13, 15);
}

@inline function bf16Round(x: v128): v128 {
  const r = i32x4.add(i32x4.add(x, i32x4.splat(0x7fff)), v128.and(i32x4.shr_u(x, 16), i32x4.splat(1)));
  return v128.bitselect(x, r, i32x4.eq(v128.and(r, BF16_EXP), BF16_EXP));
}

/** Lanes 0-3 of 8 bfloat16 values as floats (exact). */
@inline export function bf16Low(x: v128): v128 {
  return v128.shuffle<i16>(i16x8.splat(0), x, 0, 8, 1, 9, 2, 10, 3, 11);
}

/** Lanes 4-7 of 8 bfloat16 values as floats (exact). */
@inline export function bf16High(x: v128): v128 {
  return v128.shuffle<i16>(i16x8.splat(0), x, 4, 12, 5, 13, 6, 14, 7, 15);
}
