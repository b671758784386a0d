// Token order: hilbertOrder's curve is a permutation whose steps go to grid neighbours, for grids of
// any size; permuteTokens moves whole token rows; options.order equals permuted copies, bitwise.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createSparge, hilbertOrder, permuteTokens } from '../dist/src/index.js';
import { gaussian, tensor, videoLike, rng, rejects } from './helpers.js';

const sparge = await createSparge({ threads: 1, simd: process.env.SPARGE_SIMD ?? 'auto' });

/** Grid distance (sum over axes) between consecutive tokens on the curve, at its largest. */
function worstStep(shape) {
  const [F, H, W] = shape.length === 3 ? shape : [1, ...shape];
  const { perm } = hilbertOrder(shape);
  const at = (n) => [Math.floor(n / (H * W)), Math.floor(n / W) % H, n % W];
  let worst = 0;
  for (let i = 1; i < perm.length; i++) {
    const a = at(perm[i - 1]), b = at(perm[i]);
    worst = Math.max(worst, Math.abs(a[0] - b[0]) + Math.abs(a[1] - b[1]) + Math.abs(a[2] - b[2]));
  }
  return worst;
}

function assertPermutation(shape) {
  const { perm, inverse, shape: s } = hilbertOrder(shape);
  const n = shape.reduce((a, b) => a * b, 1);
  assert.equal(s, shape);
  assert.is(perm.length, n);
  assert.equal([...perm].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i), `perm of ${shape} is not a permutation`);
  for (let i = 0; i < n; i++) assert.is(inverse[perm[i]], i);
}

const r = rng(14);
const size = (max) => 1 + Math.floor(r() * max);
const RANDOM_SHAPES = [
  ...Array.from({ length: 150 }, () => [size(150), size(150)]),
  ...Array.from({ length: 150 }, () => [size(30), size(30), size(30)]),
  ...Array.from({ length: 20 }, () => [size(3), size(3), size(400)]),
];
const EDGE_SHAPES = [[1, 1], [1, 1000], [1000, 1], [1, 1, 1], [1, 1, 37], [37, 1, 1], [3, 30, 45], [2, 3], [3, 2], [3, 3, 3], [7, 1, 9]];

test('hilbertOrder: perm is a permutation and inverse undoes it', () => {
  for (const shape of [...EDGE_SHAPES, ...RANDOM_SHAPES.slice(0, 40), [4, 32, 32], [64, 64]]) assertPermutation(shape);
});

test('power-of-two grids: every step goes to a grid neighbour', () => {
  for (const shape of [[2, 2], [8, 8], [64, 64], [16, 4], [2, 128], [2, 2, 2], [4, 32, 32], [8, 8, 8], [2, 16, 4], [16, 16, 16]]) {
    assert.is(worstStep(shape), 1, `shape ${shape}`);
  }
});

test('any sizes: every step goes to a grid neighbour as well', () => {
  // The halves' parities are chosen so that no sub-box needs a diagonal step (src/order.ts).
  const shapes = [...EDGE_SHAPES.filter((s) => s.some((n) => n > 1)), ...RANDOM_SHAPES];
  for (let h = 1; h <= 24; h++) for (let w = 1; w <= 24; w++) if (h * w > 1) shapes.push([h, w]);
  for (let f = 1; f <= 7; f++) for (let h = 1; h <= 7; h++) for (let w = 1; w <= 7; w++) if (f * h * w > 1) shapes.push([f, h, w]);
  const steps = shapes.map(worstStep), worst = Math.max(...steps);
  // uvu's progress dots precede it on the line otherwise.
  console.log(`\nnote: worst step on the curve (grid distance) over ${shapes.length} grids (all to 24 x 24 and 7 x 7 x 7, random to 150 x 150 and 30 x 30 x 30, 3 x 30 x 45): ${worst}`);
  assert.equal(shapes.filter((_, i) => steps[i] > 1), [], 'grids with a longer step');
});

test('hilbertOrder refuses bad shapes, naming the argument', async () => {
  await rejects(() => hilbertOrder(16), TypeError, /^shape must be an array \[height, width\] or \[frames, height, width\], got number/);
  await rejects(() => hilbertOrder([4]), RangeError, /^shape must have 2 entries .* or 3 .*, got \[4\]/);
  await rejects(() => hilbertOrder([1, 2, 3, 4]), RangeError, /got \[1, 2, 3, 4\]/);
  await rejects(() => hilbertOrder([4, 0]), RangeError, /^shape must hold positive integers, got \[4, 0\]/);
  await rejects(() => hilbertOrder([4, 2.5]), RangeError, /positive integers/);
});

