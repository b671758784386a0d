// npm run example:generate (node examples/generate-stories260K.js): greedy generation with the
// stories260K Llama over sparge-wasm KV caches, one per layer, each step appending only its new keys
// and values. The prompt is the first 32 tokens of the model's sample
// (fixtures/reference/stories260K_tokens.json); 200 tokens are generated with the caches' dense FP32
// attention, sparse top-k 0.5, the calibrated settings of examples/results/stories260K-tuned.json
// (when present, from npm run example:calibrate), and exact FP64 attention in plain JS over the
// model's own key/value prefix as the reference. For each: decode tokens per second, prefill time,
// mean block sparsity per layer over the decode steps, and, teacher-forced on the dense run's
// tokens, top-1 agreement with the dense run's next-token choice and the mean KL divergence from its
// next-token distributions; and the first position where free-running greedy generation leaves the
// dense run's tokens. Writes examples/results/stories260K-generate.json.
import fs from 'node:fs';
import { createSparge } from '../dist/src/index.js';
import { loadLlama, fp64Attention, spargeKVCaches, generate, meanKL, nextTokenAgreement } from './llama.js';

const PROMPT_TOKENS = 32;
const GENERATE = 200;
const WARM_UP = 16;

const fixtures = new URL('../fixtures/', import.meta.url);
const results = new URL('./results/', import.meta.url);
const model = await loadLlama(new URL('models/stories260K.bin', fixtures));
const sample = JSON.parse(fs.readFileSync(new URL('reference/stories260K_tokens.json', fixtures), 'utf8'));
const prompt = sample.tokens.slice(0, PROMPT_TOKENS);

const tunedFile = new URL('stories260K-tuned.json', results);
const tuned = fs.existsSync(tunedFile) ? JSON.parse(fs.readFileSync(tunedFile, 'utf8')) : undefined;
// The file holds one params object per layer (accept { params } wrappers as well), and settings
// calibrated on one-row decode steps, which spargeKVCaches uses for them.
const tunedParams = tuned?.layers?.map((layer, l) => ({ ...(layer.params ?? layer), decode: tuned.decodeLayers?.[l] }));

const sparge = await createSparge();
console.log(`stories260K: ${model.layers} layers, ${model.heads} heads (${model.kvHeads} kv), head size ${model.headSize}; ` +
  `prompt of ${prompt.length} tokens, ${GENERATE} generated`);
console.log(`sparge-wasm: ${sparge.features.module} SIMD module, ${sparge.threads} thread(s) (${process.release.name} ${process.version})\n`);

/** @type {{ name: string, settings: any }[]} the settings: 'fp64', or per-layer options for spargeKVCaches */
const methods = [
  { name: 'sparge KV cache, dense FP32', settings: 'dense' },
  { name: 'sparge KV cache, topk 0.5', settings: { topk: 0.5 } },
  ...(tunedParams ? [{ name: `sparge KV cache, calibrated (target ${tuned.target})`, settings: tunedParams }] : []),
  { name: 'FP64 (plain JS, prefix path)', settings: 'fp64' },
];
if (!tunedParams) console.log('examples/results/stories260K-tuned.json not found (npm run example:calibrate makes it): no calibrated row\n');

/**
 * One generation with a method: fresh caches for it, disposed after. Returns generate's result and
 * the mean sparsity per layer over the decode steps (undefined for FP64).
 */
async function runMethod(settings, n, forced) {
  if (settings === 'fp64') return { ...(await generate(model, prompt, n, { attention: fp64Attention, forced })), sparsity: undefined };
  const attendNew = spargeKVCaches(sparge, model, settings);
  const sums = new Float64Array(model.layers);
  let steps = 0;
  try {
    const res = await generate(model, prompt, n, {
      attendNew,
      forced,
      onStep: ({ phase }) => {
        if (phase !== 'decode') return;
        steps++;
        for (let l = 0; l < model.layers; l++) sums[l] += attendNew.sparsity[l];
      },
    });
    return { ...res, sparsity: Array.from(sums, (s) => (steps ? s / steps : 0)) };
  } finally {
    await attendNew.dispose();
  }
}

