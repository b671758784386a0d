#!/usr/bin/env node
// The package's command (`npx sparge-wasm bench`): its arguments, the order of the measurements
// (src/bench.ts, src/bench-attention.ts), progress on stderr, the tables on stdout and the JSON.
import { parseArgs } from 'node:util';
import { readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import process from 'node:process';
import { type BenchModule, type KernelRow, allowRelaxedSimd, measureKernels, runtimeName } from './bench.js';
import { HEADS, HEAD_DIM, measureAttention } from './bench-attention.js';
import type { Budget } from './timing.js';

const USAGE = `Usage: sparge-wasm bench [--quick] [--json FILE] [--threads N]

Measures this machine for sparge-wasm: the register-resident peaks of the WebAssembly SIMD
instructions its kernels use, each kernel's rate and share of the peak of its instruction mix
(baseline and relaxed-SIMD modules), dense against sparse attention at a few sizes, and which
module, INT8 dot and broadcast createSparge's 'auto' picks here, and why. Tables go to stdout,
progress to stderr.

Options:
  --quick        shorter measurements, N up to 4096 (under 30 s)
  --json FILE    also write the results to FILE as JSON
  --threads N    threads for the attention runs (default: auto)
  -h, --help     this text
`;

interface Args {
  quick: boolean;
  json?: string;
  threads: number | 'auto';
}

interface Settings {
  kernels: Budget;
  attention: Budget;
  sizes: number[];
}

const SETTINGS: Record<'quick' | 'full', Settings> = {
  quick: { kernels: { warmupMs: 30, timeMs: 100, minSamples: 3 }, attention: { warmupMs: 0, timeMs: 0, minSamples: 2 }, sizes: [1024, 4096] },
  full: { kernels: { warmupMs: 100, timeMs: 300, minSamples: 5 }, attention: { warmupMs: 0, timeMs: 2000, minSamples: 3 }, sizes: [1024, 4096, 8192] },
};

class UsageError extends Error {}

/** The arguments, or undefined for --help; a UsageError for anything else. */
function parse(argv: string[]): Args | undefined {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv, allowPositionals: true, strict: true,
      options: { quick: { type: 'boolean' }, json: { type: 'string' }, threads: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (e) {
    // Node's message goes on about positionals after '--', of no use here.
    throw new UsageError((e as Error).message.split('. ')[0]);
  }
  const { values, positionals } = parsed;
  if (values.help) return undefined;
  if (positionals[0] !== 'bench') throw new UsageError(positionals.length ? `unknown command '${positionals[0]}'` : 'no command given');
  if (positionals.length > 1) throw new UsageError(`unexpected argument '${positionals[1]}'`);
  const threads = values.threads ?? 'auto';
  if (threads !== 'auto' && !/^[1-9]\d*$/.test(threads)) throw new UsageError(`--threads takes a positive integer or 'auto', got '${threads}'`);
  return { quick: !!values.quick, json: values.json, threads: threads === 'auto' ? 'auto' : Number(threads) };
}

const started = performance.now();
// Other processes' load at the start, which the figures depend on.
const loadAverage = os.loadavg()[0];
const seconds = () => ((performance.now() - started) / 1000).toFixed(1);
const progress = (line: string) => process.stderr.write(`[${seconds().padStart(5)} s] ${line}\n`);

async function bench(args: Args) {
  const s = SETTINGS[args.quick ? 'quick' : 'full'];
  // Attention first: 'auto' must pick as it would in a user's process, before the relaxed kernels
  // may turn on V8's relaxed-SIMD flag.
  const attention = await measureAttention({
    sizes: s.sizes, threads: args.threads, budget: s.attention,
    onSize: (N) => progress(`attention, N=${N}: dense and sparse`),
  });
  const { rows, relaxed } = await measureModules(s.kernels);
  progress('done');
  return {
    tool: 'sparge-wasm bench',
    version: await packageVersion(),
    date: new Date().toISOString(),
    quick: args.quick,
    runtime: runtimeName(),
    machine: { platform: os.platform(), arch: os.arch(), cpus: os.cpus().length, model: os.cpus()[0]?.model, loadAverage },
    relaxedModule: relaxed,
    auto: attention.features,
    peaks: rows.filter((r) => r.kind === 'peak'),
    kernels: rows.filter((r) => r.kind !== 'peak'),
    attention: { B: 1, H: HEADS, D: HEAD_DIM, input: 'video-like tokens (frames of 32 x 32)', threads: attention.threads, rows: attention.rows },
    seconds: Number(seconds()),
  };
}

/** The baseline module's rows, and the relaxed one's where this process can run it. */
async function measureModules(budget: Budget) {
  const measure = (module: BenchModule) => measureKernels(module, {
    budget, onRow: (name, i, n) => progress(`${module} module ${i + 1}/${n}: ${name}`),
  });
  const rows = await measure('baseline');
  const relaxed = await allowRelaxedSimd();
  if (relaxed) rows.push(...await measure('relaxed'));
  else progress('relaxed module: this engine lacks relaxed SIMD, skipped');
  return { rows, relaxed: relaxed ?? 'unavailable' };
}

type Report = Awaited<ReturnType<typeof bench>>;

async function packageVersion(): Promise<string> {
  return JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')).version;
}

/** Columns padded to their widest cell; numbers (and empty cells) right-aligned. */
function table(header: string[], rows: string[][]): string {
  const width = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const numeric = header.map((_, c) => rows.every((r) => /^[-\d.,x% ]*$/.test(r[c])));
  const line = (cells: string[]) => '  ' + cells.map((x, c) => (numeric[c] ? x.padStart(width[c]) : x.padEnd(width[c]))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

const fixed = (x: number | undefined, digits: number) => (x === undefined ? '' : x.toFixed(digits));
/** One decimal, two below 10: rates and times alike. */
const num = (x: number | undefined) => fixed(x, x !== undefined && x < 10 ? 2 : 1);

/** Rows by name across the modules measured, in the order of the last module's (relaxed has them all). */
function byModule(rows: KernelRow[], cells: (r: KernelRow | undefined) => string[]): string[][] {
  const modules = [...new Set(rows.map((r) => r.module))];
  const names = [...new Set([...rows.filter((r) => r.module === modules.at(-1)), ...rows].map((r) => r.name))];
  return names.map((name) => [name, ...modules.flatMap((m) => cells(rows.find((r) => r.name === name && r.module === m)))]);
}

function autoSection(r: Report): string {
  const a = r.auto;
  return `What createSparge() picks here with 'auto', and why\n` + table(['choice', 'pick', 'reason'], [
    ['module', a.module, a.moduleReason],
    ['int8Dot', a.int8Dot, a.int8DotReason],
    ['splat', a.splat, a.splatReason],
    ['threads', String(r.attention.threads), a.threadsReason ?? `${a.workers === 'web' ? 'Web Workers' : a.workers} sharing one WebAssembly memory`],
  ]);
}

function kernelSections(r: Report): string[] {
  const modules = [...new Set(r.peaks.map((p) => p.module))];
  const tiles = r.kernels.filter((k) => k.kind === 'tile'), stages = r.kernels.filter((k) => k.kind === 'stage');
  return [
    'Register-resident peaks, Gop/s (a multiply-add counts 2 ops)\n' +
      table(['loop', ...modules], byModule(r.peaks, (p) => [num(p?.gops)])),
    'Kernels over L1-resident tiles (4 query rows x 64 keys, D=64), Gop/s and % of the peak of their mix\n' +
      '(FP32 tiles: f32 mul + add in the baseline module, relaxed_madd in the relaxed one; exp2: G values/s)\n' +
      table(['kernel', ...modules.flatMap((m) => [m, '%'])], byModule(tiles, (k) => [num(k?.gops), fixed(k?.percentOfPeak, 0)])),
    'Stages 0 and 1 on one thread, N=4096, H=8, D=64, ms\n' + table(['stage', ...modules], byModule(stages, (k) => [fixed(k?.ms, 2)])),
  ];
}

function attentionSection(r: Report): string {
  const a = r.attention;
  return `Attention, B=1 H=${a.H} D=${a.D}, ${a.input}, ${a.threads} thread(s), ${r.auto.module} module\n` +
    table(['N', 'variant', 'ms', 'speedup', 'sparsity'],
      a.rows.map((x) => [String(x.N), x.variant, num(x.ms), `${fixed(x.speedup, 2)}x`, fixed(x.sparsity, 3)]));
}

function render(r: Report): string {
  const m = r.machine;
  const flag = r.relaxedModule === 'flag'
    ? "\n(relaxed module: V8's --experimental-wasm-relaxed-simd, turned on by this command after the attention runs)" : '';
  const head = `sparge-wasm ${r.version} bench${r.quick ? ' --quick' : ''}: ${r.runtime}, ${m.platform} ${m.arch}, ${m.cpus} cores (${m.model}, load average ${m.loadAverage.toFixed(1)}), ${r.date.slice(0, 10)}${flag}`;
  return [head, autoSection(r), ...kernelSections(r), attentionSection(r), `${r.seconds} s in all`].join('\n\n') + '\n';
}

async function main(argv: string[]): Promise<number> {
  let args;
  try {
    args = parse(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`sparge-wasm: ${e.message}\nRun 'sparge-wasm --help' for usage.\n`);
    return 2;
  }
  if (!args) {
    process.stdout.write(USAGE);
    return 0;
  }
  const report = await bench(args);
  process.stdout.write(render(report));
  if (args.json) await writeFile(args.json, JSON.stringify(report, null, 1) + '\n');
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
