// Edge runtimes: the library bundled into one script (as Vercel bundles an edge function) and
// evaluated in edge-runtime's VM, where import.meta.url is undefined and the caller's objects come
// from another realm; and its dist/ modules in Cloudflare's workerd through miniflare
// (test/runtimes/miniflare.js; miniflare needs Node 22, so that part runs where the suite runs on
// Node 22 or later, as CI's second and third passes do, or under SPARGE_NODE22=/path/to/node).
// Their outputs must be bitwise those of the same calls in Node.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import vm from 'node:vm';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { EdgeRuntime } from 'edge-runtime';
import { createSparge } from '../dist/src/index.js';
import { gaussian, tensor } from './helpers.js';

const bytes = (kind) => new Uint8Array(fs.readFileSync(new URL(`../build/sparge.${kind}.wasm`, import.meta.url)));
const baseline = await WebAssembly.compile(bytes('baseline'));
const baselineShared = await WebAssembly.compile(bytes('baseline-shared'));

const dims = [2, 256, 32];
const size = dims.reduce((a, b) => a * b, 1);
const inputs = { q: gaussian(size, 11), k: gaussian(size, 12), v: gaussian(size, 13) };
const sparseOpts = { topk: 0.5, causal: true, returnMask: true };
const denseOpts = { causal: true };

/** The bytes of a typed array from any realm, for a bitwise comparison. */
const raw = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

async function calls(s, q, k, v) {
  const sparse = await s.attention(q, k, v, sparseOpts);
  const dense = await s.denseAttention(q, k, v, denseOpts);
  return { sparse: sparse.output.data, mask: sparse.mask.data, sparsity: sparse.sparsity, dense: dense.data };
}

const node = await (async () => {
  const s = await createSparge({ threads: 1, simd: 'baseline' });
  try {
    return await calls(s, tensor(inputs.q, dims), tensor(inputs.k, dims), tensor(inputs.v, dims));
  } finally {
    await s.dispose();
  }
})();

function sameAsNode(r) {
  assert.ok(raw(r.sparse).equals(raw(node.sparse)), 'attention output differs from Node');
  assert.ok(raw(r.mask).equals(raw(node.mask)), 'attention mask differs from Node');
  assert.is(r.sparsity, node.sparsity);
  assert.ok(raw(r.dense).equals(raw(node.dense)), 'denseAttention output differs from Node');
}

const bundle = await esbuild.build({
  entryPoints: [fileURLToPath(new URL('../dist/src/index.js', import.meta.url))],
  bundle: true,
  format: 'iife',
  globalName: 'sparge',
  platform: 'neutral',
  external: ['node:*'],
  write: false,
  logLevel: 'silent',
});

/** A fresh edge-runtime VM that has evaluated the bundle, with `globals` set in its context. */
function edge(globals = {}) {
  const runtime = new EdgeRuntime({ initialCode: bundle.outputFiles[0].text });
  Object.assign(runtime.context, { inputs }, globals);
  return runtime;
}

// The VM's errors belong to its realm: they come back as { name, message }. Inputs are made inside,
// as an edge function would make them.
const RUN = `
  const sparseOpts = ${JSON.stringify(sparseOpts)}, denseOpts = ${JSON.stringify(denseOpts)};
  async function run(options) {
    try {
      const s = await sparge.createSparge(options);
      const t = (a) => ({ data: new Float32Array(a), dims: ${JSON.stringify(dims)} });
      const r = await (${calls})(s, t(inputs.q), t(inputs.k), t(inputs.v));
      r.threads = s.threads;
      r.features = s.features;
      await s.dispose();
      return r;
    } catch (e) {
      return { error: { name: e.name, message: e.message } };
    }
  }`;
const evaluate = (runtime, body) => runtime.evaluate(`(async () => { ${RUN}\n${body} })()`);

test('the bundle loads where import.meta.url is undefined', () => {
  assert.ok(bundle.warnings.some((w) => /"import\.meta" is not available/.test(w.text)), 'esbuild left import.meta.url defined');
  const runtime = edge();
  assert.is(runtime.evaluate('typeof sparge.createSparge'), 'function');
});

test('without options.wasm, createSparge rejects naming options.wasm and the reason', async () => {
  const r = await evaluate(edge(), "return run({ threads: 1, simd: 'baseline' });");
  assert.is(r.error?.name, 'Error');
  assert.is(r.error.message,
    'sparge-wasm cannot locate build/sparge.baseline.wasm: this runtime gives modules no URL (import.meta.url is undefined); pass the builds with options.wasm');
});

