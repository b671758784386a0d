// Shared by the tests (and the demo and benchmarks): deterministic inputs, an FP64 attention
// reference, a plain TypeScript-free restatement of Stage 1, the reference cases, and metrics.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as assert from 'uvu/assert';
import { f16Bytes, l1, configOptions } from './reference.js';
import { detect } from '../dist/src/loader.js';
import { rng, gaussian, videoLike } from '../dist/src/inputs.js';

export { l1, rng, gaussian, videoLike };

const here = path.dirname(fileURLToPath(import.meta.url));
/** The reference cases kept in the repository (fixtures/README.md); the tests need every one. */
export const FIXTURE_DIR = path.resolve(here, '../fixtures/reference');
export const FIXTURE_CASES = ['ragged_1000', 'stories260K_L0', 'stories260K_L1', 'stories260K_L2', 'stories260K_L3', 'stories260K_L4', 'video_4x32x32'];
/** The project's full set, where it is at hand: its other cases are run too. */
const EXTRA_DIR = process.env.SPARGE_REFERENCE ?? path.resolve(here, '../../shared/reference');
export const MODEL_FILE = path.resolve(here, '../fixtures/models/stories260K.bin');

/** Node flags for relaxed SIMD in a child process: Node 20 needs one, Node 24 refuses it as unknown. */
export const RELAXED_FLAGS = detect().relaxedSimd ? [] : ['--experimental-wasm-relaxed-simd'];

export const tensor = (data, dims) => ({ data, dims });

/** RoPE-rotated random q/k (as an LLM layer sees them), for causal tests. */
export function ropeLike(H, N, D, seed) {
  const rot = (x) => {
    for (let h = 0; h < H; h++) {
      for (let n = 0; n < N; n++) {
        for (let i = 0; i + 1 < D; i += 2) {
          const ang = n * Math.pow(10000, -i / D);
          const o = (h * N + n) * D + i, a = x[o], b = x[o + 1];
          x[o] = a * Math.cos(ang) - b * Math.sin(ang);
          x[o + 1] = a * Math.sin(ang) + b * Math.cos(ang);
        }
      }
    }
    return x;
  };
  return { q: rot(gaussian(H * N * D, seed)), k: rot(gaussian(H * N * D, seed + 1)), v: gaussian(H * N * D, seed + 2) };
}

/** Reads element (b, h, n, d) of a tensor in either layout, as dims [B, H, N, D]. */
function accessor(t, layout) {
  const dims = t.dims.length === 3 ? [1, ...t.dims] : t.dims;
  const [B, a, b, D] = dims;
  const [H, N] = layout === 'NHD' ? [b, a] : [a, b];
  const at = layout === 'NHD' ? (bb, h, n) => ((bb * N + n) * H + h) * D : (bb, h, n) => ((bb * H + h) * N + n) * D;
  return { B, H, N, D, at };
}

/** FP64 dense attention, [B, H, Nq, D] HND output (bottom-right causal). */
export function attentionF64(q, k, v, { causal = false, scale, layout = 'HND' } = {}) {
  const Q = accessor(q, layout), K = accessor(k, layout);
  const { B, H, N: Nq, D } = Q, Nk = K.N, g = H / K.H;
  const sc = scale ?? 1 / Math.sqrt(D);
  const out = new Float64Array(B * H * Nq * D);
  const s = new Float64Array(Nk), acc = new Float64Array(D), qi = new Float64Array(D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / g);
      for (let i = 0; i < Nq; i++) {
        const qo = Q.at(b, h, i);
        for (let d = 0; d < D; d++) qi[d] = q.data[qo + d];
        const last = causal ? Math.min(Nk - 1, i + Nk - Nq) : Nk - 1;
        let m = -Infinity;
        for (let j = 0; j <= last; j++) {
          const ko = K.at(b, hk, j);
          let dot = 0;
          for (let d = 0; d < D; d++) dot += qi[d] * k.data[ko + d];
          s[j] = dot * sc;
          if (s[j] > m) m = s[j];
        }
        acc.fill(0);
        let l = 0;
        for (let j = 0; j <= last; j++) {
          const p = Math.exp(s[j] - m);
          l += p;
          const vo = K.at(b, hk, j);
          for (let d = 0; d < D; d++) acc[d] += p * v.data[vo + d];
        }
        const o = ((b * H + h) * Nq + i) * D;
        for (let d = 0; d < D; d++) out[o + d] = l > 0 ? acc[d] / l : 0;
      }
    }
  }
  return out;
}

/** Converts an output tensor in `layout` to HND order for comparisons. */
export function toHND(t, layout) {
  if (layout === 'HND') return t.data;
  const A = accessor(t, layout), out = new Float32Array(t.data.length);
  for (let b = 0; b < A.B; b++) for (let h = 0; h < A.H; h++) for (let n = 0; n < A.N; n++) {
    out.set(t.data.subarray(A.at(b, h, n), A.at(b, h, n) + A.D), ((b * A.H + h) * A.N + n) * A.D);
  }
  return out;
}

