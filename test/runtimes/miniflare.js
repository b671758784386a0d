// Runs the library in Cloudflare's workerd through miniflare (which needs Node 22: test/edge.test.js
// runs this file with a Node of 22 or later). The single entry's unbundled dist/ modules and a
// CompiledWasm module for build/sparge.baseline.wasm are listed explicitly, as wrangler lists them. stdin: q, k and v as float32, one after another; argv[2]: their dims as
// JSON. stdout: one line of JSON, the outputs' bytes in base64.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Miniflare } from 'miniflare';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const file = (p) => path.join(REPO, p);
// The single-thread entry, which wrangler's `workerd` condition selects, and what it imports.
const library = ['src/single.js', 'src/create.js', 'src/calibrate.js', 'src/kvcache.js', 'src/svg.js', 'src/engine.js', 'src/loader.js', 'src/checks.js', 'src/order.js', 'src/memory.js', 'src/tiles.js', 'assembly/params.js']
  .map((p) => ({ type: 'ESModule', path: file(`dist/${p}`) }));

const WORKER = `
import { createSparge } from './dist/src/single.js';
import baseline from './build/sparge.baseline.wasm';

const b64 = (a) => {
  const u8 = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  let s = '';
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
  return btoa(s);
};

export default {
  async fetch(request) {
    const { dims, sparseOpts, denseOpts } = JSON.parse(request.headers.get('x-call'));
    const all = new Float32Array(await request.arrayBuffer());
    const n = all.length / 3;
    const [q, k, v] = [0, 1, 2].map((i) => ({ data: all.slice(i * n, (i + 1) * n), dims }));
    const out = { importMetaUrl: String(import.meta.url) };
    try {
      await createSparge({ threads: 1, simd: 'baseline' });
    } catch (e) {
      out.withoutWasm = e.name + ': ' + e.message;
    }
    const s = await createSparge({ threads: 1, simd: 'baseline', wasm: { baseline } });
    const sparse = await s.attention(q, k, v, sparseOpts);
    const dense = await s.denseAttention(q, k, v, denseOpts);
    Object.assign(out, {
      isModule: Object.prototype.toString.call(baseline),
      threads: s.threads, threadsReason: s.features.threadsReason,
      sparse: b64(sparse.output.data), mask: b64(sparse.mask.data), sparsity: sparse.sparsity, dense: b64(dense.data),
    });
    await s.dispose();
    return Response.json(out);
  },
};`;

const mf = new Miniflare({
  cf: false,
  compatibilityDate: '2025-01-01',
  modulesRoot: REPO,
  modules: [
    { type: 'ESModule', path: file('worker.js'), contents: WORKER },
    ...library,
    { type: 'CompiledWasm', path: file('build/sparge.baseline.wasm') },
  ],
});
try {
  const res = await mf.dispatchFetch('http://localhost/', { method: 'POST', headers: { 'x-call': process.argv[2] }, body: fs.readFileSync(0) });
  const text = await res.text();
  if (!res.ok) throw new Error(`workerd answered HTTP ${res.status}: ${text}`);
  process.stdout.write(`${text}\n`);
} finally {
  await mf.dispose();
}
