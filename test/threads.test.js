// The worker pool: bitwise determinism for any number of threads, concurrent calls, failures inside
// workers, the fallback without SharedArrayBuffer, and a process that exits after dispose().
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { createSparge } from '../dist/src/index.js';
import { runShared, CONTROL_SLOTS, DONE, PARAMS_OFFSET } from '../dist/src/tiles.js';
import { gaussian, tensor, loadCase } from './helpers.js';

const simd = process.env.SPARGE_SIMD ?? 'auto';
const engines = {};
for (const threads of [1, 2, 3]) engines[threads] = await createSparge({ threads, simd });
const t = (dims, seed) => tensor(gaussian(dims.reduce((a, b) => a * b, 1), seed), dims);

const problems = [
  ['GQA, partial blocks, causal', t([2, 4, 300, 40], 1), t([2, 2, 300, 40], 2), t([2, 2, 300, 40], 3), { causal: true, topk: 0.5 }],
  ['NHD, cdf, sink, pv skipping', t([1, 500, 2, 64], 4), t([1, 700, 2, 64], 5), t([1, 700, 2, 64], 6),
    { layout: 'NHD', cdfThreshold: 0.9, simThreshold: 0.1, attentionSink: true, pvThreshold: 3, causal: true }],
];
{
  const c = loadCase('video_4x32x32');
  problems.push(['reference video_4x32x32', c.q, c.k, c.v, { topk: 0.25 }]);
}

const same = (a, b) => a.length === b.length && a.every((x, i) => Object.is(x, b[i]));

test('threads are what was asked for', () => {
  for (const n of [1, 2, 3]) assert.is(engines[n].threads, n);
  assert.is(engines[2].features.threads, true);
  assert.is(engines[1].features.threads, false);
});

for (const [name, q, k, v, opts] of problems) {
  test(`bitwise identical outputs for 1, 2 and 3 threads: ${name}`, async () => {
    const runs = [];
    for (const n of [1, 2, 3]) {
      const e = engines[n];
      runs.push({
        sparse: await e.attention(q, k, v, { ...opts, returnMask: true }),
        mask: await e.predictMask(q, k, opts),
        dense: await e.denseAttention(q, k, v, { causal: !!opts.causal, layout: opts.layout }),
      });
    }
    for (const r of runs.slice(1)) {
      assert.ok(same(r.sparse.output.data, runs[0].sparse.output.data), 'sparse outputs differ');
      assert.ok(same(r.sparse.mask.data, runs[0].sparse.mask.data), 'masks differ');
      assert.ok(same(r.mask.data, runs[0].mask.data), 'predictMask differs');
      assert.ok(same(r.dense.data, runs[0].dense.data), 'dense outputs differ');
      assert.is(r.sparse.sparsity, runs[0].sparse.sparsity);
    }
  });
}

test('concurrent calls with different shapes give the sequential results', async () => {
  const e = engines[2];
  const calls = [
    () => e.attention(...problems[0].slice(1, 4), problems[0][4]).then((r) => r.output.data),
    () => e.denseAttention(...problems[1].slice(1, 4), { layout: 'NHD' }).then((r) => r.data),
    () => e.predictMask(problems[0][1], problems[0][2], { topk: 0.25 }).then((r) => r.data),
    () => e.attention(...problems[1].slice(1, 4), problems[1][4]).then((r) => r.output.data),
    () => e.denseAttention(...problems[0].slice(1, 4), { causal: true }).then((r) => r.data),
  ];
  const sequential = [];
  for (const c of calls) sequential.push(await c());
  const concurrent = await Promise.all([...calls, ...calls].map((c) => c()));
  concurrent.forEach((r, i) => assert.ok(same(r, sequential[i % calls.length]), `call ${i} differs`));
});

test('a trap inside a worker rejects that call; the pool serves the next one', async () => {
  const e = engines[3];
  const [, q, k, v, opts] = problems[0];
  const before = (await e.attention(q, k, v, opts)).output.data;
  // A parameter block at the end of the address space: the first load is out of bounds.
  let err;
  try {
    await e.debugRun(0xfffffff0, [['attend_dense', 64]]);
  } catch (x) {
    err = x;
  }
  assert.instance(err, Error);
  // The calling thread, which takes tiles too, or a worker: whichever reached the trap first.
  assert.match(err.message, /(a worker|the calling thread) failed during this call: RuntimeError: memory access out of bounds/);
  // Calls queued behind the failing one are unaffected.
  const [after] = await Promise.all([e.attention(q, k, v, opts), e.debugRun(0xfffffff0, [['predict', 3]]).catch(() => {})]);
  assert.ok(same(after.output.data, before));
  assert.is(e.threads, 3);
});

