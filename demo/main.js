// npm start: dense FP32 attention against SpargeAttn (sparse + INT8) on two inputs, with the
// time of each call, the block sparsity and the L1 error against an FP64 dense reference.
import { createSparge } from '../dist/src/index.js';
import { loadCase, videoLike, tensor, attentionF64, l1 } from '../test/helpers.js';

const sparge = await createSparge(); // threads: 'auto', simd: 'auto'
console.log(`sparge-wasm: ${sparge.features.module} SIMD module, ${sparge.threads} thread(s) (${process.release.name} ${process.version})\n`);

const c = loadCase('video_4x32x32');
const inputs = [{ name: 'video_4x32x32 (reference case: 4 frames of 32x32 tokens, H=2 N=4096 D=64)', q: c.q, k: c.k, v: c.v }];
const x = videoLike(2, 4, 32, 64, 7);
inputs.push({
  name: 'synthetic video-like tokens (4 frames of 32x32, H=2 D=64)',
  q: tensor(x.q, [1, 2, x.N, 64]), k: tensor(x.k, [1, 2, x.N, 64]), v: tensor(x.v, [1, 2, x.N, 64]),
});

const methods = [
  ['dense FP32', (q, k, v) => sparge.denseAttention(q, k, v).then((o) => ({ output: o, sparsity: 0 }))],
  ['sparse topk 0.5', (q, k, v) => sparge.attention(q, k, v, { topk: 0.5 })],
  ['sparse topk 0.25', (q, k, v) => sparge.attention(q, k, v, { topk: 0.25 })],
  ['sparse CDF 0.9, sim 0.3', (q, k, v) => sparge.attention(q, k, v, { cdfThreshold: 0.9, simThreshold: 0.3 })],
];

for (const { name, q, k, v } of inputs) {
  console.log(name);
  const ref = attentionF64(q, k, v);
  const rows = [];
  for (const [method, run] of methods) {
    await run(q, k, v); // warm-up: lets the engine compile the optimized code first
    const t0 = performance.now();
    const res = await run(q, k, v);
    const ms = performance.now() - t0;
    rows.push({ method, 'time (ms)': +ms.toFixed(1), sparsity: +res.sparsity.toFixed(3), 'L1 vs FP64': Number(l1(res.output.data, ref).toPrecision(3)) });
  }
  console.table(rows);
}
await sparge.dispose();
