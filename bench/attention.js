// npm run bench: sparge-wasm's sparse and dense attention against onnxruntime-web (WASM),
// onnxruntime-node (native) and plain JavaScript, on video-like inputs at B=1, H=8.
//   node bench/attention.js            goals: N=4096, D=64, 1 and 2 threads, FP64 L1, peak memory
//   node bench/attention.js --sweep    N = 1K..16K, D = 64 and 128, threads 1 and 2 (long; shows progress)
//   --reps 5   repetitions (interleaved across implementations, medians reported)
// Every configuration runs in its own Node process (bench/config.js) with relaxed SIMD (Node 20 is
// started with --experimental-wasm-relaxed-simd), so sparge-wasm uses its relaxed-SIMD module as it
// would in Deno, Bun or Chromium. Writes bench/results/attention-{goals,sweep}.{json,md} and SVG plots.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { lineChart } from './plot.js';
import { RELAXED_FLAGS } from '../test/helpers.js';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? dflt : process.argv[i + 1];
};
const sweep = process.argv.includes('--sweep');
const reps = Number(arg('reps', sweep ? 3 : 5));

const OURS = ['sparge dense FP32', 'sparge topk 0.5', 'sparge topk 0.25', 'sparge topk 0.1', 'sparge CDF 0.95'];
const ORT = ['ort-web MatMul-Softmax-MatMul', 'ort-web MultiHeadAttention', 'ort-node MatMul-Softmax-MatMul', 'ort-node MultiHeadAttention'];