test('bad input on a pool engine is refused and the pool goes on', async () => {
  const e = engines[2];
  const [, q, k, v, opts] = problems[0];
  const before = (await e.attention(q, k, v, opts)).output.data;
  const bad = tensor(Float32Array.from(v.data), v.dims);
  bad.data[1234] = NaN;
  let err;
  try {
    await e.attention(q, k, bad, opts);
  } catch (x) {
    err = x;
  }
  assert.instance(err, RangeError);
  assert.match(err.message, /v\.data must be finite, got NaN at index 1234/);
  assert.ok(same((await e.attention(q, k, v, opts)).output.data, before));
});

test('without SharedArrayBuffer the engine runs on the calling thread and says why', () => {
  const script = `
    delete globalThis.SharedArrayBuffer;
    const { createSparge } = await import(${JSON.stringify(new URL('../dist/src/index.js', import.meta.url).href)});
    const s = await createSparge({ threads: 2 });
    const x = { data: new Float32Array(2 * 200 * 16).map((_, i) => Math.sin(i)), dims: [2, 200, 16] };
    const r = await s.attention(x, x, x, { topk: 0.5 });
    console.log(JSON.stringify({ threads: s.threads, features: s.features, sum: r.output.data.reduce((a, b) => a + b, 0) }));
    await s.dispose();`;
  const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' }));
  assert.is(out.threads, 1);
  assert.is(out.features.threads, false);
  assert.is(out.features.sharedArrayBuffer, false);
  assert.match(out.features.threadsReason, /SharedArrayBuffer is not available/);
  assert.ok(Number.isFinite(out.sum));
});

test('the calling thread leaves a call only past leaveMs, and only when it looks longer than stayMs', () => {
  // One stage of 5 tiles of at least 1 ms each, run by the calling thread alone (no worker takes any).
  const share = (terms) => {
    const ctl = new Int32Array(new SharedArrayBuffer(PARAMS_OFFSET + 4096), 0, CONTROL_SLOTS);
    let ran = 0;
    const busy = () => {
      ran++;
      const end = performance.now() + 1;
      while (performance.now() < end);
    };
    return { share: runShared({ busy }, ctl, PARAMS_OFFSET, [['busy', 5]], 0, { threads: 1, ...terms }), ran, done: ctl[DONE] };
  };
  assert.equal(share({ leaveMs: -1, stayMs: -1 }), { share: 'left', ran: 0, done: 0 });
  assert.equal(share({ leaveMs: -1, stayMs: 1e9 }), { share: 'done', ran: 5, done: 5 });
  assert.equal(share({ leaveMs: 1e9, stayMs: -1 }), { share: 'done', ran: 5, done: 5 });
  // After its first tile the rest looks like 4 ms more: past a stayMs of 2.5, so it leaves.
  assert.equal(share({ leaveMs: -1, stayMs: 2.5 }), { share: 'left', ran: 1, done: 1 });
});

test('node --input-type=module -e gets its threads (workers take none of the parent\'s flags)', () => {
  const script = `
    const { createSparge } = await import(${JSON.stringify(new URL('../dist/src/index.js', import.meta.url).href)});
    const s = await createSparge({ threads: 2 });
    const x = { data: new Float32Array(300 * 32).map((_, i) => Math.cos(i)), dims: [1, 300, 32] };
    const r = await s.attention(x, x, x);
    console.log(JSON.stringify({ threads: s.threads, reason: s.features.threadsReason ?? null, finite: r.output.data.every(Number.isFinite) }));
    await s.dispose();`;
  const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '--no-warnings', '-e', script], { encoding: 'utf8' }));
  assert.equal(out, { threads: 2, reason: null, finite: true });
});

test('a Node process exits by itself after dispose(), and even without it', () => {
  for (const dispose of [true, false]) {
    const script = `
      const { createSparge } = await import(${JSON.stringify(new URL('../dist/src/index.js', import.meta.url).href)});
      const s = await createSparge({ threads: 2 });
      const x = { data: new Float32Array(300 * 32).fill(0.5), dims: [1, 300, 32] };
      await s.attention(x, x, x);
      ${dispose ? 'await s.dispose();' : ''}
      console.log('done');`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30000 });
    assert.is(r.signal, null, `the process did not exit by itself (dispose: ${dispose})`);
    assert.is(r.status, 0, r.stderr);
    assert.is(r.stdout.trim(), 'done');
  }
});

test.after(async () => {
  for (const e of Object.values(engines)) await e.dispose();
});
test.run();
