// For the tests that run check.js or page.html elsewhere (runtimes, browser, package): finding the
// runtimes' binaries, running check.js, and what "the same output as Node" means for a digest.
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const CHECK = fileURLToPath(new URL('./check.js', import.meta.url));

/** The binary an npm devDependency (deno, bun) puts in node_modules/.bin, if installed. */
export function binary(name) {
  const file = fileURLToPath(new URL(`../../node_modules/.bin/${name}`, import.meta.url));
  return fs.existsSync(file) ? file : undefined;
}

/** Runs a command that prints a digest (check.js) and parses it; stderr is kept for failures. */
export function runDigest(command, args, options = {}) {
  const out = execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...options });
  return JSON.parse(out);
}

/** Node's own digest must be sound before the others are held to it. */
export function assertSound(node) {
  const baseline = node.results.filter((r) => r.simd === 'baseline');
  assert.ok(baseline.length >= 4, 'the digest covers two cases with 1 and 2 threads');
  for (const r of baseline) {
    assert.is(r.threads, r.threadsAsked, `${r.case}: Node runs ${r.threadsAsked} threads`);
    // The reference implementation's own output is within 0.01 of FP64 on both cases.
    assert.ok(r.l1VsReference < 0.01, `${r.case}: L1 vs the reference output ${r.l1VsReference}`);
    assert.is(r.hash, baseline.find((x) => x.case === r.case).hash, `${r.case}: ${r.threadsAsked} threads differ from 1`);
  }
}

/**
 * `got` (another runtime's digest) equals Node's bitwise on the baseline build, for every case and
 * thread count; `threads` is how many threads a run asking for 2 must get there. Its relaxed-SIMD
 * runs, if any, agree with its baseline ones within 1e-5 L1 and across thread counts bitwise.
 */
export function assertSameAsNode(node, got, where, { threads = 2 } = {}) {
  for (const want of node.results.filter((r) => r.simd === 'baseline')) {
    const r = got.results.find((x) => x.case === want.case && x.simd === 'baseline' && x.threadsAsked === want.threadsAsked);
    const at = `${where}, ${want.case}, ${want.threadsAsked} thread(s) asked`;
    assert.ok(r, `${at}: missing from the digest`);
    assert.is(r.module, 'baseline', `${at}: module`);
    assert.is(r.threads, Math.min(want.threadsAsked, threads), `${at}: threads in use (${r.threadsReason})`);
    assert.is(r.hash, want.hash, `${at}: output differs from Node's (first values ${r.head} vs ${want.head})`);
  }
  for (const r of got.results.filter((x) => x.simd === 'relaxed')) {
    const at = `${where}, ${r.case}, relaxed, ${r.threadsAsked} thread(s) asked`;
    assert.is(r.module, 'relaxed', `${at}: module`);
    assert.ok(r.l1VsBaseline < 1e-5, `${at}: L1 vs the baseline build ${r.l1VsBaseline}`);
    const one = got.results.find((x) => x.case === r.case && x.simd === 'relaxed' && x.threadsAsked === 1);
    assert.is(r.hash, one.hash, `${at}: output differs from 1 thread's`);
  }
}
