// Token order for images and video: Stage 1's sparsity at equal error in raster order, along the
// generalized Hilbert curve (hilbertOrder, one 3-d curve for video) and, for video, along 2-d
// curves frame by frame. Inputs: the video and image reference cases and synthetic video-like
// tokens on a grid of odd sizes (and, to compare, one of even sizes). Error is L1 of the output against FP64 attention (in the tokens'
// own order; options.order un-permutes it). Sweeps of cdfThreshold (simThreshold -1 and 0.3) and
// topk give sparsity against L1: the sparsest setting measured within each L1 (not interpolated:
// some rules jump, e.g. from cdf 1 - 1e-7 to 1, and a line between would promise settings that do
// not exist). calibrate (target 0.05) runs on the same input, with the same order as its calls.
// Beside them, what an exact mask would reach in each order, and what the option costs in time.
//   node bench/order.js [--threads 2]
// Writes bench/results/order.{json,md} and order-<case>.svg.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createSparge, hilbertOrder, permuteTokens } from '../dist/src/index.js';
import { referenceCases, loadCase, tensor, videoLike, attentionF64, l1 } from '../test/helpers.js';
import { lineChart } from './plot.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const i = process.argv.indexOf('--threads');
const threads = i < 0 ? 2 : Number(process.argv[i + 1]);
const sparge = await createSparge({ threads });

const TARGETS = [0.01, 0.02, 0.05];
// 1 - 10^-x up to x = 7 (float32 resolves no finer below 1): in curve order the pooled scores are
// sharp, and the useful thresholds lie beyond 0.999.
const CDF = [...Array.from({ length: 14 }, (_, j) => 1 - 10 ** -(0.5 + j / 2)), 1];
const RULES = [
  { name: 'cdf, sim -1', settings: CDF.map((cdfThreshold) => ({ cdfThreshold, simThreshold: -1 })) },
  { name: 'cdf, sim 0.3', settings: CDF.map((cdfThreshold) => ({ cdfThreshold, simThreshold: 0.3 })) },
  { name: 'topk', settings: [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1].map((topk) => ({ topk, simThreshold: -1 })) },
];
const BLOCK = 64, MASS = 0.99;

/** Frame by frame: each frame's 2-d curve, every other frame walked backwards so that frames join. */
function frameByFrame([frames, height, width]) {
  const flat = hilbertOrder([height, width]).perm, n = height * width, perm = new Uint32Array(frames * n);
  for (let f = 0; f < frames; f++) for (let j = 0; j < n; j++) perm[f * n + j] = f * n + flat[f % 2 ? n - 1 - j : j];
  return { perm };
}

/** The cases: reference ones with their grids (the image's found from its keys' correlation at stride 64), then synthetic ones. */
function cases() {
  const out = [];
  const have = referenceCases();
  for (const [name, grid] of [['video_4x32x32', [4, 32, 32]], ['image_frame3', [64, 64]]]) {
    if (!have.includes(name)) {
      console.error(`note: ${name} is not at hand (SPARGE_REFERENCE), left out`);
      continue;
    }
    const c = loadCase(name);
    out.push({ name, grid, q: c.q, k: c.k, v: c.v });
  }
  // 3 x 32 x 48, of even sizes, tells what the odd sizes of 3 x 30 x 45 change.
  for (const [frames, height, width] of [[3, 30, 45], [3, 32, 48]]) {
    const x = videoLike(2, frames, [height, width], 64, 7), dims = [2, x.N, 64];
    out.push({ name: `videoLike_${frames}x${height}x${width}`, grid: [frames, height, width], q: tensor(x.q, dims), k: tensor(x.k, dims), v: tensor(x.v, dims) });
  }
  return out;
}

function ordersOf(grid) {
  const orders = [{ name: 'raster', order: undefined }, { name: 'hilbert', order: hilbertOrder(grid) }];
  if (grid.length === 3) orders.push({ name: 'frame by frame', order: frameByFrame(grid) });
  return orders;
}

