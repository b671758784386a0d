// Block selection for decode steps from a KV cache. One query row at position pos attends to keys
// [0, pos] (causal); the keys are cut in blocks of 64, the last block (holding pos) usually partial.
// Which Stage 1 block score picks the key blocks better at equal kept fraction:
//   mean-pooled  SpargeAttn's: scale * q . kbar_j, kbar_j the mean of block j's keys
//   Quest bound  Tang et al., ICML 2024: scale * sum_d max(q_d * kmin_jd, q_d * kmax_jd), with the
//                per-channel min and max of block j's keys (an upper bound of q . k in the block)
//   oracle       the exact attention mass of each block, the best any rule can do
// Rules: top-k f keeps the max(1, floor(f * nblocks)) blocks of highest score; CDF t takes the
// softmax of the scores (of the masses for the oracle) and keeps the smallest prefix, in descending
// order, whose cumulative probability exceeds t. The last block is always kept on top of the rule:
// rules choose among the blocks before it (nblocks counts it), and the CDF softmax is over those.
// SpargeAttn's forcing rule, as a variant of the mean-pooled score: blocks whose self-similarity
// (mean pairwise cosine of the block's keys less c, c the mean of the first 64 keys of that kv head,
// as |sum_a u_a|^2 / n^2 with u_a the unit vectors) is <= simThreshold are always kept, and take no
// part in the softmax or the top-k budget (as in SpargeAttn's Stage 1).
// Metric per (case, head, row): relative L1 of the output row restricted to the kept blocks
// (renormalized) against the exact row, sum|o_sparse - o_exact| / sum|o_exact|, FP64 throughout;
// mean over rows and heads, and the worst head (the head of highest mean). Kept fraction: kept
// blocks / nblocks (the partial last block counts as one), mean over rows; also kept keys / (pos + 1).
// For comparisons at equal kept fraction each score also runs a top-k sweep (f = 0.02 .. 1 in steps
// of 0.02), linearly interpolated in kept-block fraction.
// Inputs: every causal reference case (test/helpers.js referenceCases, loadCase); query rows at
// R positions evenly spaced over [N/2, N - 1] (all of them if fewer), every query head.
//   node bench/decode-selection.js [--rows 64]
// Prints a markdown table; writes bench/results/decode-selection.json and decode-selection.md.
// A "## Conclusion" section at the end of an existing decode-selection.md is carried over.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCase, referenceCases } from '../test/helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const argAt = process.argv.indexOf('--rows');
const ROWS = argAt < 0 ? 64 : Number(process.argv[argAt + 1]);
if (!(ROWS >= 1)) throw new RangeError('--rows needs a positive count');

const BLOCK = 64;
const TOPK = [0.05, 0.1, 0.2], CDF = [0.9, 0.95, 0.99], SIM = [-0.1, 0.3, 0.6];
const SWEEP = Array.from({ length: 50 }, (_, i) => (i + 1) / 50);
const RULES = [
  ...TOPK.map((f) => ({ label: `top-k ${f}`, kind: 'topk', param: f })),
  ...CDF.map((t) => ({ label: `CDF ${t}`, kind: 'cdf', param: t })),
];
const SWEEP_RULES = SWEEP.map((f) => ({ label: `sweep ${f}`, kind: 'topk', param: f }));
const ALL_RULES = [...RULES, ...SWEEP_RULES];
const SCORES = [
  { id: 'oracle', label: 'oracle', source: 'oracle', sim: null },
  { id: 'quest', label: 'Quest bound', source: 'quest', sim: null },
  ...SIM.map((s) => ({ id: `mean${s}`, label: s < 0 ? `mean-pooled (sim ${s})` : `mean-pooled + forcing (sim ${s})`, source: 'mean', sim: s })),
];
const PLAIN_MEAN = `mean${SIM[0]}`;

/** R positions evenly spaced over [N/2, N - 1]. */
function rowPositions(N, R) {
  const lo = Math.floor(N / 2), hi = N - 1, n = Math.min(R, hi - lo + 1);
  if (n === 1) return [hi];
  return Array.from({ length: n }, (_, i) => lo + Math.round((i * (hi - lo)) / (n - 1)));
}

