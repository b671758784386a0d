// npm run bench:micro: each kernel's speed beside the peak of its instruction mix, measured in the
// same run by register-resident loops (assembly/bench.ts), with the bench command's measuring code
// (src/bench.ts) at longer budgets; baseline and relaxed modules; Node, and Deno and Bun when their
// binaries are installed.
//   node bench/micro.js            all modules and runtimes, table + bench/results/micro.json
//   <runtime> bench/micro.js --only   this runtime's rows, JSON on stdout
//   --filter word,word   only the kernels whose names contain a word
// Units: Gop/s counts a multiply-add as 2 ops; exp2 and the stages count one op per value.
import fs from 'node:fs';
import os from 'node:os';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { allowRelaxedSimd, measureKernels, runtimeName } from '../dist/src/bench.js';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const arg = (name) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? undefined : process.argv[i + 1];
};
const budget = { warmupMs: 100, timeMs: 300, minSamples: 5 };

/** This runtime's rows: the baseline module, and the relaxed one where the engine can run it. */
async function measure() {
  const options = { budget, filter: arg('filter')?.split(',') };
  const modules = (await allowRelaxedSimd()) ? ['baseline', 'relaxed'] : ['baseline'];
  const rows = [];
  for (const module of modules) rows.push(...await measureKernels(module, options));
  const runtime = runtimeName();
  return rows.map((r) => ({ runtime, ...r, ms: +r.ms.toFixed(4), gops: +r.gops.toFixed(2), percentOfPeak: r.percentOfPeak && +r.percentOfPeak.toFixed(1) }));
}

if (process.argv.includes('--only')) {
  console.log(JSON.stringify(await measure()));
} else {
  const rows = await measure();
  const child = (cmd, args) => {
    try {
      return JSON.parse(execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim().split('\n').pop());
    } catch {
      return [];
    }
  };
  const self = here('./micro.js');
  const passOn = process.argv.slice(2);
  for (const [name, bin, pre] of [['deno', here('../node_modules/.bin/deno'), ['run', '-A']], ['bun', here('../node_modules/.bin/bun'), []]]) {
    if (fs.existsSync(bin)) rows.push(...child(bin, [...pre, self, '--only', ...passOn]));
    else console.log(`(${name} is not installed: skipped)`);
  }
  console.table(rows);
  const file = here('./results/micro.json');
  fs.writeFileSync(file, JSON.stringify({
    date: new Date().toISOString(), command: 'node bench/micro.js',
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model }, rows,
  }, null, 1) + '\n');
  console.log(`wrote ${file}`);
}
