// Calibration: per-head settings that keep each head's output within the target on the samples,
// and on another input of the same kind within the bounds (1.25 x target overall, 2 x per
// head); params that are plain JSON and spread into any call; progress, abort and bad arguments.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createSparge } from '../dist/src/index.js';
import { loadCase, ropeLike, tensor, attentionF64, l1, rejects } from './helpers.js';

const sparge = await createSparge({ threads: 2, simd: process.env.SPARGE_SIMD ?? 'auto' });

// The video reference case split in time: frames 0-1 are the sample, frames 2-3 the unseen input.
// half(t, part): the first or second half of a [heads, tokens, dim] tensor's tokens.
const c = loadCase('video_4x32x32');
const [H, N, D] = c.q.dims;
const half = (t, part) => {
  const [heads, len, dim] = t.dims, n = len / 2, out = new Float32Array(heads * n * dim);
  for (let h = 0; h < heads; h++) out.set(t.data.subarray((h * len + part * n) * dim, (h * len + part * n + n) * dim), h * n * dim);
  return tensor(out, [heads, n, dim]);
};
const seen = { q: half(c.q, 0), k: half(c.k, 0), v: half(c.v, 0) };
const unseen = { q: half(c.q, 1), k: half(c.k, 1), v: half(c.v, 1) };
const target = 0.05;
const progress = [];
const tuned = await sparge.calibrate([seen], { target, onProgress: (p) => progress.push(p) });

/** L1 against FP64, overall and per head. */
async function errors(x, params) {
  const ref = attentionF64(x.q, x.k, x.v);
  const out = (await sparge.attention(x.q, x.k, x.v, params)).output.data;
  const n = x.q.dims[1] * D;
  return { all: l1(out, ref), heads: Array.from({ length: H }, (_, h) => l1(out.subarray(h * n, (h + 1) * n), ref.subarray(h * n, (h + 1) * n))) };
}

test('on the sample every head is within the target, and the settings are sparse', () => {
  assert.is(tuned.heads.length, H);
  for (const h of tuned.heads) assert.ok(h.l1 <= target, `head L1 ${h.l1}`);
  assert.ok(tuned.sparsity > 0.5, `sparsity ${tuned.sparsity}`);
  assert.equal(Object.keys(tuned.params).sort(), ['blockK', 'blockQ', 'cdfThreshold', 'precision', 'pvThreshold', 'simThreshold']);
  for (const key of ['cdfThreshold', 'simThreshold', 'pvThreshold', 'precision']) assert.is(tuned.params[key].length, H);
});

test('on an unseen input of the same kind: L1 within 1.25 x target overall and 2 x per head', async () => {
  const e = await errors(unseen, tuned.params);
  assert.ok(e.all <= 1.25 * target, `overall L1 ${e.all}`);
  for (const x of e.heads) assert.ok(x <= 2 * target, `head L1 ${x}`);
});

test('params are plain JSON: a round trip gives bitwise the same call', async () => {
  const back = JSON.parse(JSON.stringify(tuned.params));
  assert.equal(back, tuned.params);
  const a = await sparge.attention(unseen.q, unseen.k, unseen.v, tuned.params);
  const b = await sparge.attention(unseen.q, unseen.k, unseen.v, { causal: false, ...back });
  assert.equal(Array.from(b.output.data), Array.from(a.output.data));
});

test('progress counts up to its total, which only shrinks (a search can end early); the cost is stated in calls', () => {
  assert.ok(progress.length > 2);
  progress.forEach((p, i) => {
    assert.is(p.done, i + 1);
    assert.ok(p.done <= p.total && p.total <= (progress[i - 1]?.total ?? Infinity), JSON.stringify(p));
  });
  assert.is(progress.at(-1).done, progress.at(-1).total);
  assert.equal(tuned.calls, { dense: 1, sparse: progress.length - 1 });
});

test("each head's reported L1 and sparsity are those of a call with the tuned settings (heads are measured where tried)", async () => {
  const ref = (await sparge.denseAttention(seen.q, seen.k, seen.v)).data;
  const res = await sparge.attention(seen.q, seen.k, seen.v, { ...tuned.params, returnMask: true });
  const n = seen.q.dims[1] * D;
  for (let h = 0; h < H; h++) {
    assert.ok(Math.abs(l1(res.output.data.subarray(h * n, (h + 1) * n), ref.subarray(h * n, (h + 1) * n)) - tuned.heads[h].l1) < 1e-9 * tuned.heads[h].l1, `head ${h}`);
  }
  assert.ok(Math.abs(res.sparsity - tuned.sparsity) < 1e-12);
});

test('causal RoPE keys, where the CDF rule drops a needed block in every row, get top-k within the target', async () => {
  const raw = ropeLike(2, 2048, D, 7), t = (data) => tensor(data, [2, 2048, D]);
  const x = { q: t(raw.q), k: t(raw.k), v: t(raw.v) };
  const ref = attentionF64(x.q, x.k, x.v, { causal: true });
  const cdf = await sparge.attention(x.q, x.k, x.v, { causal: true, cdfThreshold: 0.99, simThreshold: -1 });
  assert.ok(l1(cdf.output.data, ref) > 0.2, `the CDF rule's L1 ${l1(cdf.output.data, ref)}`);
  const r = await sparge.calibrate(x, { target, causal: true });
  assert.ok('topk' in r.params && !('cdfThreshold' in r.params), Object.keys(r.params).join());
  assert.ok(r.sparsity > 0.01, `sparsity ${r.sparsity}`);
  const out = (await sparge.attention(x.q, x.k, x.v, { causal: true, ...r.params })).output.data;
  assert.ok(l1(out, ref) <= target, `L1 ${l1(out, ref)}`);
});