/** Per complete key block of kv head hk: the mean key, per-channel min and max, self-similarity. */
function keyBlockStats(k, hk, N, D) {
  const K = k.data, base = hk * N * D, nFull = Math.floor(N / BLOCK);
  const c = new Float64Array(D), nc = Math.min(BLOCK, N);
  for (let a = 0; a < nc; a++) for (let d = 0; d < D; d++) c[d] += K[base + a * D + d] / nc;
  const kbar = new Float64Array(nFull * D), kmin = new Float64Array(nFull * D).fill(Infinity);
  const kmax = new Float64Array(nFull * D).fill(-Infinity), sim = new Float64Array(nFull);
  const unitSum = new Float64Array(D), x = new Float64Array(D);
  for (let b = 0; b < nFull; b++) {
    unitSum.fill(0);
    for (let a = b * BLOCK; a < (b + 1) * BLOCK; a++) {
      let nrm = 0;
      for (let d = 0; d < D; d++) {
        const raw = K[base + a * D + d], o = b * D + d;
        kbar[o] += raw / BLOCK;
        if (raw < kmin[o]) kmin[o] = raw;
        if (raw > kmax[o]) kmax[o] = raw;
        x[d] = raw - c[d];
        nrm += x[d] * x[d];
      }
      nrm = Math.sqrt(nrm);
      if (nrm > 0) for (let d = 0; d < D; d++) unitSum[d] += x[d] / nrm;
    }
    let s = 0;
    for (let d = 0; d < D; d++) s += unitSum[d] * unitSum[d];
    sim[b] = s / (BLOCK * BLOCK);
  }
  return { kbar, kmin, kmax, sim, nFull };
}

/** Probabilities of a softmax over the candidate blocks (-Infinity scores get 0). */
function softmaxOver(score, cand) {
  let m = -Infinity;
  for (const b of cand) if (score[b] > m) m = score[b];
  const p = new Map();
  if (m === -Infinity) { for (const b of cand) p.set(b, 1 / cand.length); return p; }
  let sum = 0;
  for (const b of cand) { const e = Math.exp(score[b] - m); p.set(b, e); sum += e; }
  for (const b of cand) p.set(b, p.get(b) / sum);
  return p;
}

