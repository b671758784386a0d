// One benchmark configuration (N, D, threads) in one process: every implementation gets the same
// inputs, repetitions are interleaved (a, b, c, a, b, c, ...), medians reported. Prints JSON rows.
// Run by bench/attention.js; by hand:
//   node --experimental-wasm-relaxed-simd bench/config.js --n 4096 --d 64 --threads 2 --reps 5 \
//     [--impls 'sparge dense FP32,ort-node MultiHeadAttention'] [--input reference] [--memory]
import { implementations } from './impls.js';
import { loadCase, referenceCases, videoLike, attentionF64, l1 } from '../test/helpers.js';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? dflt : process.argv[i + 1];
};
const N = Number(arg('n', 4096)), D = Number(arg('d', 64)), threads = Number(arg('threads', 2));
const reps = Number(arg('reps', 5)), H = 8;
const memoryOnly = process.argv.includes('--memory');
const useReference = arg('input', 'synthetic') === 'reference' && N === 4096 && D === 64 && referenceCases().includes('video_4x32x32');

/** Video-like inputs at H = 8: the reference video case's two heads repeated, or synthetic tokens. */
function inputs() {
  const dims = [1, H, N, D];
  if (useReference) {
    const c = loadCase('video_4x32x32');
    const rep = (t) => {
      const out = new Float32Array(H * N * D);
      for (let h = 0; h < H; h++) out.set(t.data.subarray((h % 2) * N * D, (h % 2 + 1) * N * D), h * N * D);
      return out;
    };
    // The FP64 reference of the two distinct heads, repeated likewise.
    const ref2 = attentionF64(c.q, c.k, c.v);
    const fp64 = new Float64Array(H * N * D);
    for (let h = 0; h < H; h++) fp64.set(ref2.subarray((h % 2) * N * D, (h % 2 + 1) * N * D), h * N * D);
    return { source: 'shared/reference/video_4x32x32, heads repeated to 8', x: { q: rep(c.q), k: rep(c.k), v: rep(c.v), dims }, fp64 };
  }
  const x = videoLike(H, Math.max(1, N / 1024), 32, D, 7);
  return { source: `synthetic video-like tokens (${N / 1024} frames of 32x32)`, x: { q: x.q, k: x.k, v: x.v, dims } };
}

const median = (a) => [...a].sort((p, q) => p - q)[Math.floor(a.length / 2)];
const { source, x, fp64 } = inputs();
const { impls, sparge } = await implementations(threads, 'auto');
const names = arg('impls', Object.keys(impls).join(',')).split(',');
const runs = [];
for (const name of names) {
  const impl = impls[name];
  if (!impl) throw new Error(`unknown implementation ${name}`);
  const row = { name, impl, times: [], error: undefined };
  try {
    await impl.prepare(x);
    row.first = await impl.run(); // warm-up, and the output compared below
  } catch (e) {
    // Keep onnxruntime's message but not the build paths it embeds.
    row.error = String(e?.message ?? e).split('\n')[0].replace(/\S*onnxruntime\/core\/\S*/g, '…').slice(0, 160);
  }
  runs.push(row);
}
if (!memoryOnly) {
  for (let r = 0; r < reps; r++) {
    for (const row of runs) {
      if (row.error) continue;
      const t0 = performance.now();
      await row.impl.run();
      row.times.push(performance.now() - t0);
    }
  }
}
const dense = runs.find((r) => r.name === 'sparge dense FP32' && !r.error)?.first.output;
const out = runs.map((r) => ({
  impl: r.name,
  module: r.impl.module,
  N, D, H, threads,
  'median ms': r.times.length ? +median(r.times).toFixed(1) : undefined,
  'min ms': r.times.length ? +Math.min(...r.times).toFixed(1) : undefined,
  sparsity: r.first?.sparsity,
  'L1 vs FP64': fp64 && r.first ? Number(l1(r.first.output, fp64).toPrecision(3)) : undefined,
  'L1 vs dense FP32': dense && r.first ? Number(l1(r.first.output, dense).toPrecision(3)) : undefined,
  'peak RSS MB': memoryOnly ? Math.round(process.resourceUsage().maxRSS / 1024) : undefined,
  error: r.error,
  input: source,
}));
console.log(JSON.stringify(out));
await sparge.dispose();
process.exit(0); // onnxruntime-web's worker threads would keep the process alive
