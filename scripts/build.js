// npm run build: AssemblyScript kernels -> WebAssembly modules (baseline SIMD128 and relaxed SIMD,
// each over plain and over shared memory), each optimized again by binaryen's wasm-opt, then the
// TypeScript API -> dist/, with the worker bundled into one self-contained script.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import path from 'node:path';
import fs from 'node:fs';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const require = createRequire(import.meta.url);
const bin = (pkg, file) => path.join(path.dirname(require.resolve(`${pkg}/package.json`)), file);
const run = (file, args) => execFileSync(process.execPath, [file, ...args], { cwd: root, stdio: 'inherit' });

// AssemblyScript's default features, which wasm-opt must be told about, plus SIMD. Each build has a
// variant over shared memory (for the worker pool) and one over plain memory (one thread, where
// SharedArrayBuffer is missing); the code is the same.
const common = ['--enable-simd', '--enable-bulk-memory', '--enable-bulk-memory-opt', '--enable-sign-ext',
  '--enable-mutable-globals', '--enable-nontrapping-float-to-int'];
const targets = {
  baseline: common,
  relaxed: [...common, '--enable-relaxed-simd'],
  'baseline-shared': [...common, '--enable-threads'],
  'relaxed-shared': [...common, '--enable-relaxed-simd', '--enable-threads'],
};
const build = (target, out, features, extraEntries = []) => {
  run(bin('assemblyscript', 'bin/asc.js'), [...extraEntries, '--config', 'asconfig.json', '--target', target]);
  run(bin('binaryen', 'bin/wasm-opt'), [out, '-O3', ...features, '-o', out]);
};
for (const [target, features] of Object.entries(targets)) build(target, `build/sparge.${target}.wasm`, features);
// The benchmark modules, shipped for the bench command (src/bench.ts): the kernels plus assembly/bench.ts.
for (const kind of ['baseline', 'relaxed']) build(`bench-${kind}`, `build/bench.${kind}.wasm`, targets[kind], ['assembly/bench.ts']);
run(bin('typescript', 'bin/tsc'), ['-p', 'tsconfig.json']);
// The worker script stands alone (tsc's version imports ./tiles.js and ./node.js), so that bundlers
// and users can move it without its imports: one esbuild entry, or a copy, with options.workerUrl.
const esbuild = await import('esbuild');
await esbuild.build({
  entryPoints: [path.join(root, 'src/worker.ts')], outfile: path.join(root, 'dist/src/worker.js'),
  bundle: true, format: 'esm', platform: 'neutral', target: 'es2022', logLevel: 'warning',
});

// Every worker's instantiation writes the modules' static data into the first page again, so the
// pool's control block (src/tiles.ts) must lie above it.
const { CONTROL_OFFSET } = await import('../dist/src/tiles.js');
for (const target of Object.keys(targets)) {
  const end = staticDataEnd(fs.readFileSync(path.join(root, `build/sparge.${target}.wasm`)));
  if (end > CONTROL_OFFSET) throw new Error(`build/sparge.${target}.wasm: static data ends at ${end}, past the control block at ${CONTROL_OFFSET}`);
}

/** End of the highest active data segment (offsets given as i32.const) of a module. */
function staticDataEnd(bytes) {
  let at = 8;
  const leb = () => {
    let x = 0, shift = 0, b;
    do { b = bytes[at++]; x += (b & 0x7f) * 2 ** shift; shift += 7; } while (b & 0x80);
    return x;
  };
  while (at < bytes.length) {
    const id = bytes[at++], size = leb(), next = at + size;
    if (id === 11) {
      let end = 0;
      for (let n = leb(); n > 0; n--) {
        const flags = leb();
        if (flags === 1) { at += leb(); continue; } // passive: copied by the module itself
        if (flags === 2) leb();
        if (bytes[at++] !== 0x41) throw new Error('data segment offset is not an i32.const');
        const offset = leb();
        at++; // end
        const len = leb();
        at += len;
        end = Math.max(end, offset + len);
      }
      return end;
    }
    at = next;
  }
  return 0;
}
