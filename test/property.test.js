// Property-based tests (fast-check) over random shapes and options: dense attention against FP64,
// the sparse path against an FP64 emulation of its INT8 scheme, and random bad calls. A failure
// prints fast-check's seed and path; SPARGE_FC_SEED=<seed> replays it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { createSparge } from '../dist/src/index.js';
import { gaussian, tensor, attentionF64, toHND, maxAbsDiff, stage1F64, compareMasks } from './helpers.js';
import { emulateSparse, tieFreeQ, tieFreeK } from './emulate.js';

const simd = process.env.SPARGE_SIMD ?? 'auto';
const engines = { 1: await createSparge({ threads: 1, simd }), 2: await createSparge({ threads: 2, simd }) };

const fixedSeed = process.env.SPARGE_FC_SEED;
if (fixedSeed !== undefined && !Number.isInteger(Number(fixedSeed))) throw new Error(`SPARGE_FC_SEED must be an integer, got ${fixedSeed}`);
const runs = (numRuns) => ({ numRuns, includeErrorInReport: true, ...(fixedSeed === undefined ? {} : { seed: Number(fixedSeed) }) });

// Error bounds, as a fraction of max|v|: about 10x the worst seen in 4000 random cases each, so a
// real slip (a wrong scale, key, block or rounding mode moves outputs by 1e-3 of |v| or more) fails:
// - dense: FP32 QK^T, a polynomial exp2 (relative error 2.5e-7) and FP32 P V sums over up to 300
//   keys; worst seen 4.4e-6.
// - sparse: the integer QK^T is exact, so what remains is FP32 rounding of the dequantized scores
//   (up to ~60 in log2 units with sigma 2 and twice the default scale), exp2 and the P V sums; worst
//   seen 5.4e-6. On these inputs no code can differ from the emulation's (see emulate.js); on plain
//   Gaussian ones a code near a rounding tie flips in most calls with smoothK (3e-4 of max|v| seen).
const DENSE_TOL = 5e-5;
const SPARSE_TOL = 5e-5;

const same = (a, b) => a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
const maxAbs = (x) => x.reduce((m, y) => Math.max(m, Math.abs(y)), 0);

/** A tensor in `layout` from HND data [B, H, N, D]; 3-d dims when asked and B = 1. */
function inLayout(hnd, [B, H, N, D], layout, threeD) {
  let data = hnd;
  if (layout === 'NHD') {
    data = new Float32Array(hnd.length);
    for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let n = 0; n < N; n++) {
      data.set(hnd.subarray(((b * H + h) * N + n) * D, ((b * H + h) * N + n + 1) * D), ((b * N + n) * H + h) * D);
    }
  }
  const dims = layout === 'NHD' ? [B, N, H, D] : [B, H, N, D];
  return tensor(data, threeD && B === 1 ? dims.slice(1) : dims);
}

/** Output agrees with the FP64 result within tol * max|v|, and is exactly 0 wherever that is 0 (rows that see no key). */
function assertClose(out, ref, vmax, tol, what) {
  const err = maxAbsDiff(out, ref);
  assert.ok(err <= tol * vmax, `${what}: max abs error ${err} = ${err / vmax} of max|v|, bound ${tol}`);
  for (let i = 0; i < ref.length; i++) if (ref[i] === 0) assert.ok(out[i] === 0, `${what}: element ${i} is ${out[i]}, 0 expected (no key seen)`);
}

