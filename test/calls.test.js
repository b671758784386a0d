// The life of one call: its inputs are taken when it is made, its output can go into the caller's
// buffer, an AbortSignal ends it, and a worker that dies under it fails it without harming the
// engine. Each on one thread (the calling thread) and on a pool of two.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createSparge } from '../dist/src/index.js';
import { gaussian, tensor, rejects } from './helpers.js';

const simd = process.env.SPARGE_SIMD ?? 'auto';
const engines = { 1: await createSparge({ threads: 1, simd }), 2: await createSparge({ threads: 2, simd }) };
const t = (dims, seed) => tensor(gaussian(dims.reduce((a, b) => a * b, 1), seed), dims);
const bits = (a) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
const clone = (x) => tensor(x.data.slice(), x.dims);

const q = t([1, 4, 300, 40], 1), k = t([1, 2, 300, 40], 2), v = t([1, 2, 300, 40], 3);
// Long enough (hundreds of ms) that an abort or a worker's death lands while it runs.
const big = [t([1, 8, 4096, 64], 4), t([1, 8, 4096, 64], 5), t([1, 8, 4096, 64], 6)];

for (const [n, e] of Object.entries(engines)) {
  const expected = await e.attention(q, k, v, { topk: 0.5 });
  const expectedDense = await e.denseAttention(q, k, v, { causal: true });

  test(`${n} thread(s): inputs are read when the call is made; the caller may refill them at once`, async () => {
    const q2 = clone(q), k2 = clone(k), v2 = clone(v);
    const first = e.attention(q2, k2, v2, { topk: 0.5 });
    q2.data.fill(7); k2.data.fill(-3); v2.data.fill(1);
    assert.equal(bits((await first).output.data), bits(expected.output.data));
    // A call queued behind another one takes copies.
    const q3 = clone(q), k3 = clone(k), v3 = clone(v);
    const calls = [e.attention(...big, { topk: 0.1 }), e.denseAttention(q3, k3, v3, { causal: true })];
    q3.data.fill(0); k3.data.fill(0); v3.data.reverse();
    assert.equal(bits((await calls[1]).data), bits(expectedDense.data));
    await calls[0];
  });

  test(`${n} thread(s): options.output receives the result, with no other allocation of it`, async () => {
    const out = new Float32Array(q.data.length).fill(NaN);
    const res = await e.attention(q, k, v, { topk: 0.5, output: out });
    assert.ok(res.output.data === out);
    assert.equal(bits(out), bits(expected.output.data));
    const dense = await e.denseAttention(q, k, v, { causal: true, output: out });
    assert.ok(dense.data === out);
    assert.equal(bits(out), bits(expectedDense.data));
    // Padded shapes and NHD are copied row by row into the same buffer.
    const qn = t([1, 37, 3, 20], 7), kn = t([1, 50, 3, 20], 8), vn = t([1, 50, 3, 20], 9);
    const plain = await e.denseAttention(qn, kn, vn, { layout: 'NHD' });
    const into = new Float32Array(plain.data.length);
    assert.ok((await e.denseAttention(qn, kn, vn, { layout: 'NHD', output: into })).data === into);
    assert.equal(bits(into), bits(plain.data));
  });

  test(`${n} thread(s): padding rows that no kernel reads are left unwritten, and results do not depend on what they hold`, async () => {
    // Few query rows (a decode step, a short call) fill one row group of 4 per head, not a whole
    // block; here the rest of their blocks lie where a refused call left NaN.
    const cache = e.createKVCache({ heads: 2, headDim: 40, capacity: 320 });
    await cache.append(tensor(k.data, [2, 300, 40]), tensor(v.data, [2, 300, 40]));
    const shorts = [1, 3, 5].map((nq) => [t([1, 4, nq, 40], 20 + nq), t([1, 2, nq, 40], 30 + nq)]);
    const run = async () => {
      const out = [];
      for (const [qs, ks] of shorts) {
        out.push((await cache.attention(qs, { causal: true, topk: 0.3 })).output.data);
        out.push((await cache.attention(qs, { causal: true, topk: 0.3, groupSelection: true })).output.data);
        out.push((await cache.denseAttention(qs, { causal: true })).data);
        out.push((await e.attention(qs, ks, ks, { topk: 0.5, precision: ['f32', 'int8', 'int8', 'int8'] })).output.data);
        out.push((await e.denseAttention(qs, ks, ks)).data);
      }
      return out;
    };
    const before = await run();
    const nan = tensor(new Float32Array(4 * 300 * 40).fill(NaN), [1, 4, 300, 40]);
    await rejects(() => e.attention(nan, nan, nan), Error, /q/);
    const after = await run();
    for (let i = 0; i < before.length; i++) {
      assert.ok(after[i].every(Number.isFinite), `call ${i}`);
      assert.equal(bits(after[i]), bits(before[i]), `call ${i}`);
    }
    await cache.dispose();
  });

  test(`${n} thread(s): an AbortSignal ends the call with its reason; the engine is unchanged`, async () => {
    const reason = new Error('stop now');
    await rejects(() => e.attention(q, k, v, { signal: AbortSignal.abort(reason) }), Error, /stop now/);
    const c = new AbortController();
    const call = e.denseAttention(...big, { signal: c.signal });
    setTimeout(() => c.abort(reason), 30);
    let err;
    try {
      await call;
    } catch (x) {
      err = x;
    }
    assert.ok(err === reason, `rejected with ${err}`);
    // Aborted while queued, behind a call that goes on.
    const c2 = new AbortController();
    const [ahead, queued] = [e.attention(...big, { topk: 0.25 }), e.predictMask(q, k, { signal: c2.signal })];
    c2.abort();
    await rejects(() => queued, Error, /abort/i);
    assert.ok((await ahead).output.data.every(Number.isFinite));
    assert.equal(bits((await e.attention(q, k, v, { topk: 0.5 })).output.data), bits(expected.output.data));
    assert.equal(bits((await e.denseAttention(q, k, v, { causal: true })).data), bits(expectedDense.data));
  });
}

test('a worker that dies during a call fails that call; a new worker takes its place', async () => {
  const e = engines[2];
  const call = e.denseAttention(...big);
  setTimeout(() => e.debugTerminate(0), 50);
  await rejects(() => call, Error, /a worker failed during this call: worker 0 died \(worker exited with code 1\); a new worker takes its place/);
  assert.is(e.threads, 2);
  const again = await e.attention(q, k, v, { topk: 0.5 });
  assert.equal(bits(again.output.data), bits((await engines[1].attention(q, k, v, { topk: 0.5 })).output.data));
});

test.after(async () => {
  for (const e of Object.values(engines)) await e.dispose();
});
test.run();
