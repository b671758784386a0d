// The relaxed-SIMD module must agree with the baseline one: the same masks, and outputs equal up
// to FMA rounding. In particular its i8 x i7 dot products, whose second operand is kept in [0, 127]
// (quantize_k), must give the exact integer scores on every engine and in every compiler tier.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { RELAXED_FLAGS } from './helpers.js';

const child = fileURLToPath(new URL('./relaxed-child.js', import.meta.url));

test('relaxed and baseline modules agree (Node 20 with --experimental-wasm-relaxed-simd, 22 and later as they are)', () => {
  // --liftoff-only keeps every function in V8's baseline compiler, where Node 20 once doubled
  // i32x4.relaxed_dot_i8x16_i7x16_add_s; the default run covers the optimizing tier.
  for (const tier of [[], ['--liftoff-only']]) {
    const out = execFileSync(process.execPath, [...RELAXED_FLAGS, ...tier, child], { encoding: 'utf8' });
    for (const r of JSON.parse(out)) {
      const where = `${r.name} ${tier.join(' ')}`;
      assert.equal(r.modules, ['baseline', 'relaxed']);
      assert.equal(r.int8Dots, ['i16', 'relaxed', 'i16']);
      assert.ok(r.dotPathsBitwiseEqual, `${where}: the i16 and relaxed INT8 dots gave different outputs`);
      assert.ok(r.splatsBitwiseEqual, `${where}: the load and shuffle broadcasts gave different outputs`);
      assert.is(r.maskEntriesDiffering, 0, `${where}: masks differ`);
      assert.ok(r.sparseL1 < 1e-5, `${where}: sparse outputs differ, L1 ${r.sparseL1}, max ${r.sparseMaxAbsDiff}`);
      assert.ok(r.denseL1 < 1e-5, `${where}: dense outputs differ, L1 ${r.denseL1}, max ${r.denseMaxAbsDiff}`);
    }
  }
});

test.run();