function runCase(name) {
  const { meta, q, k, v } = loadCase(name);
  const { H, Hkv, N, D } = meta, group = H / Hkv, scale = 1 / Math.sqrt(D);
  const positions = rowPositions(N, ROWS);
  const stats = Array.from({ length: Hkv }, (_, hk) => keyBlockStats(k, hk, N, D));
  // acc[score id][rule label] = per-head sums over rows
  const fields = ['l1', 'blocks', 'keys', 'mass', 'forced'];
  const acc = {};
  for (const s of SCORES) {
    acc[s.id] = {};
    for (const r of ALL_RULES) acc[s.id][r.label] = Object.fromEntries(fields.map((f) => [f, new Float64Array(H)]));
  }
  const Q = q.data, K = k.data, V = v.data;
  const qi = new Float64Array(D), s = new Float64Array(N), oExact = new Float64Array(D), o = new Float64Array(D);
  for (let h = 0; h < H; h++) {
    const hk = Math.floor(h / group), st = stats[hk], kb = hk * N * D;
    for (const pos of positions) {
      const qo = (h * N + pos) * D;
      for (let d = 0; d < D; d++) qi[d] = Q[qo + d];
      let m = -Infinity;
      for (let j = 0; j <= pos; j++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += qi[d] * K[kb + j * D + d];
        s[j] = dot * scale;
        if (s[j] > m) m = s[j];
      }
      const nb = Math.floor(pos / BLOCK) + 1, last = nb - 1;
      // Per block: Z_b = sum exp(s - m), A_b = sum exp(s - m) v (unnormalized partial outputs).
      const Z = new Float64Array(nb), A = new Float64Array(nb * D);
      for (let j = 0; j <= pos; j++) {
        const b = Math.floor(j / BLOCK), e = Math.exp(s[j] - m);
        Z[b] += e;
        for (let d = 0; d < D; d++) A[b * D + d] += e * V[kb + j * D + d];
      }
      let zAll = 0;
      for (let b = 0; b < nb; b++) zAll += Z[b];
      oExact.fill(0);
      for (let b = 0; b < nb; b++) for (let d = 0; d < D; d++) oExact[d] += A[b * D + d] / zAll;
      let denom = 0;
      for (let d = 0; d < D; d++) denom += Math.abs(oExact[d]);
      const keysIn = (b) => (b === last ? pos - last * BLOCK + 1 : BLOCK);
      // Block scores of the candidates (the blocks before the last one, all complete).
      const meanScore = new Float64Array(nb), questScore = new Float64Array(nb), oracleScore = new Float64Array(nb);
      for (let b = 0; b < last; b++) {
        let ms = 0, qs = 0;
        for (let d = 0; d < D; d++) {
          const o2 = b * D + d;
          ms += qi[d] * st.kbar[o2];
          qs += Math.max(qi[d] * st.kmin[o2], qi[d] * st.kmax[o2]);
        }
        meanScore[b] = scale * ms;
        questScore[b] = scale * qs;
        oracleScore[b] = Math.log(Z[b]); // its softmax is the blocks' true mass, renormalized
      }
      const source = { mean: meanScore, quest: questScore, oracle: oracleScore };
      for (const sc of SCORES) {
        const score = source[sc.source];
        const forced = [], cand = [];
        for (let b = 0; b < last; b++) (sc.sim !== null && st.sim[b] <= sc.sim ? forced : cand).push(b);
        const order = [...cand].sort((a, c) => score[c] - score[a] || a - c);
        // The L1, kept blocks, keys and mass when the first n blocks of `order` are kept, every n.
        const base = [last, ...forced];
        o.fill(0);
        let z = 0, keys = 0;
        const addBlock = (b) => {
          for (let d = 0; d < D; d++) o[d] += A[b * D + d];
          z += Z[b];
          keys += keysIn(b);
        };
        base.forEach(addBlock);
        const l1At = new Float64Array(order.length + 1), massAt = new Float64Array(order.length + 1);
        const keysAt = new Float64Array(order.length + 1);
        for (let n = 0; n <= order.length; n++) {
          if (n > 0) addBlock(order[n - 1]);
          let diff = 0;
          for (let d = 0; d < D; d++) diff += Math.abs((z > 0 ? o[d] / z : 0) - oExact[d]);
          l1At[n] = diff / denom;
          massAt[n] = z / zAll;
          keysAt[n] = keys;
        }
        const p = softmaxOver(score, cand);
        for (const r of ALL_RULES) {
          let n;
          if (r.kind === 'topk') {
            n = Math.min(order.length, Math.max(1, Math.floor(r.param * nb)));
          } else {
            n = 0;
            let run = 0;
            while (n < order.length && run <= r.param) run += p.get(order[n++]);
            n = Math.min(order.length, Math.max(1, n));
          }
          const a = acc[sc.id][r.label];
          a.l1[h] += l1At[n];
          a.blocks[h] += (base.length + n) / nb;
          a.keys[h] += keysAt[n] / (pos + 1);
          a.mass[h] += massAt[n];
          a.forced[h] += forced.length / nb;
        }
      }
    }
  }
  const R = positions.length;
  const mean = (arr) => arr.reduce((x, y) => x + y, 0) / arr.length;
  const rows = [], sweeps = {};
  for (const sc of SCORES) {
    sweeps[sc.id] = [];
    for (const r of ALL_RULES) {
      const a = acc[sc.id][r.label], perHead = Array.from(a.l1, (x) => x / R);
      let worst = 0;
      for (let h = 1; h < H; h++) if (perHead[h] > perHead[worst]) worst = h;
      const row = {
        case: name, rule: r.label, kind: r.kind, param: r.param, score: sc.label, scoreId: sc.id, simThreshold: sc.sim,
        keptBlocks: mean(a.blocks) / R, keptKeys: mean(a.keys) / R, keptMass: mean(a.mass) / R,
        forcedBlocks: mean(a.forced) / R, meanL1: mean(perHead), worstHead: worst, worstHeadL1: perHead[worst], perHeadL1: perHead,
      };
      if (r.label.startsWith('sweep')) sweeps[sc.id].push({ f: r.param, keptBlocks: row.keptBlocks, keptKeys: row.keptKeys, meanL1: row.meanL1 });
      else rows.push(row);
    }
  }
  return { name, meta: { H, Hkv, N, D, causal: meta.causal }, positions, rows, sweeps };
}

/** L1 of a top-k sweep linearly interpolated at kept-block fraction x; null outside its range. */
function interp(sweep, x) {
  const pts = [...sweep].sort((a, b) => a.keptBlocks - b.keptBlocks);
  if (x < pts[0].keptBlocks - 1e-12 || x > pts.at(-1).keptBlocks + 1e-12) return null;
  for (let i = 0; i < pts.length; i++) {
    const a = pts[i], b = pts[i + 1];
    if (Math.abs(x - a.keptBlocks) <= 1e-12) return a.meanL1;
    if (b && x > a.keptBlocks && x < b.keptBlocks) return a.meanL1 + ((x - a.keptBlocks) / (b.keptBlocks - a.keptBlocks)) * (b.meanL1 - a.meanL1);
  }
  return pts.at(-1).meanL1;
}

const fmt = (x) => (x == null ? 'n/a' : x === 0 ? '0' : x >= 0.01 ? x.toFixed(4) : x.toExponential(2));
const pct = (x) => `${(100 * x).toFixed(1)}%`;

