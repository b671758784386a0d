// Browsers: test/runtimes/page.html in headless Chromium (Debian's, driven by playwright-core),
// served from loopback. With COOP/COEP the page is cross-origin isolated and runs 2 threads on
// Web Workers; without them it has no SharedArrayBuffer and runs one thread, saying why. Either
// way its output equals Node's bitwise on the baseline build.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { FIXTURE_DIR } from './helpers.js';
import { CHECK, REPO, runDigest, assertSound, assertSameAsNode } from './runtimes/compare.js';

const CHROMIUM = '/usr/bin/chromium';
const ISOLATION = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json' };

/** Serves the repo at / and the reference cases at /reference/ on loopback, with `headers`. */
function serve(headers) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const [root, rel] = url.pathname.startsWith('/reference/')
      ? [FIXTURE_DIR, url.pathname.slice('/reference/'.length)] : [REPO, url.pathname.slice(1)];
    const file = path.resolve(root, decodeURIComponent(rel));
    if (!file.startsWith(path.resolve(root) + path.sep) || !fs.statSync(file, { throwIfNoEntry: false })?.isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'Cache-Control': 'no-store', ...headers });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function pageDigest(context, headers) {
  const server = await serve(headers);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  try {
    await page.goto(`http://127.0.0.1:${server.address().port}/test/runtimes/page.html`);
    return await page.evaluate(() => globalThis.digest);
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
    const got = await pageDigest(context, ISOLATION);
    assert.is(got.crossOriginIsolated, true);
    assertSameAsNode(node, got, 'isolated page');
    assert.ok(got.results.filter((r) => r.threads === 2).every((r) => r.workers === 'web'));
    assert.ok(got.results.every((r) => r.splat === 'load'), 'Chromium (V8 with guard-page bounds checks) broadcasts by load');
    console.log(`isolated: ${got.runtime}: ${got.results.map((r) => `${r.case} ${r.module} x${r.threads} ${r.hash}`).join('; ')}`);
  });

  test('Chromium, not isolated: one thread, says SharedArrayBuffer is missing, same output as Node', async () => {
    const got = await pageDigest(context, {});
    assert.is(got.crossOriginIsolated, false);
    assertSameAsNode(node, got, 'page without COOP/COEP', { threads: 1 });
    for (const r of got.results.filter((x) => x.threadsAsked === 2)) assert.match(r.threadsReason, /SharedArrayBuffer/);
    console.log(`not isolated: ${got.results.map((r) => `${r.case} ${r.module} x${r.threads} ${r.hash} (${r.threadsReason})`).join('; ')}`);
  });
}

test.run();
