// The KV cache: chunked prefill and decoding through createKVCache must give the full causal
// call's outputs (dense: relative L1 <= 1e-6; sparse: within the full call's error bound on the
// causal reference cases), bitwise the same on 1 and 2 threads, with GQA, any head dim, growth
// past capacity, truncation, many caches in one engine, and the usual refusals of bad input.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createSparge } from '../dist/src/index.js';
import { gaussian, tensor, rejects, attentionF64, l1, loadCase, referenceCases } from './helpers.js';

const simd = process.env.SPARGE_SIMD ?? 'auto';
const engines = [await createSparge({ threads: 1, simd }), await createSparge({ threads: 2, simd })];

/** Rows [n0, n1) of every head of an HND [H, N, D] array, as a tensor. */
function rows(data, H, N, D, n0, n1) {
  const out = new Float32Array(H * (n1 - n0) * D);
  for (let h = 0; h < H; h++) out.set(data.subarray((h * N + n0) * D, (h * N + n1) * D), h * (n1 - n0) * D);
  return tensor(out, [H, n1 - n0, D]);
}

/** Places a chunk's output rows [n0, n0 + n) of every head into a whole [H, N, D] output. */
function place(out, chunk, H, N, D, n0) {
  const n = chunk.length / (H * D);
  for (let h = 0; h < H; h++) out.set(chunk.subarray(h * n * D, (h + 1) * n * D), (h * N + n0) * D);
}

/** Appends the sequence in chunks and attends each chunk's queries causally; returns the whole output. */
async function prefill(e, { q, k, v, H, Hkv, N, D }, chunks, attend, cacheOptions = {}) {
  const cache = e.createKVCache({ heads: Hkv, headDim: D, capacity: 128, ...cacheOptions });
  const out = new Float32Array(H * N * D);
  let n0 = 0;
  for (const n of chunks) {
    await cache.append(rows(k, Hkv, N, D, n0, n0 + n), rows(v, Hkv, N, D, n0, n0 + n));
    const r = await attend(cache, rows(q, H, N, D, n0, n0 + n));
    place(out, r.output?.data ?? r.data, H, N, D, n0);
    n0 += n;
  }
  assert.is(cache.length, N);
  await cache.dispose();
  return out;
}

function problem(H, Hkv, N, D, seed) {
  return { H, Hkv, N, D, q: gaussian(H * N * D, seed), k: gaussian(Hkv * N * D, seed + 1), v: gaussian(Hkv * N * D, seed + 2) };
}

/** FP64 attention of each head's last query row over the key blocks (of bk keys) its mask row keeps ([H, 1, D] as a flat array). */
function maskedF64({ q, k, v, H, N, D }, mask, G, bk = 64) {
  const nk = mask.dims.at(-1), out = new Float64Array(H * D), scale = 1 / Math.sqrt(D);
  for (let h = 0; h < H; h++) {
    const hk = Math.floor(h / G), qo = (h * N + N - 1) * D;
    const keys = [];
    for (let j = 0; j < N; j++) if (mask.data[h * nk + Math.floor(j / bk)]) keys.push(j);
    const s = keys.map((j) => { let a = 0; for (let d = 0; d < D; d++) a += q[qo + d] * k[(hk * N + j) * D + d]; return a * scale; });
    const m = Math.max(...s), w = s.map((x) => Math.exp(x - m)), sum = w.reduce((a, b) => a + b, 0);
    keys.forEach((j, i) => { for (let d = 0; d < D; d++) out[h * D + d] += (w[i] / sum) * v[(hk * N + j) * D + d]; });
  }
  return out;
}

const full = (x) => [tensor(x.q, [x.H, x.N, x.D]), tensor(x.k, [x.Hkv, x.N, x.D]), tensor(x.v, [x.Hkv, x.N, x.D])];

