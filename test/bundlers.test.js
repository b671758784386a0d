// Bundlers: a consumer that installs the packed tarball and imports 'sparge-wasm' by name, bundled
// by esbuild for Node (worker as an entry of its own, or moved and found through workerUrl), by
// esbuild for browsers and for workerd / edge-light (the export conditions), and by Vite. Each
// bundle's attention and dense outputs must be bitwise those of the unbundled library in this process.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import vm from 'node:vm';
import * as esbuild from 'esbuild';
import { EdgeRuntime } from 'edge-runtime';
import { createSparge } from '../dist/src/index.js';
import { REPO, binary } from './runtimes/compare.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sparge-bundlers-'));
const consumer = path.join(tmp, 'consumer');
const at = (...p) => path.join(consumer, ...p);

// The consumer's code, the same in every bundle: deterministic inputs, one sparse and one dense
// call, outputs as their float32 bit patterns (comparable across realms and processes).
const CALLS = `
const dims = [2, 256, 32];
function inputs() {
  let x = 12345;
  const next = () => { x = (Math.imul(x, 1103515245) + 12345) >>> 0; return x / 2 ** 32 - 0.5; };
  const make = () => { const a = new Float32Array(dims[0] * dims[1] * dims[2]); for (let i = 0; i < a.length; i++) a[i] = next() * 4; return { data: a, dims }; };
  return [make(), make(), make()];
}
const bits = (a) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
async function calls(createSparge, options) {
  const s = await createSparge(options);
  try {
    const [q, k, v] = inputs();
    const sparse = await s.attention(q, k, v, { topk: 0.5, causal: true });
    const dense = await s.denseAttention(q, k, v, { causal: true });
    return { threads: s.threads, threadsReason: s.features.threadsReason ?? null, sparse: bits(sparse.output.data), dense: bits(dense.data) };
  } finally {
    await s.dispose();
  }
}
`;

const NODE_MAIN = `import { createSparge } from 'sparge-wasm';
import baseline from 'sparge-wasm/build/sparge.baseline.wasm';
import baselineShared from 'sparge-wasm/build/sparge.baseline-shared.wasm';
${CALLS}
const [threads, workerUrl] = process.argv.slice(2);
const options = { threads: Number(threads), simd: 'baseline', wasm: { baseline, 'baseline-shared': baselineShared } };
if (workerUrl) options.workerUrl = new URL(workerUrl, import.meta.url);
console.log(JSON.stringify(await calls(createSparge, options)));
`;

// For the browser and edge bundles: evaluated as a script, it leaves run() on globalThis.
const SCRIPT_MAIN = `import { createSparge } from 'sparge-wasm';
import baseline from 'sparge-wasm/build/sparge.baseline.wasm';
import baselineShared from 'sparge-wasm/build/sparge.baseline-shared.wasm';
${CALLS}
globalThis.run = (threads) => calls(createSparge, { threads, simd: 'baseline', wasm: { baseline, 'baseline-shared': baselineShared } });
`;

// The Vite page finds the modules and the worker by itself (no wasm, no workerUrl).
const VITE_MAIN = `import { createSparge } from 'sparge-wasm';
${CALLS}
const result = await calls(createSparge, { threads: 2, simd: 'baseline' });
(globalThis.document ? (t) => { document.body.textContent = t; } : console.log)(JSON.stringify(result));
`;

const reference = await (async () => {
  const ns = { createSparge };
  const calls = new Function('createSparge', `${CALLS}; return calls(createSparge, { threads: 1, simd: 'baseline' });`);
  return calls(ns.createSparge);
})();

/** Bit patterns equal to the library's; a mismatch names its first index rather than print 16K numbers. */
function sameAsLibrary(r, where) {
  for (const name of ['sparse', 'dense']) {
    const got = r[name], want = reference[name];
    assert.is(got.length, want.length, `${where}: ${name} output length`);
    const i = want.findIndex((x, j) => got[j] !== x);
    assert.is(i, -1, `${where}: ${name} output differs from the unbundled library at index ${i}`);
  }
}

// es2022 (node20 for Node): esbuild's inlined .wasm then decodes with atob (Buffer), not with
// Uint8Array.fromBase64, which Node 20 and edge-runtime lack.
const build = (options) => esbuild.build({ absWorkingDir: consumer, bundle: true, target: 'es2022', logLevel: 'silent', ...options });
const runNode = (file, args = []) => JSON.parse(execFileSync(process.execPath, [file, ...args], { cwd: consumer, encoding: 'utf8' }));

