// Prints digest.js's digest as JSON in whichever runtime runs it (Node, Deno, Bun):
//   <runtime> test/runtimes/check.js [specifier]
// specifier: where createSparge comes from, resolved from this file (a relative path, the package
// name, npm:sparge-wasm); the repo's dist/ by default. SPARGE_REFERENCE overrides the cases' folder.
import { readFile } from 'node:fs/promises';
import process from 'node:process';
import { pathToFileURL } from 'node:url';
import { digest } from './digest.js';

const specifier = process.argv[2] ?? '../../dist/src/index.js';
const { createSparge } = await import(specifier);
const root = process.env.SPARGE_REFERENCE
  ? pathToFileURL(`${process.env.SPARGE_REFERENCE}/`)
  : new URL('../../fixtures/reference/', import.meta.url);
const d = await digest(createSparge, (file) => readFile(new URL(file, root)));
process.stdout.write(`${JSON.stringify({ specifier, ...d })}\n`);
