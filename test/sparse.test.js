// Stage 2 behaviour: PV skipping, user-supplied masks, sparsity accounting, memory reuse.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createSparge } from '../dist/src/index.js';
import { gaussian, tensor, videoLike, attentionF64, l1 } from './helpers.js';

const sparge = await createSparge({ threads: 1, simd: process.env.SPARGE_SIMD ?? 'auto' });
const x = videoLike(2, 1, 32, 64, 21);
const [q, k, v] = [x.q, x.k, x.v].map((d) => tensor(d, [1, 2, x.N, 64]));

test('pvThreshold: large never skips, smaller skips more and stays accurate', async () => {
  const ref = attentionF64(q, k, v);
  const never = await sparge.attention(q, k, v, { topk: 1, pvThreshold: 50 });
  const inf = await sparge.attention(q, k, v, { topk: 1, pvThreshold: Infinity });
  assert.equal(Array.from(never.output.data), Array.from(inf.output.data));
  let prev = l1(never.output.data, ref);
  const errs = [];
  for (const lambda of [20, 8, 2]) {
    const out = (await sparge.attention(q, k, v, { topk: 1, pvThreshold: lambda })).output.data;
    const e = l1(out, ref);
    errs.push(e);
    assert.ok(e >= prev - 1e-6, `error should not drop as more is skipped: ${lambda} gave ${e} after ${prev}`);
    prev = e;
  }
  // The video-like map is local: blocks far away sit many log2 units below the row maxima.
  assert.ok(errs[1] < 0.05, `lambda 8 L1 ${errs[1]}`);
  assert.ok(errs[2] > errs[0], `lambda 2 should skip something (${errs})`);
});

test('blockSparseAttention with the predicted mask equals attention()', async () => {
  const opts = { topk: 0.25, causal: true, blockQ: 64, blockK: 64 };
  const full = await sparge.attention(q, k, v, { ...opts, returnMask: true });
  const mask = await sparge.predictMask(q, k, opts);
  assert.equal(Array.from(mask.data), Array.from(full.mask.data));
  assert.is(mask.sparsity, full.sparsity);
  const again = await sparge.blockSparseAttention(q, k, v, mask, { causal: true });
  assert.equal(Array.from(again.output.data), Array.from(full.output.data));
  assert.is(again.sparsity, full.sparsity);
});

test('a hand-made mask: only the kept blocks are attended', async () => {
  const N = 256, D = 16;
  const qq = tensor(gaussian(N * D, 1), [1, N, D]);
  const kk = tensor(gaussian(N * D, 2), [1, N, D]);
  const vv = tensor(gaussian(N * D, 3), [1, N, D]);
  // Query block 0 sees key block 2 only; query block 1 sees key blocks 0 and 3.
  const mask = { data: new Uint8Array([0, 0, 1, 0, 1, 0, 0, 1]), dims: [1, 1, 2, 4], blockQ: 128, blockK: 64 };
  const res = await sparge.blockSparseAttention(qq, kk, vv, mask);
  assert.is(res.sparsity, 1 - 3 / 8);
  // FP64 attention restricted by hand to the same keys.
  const pick = (t, rows) => tensor(Float32Array.from(rows.flatMap((r) => Array.from(t.data.subarray(r * D, r * D + D)))), [1, rows.length, D]);
  const range = (a, b) => Array.from({ length: b - a }, (_, i) => a + i);
  const expect0 = attentionF64(pick(qq, range(0, 128)), pick(kk, range(128, 192)), pick(vv, range(128, 192)));
  const keys1 = [...range(0, 64), ...range(192, 256)];
  const expect1 = attentionF64(pick(qq, range(128, 256)), pick(kk, keys1), pick(vv, keys1));
  assert.ok(l1(res.output.data.subarray(0, 128 * D), expect0) < 0.02);
  assert.ok(l1(res.output.data.subarray(128 * D), expect1) < 0.02);
});

test('sparsity counts allowed blocks only', async () => {
  const N = 512, D = 32;
  const t = (s) => tensor(gaussian(N * D, s), [1, N, D]);
  const m = await sparge.predictMask(t(1), t(2), { topk: 0.25, simThreshold: -1, causal: true, blockQ: 128 });
  // nq = 4, nk = 8: allowed per row 2, 4, 6, 8 = 20; kept per row min(2, allowed) = 8.
  assert.ok(Math.abs(m.sparsity - (1 - 8 / 20)) < 1e-12, `sparsity ${m.sparsity}`);
});

test('repeated calls reuse memory instead of growing it', async () => {
  await sparge.attention(q, k, v, { topk: 0.5 });
  await sparge.denseAttention(q, k, v);
  const bytes = sparge.memoryBytes;
  for (let i = 0; i < 5; i++) {
    await sparge.attention(q, k, v, { topk: 0.5 });
    await sparge.predictMask(q, k, {});
    await sparge.denseAttention(q, k, v);
  }
  assert.is(sparge.memoryBytes, bytes);
});

test.after(() => sparge.dispose());
test.run();