test('dense chunked prefill equals the full causal call (relative L1 <= 1e-6): MHA, GQA, odd head dims, growth', async () => {
  const cases = [
    [problem(8, 8, 700, 64, 1), [256, 1, 1, 62, 380]],
    [problem(8, 2, 1500, 40, 4), [1, 300, 129, 1000, 70]],
    [problem(4, 1, 333, 8, 7), [100, 100, 100, 33]],
  ];
  for (const e of engines) {
    for (const [x, chunks] of cases) {
      const ref = await e.denseAttention(...full(x), { causal: true });
      const got = await prefill(e, x, chunks, (c, q) => c.denseAttention(q, { causal: true }));
      const err = l1(got, ref.data);
      assert.ok(err <= 1e-6, `H ${x.H} Hkv ${x.Hkv} D ${x.D} on ${e.threads} threads: relative L1 ${err}`);
    }
  }
});

test('decode steps are bitwise the same on 1 and 2 threads, dense and sparse, with key splits', async () => {
  // 5000 keys: 79 blocks, so a one-row step runs 5 key ranges merged by log-sum-exp.
  const x = problem(4, 2, 5000, 64, 11);
  const outs = [];
  for (const e of engines) {
    const cache = e.createKVCache({ heads: 2, headDim: 64, capacity: 1024 });
    await cache.append(rows(x.k, 2, x.N, 64, 0, 4990), rows(x.v, 2, x.N, 64, 0, 4990));
    const got = [];
    for (let n = 4990; n < 5000; n++) {
      await cache.append(rows(x.k, 2, x.N, 64, n, n + 1), rows(x.v, 2, x.N, 64, n, n + 1));
      const q = rows(x.q, 4, x.N, 64, n, n + 1);
      got.push((await cache.denseAttention(q, { causal: true })).data);
      got.push((await cache.attention(q, { causal: true, topk: 0.1 })).output.data);
      got.push((await cache.attention(q, { causal: true, cdfThreshold: 0.9, precision: ['f32', 'int8', 'f32', 'int8'] })).output.data);
    }
    outs.push(got);
    await cache.dispose();
  }
  for (let i = 0; i < outs[0].length; i++) assert.equal(Array.from(outs[1][i]), Array.from(outs[0][i]), `call ${i}`);
  // And the dense ones agree with the full call's last rows.
  const ref = attentionF64(...full(x), { causal: true });
  const last = rows(ref, 4, x.N, 64, 4999, 5000).data;
  assert.ok(l1(outs[0][27], last) <= 1e-6, `last dense step: ${l1(outs[0][27], last)}`);
});

// The causal reference cases: chunks of 512 queries (a multiple of every blockQ) through the cache.
// The CDF rule has the same meaning in both, so the whole sequence is held to the reference's bound.
// Top-k keeps a fraction of the blocks present: the full call's fraction of all its blocks leaves
// its early rows dense, a cache's of the history so far. They mean the same for the last chunk,
// whose rows are held to the full call's error on them (the same bound over our full call).
const causalCases = referenceCases().filter((name) => loadCase(name).meta.causal);
test(`sparse chunked prefill stays within the full call's error bound (${causalCases.join(', ')})`, async () => {
  for (const name of causalCases) {
    const c = loadCase(name);
    const [H, N, D] = c.q.dims, Hkv = c.k.dims[0];
    const x = { q: c.q.data, k: c.k.data, v: c.v.data, H, Hkv, N, D };
    const ref = attentionF64(c.q, c.k, c.v, { causal: true, scale: c.configs[0].options.scale });
    const tail = Math.min(512, N), lastRows = (a) => rows(a, H, N, D, N - tail, N).data;
    for (const cfg of c.configs.filter((g) => g.output && g.blockK === 64)) {
      const { blockK, ...opts } = cfg.options;
      void blockK;
      const chunks = Array.from({ length: Math.ceil(N / 512) }, (_, i) => Math.min(512, N - i * 512));
      const got = await prefill(engines[1], x, chunks, (cache, q) => cache.attention(q, opts));
      if (cfg.options.topk === undefined) {
        const bound = 1.1 * cfg.l1_vs_dense + 0.002, err = l1(got, ref);
        assert.ok(err <= bound, `${name} ${cfg.name}: L1 ${err.toFixed(4)} over the bound ${bound.toFixed(4)}`);
      } else {
        const whole = await engines[1].attention(c.q, c.k, c.v, cfg.options);
        const bound = 1.1 * l1(lastRows(whole.output.data), lastRows(ref)) + 0.002, err = l1(lastRows(got), lastRows(ref));
        assert.ok(err <= bound, `${name} ${cfg.name}, last ${tail} rows: L1 ${err.toFixed(4)} over the bound ${bound.toFixed(4)}`);
      }
    }
  }
});

