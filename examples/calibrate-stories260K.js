// npm run example:calibrate: per-head settings for every layer of the stories260K Llama, calibrated
// on the model's 512-token sample (fixtures/reference/stories260K_tokens.json) and judged on a
// held-out 512-token text the model draws itself (fixed seed): the change in mean log-probability
// and the mean KL divergence of the next-token distributions against exact FP64 attention, top-1
// agreement, and Stage 1 sparsity per layer, for calibration targets from 0.005 to 0.1. The chosen
// target is the largest whose held-out change stays within 0.01 nats and KL within 0.01.
// Then the chosen target again on decode-shaped samples (one query row against its history), for
// npm run example:generate. Writes examples/results/stories260K-{tuned,curve}.json and stories260K-curve.svg.
import fs from 'node:fs';
import { createSparge } from '../dist/src/index.js';
import { loadLlama, forward, fp64Attention, spargeAttention, logProbs, nextTokenAgreement, meanKL, sampleTokens } from './llama.js';
import { lineChart } from '../bench/plot.js';

const fixtures = new URL('../fixtures/', import.meta.url);
const results = new URL('./results/', import.meta.url);
const model = await loadLlama(new URL('models/stories260K.bin', fixtures));
const { tokens } = JSON.parse(fs.readFileSync(new URL('reference/stories260K_tokens.json', fixtures), 'utf8'));
const HELD_OUT_SEED = 260;
const TARGETS = [0.005, 0.01, 0.02, 0.05, 0.1];
const BOUND = { nats: 0.01, kl: 0.01 };

const sparge = await createSparge();
console.log(`sparge-wasm: ${sparge.features.module} SIMD module, ${sparge.threads} thread(s) (${process.release.name} ${process.version})`);

// Calibration samples: each layer's q, k, v on the model's own sample, with exact attention.
const samples = [];
await forward(model, tokens, { attention: fp64Attention, onQKV: (layer, q, k, v) => { samples[layer] = { q, k, v }; } });
const heldOut = await sampleTokens(model, tokens.length, HELD_OUT_SEED, { attention: fp64Attention });
const reference = await forward(model, heldOut, { attention: fp64Attention });
const refLp = logProbs(reference, heldOut);
console.log(`held-out text: ${heldOut.length} tokens drawn with seed ${HELD_OUT_SEED}, mean log-prob ${refLp.toFixed(5)} under FP64\n`);

/** The model on the held-out text with `attention`, against FP64. */
async function judge(name, attention, extra = {}) {
  const logits = await forward(model, heldOut, { attention });
  const lp = logProbs(logits, heldOut);
  return {
    name, delta: lp - refLp, kl: meanKL(reference, logits), top1: nextTokenAgreement(reference, logits),
    sparsity: attention.sparsity ?? [], ...extra,
  };
}

const rows = [
  await judge('sparge dense FP32', spargeAttention(sparge, 'dense')),
  await judge('INT8 QK, every block (topk 1)', spargeAttention(sparge, { topk: 1 })),
];
const tuned = {};
for (const target of TARGETS) {
  const t0 = performance.now();
  const layers = [];
  for (const s of samples) layers.push(await sparge.calibrate(s, { target, causal: true }));
  const ms = performance.now() - t0;
  const params = layers.map((l) => l.params);
  tuned[target] = params;
  const fp32Heads = params.reduce((a, p) => a + p.precision.filter((x) => x === 'f32').length, 0);
  const skipping = params.reduce((a, p) => a + p.pvThreshold.filter((x) => x < 50).length, 0);
  rows.push(await judge(`calibrated, target ${target}`, spargeAttention(sparge, params), { target, calibrationMs: ms, fp32Heads, skipping }));
}

const ok = (r) => Math.abs(r.delta) <= BOUND.nats && r.kl <= BOUND.kl;
const chosen = rows.filter((r) => r.target !== undefined && ok(r)).at(-1);

// Decode steps: one query row against its history. P·V skipping is decided per group of rows, and a
// lone row's block maximum decides alone, so settings calibrated on 512-row prefill skip more there.
// The chosen target is calibrated again on decode-shaped samples of the same text, one row every
// DECODE_EVERY positions, for npm run example:generate.
const DECODE_EVERY = 16;
/** Token rows [from, to) of a [1, heads, N, D] tensor. */
function rowsOf(t, from, to) {
  const [, heads, N, D] = t.dims, n = to - from, data = new Float32Array(heads * n * D);
  for (let h = 0; h < heads; h++) data.set(t.data.subarray((h * N + from) * D, (h * N + to) * D), h * n * D);
  return { data, dims: [1, heads, n, D] };
}
const decodeSamples = (s) => Array.from({ length: Math.floor((s.q.dims[2] - 32) / DECODE_EVERY) }, (_, i) => {
  const p = 32 + i * DECODE_EVERY;
  return { q: rowsOf(s.q, p, p + 1), k: rowsOf(s.k, 0, p + 1), v: rowsOf(s.v, 0, p + 1) };
});
let decodeLayers;
if (chosen) {
  const t0 = performance.now();
  decodeLayers = [];
  for (const s of samples) decodeLayers.push((await sparge.calibrate(decodeSamples(s), { target: chosen.target, causal: true })).params);
  console.log(`decode settings: target ${chosen.target} on ${decodeSamples(samples[0]).length} one-row samples per layer, ${(performance.now() - t0).toFixed(0)} ms`);
}
console.table(rows.map((r) => ({
  settings: r.name,
  'Δ log-prob (nats)': +r.delta.toExponential(2),
  'KL vs FP64': +r.kl.toExponential(2),
  'top-1 agree': +r.top1.toFixed(4),
  'Stage 1 sparsity per layer': r.sparsity.map((s) => s.toFixed(2)).join(' '),
  'heads FP32 QK / PV skipping (of 40)': r.target === undefined ? '-' : `${r.fp32Heads} / ${r.skipping}`,
  'calibration (ms)': r.calibrationMs === undefined ? '-' : +r.calibrationMs.toFixed(0),
  'within bounds': ok(r) ? 'yes' : 'no',
})));
console.log(chosen
  ? `chosen: target ${chosen.target} (the largest within ${BOUND.nats} nats and KL ${BOUND.kl} on the held-out text)`
  : `no target tried keeps the held-out text within ${BOUND.nats} nats and KL ${BOUND.kl}`);

fs.mkdirSync(results, { recursive: true });
if (chosen) fs.writeFileSync(new URL('stories260K-tuned.json', results), JSON.stringify({ model: 'stories260K', target: chosen.target, layers: tuned[chosen.target], decodeLayers }, null, 1) + '\n');
const curve = rows.filter((r) => r.target !== undefined);
fs.writeFileSync(new URL('stories260K-curve.json', results), JSON.stringify({ date: new Date().toISOString(), bound: BOUND, curve }, null, 1) + '\n');
fs.writeFileSync(new URL('stories260K-curve.svg', results), lineChart({
  title: 'stories260K, held-out text: calibrated per-head settings against their target',
  xLabel: 'calibration target (L1 per head)', yLabel: 'nats (|Δ mean log-prob|, mean KL)', logX: true, logY: true,
  series: [
    { name: '|Δ mean log-prob|', points: curve.map((r) => [r.target, Math.max(Math.abs(r.delta), 1e-6)]) },
    { name: 'mean KL', points: curve.map((r) => [r.target, Math.max(r.kl, 1e-6)]) },
    { name: 'bound (0.01)', points: curve.map((r) => [r.target, BOUND.kl]) },
  ],
}));
await sparge.dispose();
