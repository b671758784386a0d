// groupSelection on a real GQA model: the stories260K Llama (8 query heads over 4 kv heads, head
// size 8) reads its 512-token sample teacher-forced through sparge-wasm KV caches, one per layer:
// an 8-token prompt, then one decode step per token. Each step's attention is sparse with each
// query head ranking its own key blocks (the default) or with the heads of a kv head ranking them
// together (groupSelection), at the same rules. Per setting: the key blocks a step reads per kv
// head (those some head of the group keeps; the newest block included), as a fraction of the
// blocks present, mean over steps, layers and kv heads; and against the dense FP32 run, the mean
// KL divergence of the next-token distributions and the top-1 agreement. Blocks of 16 keys, so
// that a step chooses among up to 32 blocks; every setting keeps the sink (attentionSink), which
// this model's heads attend to.
//   node bench/group-selection.js [--block-k 16]
// Prints a markdown table; writes bench/results/group-selection.json and group-selection.md.
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createSparge } from '../dist/src/index.js';
import { loadLlama, generate, meanKL, nextTokenAgreement } from '../examples/llama.js';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? dflt : process.argv[i + 1];
};
const BK = Number(arg('block-k', 16)), PROMPT = 8;
const model = await loadLlama(new URL('../fixtures/models/stories260K.bin', import.meta.url));
const sample = JSON.parse(fs.readFileSync(here('../fixtures/reference/stories260K_tokens.json'), 'utf8'));
const prompt = sample.tokens.slice(0, PROMPT);
const steps = Math.min(sample.tokens.length, model.seqLen) - PROMPT;
const forced = sample.tokens.slice(PROMPT, PROMPT + steps);
const G = model.heads / model.kvHeads;
const sparge = await createSparge();

/** One teacher-forced pass with `options` for every attention call ('dense': FP32 dense). */
async function pass(options) {
  const caches = Array.from({ length: model.layers }, () =>
    sparge.createKVCache({ heads: model.kvHeads, headDim: model.headSize, capacity: model.seqLen, blockK: BK }));
  let read = 0, present = 0;
  const attendNew = async (layer, q, k, v) => {
    const cache = caches[layer];
    await cache.append(k, v);
    if (options === 'dense') return cache.denseAttention(q, { causal: true });
    const res = await cache.attention(q, { causal: true, attentionSink: true, returnMask: q.dims[2] === 1, ...options });
    if (res.mask) {
      const nk = res.mask.dims.at(-1), blocks = Math.ceil(cache.length / BK);
      for (let g = 0; g < model.kvHeads; g++) {
        for (let j = 0; j < blocks; j++) {
          let any = 0;
          for (let r = 0; r < G; r++) any |= res.mask.data[(g * G + r) * nk + j];
          read += any;
        }
        present += blocks;
      }
    }
    return res.output;
  };
  try {
    const res = await generate(model, prompt, steps, { attendNew, forced });
    return { logits: res.logits, read: present ? read / present : 1 };
  } finally {
    for (const c of caches) await c.dispose();
  }
}

const stack = (rows) => {
  const V = model.vocab, data = new Float32Array(rows.length * V);
  rows.forEach((r, i) => data.set(r, i * V));
  return { data, dims: [rows.length, V] };
};
const dense = stack((await pass('dense')).logits);
const rules = [
  { topk: 0.2 }, { topk: 0.3 }, { topk: 0.5 }, { topk: 0.7 },
  { cdfThreshold: 0.9, simThreshold: -1 }, { cdfThreshold: 0.99, simThreshold: -1 },
];
const rows = [];
for (const rule of rules) {
  for (const groupSelection of [false, true]) {
    const r = await pass({ ...rule, groupSelection });
    const logits = stack(r.logits);
    rows.push({
      rule: rule.topk !== undefined ? `topk ${rule.topk}` : `cdfThreshold ${rule.cdfThreshold}`,
      selection: groupSelection ? 'group' : 'per head',
      'blocks read per kv head': +r.read.toFixed(3),
      'mean KL vs dense': +meanKL(dense, logits).toPrecision(3),
      'top-1 agreement': +nextTokenAgreement(dense, logits).toFixed(3),
    });
    process.stderr.write('.');
  }
}
process.stderr.write('\n');
const cols = Object.keys(rows[0]);
const table = [`| ${cols.join(' | ')} |`, `|${cols.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${cols.map((c) => r[c]).join(' | ')} |`)].join('\n');
console.log(table);
const command = `node bench/group-selection.js --block-k ${BK}`;
const machine = { node: process.version, date: new Date().toISOString(), module: sparge.features.module };
fs.writeFileSync(here('./results/group-selection.json'), JSON.stringify({ machine, command, steps, blockK: BK, rows }, null, 1) + '\n');
fs.writeFileSync(here('./results/group-selection.md'), `Command: \`${command}\` (${machine.date}, Node ${machine.node}, ${machine.module} module). ` +
  `stories260K teacher-forced over ${steps} decode steps (${PROMPT}-token prompt), blocks of ${BK} keys, attentionSink on.\n\n${table}\n`);
await sparge.dispose();
