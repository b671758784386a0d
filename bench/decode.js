// Decode-step attention: the time of one causal call whose queries are the last 1 (a decode step)
// or 64 (a prefill chunk) rows against the whole key/value history of N tokens, N = 4K, 16K, 64K
// and 128K, H = 8 query heads, Hkv = 8 and 2 key/value heads, D = 64, B = 1.
// Implementations: sparge-wasm's KV cache (src/kvcache.ts: appending the new rows, then dense and
// sparse top-k 0.1 attention over the cache, with GQA also with groupSelection), sparge-wasm
// without a cache (each call given the whole history, dense and top-k 0.1), onnxruntime-node's
// MatMul-Softmax-MatMul graph given the whole history (GQA as grouped query rows, a causal mask for 64 rows) and
// its com.microsoft GroupQueryAttention with the history before the new rows as past key/value.
// Beside them the floor of this machine: the K and V bytes a dense step must read
// (2 * Hkv * N * D * 4) over the memory read bandwidth, measured in the same process and
// interleaved with the calls: WebAssembly SIMD v128 loads XOR-reducing a 256 MiB buffer, on as
// many worker threads as the implementations use.
//   node bench/decode.js [--threads 1|2] [--reps 7] [--max 131072] [--quick]
//   --threads   one thread count (default: 1 and 2, each in its own processes)
//   --max       largest history N; configurations needing more than ~16 GB in a process (3/4 of
//               the RAM if less) are skipped, with the estimate (1.4-3.3 GB at 128K)
//   --quick     N = 4K and 16K only, 3 repetitions
// Every (threads, N) runs in its own Node process with relaxed SIMD, as bench/attention.js does.
// Inputs are seeded RoPE-like tokens (test/helpers.js ropeLike); repetitions are interleaved across
// implementations, medians reported. Prints a markdown table and writes bench/results/decode.json,
// decode.md and decode-q{rows}-hkv{Hkv}.svg (at the largest thread count run).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { lineChart } from './plot.js';
import { ortNodeOptions } from './impls.js';
import { matmulSoftmaxGraph, maskedMatmulSoftmaxGraph, groupQueryAttentionGraph } from './onnx.js';
import { RELAXED_FLAGS, ropeLike, toHND, l1 } from '../test/helpers.js';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? dflt : process.argv[i + 1];
};
const quick = process.argv.includes('--quick');
const reps = Number(arg('reps', quick ? 3 : 7));
const H = 8, D = 64, KV_HEADS = [8, 2], ROWS = [1, 64];
// ~16 GB a process, less on a machine that has less.
const GiB = 2 ** 30, BUDGET = Math.min(16 * GiB, 0.75 * os.totalmem()), METER_BYTES = 256 * 2 ** 20;
const median = (a) => [...a].sort((p, q) => p - q)[Math.floor(a.length / 2)];

/**
 * A rough peak of one process for one (N, Hkv, rows): the generated inputs, sparge-wasm's memory
 * (README "Sizes", dense), onnxruntime's largest session (the scores of the MatMul graph, or
 * GroupQueryAttention's past and present copies) and the bandwidth meter's buffer, in bytes.
 */
function estimate(N, Hkv, rows) {
  const kv = 2 * Hkv * N * D * 4, scores = H * rows * N * 4;
  const inputs = 3 * H * N * D * 4 + METER_BYTES;
  const sparge = 12 * (H * Math.ceil(rows / 64) * 64 + Hkv * N) * D + 1.25 * kv;
  const matmul = kv + 4 * scores;
  const gqa = 2 * kv + scores;
  return inputs + sparge + Math.max(matmul, gqa);
}

