// Micro-benchmark entry (build/bench.*.wasm, run by the bench command and bench/micro.js): the
// Stage 2 microkernels run over L1-resident tiles, and register-resident loops that measure the
// peak of each instruction mix the kernels use; each loop returns a value derived from its
// accumulators so that nothing is optimized away.
import { qk_4x8, pv_4x8, qkSteps, kKeyBytes, SplatByLoad, SplatByShuffle, ValuesF32 } from './microkernels';
import { exp2v, madd } from './simd';

@inline function sum8(a: v128, b: v128, c: v128, d: v128, e: v128, f: v128, g: v128, h: v128): v128 {
  return i32x4.add(i32x4.add(i32x4.add(a, b), i32x4.add(c, d)), i32x4.add(i32x4.add(e, f), i32x4.add(g, h)));
}

/** QK^T of 4 query rows against one key block of bk keys, `iters` times: 4 * bk * dp MACs each. */
@inline function qkBlock<T, B>(q: usize, k: usize, dp: i32, bk: i32, s: usize, iters: i32): void {
  const kb = kKeyBytes<T>(dp), steps = qkSteps<T>(dp);
  const mul = f32x4.splat(0.125);
  for (let it = 0; it < iters; it++) {
    let m = f32x4.splat(0);
    for (let g = 0; g < bk; g += 8) m = f32x4.pmax(m, qk_4x8<T, B>(q, k + <usize>g * kb, steps, mul, s + (<usize>g << 4)));
    store<v128>(s, m);
  }
}

// shuf: 1 broadcasts Q and P lanes by shuffles, 0 by loads (P.SPLAT).

export function bench_qk_i16(q: usize, k: usize, dp: i32, bk: i32, s: usize, iters: i32, shuf: i32): void {
  if (shuf) qkBlock<i16, SplatByShuffle>(q, k, dp, bk, s, iters);
  else qkBlock<i16, SplatByLoad>(q, k, dp, bk, s, iters);
}

export function bench_qk_relaxed(q: usize, k: usize, dp: i32, bk: i32, s: usize, iters: i32, shuf: i32): void {
  if (!ASC_FEATURE_RELAXED_SIMD) return;
  if (shuf) qkBlock<i8, SplatByShuffle>(q, k, dp, bk, s, iters);
  else qkBlock<i8, SplatByLoad>(q, k, dp, bk, s, iters);
}

export function bench_qk_f32(q: usize, k: usize, dp: i32, bk: i32, s: usize, iters: i32, shuf: i32): void {
  if (shuf) qkBlock<f32, SplatByShuffle>(q, k, dp, bk, s, iters);
  else qkBlock<f32, SplatByLoad>(q, k, dp, bk, s, iters);
}

/** O[4][dp] += P[bk][4] V[bk][dp], `iters` times: 4 * bk * dp MACs each. */
export function bench_pv(o: usize, p: usize, v: usize, dp: i32, bk: i32, alpha: usize, iters: i32, shuf: i32): void {
  const a = load<v128>(alpha);
  for (let it = 0; it < iters; it++) {
    if (shuf) pv_4x8<SplatByShuffle, ValuesF32>(o, <usize>dp << 2, p, v, <usize>dp << 2, bk, dp, a);
    else pv_4x8<SplatByLoad, ValuesF32>(o, <usize>dp << 2, p, v, <usize>dp << 2, bk, dp, a);
  }
}

/** exp2 over n floats in place (n a multiple of 4), `iters` times. */
export function bench_exp2(x: usize, n: i32, iters: i32): void {
  for (let it = 0; it < iters; it++) {
    for (let i = 0; i < n; i += 4) {
      const o = x + (<usize>i << 2);
      store<v128>(o, exp2v(f32x4.sub(load<v128>(o), f32x4.splat(0.5))));
    }
  }
}

// Each accumulator is fed back into its own product, so no engine can hoist a loop-invariant
// product out of the loop; values may wander, which costs SIMD nothing. Twelve f32 chains cover
// the multiply-add latency; the integer chains are shorter-latency and use eight.