/** [H, N, D] data as NHD: [N, H, D]. */
function toNHD(data, H, N, D) {
  const out = new Float32Array(data.length);
  for (let h = 0; h < H; h++) for (let n = 0; n < N; n++) out.set(data.subarray((h * N + n) * D, (h * N + n + 1) * D), (n * H + h) * D);
  return out;
}

test('permuteTokens moves token rows, and the inverse gives the input back bitwise, both layouts', () => {
  const B = 2, H = 3, N = 5 * 7, D = 6, order = hilbertOrder([5, 7]);
  const data = gaussian(B * H * N * D, 4);
  data[3] = NaN; // rows move as bits: a NaN too
  for (const [layout, dims, rowAt] of [
    ['HND', [B, H, N, D], (b, h, n) => ((b * H + h) * N + n) * D],
    ['NHD', [B, N, H, D], (b, h, n) => ((b * N + n) * H + h) * D],
  ]) {
    const x = tensor(data, dims);
    const y = permuteTokens(x, order.perm, layout);
    assert.equal(y.dims, dims);
    for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < N; i++) {
      const got = y.data.subarray(rowAt(b, h, i), rowAt(b, h, i) + D), want = data.subarray(rowAt(b, h, order.perm[i]), rowAt(b, h, order.perm[i]) + D);
      assert.equal(Array.from(got), Array.from(want), `${layout} row ${i}`);
    }
    const back = permuteTokens(y, order.inverse, layout);
    assert.equal(new Uint32Array(back.data.buffer), new Uint32Array(data.buffer));
  }
  // 3-d dims (B = 1), and a plain array as perm.
  const z = permuteTokens(tensor(data.subarray(0, H * N * D), [H, N, D]), Array.from(order.perm));
  assert.equal(z.dims, [H, N, D]);
});

test('permuteTokens refuses bad input, naming the argument', async () => {
  const x = tensor(new Float32Array(2 * 6 * 4), [2, 6, 4]);
  await rejects(() => permuteTokens(null, [0]), TypeError, /^tensor must be a tensor/);
  await rejects(() => permuteTokens(x, [0, 1, 2]), RangeError, /^perm must have one entry per token \(6\), got 3/);
  await rejects(() => permuteTokens(x, [0, 1, 2, 3, 4, 4]), RangeError, /^perm must be a permutation of 0\.\.5, got 4 twice \(at 4 and 5\)/);
  await rejects(() => permuteTokens(x, [0, 1, 2, 3, 4, 6]), RangeError, /^perm must be a permutation of 0\.\.5, got 6 at index 5/);
  await rejects(() => permuteTokens(x, [0, 1, 2, 3, 4, 1.5]), RangeError, /got 1\.5 at index 5/);
  await rejects(() => permuteTokens(x, 'abc'), TypeError, /^perm must be a Uint32Array or an array of token indices, got String/);
  await rejects(() => permuteTokens(x, [0, 1, 2, 3, 4, 5], 'BHSD'), TypeError, /^layout must be 'HND' or 'NHD', got "BHSD"/);
  // NHD: the token axis is dims[1] of 3-d dims.
  await rejects(() => permuteTokens(x, [0, 1, 2, 3, 4, 5], 'NHD'), RangeError, /^perm must have one entry per token \(2\), got 6/);
});

// A small video: 3 frames of 12 x 20 (720 tokens), two heads.
const GRID = [3, 12, 20], H = 2, D = 32;
const vid = videoLike(H, GRID[0], [GRID[1], GRID[2]], D, 5);
const N = vid.N, ORDER = hilbertOrder(GRID);
const inLayout = (layout) => {
  const dims = layout === 'HND' ? [H, N, D] : [N, H, D];
  const as = (d) => tensor(layout === 'HND' ? d : toNHD(d, H, N, D), dims);
  return { q: as(vid.q), k: as(vid.k), v: as(vid.v) };
};
const copiesOf = (x, layout) => ({ q: permuteTokens(x.q, ORDER.perm, layout), k: permuteTokens(x.k, ORDER.perm, layout), v: permuteTokens(x.v, ORDER.perm, layout) });
const bitwise = (a, b, what) => assert.equal(new Uint32Array(a.buffer, a.byteOffset, a.length), new Uint32Array(b.buffer, b.byteOffset, b.length), what);
/** The lse [H, N] of curve-ordered rows, back in the tokens' order. */
const lseBack = (lse) => {
  const out = new Float32Array(lse.length);
  for (let h = 0; h < H; h++) for (let i = 0; i < N; i++) out[h * N + ORDER.perm[i]] = lse[h * N + i];
  return out;
};