// Shapes: GQA ratios 1, 2, 4; Nq and Nk independent (causal rows align bottom-right, and rows of a
// query longer than the keys see none); head dims not multiples of 8; both layouts, 3-d dims.
const shape = {
  B: fc.integer({ min: 1, max: 2 }),
  Hkv: fc.integer({ min: 1, max: 2 }),
  group: fc.constantFrom(1, 2, 4),
  Nq: fc.integer({ min: 1, max: 300 }),
  Nk: fc.integer({ min: 1, max: 300 }),
  D: fc.integer({ min: 1, max: 80 }),
  layout: fc.constantFrom('HND', 'NHD'),
  threeD: fc.boolean(),
  causal: fc.boolean(),
  // A multiple of the default 1 / sqrt(D), so that scores stay in a range softmax can resolve.
  scaleBy: fc.option(fc.double({ min: 0.25, max: 2, noNaN: true }), { nil: undefined }),
  sigma: fc.constantFrom(0.5, 1, 2),
  engine: fc.constantFrom(1, 2),
  seed: fc.integer({ min: 0, max: 0x3fffffff }),
};
const dimsOf = ({ B, Hkv, group, Nq, Nk, D }) => ({ qd: [B, Hkv * group, Nq, D], kd: [B, Hkv, Nk, D] });
const scaleOf = ({ scaleBy, D }) => (scaleBy === undefined ? undefined : scaleBy / Math.sqrt(D));

test('dense attention matches FP64 attention on random shapes', async () => {
  await fc.assert(fc.asyncProperty(fc.record(shape), async (c) => {
    const { qd, kd } = dimsOf(c);
    const n = (d) => d.reduce((a, b) => a * b, 1);
    const [qh, kh, vh] = [gaussian(n(qd), c.seed, c.sigma), gaussian(n(kd), c.seed + 1, c.sigma), gaussian(n(kd), c.seed + 2)];
    const [q, k, v] = [inLayout(qh, qd, c.layout, c.threeD), inLayout(kh, kd, c.layout, c.threeD), inLayout(vh, kd, c.layout, c.threeD)];
    const opts = { causal: c.causal, scale: scaleOf(c), layout: c.layout };
    const out = await engines[c.engine].denseAttention(q, k, v, opts);
    assert.equal(out.dims, q.dims);
    assertClose(toHND(out, c.layout), attentionF64(q, k, v, opts), maxAbs(vh), DENSE_TOL, 'dense');
  }), runs(60));
});

const sparse = {
  ...shape,
  blockQ: fc.constantFrom(16, 32, 64, 128),
  blockK: fc.constantFrom(16, 32, 64, 128),
  rule: fc.oneof(
    fc.record({ topk: fc.double({ min: 0.01, max: 1, noNaN: true }) }),
    fc.record({ cdfThreshold: fc.double({ min: 0.05, max: 0.999, noNaN: true }) }),
  ),
  // Not near 0 or 1: blocks of one row have self-similarity 1 and blocks of pairs x, -x (see
  // emulate.js) 0, up to rounding that puts FP32 and FP64 on either side of such a threshold.
  simThreshold: fc.double({ min: -0.5, max: 0.95, noNaN: true }).filter((x) => Math.abs(x) > 1e-3),
  attentionSink: fc.boolean(),
  smoothK: fc.boolean(),
};

test('the sparse path matches an FP64 emulation of its INT8 scheme on its own mask', async () => {
  await fc.assert(fc.asyncProperty(fc.record(sparse), async (c) => {
    const { qd, kd } = dimsOf(c);
    const qh = tieFreeQ(qd, c.blockQ, c.sigma, c.seed);
    // A per-channel offset of K is what smoothing removes; without smoothK it would move the codes onto ties.
    const kh = tieFreeK(kd, c.blockK, c.sigma, c.smoothK ? 2 * c.sigma : 0, c.seed + 1);
    const vh = gaussian(kd.reduce((a, b) => a * b, 1), c.seed + 2);
    const [q, k, v] = [inLayout(qh, qd, c.layout, c.threeD), inLayout(kh, kd, c.layout, c.threeD), inLayout(vh, kd, c.layout, c.threeD)];
    const opts = {
      causal: c.causal, scale: scaleOf(c), layout: c.layout, blockQ: c.blockQ, blockK: c.blockK, ...c.rule,
      simThreshold: c.simThreshold, attentionSink: c.attentionSink, smoothK: c.smoothK, pvThreshold: 50,
    };
    const e = engines[c.engine];
    const mask = await e.predictMask(q, k, opts);
    const full = await e.attention(q, k, v, { ...opts, returnMask: true });
    const given = await e.blockSparseAttention(q, k, v, mask, opts);
    assert.ok(same(full.mask.data, mask.data), 'attention() and predictMask() masks differ');
    assert.equal(full.output.dims, q.dims);
    assert.ok(same(full.output.data, given.output.data), 'attention() and blockSparseAttention() with its mask differ');
    assert.is(full.sparsity, mask.sparsity);

    // Stage 1 against its FP64 restatement: near-tied pooled scores may be ordered differently in
    // FP32, so rows are compared by the pooled mass their kept blocks hold.
    const ref1 = stage1F64(tensor(qh, qd), tensor(kh, kd), opts);
    const cmp = compareMasks(mask.data, ref1.mask, ref1.phat, mask.dims, {
      causal: c.causal, Nq: c.Nq, Nk: c.Nk, blockQ: c.blockQ, blockK: c.blockK, tol: 1e-4, edge: false,
    });
    assert.is(cmp.rowAgreement, 1, `Stage 1: kept mass differs from FP64 by up to ${cmp.worst}`);

    const ref = emulateSparse(q, k, v, mask, opts);
    assertClose(toHND(full.output, c.layout), ref, maxAbs(vh), SPARSE_TOL, 'sparse');
  }), runs(60));
});