export function cosine(out, ref) {
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < ref.length; i++) { ab += out[i] * ref[i]; aa += out[i] * out[i]; bb += ref[i] * ref[i]; }
  return ab / Math.sqrt(aa * bb);
}

export function maxAbsDiff(a, b) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/**
 * Stage 1 restated plainly in FP64 from ALGORITHM.md, for HND single-batch-or-more inputs. Returns
 * { mask, phat } with phat the pooled probabilities [B, H, nq, nk] that the masks are compared on.
 * Self-similarity uses the O(n^2) pairwise definition, to check the kernels' O(n) identity.
 */
export function stage1F64(q, k, o) {
  const Q = accessor(q, 'HND'), K = accessor(k, 'HND');
  const { B, H, N: Nq, D } = Q, Hkv = K.H, Nk = K.N, g = H / Hkv;
  const { blockQ = 64, blockK = 64, causal = false, simThreshold = -0.1, attentionSink = false, smoothK = true } = o;
  const scale = o.scale ?? 1 / Math.sqrt(D);
  const nq = Math.ceil(Nq / blockQ), nk = Math.ceil(Nk / blockK);
  const pool = (t, acc, b, h, r0, rows, mean) => {
    const bar = new Float64Array(D), units = [];
    for (let r = r0; r < r0 + rows; r++) {
      const x = Array.from({ length: D }, (_, d) => t.data[acc.at(b, h, r) + d] - (mean ? mean[d] : 0));
      x.forEach((v, d) => { bar[d] += v / rows; });
      const nrm = Math.hypot(...x);
      units.push(nrm === 0 ? null : x.map((v) => v / nrm));
    }
    let sim = 0;
    for (const a of units) for (const c of units) if (a && c) sim += a.reduce((s, v, d) => s + v * c[d], 0);
    return { bar, sim: sim / (rows * rows) };
  };
  const mask = new Uint8Array(B * H * nq * nk), phat = new Float64Array(B * H * nq * nk);
  for (let b = 0; b < B; b++) {
    const kb = [];
    for (let hk = 0; hk < Hkv; hk++) {
      const mean = new Float64Array(D);
      if (smoothK) for (let n = 0; n < Nk; n++) for (let d = 0; d < D; d++) mean[d] += k.data[K.at(b, hk, n) + d] / Nk;
      kb.push(Array.from({ length: nk }, (_, j) => pool(k, K, b, hk, j * blockK, Math.min(blockK, Nk - j * blockK), mean)));
    }
    // Each (head, query block)'s pooled probabilities first: with groupSelection a kv head's query
    // heads rank its blocks by their mean.
    const probs = [], qsims = [];
    for (let h = 0; h < H; h++) {
      const keys = kb[Math.floor(h / g)];
      probs.push([]);
      qsims.push([]);
      for (let i = 0; i < nq; i++) {
        const qb = pool(q, Q, b, h, i * blockQ, Math.min(blockQ, Nq - i * blockQ), null);
        const lastKey = Math.min((i + 1) * blockQ, Nq) - 1 + Nk - Nq;
        const s = keys.map((kk, j) => ((!causal || j * blockK <= lastKey) && kk.sim > simThreshold
          ? scale * qb.bar.reduce((a, v, d) => a + v * kk.bar[d], 0) : -Infinity));
        const m = Math.max(...s);
        const e = s.map((x) => (m === -Infinity ? 0 : Math.exp(x - m)));
        const sum = e.reduce((a, x) => a + x, 0);
        probs[h].push(e.map((x) => (sum > 0 ? x / sum : 0)));
        qsims[h].push(qb.sim);
      }
    }
    for (let h = 0; h < H; h++) {
      const keys = kb[Math.floor(h / g)];
      const group = o.groupSelection ? Array.from({ length: g }, (_, r) => Math.floor(h / g) * g + r) : [h];
      for (let i = 0; i < nq; i++) {
        const lastKey = Math.min((i + 1) * blockQ, Nq) - 1 + Nk - Nq;
        const allowed = (j) => !causal || j * blockK <= lastKey;
        const p = probs[h][i];
        const rank = p.map((_, j) => group.reduce((a, r) => a + probs[r][i][j] / group.length, 0));
        const order = rank.map((x, j) => j).sort((a, c) => rank[c] - rank[a] || a - c);
        let keep;
        if (o.cdfThreshold !== undefined) {
          keep = 0;
          let run = 0;
          // cdfThreshold 1 keeps every block, as exact arithmetic would.
          if (o.cdfThreshold >= 1) keep = nk;
          while (keep < nk && (run += rank[order[keep]]) <= o.cdfThreshold) keep++;
          keep = Math.max(1, keep);
        } else {
          keep = Math.max(1, Math.floor((o.topk ?? 0.5) * nk));
        }
        const row = ((b * H + h) * nq + i) * nk;
        for (let t = 0; t < keep; t++) mask[row + order[t]] = 1;
        for (let j = 0; j < nk; j++) {
          if (keys[j].sim <= simThreshold || qsims[h][i] <= simThreshold) mask[row + j] = 1;
          phat[row + j] = p[j];
        }
        if (attentionSink) mask[row] = 1;
        for (let j = 0; j < nk; j++) if (!allowed(j)) mask[row + j] = 0;
      }
    }
  }
  return { mask, phat, nq, nk };
}