test('GQA one-row steps, where a group\'s query heads share their kv head\'s reads, equal the same heads over copied kv heads', async () => {
  // H 8 over Hkv 2 against H 8 over 8 kv heads holding the same data: the same masks, per-head
  // settings and Q scales; only the P.V rounding order differs.
  const H = 8, Hkv = 2, G = 4, N = 1500, D = 48;
  const x = problem(H, Hkv, N, D, 71);
  const copies = (a) => {
    const out = new Float32Array(H * N * D);
    for (let h = 0; h < H; h++) out.set(a.subarray(Math.floor(h / G) * N * D, (Math.floor(h / G) + 1) * N * D), h * N * D);
    return out;
  };
  const settings = [{ topk: 0.1 }, { topk: [0.05, 0.1, 0.2, 0.3, 0.5, 0.1, 0.1, 1], pvThreshold: [50, 4, 50, 8, 50, 50, 2, 50] }, { cdfThreshold: 0.6, simThreshold: -1 }];
  for (const e of engines) {
    const grouped = e.createKVCache({ heads: Hkv, headDim: D }), copied = e.createKVCache({ heads: H, headDim: D });
    await grouped.append(tensor(x.k, [Hkv, N, D]), tensor(x.v, [Hkv, N, D]));
    await copied.append(tensor(copies(x.k), [H, N, D]), tensor(copies(x.v), [H, N, D]));
    const q = rows(x.q, H, N, D, N - 1, N);
    for (const opts of settings) {
      const a = await grouped.attention(q, { causal: true, returnMask: true, returnLse: true, ...opts });
      const b = await copied.attention(q, { causal: true, returnMask: true, returnLse: true, ...opts });
      assert.equal(Array.from(a.mask.data), Array.from(b.mask.data), `${JSON.stringify(opts)}: masks`);
      assert.equal(a.output.dims, [H, 1, D]);
      assert.equal(a.lse.dims, [H, 1]);
      assert.ok(l1(a.output.data, b.output.data) < 1e-5, `${JSON.stringify(opts)}: ${l1(a.output.data, b.output.data)}`);
      assert.ok(l1(a.lse.data, b.lse.data) < 1e-6);
    }
    const a = await grouped.denseAttention(q, { causal: true }), b = await copied.denseAttention(q, { causal: true });
    assert.ok(l1(a.data, b.data) < 1e-6, `dense: ${l1(a.data, b.data)}`);
    await grouped.dispose();
    await copied.dispose();
  }
});