const t0 = process.hrtime.bigint(), cpu0 = process.cpuUsage();
const causal = referenceCases().filter((n) => loadCase(n).meta.causal);
const results = causal.map(runCase);
const seconds = Number(process.hrtime.bigint() - t0) / 1e9, cpu = process.cpuUsage(cpu0);

const header = '| case | rule | score | kept blocks | kept keys | forced | mean L1 | worst head L1 (head) |\n|---|---|---|---|---|---|---|---|';
const lines = [];
for (const c of results) {
  for (const r of c.rows) {
    lines.push(`| ${c.name} | ${r.rule} | ${r.score} | ${pct(r.keptBlocks)} | ${pct(r.keptKeys)} | ${r.simThreshold === null ? '-' : pct(r.forcedBlocks)} | ${fmt(r.meanL1)} | ${fmt(r.worstHeadL1)} (${r.worstHead}) |`);
  }
}
const table = `${header}\n${lines.join('\n')}`;
console.log(table);

// Comparisons at equal kept fraction, written out from the numbers.
const find = (c, rule, id) => c.rows.find((r) => r.rule === rule && r.scoreId === id);
const summary = [];
let questWins = 0, meanWins = 0, ties = 0;
for (const c of results) {
  const parts = [];
  for (const f of TOPK) {
    const mq = find(c, `top-k ${f}`, PLAIN_MEAN), qq = find(c, `top-k ${f}`, 'quest'), oq = find(c, `top-k ${f}`, 'oracle');
    const ratio = qq.meanL1 / mq.meanL1;
    if (Math.abs(ratio - 1) < 0.005) ties++; else if (ratio < 1) questWins++; else meanWins++;
    parts.push(`top-k ${f} (${pct(mq.keptBlocks)} of blocks): mean-pooled ${fmt(mq.meanL1)}, Quest ${fmt(qq.meanL1)} (Quest/mean ${ratio.toFixed(2)}), oracle ${fmt(oq.meanL1)}`);
  }
  for (const t of CDF) {
    const mq = find(c, `CDF ${t}`, PLAIN_MEAN), qq = find(c, `CDF ${t}`, 'quest');
    const meanAtQ = interp(c.sweeps[PLAIN_MEAN], qq.keptBlocks), questAtM = interp(c.sweeps.quest, mq.keptBlocks);
    parts.push(`CDF ${t}: mean-pooled keeps ${pct(mq.keptBlocks)} at ${fmt(mq.meanL1)} (Quest top-k at that fraction ${fmt(questAtM)}); `
      + `Quest keeps ${pct(qq.keptBlocks)} at ${fmt(qq.meanL1)} (mean-pooled top-k at that fraction ${fmt(meanAtQ)})`);
  }
  // The whole top-k sweep: both scores keep the same blocks count in every row at each f.
  const pairs = c.sweeps.quest.map((qp, i) => [qp, c.sweeps[PLAIN_MEAN][i]])
    .filter(([qp, mp], i, all) => qp.keptBlocks < 0.995 && (i === 0 || qp.keptBlocks !== all[i - 1][0].keptBlocks) && mp.meanL1 > 0);
  const ratios = pairs.map(([qp, mp]) => qp.meanL1 / mp.meanL1).sort((a, b) => a - b);
  if (ratios.length) {
    const at = (x) => `${fmt(interp(c.sweeps[PLAIN_MEAN], x))} / ${fmt(interp(c.sweeps.quest, x))} / ${fmt(interp(c.sweeps.oracle, x))}`;
    const probes = [0.25, 0.5, 0.75].filter((x) => interp(c.sweeps.quest, x) !== null);
    parts.push(`top-k sweep, ${ratios.length} distinct kept fractions below 100%: Quest lower at ${ratios.filter((r) => r < 1).length}; `
      + `Quest/mean L1 median ${ratios[Math.floor(ratios.length / 2)].toFixed(2)} (${ratios[0].toFixed(2)}..${ratios.at(-1).toFixed(2)})`
      + `${probes.length ? `; L1 mean / Quest / oracle at ${probes.map((x) => `${pct(x)} kept: ${at(x)}`).join(', ')}` : ''}`);
  }
  for (const sim of SIM.slice(1)) {
    const forcedShare = pct(find(c, RULES[0].label, `mean${sim}`).forcedBlocks);
    const frs = RULES.map((rule) => [rule, find(c, rule.label, `mean${sim}`)]);
    if (frs.every(([, fr]) => fr.keptBlocks > 0.9995)) {
      parts.push(`forcing sim ${sim}: ${forcedShare} of blocks forced; every rule then keeps 100% of blocks (L1 ${fmt(Math.max(...frs.map(([, fr]) => fr.meanL1)))}), no sparsity left`);
      continue;
    }
    const cells = frs.map(([rule, fr]) => {
      const plain = find(c, rule.label, PLAIN_MEAN), curve = interp(c.sweeps[PLAIN_MEAN], fr.keptBlocks);
      return `${rule.label} keeps ${pct(fr.keptBlocks)} at ${fmt(fr.meanL1)} (unforced ${pct(plain.keptBlocks)} at ${fmt(plain.meanL1)}; unforced top-k at ${pct(fr.keptBlocks)}: ${fmt(curve)})`;
    });
    parts.push(`forcing sim ${sim} (${forcedShare} of blocks forced): ${cells.join('; ')}`);
  }
  summary.push(`- **${c.name}** (N ${c.meta.N}, D ${c.meta.D}, H ${c.meta.H}/Hkv ${c.meta.Hkv}, ${c.positions.length} rows):\n${parts.map((p) => `  - ${p}`).join('\n')}`);
}

