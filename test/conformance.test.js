// Conformance with the reference implementation on every case and config of fixtures/reference
// (and of the project's full set in ../shared/reference, where it is at hand):
// masks compared by the pooled mass they keep, outputs by L1 against an FP64 dense reference.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createSparge } from '../dist/src/index.js';
import { referenceCases, loadCase, attentionF64, stage1F64, compareMasks, l1, FIXTURE_CASES } from './helpers.js';

const sparge = await createSparge({ threads: 1, simd: process.env.SPARGE_SIMD ?? 'auto' });
const cases = referenceCases();
const rows = [];

test('the reference cases are present', () => {
  for (const n of FIXTURE_CASES) assert.ok(cases.includes(n), `fixture ${n} is missing`);
  const extra = cases.filter((n) => !FIXTURE_CASES.includes(n));
  console.log(`note: cases: ${FIXTURE_CASES.length} from fixtures/reference${extra.length ? `, ${extra.length} more from the full set (${extra.join(', ')})` : ''}`);
});

for (const name of cases) {
  test(`reference case ${name}: masks and outputs agree with the reference`, async () => {
    const c = loadCase(name);
    const Nq = c.q.dims[1], Nk = c.k.dims[1];
    let dense;
    for (const cfg of c.configs) {
      const where = `${name}/${cfg.name}`;
      const res = await sparge.attention(c.q, c.k, c.v, { ...cfg.options, returnMask: true });
      assert.equal(res.mask.dims, cfg.maskDims, `${where}: mask dims`);
      const { phat } = stage1F64(c.q, c.k, cfg.options);
      const cmp = compareMasks(res.mask.data, cfg.mask, phat, res.mask.dims, {
        causal: c.meta.causal, Nq, Nk, blockQ: cfg.blockQ, blockK: cfg.blockK,
      });
      assert.ok(cmp.rowAgreement >= 0.98,
        `${where}: kept mass agrees in ${(cmp.rowAgreement * 100).toFixed(1)}% of rows (worst ${cmp.worst.toFixed(4)})`);
      assert.ok(Math.abs(cmp.densityA - cmp.densityB) <= 0.01,
        `${where}: density ${cmp.densityA.toFixed(4)} vs reference ${cmp.densityB.toFixed(4)}`);
      const row = { case: where, rowAgreement: cmp.rowAgreement, density: cmp.densityA, refDensity: cmp.densityB };
      rows.push(row);
      if (cfg.mask_only) continue;
      dense ??= attentionF64(c.q, c.k, c.v, { causal: c.meta.causal });
      // Our FP64 reference must reproduce the reference's own L1: a check on how the files are read.
      const theirs = l1(cfg.output, dense);
      assert.ok(Math.abs(theirs - cfg.l1_vs_dense) <= 0.01 * cfg.l1_vs_dense + 1e-4,
        `${where}: the reference output has L1 ${theirs} here, its meta says ${cfg.l1_vs_dense}`);
      const err = l1(res.output.data, dense);
      const bound = 1.1 * cfg.l1_vs_dense + 0.002;
      assert.ok(err <= bound, `${where}: L1 vs FP64 ${err.toFixed(5)} > ${bound.toFixed(5)} (reference ${cfg.l1_vs_dense.toFixed(5)})`);
      Object.assign(row, { l1: err, refL1: cfg.l1_vs_dense });
    }
  });
}

test.after(() => {
  if (process.env.SPARGE_VERBOSE) console.table(rows);
  return sparge.dispose();
});
test.run();
