// Run by relaxed.test.js in a Node with relaxed SIMD (Node 20 needs --experimental-wasm-relaxed-simd):
// computes the same calls with both modules and prints how far apart they are.
import { createSparge } from '../dist/src/index.js';
import { gaussian, tensor, loadCase, maxAbsDiff, l1, ropeLike } from './helpers.js';

const baseline = await createSparge({ threads: 1, simd: 'baseline' });
const relaxed = await createSparge({ threads: 1, simd: 'relaxed', int8Dot: 'relaxed' });
const relaxedI16 = await createSparge({ threads: 1, simd: 'relaxed', int8Dot: 'i16' });
const relaxedShuffle = await createSparge({ threads: 1, simd: 'relaxed', int8Dot: 'relaxed', splat: 'shuffle' });
const c = loadCase('video_4x32x32'), s = loadCase('stories260K_L2');
const inputs = [
  ['video_4x32x32', c.q, c.k, c.v, { topk: 0.25 }],
  ['stories260K_L2', s.q, s.k, s.v, { cdfThreshold: 0.9, simThreshold: 0.3, causal: true }],
];
const r = ropeLike(4, 333, 72, 5);
inputs.push(['rope D=72 GQA', tensor(r.q, [1, 4, 333, 72]), tensor(r.k.subarray(0, 2 * 333 * 72), [1, 2, 333, 72]),
  tensor(r.v.subarray(0, 2 * 333 * 72), [1, 2, 333, 72]), { topk: 0.5, causal: true, pvThreshold: 6 }]);
const g = (n, s) => gaussian(n, s, 3);
inputs.push(['gaussian sigma 3, D=8', tensor(g(2 * 300 * 8, 1), [2, 300, 8]), tensor(g(2 * 300 * 8, 2), [2, 300, 8]),
  tensor(g(2 * 300 * 8, 3), [2, 300, 8]), { topk: 0.5 }]);

const results = [];
for (const [name, q, k, v, opts] of inputs) {
  const a = await baseline.attention(q, k, v, { ...opts, returnMask: true });
  const b = await relaxed.attention(q, k, v, { ...opts, returnMask: true });
  const c = await relaxedI16.attention(q, k, v, { ...opts, returnMask: true });
  const e = await relaxedShuffle.attention(q, k, v, opts);
  const de = await relaxedShuffle.denseAttention(q, k, v, { causal: !!opts.causal });
  const da = await baseline.denseAttention(q, k, v, { causal: !!opts.causal });
  const db = await relaxed.denseAttention(q, k, v, { causal: !!opts.causal });
  let maskDiff = 0;
  for (let i = 0; i < a.mask.data.length; i++) maskDiff += a.mask.data[i] !== b.mask.data[i] ? 1 : 0;
  results.push({
    name,
    modules: [baseline.features.module, relaxed.features.module],
    int8Dots: [baseline.features.int8Dot, relaxed.features.int8Dot, relaxedI16.features.int8Dot],
    // Both INT8 dot paths compute the same integers: the relaxed module's outputs must not change.
    dotPathsBitwiseEqual: b.output.data.every((x, i) => Object.is(x, c.output.data[i])),
    // So do both broadcast variants, here on the relaxed dot's path.
    splatsBitwiseEqual: b.output.data.every((x, i) => Object.is(x, e.output.data[i]))
      && db.data.every((x, i) => Object.is(x, de.data[i])),
    maskEntriesDiffering: maskDiff,
    sparseMaxAbsDiff: maxAbsDiff(a.output.data, b.output.data),
    sparseL1: l1(b.output.data, a.output.data),
    denseMaxAbsDiff: maxAbsDiff(da.data, db.data),
    denseL1: l1(db.data, da.data),
  });
}
await baseline.dispose();
await relaxed.dispose();
await relaxedI16.dispose();
await relaxedShuffle.dispose();
process.stdout.write(JSON.stringify(results));
