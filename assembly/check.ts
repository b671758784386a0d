// Input check, run in parallel before any stage: NaN or Infinity in Q, K or V would poison a whole
// block's quantization scale, so such a call is refused. Only the flag is found here; TypeScript
// then finds the first bad index for its error message.
import { P } from './params';
import { param, ptr } from './simd';

const EXP = i32x4.splat(0x7f800000);
/** Bytes of one tile of the check. */
const TILE: usize = 1 << 16;

@inline function tilesOf(bytes: usize): i32 {
  return <i32>((bytes + TILE - 1) / TILE);
}

@inline function qBytes(p: usize): usize {
  return <usize>param(p, P.B) * param(p, P.H) * param(p, P.NQB) * param(p, P.BQ) * param(p, P.DP) << 2;
}

@inline function kBytes(p: usize): usize {
  return <usize>param(p, P.B) * param(p, P.HKV) * param(p, P.NKB) * param(p, P.BK) * param(p, P.DP) << 2;
}

/** Tiles of check_finite: the Q buffer's, then K's, then V's (when the call has V). */
export function check_finite_tiles(p: usize): i32 {
  return tilesOf(qBytes(p)) + tilesOf(kBytes(p)) * (ptr(p, P.V) != 0 ? 2 : 1);
}

/** Sets P.NONFINITE if tiles [t0, t1) hold a NaN or an Infinity. */
export function check_finite(p: usize, t0: i32, t1: i32): void {
  const tq = tilesOf(qBytes(p)), tk = tilesOf(kBytes(p));
  for (let t = t0; t < t1; t++) {
    let base = ptr(p, P.Q), size = qBytes(p), i = t;
    if (i >= tq) {
      i -= tq;
      base = ptr(p, P.K);
      size = kBytes(p);
      if (i >= tk) {
        i -= tk;
        base = ptr(p, P.V);
      }
    }
    const start = <usize>i * TILE, end = min(start + TILE, size);
    let bad = i32x4.splat(0);
    // An exponent field of all ones is Infinity or NaN.
    for (let o = start; o < end; o += 16) bad = v128.or(bad, i32x4.eq(v128.and(load<v128>(base + o), EXP), EXP));
    if (v128.any_true(bad)) store<i32>(p + (<usize>P.NONFINITE << 2), 1);
  }
}