test('sparseValues: sparse steps read a bfloat16 copy of V (within 2^-8 of FP32 per value), \'fp32\' keeps none; other calls read FP32', async () => {
  const H = 8, Hkv = 2, G = 4, N = 2500, D = 40;
  const x = problem(H, Hkv, N, D, 79);
  for (const e of engines) {
    const caches = {};
    for (const sparseValues of ['bf16', 'fp32']) {
      caches[sparseValues] = e.createKVCache({ heads: Hkv, headDim: D, capacity: 256, sparseValues });
      await caches[sparseValues].append(tensor(x.k, [Hkv, N, D]), tensor(x.v, [Hkv, N, D]));
    }
    const q = rows(x.q, H, N, D, N - 1, N);
    for (const opts of [{ topk: 0.1 }, { topk: [0.05, 0.1, 0.2, 0.3, 0.5, 0.1, 0.1, 1], pvThreshold: 8 }]) {
      const a = await caches.bf16.attention(q, { causal: true, returnMask: true, ...opts });
      const b = await caches.fp32.attention(q, { causal: true, returnMask: true, ...opts });
      assert.equal(Array.from(a.mask.data), Array.from(b.mask.data));
      const diff = l1(a.output.data, b.output.data);
      assert.ok(diff > 0 && diff < 4e-3, `${JSON.stringify(opts)}: bf16 against fp32 ${diff}`);
      // Each head attends over exactly its mask's blocks, whether its group's other heads keep a block or not.
      if (!opts.pvThreshold) {
        for (const r of [a, b]) assert.ok(l1(r.output.data, maskedF64(x, r.mask, G)) < 0.02, `${JSON.stringify(opts)}: against FP64 over the same blocks`);
      }
    }
    // Longer queries and dense calls read the FP32 values.
    const q8 = rows(x.q, H, N, D, N - 8, N);
    const [a8, b8] = [await caches.bf16.attention(q8, { causal: true, topk: 0.2 }), await caches.fp32.attention(q8, { causal: true, topk: 0.2 })];
    assert.equal(Array.from(a8.output.data), Array.from(b8.output.data));
    const [ad, bd] = [await caches.bf16.denseAttention(q, { causal: true }), await caches.fp32.denseAttention(q, { causal: true })];
    assert.equal(Array.from(ad.data), Array.from(bd.data));
    await caches.bf16.dispose();
    await caches.fp32.dispose();
  }
});

test('groupSelection: a group\'s query heads share one ranking, so a step reads fewer blocks, and each keeps its own count of it', async () => {
  const H = 8, Hkv = 2, G = 4, N = 4000, D = 32;
  const x = problem(H, Hkv, N, D, 73);
  const q = rows(x.q, H, N, D, N - 1, N);
  /** Per kv head, the blocks some query head of its group keeps. */
  const reads = (mask) => {
    const nk = mask.dims.at(-1);
    let n = 0;
    for (let g = 0; g < Hkv; g++) for (let j = 0; j < nk; j++) n += [0, 1, 2, 3].some((r) => mask.data[(g * G + r) * nk + j]) ? 1 : 0;
    return n;
  };
  const rowOf = (mask, h) => Array.from(mask.data.subarray(h * mask.dims.at(-1), (h + 1) * mask.dims.at(-1)));
  for (const e of engines) {
    const cache = e.createKVCache({ heads: Hkv, headDim: D });
    await cache.append(tensor(x.k, [Hkv, N, D]), tensor(x.v, [Hkv, N, D]));
    for (const opts of [{ topk: 0.1 }, { cdfThreshold: 0.5, simThreshold: -1 }]) {
      const own = await cache.attention(q, { causal: true, returnMask: true, ...opts });
      const shared = await cache.attention(q, { causal: true, returnMask: true, groupSelection: true, ...opts });
      for (let h = 1; h < H; h++) {
        if (h % G) assert.equal(rowOf(shared.mask, h), rowOf(shared.mask, h - 1), `${JSON.stringify(opts)}: head ${h}`);
      }
      assert.ok(reads(shared.mask) < reads(own.mask), `${JSON.stringify(opts)}: ${reads(shared.mask)} vs ${reads(own.mask)} blocks read`);
      // Each head attends over exactly its mask's blocks: FP64 over the same blocks, INT8 QK aside.
      const err = l1(shared.output.data, maskedF64(x, shared.mask, G));
      assert.ok(err < 0.02, `${JSON.stringify(opts)}: L1 ${err} against FP64 over the same blocks`);
    }
    // Per-head counts: each head keeps a prefix of the one ranking, so the rows nest.
    const nested = await cache.attention(q, { causal: true, returnMask: true, groupSelection: true, topk: [0.05, 0.2, 0.1, 0.3, 0.1, 0.1, 0.1, 0.1], simThreshold: -1 });
    const kept = [0, 1, 2, 3].map((h) => rowOf(nested.mask, h));
    const order = [0, 2, 1, 3]; // by count
    for (let a = 1; a < order.length; a++) {
      kept[order[a - 1]].forEach((m, j) => assert.ok(!m || kept[order[a]][j], `head ${order[a - 1]}'s block ${j} not kept by head ${order[a]}`));
    }
    await rejects(() => cache.attention(q, { causal: true, groupSelection: 1 }), TypeError, /groupSelection/);
    await cache.dispose();
  }
});

