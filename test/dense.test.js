// Dense FP32 flash attention against the FP64 reference, and the sparse path with every block
// kept against dense, over head dims, lengths, GQA, batch, layouts and the causal rule.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createSparge } from '../dist/src/index.js';
import { gaussian, tensor, attentionF64, toHND, l1, maxAbsDiff } from './helpers.js';

const sparge = await createSparge({ threads: 1, simd: process.env.SPARGE_SIMD ?? 'auto' });

function inputs({ B = 1, H = 2, Hkv = H, Nq, Nk = Nq, D, layout = 'HND', seed = 1, threeD = false }) {
  const dims = (h, n) => {
    const d = layout === 'HND' ? [B, h, n, D] : [B, n, h, D];
    return threeD ? d.slice(1) : d;
  };
  return {
    q: tensor(gaussian(B * H * Nq * D, seed), dims(H, Nq)),
    k: tensor(gaussian(B * Hkv * Nk * D, seed + 1), dims(Hkv, Nk)),
    v: tensor(gaussian(B * Hkv * Nk * D, seed + 2), dims(Hkv, Nk)),
  };
}

const shapes = [
  { Nq: 256, D: 64 },
  { Nq: 200, D: 8 },
  { Nq: 130, D: 96, causal: true },
  { Nq: 300, D: 128, B: 2 },
  { Nq: 192, D: 64, H: 4, Hkv: 2, causal: true },
  { Nq: 100, Nk: 333, D: 64, causal: true },
  { Nq: 77, D: 5, H: 3, Hkv: 1 },
  { Nq: 150, D: 64, layout: 'NHD', H: 2 },
  { Nq: 129, D: 32, threeD: true, causal: true },
  { Nq: 1, Nk: 1, D: 1 },
];

for (const s of shapes) {
  const label = JSON.stringify(s);
  test(`dense FP32 matches FP64 ${label}`, async () => {
    const { q, k, v } = inputs(s);
    const opts = { causal: !!s.causal, layout: s.layout ?? 'HND' };
    const out = await sparge.denseAttention(q, k, v, opts);
    assert.equal(out.dims, q.dims);
    const ref = attentionF64(q, k, v, opts);
    const err = l1(toHND(out, opts.layout), ref);
    assert.ok(err < 2e-6, `L1 ${err}`);
  });

  test(`sparse with every block kept matches dense ${label}`, async () => {
    const { q, k, v } = inputs(s);
    const opts = { causal: !!s.causal, layout: s.layout ?? 'HND' };
    const res = await sparge.attention(q, k, v, { ...opts, topk: 1 });
    assert.is(res.sparsity, 0);
    const ref = attentionF64(q, k, v, opts);
    const err = l1(toHND(res.output, opts.layout), ref);
    // INT8 per-block codes of Gaussian data: the reference itself reaches 0.013 on such inputs.
    assert.ok(err < 0.02, `INT8 QK L1 ${err}`);
  });
}

test('NHD and HND give the same numbers', async () => {
  const a = inputs({ Nq: 200, D: 64, H: 4, Hkv: 2, seed: 5 });
  const b = inputs({ Nq: 200, D: 64, H: 4, Hkv: 2, seed: 5, layout: 'NHD' });
  // b holds different numbers in another order; write a's numbers in NHD order instead.
  for (const key of ['q', 'k', 'v']) {
    const [, H, N, D] = a[key].dims;
    for (let h = 0; h < H; h++) for (let n = 0; n < N; n++) {
      b[key].data.set(a[key].data.subarray((h * N + n) * D, (h * N + n + 1) * D), (n * H + h) * D);
    }
  }
  const ra = await sparge.attention(a.q, a.k, a.v, { topk: 0.5, causal: true });
  const rb = await sparge.attention(b.q, b.k, b.v, { topk: 0.5, causal: true, layout: 'NHD' });
  assert.equal(rb.output.dims, [1, 200, 4, 64]);
  assert.equal(Array.from(toHND(rb.output, 'NHD')), Array.from(ra.output.data));
  const da = await sparge.denseAttention(a.q, a.k, a.v, {});
  const db = await sparge.denseAttention(b.q, b.k, b.v, { layout: 'NHD' });
  assert.ok(maxAbsDiff(toHND(db, 'NHD'), da.data) === 0);
});

test('rows that see no key give zeros, never NaN', async () => {
  // Nq > Nk with the bottom-right causal rule: the first Nq - Nk query rows see nothing.
  const { q, k, v } = inputs({ Nq: 200, Nk: 64, D: 16 });
  for (const out of [
    (await sparge.denseAttention(q, k, v, { causal: true })).data,
    (await sparge.attention(q, k, v, { causal: true, topk: 1 })).output.data,
  ]) {
    assert.ok(out.every((x) => Number.isFinite(x)));
    const firstRows = out.subarray(0, (200 - 64) * 16);
    assert.ok(firstRows.every((x) => x === 0));
    const ref = attentionF64(q, k, v, { causal: true });
    assert.ok(l1(out, ref) < 0.01);
  }
});

test('all-zero inputs quantize without NaN', async () => {
  const z = (n) => tensor(new Float32Array(2 * n * 64), [2, n, 64]);
  const res = await sparge.attention(z(256), z(256), z(256), { returnMask: true });
  assert.ok(res.output.data.every((x) => x === 0));
});

test('both broadcast variants (splat: load, shuffle) give the same bits', async () => {
  const byLoad = await createSparge({ threads: 1, simd: process.env.SPARGE_SIMD ?? 'auto', splat: 'load' });
  const byShuffle = await createSparge({ threads: 1, simd: process.env.SPARGE_SIMD ?? 'auto', splat: 'shuffle' });
  assert.equal([byLoad.features.splat, byShuffle.features.splat], ['load', 'shuffle']);
  const same = (a, b) => a.length === b.length && a.every((x, i) => Object.is(x, b[i]));
  for (const s of [{ Nq: 300, D: 72, H: 4, Hkv: 2, causal: true }, { Nq: 100, Nk: 333, D: 8, causal: true }, { Nq: 256, D: 128 }]) {
    const { q, k, v } = inputs(s);
    const opts = { causal: !!s.causal };
    assert.ok(same((await byLoad.denseAttention(q, k, v, opts)).data, (await byShuffle.denseAttention(q, k, v, opts)).data), `dense ${JSON.stringify(s)}`);
    const sparse = { ...opts, topk: 0.5, pvThreshold: 4 };
    const a = await byLoad.attention(q, k, v, sparse), b = await byShuffle.attention(q, k, v, sparse);
    assert.ok(same(a.output.data, b.output.data), `sparse ${JSON.stringify(s)}`);
  }
  await byLoad.dispose();
  await byShuffle.dispose();
});

test.after(() => sparge.dispose());
test.run();
