// Bad input: a TypeError or RangeError that names the argument, nothing computed, and the engine
// still answers correctly afterwards.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createSparge } from '../dist/src/index.js';
import { gaussian, tensor, rejects } from './helpers.js';

const sparge = await createSparge({ threads: 1, simd: process.env.SPARGE_SIMD ?? 'auto' });
const t = (dims, seed = 1) => tensor(gaussian(dims.reduce((a, b) => a * b, 1), seed), dims);
const q = t([1, 4, 200, 32], 1), k = t([1, 2, 200, 32], 2), v = t([1, 2, 200, 32], 3);
const good = await sparge.attention(q, k, v, { topk: 0.5 });
const goodDense = await sparge.denseAttention(q, k, v);

const withNaN = (() => { const x = t([1, 4, 200, 32], 1); x.data[77] = NaN; return x; })();
const withInf = (() => { const x = t([1, 2, 200, 32], 2); x.data[5] = -Infinity; return x; })();
const bad = [
  ['q is not a tensor', () => sparge.attention(null, k, v), TypeError, /^q must be a tensor/],
  ['q.data is a Float64Array', () => sparge.attention({ data: new Float64Array(q.data), dims: q.dims }, k, v), TypeError, /q\.data must be a Float32Array, got Float64Array/],
  ['q.dims has 2 entries', () => sparge.attention(tensor(new Float32Array(128), [2, 64]), k, v), RangeError, /q\.dims must have 3 or 4 entries, got \[2, 64\]/],
  ['k.dims has a zero', () => sparge.attention(q, tensor(new Float32Array(0), [1, 2, 0, 32]), v), RangeError, /k\.dims must be positive integers/],
  ['data length does not match dims', () => sparge.attention(q, k, tensor(v.data.subarray(1), v.dims)), RangeError, /v\.data has 12799 elements/],
  ['v.dims differ from k.dims', () => sparge.attention(q, k, t([1, 2, 199, 32])), RangeError, /v\.dims must equal k\.dims/],
  ['head dims differ', () => sparge.attention(q, t([1, 2, 200, 16]), t([1, 2, 200, 16])), RangeError, /k head dim must equal q's \(32\), got 16/],
  ['batch sizes differ', () => sparge.attention(q, t([2, 2, 200, 32]), t([2, 2, 200, 32])), RangeError, /k batch size must equal q's/],
  ['heads not divisible', () => sparge.attention(q, t([1, 3, 200, 32]), t([1, 3, 200, 32])), RangeError, /q heads \(4\) must be a multiple of k\/v heads \(3\)/],
  ['NaN in q', () => sparge.attention(withNaN, k, v), RangeError, /q\.data must be finite, got NaN at index 77/],
  ['Infinity in k', () => sparge.denseAttention(q, withInf, v), RangeError, /k\.data must be finite, got -Infinity at index 5/],
  ['topk and cdfThreshold both', () => sparge.attention(q, k, v, { topk: 0.5, cdfThreshold: 0.9 }), TypeError, /options\.topk and options\.cdfThreshold/],
  ['topk out of range', () => sparge.attention(q, k, v, { topk: 1.5 }), RangeError, /options\.topk must be in \(0, 1\], got 1\.5/],
  ['topk zero', () => sparge.predictMask(q, k, { topk: 0 }), RangeError, /options\.topk must be in \(0, 1\]/],
  ['cdfThreshold not a number', () => sparge.attention(q, k, v, { cdfThreshold: '0.9' }), TypeError, /options\.cdfThreshold must be a number/],
  ['simThreshold NaN', () => sparge.attention(q, k, v, { simThreshold: NaN }), RangeError, /options\.simThreshold/],
  ['pvThreshold negative', () => sparge.attention(q, k, v, { pvThreshold: -1 }), RangeError, /options\.pvThreshold must be in \[0, Infinity\]/],
  ['scale zero', () => sparge.attention(q, k, v, { scale: 0 }), RangeError, /options\.scale must be in \(0, Infinity\)/],
  ['blockQ not a multiple of 16', () => sparge.attention(q, k, v, { blockQ: 100 }), RangeError, /options\.blockQ must be a multiple of 16/],
  ['blockK too large', () => sparge.attention(q, k, v, { blockK: 1024 }), RangeError, /options\.blockK must be a multiple of 16 from 16 to 512/],
  ['layout unknown', () => sparge.attention(q, k, v, { layout: 'BHSD' }), TypeError, /options\.layout must be 'HND' or 'NHD'/],
  ['causal not a boolean', () => sparge.attention(q, k, v, { causal: 1 }), TypeError, /options\.causal must be a boolean/],
  ['unknown option', () => sparge.attention(q, k, v, { topK: 0.5 }), TypeError, /options\.topK is not an option/],
  ['precision other than f32', () => sparge.denseAttention(q, k, v, { precision: 'f16' }), RangeError, /options\.precision must be 'f32'/],
  ['mask with wrong dims', () => sparge.blockSparseAttention(q, k, v, { data: new Uint8Array(8), dims: [1, 4, 2, 2], blockQ: 128, blockK: 64 }), RangeError, /mask\.dims must be \[1, 4, 2, 4\]/],
  ['mask with a 2', () => sparge.blockSparseAttention(q, k, v, { data: new Uint8Array(32).fill(2), dims: [1, 4, 2, 4], blockQ: 128, blockK: 64 }), RangeError, /mask\.data must hold 0 or 1, got 2/],
  ['mask data not Uint8Array', () => sparge.blockSparseAttention(q, k, v, { data: new Array(32).fill(1), dims: [1, 4, 2, 4] }), TypeError, /mask\.data must be a Uint8Array/],
  ['mask.blockQ invalid', () => sparge.blockSparseAttention(q, k, v, { data: new Uint8Array(32), dims: [1, 4, 2, 4], blockQ: 100, blockK: 64 }), RangeError, /^mask\.blockQ must be a multiple of 16/],
  ['mask.blockK not an integer', () => sparge.blockSparseAttention(q, k, v, { data: new Uint8Array(32), dims: [1, 4, 2, 4], blockQ: 128, blockK: '64' }), TypeError, /^mask\.blockK must be an integer/],
  ['v omitted from attention', () => sparge.attention(q, k), TypeError, /^v must be a tensor/],
  ['v omitted from denseAttention', () => sparge.denseAttention(q, k), TypeError, /^v must be a tensor/],
  ['v omitted from blockSparseAttention', () => sparge.blockSparseAttention(q, k, undefined, { data: new Uint8Array(32), dims: [1, 4, 2, 4], blockQ: 128, blockK: 64 }), TypeError, /^v must be a tensor/],
  ['output of the wrong type', () => sparge.attention(q, k, v, { output: new Float64Array(q.data.length) }), TypeError, /options\.output must be a Float32Array, got Float64Array/],
  ['output of the wrong length', () => sparge.denseAttention(q, k, v, { output: new Float32Array(10) }), RangeError, /options\.output must have 25600 elements for these inputs, got 10/],
  ['output on predictMask', () => sparge.predictMask(q, k, { output: new Float32Array(25600) }), TypeError, /options\.output is not an option here/],
  ['signal not an AbortSignal', () => sparge.attention(q, k, v, { signal: {} }), TypeError, /options\.signal must be an AbortSignal/],
];

for (const [name, fn, Kind, pattern] of bad) {
  test(`bad input: ${name}`, async () => {
    await rejects(fn, Kind, pattern);
    const again = await sparge.attention(q, k, v, { topk: 0.5 });
    assert.equal(Array.from(again.output.data), Array.from(good.output.data));
  });
}

test('a request that cannot fit in WebAssembly memory is refused before allocating', async () => {
  // 2^25 tokens of head dim 1 (128 MiB per tensor) pad to 8 channels: buffers past wasm32's 4 GiB.
  const tb = tensor(new Float32Array(2 ** 25), [1, 1, 2 ** 25, 1]);
  const before = sparge.memoryBytes;
  await rejects(() => sparge.attention(tb, tb, tb), RangeError, /inputs too large: this call needs [0-9.]+ GiB of WebAssembly memory/);
  await rejects(() => sparge.denseAttention(tb, tb, tb), RangeError, /inputs too large/);
  assert.is(sparge.memoryBytes, before);
  const again = await sparge.denseAttention(q, k, v);
  assert.equal(Array.from(again.data), Array.from(goodDense.data));
});

test('createSparge options are checked', async () => {
  await rejects(() => createSparge({ threads: 0 }), RangeError, /options\.threads must be a positive integer or 'auto'/);
  await rejects(() => createSparge({ simd: 'avx' }), TypeError, /options\.simd must be 'auto', 'relaxed' or 'baseline'/);
  await rejects(() => createSparge({ thread: 2 }), TypeError, /options\.thread is not an option/);
  await rejects(() => createSparge({ int8Dot: 'vnni' }), TypeError, /options\.int8Dot must be 'auto', 'i16' or 'relaxed'/);
  await rejects(() => createSparge({ splat: 'gather' }), TypeError, /options\.splat must be 'auto', 'load' or 'shuffle'/);
  await rejects(() => createSparge({ simd: 'baseline', int8Dot: 'relaxed' }), RangeError, /options\.int8Dot: 'relaxed' needs the relaxed-SIMD module/);
  await rejects(() => createSparge({ workerUrl: 5 }), TypeError, /^options\.workerUrl must be a URL or a URL string, got Number/);
  await rejects(() => createSparge({ workerUrl: null }), TypeError, /^options\.workerUrl must be a URL or a URL string, got null/);
  await rejects(() => createSparge({ workerUrl: 'not a url' }), TypeError, /^options\.workerUrl is not a valid URL: "not a url"/);
});

test('a disposed engine says so; its properties keep answering', async () => {
  for (const threads of [1, 2]) {
    const e = await createSparge({ threads });
    await e.attention(q, k, v);
    await e.dispose();
    await rejects(() => e.attention(q, k, v), Error, /disposed/);
    await rejects(() => e.denseAttention(q, k, v), Error, /disposed/);
    assert.is(e.threads, threads);
    assert.is(e.memoryBytes, 0);
    assert.is(e.features.threads, threads > 1);
    await e.dispose();
  }
});

test("simd: 'relaxed' on an engine without relaxed SIMD names the option and what is missing", async () => {
  // Stand in for an engine without relaxed SIMD: validate() refuses the loader's relaxed probe,
  // the only module it validates that has the relaxed opcode prefix 0xfd 0x85.
  const validate = WebAssembly.validate;
  WebAssembly.validate = (bytes) => {
    const b = new Uint8Array(bytes);
    for (let i = 0; i + 1 < b.length; i++) if (b[i] === 0xfd && b[i + 1] === 0x85) return false;
    return validate(bytes);
  };
  try {
    await rejects(() => createSparge({ threads: 1, simd: 'relaxed' }), RangeError, /^options\.simd: 'relaxed' needs relaxed SIMD, which this WebAssembly engine lacks/);
    const e = await createSparge({ threads: 1 });
    assert.is(e.features.module, 'baseline');
    await e.dispose();
  } finally {
    WebAssembly.validate = validate;
  }
});

test.after(() => sparge.dispose());
test.run();