test('returnLse: each row\'s log-sum-exp, and two halves of the keys merge by it into the whole', async () => {
  const x = problem(2, 2, 300, 16, 21);
  const [q, k, v] = full(x);
  const scale = 0.25;
  for (const e of engines) {
    const res = await e.denseAttention(q, k, v, { scale, returnLse: true });
    assert.equal(res.lse.dims, [2, 300]);
    for (const [h, n] of [[0, 0], [1, 299]]) {
      let m = -Infinity;
      const s = [];
      for (let j = 0; j < 300; j++) {
        let dot = 0;
        for (let d = 0; d < 16; d++) dot += x.q[(h * 300 + n) * 16 + d] * x.k[(h * 300 + j) * 16 + d];
        s.push(dot * scale);
        m = Math.max(m, dot * scale);
      }
      const lse = m + Math.log(s.reduce((a, b) => a + Math.exp(b - m), 0));
      assert.ok(Math.abs(res.lse.data[h * 300 + n] - lse) < 1e-4 * Math.abs(lse) + 1e-5, `head ${h} row ${n}: ${res.lse.data[h * 300 + n]} vs ${lse}`);
    }
    // The same rows against keys [0, 130) and [130, 300), merged by their log-sum-exps.
    const halves = [];
    for (const [n0, n1] of [[0, 130], [130, 300]]) {
      const kk = rows(x.k, 2, 300, 16, n0, n1), vv = rows(x.v, 2, 300, 16, n0, n1);
      halves.push(await e.attention(q, kk, vv, { scale, topk: 1, precision: 'f32', pvThreshold: Infinity, returnLse: true }));
    }
    const merged = new Float32Array(2 * 300 * 16);
    for (let r = 0; r < 600; r++) {
      const [a, b] = halves.map((hv) => hv.lse.data[r]);
      const m = Math.max(a, b), wa = Math.exp(a - m), wb = Math.exp(b - m);
      for (let d = 0; d < 16; d++) merged[r * 16 + d] = (wa * halves[0].output.data[r * 16 + d] + wb * halves[1].output.data[r * 16 + d]) / (wa + wb);
    }
    assert.ok(l1(merged, res.data) < 1e-5, `merged halves: ${l1(merged, res.data)}`);
  }
});

test('truncate then append again equals appending the same tokens without the detour, bitwise', async () => {
  const x = problem(4, 2, 400, 32, 31);
  for (const e of engines) {
    const results = [];
    for (const detour of [false, true]) {
      const cache = e.createKVCache({ heads: 2, headDim: 32 });
      await cache.append(rows(x.k, 2, 400, 32, 0, 300), rows(x.v, 2, 400, 32, 0, 300));
      if (detour) {
        cache.truncate(250);
        assert.is(cache.length, 250);
        // A step read from the truncated cache, then the tokens again.
        await cache.attention(rows(x.q, 4, 400, 32, 249, 250), { causal: true, topk: 0.3 });
        await cache.append(rows(x.k, 2, 400, 32, 250, 300), rows(x.v, 2, 400, 32, 250, 300));
      }
      await cache.append(rows(x.k, 2, 400, 32, 300, 400), rows(x.v, 2, 400, 32, 300, 400));
      const q = rows(x.q, 4, 400, 32, 336, 400);
      results.push([(await cache.attention(q, { causal: true, topk: 0.3, returnMask: true })), (await cache.denseAttention(q, { causal: true }))]);
      await cache.dispose();
    }
    assert.equal(Array.from(results[1][0].output.data), Array.from(results[0][0].output.data), 'sparse');
    assert.equal(Array.from(results[1][0].mask.data), Array.from(results[0][0].mask.data), 'mask');
    assert.equal(Array.from(results[1][1].data), Array.from(results[0][1].data), 'dense');
  }
});