/** Float32Array rows of next-token logits as one [N, vocab] tensor, for llama.js's comparisons. */
function stack(rows) {
  const V = model.vocab;
  const data = new Float32Array(rows.length * V);
  rows.forEach((row, i) => data.set(row, i * V));
  return { data, dims: [rows.length, V] };
}

let dense;
const rows = [];
for (const { name, settings } of methods) {
  await runMethod(settings, WARM_UP); // warm-up, so that the timed run is optimized code
  const free = await runMethod(settings, GENERATE);
  dense ??= free;
  const teacher = await runMethod(settings, GENERATE, dense.tokens);
  const denseLogits = stack(dense.logits), forcedLogits = stack(teacher.logits);
  const diverge = free.tokens.findIndex((t, i) => t !== dense.tokens[i]);
  rows.push({
    method: name,
    tokensPerSecond: (free.decodeSteps / free.decodeMs) * 1000,
    decodeSteps: free.decodeSteps,
    decodeMs: free.decodeMs,
    prefillMs: free.prefillMs,
    sparsityPerLayer: free.sparsity ?? null,
    top1AgreementForced: nextTokenAgreement(denseLogits, forcedLogits),
    meanKLForced: meanKL(denseLogits, forcedLogits),
    firstDivergence: diverge < 0 ? null : diverge,
  });
}

const fmtSparsity = (s) => (s ? s.map((x) => x.toFixed(3)).join(' ') : '-');
const header = ['method', 'decode tok/s', 'prefill (ms)', 'mean sparsity per layer (decode)', 'top-1 agree vs dense (forced)', 'mean KL vs dense (forced)', 'first divergence (free)'];
const lines = rows.map((r) => [
  r.method,
  r.tokensPerSecond.toFixed(0),
  r.prefillMs.toFixed(1),
  fmtSparsity(r.sparsityPerLayer),
  r.top1AgreementForced.toFixed(4),
  r.meanKLForced.toExponential(2),
  r.firstDivergence === null ? `none (of ${GENERATE})` : String(r.firstDivergence),
]);
console.log(`| ${header.join(' | ')} |`);
console.log(`|${header.map((_, i) => (i === 0 || i === 3 ? ' --- ' : ' ---: ')).join('|')}|`);
for (const line of lines) console.log(`| ${line.join(' | ')} |`);

const maxLength = PROMPT_TOKENS + GENERATE - 1;
const blocks = Math.ceil(maxLength / 64);
console.log(`\nNote: the caches hold at most ${maxLength} tokens (the last generated token is never fed back), ` +
  `${blocks} key blocks of 64, so a decode step has few blocks to skip and the sparsity is small; ` +
  'the sparse rows say little about long contexts. Tokens per second count whole model steps (the JS ' +
  'matmuls included), not attention alone. First divergence is the index among the generated tokens.');
console.log('\nThe model\'s tokenizer (llama2.c\'s tok512.bin) is not in fixtures/models, so the dense run\'s tokens are printed as ids:');
console.log(`prompt: ${prompt.join(' ')}`);
console.log(`generated (dense): ${dense.tokens.join(' ')}`);

fs.mkdirSync(results, { recursive: true });
fs.writeFileSync(new URL('stories260K-generate.json', results), JSON.stringify({
  date: new Date().toISOString(),
  runtime: `${process.release.name} ${process.version}`,
  module: sparge.features.module,
  threads: sparge.threads,
  model: 'stories260K',
  prompt,
  generated: GENERATE,
  calibratedTarget: tuned?.target ?? null,
  note: `caches hold at most ${maxLength} tokens (${blocks} key blocks of 64): little to skip, small sparsity`,
  denseTokens: dense.tokens,
  rows,
}, null, 1) + '\n');
await sparge.dispose();