/** The sparsest point with L1 <= t; null where none is that accurate. */
function sparsityAt(points, t) {
  const within = points.filter((p) => p.l1 <= t);
  return within.length ? Math.max(...within.map((p) => p.sparsity)) : null;
}

/**
 * Per order (a perm, or undefined for raster), the sparsity of exact masks: for each query block,
 * the fewest key blocks that hold MASS of its queries' FP64 attention. What Stage 1 could reach.
 */
function exactMaskSparsity(x, perms) {
  const [H, N, D] = x.q.dims, nb = Math.ceil(N / BLOCK), scale = 1 / Math.sqrt(D), q = x.q.data, k = x.k.data;
  const blockOf = perms.map((perm) => {
    const b = new Int32Array(N);
    for (let j = 0; j < N; j++) b[perm ? perm[j] : j] = Math.floor(j / BLOCK);
    return b;
  });
  const mass = perms.map(() => new Float64Array(H * nb * nb)), p = new Float64Array(N);
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < N; i++) {
      let m = -Infinity, sum = 0;
      for (let j = 0; j < N; j++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[(h * N + i) * D + d] * k[(h * N + j) * D + d];
        p[j] = dot * scale;
        m = Math.max(m, p[j]);
      }
      for (let j = 0; j < N; j++) sum += (p[j] = Math.exp(p[j] - m));
      for (const [o, b] of blockOf.entries()) {
        const row = (h * nb + b[i]) * nb;
        for (let j = 0; j < N; j++) mass[o][row + b[j]] += p[j] / sum;
      }
    }
  }
  return mass.map((m) => {
    let kept = 0;
    for (let r = 0; r < H * nb; r++) kept += blocksHolding(m.subarray(r * nb, (r + 1) * nb));
    return 1 - kept / (H * nb * nb);
  });
}

/** The fewest entries of row that sum to MASS of its total. */
function blocksHolding(row) {
  const sorted = [...row].sort((a, b) => b - a), total = sorted.reduce((a, b) => a + b, 0);
  let n = 0;
  for (let acc = 0; acc < MASS * total; n++) acc += sorted[n];
  return n;
}

async function measure(x, ref, opts) {
  const r = await sparge.attention(x.q, x.k, x.v, opts);
  return { l1: l1(r.output.data, ref), sparsity: r.sparsity };
}

const median = (a) => [...a].sort((p, q) => p - q)[a.length >> 1];

/**
 * Median ms of calls at topk 0.1 (as many blocks in any order), alternating: raster; the curve as
 * options.order; on copies permuted beforehand (the same work but for the option's row gathers
 * and un-permuted output); and with those copies and the output's un-permuting timed too.
 */
async function timeOrder(x, order) {
  const opts = { topk: 0.1 };
  const copies = [x.q, x.k, x.v].map((t) => permuteTokens(t, order.perm));
  const variants = {
    raster: () => sparge.attention(x.q, x.k, x.v, opts),
    option: () => sparge.attention(x.q, x.k, x.v, { ...opts, order }),
    onCopies: () => sparge.attention(...copies, opts),
    withCopying: async () => {
      const [q, k, v] = [x.q, x.k, x.v].map((t) => permuteTokens(t, order.perm));
      return permuteTokens((await sparge.attention(q, k, v, opts)).output, order.inverse);
    },
  };
  const t = Object.fromEntries(Object.keys(variants).map((name) => [name, []]));
  for (let r = 0; r < 9; r++) {
    for (const [name, run] of Object.entries(variants)) {
      const t0 = performance.now();
      await run();
      t[name].push(performance.now() - t0);
    }
  }
  return Object.fromEntries(Object.entries(t).map(([name, ms]) => [name, median(ms)]));
}

