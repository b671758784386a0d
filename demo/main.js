// npm start: dense FP32 attention against SpargeAttn (sparse + INT8) on two inputs, with the
// time of each call, the block sparsity and the L1 error against an FP64 dense reference. Then
// pictures of real block masks, a global setting against calibrated per-head settings, written to
// examples/results/masks/<case>-<setting>-head<h>.svg.
import fs from 'node:fs';
import { createSparge, maskToSVG } from '../dist/src/index.js';
import { loadCase, referenceCases, videoLike, tensor, attentionF64, l1 } from '../test/helpers.js';

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

// llm_rope_causal is one of the project's shared cases, not of the repository's fixtures.
const PICTURED = ['video_4x32x32', 'llm_rope_causal'].filter((name) => referenceCases().includes(name));
const masks = new URL('../examples/results/masks/', import.meta.url);
fs.mkdirSync(masks, { recursive: true });
const pictures = [];
for (const name of PICTURED) {
  const { q, k, v, meta: { causal } } = loadCase(name);
  // Calibrated on the case itself at the README's target: the picture shows what the settings keep, not how they carry over.
  const tuned = await sparge.calibrate({ q, k, v }, { target: 0.05, causal });
  for (const [setting, options] of [['topk25', { topk: 0.25 }], ['calibrated', tuned.params]]) {
    const { mask } = await sparge.attention(q, k, v, { causal, ...options, returnMask: true });
    for (let head = 0; head < mask.dims[1]; head++) {
      const svg = maskToSVG(mask, { head, causal });
      const file = `${name}-${setting}-head${head}.svg`;
      fs.writeFileSync(new URL(file, masks), svg);
      pictures.push({ case: name, setting, head, density: Number(/density ([\d.]+)/.exec(svg)[1]), file: `examples/results/masks/${file}` });
    }
  }
}
console.log('block masks (kept / allowed blocks per head), pictured with maskToSVG');
console.table(pictures);
await sparge.dispose();