test('threads: 1 and 2 give bitwise the same outputs, PV skipping included', async () => {
  await fc.assert(fc.asyncProperty(fc.record(sparse), fc.double({ min: 0, max: 50, noNaN: true }), async (c, pvThreshold) => {
    const { qd, kd } = dimsOf(c);
    const n = (d) => d.reduce((a, b) => a * b, 1);
    const [q, k, v] = [[qd, 0], [kd, 1], [kd, 2]].map(([d, s]) => inLayout(gaussian(n(d), c.seed + s, c.sigma), d, c.layout, c.threeD));
    const opts = {
      causal: c.causal, scale: scaleOf(c), layout: c.layout, blockQ: c.blockQ, blockK: c.blockK, ...c.rule,
      simThreshold: c.simThreshold, attentionSink: c.attentionSink, smoothK: c.smoothK, pvThreshold,
    };
    const [a, b] = await Promise.all([1, 2].map((t) => engines[t].attention(q, k, v, { ...opts, returnMask: true })));
    assert.ok(same(a.mask.data, b.mask.data), 'masks differ');
    assert.ok(same(a.output.data, b.output.data), 'sparse outputs differ');
    const [da, db] = await Promise.all([1, 2].map((t) => engines[t].denseAttention(q, k, v, { causal: c.causal, scale: opts.scale, layout: c.layout })));
    assert.ok(same(da.data, db.data), 'dense outputs differ');
  }), runs(30));
});

// Bad calls. One good problem (GQA, partial blocks, D = 12) and its mask; each generated call
// breaks one thing about it and must be refused with an error that names what it broke.
const make = (dims, seed) => tensor(gaussian(dims.reduce((a, b) => a * b, 1), seed), dims);
const good = { q: make([1, 4, 100, 12], 1), k: make([1, 2, 150, 12], 2), v: make([1, 2, 150, 12], 3) };
good.mask = await engines[1].predictMask(good.q, good.k, {});
const goodOutput = {};
for (const t of [1, 2]) goodOutput[t] = (await engines[t].attention(good.q, good.k, good.v, { topk: 0.5 })).output.data;

const tensorsOf = { attention: ['q', 'k', 'v'], denseAttention: ['q', 'k', 'v'], predictMask: ['q', 'k'], blockSparseAttention: ['q', 'k', 'v'] };
const SPARSE_OPTIONS = ['topk', 'cdfThreshold', 'simThreshold', 'pvThreshold', 'scale', 'blockQ', 'blockK', 'layout', 'causal',
  'attentionSink', 'smoothK', 'returnMask', 'output', 'signal'];