test.before(() => {
  fs.mkdirSync(consumer);
  fs.writeFileSync(at('package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  fs.writeFileSync(at('node-main.js'), NODE_MAIN);
  fs.writeFileSync(at('script-main.js'), SCRIPT_MAIN);
  fs.writeFileSync(at('vite-main.js'), VITE_MAIN);
  fs.writeFileSync(at('index.html'), '<!doctype html><script type="module" src="./vite-main.js"></script>\n');
  const [packed] = JSON.parse(execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
  execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', path.join(tmp, packed.filename)], { cwd: consumer, stdio: 'pipe' });
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('esbuild --platform=node: the worker bundled as its own entry next to the bundle; 1 and 2 threads', async () => {
  await build({
    entryPoints: { main: 'node-main.js', worker: 'sparge-wasm/worker' },
    outdir: 'out-node', platform: 'node', format: 'esm', target: 'node20', loader: { '.wasm': 'binary' },
  });
  for (const threads of [1, 2]) {
    const r = runNode(at('out-node/main.js'), [String(threads)]);
    assert.is(r.threads, threads, `threads ${threads}: ${r.threadsReason}`);
    sameAsLibrary(r, `esbuild node bundle, ${threads} thread(s)`);
  }
});

test('esbuild --platform=node: the worker moved elsewhere and found through options.workerUrl', async () => {
  await build({ entryPoints: ['node-main.js'], outfile: 'out-moved/main.js', platform: 'node', format: 'esm', target: 'node20', loader: { '.wasm': 'binary' } });
  fs.mkdirSync(at('out-moved/assets'));
  // The shipped worker stands alone: a plain copy works.
  fs.copyFileSync(at('node_modules/sparge-wasm/dist/src/worker.js'), at('out-moved/assets/sparge-worker.js'));
  const r = runNode(at('out-moved/main.js'), ['2', './assets/sparge-worker.js']);
  assert.is(r.threads, 2, r.threadsReason);
  sameAsLibrary(r, 'esbuild node bundle, workerUrl');
  // Without the worker where it is looked for, the engine runs on one thread and says why.
  const lost = runNode(at('out-moved/main.js'), ['2']);
  assert.is(lost.threads, 1);
  // Which worker reports first, and whether its error or its exit, varies.
  assert.match(lost.threadsReason, /^workers could not be started: sparge-wasm worker \d could not start: /, lost.threadsReason);
  assert.match(lost.threadsReason, /out-moved\/worker\.js|exited with code 1/, lost.threadsReason);
  sameAsLibrary(lost, 'esbuild node bundle, worker missing');
});

test('esbuild --platform=browser resolves the main entry without node: errors; it runs in a bare vm context', async () => {
  const out = await build({ entryPoints: ['script-main.js'], platform: 'browser', format: 'iife', loader: { '.wasm': 'binary' }, write: false, metafile: true });
  assert.ok(Object.keys(out.metafile.inputs).some((f) => f.endsWith('sparge-wasm/dist/src/index.js')), 'the browser condition gives the main entry');
  // An iife has no import.meta: the only warnings esbuild gives are about it.
  assert.equal(out.warnings.filter((w) => !/"import\.meta" is not available/.test(w.text)).map((w) => w.text), []);
  // No process, require, navigator, fetch or Worker: only the language's globals and atob (for the
  // inlined .wasm). Dynamic imports reject there, so node: modules cannot be reached.
  const context = vm.createContext({ atob });
  vm.runInContext(out.outputFiles[0].text, context);
  for (const threads of [1, 2]) {
    const r = await vm.runInContext(`run(${threads})`, context);
    assert.is(r.threads, 1);
    assert.is(r.threadsReason, threads === 1 ? 'threads: 1 was asked for' : 'this runtime has neither Web Workers nor worker_threads');
    sameAsLibrary(r, `esbuild browser bundle in vm, threads: ${threads}`);
  }
});

const SINGLE_REASON = "sparge-wasm/single is the single-thread entry: it starts no workers (import 'sparge-wasm' for threads)";

for (const condition of ['workerd', 'edge-light']) {
  test(`esbuild --conditions=${condition} resolves sparge-wasm/single: no node: module, no worker; it runs in edge-runtime`, async () => {
    const out = await build({
      entryPoints: ['script-main.js'], platform: 'neutral', conditions: [condition], format: 'iife',
      loader: { '.wasm': 'binary' }, write: false, metafile: true,
    });
    const inputs = Object.keys(out.metafile.inputs);
    assert.ok(inputs.some((f) => f.endsWith('sparge-wasm/dist/src/single.js')), `${condition} gives the single entry`);
    for (const f of ['index.js', 'pool.js', 'node.js', 'worker.js']) {
      assert.not.ok(inputs.some((i) => i.endsWith(`sparge-wasm/dist/src/${f}`)), `${f} is bundled`);
    }
    const text = out.outputFiles[0].text;
    assert.not.ok(/node:|new Worker|import\(/.test(text), 'the bundle names a node: module, a Worker or a dynamic import');
    const runtime = new EdgeRuntime({ initialCode: text });
    const r = await runtime.evaluate('run(2)');
    assert.is(r.threads, 1);
    assert.is(r.threadsReason, SINGLE_REASON);
    sameAsLibrary(r, `${condition} bundle in edge-runtime`);
  });
}

test('Node resolves each export condition to its entry', () => {
  const resolve = (flags) => execFileSync(process.execPath, [...flags, '--input-type=module', '-e', "console.log(import.meta.resolve('sparge-wasm'))"],
    { cwd: consumer, encoding: 'utf8' }).trim().replace(/^.*\/sparge-wasm\//, '');
  assert.is(resolve([]), 'dist/src/index.js');
  for (const c of ['workerd', 'worker', 'edge-light']) assert.is(resolve(['-C', c]), 'dist/src/single.js', c);
  assert.is(resolve(['-C', 'browser']), 'dist/src/index.js');
});

let vite;
try {
  vite = await import('vite');
} catch (e) {
  console.log(`skipped: vite is not installed (${e.code ?? e.message})`);
}
const deno = binary('deno');
if (vite) {
  test('Vite: the worker is a chunk of its own (no data: URL), the .wasm builds are assets; the page runs in Deno on 2 threads', async () => {
    await vite.build({
      root: consumer, base: './', logLevel: 'silent', configFile: false,
      // The module preload polyfill reads document, which Deno lacks; browsers run the page either way.
      build: { outDir: 'out-vite', emptyOutDir: true, modulePreload: { polyfill: false }, rollupOptions: { input: at('index.html') } },
    });
    const assets = fs.readdirSync(at('out-vite/assets'));
    const js = assets.filter((f) => f.endsWith('.js'));
    const worker = js.find((f) => fs.readFileSync(at('out-vite/assets', f), 'utf8').includes('parentPort'));
    assert.ok(worker, `no worker chunk among ${assets.join(', ')}`);
    assert.is(js.length, 2, `chunks: ${js.join(', ')}`);
    const main = js.find((f) => f !== worker);
    const mainText = fs.readFileSync(at('out-vite/assets', main), 'utf8');
    assert.ok(mainText.includes(`new Worker(new URL(new URL(\`${worker}\`,import.meta.url)`), `the main chunk does not start ${worker}`);
    assert.not.ok(mainText.includes('data:text/javascript'), 'a worker is inlined as a data: URL');
    for (const kind of ['baseline', 'relaxed', 'baseline-shared', 'relaxed-shared']) {
      assert.ok(assets.some((f) => f.startsWith(`sparge.${kind}-`) && f.endsWith('.wasm')), `sparge.${kind}.wasm is not an asset: ${assets.join(', ')}`);
    }
    if (!deno) {
      console.log('skipped: running the Vite build in Deno (deno is not installed; npm install puts it in node_modules/.bin)');
      return;
    }
    // Deno has Web Workers and reads file: URLs: the built page's chunk runs as it would in a browser.
    const r = JSON.parse(execFileSync(deno, ['run', '-A', at('out-vite/assets', main)], { cwd: consumer, encoding: 'utf8' }));
    assert.is(r.threads, 2, r.threadsReason);
    sameAsLibrary(r, 'Vite build in Deno');
  });
} else {
  test.skip('Vite build');
}

test.run();