test('many caches in one engine (one per layer), interleaved and growing, each equal to its own full call', async () => {
  const layers = [problem(2, 2, 600, 16, 41), problem(4, 1, 600, 24, 44), problem(2, 2, 600, 64, 47)];
  for (const e of engines) {
    const caches = layers.map((x) => e.createKVCache({ heads: x.Hkv, headDim: x.D, capacity: 16 }));
    const outs = layers.map((x) => new Float32Array(x.H * x.N * x.D));
    for (let n0 = 0; n0 < 600; n0 += 50) {
      for (let i = 0; i < layers.length; i++) {
        const x = layers[i];
        await caches[i].append(rows(x.k, x.Hkv, 600, x.D, n0, n0 + 50), rows(x.v, x.Hkv, 600, x.D, n0, n0 + 50));
        place(outs[i], (await caches[i].denseAttention(rows(x.q, x.H, 600, x.D, n0, n0 + 50), { causal: true })).data, x.H, 600, x.D, n0);
      }
    }
    for (let i = 0; i < layers.length; i++) {
      const ref = await e.denseAttention(...full(layers[i]), { causal: true });
      assert.ok(l1(outs[i], ref.data) <= 1e-6, `layer ${i}: ${l1(outs[i], ref.data)}`);
      assert.ok(caches[i].capacity >= 600);
    }
    await Promise.all(caches.map((c) => c.dispose()));
  }
});

test('NHD tensors, options.output, and the engine\'s memory stays flat over many decode steps', async () => {
  const x = problem(2, 2, 200, 16, 51);
  const nhd = (t) => {
    const [H, N, D] = t.dims, out = new Float32Array(t.data.length);
    for (let h = 0; h < H; h++) for (let n = 0; n < N; n++) out.set(t.data.subarray((h * N + n) * D, (h * N + n + 1) * D), (n * H + h) * D);
    return tensor(out, [N, H, D]);
  };
  for (const e of engines) {
    const a = e.createKVCache({ heads: 2, headDim: 16 }), b = e.createKVCache({ heads: 2, headDim: 16, layout: 'NHD' });
    await a.append(rows(x.k, 2, 200, 16, 0, 100), rows(x.v, 2, 200, 16, 0, 100));
    await b.append(nhd(rows(x.k, 2, 200, 16, 0, 100)), nhd(rows(x.v, 2, 200, 16, 0, 100)));
    const output = new Float32Array(2 * 16);
    let bytes = 0;
    for (let n = 100; n < 200; n++) {
      await a.append(rows(x.k, 2, 200, 16, n, n + 1), rows(x.v, 2, 200, 16, n, n + 1));
      await b.append(nhd(rows(x.k, 2, 200, 16, n, n + 1)), nhd(rows(x.v, 2, 200, 16, n, n + 1)));
      const q = rows(x.q, 2, 200, 16, n, n + 1);
      const ra = await a.attention(q, { causal: true, topk: 0.5, output });
      assert.is(ra.output.data, output);
      const rb = await b.attention(nhd(q), { causal: true, topk: 0.5 });
      assert.equal(Array.from(rb.output.data), Array.from(output));
      if (n === 110) bytes = e.memoryBytes;
    }
    assert.is(e.memoryBytes, bytes, 'memory grew during decoding');
    await a.dispose();
    await b.dispose();
  }
});

