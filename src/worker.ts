// A worker of the pool: instantiates the module over the shared memory it is sent and runs its
// share of each call's tiles. Works as a Node worker_threads worker and as a Web Worker (Deno, Bun,
// browsers). npm run build bundles it with tiles.ts into one self-contained dist/src/worker.js, so
// that a bundler, or a copy, can place it anywhere (options.workerUrl). No top-level await: Vite
// bundles workers as classic scripts by default.
import { importNode } from './node.js';
import { type Kernels, type Stage, CONTROL_SLOTS, KERNEL, LEFT, NSTAGES, Outcome, PARAMS, TILES, abortShared, doneOf, jobOf, kernelNames, outcomeOf, runShared } from './tiles.js';

export type ToWorker = { type: 'init'; module: WebAssembly.Module; memory: WebAssembly.Memory; worker: number; control: number };

export type FromWorker =
  | { type: 'ready' }
  /** the worker finished a job whose calling thread waits (LEFT) */
  | { type: 'finished'; job: number }
  /** sent before the job is marked finished, so that the error is there when the caller looks */
  | { type: 'failed'; job: number; error: string };

/**
 * After init the worker serves jobs until it is terminated: it blocks on its job slot, runs its
 * share of the stages the control block lists, and marks the job finished. Calls cost an atomic
 * store and a notify each way, no message: the calling thread reads the outcome from memory, and
 * a worker posts a message only when the caller has stopped taking tiles and waits (LEFT), or to
 * carry an error's text.
 */
function serve({ module, memory, worker: id, control }: ToWorker, post: (m: FromWorker) => void): void {
  const kernels = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as Kernels;
  const names = kernelNames(module);
  const ctl = new Int32Array(memory.buffer, control, CONTROL_SLOTS);
  // A replacement for a worker that died skips the job its predecessor held.
  let seen = Atomics.load(ctl, jobOf(id));
  Atomics.store(ctl, doneOf(id), seen);
  post({ type: 'ready' });
  for (;;) {
    Atomics.wait(ctl, jobOf(id), seen);
    const job = Atomics.load(ctl, jobOf(id));
    if (job < 0) return; // the pool closes
    seen = job;
    const stages: Stage[] = [];
    for (let s = 0; s < Atomics.load(ctl, NSTAGES); s++) stages.push([names[ctl[KERNEL + s]], ctl[TILES + s]]);
    let outcome: number = Outcome.Done;
    try {
      if (runShared(kernels, ctl, ctl[PARAMS], stages, id) !== 'done') outcome = Outcome.Aborted;
    } catch (e) {
      abortShared(ctl);
      const err = e as Error;
      post({ type: 'failed', job, error: `${err?.name ?? 'Error'}: ${err?.message ?? String(e)}` });
      outcome = Outcome.Failed;
    }
    Atomics.store(ctl, outcomeOf(id), outcome);
    Atomics.store(ctl, doneOf(id), job);
    if (Atomics.load(ctl, LEFT) === job) post({ type: 'finished', job });
  }
}

interface WebScope {
  postMessage(m: unknown): void;
  onmessage: ((e: MessageEvent) => void) | null;
}
const web = (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== undefined;
if (web) {
  const scope = globalThis as unknown as WebScope;
  scope.onmessage = (e) => serve(e.data as ToWorker, (m) => scope.postMessage(m));
} else {
  void importNode<typeof import('node:worker_threads')>('node:worker_threads').then(({ parentPort }) => {
    parentPort!.once('message', (m: ToWorker) => serve(m, (r) => parentPort!.postMessage(r)));
  });
}
