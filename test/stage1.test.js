// Stage 1 (block prediction) against a plain FP64 restatement of ALGORITHM.md, on random and
// structured inputs. Masks are compared by the pooled mass they keep, since FP32 and FP64 may
// order near-tied blocks differently.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createSparge } from '../dist/src/index.js';
import { gaussian, tensor, videoLike, ropeLike, stage1F64, compareMasks } from './helpers.js';

const sparge = await createSparge({ threads: 1, simd: process.env.SPARGE_SIMD ?? 'auto' });

function random(H, Hkv, Nq, Nk, D, seed) {
  return {
    q: tensor(gaussian(H * Nq * D, seed), [1, H, Nq, D]),
    k: tensor(gaussian(Hkv * Nk * D, seed + 1), [1, Hkv, Nk, D]),
  };
}

const video = (() => {
  const x = videoLike(2, 1, 32, 64, 3);
  return { q: tensor(x.q, [1, 2, x.N, 64]), k: tensor(x.k, [1, 2, x.N, 64]) };
})();
const rope = (() => {
  const x = ropeLike(2, 768, 64, 4);
  return { q: tensor(x.q, [1, 2, 768, 64]), k: tensor(x.k, [1, 2, 768, 64]) };
})();

const cases = [
  ['random D=64', random(2, 2, 512, 512, 64, 1), {}],
  ['random D=8, GQA 4:2, partial blocks', random(4, 2, 300, 300, 8, 2), { causal: true }],
  ['random D=96, Nq < Nk (chunked prefill)', random(2, 1, 200, 520, 96, 3), { causal: true, blockQ: 64 }],
  ['random D=128, blocks 64x64', random(2, 2, 384, 384, 128, 4), { blockQ: 64, blockK: 64 }],
  ['video-like tokens', video, {}],
  ['RoPE-style causal', rope, { causal: true }],
];
const configs = [
  { topk: 0.5, simThreshold: -0.1 },
  { topk: 0.25, simThreshold: 0.3 },
  { cdfThreshold: 0.9, simThreshold: 0.3 },
  { cdfThreshold: 0.98, simThreshold: 0.6, attentionSink: true },
  { topk: 0.1, simThreshold: -1, smoothK: false },
  { topk: 0.25, simThreshold: -1, groupSelection: true },
  { cdfThreshold: 0.9, simThreshold: 0.3, groupSelection: true },
];

for (const [name, { q, k }, base] of cases) {
  test(`Stage 1 matches the FP64 restatement: ${name}`, async () => {
    for (const cfg of configs) {
      const o = { ...base, ...cfg };
      const mask = await sparge.predictMask(q, k, o);
      const ref = stage1F64(q, k, o);
      assert.equal(mask.dims, [1, q.dims[1], ref.nq, ref.nk]);
      assert.is(mask.blockQ, o.blockQ ?? 64);
      const cmp = compareMasks(mask.data, ref.mask, ref.phat, mask.dims, {
        causal: !!o.causal, Nq: q.dims[2], Nk: k.dims[2], blockQ: mask.blockQ, blockK: mask.blockK, tol: 1e-4, edge: false,
      });
      const where = `${name} ${JSON.stringify(cfg)}`;
      assert.ok(cmp.rowAgreement >= 0.99, `${where}: ${cmp.rowAgreement} of rows agree (worst ${cmp.worst})`);
      assert.ok(Math.abs(cmp.densityA - cmp.densityB) <= 0.005, `${where}: density ${cmp.densityA} vs ${cmp.densityB}`);
      let same = 0;
      for (let i = 0; i < mask.data.length; i++) same += mask.data[i] === ref.mask[i] ? 1 : 0;
      assert.ok(same / mask.data.length >= 0.97, `${where}: only ${same} of ${mask.data.length} entries equal`);
    }
  });
}

test('top-k keeps floor(topk * nk) blocks per row, ties to the lower block', async () => {
  // Identical key blocks: every pooled probability ties, so the first blocks must be kept.
  const D = 16, N = 640;
  const k = new Float32Array(N * D);
  for (let n = 0; n < N; n++) for (let d = 0; d < D; d++) k[n * D + d] = Math.cos(d + (n % 64));
  const q = tensor(gaussian(N * D, 9), [1, N, D]);
  const mask = await sparge.predictMask(q, tensor(k, [1, N, D]), { topk: 0.3, simThreshold: -1, smoothK: false, blockQ: 128 });
  const nk = 10;
  for (let i = 0; i < mask.dims[2]; i++) {
    assert.equal(Array.from(mask.data.subarray(i * nk, i * nk + nk)), [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
  }
  assert.ok(Math.abs(mask.sparsity - 0.7) < 1e-12);
});

test('non-similar blocks are forced, the sink is kept, causal blocks are cleared', async () => {
  const { q, k } = random(1, 1, 512, 512, 32, 11);
  // Random rows are far from similar (sim ~ 1/n): a threshold above that forces everything allowed.
  const forced = await sparge.predictMask(q, k, { topk: 0.1, simThreshold: 0.5, causal: true, blockQ: 128 });
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 8; j++) assert.is(forced.data[i * 8 + j], j * 64 <= (i + 1) * 128 - 1 ? 1 : 0);
  }
  assert.is(forced.sparsity, 0);
  const sink = await sparge.predictMask(q, k, { topk: 0.125, simThreshold: -1, attentionSink: true, blockQ: 128 });
  for (let i = 0; i < 4; i++) assert.is(sink.data[i * 8], 1);
});

test.after(() => sparge.dispose());
test.run();
