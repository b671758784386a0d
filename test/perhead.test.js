// Per-head settings: topk, cdfThreshold, simThreshold and pvThreshold take one number for every
// query head or an array of one per head. Heads are independent, so head h of a call with arrays
// must be bitwise head h of the call with every head set to entry h.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createSparge } from '../dist/src/index.js';
import { gaussian, tensor, rejects, videoLike } from './helpers.js';

const simd = process.env.SPARGE_SIMD ?? 'auto';
const engines = [await createSparge({ threads: 1, simd }), await createSparge({ threads: 2, simd })];
const H = 4, N = 1024, D = 32;
const x = videoLike(2, 1, 32, D, 3);
// Four query heads over two kv heads (GQA), video-like so that the settings change the masks.
const q = tensor(Float32Array.from({ length: H * N * D }, (_, i) => x.q[i % (2 * N * D)] + 0.3 * Math.sin(i)), [1, H, N, D]);
const k = tensor(x.k, [1, 2, N, D]), v = tensor(x.v, [1, 2, N, D]);

const head = (data, h, per = N * D) => Array.from(data.subarray(h * per, (h + 1) * per));

const settings = [
  ['topk', { topk: [0.1, 0.25, 0.5, 1] }],
  ['cdfThreshold', { cdfThreshold: [0.5, 0.9, 0.99, 1], simThreshold: -1 }],
  ['simThreshold', { topk: 0.25, simThreshold: [-1, 0.2, 0.6, 0.95] }],
  ['pvThreshold', { topk: 0.5, pvThreshold: [0, 2, 8, 50], causal: true }],
  ['precision', { topk: 0.5, precision: ['f32', 'int8', 'int8', 'f32'] }],
];

for (const [name, opts] of settings) {
  test(`per-head ${name}: head h equals the call with every head set to entry h`, async () => {
    for (const e of engines) {
      const mixed = await e.attention(q, k, v, { ...opts, returnMask: true });
      const masks = new Set();
      for (let h = 0; h < H; h++) {
        const one = Object.fromEntries(Object.entries(opts).map(([key, val]) => [key, Array.isArray(val) ? val[h] : val]));
        const single = await e.attention(q, k, v, { ...one, returnMask: true });
        const per = mixed.mask.dims[2] * mixed.mask.dims[3];
        assert.equal(head(mixed.output.data, h), head(single.output.data, h), `${name} head ${h}: output`);
        assert.equal(head(mixed.mask.data, h, per), head(single.mask.data, h, per), `${name} head ${h}: mask`);
        masks.add(head(single.mask.data, h, per).join(''));
      }
      if (!['pvThreshold', 'precision'].includes(name)) assert.ok(masks.size > 1, `${name}: the entries should give different masks`);
      const stage1 = await e.predictMask(q, k, opts);
      assert.equal(Array.from(stage1.data), Array.from(mixed.mask.data), 'predictMask agrees');
      const blocks = await e.blockSparseAttention(q, k, v, stage1, { ...opts, topk: undefined, cdfThreshold: undefined, simThreshold: undefined });
      assert.equal(Array.from(blocks.output.data), Array.from(mixed.output.data), 'blockSparseAttention agrees');
    }
  });
}

test("precision 'f32' with every block kept and no skipping is bitwise dense attention", async () => {
  for (const e of engines) {
    for (const causal of [false, true]) {
      const dense = await e.denseAttention(q, k, v, { causal });
      const f32 = await e.attention(q, k, v, { causal, topk: 1, simThreshold: -1, pvThreshold: Infinity, precision: 'f32' });
      assert.equal(Array.from(f32.output.data), Array.from(dense.data));
    }
  }
});

test('per-head settings are JSON: arrays survive JSON.stringify and JSON.parse', async () => {
  const params = { cdfThreshold: [0.9, 0.97, 1, 0.95], simThreshold: [-0.1, 0.2, 0.3, 0.4], pvThreshold: [8, 50, 50, 12] };
  const a = await engines[0].attention(q, k, v, params);
  const b = await engines[0].attention(q, k, v, JSON.parse(JSON.stringify(params)));
  assert.equal(Array.from(a.output.data), Array.from(b.output.data));
});

test('per-head arrays of the wrong length or with bad entries are refused, naming the option', async () => {
  const e = engines[0];
  const good = (await e.attention(q, k, v, { topk: 0.5 })).output.data;
  await rejects(() => e.attention(q, k, v, { topk: [0.5, 0.5] }), RangeError, /^options\.topk must have one entry per query head \(4\), got 2$/);
  await rejects(() => e.predictMask(q, k, { cdfThreshold: [0.9, 0.9, 1.5, 0.9] }), RangeError, /^options\.cdfThreshold\[2\] must be in \(0, 1\], got 1\.5/);
  await rejects(() => e.attention(q, k, v, { simThreshold: [0, 0, NaN, 0] }), RangeError, /^options\.simThreshold\[2\]/);
  await rejects(() => e.attention(q, k, v, { pvThreshold: [1, '2', 3, 4] }), TypeError, /^options\.pvThreshold\[1\] must be a number, got string/);
  await rejects(() => e.attention(q, k, v, { pvThreshold: [1, , 3, 4] }), TypeError, /^options\.pvThreshold\[1\] must be a number, got undefined/);
  await rejects(() => e.attention(q, k, v, { topk: '0.5' }), TypeError, /^options\.topk must be a number or an array of one per query head, got string/);
  await rejects(() => e.attention(q, k, v, { topk: [0.5, 0.5, 0.5, 0.5], cdfThreshold: [1, 1, 1, 1] }), TypeError, /give one of them, not both/);
  await rejects(() => e.attention(q, k, v, { precision: 'fp16' }), TypeError, /^options\.precision must be 'int8' or 'f32', got "fp16"/);
  await rejects(() => e.attention(q, k, v, { precision: ['f32', 'int8'] }), RangeError, /^options\.precision must have one entry per query head \(4\), got 2/);
  await rejects(() => e.predictMask(q, k, { precision: 'f16' }), TypeError, /^options\.precision must be 'int8' or 'f32'/);
  assert.equal(Array.from((await e.attention(q, k, v, { topk: 0.5 })).output.data), Array.from(good));
});

test.after(async () => {
  for (const e of engines) await e.dispose();
});
test.run();
