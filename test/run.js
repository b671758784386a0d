// npm test: every test/*.test.js in its own Node process (uvu), then one closing line
// "N passed, M failed[, K skipped]" that CI can read.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = path.dirname(fileURLToPath(import.meta.url));
const only = process.argv.slice(2);
const files = fs.readdirSync(dir).filter((f) => f.endsWith('.test.js') && (only.length === 0 || only.some((o) => f.includes(o)))).sort();
let passed = 0, failed = 0, skipped = 0, crashed = 0;
for (const f of files) {
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [path.join(dir, f)], { encoding: 'utf8', env: { ...process.env, FORCE_COLOR: '0' } });
  const out = r.stdout + r.stderr;
  const total = Number(/Total:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const ok = Number(/Passed:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const skip = Number(/Skipped:\s+(\d+)/.exec(out)?.[1] ?? 0);
  passed += ok;
  failed += total - ok;
  skipped += skip;
  // A skipped test says why in a line of its own, and a note says what ran: show them even when the file passes.
  for (const why of out.match(/^(skipped|note): .*/gm) ?? []) console.log(`  ${why}`);
  if (r.status !== 0 || total + skip === 0) {
    if (total === ok) crashed++;
    process.stdout.write(out);
  }
  console.log(`${r.status === 0 ? 'ok  ' : 'FAIL'} ${f}: ${ok}/${total} passed${skip ? `, ${skip} skipped` : ''} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}
failed += crashed;
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
