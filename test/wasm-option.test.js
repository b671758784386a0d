// createSparge({ wasm }): the builds handed in as bytes, a URL, a Response or a compiled module
// give the same engine as the files found next to the package; only the builds given are used;
// bad values are refused with a TypeError or RangeError naming options.wasm.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import { createSparge } from '../dist/src/index.js';
import { gaussian, tensor, rejects } from './helpers.js';

const file = (kind) => new URL(`../build/sparge.${kind}.wasm`, import.meta.url);
const bytes = (kind) => new Uint8Array(fs.readFileSync(file(kind)));
const q = tensor(gaussian(2 * 300 * 32, 1), [2, 300, 32]);
const k = tensor(gaussian(2 * 300 * 32, 2), [2, 300, 32]);
const v = tensor(gaussian(2 * 300 * 32, 3), [2, 300, 32]);
const opts = { topk: 0.5, causal: true };

async function outputWith(options) {
  const s = await createSparge({ simd: 'baseline', ...options });
  try {
    return { threads: s.threads, features: s.features, data: (await s.attention(q, k, v, opts)).output.data };
  } finally {
    await s.dispose();
  }
}

const expected = (await outputWith({ threads: 1 })).data;

const sources = {
  'a Uint8Array': () => bytes('baseline'),
  'an ArrayBuffer': () => bytes('baseline').buffer,
  'a URL': () => file('baseline'),
  'a URL string': () => file('baseline').href,
  'a Response': () => new Response(bytes('baseline')),
  'a WebAssembly.Module': () => WebAssembly.compile(bytes('baseline')),
};
for (const [name, make] of Object.entries(sources)) {
  test(`options.wasm.baseline as ${name} gives the same output`, async () => {
    const r = await outputWith({ threads: 1, wasm: { baseline: await make() } });
    assert.is(r.features.module, 'baseline');
    assert.equal(r.data, expected);
  });
}

test('threads use the -shared build from options.wasm', async () => {
  const r = await outputWith({ threads: 2, wasm: { 'baseline-shared': await WebAssembly.compile(bytes('baseline-shared')) } });
  assert.is(r.threads, 2);
  assert.equal(r.data, expected);
});

test('without a -shared build in options.wasm the engine runs on one thread and says why', async () => {
  const r = await outputWith({ threads: 2, wasm: { baseline: bytes('baseline') } });
  assert.is(r.threads, 1);
  assert.match(r.features.threadsReason, /options\.wasm holds no 'baseline-shared' module/);
  assert.equal(r.data, expected);
});

test("simd: 'auto' picks among the builds options.wasm holds", async () => {
  const s = await createSparge({ threads: 1, wasm: { baseline: bytes('baseline') } });
  assert.is(s.features.module, 'baseline');
  await s.dispose();
});

test('bad options.wasm is refused, naming it', async () => {
  await rejects(() => createSparge({ wasm: 'sparge.wasm' }), TypeError, /options\.wasm must be an object keyed by module kind, got string/);
  await rejects(() => createSparge({ wasm: {} }), TypeError, /options\.wasm must hold at least one module/);
  await rejects(() => createSparge({ wasm: { fast: bytes('baseline') } }), TypeError, /options\.wasm\.fast is not a module kind; expected one of baseline, relaxed/);
  await rejects(() => createSparge({ wasm: { baseline: 42 } }), TypeError, /options\.wasm\.baseline must be a BufferSource, URL, string, Response or WebAssembly\.Module, got Number/);
  await rejects(() => createSparge({ wasm: { baseline: 'not a url' } }), TypeError, /options\.wasm\.baseline is not a valid URL: "not a url"/);
  await rejects(() => createSparge({ simd: 'relaxed', wasm: { baseline: bytes('baseline') } }), RangeError,
    /options\.wasm holds no relaxed build \('relaxed' or 'relaxed-shared'\), which simd: 'relaxed' needs/);
  await rejects(() => createSparge({ threads: 1, simd: 'baseline', wasm: { 'baseline-shared': bytes('baseline-shared') } }), RangeError,
    /options\.wasm holds no 'baseline' module, which this engine needs/);
  await rejects(() => createSparge({ threads: 1, simd: 'baseline', wasm: { baseline: new Response('', { status: 404 }) } }), Error, /HTTP 404/);
});

test.run();