/** A module whose sum(from, to) XORs the 64-byte lines of [from, to) of an imported shared memory. */
function readKernel() {
  const leb = (n) => {
    const out = [];
    do {
      let b = n & 0x7f;
      n >>>= 7;
      if (n) b |= 0x80;
      out.push(b);
    } while (n);
    return out;
  };
  const section = (id, body) => [id, ...leb(body.length), ...body];
  // Four accumulators, so that the loads, not the XORs' latency, set the pace.
  const lane = (i) => [0x20, 2 + i, 0x20, 0, 0xfd, 0x00, 4, ...leb(16 * i), 0xfd, 0x51, 0x21, 2 + i];
  const body = [
    1, 4, 0x7b,
    0x03, 0x40, ...[0, 1, 2, 3].flatMap(lane),
    0x20, 0, 0x41, 0xc0, 0x00, 0x6a, 0x22, 0, 0x20, 1, 0x49, 0x0d, 0, 0x0b,
    0x20, 2, 0x20, 3, 0xfd, 0x51, 0x20, 4, 0xfd, 0x51, 0x20, 5, 0xfd, 0x51, 0xfd, 0x1b, 0, 0x0b,
  ];
  return new WebAssembly.Module(new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0,
    ...section(1, [1, 0x60, 2, 0x7f, 0x7f, 1, 0x7f]),
    ...section(2, [1, 1, 0x65, 1, 0x6d, 2, 3, 1, ...leb(65536)]),
    ...section(3, [1, 0]),
    ...section(7, [1, 3, 0x73, 0x75, 0x6d, 0, 0]),
    ...section(10, [1, ...leb(body.length), ...body]),
  ]));
}

/** Memory read bandwidth: `threads` workers each read their share of a buffer far larger than the caches. */
async function bandwidthMeter(threads, bytes = METER_BYTES) {
  const memory = new WebAssembly.Memory({ initial: bytes / 65536, maximum: bytes / 65536, shared: true });
  new Uint8Array(memory.buffer).fill(1); // untouched pages would all read the same zero page
  const module = readKernel(), share = bytes / threads;
  const workers = Array.from({ length: threads }, (_, i) => new Worker(`
    const { parentPort, workerData: { module, memory, from, to } } = require('node:worker_threads');
    const { sum } = new WebAssembly.Instance(module, { e: { m: memory } }).exports;
    parentPort.on('message', () => parentPort.postMessage(sum(from, to)));`,
  { eval: true, workerData: { module, memory, from: i * share, to: (i + 1) * share } }));
  const pass = () => Promise.all(workers.map((w) => new Promise((resolve) => { w.once('message', resolve); w.postMessage(0); })));
  await pass();
  return {
    bytes,
    async run() {
      const t0 = performance.now();
      await pass();
      return performance.now() - t0;
    },
    close: () => Promise.all(workers.map((w) => w.terminate())),
  };
}

