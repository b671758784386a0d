// Dense FP32 error against FP64 as the key sequence grows (Stage 2's blocked sums keep it flat),
// and the time of those calls. 32 query rows, one head, D = 64; v has mean 1 so that the running
// sums grow large against each term, where plain float32 summation loses most.
//   node bench/long-keys.js [--threads 1]
// Writes bench/results/long-keys.json.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createSparge } from '../dist/src/index.js';
import { gaussian, tensor, attentionF64, l1 } from '../test/helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const i = process.argv.indexOf('--threads');
const threads = i < 0 ? 1 : Number(process.argv[i + 1]);
const sparge = await createSparge({ threads });
const g = (dims, seed, mul, add) => tensor(gaussian(dims.reduce((a, b) => a * b, 1), seed).map((x) => x * mul + add), dims);

const rows = [];
console.log('| keys | relative L1 vs FP64 | ms |\n|---|---|---|');
for (const nk of [4096, 20000, 80000, 200000]) {
  const q = g([1, 1, 32, 64], 1, 0.5, 0), k = g([1, 1, nk, 64], 2, 0.5, 0), v = g([1, 1, nk, 64], 3, 1, 1);
  const ref = attentionF64(q, k, v);
  const t0 = performance.now();
  const out = await sparge.denseAttention(q, k, v);
  const ms = performance.now() - t0;
  rows.push({ keys: nk, l1: l1(out.data, ref), ms });
  console.log(`| ${nk} | ${rows.at(-1).l1.toExponential(2)} | ${ms.toFixed(1)} |`);
}
fs.mkdirSync(path.join(here, 'results'), { recursive: true });
fs.writeFileSync(path.join(here, 'results/long-keys.json'), JSON.stringify({ date: new Date().toISOString(), node: process.version, threads, module: sparge.features.module, rows }, null, 1) + '\n');
await sparge.dispose();
