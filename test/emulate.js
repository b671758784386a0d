// An FP64 emulation of the sparse path given a block mask: Stage 0 (K smoothing, per-block
// symmetric INT8 codes) and Stage 2 (attention over the selected blocks) as ALGORITHM.md states
// them, without PV skipping. Written from the rules, not from the kernels, so that a kernel's slips
// stand out from its FP32 rounding. Also inputs whose INT8 codes no FP32 rounding can change.
import { rng, gaussian, toHND } from './helpers.js';

/** [B, H, N, D] of a tensor in `layout`, 3-d dims meaning B = 1. */
function shapeOf(t, layout = 'HND') {
  const [B, a, b, D] = t.dims.length === 3 ? [1, ...t.dims] : t.dims;
  return layout === 'NHD' ? [B, b, a, D] : [B, a, b, D];
}

/** Round half away from zero, the reference's rounding of codes. */
const roundAway = (x) => Math.sign(x) * Math.floor(Math.abs(x) + 0.5);

/**
 * Per-block symmetric INT8 codes of `rows` rows of D channels starting at row `r0` of `x` (one head,
 * rows of D): { codes, d } with d = max|block| / 127; d = 0 and codes 0 for an all-zero block.
 */
function quantizeBlock(x, r0, rows, D) {
  let amax = 0;
  for (let i = r0 * D; i < (r0 + rows) * D; i++) amax = Math.max(amax, Math.abs(x[i]));
  const d = amax / 127, codes = new Float64Array(rows * D);
  if (amax > 0) for (let i = 0; i < rows * D; i++) codes[i] = roundAway(x[r0 * D + i] / d);
  return { codes, d };
}

/**
 * Sparse attention with block mask `mask` ({ data, dims: [B, H, nq, nk], blockQ, blockK }) and
 * options { causal, scale, layout, smoothK }: the output as a Float64Array in HND order. A row that
 * sees no key outputs exactly 0.
 */
export function emulateSparse(q, k, v, mask, { causal = false, scale, layout = 'HND', smoothK = true } = {}) {
  const [B, H, Nq, D] = shapeOf(q, layout), [, Hkv, Nk] = shapeOf(k, layout);
  const { blockQ, blockK } = mask, nq = mask.dims[2], nk = mask.dims[3], group = H / Hkv;
  const sc = scale ?? 1 / Math.sqrt(D);
  const Q = toHND(q, layout), K = Float64Array.from(toHND(k, layout)), V = toHND(v, layout);

  const kBlocks = [];
  for (let bh = 0; bh < B * Hkv; bh++) {
    const head = K.subarray(bh * Nk * D, (bh + 1) * Nk * D);
    if (smoothK) {
      const mean = new Float64Array(D);
      for (let n = 0; n < Nk; n++) for (let d = 0; d < D; d++) mean[d] += head[n * D + d] / Nk;
      for (let n = 0; n < Nk; n++) for (let d = 0; d < D; d++) head[n * D + d] -= mean[d];
    }
    for (let j = 0; j < nk; j++) kBlocks.push(quantizeBlock(head, j * blockK, Math.min(blockK, Nk - j * blockK), D));
  }

  const out = new Float64Array(B * H * Nq * D), s = new Float64Array(Nk), keys = new Int32Array(Nk);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const bhk = b * Hkv + Math.floor(h / group), qHead = Q.subarray((b * H + h) * Nq * D, (b * H + h + 1) * Nq * D);
      for (let i = 0; i < nq; i++) {
        const rows = Math.min(blockQ, Nq - i * blockQ), qb = quantizeBlock(qHead, i * blockQ, rows, D);
        const selected = mask.data.subarray(((b * H + h) * nq + i) * nk, ((b * H + h) * nq + i + 1) * nk);
        for (let r = 0; r < rows; r++) {
          const n = i * blockQ + r, last = causal ? Math.min(Nk - 1, n + Nk - Nq) : Nk - 1;
          let count = 0, m = -Infinity;
          for (let j = 0; j < nk; j++) {
            if (!selected[j]) continue;
            const kb = kBlocks[bhk * nk + j];
            for (let key = j * blockK; key <= Math.min(last, (j + 1) * blockK - 1); key++) {
              let dot = 0;
              for (let d = 0; d < D; d++) dot += qb.codes[r * D + d] * kb.codes[(key - j * blockK) * D + d];
              s[count] = dot * qb.d * kb.d * sc;
              m = Math.max(m, s[count]);
              keys[count++] = key;
            }
          }
          const o = ((b * H + h) * Nq + n) * D;
          let l = 0;
          for (let c = 0; c < count; c++) {
            const p = Math.exp(s[c] - m), vo = (bhk * Nk + keys[c]) * D;
            l += p;
            for (let d = 0; d < D; d++) out[o + d] += p * V[vo + d];
          }
          if (l > 0) for (let d = 0; d < D; d++) out[o + d] /= l;
        }
      }
    }
  }
  return out;
}