test('a head that cannot gain keeps every block; one whose INT8 error takes the target runs FP32 QK', async () => {
  // Uniform attention (q = 0): no block is negligible, so no head can drop any within a tiny target.
  const flat = { q: tensor(new Float32Array(H * 512 * D), [H, 512, D]), k: half(c.k, 0), v: half(c.v, 0) };
  flat.k = tensor(flat.k.data.subarray(0, H * 512 * D), [H, 512, D]);
  flat.v = tensor(flat.v.data.subarray(0, H * 512 * D), [H, 512, D]);
  const r = await sparge.calibrate(flat, { target: 0.001 });
  assert.equal(r.params.cdfThreshold, [1, 1]);
  assert.equal(r.params.simThreshold, [-1, -1]);
  assert.is(r.sparsity, 0);
  const strict = await sparge.calibrate(seen, { target: 1e-4 });
  assert.ok(strict.heads.every((h) => h.int8L1 > 1e-4), 'INT8 QK alone is far above 1e-4');
  assert.equal(strict.params.precision, ['f32', 'f32']);
  for (const h of strict.heads) assert.ok(h.l1 <= 1e-4, `FP32 QK meets the target: ${h.l1}`);
});

test('groupSelection: tuned for GQA calls whose heads share a ranking; each head within the target, measured where tried', async () => {
  // 4 query heads over 2 kv heads of causal RoPE-like tokens; the heads of a group look the same
  // way at different temperatures, as a real model's heads of a group share some of their needs.
  const Hq = 4, Hk = 2, Nt = 2048, raw = ropeLike(Hk, Nt, D, 17);
  const q = new Float32Array(Hq * Nt * D);
  for (let h = 0; h < Hq; h++) {
    const g = Math.floor(h / 2), t = 1 + 0.5 * (h % 2);
    for (let i = 0; i < Nt * D; i++) q[h * Nt * D + i] = t * raw.q[g * Nt * D + i];
  }
  const x = { q: tensor(q, [Hq, Nt, D]), k: tensor(raw.k, [Hk, Nt, D]), v: tensor(raw.v, [Hk, Nt, D]) };
  const r = await sparge.calibrate(x, { target, causal: true, groupSelection: true });
  assert.is(r.params.groupSelection, true);
  assert.equal(r.params.simThreshold, [-1, -1, -1, -1]);
  const ref = (await sparge.denseAttention(x.q, x.k, x.v, { causal: true })).data;
  const res = await sparge.attention(x.q, x.k, x.v, { causal: true, ...r.params });
  const n = Nt * D;
  for (let h = 0; h < Hq; h++) {
    const e = l1(res.output.data.subarray(h * n, (h + 1) * n), ref.subarray(h * n, (h + 1) * n));
    assert.ok(Math.abs(e - r.heads[h].l1) < 1e-9 * r.heads[h].l1, `head ${h}: ${e} against ${r.heads[h].l1}`);
    assert.ok(e <= target, `head ${h}: L1 ${e}`);
  }
  // (These flat random tokens allow little: per-head calibration finds the same 0.01.)
  assert.ok(r.sparsity > 0, `sparsity ${r.sparsity}`);
  await rejects(() => sparge.calibrate(x, { causal: true, groupSelection: 'yes' }), TypeError, /groupSelection/);
});

test('an AbortSignal ends calibration with its reason; bad arguments are named', async () => {
  const ac = new AbortController();
  const run = sparge.calibrate(seen, { signal: ac.signal, onProgress: ({ done }) => { if (done === 3) ac.abort(new Error('enough')); } });
  await rejects(() => run, Error, /^enough$/);
  await rejects(() => sparge.calibrate(seen, { target: 0 }), RangeError, /^options\.target must be in \(0, 1\]/);
  await rejects(() => sparge.calibrate([], {}), RangeError, /^samples must hold at least one/);
  await rejects(() => sparge.calibrate([seen, { q: seen.q, k: seen.k }]), TypeError, /^samples\[1\]\.v must be a tensor/);
  await rejects(() => sparge.calibrate([seen, { q: tensor(new Float32Array(3 * 64 * D), [3, 64, D]), k: seen.k, v: seen.v }]), RangeError,
    /^samples\[1\]: every sample must have the same heads and head dim \(H 2, Hkv 2, D 64\), got H 3/);
  await rejects(() => sparge.calibrate(seen, { onProgress: 5 }), TypeError, /^options\.onProgress must be a function/);
  await rejects(() => sparge.calibrate(seen, { topk: 0.5 }), TypeError, /^options\.topk is not an option here/);
  // The engine is unchanged.
  const e = await errors(unseen, tuned.params);
  assert.ok(e.all <= 1.25 * target);
});

test.after(() => sparge.dispose());
test.run();
