// npm run bench:micro: each kernel's speed (tinybench) beside the peak of its instruction mix,
// measured in the same run by register-resident loops (assembly/bench.ts); baseline and relaxed
// modules; Node, and Deno and Bun when their binaries are installed.
//   node bench/micro.js            all modules and runtimes, table + bench/results/micro.json
//   <runtime> bench/micro.js --only baseline|relaxed   one module, JSON on stdout
//   --filter word,word   only the kernels whose names contain a word
// Units: Gop/s counts a multiply-add as 2 ops; exp2 counts one op per value.
import fs from 'node:fs';
import os from 'node:os';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';
import { dimsOf, plan, writeParams } from '../dist/src/memory.js';
import { P, Head } from '../dist/assembly/params.js';
import { rng } from '../test/helpers.js';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const arg = (name) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? undefined : process.argv[i + 1];
};
const runtime = globalThis.Deno ? `deno ${Deno.version.deno}` : globalThis.Bun ? `bun ${Bun.version}` : `node ${process.version}`;

async function measure(kind) {
  const module = await WebAssembly.compile(fs.readFileSync(here(`../build/bench.${kind}.wasm`)));
  const memory = new WebAssembly.Memory({ initial: 2048 });
  const k = new WebAssembly.Instance(module, { env: { memory } }).exports;
  const r = rng(1);
  const bytes = new Uint8Array(memory.buffer);
  const fill = (at, n, f) => { for (let i = 0; i < n; i++) f(at, i); };

  // Microkernel tiles at D = 64, a 64-key block, 4 query rows: 4 * 64 * 64 MACs per pass.
  const DP = 64, BK = 64, MACS = 4 * BK * DP;
  const Q = 65536, KB = Q + 4096, S = KB + 16384, O = S + 4096, V = O + 4096, ALPHA = V + 32768, X = ALPHA + 64, CORR = X + 4096;
  const i8 = new Int8Array(memory.buffer), f32 = new Float32Array(memory.buffer);
  // Q codes in [-127, 127]; K bytes in [0, 127], valid for both INT8 paths (i16 codes or the
  // relaxed dot's split halves).
  fill(Q, 4 * DP * 2, (a, i) => { i8[a + i] = Math.round(r() * 254 - 127); });
  fill(KB, BK * DP * 2, (a, i) => { bytes[a + i] = Math.floor(r() * 128); });
  fill(V >> 2, BK * DP, (a, i) => { f32[a + i] = r() - 0.5; });
  fill(S >> 2, 4 * BK, (a, i) => { f32[a + i] = r(); });
  fill(ALPHA >> 2, 4, (a, i) => { f32[a + i] = 0.5; });
  fill(X >> 2, 1024, (a, i) => { f32[a + i] = -20 * r(); });
  const QF = X + 4096, KF = QF + 4 * DP * 4;
  fill(QF >> 2, 4 * DP + BK * DP, (a, i) => { f32[a + i] = r() - 0.5; });

  const bench = new Bench({ time: 300, warmupTime: 100 });
  const PEAK = 200000;
  const rows = [];
  // --filter word,word: only the rows whose names contain one of the words (for quick experiments).
  const filter = arg('filter')?.split(',');
  const add = (name, ops, fn, peakOf) => {
    if (filter && !filter.some((f) => name.includes(f))) return;
    bench.add(name, fn);
    rows.push({ name, ops, peakOf });
  };
  add('peak f32 mul+add', 2 * 48 * PEAK, () => k.peak_f32_muladd(PEAK, 0.5));
  add('peak f32 madd (kernels)', 2 * 48 * PEAK, () => k.peak_f32_madd(PEAK, 0.5));
  add('peak i8 extend + dot_i16x8', 2 * 128 * PEAK, () => k.peak_i8_extend_dot(PEAK, 3));
  add('peak i16 dot_i16x8 + add (i16 QK)', 2 * 64 * PEAK, () => k.peak_i16_dot(PEAK, 3));
  if (kind === 'relaxed') {
    add('peak relaxed_dot_i8x16_i7x16_add_s', 2 * 128 * PEAK, () => k.peak_relaxed_dot_add(PEAK, 3));
    add('peak i16x8 relaxed dot + widen', 2 * 128 * PEAK, () => k.peak_relaxed_dot_i16(PEAK, 3));
    // The relaxed QK kernel spends two of those dots on 16 MACs (K codes split into two halves in
    // [0, 127]), so the peak of its mix is half the loop's rate.
    add('peak relaxed QK mix (2 dots per 16 MACs)', 128 * PEAK, () => k.peak_relaxed_dot_i16(PEAK, 3));
  }
  add('peak exp2', 32 * PEAK, () => k.peak_exp2(PEAK, 0.5));
  const ITERS = 2000;
  // Each Stage 2 kernel in both broadcast variants (P.SPLAT); the engine picks one per runtime.
  for (const [splat, shuf] of [['load', 0], ['shuffle', 1]]) {
    const tag = `splat by ${splat}`;
    add(`QK INT8 tile 4x64, D=64, i16 dot, ${tag}`, 2 * MACS * ITERS, () => k.bench_qk_i16(Q, KB, DP, BK, S, ITERS, shuf),
      'peak i16 dot_i16x8 + add (i16 QK)');
    if (kind === 'relaxed') {
      add(`QK INT8 tile 4x64, D=64, relaxed dot, ${tag}`, 2 * MACS * ITERS, () => k.bench_qk_relaxed(Q, KB, DP, BK, CORR, S, ITERS, shuf),
        'peak relaxed QK mix (2 dots per 16 MACs)');
    }
    add(`QK FP32 tile 4x64, D=64 (dense), ${tag}`, 2 * MACS * ITERS, () => k.bench_qk_f32(QF, KF, DP, BK, S, ITERS, shuf), 'peak f32 madd (kernels)');
    add(`P.V tile 4x64, D=64, ${tag}`, 2 * MACS * ITERS, () => k.bench_pv(O, S, V, DP, BK, ALPHA, ITERS, shuf), 'peak f32 madd (kernels)');
  }
  add('exp2 over 1024 values', 1024 * ITERS, () => k.bench_exp2(X, 1024, ITERS), 'peak exp2');

  // Whole stages on a real problem: B=1, H=8, N=4096, D=64, blocks 128 x 64.
  const d = dimsOf(1, 8, 8, 4096, 4096, 64, 128, 64);
  const p = plan(d, 'sparse', 1, k.attention_scratch_bytes(d.BQ, d.BK, d.DP));
  memory.grow(Math.max(0, Math.ceil(p.end / 65536) - memory.buffer.byteLength / 65536));
  writeParams(memory.buffer, p, d, false, 1 / 8);
  const big = new Float32Array(memory.buffer);
  for (const slot of [P.Q, P.K, P.V]) {
    fill(p.at[slot] >> 2, 8 * 4096 * 64, (a, i) => { big[a + i] = Math.sin(i * 0.001 + (i % 64)) + 0.1 * (r() - 0.5); });
  }
  // Top-k 16 of 64 key blocks for every head; simThreshold and pvThreshold stay 0.
  const heads = new Int32Array(memory.buffer, p.at[P.HEADS], 8 * Head.COUNT);
  for (let h = 0; h < 8; h++) heads[h * Head.COUNT + Head.NKEEP] = 16;
  const elems = 8 * 4096 * 64;
  // One tile per kernel call, as the engine's calling-thread path runs them, without its promise.
  const stage = (name, n) => () => {
    for (let t = 0; t < n; t++) k[name](p.params, t, t + 1, 0);
  };
  add('stage 0: K mean', elems, stage('k_mean', 8));
  add('stage 0: quantize Q (per block INT8)', elems, stage('quantize_q', 8 * 32));
  add('stage 0: quantize K (smoothed, packed)', elems, stage('quantize_k', 8 * 64));
  add('stage 1: pool + self-similarity of Q', elems, stage('pool_q', 8 * 32));
  add('stage 1: pool + self-similarity of K', elems, stage('pool_k', 8 * 64));
  add('stage 1: scores, softmax, top-k', 8 * 32 * 64, stage('predict', 8 * 32));
  await bench.run();

  const out = [];
  for (const [i, task] of bench.tasks.entries()) {
    const ms = task.result.latency.p50;
    const row = rows[i];
    out.push({ runtime, module: kind, kernel: row.name, 'median ms': +ms.toFixed(4), 'Gop/s': +(row.ops / ms / 1e6).toFixed(2), peakOf: row.peakOf });
  }
  for (const o of out) {
    if (!o.peakOf) continue;
    const peak = out.find((x) => x.kernel === o.peakOf);
    if (!peak) continue;
    o['% of peak'] = +(100 * o['Gop/s'] / peak['Gop/s']).toFixed(1);
    o.peak = o.peakOf;
  }
  for (const o of out) delete o.peakOf;
  return out;
}

