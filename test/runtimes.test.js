// The same import works unchanged in Node, Deno and Bun (the binaries of the npm packages deno and
// bun): test/runtimes/check.js imports the library by its path in each and must print the digest
// Node prints, bitwise, with 1 and 2 threads. Deno and Bun accept relaxed SIMD, so their relaxed
// runs are held to their baseline ones within 1e-5 L1.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CHECK, REPO, binary, runDigest, assertSound, assertSameAsNode } from './runtimes/compare.js';

const node = runDigest(process.execPath, [CHECK], { cwd: REPO });
const runtimes = {
  deno: (bin) => [bin, ['run', '-A', CHECK]],
  bun: (bin) => [bin, [CHECK]],
};

test('Node: 1 and 2 threads give the same output, close to the reference', () => {
  assertSound(node);
  assert.ok(node.results.every((r) => r.splat === 'load'), 'Node broadcasts by load');
});

for (const [name, command] of Object.entries(runtimes)) {
  const bin = binary(name);
  if (!bin) {
    console.log(`skipped: ${name} is not installed (npm install puts it in node_modules/.bin)`);
    test.skip(`${name}: same output as Node`);
    continue;
  }
  test(`${name}: same output as Node with 1 and 2 threads; relaxed SIMD within 1e-5`, () => {
    const got = runDigest(...command(bin), { cwd: REPO });
    assert.match(got.runtime, name);
    assertSameAsNode(node, got, name);
    assert.ok(got.results.some((r) => r.simd === 'relaxed'), `${name} accepts relaxed SIMD, so it runs that build too`);
    // Stage 2 broadcasts by shuffles in Deno and Bun, where they measured faster; the digests above,
    // equal to Node's (which broadcasts by loads), show that both variants give the same bits.
    assert.ok(got.results.every((r) => r.splat === 'shuffle'), `${name}: splat variant`);
    console.log(`${got.runtime}: ${got.results.map((r) => `${r.case} ${r.module} x${r.threads} ${r.hash}`).join('; ')}`);
  });
}

test.run();