const optionsOf = {
  attention: SPARSE_OPTIONS, predictMask: SPARSE_OPTIONS, blockSparseAttention: SPARSE_OPTIONS,
  denseAttention: ['scale', 'layout', 'causal', 'precision', 'output', 'signal'],
};
// Per-head arrays (API.md) must have one entry per query head (4 here), each valid.
const badBlock = [0, 8, 100, 520, 1024, 64.5, -64, NaN, Infinity, '64', null];
const badBool = [1, 0, 'true', null, {}];
const badValues = {
  topk: [0, -0.5, 1.5, NaN, Infinity, -Infinity, '0.5', true, null, {}, [], [0.5, 0.5], [0.5, 0.5, 0.5, 2]],
  cdfThreshold: [0, -0.1, 1.01, NaN, Infinity, '0.9', false, null, [0.9], [0.9, 0.9, 0.9, 1.5]],
  simThreshold: [NaN, Infinity, -Infinity, '0', true, null, [0, 0, 0], [0, 0, 0, NaN]],
  pvThreshold: [-1, -Infinity, NaN, '50', null, [50], [50, 50, 50, -1]],
  scale: [0, -1, NaN, Infinity, -Infinity, '1', null, [1, 1, 1, 1]],
  blockQ: badBlock, blockK: badBlock,
  layout: ['hnd', 'BHSD', '', 1, null, ['HND']],
  causal: badBool, attentionSink: badBool, smoothK: badBool, returnMask: badBool,
  precision: ['f16', 'f64', 'F32', 32, null],
  // The good output has 4800 elements; predictMask has no output at all.
  output: [new Float32Array(4799), new Float64Array(4800), Array.from({ length: 4800 }, () => 0), 'buffer'],
  signal: [{}, 'abort', 1, { aborted: false }],
};
const unknownOptions = {
  sparse: ['topK', 'block_q', 'threads', 'Causal', 'precision', 'mask'],
  dense: ['topk', 'blockQ', 'returnMask', 'threads', 'Causal', 'smoothK'],
};

const anyMethod = fc.constantFrom('attention', 'denseAttention', 'predictMask', 'blockSparseAttention');
const sparseMethod = fc.constantFrom('attention', 'predictMask', 'blockSparseAttention');
const methodWithV = fc.constantFrom('attention', 'denseAttention', 'blockSparseAttention');
const onTensor = (fault, value) => anyMethod.chain((m) => fc.record({
  method: fc.constant(m), fault: fc.constant(fault), arg: fc.constantFrom(...tensorsOf[m]), value,
}));
const nonZero = fc.integer({ min: -3, max: 3 }).filter((x) => x !== 0);