function config({ n, d, threads, impls, reps: r = reps, extra = [] }) {
  const t0 = Date.now();
  const args = [...RELAXED_FLAGS, here('./config.js'), '--n', n, '--d', d, '--threads', threads,
    '--reps', r, '--impls', impls.join(','), ...extra].map(String);
  let rows;
  try {
    const out = execFileSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 1 << 26, stdio: ['ignore', 'pipe', 'pipe'] });
    rows = JSON.parse(out.trim().split('\n').pop());
  } catch (e) {
    // A whole process failing (out of memory, say) is a result too.
    const why = String(e.stderr || e.message).split('\n').find((l) => /error|memory|abort/i.test(l)) ?? 'process failed';
    rows = impls.map((impl) => ({ impl, N: n, D: d, threads, error: why.slice(0, 160) }));
  }
  process.stderr.write(`  N=${n} D=${d} threads=${threads} ${impls.length} implementation(s): ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
  return rows;
}

const fmt = (x) => (x === undefined || x === null ? '' : String(x));
function markdown(rows, cols) {
  return [`| ${cols.join(' | ')} |`, `|${cols.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${cols.map((c) => fmt(r[c])).join(' | ')} |`)].join('\n');
}

function save(name, data, md) {
  const base = here(`./results/${name}`);
  fs.writeFileSync(`${base}.json`, JSON.stringify(data, null, 1) + '\n');
  fs.writeFileSync(`${base}.md`, md + '\n');
  console.log(`wrote ${base}.json and .md`);
}

const machine = { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version, date: new Date().toISOString() };

if (!sweep) {
  console.error('goals: N=4096 D=64 H=8, video-like (reference case), 1 and 2 threads');
  const rows = [];
  for (const threads of [1, 2]) {
    rows.push(...config({ n: 4096, d: 64, threads, impls: [...OURS, ...ORT], extra: ['--input', 'reference'] }));
  }
  // Plain JavaScript takes ~30 s a run here: one timed run after the warm-up.
  rows.push(...config({ n: 4096, d: 64, threads: 1, impls: ['plain JavaScript'], reps: 1, extra: ['--input', 'reference'] }));
  console.error('peak memory (one process per implementation, N = 4096 and 16384, 2 threads)');
  const memory = [];
  for (const n of [4096, 16384]) {
    for (const impl of ['sparge dense FP32', 'sparge topk 0.25', 'ort-web MatMul-Softmax-MatMul', 'ort-node MatMul-Softmax-MatMul', 'ort-node MultiHeadAttention']) {
      const [r] = config({ n, d: 64, threads: 2, impls: [impl], reps: 0, extra: ['--memory'] });
      memory.push({ impl, N: n, 'peak RSS MB': r['peak RSS MB'], error: r.error });
    }
  }
  const get = (impl, threads) => rows.find((r) => r.impl === impl && r.threads === threads && !r.error)?.['median ms'];
  const two = (impl) => get(impl, 2);
  const goals = [
    ['sparse topk 0.25 vs onnxruntime-node dense (MatMul graph), 2 threads', '>= 1.5x', two('ort-node MatMul-Softmax-MatMul') / two('sparge topk 0.25')],
    ['sparse topk 0.25 vs onnxruntime-node MultiHeadAttention, 2 threads', '(>= 1.5x)', two('ort-node MultiHeadAttention') / two('sparge topk 0.25')],
    ['sparse topk 0.25 vs onnxruntime-web dense, 2 threads', '>= 6x', two('ort-web MatMul-Softmax-MatMul') / two('sparge topk 0.25')],
    ['sparse topk 0.25 L1 vs FP64', '<= 0.05', rows.find((r) => r.impl === 'sparge topk 0.25' && r.threads === 2)?.['L1 vs FP64']],
    ['our dense FP32 vs onnxruntime-web dense, 2 threads', '>= 2x', two('ort-web MatMul-Softmax-MatMul') / two('sparge dense FP32')],
    ...['sparge topk 0.5', 'sparge topk 0.25', 'sparge topk 0.1', 'sparge CDF 0.95'].map((impl) => {
      const r = rows.find((x) => x.impl === impl && x.threads === 2);
      return [`${impl}: speedup over our dense / (1 / (1 - sparsity)), 2 threads`, '>= 0.85', (two('sparge dense FP32') / two(impl)) * (1 - r.sparsity)];
    }),
    ['2 threads vs 1 thread, sparse topk 0.5', '>= 1.8x', get('sparge topk 0.5', 1) / two('sparge topk 0.5')],
    ['2 threads vs 1 thread, dense', '>= 1.8x', get('sparge dense FP32', 1) / two('sparge dense FP32')],
  ].map(([goal, target, value]) => ({ goal, target, measured: Number.isFinite(value) ? +value.toFixed(3) : 'n/a' }));
  console.table(rows.map(({ input, ...r }) => r));
  console.table(memory);
  console.table(goals);
  const cols = ['impl', 'threads', 'median ms', 'min ms', 'sparsity', 'L1 vs FP64', 'error'];
  save('attention-goals', { machine, command: `node bench/attention.js --reps ${reps}`, input: rows[0]?.input, rows, memory, goals },
    `Command: \`node bench/attention.js --reps ${reps}\` (${machine.date}, ${machine.cpus} cores, ${machine.model}, Node ${machine.node}).\n` +
    `Input: ${rows[0]?.input}; B=1, H=8, N=4096, D=64. Medians of ${reps} interleaved repetitions.\n\n` +
    markdown(rows, cols) + '\n\nPeak resident memory of a process running one implementation:\n\n' +
    markdown(memory, ['impl', 'N', 'peak RSS MB', 'error']) + '\n\n' + markdown(goals, ['goal', 'target', 'measured']));
} else {
  const rows = [];
  for (const d of [64, 128]) {
    for (const threads of [1, 2]) {
      console.error(`sweep D=${d} threads=${threads}`);
      for (const n of [1024, 2048, 4096, 8192, 16384]) {
        // onnxruntime-web's graphs abort the process past N = 4096 (wasm32 memory), the native
        // MatMul graph's N x N scores take 9 GB at 16K; plain JavaScript past 2K takes minutes a run.
        const impls = [...OURS, ...ORT.filter((i) => (i.startsWith('ort-web') ? n <= 4096 : i.includes('MatMul') ? n <= 8192 : true)),
          ...(n <= 2048 ? ['plain JavaScript'] : [])];
        rows.push(...config({ n, d, threads, impls, reps: n >= 8192 ? 1 : reps }));
      }
    }
  }
  const cols = ['impl', 'N', 'D', 'threads', 'median ms', 'sparsity', 'L1 vs dense FP32', 'error'];
  save('attention-sweep', { machine, command: `node bench/attention.js --sweep --reps ${reps}`, rows },
    `Command: \`node bench/attention.js --sweep --reps ${reps}\` (${machine.date}, ${machine.cpus} cores, ${machine.model}).\n` +
    'Synthetic video-like tokens, B=1, H=8; medians of interleaved repetitions (1 at N >= 8192).\n\n' + markdown(rows, cols));
  for (const d of [64, 128]) {
    const series = [...OURS, ...ORT, 'plain JavaScript'].map((impl) => ({
      name: impl,
      points: rows.filter((r) => r.impl === impl && r.D === d && r.threads === 2 && r['median ms']).map((r) => [r.N, r['median ms']]),
    })).filter((s) => s.points.length);
    fs.writeFileSync(here(`./results/time-vs-n-d${d}.svg`), lineChart({
      title: `Attention time against N (B=1, H=8, D=${d}, 2 threads)`, xLabel: 'N (tokens)', yLabel: 'ms (log)', series, logX: true, logY: true,
    }));
  }
  const dense = (n, d, t) => rows.find((r) => r.impl === 'sparge dense FP32' && r.N === n && r.D === d && r.threads === t)?.['median ms'];
  const speedup = rows.filter((r) => r.sparsity !== undefined && r['median ms'] && r.impl !== 'sparge dense FP32' && r.threads === 2)
    .map((r) => [r.sparsity, dense(r.N, r.D, r.threads) / r['median ms'], `N=${r.N} D=${r.D}`]);
  const ideal = Array.from({ length: 19 }, (_, i) => i / 20).map((s) => [s, 1 / (1 - s)]);
  fs.writeFileSync(here('./results/speedup-vs-sparsity.svg'), lineChart({
    title: 'Sparse over dense speedup against sparsity (2 threads)', xLabel: 'sparsity', yLabel: 'speedup (log)', logY: true,
    series: [{ name: 'ideal 1 / (1 - sparsity)', points: ideal }, { name: 'sparge-wasm (each N, D, top-k / CDF)', points: speedup.map(([s, v]) => [s, v]), dots: true }],
  }));
  console.log('wrote bench/results/*.svg');
}
