// A worker of the pool: instantiates the module over the shared memory it is sent and runs its
// share of each call's tiles. Works as a Node worker_threads worker and as a Web Worker (Deno, Bun,
// browsers). npm run build bundles it with tiles.ts into one self-contained dist/src/worker.js, so
// that a bundler, or a copy, can place it anywhere (options.workerUrl). No top-level await: Vite
// bundles workers as classic scripts by default.
import { importNode } from './node.js';
import { type Kernels, type Stage, CONTROL_SLOTS, runShared, abortShared } from './tiles.js';

export type ToWorker =
  | { type: 'init'; module: WebAssembly.Module; memory: WebAssembly.Memory; worker: number; control: number }
  | { type: 'run'; job: number; params: number; stages: Stage[] };

export type FromWorker =
  | { type: 'ready' }
  | { type: 'done'; job: number }
  | { type: 'failed'; job: number; error: string; aborted: boolean };

let kernels: Kernels | undefined;
let ctl: Int32Array | undefined;
let id = 0;

function handle(msg: ToWorker, reply: (m: FromWorker) => void): void {
  if (msg.type === 'init') {
    const instance = new WebAssembly.Instance(msg.module, { env: { memory: msg.memory } });
    kernels = instance.exports as unknown as Kernels;
    ctl = new Int32Array(msg.memory.buffer, msg.control, CONTROL_SLOTS);
    id = msg.worker;
    reply({ type: 'ready' });
    return;
  }
  try {
    const share = runShared(kernels!, ctl!, msg.params, msg.stages, id);
    reply(share === 'done' ? { type: 'done', job: msg.job } : { type: 'failed', job: msg.job, error: 'aborted', aborted: true });
  } catch (e) {
    abortShared(ctl!);
    const err = e as Error;
    reply({ type: 'failed', job: msg.job, error: `${err?.name ?? 'Error'}: ${err?.message ?? String(e)}`, aborted: false });
  }
}

interface WebScope {
  postMessage(m: unknown): void;
  onmessage: ((e: MessageEvent) => void) | null;
}
const web = (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== undefined;
if (web) {
  const scope = globalThis as unknown as WebScope;
  scope.onmessage = (e) => handle(e.data as ToWorker, (m) => scope.postMessage(m));
} else {
  void importNode<typeof import('node:worker_threads')>('node:worker_threads').then(({ parentPort }) => {
    parentPort!.on('message', (m: ToWorker) => handle(m, (r) => parentPort!.postMessage(r)));
  });
}
