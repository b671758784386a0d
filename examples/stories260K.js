// node examples/stories260K.js: the stories260K Llama end to end on its 512-token sample, with exact
// FP64 attention, sparge-wasm's dense FP32 attention and sparse settings in every layer: what each
// does to the model's log-likelihood and next-token distributions, and the block sparsity per layer.
// Then a second 512-token sample drawn from the model (FP64 attention, fixed seed) as held-out text.
import { readFileSync } from 'node:fs';
import { createSparge } from '../dist/src/index.js';
import {
  loadLlama, forward, fp64Attention, spargeAttention, logProbs, nextTokenAgreement, meanKL, sampleTokens,
} from './llama.js';

const fixtures = new URL('../fixtures/', import.meta.url);
const model = await loadLlama(new URL('models/stories260K.bin', fixtures));
const sample = JSON.parse(readFileSync(new URL('reference/stories260K_tokens.json', fixtures), 'utf8'));
const { tokens } = sample;
const HELD_OUT_SEED = 260;

const sparge = await createSparge();
console.log(`stories260K: ${model.layers} layers, ${model.heads} heads (${model.kvHeads} kv), head size ${model.headSize}; ` +
  `sample of ${tokens.length} tokens`);
console.log(`sparge-wasm: ${sparge.features.module} SIMD module, ${sparge.threads} thread(s) (${process.release.name} ${process.version})\n`);

/** Adds the time spent in attention to clock.ms, to tell it apart from the JS matmuls around it. */
function timed(attention, clock) {
  return async (...args) => {
    const t0 = performance.now();
    const out = await attention(...args);
    clock.ms += performance.now() - t0;
    return out;
  };
}

/** @type {[string, import('./llama.js').Attention & { sparsity?: number[] }][]} */
const methods = [
  ['FP64 (plain JS)', fp64Attention],
  ['sparge dense FP32', spargeAttention(sparge, 'dense')],
  // Every block kept: the INT8 QK error alone, apart from what skipping blocks costs.
  ['sparge INT8, topk 1', spargeAttention(sparge, { topk: 1 })],
  ['sparse topk 0.5', spargeAttention(sparge, { topk: 0.5 })],
  ['sparse topk 0.25', spargeAttention(sparge, { topk: 0.25 })],
  ['sparse CDF 0.99, sim -1', spargeAttention(sparge, { cdfThreshold: 0.99, simThreshold: -1 })],
];

let reference;
const rows = [];
for (const [method, attention] of methods) {
  await forward(model, tokens, { attention }); // warm-up, so that the timed run is optimized code
  const clock = { ms: 0 };
  const t0 = performance.now();
  const logits = await forward(model, tokens, { attention: timed(attention, clock) });
  const ms = performance.now() - t0;
  reference ??= logits;
  const lp = logProbs(logits, tokens);
  rows.push({
    method,
    'mean log-prob': +lp.toFixed(5),
    'Δ vs FP64 (nats)': +(lp - logProbs(reference, tokens)).toExponential(2),
    'KL vs FP64': +meanKL(reference, logits).toExponential(2),
    'top-1 agree': +nextTokenAgreement(reference, logits).toFixed(4),
    'sparsity per layer': attention.sparsity?.map((s) => s.toFixed(2)).join(' ') ?? '-',
    'forward (ms)': +ms.toFixed(0),
    'attention (ms)': +clock.ms.toFixed(0),
  });
}
const fp64 = logProbs(reference, tokens);
console.log(`FP64 forward: mean log-prob ${fp64.toFixed(9)}, the file's ${sample.mean_logprob.toFixed(9)} ` +
  `(difference ${(fp64 - sample.mean_logprob).toExponential(2)})`);
console.table(rows);
if (Math.abs(fp64 - sample.mean_logprob) > 1e-3) throw new Error('the FP64 forward pass does not reproduce the sample\'s log-probability');

const t0 = performance.now();
const heldOut = await sampleTokens(model, tokens.length, HELD_OUT_SEED, { attention: fp64Attention });
const sampleMs = performance.now() - t0;
const heldOutLp = logProbs(await forward(model, heldOut, { attention: fp64Attention }), heldOut);
console.log(`\nheld-out sample (seed ${HELD_OUT_SEED}, FP64 attention, one token at a time): ${heldOut.length} tokens ` +
  `in ${sampleMs.toFixed(0)} ms, mean log-prob under FP64 ${heldOutLp.toFixed(5)}`);
console.log(`first tokens: ${heldOut.slice(0, 16).join(' ')} ...`);
await sparge.dispose();
