// Browsers: test/runtimes/page.html and the demo page in headless Chromium (Debian's, driven by
// playwright-core), served from loopback by scripts/serve.js. With COOP/COEP a page is cross-origin
// isolated and runs 2 threads on Web Workers; without them it has no SharedArrayBuffer and runs one
// thread, saying why. Either way its output equals Node's bitwise on the baseline build.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { CHECK, REPO, runDigest, assertSound, assertSameAsNode } from './runtimes/compare.js';
import { serve, ISOLATION } from '../scripts/serve.js';

const CHROMIUM = '/usr/bin/chromium';

/** What a page served from the repository (with `headers`) leaves in globalThis[name]. */
async function pageResult(context, headers, url, name) {
  const server = await serve({ root: REPO, headers });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  try {
    await page.goto(`http://127.0.0.1:${server.address().port}${url}`);
    return await page.evaluate((n) => globalThis[n], name);
  } catch (e) {
    throw new Error(`${e.message}\npage errors: ${errors.join('; ')}`);
  } finally {
    await page.close();
    await new Promise((resolve) => server.close(resolve));
  }
}

if (!fs.existsSync(CHROMIUM) && !process.env.CI) {
  console.log(`skipped: ${CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)`);
  test.skip('Chromium: same output as Node, isolated with 2 threads and not isolated with 1');
} else {
  const node = runDigest(process.execPath, [CHECK], { cwd: REPO });
  let context, profile;

  test.before(async () => {
    profile = fs.mkdtempSync(path.join(os.tmpdir(), 'sparge-chromium-'));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
  });

  test.after(async () => {
    await context?.close();
    fs.rmSync(profile, { recursive: true, force: true });
  });

  test('Node: 1 and 2 threads give the same output, close to the reference', () => assertSound(node));

  test('Chromium, cross-origin isolated: 2 threads on Web Workers, same output as Node', async () => {
    const got = await pageResult(context, ISOLATION, '/test/runtimes/page.html', 'digest');
    assert.is(got.crossOriginIsolated, true);
    assertSameAsNode(node, got, 'isolated page');
    assert.ok(got.results.filter((r) => r.threads === 2).every((r) => r.workers === 'web'));
    assert.ok(got.results.every((r) => r.splat === 'load'), 'Chromium (V8 with guard-page bounds checks) broadcasts by load');
    console.log(`isolated: ${got.runtime}: ${got.results.map((r) => `${r.case} ${r.module} x${r.threads} ${r.hash}`).join('; ')}`);
  });

  test('Chromium, not isolated: one thread, says SharedArrayBuffer is missing, same output as Node', async () => {
    const got = await pageResult(context, {}, '/test/runtimes/page.html', 'digest');
    assert.is(got.crossOriginIsolated, false);
    assertSameAsNode(node, got, 'page without COOP/COEP', { threads: 1 });
    for (const r of got.results.filter((x) => x.threadsAsked === 2)) assert.match(r.threadsReason, /SharedArrayBuffer/);
    console.log(`not isolated: ${got.results.map((r) => `${r.case} ${r.module} x${r.threads} ${r.hash} (${r.threadsReason})`).join('; ')}`);
  });

  test('the demo page, served by scripts/serve.js as the README says, runs threaded', async () => {
    const got = await pageResult(context, ISOLATION, '/demo/?threads=2', 'result');
    assert.is(got.crossOriginIsolated, true);
    assert.is(got.threads, 2);
    assert.is(got.features.workers, 'web');
    const row = Object.fromEntries(got.rows.map((r) => [r.method, r]));
    assert.is(row['sparse top-k 0.25'].sparsity, 0.75);
    // The reference case's error at top-k 0.25 (0.0067 against FP64 in Node).
    assert.ok(row['sparse top-k 0.25'].l1 < 0.02, `L1 ${row['sparse top-k 0.25'].l1}`);
    assert.ok(got.rows.every((r) => r.ms > 0 && Number.isFinite(r.l1)));
  });
}

test.run();
