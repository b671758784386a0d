// npm run bench: dense FP32 against sparse attention (top-k 0.5 and 0.25) at B=1, H=8, N=4096, D=64
// on 1 and 2 threads, for the baseline and the relaxed-SIMD module. Repetitions are interleaved and
// medians reported. Prints a table and writes bench/results/attention.json.
//   node bench/attention.js [--reps 5] [--n 4096] [--threads 1,2]
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { createSparge } from '../dist/src/index.js';
import { loadCase, referenceCases, videoLike, tensor, l1 } from '../test/helpers.js';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? dflt : process.argv[i + 1];
};
const reps = Number(arg('reps', 5));
const N = Number(arg('n', 4096));
const only = arg('only', null);
const threadList = String(arg('threads', '1,2')).split(',').map(Number);
const H = 8, D = 64;

/** Video-like input at H = 8: the reference video case's two heads repeated, else synthetic tokens. */
function inputs() {
  if (N === 4096 && referenceCases().includes('video_4x32x32')) {
    const c = loadCase('video_4x32x32');
    const rep = (t) => {
      const out = new Float32Array(H * N * D);
      for (let h = 0; h < H; h++) out.set(t.data.subarray((h % 2) * N * D, (h % 2 + 1) * N * D), h * N * D);
      return tensor(out, [1, H, N, D]);
    };
    return { source: 'shared/reference/video_4x32x32, heads repeated to 8', q: rep(c.q), k: rep(c.k), v: rep(c.v) };
  }
  const x = videoLike(H, N / 1024, 32, D, 7);
  return { source: `synthetic video-like tokens (${N / 1024} frames of 32x32)`, q: tensor(x.q, [1, H, N, D]), k: tensor(x.k, [1, H, N, D]), v: tensor(x.v, [1, H, N, D]) };
}

const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

async function measure(simd, threads) {
  const sparge = await createSparge({ threads, simd });
  const { source, q, k, v } = inputs();
  const methods = [
    ['dense FP32', () => sparge.denseAttention(q, k, v).then((output) => ({ output, sparsity: 0 }))],
    ['sparse topk 0.5', () => sparge.attention(q, k, v, { topk: 0.5 })],
    ['sparse topk 0.25', () => sparge.attention(q, k, v, { topk: 0.25 })],
  ];
  const times = methods.map(() => []);
  const results = [];
  for (const [, run] of methods) results.push(await run()); // warm-up, and the outputs for L1
  for (let r = 0; r < reps; r++) {
    for (let m = 0; m < methods.length; m++) {
      const t0 = performance.now();
      await methods[m][1]();
      times[m].push(performance.now() - t0);
    }
  }
  const flop = 4 * N * N * D * H;
  const dense = median(times[0]);
  const rows = methods.map(([method], m) => ({
    module: sparge.features.module,
    threads: sparge.threads,
    method,
    'median ms': +median(times[m]).toFixed(1),
    'min ms': +Math.min(...times[m]).toFixed(1),
    'dense-equivalent GFLOP/s': +(flop / median(times[m]) / 1e6).toFixed(1),
    'speedup vs dense': +(dense / median(times[m])).toFixed(2),
    sparsity: +results[m].sparsity.toFixed(3),
    'L1 vs dense FP32': Number(l1(results[m].output.data, results[0].output.data).toPrecision(3)),
  }));
  await sparge.dispose();
  return { source, rows };
}

async function measureAll(simd) {
  const rows = [];
  let source;
  for (const threads of threadList) {
    const m = await measure(simd, threads);
    source = m.source;
    rows.push(...m.rows);
  }
  // Speedup of each thread count over one thread, same module and method.
  for (const r of rows) {
    const one = rows.find((x) => x.threads === 1 && x.method === r.method);
    if (one) r['speedup vs 1 thread'] = +(one['median ms'] / r['median ms']).toFixed(2);
  }
  return { source, rows };
}

if (only) {
  process.stdout.write(JSON.stringify(await measureAll(only)));
} else {
  console.log(`B=1 H=${H} N=${N} D=${D}, threads ${threadList.join(', ')}, ${reps} interleaved repetitions (median)`);
  const base = await measureAll('baseline');
  const self = fileURLToPath(import.meta.url);
  const relaxed = JSON.parse(execFileSync(process.execPath,
    ['--experimental-wasm-relaxed-simd', self, '--only', 'relaxed', '--reps', String(reps), '--n', String(N), '--threads', threadList.join(',')],
    { encoding: 'utf8' }));
  const rows = [...base.rows, ...relaxed.rows];
  console.log(`input: ${base.source}`);
  console.table(rows);
  const out = {
    date: new Date().toISOString(),
    command: `node bench/attention.js --reps ${reps} --n ${N} --threads ${threadList.join(',')}`,
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version },
    shape: { B: 1, H, N, D }, input: base.source, rows,
  };
  const file = fileURLToPath(new URL('./results/attention.json', import.meta.url));
  fs.writeFileSync(file, JSON.stringify(out, null, 1) + '\n');
  console.log(`wrote ${file}`);
}
