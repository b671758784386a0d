// The bench command (src/cli.ts) as a user meets it: its help, its refusals (exit code 2), and a
// --quick run's JSON report, in Node and in Deno and Bun (the npm packages' binaries). Timing is
// never asserted; each run's duration is printed as a note.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createSparge } from '../dist/src/index.js';
import { assertQuickReport } from './bench-report.js';
import { binary } from './runtimes/compare.js';

const CLI = fileURLToPath(new URL('../dist/src/cli.js', import.meta.url));
const cli = (...args) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

test('--help prints the usage and exits 0', () => {
  for (const args of [['--help'], ['bench', '-h']]) {
    const r = cli(...args);
    assert.is(r.status, 0, args.join(' '));
    assert.match(r.stdout, /^Usage: sparge-wasm bench \[--quick\] \[--json FILE\] \[--threads N\]/);
    for (const flag of ['--quick', '--json FILE', '--threads N']) assert.ok(r.stdout.includes(flag), flag);
  }
});

test('bad arguments exit 2 with a message naming them', () => {
  for (const [args, message] of [
    [['bench', '--fast'], /Unknown option '--fast'/],
    [['bench', '--threads', 'two'], /--threads takes a positive integer or 'auto', got 'two'/],
    [['bench', '--json'], /--json/],
    [['benchmark'], /unknown command 'benchmark'/],
    [['bench', 'now'], /unexpected argument 'now'/],
    [[], /no command given/],
  ]) {
    const r = cli(...args);
    assert.is(r.status, 2, `${args.join(' ')}: exit code`);
    assert.match(r.stderr, message, args.join(' '));
    assert.match(r.stderr, /Run 'sparge-wasm --help' for usage/);
    assert.is(r.stdout, '', `${args.join(' ')}: nothing measured`);
  }
});

test('the engine gives a reason for each variant the command reports', async () => {
  const asked = await createSparge({ threads: 1, simd: 'baseline', splat: 'shuffle' });
  const f = asked.features;
  assert.equal([f.moduleReason, f.int8DotReason, f.splatReason],
    ["simd: 'baseline' was asked for", 'the baseline module has only the i16 dot', "splat: 'shuffle' was asked for"]);
  await asked.dispose();
});

/** A --quick run with --json in a temporary folder: the exit status, output and parsed report. */
function quickRun(command, args, label) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sparge-cli-'));
  try {
    const file = path.join(dir, 'out.json');
    const t0 = Date.now();
    const r = spawnSync(command, [...args, 'bench', '--quick', '--json', file], { encoding: 'utf8' });
    // On a line of its own, after uvu's progress dots, for test/run.js to show.
    console.log(`\nnote: ${label} bench --quick took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    assert.is(r.status, 0, r.stderr);
    return { ...r, report: JSON.parse(fs.readFileSync(file, 'utf8')) };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('bench --quick --json FILE writes the report; the tables go to stdout, progress to stderr', () => {
  const r = quickRun(process.execPath, [CLI], 'node dist/src/cli.js');
  assertQuickReport(r.report, 'node');
  for (const title of ["What createSparge() picks here with 'auto'", 'Register-resident peaks', 'Kernels over L1-resident tiles', 'Attention, B=1 H=8 D=64']) {
    assert.ok(r.stdout.includes(title), `stdout lacks "${title}"`);
  }
  assert.match(r.stderr, /attention, N=4096/);
  assert.match(r.stderr, /relaxed module|baseline module \d+\/\d+/);
});

for (const [name, args] of [['deno', ['run', '-A', CLI]], ['bun', [CLI]]]) {
  const bin = binary(name);
  if (!bin) {
    console.log(`skipped: ${name} is not installed (npm install puts it in node_modules/.bin)`);
    test.skip(`${name}: bench --quick`);
    continue;
  }
  test(`${name}: bench --quick runs to the end and writes the same report`, () => {
    assertQuickReport(quickRun(bin, args, `${name} dist/src/cli.js`).report, name);
  });
}

test.run();