function supportsRelaxed() {
  return WebAssembly.validate(fs.readFileSync(here('../build/bench.relaxed.wasm')));
}

const only = arg('only');
if (only) {
  console.log(JSON.stringify(await measure(only)));
} else {
  const rows = [...await measure('baseline')];
  const child = (cmd, args) => {
    try {
      return JSON.parse(execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim().split('\n').pop());
    } catch {
      return undefined;
    }
  };
  const self = here('./micro.js');
  rows.push(...(supportsRelaxed() ? await measure('relaxed') : child(process.execPath, ['--experimental-wasm-relaxed-simd', self, '--only', 'relaxed']) ?? []));
  for (const [name, bin, pre] of [['deno', here('../node_modules/.bin/deno'), ['run', '-A']], ['bun', here('../node_modules/.bin/bun'), []]]) {
    if (!fs.existsSync(bin)) {
      console.log(`(${name} is not installed: skipped)`);
      continue;
    }
    for (const kind of ['baseline', 'relaxed']) rows.push(...(child(bin, [...pre, self, '--only', kind]) ?? []));
  }
  console.table(rows);
  const file = here('./results/micro.json');
  fs.writeFileSync(file, JSON.stringify({
    date: new Date().toISOString(), command: 'node bench/micro.js',
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model }, rows,
  }, null, 1) + '\n');
  console.log(`wrote ${file}`);
}
