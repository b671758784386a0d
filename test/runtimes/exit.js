// Runs one call on a 2-thread engine and leaves it undisposed unless asked: the process must still
// exit by itself in every runtime (idle workers hold no reference to it).
//   <runtime> test/runtimes/exit.js [dispose]
import process from 'node:process';
import { createSparge } from '../../dist/src/index.js';

const s = await createSparge({ threads: 2 });
const x = { data: new Float32Array(300 * 32).fill(0.5), dims: [1, 300, 32] };
await s.attention(x, x, x);
if (process.argv.includes('dispose')) await s.dispose();
console.log(JSON.stringify({ threads: s.threads, workers: s.features.workers }));
