// Packaging: `npm pack` holds the built JavaScript, its types, the four .wasm modules, the two
// benchmark modules of the bench command, README and LICENSE and nothing else; a consumer project
// that installs the tarball (offline) type-checks against it, gets no devDependency, runs
// `npx sparge-wasm bench`, and the installed package runs with the wasm found inside it: under Node
// and Bun by its name, under Deno by the npm: specifier (from the consumer's node_modules, no registry).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { CHECK, REPO, binary, runDigest, assertSameAsNode } from './runtimes/compare.js';
import { assertQuickReport } from './bench-report.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sparge-package-'));
const consumer = path.join(tmp, 'consumer');
const npm = (args, cwd) => JSON.parse(execFileSync('npm', [...args, '--json'], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
// dist/ and build/ are already built (npm ci ran prepare): pack them as they are.
const [packed] = npm(['pack', '--ignore-scripts', '--pack-destination', tmp], REPO);
const node = runDigest(process.execPath, [CHECK], { cwd: REPO });

const MAIN_TS = `import { createSparge, type CreateOptions, type AttentionResult, type WasmSources } from 'sparge-wasm';

const wasm: WasmSources = { baseline: new URL('https://example.org/sparge.baseline.wasm') };
const options: CreateOptions = { threads: 2, simd: 'baseline' };
// @ts-expect-error simd is 'auto' | 'relaxed' | 'baseline'
const wrong: CreateOptions = { simd: 'avx' };
const sparge = await createSparge(options);
const q = { data: new Float32Array(2 * 64 * 16), dims: [2, 64, 16] };
const res: AttentionResult = await sparge.attention(q, q, q, { topk: 0.5, causal: true });
const n: number = res.output.data.length + res.sparsity + sparge.threads;
await sparge.dispose();
export { wasm, wrong, n };
`;

test.before(() => {
  fs.mkdirSync(consumer);
  fs.writeFileSync(path.join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  fs.writeFileSync(path.join(consumer, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['ES2022', 'DOM'], types: [], strict: true },
    files: ['main.ts'],
  }));
  fs.writeFileSync(path.join(consumer, 'main.ts'), MAIN_TS);
  // What Node and Bun import by the package name, resolved from the consumer.
  fs.writeFileSync(path.join(consumer, 'entry.js'), "export * from 'sparge-wasm';\n");
  execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', path.join(tmp, packed.filename)], { cwd: consumer, stdio: 'pipe' });
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('the tarball holds the built JavaScript, types, the .wasm modules, README and LICENSE only', () => {
  const files = packed.files.map((f) => f.path).sort();
  const allowed = /^(dist\/(src|assembly)\/[\w-]+\.(js|d\.ts)|build\/(sparge|bench)\.(baseline|relaxed)(-shared)?\.wasm|README\.md|LICENSE|package\.json)$/;
  assert.equal(files.filter((f) => !allowed.test(f)), [], 'unexpected files');
  for (const f of ['dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/single.js', 'dist/src/single.d.ts', 'dist/src/worker.js', 'dist/assembly/params.js', 'README.md', 'LICENSE',
    'dist/src/cli.js', 'build/bench.baseline.wasm', 'build/bench.relaxed.wasm',
    ...['baseline', 'relaxed', 'baseline-shared', 'relaxed-shared'].map((k) => `build/sparge.${k}.wasm`)]) {
    assert.ok(files.includes(f), `${f} is missing`);
  }
});

test('a consumer type-checks against the installed tarball (tsc --noEmit, no Node types)', () => {
  const installed = path.join(consumer, 'node_modules', 'sparge-wasm');
  assert.not.ok(fs.lstatSync(installed).isSymbolicLink(), 'installed as a copy, not a link to the repo');
  const tsc = path.join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');
  execFileSync(process.execPath, [tsc, '--noEmit', '-p', consumer], { encoding: 'utf8' });
});

test('the consumer\'s node_modules holds the package alone: no devDependency, no benchmark library', () => {
  const devDependencies = Object.keys(JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')).devDependencies);
  const modules = path.join(consumer, 'node_modules');
  for (const dep of devDependencies) assert.not.ok(fs.existsSync(path.join(modules, dep)), `${dep} was installed`);
  assert.equal(fs.readdirSync(modules).filter((f) => !f.startsWith('.')), ['sparge-wasm']);
  assert.not.ok(fs.existsSync(path.join(modules, 'sparge-wasm', 'node_modules')), 'nested node_modules');
});

test('npx sparge-wasm bench --quick --json out.json runs in the consumer', () => {
  const t0 = Date.now();
  execFileSync('npx', ['--offline', 'sparge-wasm', 'bench', '--quick', '--json', 'out.json'], { cwd: consumer, stdio: 'pipe' });
  // On a line of its own, after uvu's progress dots, for test/run.js to show.
  console.log(`\nnote: npx sparge-wasm bench --quick took ${((Date.now() - t0) / 1000).toFixed(1)} s in the consumer`);
  assertQuickReport(JSON.parse(fs.readFileSync(path.join(consumer, 'out.json'), 'utf8')), 'node');
});

test('the builds are exported for bundlers as sparge-wasm/build/sparge.<kind>.wasm', () => {
  const resolve = "console.log(import.meta.resolve('sparge-wasm/build/sparge.relaxed-shared.wasm'))";
  const url = execFileSync(process.execPath, ['--input-type=module', '-e', resolve], { cwd: consumer, encoding: 'utf8' }).trim();
  assert.is(url, pathToFileURL(path.join(consumer, 'node_modules/sparge-wasm/build/sparge.relaxed-shared.wasm')).href);
});

test('Node: the installed package, imported by name, gives the repo\'s output', () => {
  const got = runDigest(process.execPath, [CHECK, pathToFileURL(path.join(consumer, 'entry.js')).href], { cwd: consumer });
  assertSameAsNode(node, got, 'node, installed package');
});

const deno = binary('deno'), bun = binary('bun');
if (deno) {
  test('Deno: npm:sparge-wasm from the consumer\'s node_modules, without a registry, gives Node\'s output', () => {
    const env = {
      ...process.env,
      DENO_DIR: path.join(tmp, 'deno-cache'),
      // Nothing answers there: a Deno that went to a registry would fail.
      NPM_CONFIG_REGISTRY: 'http://127.0.0.1:9/',
    };
    const got = runDigest(deno, ['run', '-A', '--node-modules-dir=manual', CHECK, 'npm:sparge-wasm'], { cwd: consumer, env });
    assert.is(got.specifier, 'npm:sparge-wasm');
    assertSameAsNode(node, got, 'deno, npm:sparge-wasm');
  });
} else {
  console.log('skipped: deno is not installed (npm install puts it in node_modules/.bin)');
  test.skip('Deno: npm:sparge-wasm');
}
if (bun) {
  test('Bun: the installed package, imported by name, gives Node\'s output', () => {
    const got = runDigest(bun, [CHECK, pathToFileURL(path.join(consumer, 'entry.js')).href], { cwd: consumer });
    assertSameAsNode(node, got, 'bun, installed package');
  });
} else {
  console.log('skipped: bun is not installed (npm install puts it in node_modules/.bin)');
  test.skip('Bun: the installed package');
}

test.run();