/**
 * The comparison of ALGORITHM.md: per query-block row, the pooled mass each mask keeps; the share
 * of rows whose masses agree within tol, and both densities. Rows of a partial last query block
 * and columns of a partial last key block are left out (`edge`).
 */
export function compareMasks(a, b, phat, dims, { causal, Nq, Nk, blockQ, blockK, tol = 0.01, edge = true }) {
  const [B, H, nq, nk] = dims;
  const skipRow = edge && Nq % blockQ !== 0 ? nq - 1 : -1;
  const skipCol = edge && Nk % blockK !== 0 ? nk - 1 : -1;
  let rows = 0, agree = 0, selA = 0, selB = 0, allowed = 0, worst = 0;
  for (let bh = 0; bh < B * H; bh++) {
    for (let i = 0; i < nq; i++) {
      if (i === skipRow) continue;
      const lastKey = Math.min((i + 1) * blockQ, Nq) - 1 + Nk - Nq;
      // The reference forces a partial key block outside its top-k/CDF budget (its padded rows read
      // as NaN); `a` may spend a slot of its budget on it. Such rows are left out of the densities.
      // (A row that keeps every block spent no budget.)
      const row = a.subarray((bh * nq + i) * nk, (bh * nq + i + 1) * nk);
      const budgetDiffers = skipCol >= 0 && row[skipCol] === 1 && row.some((x, j) => x === 0 && !(causal && j * blockK > lastKey));
      let ma = 0, mb = 0;
      for (let j = 0; j < nk; j++) {
        if (j === skipCol || (causal && j * blockK > lastKey)) continue;
        const x = (bh * nq + i) * nk + j;
        if (!budgetDiffers) {
          allowed++;
          selA += a[x]; selB += b[x];
        }
        ma += a[x] * phat[x]; mb += b[x] * phat[x];
      }
      rows++;
      worst = Math.max(worst, Math.abs(ma - mb));
      if (Math.abs(ma - mb) <= tol) agree++;
    }
  }
  return { rowAgreement: agree / rows, densityA: selA / allowed, densityB: selB / allowed, worst };
}

export const readF16 = (file) => f16Bytes(fs.readFileSync(file));

const isCase = (dir, n) => fs.existsSync(path.join(dir, n, 'meta.json'));

/** The folder of each reference case: the repository's fixtures, then any others at hand. */
function caseDirs() {
  const missing = FIXTURE_CASES.filter((n) => !isCase(FIXTURE_DIR, n));
  if (missing.length) throw new Error(`fixtures/reference lacks ${missing.join(', ')}: the repository is incomplete`);
  const dirs = new Map(FIXTURE_CASES.map((n) => [n, path.join(FIXTURE_DIR, n)]));
  if (fs.existsSync(EXTRA_DIR)) {
    for (const n of fs.readdirSync(EXTRA_DIR)) if (!dirs.has(n) && isCase(EXTRA_DIR, n)) dirs.set(n, path.join(EXTRA_DIR, n));
  }
  return dirs;
}

export function referenceCases() {
  return [...caseDirs().keys()].sort();
}

/** One reference case: its meta, q/k/v as 3-d HND tensors, and per-config masks and outputs. */
export function loadCase(name) {
  const dir = caseDirs().get(name);
  if (!dir) throw new Error(`no reference case ${name} in fixtures/reference or ${EXTRA_DIR}`);
  const meta = JSON.parse(fs.readFileSync(path.join(dir, 'meta.json'), 'utf8'));
  const t = (f) => tensor(readF16(path.join(dir, `${f}.f16`)), meta.files[f]);
  const configs = meta.configs.map((c) => ({
    ...c,
    blockQ: c.BLKQ ?? meta.BLKQ,
    blockK: c.BLKK ?? meta.BLKK,
    mask: new Uint8Array(fs.readFileSync(path.join(dir, `mask_${c.name}.u8`))),
    maskDims: [1, ...meta.files[`mask_${c.name}`]],
    output: c.mask_only ? null : readF16(path.join(dir, `o_${c.name}.f16`)),
    options: configOptions(meta, c),
  }));
  return { meta, q: t('q'), k: t('k'), v: t('v'), configs };
}

/** Asserts that fn throws or rejects with an error of class Kind whose message matches pattern. */
export async function rejects(fn, Kind, pattern) {
  try {
    await fn();
  } catch (e) {
    assert.instance(e, Kind, `expected ${Kind.name}, got ${e?.constructor?.name}: ${e?.message}`);
    assert.match(e.message, pattern);
    return;
  }
  assert.unreachable(`expected a ${Kind.name} matching ${pattern}`);
}
