// Stage 2: block-sparse attention with FlashAttention's online softmax in the log2 domain, skipping
// the exponentials and P.V of a key block whose row maxima say it is negligible. The same driver,
// with FP32 QK and every allowed block, is the dense baseline (attend_dense).
//
// Loop order per query block: key blocks outer, groups of 4 query rows inner, so a key block's K
// codes and V rows stay in L1 while every row group of the query block passes over them. The
// pvThreshold decision is taken per such group of 4 rows (the reference decides per GPU warp).
import { P } from './params';
import { param, paramf, ptr, exp2v, exp2s, hsum, hmax, zeroRow } from './simd';
import { qk_4x8, pv_4x8, qkSteps, qRowBytes, kGroupBytes } from './microkernels';
import { lastKeyBlock } from './predict';

const ROWS = 4;

/** Bytes of per-worker scratch that attention needs. */
export function attention_scratch_bytes(bq: i32, bk: i32): i32 {
  return ROWS * bk * 4 + bq * 8 + ROWS * 8;
}

@inline function attend<T>(p: usize, t0: i32, t1: i32, worker: i32, sparse: bool): void {
  const dp = param(p, P.DP), h = param(p, P.H), hkv = param(p, P.HKV);
  const nq = param(p, P.NQ), nk = param(p, P.NK), bq = param(p, P.BQ), bk = param(p, P.BK);
  const nqb = param(p, P.NQB), nkb = param(p, P.NKB), causal = param(p, P.CAUSAL) != 0;
  const lambda: f32 = sparse ? paramf(p, P.PV_THRESHOLD) : Infinity;
  const shift = nk - nq;

  const s = ptr(p, P.SCRATCH) + <usize>worker * param(p, P.SCRATCH_STRIDE);
  const sStride = <usize>bk << 2;
  const mrow = s + <usize>ROWS * sStride, lrow = mrow + (<usize>bq << 2);
  const alpha = lrow + (<usize>bq << 2), mnew = alpha + ROWS * 4;

  const rowBytes = <usize>dp << 2;
  const qStride = qRowBytes<T>(dp), gStride = kGroupBytes<T>(dp), steps = qkSteps<T>(dp);
  const qBase = isFloat<T>() ? ptr(p, P.Q) : ptr(p, P.QC);
  const kBase = isFloat<T>() ? ptr(p, P.KF) : ptr(p, P.KC);

  for (let t = t0; t < t1; t++) {
    const bh = t / nqb, i = t - bh * nqb;
    const bhk = (bh / h) * hkv + (bh % h) / (h / hkv);
    const row0 = i * bq, rows = min(bq, nq - row0);
    const out = ptr(p, P.OUT) + <usize>t * bq * rowBytes;
    const q = qBase + <usize>t * bq * qStride;
    const corr = ptr(p, P.QSUM) + (<usize>t * bq << 2);
    const qs: f32 = isFloat<T>() ? paramf(p, P.QK_MUL) : load<f32>(ptr(p, P.QSCALE) + (<usize>t << 2));
    const maskRow = ptr(p, P.MASK) + <usize>t * nkb;
    zeroRow(out, bq * dp);
    for (let r = 0; r < bq; r++) {
      store<f32>(mrow + (<usize>r << 2), -Infinity);
      store<f32>(lrow + (<usize>r << 2), 0);
    }

    const last = lastKeyBlock(p, i);
    for (let j = 0; j <= last; j++) {
      if (sparse && load<u8>(maskRow + j) == 0) continue;
      const key0 = j * bk, kt = bhk * nkb + j;
      const kp = kBase + <usize>kt * bk * (gStride >> 2);
      const vp = ptr(p, P.V) + <usize>kt * bk * rowBytes;
      const mul = f32x4.splat(isFloat<T>() ? qs : qs * load<f32>(ptr(p, P.KSCALE) + (<usize>kt << 2)));
      const valid = min(bk, nk - key0);

      for (let rg = 0; rg < rows; rg += ROWS) {
        for (let g = 0; g < bk; g += 8) {
          qk_4x8<T>(q + <usize>rg * qStride, qStride, kp + (<usize>(g >> 2)) * gStride, steps, gStride,
            corr + (<usize>rg << 2), mul, s + (<usize>g << 2), sStride);
        }
        let skip = true;
        for (let rr = 0; rr < ROWS; rr++) {
          const srow = s + <usize>rr * sStride;
          let visible = valid;
          if (causal) visible = min(visible, row0 + rg + rr + shift + 1 - key0);
          for (let k = max(visible, 0); k < bk; k++) store<f32>(srow + (<usize>k << 2), -Infinity);
          let mv = f32x4.splat(-Infinity);
          for (let k = 0; k < bk; k += 4) mv = f32x4.pmax(mv, load<v128>(srow + (<usize>k << 2)));
          const ml = hmax(mv);
          const mo = load<f32>(mrow + (<usize>(rg + rr) << 2));
          const mn = max(mo, ml);
          store<f32>(mnew + (<usize>rr << 2), mn);
          // NaN (a row with nothing visible yet) compares false: such a row never blocks a skip.
          if (rg + rr < rows && ml - mn + lambda > 0) skip = false;
        }
        if (skip) continue;
        for (let rr = 0; rr < ROWS; rr++) {
          const srow = s + <usize>rr * sStride;
          const mo = load<f32>(mrow + (<usize>(rg + rr) << 2));
          const mn = load<f32>(mnew + (<usize>rr << 2));
          const base: f32 = mn == -Infinity ? 0 : mn;
          const a = exp2s(mo - base);
          const b = f32x4.splat(base);
          let sum = f32x4.splat(0);
          for (let k = 0; k < bk; k += 4) {
            const e = exp2v(f32x4.sub(load<v128>(srow + (<usize>k << 2)), b));
            store<v128>(srow + (<usize>k << 2), e);
            sum = f32x4.add(sum, e);
          }
          const lp = lrow + (<usize>(rg + rr) << 2);
          store<f32>(lp, load<f32>(lp) * a + hsum(sum));
          store<f32>(mrow + (<usize>(rg + rr) << 2), mn);
          store<f32>(alpha + (<usize>rr << 2), a);
        }
        pv_4x8(out + <usize>rg * rowBytes, rowBytes, s, sStride, vp, rowBytes, valid, dp, alpha);
      }
    }

    for (let r = 0; r < rows; r++) {
      const l = load<f32>(lrow + (<usize>r << 2));
      const inv = f32x4.splat(l > 0 ? <f32>1 / l : 0);
      const o = out + <usize>r * rowBytes;
      for (let d = 0; d < dp; d += 4) store<v128>(o + (<usize>d << 2), f32x4.mul(load<v128>(o + (<usize>d << 2)), inv));
    }
  }
}

/** Stage 2 over the block mask with INT8 QK (P.QK_MODE picks the dot): tile = (b * H + h) * NQB + i. */
export function attend_sparse(p: usize, t0: i32, t1: i32, worker: i32): void {
  if (param(p, P.QK_MODE)) attend<i8>(p, t0, t1, worker, true);
  else attend<i16>(p, t0, t1, worker, true);
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

/** Dense FP32 flash attention (no mask, no skipping): tile = (b * H + h) * NQB + i. */
export function attend_dense(p: usize, t0: i32, t1: i32, worker: i32): void {
  attend<f32>(p, t0, t1, worker, false);
}
