// The bench command's timing loop (src/bench.ts, src/bench-attention.ts): no benchmark library, so
// that the shipped command needs nothing the package does not already hold.

/** How long to measure one function. */
export interface Budget {
  /** calls before measuring (at least one), for the engine's optimizing tier and warm caches */
  warmupMs: number;
  /** calls are timed until this much time has passed, and at least minSamples of them */
  timeMs: number;
  minSamples: number;
}

/** The median time of one call of fn, in ms; a promise fn returns is awaited inside its call's time. */
export async function medianMs(fn: () => unknown, budget: Budget): Promise<number> {
  const warmEnd = performance.now() + budget.warmupMs;
  do await timeOne(fn); while (performance.now() < warmEnd);
  const samples: number[] = [];
  const end = performance.now() + budget.timeMs;
  while (samples.length < budget.minSamples || performance.now() < end) samples.push(await timeOne(fn));
  return median(samples);
}

/** A synchronous kernel's time is read before any await, so it holds no microtask turn. */
async function timeOne(fn: () => unknown): Promise<number> {
  const t0 = performance.now();
  const r = fn();
  if (r instanceof Promise) await r;
  return performance.now() - t0;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