const badCall = fc.oneof(
  onTensor('omitted', fc.constant(undefined)),
  fc.record({ method: fc.constant('blockSparseAttention'), fault: fc.constant('omitted'), arg: fc.constant('mask'), value: fc.constant(undefined) }),
  onTensor('not a tensor', fc.constantFrom(null, 42, 'tensor', true, [], {})),
  onTensor('data type', fc.constantFrom('Float64Array', 'Int32Array', 'Uint8Array', 'Array', 'missing')),
  onTensor('dims count', fc.constantFrom('flat', 'two', 'five', 'empty')),
  onTensor('dims entry', fc.tuple(fc.integer({ min: 0, max: 3 }), fc.constantFrom(0, -1, 1.5, NaN, Infinity, '4', null))),
  onTensor('dims type', fc.constantFrom('string', 'Int32Array', 'object', 'missing')),
  onTensor('data length', nonZero),
  onTensor('non-finite', fc.tuple(fc.nat(), fc.constantFrom(NaN, Infinity, -Infinity))),
  fc.record({ method: methodWithV, fault: fc.constant('v shape'), arg: fc.constant('v'), value: fc.tuple(fc.integer({ min: 0, max: 3 }), fc.constantFrom(-1, 1)) }),
  fc.record({ method: anyMethod, fault: fc.constantFrom('batch', 'head dim'), arg: fc.constantFrom('q', 'k'), value: fc.constant(undefined) }),
  fc.oneof(
    fc.record({ method: anyMethod, fault: fc.constant('heads'), arg: fc.constant('q'), value: fc.constantFrom(3, 5) }),
    fc.record({ method: anyMethod, fault: fc.constant('heads'), arg: fc.constant('k'), value: fc.constantFrom(3, 8) }),
  ),
  fc.oneof(
    fc.record({ method: sparseMethod, fault: fc.constant('unknown option'), value: fc.constantFrom(...unknownOptions.sparse) }),
    fc.record({ method: fc.constant('denseAttention'), fault: fc.constant('unknown option'), value: fc.constantFrom(...unknownOptions.dense) }),
  ),
  fc.record({ method: anyMethod, fault: fc.constant('options type'), value: fc.constantFrom('fast', 5, true, null) }),
  // Weighted by how many (method, option) pairs share this one arbitrary.
  {
    weight: 6,
    arbitrary: anyMethod.chain((m) => fc.constantFrom(...optionsOf[m]).chain((name) => fc.record({
      method: fc.constant(m), fault: fc.constant('option value'), arg: fc.constant(name), value: fc.constantFrom(...badValues[name]),
    }))),
  },
  fc.record({
    method: sparseMethod, fault: fc.constant('topk and cdfThreshold'),
    value: fc.tuple(fc.double({ min: 0.01, max: 1, noNaN: true }), fc.double({ min: 0.01, max: 1, noNaN: true })),
  }),
  {
    weight: 2,
    arbitrary: fc.record({
      method: fc.constant('blockSparseAttention'), fault: fc.constant('mask'),
      value: fc.oneof(
        fc.tuple(fc.constant('not an object'), fc.constantFrom(null, 1, 'mask')),
        fc.tuple(fc.constant('data type'), fc.constantFrom('Array', 'Int8Array', 'Float32Array', 'Uint8ClampedArray', 'missing')),
        fc.tuple(fc.constant('dims entry'), fc.integer({ min: 0, max: 3 }), fc.constantFrom(-1, 1)),
        fc.tuple(fc.constant('dims count'), fc.constantFrom('three', 'five', 'string')),
        fc.tuple(fc.constant('data length'), nonZero),
        fc.tuple(fc.constant('entry above 1'), fc.nat(), fc.integer({ min: 2, max: 255 })),
        fc.tuple(fc.constant('block size'), fc.constantFrom('blockQ', 'blockK'), fc.constantFrom(0, 100, 1024, 64.5, '64')),
        fc.tuple(fc.constant('block size, other dims'), fc.constantFrom('blockQ', 'blockK'), fc.constantFrom(32, 128)),
      ),
    }),
  },
);

const typed = { Float64Array, Int32Array, Uint8Array, Int8Array, Float32Array, Uint8ClampedArray, Array };

