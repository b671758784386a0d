// How a call's stages are split into tiles and shared out. Used by the calling thread (one thread)
// and by every worker of the pool, which take tiles from atomic counters in shared memory.
import { P } from '../assembly/params.js';

/** A kernel of the module: runs tiles [t0, t1) of a stage; `worker` picks its scratch area. */
export type Kernel = (params: number, t0: number, t1: number, worker: number) => void;

/** One stage of a call: the kernel's export name and its number of tiles. */
export type Stage = readonly [kernel: string, tiles: number];

export type Kernels = Record<string, Kernel> & {
  attention_scratch_bytes(bq: number, bk: number, dp: number): number;
  part_bytes(tiles: number, splits: number, bq: number, dp: number): number;
  kv_append_scratch_bytes(bk: number, dp: number): number;
  input_max_tiles(params: number): number;
  prescale_tiles(params: number): number;
  relaxed_dot_probe(b: number): number;
};

/**
 * Byte offset of the control block in the first (reserved) page of memory, above the module's
 * static data (AssemblyScript's math tables from 1 KiB on): every worker's instantiation writes
 * that data again, and counters inside it would corrupt it. scripts/build.js checks the gap.
 */
export const CONTROL_OFFSET = 32768;
/**
 * Byte offset of each call's parameter block, in the same first page: workers read it through
 * views made when they started, which a grown memory does not extend.
 */
export const PARAMS_OFFSET = CONTROL_OFFSET + 8192;
export const MAX_STAGES = 16;
/** Workers a pool may have: each has three slots of the control block. */
export const MAX_WORKERS = 512;
// Int32 slots of the control block: the abort flag; the job whose calling thread waits for the
// workers' messages (LEFT, 0: none); the call's stages (count, parameter block, and per stage its
// kernel's index among the module's exported functions and its tiles); a take counter and a done
// counter per stage; then per worker the job posted to it, the last job it finished, and how.
export const ABORT = 0;
export const LEFT = 1;
export const NSTAGES = 2;
export const PARAMS = 3;
export const TAKEN = 16;
export const DONE = TAKEN + MAX_STAGES;
export const KERNEL = DONE + MAX_STAGES;
export const TILES = KERNEL + MAX_STAGES;
const WORKER_SLOTS = TILES + MAX_STAGES;
export const CONTROL_SLOTS = WORKER_SLOTS + 3 * MAX_WORKERS;
/** Worker i's slots: the job posted to it, the last job it finished, and that job's Outcome. */
export const jobOf = (i: number): number => WORKER_SLOTS + 3 * i;
export const doneOf = (i: number): number => WORKER_SLOTS + 3 * i + 1;
export const outcomeOf = (i: number): number => WORKER_SLOTS + 3 * i + 2;
export const Outcome = { Done: 0, Aborted: 1, Failed: 2 } as const;

/** The module's exported functions, in the module's order: a stage names its kernel by index here. */
export function kernelNames(module: WebAssembly.Module): string[] {
  return WebAssembly.Module.exports(module).filter((e) => e.kind === 'function').map((e) => e.name);
}

/**
 * Whether the input check (input_range, the second stage of a call) refused the inputs: then the
 * call ends after that stage, so refused inputs cost no more than the check.
 */
function refused(buffer: ArrayBufferLike, params: number): boolean {
  return Atomics.load(new Int32Array(buffer, params, P.COUNT), P.STATUS) !== 0;
}

/** How long the calling thread computes before it lets an abort in, when the call has a signal. */
const SLICE_MS = 10;

/** A macrotask turn, so that the event loop can deliver an abort. */
const turn = () => new Promise<void>((resolve) => {
  const g = globalThis as { setImmediate?: (f: () => void) => void };
  if (g.setImmediate) g.setImmediate(resolve);
  else setTimeout(resolve, 0);
});

/**
 * Runs stages on the calling thread, one tile per call: V8 optimizes a function only between calls,
 * so a single long call would stay in its baseline tier for a whole first run. With a signal, it
 * yields to the event loop every SLICE_MS so that an abort can land, and stops at the next tile.
 */