test('bad input is refused with the argument named, and the cache and engine stay usable', async () => {
  const e = engines[1];
  const cache = e.createKVCache({ heads: 2, headDim: 8 });
  const kv = (n, H = 2, D = 8, fill = 0.5) => tensor(new Float32Array(H * n * D).fill(fill), [H, n, D]);
  assert.throws(() => e.createKVCache({ heads: 0, headDim: 8 }), /options\.heads must be a positive integer/);
  assert.throws(() => e.createKVCache({ heads: 2 }), /options\.headDim must be a positive integer/);
  assert.throws(() => e.createKVCache({ heads: 2, headDim: 8, blockK: 40 }), /options\.blockK must be a multiple of 16/);
  assert.throws(() => e.createKVCache({ heads: 2, headDim: 8, sink: true }), /options\.sink is not an option/);
  assert.throws(() => e.createKVCache({ heads: 2, headDim: 8, sparseValues: 'f16' }), (x) => x instanceof RangeError && /options\.sparseValues must be 'bf16' or 'fp32', got f16/.test(x.message));
  assert.throws(() => e.createKVCache({ heads: 2, headDim: 8, sparseValues: true }), (x) => x instanceof TypeError && /options\.sparseValues/.test(x.message));
  await rejects(() => cache.attention(kv(1)), RangeError, /KV cache is empty/);
  await rejects(() => cache.append(kv(3, 4), kv(3, 4)), RangeError, /k must have the cache's 2 heads, got 4/);
  await rejects(() => cache.append(kv(3, 2, 16), kv(3, 2, 16)), RangeError, /k head dim must be the cache's 8, got 16/);
  await rejects(() => cache.append(kv(3), kv(4)), RangeError, /v\.dims must equal k\.dims/);
  await rejects(() => cache.append(tensor(new Float32Array(2 * 2 * 3 * 8), [2, 2, 3, 8]), kv(3)), RangeError, /batch size must be 1/);
  const nan = kv(3);
  nan.data[17] = NaN;
  await rejects(() => cache.append(nan, kv(3)), RangeError, /k\.data must be finite, got NaN at index 17/);
  await rejects(() => cache.append(kv(3), kv(3, 2, 8, Infinity)), RangeError, /v\.data must be finite/);
  await rejects(() => cache.append(kv(3, 2, 8, 1e13), kv(3)), RangeError, /k: a KV cache takes keys whose largest magnitude lies in \[2\^-40, 2\^40\]/);
  assert.is(cache.length, 0);
  await cache.append(kv(5), kv(5));
  await rejects(() => cache.attention(kv(6), { causal: true }), RangeError, /q has 6 rows but the cache holds 5 tokens/);
  await rejects(() => cache.attention(kv(1, 3)), RangeError, /q heads \(3\) must be a multiple of the cache's k\/v heads \(2\)/);
  await rejects(() => cache.attention(kv(1), { blockK: 32 }), RangeError, /options\.blockK must be the cache's 64/);
  await rejects(() => cache.attention(kv(1), { smoothK: false }), RangeError, /options\.smoothK/);
  await rejects(() => cache.attention(kv(1), { layout: 'NHD' }), RangeError, /options\.layout: this cache takes 'HND'/);
  await rejects(() => cache.denseAttention(kv(1), { topk: 0.5 }), TypeError, /options\.topk is not an option here/);
  await rejects(() => cache.attention(kv(1), { output: new Float32Array(3) }), RangeError, /options\.output must have 16 elements/);
  assert.throws(() => cache.truncate(6), /truncate\(n\): n must be an integer from 0 to the cache's length \(5\), got 6/);
  const aborted = AbortSignal.abort(new Error('stop'));
  await rejects(() => cache.append(kv(1), kv(1), { signal: aborted }), Error, /stop/);
  assert.is(cache.length, 5);
  // Still usable, and right: five equal keys and values of 0.5.
  const r = await cache.denseAttention(kv(1), { causal: true });
  assert.ok(r.data.every((x) => Math.abs(x - 0.5) < 1e-6));
  cache.clear();
  assert.is(cache.length, 0);
  await cache.dispose();
  await rejects(() => cache.append(kv(1), kv(1)), Error, /KV cache was disposed/);
  assert.throws(() => cache.truncate(0), /KV cache was disposed/);
  // The engine goes on.
  const x = problem(2, 2, 64, 8, 61);
  const out = await e.denseAttention(...full(x));
  assert.ok(out.data.every(Number.isFinite));
});

test.after(async () => {
  for (const e of engines) await e.dispose();
});

test.run();