for (const layout of ['HND', 'NHD']) {
  test(`options.order equals attention on permuted copies, un-permuted, bitwise (${layout})`, async () => {
    const x = inLayout(layout), c = copiesOf(x, layout);
    for (const opts of [{ cdfThreshold: 0.9, simThreshold: 0.3 }, { topk: 0.3, pvThreshold: 8 }, { topk: 1 }]) {
      const o = { ...opts, layout, returnMask: true, returnLse: true };
      const got = await sparge.attention(x.q, x.k, x.v, { ...o, order: ORDER });
      const ref = await sparge.attention(c.q, c.k, c.v, o);
      bitwise(got.output.data, permuteTokens(ref.output, ORDER.inverse, layout).data, `output, ${JSON.stringify(opts)}`);
      assert.equal(got.output.dims, x.q.dims);
      assert.equal(Array.from(got.mask.data), Array.from(ref.mask.data));
      assert.is(got.sparsity, ref.sparsity);
      bitwise(got.lse.data, lseBack(ref.lse.data), 'lse');
    }
    const dense = await sparge.denseAttention(x.q, x.k, x.v, { layout, order: ORDER.perm });
    const denseRef = await sparge.denseAttention(c.q, c.k, c.v, { layout });
    bitwise(dense.data, permuteTokens(denseRef, ORDER.inverse, layout).data, 'dense');
  });
}

test('options.order in predictMask, blockSparseAttention and into options.output', async () => {
  const x = inLayout('HND'), c = copiesOf(x, 'HND');
  const opts = { cdfThreshold: 0.95 };
  const mask = await sparge.predictMask(x.q, x.k, { ...opts, order: ORDER });
  assert.equal(Array.from(mask.data), Array.from((await sparge.predictMask(c.q, c.k, opts)).data));
  const output = new Float32Array(H * N * D);
  const res = await sparge.blockSparseAttention(x.q, x.k, x.v, mask, { order: Array.from(ORDER.perm), output });
  assert.ok(res.output.data === output);
  const ref = await sparge.blockSparseAttention(c.q, c.k, c.v, mask);
  bitwise(output, permuteTokens(ref.output, ORDER.inverse).data, 'block-sparse output');
  const sparse = await sparge.attention(x.q, x.k, x.v, { ...opts, order: ORDER });
  bitwise(sparse.output.data, output, 'attention = blockSparseAttention with its mask');
});

test('calibrate with an order tunes as on permuted copies', async () => {
  const x = inLayout('HND'), c = copiesOf(x, 'HND');
  const got = await sparge.calibrate(x, { target: 0.05, order: ORDER });
  const ref = await sparge.calibrate(c, { target: 0.05 });
  assert.equal(got.params, ref.params);
  assert.equal(got.heads, ref.heads);
});

test('options.order refusals name the option and what was expected', async () => {
  const x = inLayout('HND');
  const short = tensor(vid.q.subarray(0, H * 100 * D), [H, 100, D]);
  await rejects(() => sparge.attention(x.q, x.k, x.v, { order: ORDER, causal: true }), RangeError, /^options\.order cannot be used with causal: true/);
  await rejects(() => sparge.attention(short, x.k, x.v, { order: ORDER }), RangeError, /^options\.order needs q and k of equal length \(self-attention\), got 100 and 720/);
  await rejects(() => sparge.attention(x.q, x.k, x.v, { order: hilbertOrder([4, 4]) }), RangeError, /^options\.order\.perm must have one entry per token \(720\), got 16/);
  await rejects(() => sparge.denseAttention(x.q, x.k, x.v, { order: new Uint32Array(720) }), RangeError, /^options\.order must be a permutation of 0\.\.719, got 0 twice/);
  await rejects(() => sparge.predictMask(x.q, x.k, { order: {} }), TypeError, /^options\.order must be a token order \{ perm \}/);
  await rejects(() => sparge.attention(x.q, x.k, x.v, { order: 5 }), TypeError, /^options\.order must be a Uint32Array or an array of token indices/);
  await rejects(() => sparge.calibrate([x, { q: short, k: short, v: short }], { order: ORDER }), RangeError, /^options\.order\.perm must have one entry per token \(100\), got 720/);
  const cache = sparge.createKVCache({ heads: H, headDim: D, capacity: N });
  await cache.append(x.k, x.v);
  await rejects(() => cache.attention(x.q, { order: ORDER }), TypeError, /^options\.order is not an option here/);
  await cache.dispose();
  // Still answers afterwards.
  const again = await sparge.attention(x.q, x.k, x.v, { order: ORDER, topk: 0.5 });
  assert.is(again.output.data.length, H * N * D);
});

test.after(() => sparge.dispose());
test.run();
