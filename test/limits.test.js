// The edges of what the engine computes: buffers past 2 GiB, finite inputs of any magnitude, long
// key sequences. Each call is right (against FP64) or refused with a RangeError that names the
// arguments and the bound; never NaN, Infinity or silent zeros.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { createSparge } from '../dist/src/index.js';
import { gaussian, tensor, attentionF64, l1, rejects } from './helpers.js';

const simd = process.env.SPARGE_SIMD ?? 'auto';
const engines = [await createSparge({ threads: 1, simd }), await createSparge({ threads: 2, simd })];
const g = (dims, seed, mul = 1, add = 0) => tensor(gaussian(dims.reduce((a, b) => a * b, 1), seed).map((x) => x * mul + add), dims);
const finite = (a) => a.every(Number.isFinite);

// Each: magnitudes of q, k, v and options. The exact outputs are finite weighted means of V.
const computable = [
  ['|q|, |k| ~ 1e-19 with scale 3e38 (scores of ordinary size)', 1e-19, 1e-19, 1, { scale: 3e38 }],
  ['|q| ~ 1e30, |k| ~ 1e-30', 1e30, 1e-30, 1, {}],
  ['|q|, |k| ~ 1e-30 (squares underflow float32)', 1e-30, 1e-30, 1, {}],
  ['|q|, |k| ~ 1e15 (pooled squares near the top of float32)', 1e15, 1e-15, 1, {}],
  ['|v| ~ 7e37 (P.V sums beyond float32)', 1, 1, 7e37, {}],
  ['|v| ~ 1e36 over 2000 keys', 1, 1, 1e36, {}],
];

for (const [name, mq, mk, mv, opts] of computable) {
  test(`large or small finite inputs are computed: ${name}`, async () => {
    const N = name.includes('2000') ? 2000 : 300;
    const q = g([1, 2, 200, 40], 1, mq), k = g([1, 2, N, 40], 2, mk), v = g([1, 2, N, 40], 3, mv);
    const ref = attentionF64(q, k, v, opts);
    for (const e of engines) {
      const dense = await e.denseAttention(q, k, v, opts);
      assert.ok(finite(dense.data), 'dense output is finite');
      assert.ok(l1(dense.data, ref) < 1e-5, `dense L1 ${l1(dense.data, ref)}`);
      const sparse = await e.attention(q, k, v, { ...opts, topk: 1 });
      assert.ok(finite(sparse.output.data), 'sparse output is finite');
      // INT8 QK error only (every block kept); ordinary inputs give 0.01-0.03 here.
      assert.ok(l1(sparse.output.data, ref) < 0.05, `sparse L1 ${l1(sparse.output.data, ref)}`);
    }
  });
}

test('rescaling is exact: q and k times powers of two give the same output bit for bit', async () => {
  const q = g([1, 2, 200, 40], 1), k = g([1, 2, 300, 40], 2), v = g([1, 2, 300, 40], 3);
  const big = (t, e) => tensor(t.data.map((x) => x * 2 ** e), t.dims);
  for (const e of engines) {
    const a = await e.denseAttention(q, k, v), b = await e.denseAttention(big(q, 60), big(k, -70), v, { scale: 2 ** 10 / Math.sqrt(40) });
    assert.equal(Array.from(b.data), Array.from(a.data));
    const c = await e.attention(q, k, v), d = await e.attention(big(q, -64), big(k, 64), v);
    assert.equal(Array.from(d.output.data), Array.from(c.output.data));
  }
});

test('scores beyond float32 are refused with the bound and the arguments behind it', async () => {
  const q = g([1, 2, 64, 32], 1), k = g([1, 2, 64, 32], 2), v = g([1, 2, 64, 32], 3);
  const huge = (t) => tensor(t.data.map((x) => x * 1e19), t.dims);
  for (const e of engines) {
    const good = (await e.attention(q, k, v)).output.data;
    await rejects(() => e.denseAttention(q, k, v, { scale: 3e38 }), RangeError, /q, k and options\.scale: scores could reach [0-9.e+]+ .*bound is 2\^125/);
    await rejects(() => e.attention(huge(q), huge(k), v), RangeError, /max\|q\| [0-9.]+e\+19 x max\|k\| [0-9.]+e\+19/);
    await rejects(() => e.predictMask(huge(q), huge(k), { scale: 3e38 }), RangeError, /options\.scale 3e\+38/);
    assert.equal(Array.from((await e.attention(q, k, v)).output.data), Array.from(good), 'the engine is unchanged');
  }
});

test('dense FP32 error stays flat over long key sequences (blocked sums)', async () => {
  // Values with a mean (v + 1) make the running sums large against each term, where plain
  // sequential float32 sums lose most: 3.2e-6 relative L1 at 80K keys before blocking.
  const q = g([1, 1, 32, 64], 1, 0.5), k = g([1, 1, 80000, 64], 2, 0.5), v = g([1, 1, 80000, 64], 3, 1, 1);
  const ref = attentionF64(q, k, v);
  for (const e of engines) {
    const err = l1((await e.denseAttention(q, k, v)).data, ref);
    assert.ok(err < 5e-7, `relative L1 ${err} at 80K keys`);
  }
});

test('buffers past 2 GiB: every call up to the 4 GiB limit is right (in a child process)', () => {
  // One key per head, so each output row must equal its V row. 212,000 heads of 64 padded rows of
  // 8 channels take about 2.4 GiB, so outputs and inputs lie past the 2 GiB mark.
  const script = `
    const { createSparge } = await import(${JSON.stringify(new URL('../dist/src/index.js', import.meta.url).href)});
    const H = 212000, D = 8;
    const t = (s) => ({ data: Float32Array.from({ length: H * D }, (_, i) => Math.sin(i * 0.37 + s)), dims: [1, H, 1, D] });
    const q = t(1), k = t(2), v = t(3);
    const out = [];
    for (const threads of [1, 2]) {
      const s = await createSparge({ threads, simd: ${JSON.stringify(simd)} });
      for (const call of ['denseAttention', 'attention']) {
        const r = await s[call](q, k, v);
        const data = r.data ?? r.output.data;
        let wrong = 0;
        for (let i = 0; i < data.length; i++) if (Math.abs(data[i] - v.data[i]) > 1e-6) wrong++;
        out.push({ threads, call, wrong, gib: s.memoryBytes / 2 ** 30 });
      }
      await s.dispose();
    }
    console.log(JSON.stringify(out));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 300000 });
  assert.is(r.status, 0, r.stderr);
  for (const row of JSON.parse(r.stdout)) {
    assert.ok(row.gib > 2, `${row.call} used ${row.gib} GiB`);
    assert.is(row.wrong, 0, `${row.call} on ${row.threads} threads: ${row.wrong} wrong values`);
  }
});

test.after(async () => {
  for (const e of engines) await e.dispose();
});
test.run();