test('a WebAssembly.Module compiled outside the VM gives bitwise the outputs of Node', async () => {
  const r = await evaluate(edge({ module: baseline }), "return run({ threads: 1, simd: 'baseline', wasm: { baseline: module } });");
  assert.is(r.error, undefined, r.error?.message);
  assert.is(r.threads, 1);
  sameAsNode(r);
});

test('bytes and Responses made outside the VM and inside it give bitwise the outputs of Node', async () => {
  const u8 = bytes('baseline');
  const runtime = edge({ u8, buffer: u8.slice().buffer });
  const sources = {
    'a Uint8Array from outside': 'u8',
    'an ArrayBuffer from outside': 'buffer',
    'a Uint8Array made inside': 'new Uint8Array(u8)',
    'a Response made inside': 'new Response(u8)',
    'a Response from outside': 'response',
  };
  for (const [name, src] of Object.entries(sources)) {
    runtime.context.response = new Response(u8);
    const r = await evaluate(runtime, `return run({ threads: 1, simd: 'baseline', wasm: { baseline: ${src} } });`);
    assert.is(r.error, undefined, `${name}: ${r.error?.message}`);
    sameAsNode(r);
  }
});

test('where Workers exist but the worker script has no URL, the engine runs on one thread and says why', async () => {
  let constructed = false;
  const runtime = edge({ baseline, baselineShared, Worker: function Worker() { constructed = true; } });
  const r = await evaluate(runtime, "return run({ threads: 2, simd: 'baseline', wasm: { baseline, 'baseline-shared': baselineShared } });");
  assert.is(r.error, undefined, r.error?.message);
  assert.is(r.threads, 1);
  assert.is(r.features.threads, false);
  assert.is(r.features.threadsReason,
    'workers could not be started: the worker script ./worker.js cannot be located: this runtime gives modules no URL (import.meta.url is undefined)');
  assert.not.ok(constructed);
  sameAsNode(r);
});

test('a bad options.wasm value from another realm is refused, naming it', async () => {
  const r = await evaluate(edge(), "return run({ threads: 1, wasm: { baseline: new Date(0) } });");
  assert.is(r.error?.name, 'TypeError');
  assert.is(r.error.message, 'options.wasm.baseline must be a BufferSource, URL, string, Response or WebAssembly.Module, got Date');
});

test('in Node, a module and bytes from another realm are taken', async () => {
  const other = vm.createContext({ source: bytes('baseline') });
  const made = {
    'a WebAssembly.Module': vm.runInContext('new WebAssembly.Module(source)', other),
    'a Uint8Array': vm.runInContext('new Uint8Array(source)', other),
    'an ArrayBuffer': vm.runInContext('new Uint8Array(source).buffer', other),
  };
  for (const [name, src] of Object.entries(made)) {
    assert.not.ok(src instanceof Object, `${name} was made in this realm`);
    const s = await createSparge({ threads: 1, simd: 'baseline', wasm: { baseline: src } });
    try {
      sameAsNode(await calls(s, tensor(inputs.q, dims), tensor(inputs.k, dims), tensor(inputs.v, dims)));
    } finally {
      await s.dispose();
    }
  }
});

const NODE22 = Number(process.versions.node.split('.')[0]) >= 22 ? process.execPath : process.env.SPARGE_NODE22;
const MINIFLARE = fileURLToPath(new URL('./runtimes/miniflare.js', import.meta.url));
if (!NODE22) {
  console.log(`skipped: workerd (miniflare needs Node 22; this is ${process.version}; CI runs it on Node 22 and 24, or set SPARGE_NODE22)`);
  test.skip('workerd: CompiledWasm module gives bitwise the outputs of Node');
} else {
  test('workerd: CompiledWasm module gives bitwise the outputs of Node; without options.wasm it rejects naming it', () => {
    const call = JSON.stringify({ dims, sparseOpts, denseOpts });
    const input = Buffer.concat([inputs.q, inputs.k, inputs.v].map(raw));
    const out = execFileSync(NODE22, [MINIFLARE, call], { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
    const r = JSON.parse(out.trim().split('\n').at(-1));
    assert.is(r.importMetaUrl, 'undefined');
    assert.is(r.withoutWasm,
      'Error: sparge-wasm cannot locate build/sparge.baseline.wasm: this runtime gives modules no URL (import.meta.url is undefined); pass the builds with options.wasm');
    assert.is(r.isModule, '[object WebAssembly.Module]');
    assert.is(r.threads, 1);
    const bytes = (b64) => Buffer.from(b64, 'base64');
    sameAsNode({ sparse: bytes(r.sparse), mask: bytes(r.mask), sparsity: r.sparsity, dense: bytes(r.dense) });
  });
}

test.run();