const forcedSummary = results.map((c) => `${c.name} ${pct(find(c, RULES[0].label, PLAIN_MEAN).forcedBlocks)}`).join(', ');

fs.mkdirSync(path.join(here, 'results'), { recursive: true });
const json = {
  date: new Date().toISOString(), node: process.version, block: BLOCK, rowsAsked: ROWS, seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6,
  definitions: {
    keptBlocks: 'kept blocks / nblocks (last partial block counts as one), mean over rows and heads',
    keptKeys: 'kept keys / (pos + 1), mean over rows and heads',
    keptMass: 'true attention mass in the kept blocks, mean over rows and heads',
    forcedBlocks: 'blocks forced by the self-similarity rule / nblocks (mean-pooled variants only)',
    lastBlock: 'always kept, outside the rule: rules choose among the blocks before it; CDF softmax over those',
    sweeps: 'top-k f = 0.02..1 per score, for comparisons at equal kept fraction',
  },
  cases: results.map((c) => ({ name: c.name, meta: c.meta, rowCount: c.positions.length, positions: c.positions, heads: c.meta.H, sweeps: c.sweeps })),
  rows: results.flatMap((c) => c.rows),
};
fs.writeFileSync(path.join(here, 'results/decode-selection.json'), JSON.stringify(json, null, 1) + '\n');

const mdFile = path.join(here, 'results/decode-selection.md');
const old = fs.existsSync(mdFile) ? fs.readFileSync(mdFile, 'utf8') : '';
const kept = old.indexOf('\n## Conclusion');
const rowsText = results.map((c) => `${c.name}: ${c.positions.length} rows, positions ${c.positions[0]}..${c.positions.at(-1)} (${c.positions.join(', ')})`).join('\n- ');
const md = `# Block selection for decode steps: mean-pooled vs Quest bound

\`node bench/decode-selection.js --rows ${ROWS}\` (${json.date}, Node ${process.version}, ${seconds.toFixed(1)} s, ${json.cpuSeconds.toFixed(1)} s CPU).
One query row at position pos attends to keys [0, pos], in blocks of ${BLOCK}; every query head of every causal reference case.
The last key block (holding pos) is always kept on top of each rule; rules choose among the blocks before it
(top-k keeps max(1, floor(f * nblocks)) of them; CDF softmax is over them). Forcing: blocks of self-similarity
<= simThreshold are kept and leave the softmax and budget. L1: relative L1 of the output row against the exact row
(FP64), mean over rows and heads; worst head = the head of highest mean. Kept blocks/keys: mean over rows of kept
blocks / nblocks and kept keys / (pos + 1). Forced: blocks forced / nblocks.

Rows:
- ${rowsText}

${table}

## Comparisons at equal kept fraction (computed)

Top-k keeps the same number of blocks for every score, so those rows compare at exactly equal fraction. For CDF
rules and forcing, the other score's top-k sweep (f = 0.02..1) is interpolated linearly at the same kept-block fraction.
Over all cases and the three top-k fractions: Quest lower in ${questWins}, mean-pooled lower in ${meanWins}, within 0.5% in ${ties}.
Blocks forced with sim ${SIM[0]}: ${forcedSummary}.

${summary.join('\n')}
${kept >= 0 ? old.slice(kept) : ''}`;
fs.writeFileSync(mdFile, md.endsWith('\n') ? md : `${md}\n`);
console.log(`\n${seconds.toFixed(1)} s, ${json.cpuSeconds.toFixed(1)} s CPU; wrote bench/results/decode-selection.{json,md}`);
