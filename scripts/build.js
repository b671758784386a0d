// npm run build: AssemblyScript kernels -> WebAssembly modules (baseline SIMD128 and relaxed SIMD,
// each over plain and over shared memory), each optimized again by binaryen's wasm-opt, then the
// TypeScript API -> dist/.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import path from 'node:path';

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
// The micro-benchmark modules (not shipped): the kernels plus assembly/bench.ts.
for (const kind of ['baseline', 'relaxed']) build(`bench-${kind}`, `build/bench.${kind}.wasm`, targets[kind], ['assembly/bench.ts']);
run(bin('typescript', 'bin/tsc'), ['-p', 'tsconfig.json']);