const rows = [], times = [];
for (const x of cases()) {
  const ref = attentionF64(x.q, x.k, x.v);
  const orders = ordersOf(x.grid);
  const exact = exactMaskSparsity(x, orders.map((o) => o.order?.perm));
  times.push({ case: x.name, ...await timeOrder(x, orders[1].order) });
  for (const [j, { name, order }] of orders.entries()) {
    const row = { case: x.name, grid: x.grid, order: name, exact: exact[j], rules: [] };
    for (const rule of RULES) {
      const points = [];
      for (const s of rule.settings) points.push({ ...s, ...await measure(x, ref, { ...s, order }) });
      row.rules.push({ name: rule.name, points, at: TARGETS.map((t) => sparsityAt(points, t)) });
    }
    const tuned = await sparge.calibrate(x, { target: 0.05, order });
    row.calibrated = { params: tuned.params, ...await measure(x, ref, { ...tuned.params, order }) };
    rows.push(row);
    console.error(`${x.name}, ${name}: done`);
  }
}

const f3 = (s) => (s === null ? '–' : s.toFixed(3));
let md = `Stage 1 sparsity of the sparsest setting with L1 against FP64 at most 0.01 / 0.02 / 0.05 (– where none is that accurate), blocks 64 x 64; calibrated settings (target 0.05, calibrated and measured on the same input); exact masks: the fewest key blocks holding ${MASS * 100}% of each query block's attention.\n\n`;
md += `| case (grid) | order | ${RULES.map((r) => `${r.name} @ ${TARGETS.join(' / ')}`).join(' | ')} | calibrated: sparsity / L1 | exact masks |\n`;
md += `|---|---|${RULES.map(() => '---').join('|')}|---|---|\n`;
for (const r of rows) {
  const cells = r.rules.map((u) => u.at.map(f3).join(' / '));
  md += `| ${r.case} (${r.grid.join(' x ')}) | ${r.order} | ${cells.join(' | ')} | ${r.calibrated.sparsity.toFixed(3)} / ${r.calibrated.l1.toFixed(4)} | ${r.exact.toFixed(3)} |\n`;
}
md += `\nMedian ms of a call at topk 0.1 (as many blocks in any order), ${threads} threads: raster; the curve as options.order; on copies permuted beforehand (untimed); and with permuteTokens on q, k, v and back on the output timed too.\n\n| case | raster | options.order | on permuted copies | permuteTokens + call + back |\n|---|---|---|---|---|\n`;
for (const t of times) md += `| ${t.case} | ${t.raster.toFixed(1)} | ${t.option.toFixed(1)} | ${t.onCopies.toFixed(1)} | ${t.withCopying.toFixed(1)} |\n`;
console.log(`node bench/order.js --threads ${threads}\n\n${md}`);
fs.mkdirSync(path.join(here, 'results'), { recursive: true });
fs.writeFileSync(path.join(here, 'results/order.json'), JSON.stringify({ date: new Date().toISOString(), node: process.version, threads, rows, times }, null, 1) + '\n');
fs.writeFileSync(path.join(here, 'results/order.md'), md);
// Up to L1 0.2, and sim 0.3 as dots: in curve order it forces no block and its line would hide sim -1's.
for (const name of new Set(rows.map((r) => r.case))) {
  const series = rows.filter((r) => r.case === name).flatMap((r) => r.rules.map((u) => ({
    name: `${r.order}, ${u.name}`,
    points: u.points.filter((p) => p.sparsity > 0 && p.l1 <= 0.2).map((p) => [p.l1, p.sparsity]),
    dots: u.name === 'cdf, sim 0.3',
  }))).filter((x) => x.points.length > 0);
  fs.writeFileSync(path.join(here, `results/order-${name}.svg`), lineChart({
    title: `${name}: Stage 1 sparsity against L1 (FP64), by token order`, xLabel: 'L1 against FP64', yLabel: 'sparsity', series, logX: true,
  }));
}
await sparge.dispose();