/** One (threads, N) process: every (Hkv, rows) that fits, implementations interleaved. Prints JSON rows. */
async function child(threads, N) {
  const configs = KV_HEADS.flatMap((Hkv) => ROWS.map((rows) => ({ Hkv, rows, bytes: estimate(N, Hkv, rows) })));
  const out = [];
  const fits = configs.filter((c) => c.bytes <= BUDGET);
  for (const c of configs.filter((x) => x.bytes > BUDGET)) {
    out.push({ rows: c.rows, Hkv: c.Hkv, N, threads, impl: '(all)', error: `skipped: needs ~${(c.bytes / GiB).toFixed(1)} GB, over the ${(BUDGET / GiB).toFixed(1)} GB a process may take` });
  }
  if (!fits.length) return out;
  const { createSparge } = await import('../dist/src/index.js');
  const ort = await import('onnxruntime-node');
  const sparge = await createSparge({ threads });
  const meter = await bandwidthMeter(threads);
  // The last rows of each query head are the queries of the last positions; the first Hkv heads of k, v the history.
  const x = ropeLike(H, N, D, 11);
  const scale = 1 / Math.sqrt(D);
  const sessionOptions = ortNodeOptions(threads);
  const f32 = (data, dims) => new ort.Tensor('float32', data, dims);
  for (const { Hkv, rows } of fits) {
    const G = H / Hkv;
    const q = new Float32Array(H * rows * D);
    for (let h = 0; h < H; h++) q.set(x.q.subarray(((h + 1) * N - rows) * D, (h + 1) * N * D), h * rows * D);
    const k = x.k.subarray(0, Hkv * N * D), v = x.v.subarray(0, Hkv * N * D);
    const tq = { data: q, dims: [1, H, rows, D] }, tk = { data: k, dims: [1, Hkv, N, D] }, tv = { data: v, dims: [1, Hkv, N, D] };

    // G query heads of one key/value head are G * rows query rows of it: q's HND data as is.
    // One row sees every key; more rows need the bottom-right causal mask.
    const causalMask = () => {
      const mask = new Float32Array(G * rows * N);
      for (let g = 0; g < G; g++) for (let i = 0; i < rows; i++) mask.fill(-Infinity, (g * rows + i) * N + N - rows + i + 1, (g * rows + i + 1) * N);
      return { mask: f32(mask, [G * rows, N]) };
    };
    const matmul = await ort.InferenceSession.create(rows === 1 ? matmulSoftmaxGraph(scale) : maskedMatmulSoftmaxGraph(scale), sessionOptions);
    const matmulFeeds = { q: f32(q, [1, Hkv, G * rows, D]), k: f32(k, tk.dims), v: f32(v, tv.dims), ...(rows > 1 ? causalMask() : {}) };

    // [1, heads, S, D] <-> [1, S, heads * D]: the transposition toHND undoes is its own inverse.
    const tokensFirst = (data, heads, S) => toHND({ data, dims: [1, heads, S, D] }, 'NHD');
    const past = (t) => {
      const p = new Float32Array(Hkv * (N - rows) * D);
      for (let h = 0; h < Hkv; h++) p.set(t.subarray(h * N * D, (h * N + N - rows) * D), h * (N - rows) * D);
      return f32(p, [1, Hkv, N - rows, D]);
    };
    const newest = (t) => {
      const n = new Float32Array(Hkv * rows * D);
      for (let h = 0; h < Hkv; h++) n.set(t.subarray((h * N + N - rows) * D, (h + 1) * N * D), h * rows * D);
      return f32(tokensFirst(n, Hkv, rows), [1, rows, Hkv * D]);
    };
    let gqa;
    try {
      gqa = await ort.InferenceSession.create(groupQueryAttentionGraph(H, Hkv, scale), sessionOptions);
    } catch (e) {
      gqa = { error: e };
    }
    const gqaFeeds = gqa.error ? undefined : {
      q: f32(tokensFirst(q, H, rows), [1, rows, H * D]), k: newest(k), v: newest(v), past_key: past(k), past_value: past(v),
      seqlens_k: new ort.Tensor('int32', Int32Array.of(N - 1), [1]), total_sequence_length: new ort.Tensor('int32', Int32Array.of(N), []),
    };

    // The cache holds the history before the new rows; each repetition appends them and attends.
    const cache = sparge.createKVCache({ heads: Hkv, headDim: D, capacity: N });
    const prefix = (t, n0, n1) => {
      const p = new Float32Array(Hkv * (n1 - n0) * D);
      for (let h = 0; h < Hkv; h++) p.set(t.subarray((h * N + n0) * D, (h * N + n1) * D), h * (n1 - n0) * D);
      return { data: p, dims: [Hkv, n1 - n0, D] };
    };
    await cache.append(prefix(k, 0, N - rows), prefix(v, 0, N - rows));
    const newK = prefix(k, N - rows, N), newV = prefix(v, N - rows, N);

    const impls = [
      {
        impl: `sparge cache: append ${rows} token${rows > 1 ? 's' : ''}`,
        run: async () => {
          cache.truncate(N - rows);
          await cache.append(newK, newV);
          return {};
        },
      },
      { impl: 'sparge cache dense', run: async () => ({ output: (await cache.denseAttention(tq, { causal: true })).data }) },
      {
        impl: 'sparge cache topk 0.1',
        run: async () => {
          const r = await cache.attention(tq, { causal: true, topk: 0.1 });
          return { output: r.output.data, sparsity: r.sparsity };
        },
      },
      // GQA: the group's query heads share one ranking (options.groupSelection), so a step reads
      // a tenth of the history per kv head instead of the union of G heads' tenths.
      ...(G > 1 ? [{
        impl: 'sparge cache topk 0.1 groupSelection',
        run: async () => {
          const r = await cache.attention(tq, { causal: true, topk: 0.1, groupSelection: true });
          return { output: r.output.data, sparsity: r.sparsity };
        },
      }] : []),
      { impl: 'sparge dense (no cache)', run: async () => ({ output: (await sparge.denseAttention(tq, tk, tv, { causal: true })).data }) },
      {
        impl: 'sparge topk 0.1 (no cache)',
        run: async () => {
          const r = await sparge.attention(tq, tk, tv, { causal: true, topk: 0.1 });
          return { output: r.output.data, sparsity: r.sparsity };
        },
      },
      { impl: 'ort-node MatMul-Softmax-MatMul', run: async () => ({ output: (await matmul.run(matmulFeeds)).o.data }) },
      {
        // Only o is fetched: present_key/value are still written (the past copied, the new rows
        // appended) but not handed back to JavaScript.
        impl: 'ort-node GroupQueryAttention',
        error: gqa.error,
        run: async () => ({ output: toHND({ data: (await gqa.run(gqaFeeds, ['o'])).o.data, dims: [1, rows, H, D] }, 'NHD') }),
      },
      { impl: 'memory read (WebAssembly SIMD)', meter: true, run: async () => ({}) },
    ].map((r) => ({ ...r, times: [] }));
    for (const r of impls) {
      if (r.error || r.meter) continue;
      try {
        r.first = await r.run();
      } catch (e) {
        r.error = e;
      }
    }
    for (let rep = 0; rep < reps; rep++) {
      for (const r of impls) {
        if (r.error) continue;
        if (r.meter) {
          r.times.push(await meter.run());
          continue;
        }
        const t0 = performance.now();
        await r.run();
        r.times.push(performance.now() - t0);
      }
    }
    const gbps = meter.bytes / median(impls.at(-1).times) / 1e6;
    const floor = (2 * Hkv * N * D * 4) / gbps / 1e6;
    const dense = impls.find((r) => r.impl === 'sparge dense (no cache)').first?.output;
    for (const r of impls) {
      const ms = r.times.length ? median(r.times) : undefined;
      out.push({
        rows, Hkv, N, threads, impl: r.meter ? 'floor: K+V bytes / read bandwidth' : r.impl,
        'median ms': r.meter ? +floor.toPrecision(3) : ms && +ms.toPrecision(3),
        'min ms': r.meter ? undefined : r.times.length ? +Math.min(...r.times).toPrecision(3) : undefined,
        'x floor': !r.meter && ms ? +(ms / floor).toFixed(2) : undefined,
        'read GB/s': r.meter ? +gbps.toFixed(2) : undefined,
        sparsity: r.first?.sparsity === undefined ? undefined : +r.first.sparsity.toFixed(3),
        'L1 vs sparge dense': dense && r.first?.output && r.first.output !== dense ? Number(l1(r.first.output, dense).toPrecision(3)) : undefined,
        // Keep onnxruntime's message but not the build paths it embeds.
        error: r.error && String(r.error?.message ?? r.error).split('\n')[0].replace(/\S*onnxruntime\/core\/\S*/g, '…').slice(0, 200),
      });
    }
    await cache.dispose();
    await matmul.release();
    if (!gqa.error) await gqa.release();
  }
  await meter.close();
  await sparge.dispose();
  return out;
}

