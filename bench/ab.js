// Before and after: this checkout's engine against another checkout's (built, e.g. a git worktree
// of an earlier commit), on the same inputs, calls interleaved (a, b, a, b, ...) so that the
// machine's drift hits both alike; medians. For changes whose cost is a few percent.
//   git worktree add /tmp/base HEAD~1 && (cd /tmp/base && npm ci && npm run build)
//   node bench/ab.js /tmp/base [--threads 1] [--reps 9]
// Writes bench/results/ab.json.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { tensor, loadCase } from '../test/helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? dflt : process.argv[i + 1];
};
const base = process.argv[2];
if (!base || base.startsWith('--')) throw new Error('usage: node bench/ab.js <other checkout> [--threads N] [--reps N]');
const threads = Number(arg('threads', 1)), reps = Number(arg('reps', 9));

const load = async (dir) => (await import(pathToFileURL(path.resolve(dir, 'dist/src/index.js')).href)).createSparge({ threads });
const engines = { base: await load(base), this: await load(path.join(here, '..')) };

// The video reference case's two heads repeated to H = 8 (N = 4096, D = 64), as bench/config.js.
const c = loadCase('video_4x32x32');
const H = 8, N = 4096, D = 64;
const rep = (t) => {
  const o = new Float32Array(H * N * D);
  for (let h = 0; h < H; h++) o.set(t.data.subarray((h % 2) * N * D, (h % 2 + 1) * N * D), h * N * D);
  return tensor(o, [1, H, N, D]);
};
const q = rep(c.q), k = rep(c.k), v = rep(c.v);
const calls = {
  'dense FP32': (e) => e.denseAttention(q, k, v),
  'topk 0.25': (e) => e.attention(q, k, v, { topk: 0.25 }),
  'topk 0.1': (e) => e.attention(q, k, v, { topk: 0.1 }),
};

const times = {};
for (let r = 0; r <= reps; r++) {
  for (const [name, call] of Object.entries(calls)) {
    for (const [which, e] of Object.entries(engines)) {
      const t0 = performance.now();
      await call(e);
      // The first round warms both up.
      if (r > 0) ((times[name] ??= { base: [], this: [] })[which]).push(performance.now() - t0);
    }
  }
}
const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
const rows = Object.entries(times).map(([name, t]) => ({ call: name, baseMs: median(t.base), thisMs: median(t.this), ratio: median(t.this) / median(t.base) }));
console.log(`threads ${threads}, ${reps} interleaved repetitions, medians; base: ${base}`);
console.log('| call | base (ms) | this (ms) | this / base |\n|---|---|---|---|');
for (const r of rows) console.log(`| ${r.call} | ${r.baseMs.toFixed(1)} | ${r.thisMs.toFixed(1)} | ${r.ratio.toFixed(3)} |`);
fs.mkdirSync(path.join(here, 'results'), { recursive: true });
fs.writeFileSync(path.join(here, 'results/ab.json'), JSON.stringify({ date: new Date().toISOString(), node: process.version, threads, reps, base, rows }, null, 1) + '\n');
for (const e of Object.values(engines)) await e.dispose();
