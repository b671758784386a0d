// What the bench command's JSON report must hold, wherever it ran (test/cli.test.js from the repo,
// test/package.test.js from an installed tarball): its fields, and finite positive measurements.
import * as assert from 'uvu/assert';

const positive = (x, where) => assert.ok(Number.isFinite(x) && x > 0, `${where}: ${x} is not a finite positive number`);

/** The report of a --quick run in `runtime` (its name's first word: node, deno or bun). */
export function assertQuickReport(report, runtime) {
  assert.is(report.tool, 'sparge-wasm bench');
  assert.ok(report.quick);
  assert.match(report.runtime, new RegExp(`^${runtime} `));
  positive(report.machine.cpus, 'machine.cpus');
  for (const key of ['module', 'int8Dot', 'splat']) {
    assert.type(report.auto[key], 'string', `auto.${key}`);
    assert.ok(report.auto[`${key}Reason`].length > 0, `auto.${key}Reason is empty`);
  }
  assert.ok(['native', 'flag', 'unavailable'].includes(report.relaxedModule), report.relaxedModule);
  assertKernels(report);
  assertAttention(report.attention);
}

function assertKernels({ peaks, kernels, relaxedModule }) {
  const modules = relaxedModule === 'unavailable' ? ['baseline'] : ['baseline', 'relaxed'];
  assert.equal([...new Set(kernels.map((k) => k.module))], modules);
  for (const r of [...peaks, ...kernels]) {
    positive(r.ms, `${r.module} ${r.name} ms`);
    positive(r.gops, `${r.module} ${r.name} Gop/s`);
  }
  for (const name of ['f32 mul + add', 'i32x4.dot_i16x8_s + add (i16 QK mix)']) {
    assert.ok(peaks.some((p) => p.name === name), `peak ${name} is missing`);
  }
  if (modules.includes('relaxed')) assert.ok(peaks.some((p) => p.name === 'f32 relaxed_madd (FMA)'), 'the relaxed FMA peak is missing');
  const tiles = kernels.filter((k) => k.kind === 'tile');
  assert.ok(tiles.length >= 7 * modules.length, `${tiles.length} tile rows`);
  for (const t of tiles) positive(t.percentOfPeak, `${t.module} ${t.name} % of ${t.peak}`);
  assert.is(kernels.filter((k) => k.kind === 'stage').length, 6 * modules.length);
}

function assertAttention(attention) {
  assert.equal([attention.B, attention.H, attention.D], [1, 8, 64]);
  positive(attention.threads, 'attention.threads');
  assert.equal(attention.rows.map((r) => `${r.N} ${r.variant}`), [1024, 4096].flatMap((N) =>
    [`${N} dense FP32`, `${N} sparse, top-k 0.25`, `${N} sparse, top-k 0.1`]));
  for (const r of attention.rows) {
    positive(r.ms, `N=${r.N} ${r.variant} ms`);
    positive(r.speedup, `N=${r.N} ${r.variant} speedup`);
    assert.ok(r.variant.startsWith('dense') ? r.sparsity === 0 : r.sparsity > 0 && r.sparsity < 1, `N=${r.N} ${r.variant} sparsity ${r.sparsity}`);
  }
}
