// Decode steps back to back on one KV cache, as a generation loop runs them (bench/decode.js
// interleaves implementations instead, so each of its steps starts from cold caches). With
// --base, another built checkout runs the same loop in alternating processes: for kernel changes
// whose effect is a few percent.
//   node bench/decode-loop.js [--base /tmp/base] [--threads 2] [--n 16384] [--hkv 2] [--kind topk|dense]
//                             [--steps 200] [--rounds 2]
// Writes bench/results/decode-loop.json.
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ropeLike } from '../test/helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? dflt : process.argv[i + 1];
};
const threads = Number(arg('threads', 2)), N = Number(arg('n', 16384)), Hkv = Number(arg('hkv', 2));
const kind = arg('kind', 'topk'), steps = Number(arg('steps', 200)), rounds = Number(arg('rounds', 2));
const H = 8, D = 64;

/** One process's loop over the checkout at dir: median and minimum ms per step. */
async function loop(dir) {
  const { createSparge } = await import(pathToFileURL(path.resolve(dir, 'dist/src/index.js')).href);
  const x = ropeLike(H, N, D, 11);
  // Each head's last query row: the step that follows the history.
  const q = new Float32Array(H * D);
  for (let h = 0; h < H; h++) q.set(x.q.subarray(((h + 1) * N - 1) * D, (h + 1) * N * D), h * D);
  const sparge = await createSparge({ threads });
  const cache = sparge.createKVCache({ heads: Hkv, headDim: D, capacity: N });
  await cache.append({ data: x.k.subarray(0, Hkv * N * D), dims: [1, Hkv, N, D] }, { data: x.v.subarray(0, Hkv * N * D), dims: [1, Hkv, N, D] });
  const tq = { data: q, dims: [1, H, 1, D] };
  const t = [];
  for (let s = 0; s < steps; s++) {
    const t0 = performance.now();
    if (kind === 'dense') await cache.denseAttention(tq, { causal: true });
    else await cache.attention(tq, { causal: true, topk: 0.1 });
    t.push(performance.now() - t0);
  }
  await sparge.dispose();
  t.sort((a, b) => a - b);
  return { medianMs: t[t.length >> 1], minMs: t[0] };
}

if (process.argv.includes('--child')) {
  console.log(JSON.stringify(await loop(arg('child'))));
} else {
  const dirs = { this: path.join(here, '..'), ...(arg('base') ? { base: arg('base') } : {}) };
  const runs = [];
  for (let r = 0; r < rounds; r++) {
    for (const [which, dir] of Object.entries(dirs)) {
      const out = execFileSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2), '--child', dir], { encoding: 'utf8' });
      runs.push({ which, round: r + 1, ...JSON.parse(out.trim().split('\n').pop()) });
    }
  }
  console.log(`decode loop: ${kind === 'dense' ? 'dense' : 'top-k 0.1'}, N ${N}, H ${H}, Hkv ${Hkv}, D ${D}, ${threads} thread(s), ${steps} steps per process`);
  console.log('| checkout | round | median ms | min ms |\n|---|---|---|---|');
  for (const r of runs) console.log(`| ${r.which} | ${r.round} | ${r.medianMs.toFixed(3)} | ${r.minMs.toFixed(3)} |`);
  fs.mkdirSync(path.join(here, 'results'), { recursive: true });
  fs.writeFileSync(path.join(here, 'results/decode-loop.json'), JSON.stringify({
    date: new Date().toISOString(), node: process.version, threads, N, H, Hkv, D, kind, steps, base: arg('base'), runs,
  }, null, 1) + '\n');
}
