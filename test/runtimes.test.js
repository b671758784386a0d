// The same import works unchanged in Node, Deno and Bun (the binaries of the npm packages deno and
// bun): test/runtimes/check.js imports the library by its path in each and must print the digest
// Node prints, bitwise, with 1 and 2 threads. Deno and Bun accept relaxed SIMD, so their relaxed
// runs are held to their baseline ones within 1e-5 L1.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CHECK, REPO, binary, runDigest, assertSound, assertSameAsNode } from './runtimes/compare.js';

const EXIT = fileURLToPath(new URL('./runtimes/exit.js', import.meta.url));

const node = runDigest(process.execPath, [CHECK], { cwd: REPO });
const runtimes = {
  deno: (bin, script = CHECK, args = []) => [bin, ['run', '-A', script, ...args]],
  bun: (bin, script = CHECK, args = []) => [bin, [script, ...args]],
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

  // Deno's Web Workers cannot be unref'd, so an undisposed engine there kept the process alive
  // until the engine took Deno's worker_threads instead (src/pool.ts, workerKind).
  test(`${name}: the process exits by itself after dispose(), and even without it`, () => {
    for (const args of [['dispose'], []]) {
      const r = spawnSync(...command(bin, EXIT, args), { cwd: REPO, encoding: 'utf8', timeout: 60000 });
      assert.is(r.signal, null, `${name} did not exit by itself (${args.join('') || 'no dispose'})`);
      assert.is(r.status, 0, r.stderr);
      assert.is(JSON.parse(r.stdout).threads, 2, `${name} ran 2 threads`);
    }
  });
}

test.run();