/** f32 multiply then add, 12 chains: 48 lane MACs per iteration. */
export function peak_f32_muladd(iters: i32, seed: f32): f32 {
  const x = f32x4.splat(seed);
  let a = f32x4.splat(0), b = a, c = a, d = a, e = a, f = a, g = a, h = a, i = a, j = a, k = a, l = a;
  for (let n = 0; n < iters; n++) {
    a = f32x4.add(a, f32x4.mul(a, x)); b = f32x4.add(b, f32x4.mul(b, x)); c = f32x4.add(c, f32x4.mul(c, x));
    d = f32x4.add(d, f32x4.mul(d, x)); e = f32x4.add(e, f32x4.mul(e, x)); f = f32x4.add(f, f32x4.mul(f, x));
    g = f32x4.add(g, f32x4.mul(g, x)); h = f32x4.add(h, f32x4.mul(h, x)); i = f32x4.add(i, f32x4.mul(i, x));
    j = f32x4.add(j, f32x4.mul(j, x)); k = f32x4.add(k, f32x4.mul(k, x)); l = f32x4.add(l, f32x4.mul(l, x));
  }
  return f32x4.extract_lane(f32x4.add(f32x4.add(f32x4.add(f32x4.add(a, b), f32x4.add(c, d)), f32x4.add(f32x4.add(e, f), f32x4.add(g, h))), f32x4.add(f32x4.add(i, j), f32x4.add(k, l))), 0);
}

/** The kernels' multiply-add (fused in the relaxed module), 12 chains: 48 lane MACs per iteration. */
export function peak_f32_madd(iters: i32, seed: f32): f32 {
  const x = f32x4.splat(seed);
  let a = f32x4.splat(0), b = a, c = a, d = a, e = a, f = a, g = a, h = a, i = a, j = a, k = a, l = a;
  for (let n = 0; n < iters; n++) {
    a = madd(a, x, a); b = madd(b, x, b); c = madd(c, x, c); d = madd(d, x, d); e = madd(e, x, e); f = madd(f, x, f);
    g = madd(g, x, g); h = madd(h, x, h); i = madd(i, x, i); j = madd(j, x, j); k = madd(k, x, k); l = madd(l, x, l);
  }
  return f32x4.extract_lane(f32x4.add(f32x4.add(f32x4.add(f32x4.add(a, b), f32x4.add(c, d)), f32x4.add(f32x4.add(e, f), f32x4.add(g, h))), f32x4.add(f32x4.add(i, j), f32x4.add(k, l))), 0);
}

@inline function extendDot(a: v128, yl: v128, yh: v128): v128 {
  return i32x4.add(a, i32x4.add(
    i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(a), yl), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(a), yh)));
}

/** i8 codes sign-extended to i16, i32x4.dot_i16x8_s, add: 8 chains of 16 MACs per iteration. */
export function peak_i8_extend_dot(iters: i32, seed: i32): i32 {
  const yl = i16x8.splat(<i16>seed), yh = i16x8.splat(<i16>(seed + 3));
  let a = i32x4.splat(seed), b = a, c = a, d = a, e = a, f = a, g = a, h = a;
  for (let i = 0; i < iters; i++) {
    a = extendDot(a, yl, yh); b = extendDot(b, yl, yh); c = extendDot(c, yl, yh); d = extendDot(d, yl, yh);
    e = extendDot(e, yl, yh); f = extendDot(f, yl, yh); g = extendDot(g, yl, yh); h = extendDot(h, yl, yh);
  }
  return i32x4.extract_lane(sum8(a, b, c, d, e, f, g, h), 0);
}

@inline function dot16(a: v128, y: v128): v128 {
  return i32x4.add(a, i32x4.dot_i16x8_s(a, y));
}

