// How a call's stages are split into tiles and shared out. Used by the calling thread (one thread)
// and by every worker of the pool, which take tiles from atomic counters in shared memory.
import { P } from '../assembly/params.js';

/** A kernel of the module: runs tiles [t0, t1) of a stage; `worker` picks its scratch area. */
export type Kernel = (params: number, t0: number, t1: number, worker: number) => void;

/** One stage of a call: the kernel's export name and its number of tiles. */
export type Stage = readonly [kernel: string, tiles: number];

export type Kernels = Record<string, Kernel> & {
  attention_scratch_bytes(bq: number, bk: number): number;
  check_finite_tiles(params: number): number;
  relaxed_dot_probe(b: number): number;
};

/** Byte offset of the control block in the first (reserved) page of memory. */
export const CONTROL_OFFSET = 4096;
export const MAX_STAGES = 16;
// Int32 slots of the control block: abort flag, then a take counter and a done counter per stage.
export const ABORT = 0;
export const TAKEN = 16;
export const DONE = TAKEN + MAX_STAGES;
export const CONTROL_SLOTS = DONE + MAX_STAGES;

/**
 * Whether the input check (check_finite, the first stage of a call) found NaN or Infinity: then the
 * call ends after that stage, so refused inputs cost no more than the check.
 */
function refused(buffer: ArrayBufferLike, params: number): boolean {
  return Atomics.load(new Int32Array(buffer, params, P.COUNT), P.NONFINITE) !== 0;
}

/**
 * Runs stages on the calling thread, one tile per call: V8 optimizes a function only between calls,
 * so a single long call would stay in its baseline tier for a whole first run.
 */
export function runLocal(k: Kernels, buffer: ArrayBufferLike, params: number, stages: readonly Stage[]): void {
  for (const [name, n] of stages) {
    const kernel = k[name];
    for (let t = 0; t < n; t++) kernel(params, t, t + 1, 0);
    if (refused(buffer, params)) return;
  }
}

/**
 * One worker's share of a call: take tiles until a stage is exhausted, then wait (blocking, which
 * workers may do) until every tile of it is done before the next stage, whose tiles read its results.
 * Returns false if the call was aborted by a failure elsewhere.
 */
export function runShared(k: Kernels, ctl: Int32Array, params: number, stages: readonly Stage[], worker: number): boolean {
  for (let s = 0; s < stages.length; s++) {
    const [name, n] = stages[s];
    const kernel = k[name];
    for (;;) {
      if (Atomics.load(ctl, ABORT)) return false;
      const t = Atomics.add(ctl, TAKEN + s, 1);
      if (t >= n) break;
      kernel(params, t, t + 1, worker);
      if (Atomics.add(ctl, DONE + s, 1) + 1 === n) Atomics.notify(ctl, DONE + s);
    }
    for (;;) {
      const done = Atomics.load(ctl, DONE + s);
      if (done >= n) break;
      if (Atomics.load(ctl, ABORT)) return false;
      // The timeout covers an abort that lands between the check above and the wait.
      Atomics.wait(ctl, DONE + s, done, 50);
    }
    if (refused(ctl.buffer, params)) return true;
  }
  return true;
}

/** Stops every worker of a call: they see the flag at their next tile or barrier. */
export function abortShared(ctl: Int32Array): void {
  Atomics.store(ctl, ABORT, 1);
  for (let s = 0; s < MAX_STAGES; s++) Atomics.notify(ctl, DONE + s);
}