export async function runLocal(k: Kernels, buffer: ArrayBufferLike, params: number, stages: readonly Stage[], signal?: AbortSignal): Promise<void> {
  let since = signal ? performance.now() : 0;
  for (const [name, n] of stages) {
    const kernel = k[name];
    for (let t = 0; t < n; t++) {
      kernel(params, t, t + 1, 0);
      if (signal && performance.now() - since > SLICE_MS) {
        await turn();
        signal.throwIfAborted();
        since = performance.now();
      }
    }
    if (refused(buffer, params)) return;
  }
}

/**
 * How a share of a call ended: every stage done (or refused), aborted by a failure elsewhere, or
 * left with no tile in hand (the others finish the call).
 */
export type Share = 'done' | 'aborted' | 'left';

/**
 * The calling thread's terms in a call. It may leave the rest of the call to the workers once it
 * has run `leaveMs`, and does unless the call looks like ending within `stayMs` of its start (this
 * stage's tiles so far, times the tiles left, over `threads`); past `stayMs` it leaves whatever the
 * call looks like. `wake` it runs (waking the workers) once the call looks longer than wake.ms:
 * it has run that long, or its tiles so far, times the tiles left, say it will.
 */
export interface CallerTerms {
  leaveMs: number;
  stayMs: number;
  threads: number;
  wake?: { ms: number; run: () => void };
}

/**
 * One participant's share of a call: take tiles until a stage is exhausted, then wait until every
 * tile of it is done before the next stage, whose tiles read its results. Workers block at the
 * barriers; the calling thread (given its terms) spins, since a page's main thread may not block.
 * A call shorter than waking the workers costs no wake, and one that ends soon after leaveMs
 * costs no leaving: the last worker, woken when the calling thread leaves, is one thread more than
 * the call was given until the calling thread sleeps, and on a machine with no core to spare the
 * scheduler sometimes queued it behind a busy thread for milliseconds (README, Threads).
 */
export function runShared(
  k: Kernels, ctl: Int32Array, params: number, stages: readonly Stage[], worker: number, caller?: CallerTerms,
): Share {
  // Tested as a boolean: with `if (caller)` in its loops, a worker's share of whole-sequence
  // sparse calls ran 3% slower (bench/ab.js, 2 threads, Node 20).
  const timed = caller !== undefined;
  const start = timed ? performance.now() : 0;
  let wake = caller?.wake;
  for (let s = 0; s < stages.length; s++) {
    const [name, n] = stages[s];
    const kernel = k[name];
    let since = start, mine = 0, perTile = 0;
    for (;;) {
      if (Atomics.load(ctl, ABORT)) return 'aborted';
      if (timed) {
        const now = performance.now(), ran = now - start;
        if (mine === 0) since = now;
        const left = n - Atomics.load(ctl, TAKEN + s);
        perTile = mine > 0 ? (now - since) / mine : 0;
        if (wake && (ran > wake.ms || perTile * left > wake.ms)) {
          wake.run();
          wake = undefined;
        }
        if (ran > caller.leaveMs && ran + (perTile * left) / caller.threads > caller.stayMs) return 'left';
      }
      const t = Atomics.add(ctl, TAKEN + s, 1);
      if (t >= n) break;
      kernel(params, t, t + 1, worker);
      mine++;
      if (Atomics.add(ctl, DONE + s, 1) + 1 === n) Atomics.notify(ctl, DONE + s);
    }
    for (;;) {
      const done = Atomics.load(ctl, DONE + s);
      if (done >= n) break;
      if (Atomics.load(ctl, ABORT)) return 'aborted';
      if (timed) {
        // The others are finishing this stage's last tiles, about one each.
        const ran = performance.now() - start;
        if (ran > caller.leaveMs && ran + perTile > caller.stayMs) return 'left';
        continue;
      }
      // The timeout covers an abort that lands between the check above and the wait.
      Atomics.wait(ctl, DONE + s, done, 50);
    }
    if (refused(ctl.buffer, params)) return 'done';
  }
  return 'done';
}

/** Stops every worker of a call: they see the flag at their next tile or barrier. */
export function abortShared(ctl: Int32Array): void {
  Atomics.store(ctl, ABORT, 1);
  for (let s = 0; s < MAX_STAGES; s++) Atomics.notify(ctl, DONE + s);
}