const fmt = (x) => (x === undefined || x === null ? '' : String(x));
const markdown = (rows, cols) => [`| ${cols.join(' | ')} |`, `|${cols.map(() => '---').join('|')}|`,
  ...rows.map((r) => `| ${cols.map((c) => fmt(r[c])).join(' | ')} |`)].join('\n');

if (process.argv.includes('--child')) {
  console.log(JSON.stringify(await child(Number(arg('threads')), Number(arg('n')))));
  process.exit(0);
}

const threadCounts = arg('threads') ? [Number(arg('threads'))] : [1, 2];
const sizes = (quick ? [4096, 16384] : [4096, 16384, 65536, 131072]).filter((n) => n <= Number(arg('max', 131072)));
const rows = [];
for (const threads of threadCounts) {
  for (const n of sizes) {
    const t0 = Date.now();
    try {
      const out = execFileSync(process.execPath, [...RELAXED_FLAGS, here('./decode.js'), '--child', '--threads', threads, '--n', n, '--reps', reps].map(String),
        { encoding: 'utf8', maxBuffer: 1 << 26, stdio: ['ignore', 'pipe', 'pipe'] });
      rows.push(...JSON.parse(out.trim().split('\n').pop()));
    } catch (e) {
      // A whole process failing (out of memory, say) is a result too.
      const why = String(e.stderr || e.message).split('\n').find((l) => /error|memory|abort/i.test(l)) ?? 'process failed';
      rows.push({ N: n, threads, impl: '(all)', error: why.slice(0, 200) });
    }
    process.stderr.write(`  threads=${threads} N=${n}: ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
  }
}
rows.sort((a, b) => (a.rows ?? 0) - (b.rows ?? 0) || (b.Hkv ?? 0) - (a.Hkv ?? 0) || a.N - b.N || a.threads - b.threads);

const machine = { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version, date: new Date().toISOString() };
const command = `node bench/decode.js${arg('threads') ? ` --threads ${arg('threads')}` : ''} --reps ${reps} --max ${sizes.at(-1)}${quick ? ' --quick' : ''}`;
const cols = ['rows', 'Hkv', 'N', 'threads', 'impl', 'median ms', 'min ms', 'x floor', 'read GB/s', 'sparsity', 'L1 vs sparge dense', 'error'];
const table = markdown(rows, cols);
console.log(table);
const md = `Command: \`${command}\` (${machine.date}, ${machine.cpus} cores, ${machine.model}, Node ${machine.node}).\n` +
  `One causal attention call per step (with a KV cache: after appending the step's rows to it): the last \`rows\` query rows (H = ${H}, D = ${D}) against the whole history of N keys and values ` +
  `(Hkv heads), seeded RoPE-like inputs, medians of ${reps} interleaved repetitions. The floor is the K and V bytes (2 · Hkv · N · D · 4) ` +
  'over the read bandwidth measured in the same process (a 256 MiB buffer summed with WebAssembly SIMD on as many threads); ' +
  'GroupQueryAttention gets the first N − rows tokens as past key/value and the last rows as new ones.\n\n' + table;
fs.writeFileSync(here('./results/decode.json'), JSON.stringify({ machine, command, rows }, null, 1) + '\n');
fs.writeFileSync(here('./results/decode.md'), md + '\n');
const plotThreads = Math.max(...threadCounts);
for (const r of ROWS) {
  for (const Hkv of KV_HEADS) {
    const sel = rows.filter((x) => x.rows === r && x.Hkv === Hkv && x.threads === plotThreads && x['median ms']);
    const series = [...new Set(sel.map((x) => x.impl))].map((impl) => ({
      name: impl.startsWith('floor') ? 'floor (K+V bytes / bandwidth)' : impl,
      points: sel.filter((x) => x.impl === impl).map((x) => [x.N, x['median ms']]),
    }));
    if (!series.length) continue;
    fs.writeFileSync(here(`./results/decode-q${r}-hkv${Hkv}.svg`), lineChart({
      title: `${r === 1 ? 'Decode step' : `${r}-row prefill chunk`} against history (H=${H}, Hkv=${Hkv}, D=${D}, ${plotThreads} thread${plotThreads > 1 ? 's' : ''})`,
      xLabel: 'history N (tokens)', yLabel: 'ms per step (log)', series, logX: true, logY: true,
    }));
  }
}
console.log('wrote bench/results/decode.json, decode.md and decode-q*-hkv*.svg');