/** i32x4.dot_i16x8_s and add on i16 operands (the baseline QK mix): 8 chains of 8 MACs per iteration. */
export function peak_i16_dot(iters: i32, seed: i32): i32 {
  const y = i16x8.splat(<i16>seed);
  let a = i32x4.splat(seed), b = a, c = a, d = a, e = a, f = a, g = a, h = a;
  for (let i = 0; i < iters; i++) {
    a = dot16(a, y); b = dot16(b, y); c = dot16(c, y); d = dot16(d, y);
    e = dot16(e, y); f = dot16(f, y); g = dot16(g, y); h = dot16(h, y);
  }
  return i32x4.extract_lane(sum8(a, b, c, d, e, f, g, h), 0);
}

@inline function relaxedDotAdd(a: v128, y: v128): v128 {
  return i32x4.relaxed_dot_i8x16_i7x16_add_s(a, y, a);
}

@inline function relaxedDotI16(a: v128, y: v128, ones: v128): v128 {
  return i32x4.add(a, i32x4.dot_i16x8_s(i16x8.relaxed_dot_i8x16_i7x16_s(a, y), ones));
}

/** i32x4.relaxed_dot_i8x16_i7x16_add_s, 8 chains of 16 MACs per iteration (relaxed module only). */
export function peak_relaxed_dot_add(iters: i32, seed: i32): i32 {
  if (!ASC_FEATURE_RELAXED_SIMD) return 0;
  const y = i8x16.splat(<i8>(seed & 127));
  let a = i32x4.splat(seed), b = a, c = a, d = a, e = a, f = a, g = a, h = a;
  for (let i = 0; i < iters; i++) {
    a = relaxedDotAdd(a, y); b = relaxedDotAdd(b, y); c = relaxedDotAdd(c, y); d = relaxedDotAdd(d, y);
    e = relaxedDotAdd(e, y); f = relaxedDotAdd(f, y); g = relaxedDotAdd(g, y); h = relaxedDotAdd(h, y);
  }
  return i32x4.extract_lane(sum8(a, b, c, d, e, f, g, h), 0);
}

/** The relaxed QK mix: i16x8 i8 x i7 dot widened by a dot with ones, 8 chains of 16 MACs per iteration. */
export function peak_relaxed_dot_i16(iters: i32, seed: i32): i32 {
  if (!ASC_FEATURE_RELAXED_SIMD) return 0;
  const y = i8x16.splat(<i8>(seed & 127)), ones = i16x8.splat(1);
  let a = i32x4.splat(seed), b = a, c = a, d = a, e = a, f = a, g = a, h = a;
  for (let i = 0; i < iters; i++) {
    a = relaxedDotI16(a, y, ones); b = relaxedDotI16(b, y, ones); c = relaxedDotI16(c, y, ones); d = relaxedDotI16(d, y, ones);
    e = relaxedDotI16(e, y, ones); f = relaxedDotI16(f, y, ones); g = relaxedDotI16(g, y, ones); h = relaxedDotI16(h, y, ones);
  }
  return i32x4.extract_lane(sum8(a, b, c, d, e, f, g, h), 0);
}

/** exp2 on register values, 8 chains of 4 lanes per iteration. */
export function peak_exp2(iters: i32, seed: f32): f32 {
  let a = f32x4.splat(-seed), b = f32x4.splat(-seed * 2), c = f32x4.splat(-seed * 3), d = f32x4.splat(-seed * 4);
  let e = f32x4.splat(-seed * 5), f = f32x4.splat(-seed * 6), g = f32x4.splat(-seed * 7), h = f32x4.splat(-seed * 8);
  for (let i = 0; i < iters; i++) {
    a = f32x4.neg(exp2v(a)); b = f32x4.neg(exp2v(b)); c = f32x4.neg(exp2v(c)); d = f32x4.neg(exp2v(d));
    e = f32x4.neg(exp2v(e)); f = f32x4.neg(exp2v(f)); g = f32x4.neg(exp2v(g)); h = f32x4.neg(exp2v(h));
  }
  return f32x4.extract_lane(f32x4.add(f32x4.add(f32x4.add(a, b), f32x4.add(c, d)), f32x4.add(f32x4.add(e, f), f32x4.add(g, h))), 0);
}