// Test inputs. A value within FP32 rounding (about 1e-5 of a code) of a rounding tie may take either
// code in an FP32 kernel, and one changed code moved outputs by 3e-4 of max|v| in our runs, 100x
// the kernels' FP32 error: on plain Gaussian inputs with smoothK that happens in most calls.
// So the inputs below are built from their codes: c + u steps with c an integer and |u| <= 0.4,
// i.e. at least 0.1 of a code from any tie, which no FP32 rounding of the inputs, the K means or
// the block maxima comes near.

/** An integer code about N(0, (limit / 3)^2) clipped to +-limit, plus an offset of at most `off`. */
const offTie = (z, r, limit = 126, off = 0.4) => Math.max(-limit, Math.min(limit, Math.round((limit / 3) * z))) + (2 * r() - 1) * off;

/**
 * Q data, HND [B, H, N, D], of standard deviation about sigma: each blockQ block holds one +-127
 * code and its other values sit off ties; about one block in ten is all zero (the max == 0 guard).
 */
export function tieFreeQ([B, H, N, D], blockQ, sigma, seed) {
  const r = rng(seed), z = gaussian(B * H * N * D, seed + 1), out = new Float32Array(B * H * N * D);
  for (let bh = 0; bh < B * H; bh++) {
    for (let r0 = 0; r0 < N; r0 += blockQ) {
      if (r() < 0.1) continue;
      const at = (bh * N + r0) * D, size = Math.min(blockQ, N - r0) * D, step = (sigma / 42) * (0.5 + r());
      for (let x = at; x < at + size; x++) out[x] = offTie(z[x], r) * step;
      out[at + Math.floor(r() * size)] = (r() < 0.5 ? -127 : 127) * step;
    }
  }
  return out;
}

/**
 * K data, HND [B, H, N, D], such that K' = K - mean_n(K) sits off ties in every blockK block. K'
 * sums to exactly zero: its rows come in pairs x, -x at random places, and when N is odd three rows
 * x, y, -(x + y) of the first block (halved codes and offsets, so the sum stays off ties) complete
 * them. Every block holds a +-127 code (set in a pair or triple, keeping the sum zero), so all
 * blocks of a head share one step and a pair split over two blocks is off ties in both. No row is
 * zero (but for N = 1): FP32 noise around zero would have a direction of its own in Stage 1's
 * self-similarity. `bias` (standard deviation of a per-channel offset of every row) must be 0
 * without smoothK, since only the smoothed codes are off ties.
 */
export function tieFreeK([B, H, N, D], blockK, sigma, bias, seed) {
  const r = rng(seed), z = gaussian(B * H * N * D, seed + 1), offset = gaussian(B * H * D, seed + 2, bias);
  const out = new Float32Array(B * H * N * D), row = new Float64Array(N * D);
  const shuffled = (rows) => {
    for (let i = rows.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [rows[i], rows[j]] = [rows[j], rows[i]];
    }
    return rows;
  };
  for (let bh = 0; bh < B * H; bh++) {
    const step = (sigma / 42) * (0.5 + r()), gz = (n, d) => z[(bh * N + n) * D + d];
    const head = shuffled(Array.from({ length: Math.min(blockK, N) }, (_, i) => i));
    const triple = N % 2 === 1 && N > 1 ? head.slice(0, 3) : [];
    const rest = shuffled(Array.from({ length: N }, (_, i) => i).filter((n) => !triple.includes(n)));
    const groups = [...(triple.length ? [triple] : []), ...Array.from({ length: rest.length >> 1 }, (_, p) => rest.slice(2 * p, 2 * p + 2))];
    const groupOf = new Array(N).fill(null);
    row.fill(0);
    for (const g of groups) {
      for (const n of g) groupOf[n] = g;
      for (let d = 0; d < D; d++) {
        const [limit, off] = g.length === 3 ? [63, 0.2] : [126, 0.4];
        const x = offTie(gz(g[0], d), r, limit, off) * step, y = g.length === 3 ? offTie(gz(g[1], d), r, limit, off) * step : 0;
        row[g[0] * D + d] = x;
        if (g.length === 3) row[g[1] * D + d] = y;
        row[g[g.length - 1] * D + d] = -(x + y);
      }
    }
    for (let r0 = 0; r0 < N; r0 += blockK) {
      const n = r0 + Math.floor(r() * Math.min(blockK, N - r0)), g = groupOf[n];
      if (!g) continue;
      const others = g.filter((m) => m !== n), d = Math.floor(r() * D), x = (r() < 0.5 ? -127 : 127) * step;
      row[n * D + d] = x;
      row[others[0] * D + d] = -x;
      if (others.length === 2) row[others[1] * D + d] = 0;
    }
    for (let n = 0; n < N; n++) for (let d = 0; d < D; d++) out[(bh * N + n) * D + d] = row[n * D + d] + offset[bh * D + d];
  }
  return out;
}