/** The call a bad-call description stands for, and the names its error message must contain. */
function breakCall(c) {
  const a = { ...good, options: undefined };
  const t = a[c.arg];
  const withData = (data) => ({ data, dims: t.dims });
  const withDims = (dims) => ({ data: t.data, dims });
  const reshaped = (dims, ...also) => {
    for (const name of [c.arg, ...also]) a[name] = make(dims, 9);
  };
  let names = [c.arg];
  switch (c.fault) {
    case 'omitted': case 'not a tensor': a[c.arg] = c.value; break;
    case 'data type': a[c.arg] = c.value === 'missing' ? { dims: t.dims } : withData(typed[c.value].from(t.data)); break;
    case 'dims count': {
      const D = t.dims[3], n = t.data.length;
      a[c.arg] = withDims({ flat: [n], two: [n / D, D], five: [1, ...t.dims], empty: [] }[c.value]);
      break;
    }
    case 'dims entry': a[c.arg] = withDims(t.dims.map((d, i) => (i === c.value[0] ? c.value[1] : d))); break;
    case 'dims type': {
      const dims = { string: t.dims.join('x'), Int32Array: Int32Array.from(t.dims), object: { ...t.dims }, missing: undefined }[c.value];
      a[c.arg] = withDims(dims);
      break;
    }
    case 'data length': {
      const n = t.data.length + c.value;
      a[c.arg] = withData(c.value < 0 ? t.data.slice(0, n) : Float32Array.from({ length: n }, (_, i) => t.data[i % t.data.length]));
      break;
    }
    case 'non-finite': {
      const data = t.data.slice();
      data[c.value[0] % data.length] = c.value[1];
      a[c.arg] = withData(data);
      break;
    }
    case 'v shape': {
      const [axis, by] = c.value;
      reshaped(t.dims.map((d, i) => (i === axis ? (d + by > 0 ? d + by : d + 1) : d)));
      break;
    }
    case 'batch': reshaped([2, ...t.dims.slice(1)], ...(c.arg === 'k' ? ['v'] : [])); break;
    case 'head dim': reshaped([...t.dims.slice(0, 3), 16], ...(c.arg === 'k' ? ['v'] : [])); break;
    case 'heads': reshaped([1, c.value, t.dims[2], 12], ...(c.arg === 'k' ? ['v'] : [])); break;
    case 'unknown option': a.options = { [c.value]: 1 }; names = [`options.${c.value}`]; break;
    case 'options type': a.options = c.value; names = ['options']; break;
    case 'option value': a.options = { [c.arg]: c.value }; names = [`options.${c.arg}`]; break;
    case 'topk and cdfThreshold':
      a.options = { topk: c.value[0], cdfThreshold: c.value[1] };
      names = ['options.topk', 'options.cdfThreshold'];
      break;
    case 'mask': {
      const [kind, x, y] = c.value, m = good.mask;
      names = ['mask'];
      if (kind === 'not an object') a.mask = x;
      if (kind === 'data type') a.mask = { ...m, data: x === 'missing' ? undefined : typed[x].from(m.data) };
      if (kind === 'dims entry') a.mask = { ...m, dims: m.dims.map((d, i) => (i === x ? d + (d + y > 0 ? y : 1) : d)) };
      if (kind === 'dims count') a.mask = { ...m, dims: { three: m.dims.slice(1), five: [1, ...m.dims], string: m.dims.join('x') }[x] };
      if (kind === 'data length') a.mask = { ...m, data: x < 0 ? m.data.slice(0, m.data.length + x) : new Uint8Array(m.data.length + x).fill(1) };
      if (kind === 'entry above 1') a.mask = { ...m, data: m.data.map((b, i) => (i === x % m.data.length ? y : b)) };
      if (kind === 'block size') {
        a.mask = { ...m, [x]: y };
        names = [`mask.${x}`];
      }
      if (kind === 'block size, other dims') a.mask = { ...m, [x]: y };
      break;
    }
  }
  const run = (e) => {
    switch (c.method) {
      case 'attention': return e.attention(a.q, a.k, a.v, a.options);
      case 'denseAttention': return e.denseAttention(a.q, a.k, a.v, a.options);
      case 'predictMask': return e.predictMask(a.q, a.k, a.options);
      default: return e.blockSparseAttention(a.q, a.k, a.v, a.mask, a.options);
    }
  };
  return { run, names };
}

const namesIn = (message, name) => new RegExp(`\\b${name.replace('.', '\\.')}\\b`).test(message);

test('bad calls reject with a TypeError or RangeError naming the argument, and change nothing', async () => {
  // 1000 runs: each costs a few ms, and one option on one method comes up about once in 200.
  await fc.assert(fc.asyncProperty(badCall, fc.constantFrom(1, 2), async (c, t) => {
    const { run, names } = breakCall(c);
    let error;
    try {
      await run(engines[t]);
    } catch (e) {
      error = e;
    }
    assert.ok(error instanceof TypeError || error instanceof RangeError,
      `expected a TypeError or RangeError, got ${error === undefined ? 'no error' : `${error.constructor.name}: ${error.message}`}`);
    for (const name of names) assert.ok(namesIn(error.message, name), `the message does not name ${name}: ${error.message}`);
    const again = await engines[t].attention(good.q, good.k, good.v, { topk: 0.5 });
    assert.ok(same(again.output.data, goodOutput[t]), 'a good call after the bad one gives another output');
  }), runs(1000));
});

test.after(() => Promise.all([engines[1].dispose(), engines[2].dispose()]));
test.run();
