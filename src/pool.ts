// The worker pool: N workers instantiate one compiled module over one shared WebAssembly memory.
// A call writes its stages into the control block and wakes the workers with an atomic notify;
// workers take tiles from atomic counters (tiles.ts), so uneven sparsity balances itself. The
// calling thread takes tiles too, for the whole of a call that ends within 16 ms and for the first
// millisecond of a longer one, and wakes the workers only once the call looks longer than waking
// them costs: a short call (a decode step of a small model) is done on it alone. While it takes
// tiles it counts as one of the N threads: the last worker is woken when it leaves. The next call
// first makes sure every worker woken has passed the previous one. No message is posted per call:
// a worker posts one only to a caller that has stopped taking tiles and waits, or to carry an error.
// Life cycle after piscina: workers are unref'd while idle (a forgotten engine does not keep a Node
// process alive), a failed call rejects with the worker's error, a dead worker is replaced.
import type { FromWorker, ToWorker } from './worker.js';
import { importNode, isNode } from './node.js';
import {
  type Kernels, type Stage, ABORT, CONTROL_OFFSET, CONTROL_SLOTS, DONE, KERNEL, LEFT, MAX_STAGES, MAX_WORKERS, NSTAGES, Outcome, PARAMS, TAKEN, TILES,
  abortShared, doneOf, jobOf, kernelNames, outcomeOf, runShared,
} from './tiles.js';

/** The little that differs between Node's worker_threads and Web Workers. */
interface Port {
  post(m: ToWorker): void;
  ref(): void;
  unref(): void;
  terminate(): Promise<unknown> | void;
}

interface Listener {
  message(m: FromWorker): void;
  /** the worker died or threw outside a call */
  died(why: string): void;
}

const WORKER_FILE = './worker.js';

/**
 * Which worker API this runtime has: Web Workers (Bun, browsers), else Node's. Deno has both and
 * takes Node's where it finds the worker script as a file (`url`, else worker.js beside this
 * module; a bundle such as Vite's renames it and keeps Web Workers): its Web Workers cannot be
 * unref'd, so an engine left undisposed kept the process from exiting.
 */
export async function workerKind(url?: URL): Promise<'web' | 'worker_threads' | undefined> {
  const web = typeof (globalThis as { Worker?: unknown }).Worker === 'function';
  if (web && !await denoFile(url)) return 'web';
  if (isNode()) {
    try {
      await importNode('node:worker_threads');
      return 'worker_threads';
    } catch {
      // the runtime's Web Workers, if any
    }
  }
  return web ? 'web' : undefined;
}

/** Whether this is Deno and the worker script is a file there. */
async function denoFile(url?: URL): Promise<boolean> {
  const deno = (globalThis as { Deno?: { stat(u: URL): Promise<unknown> } }).Deno;
  if (!deno) return false;
  try {
    const file = url ?? new URL(WORKER_FILE, import.meta.url);
    return file.protocol === 'file:' && await deno.stat(file).then(() => true, () => false);
  } catch {
    return false; // no module URL
  }
}

/**
 * Makes a worker, naming the cause when the runtime gives modules no URL (the library bundled into
 * one script, Cloudflare workerd): there the worker script cannot be located and the URL throws.
 */
function located<W>(make: () => W): W {
  try {
    return make();
  } catch (e) {
    if (typeof import.meta.url === 'string') throw e;
    throw new Error('the worker script ./worker.js cannot be located: this runtime gives modules no URL (import.meta.url is undefined)');
  }
}

// The worker's URL is built when a worker starts, not at import, so that such a runtime still loads
// the library (on one thread); it stays inline in `new Worker(new URL(...))` for bundlers to follow
// (Vite and webpack then emit the worker as a chunk of its own). options.workerUrl, where given,
// is for bundlers that do not follow it.
async function spawn(kind: 'web' | 'worker_threads', on: Listener, url?: URL): Promise<Port> {
  if (kind === 'web') {
    const w: Worker & { ref?(): void; unref?(): void } = located(() => url
      ? new Worker(url, { type: 'module' })
      : new Worker(new URL('./worker.js', import.meta.url), { type: 'module' }));
    w.onmessage = (e) => on.message(e.data as FromWorker);
    w.onerror = (e) => { e.preventDefault?.(); on.died(e.message || 'worker error'); };
    return { post: (m) => w.postMessage(m), ref: () => w.ref?.(), unref: () => w.unref?.(), terminate: () => w.terminate() };
  }
  const { Worker: NodeWorker } = await importNode<typeof import('node:worker_threads')>('node:worker_threads');
  // The same file by a name in a variable: a browser bundler that followed this `new URL` as well
  // would put a second copy of the worker in the page's chunk (Vite inlines it as a data: URL).
  // Workers need none of the parent's Node flags, and some would stop them from starting
  // (`node --input-type=module -e ...`); V8's flags are process-wide and reach them anyway.
  const w = located(() => new NodeWorker(url ?? new URL(WORKER_FILE, import.meta.url), { execArgv: [] }));
  w.on('message', (m: FromWorker) => on.message(m));
  w.on('error', (e: Error) => on.died(`${e.name}: ${e.message}`));
  w.on('exit', (code: number) => on.died(`worker exited with code ${code}`));
  return { post: (m) => w.postMessage(m), ref: () => w.ref(), unref: () => w.unref(), terminate: () => w.terminate() };
}

/** How long the calling thread takes tiles of a call before it may leave the rest to the workers. */
const LEAVE_MS = 1;
/**
 * It stays on in a call that looks like ending within this long of its start (a frame at 60 Hz):
 * a decode step over a long history (1-12 ms here) is done with no worker woken mid-call.
 */
const STAY_MS = 16;
/** How long a call runs on the calling thread alone before the workers are woken: about what waking them costs. */
const WAKE_MS = 0.1;

interface Slot {
  port?: Port;
  /** resolves when the worker has instantiated the module */
  ready: Promise<void>;
  /** ready has resolved: a call need not await it */
  started: boolean;
  dead: boolean;
  /** why it died */
  why?: string;
  /** the last error a worker reported, with its job */
  failed?: { job: number; error: string };
}

export class Pool {
  private readonly slots: Slot[] = [];
  private readonly ctl: Int32Array;
  private readonly names: Map<string, number>;
  private job = 0;
  /** the last job posted to the workers (a short call runs on the calling thread alone), and to how many of them */
  private posted = 0;
  private postedTo = 0;
  /** per list of stages (kernels and tiles), how long its last call took, in ms */
  private readonly took = new Map<number, number>();
  private closed = false;
  /** wakes a caller waiting in settle(): a worker's message or death */
  private wake?: () => void;

  private constructor(
    private readonly kind: 'web' | 'worker_threads',
    private readonly module: WebAssembly.Module,
    private readonly memory: WebAssembly.Memory,
    readonly size: number,
    private readonly url?: URL,
  ) {
    this.ctl = new Int32Array(memory.buffer, CONTROL_OFFSET, CONTROL_SLOTS);
    this.names = new Map(kernelNames(module).map((name, i) => [name, i]));
  }

  /** url: the worker script, when not ./worker.js next to this module (options.workerUrl) */
  static async create(kind: 'web' | 'worker_threads', module: WebAssembly.Module, memory: WebAssembly.Memory, size: number, url?: URL): Promise<Pool> {
    if (size > MAX_WORKERS) throw new RangeError(`options.threads: a pool has at most ${MAX_WORKERS} workers, got ${size}`);
    const pool = new Pool(kind, module, memory, size, url);
    for (let i = 0; i < size; i++) pool.slots.push(pool.start(i));
    try {
      await Promise.all(pool.slots.map((s) => s.ready));
    } catch (e) {
      await pool.close();
      throw e;
    }
    return pool;
  }

  private start(i: number): Slot {
    const slot: Slot = { ready: Promise.resolve(), started: false, dead: false };
    let ready!: () => void, failed!: (e: Error) => void;
    slot.ready = new Promise<void>((res, rej) => { ready = res; failed = rej; });
    // Seen by the next call (or by create); unobserved until then, it must not end the process.
    slot.ready.catch(() => {});
    const listener: Listener = {
      message: (m) => {
        if (m.type === 'ready') {
          slot.started = true;
          slot.port?.unref();
          ready();
          this.wake?.(); // a replacement's first done slot: a waiting caller may go on
          return;
        }
        if (m.type === 'failed') slot.failed = { job: m.job, error: m.error };
        this.wake?.();
      },
      died: (why) => {
        if (slot.dead || this.closed) return;
        slot.dead = true;
        slot.why = why;
        failed(new Error(`sparge-wasm worker ${i} could not start: ${why}`));
        // Other workers may wait at a barrier for tiles this one took: release them.
        abortShared(this.ctl);
        this.wake?.();
        void Promise.resolve(slot.port?.terminate()).catch(() => {});
        // Replace a worker that ran; one that could not even start would fail again, forever.
        if (slot.started) this.slots[i] = this.start(i);
      },
    };
    spawn(this.kind, listener, this.url).then((port) => {
      slot.port = port;
      port.post({ type: 'init', module: this.module, memory: this.memory, worker: i, control: CONTROL_OFFSET });
    }, (e: Error) => failed(e));
    return slot;
  }

  /**
   * Runs the stages over every worker; rejects with the first worker's error after all have
   * stopped, or with the signal's reason when it aborts (workers stop at their next tile).
   */
  async run(params: number, stages: readonly Stage[], signal?: AbortSignal, caller?: Kernels): Promise<void> {
    if (stages.length > MAX_STAGES) throw new RangeError(`at most ${MAX_STAGES} stages per call`);
    // Workers still passing the barriers of the last call posted to them must not see this one's
    // counters. Both waits are skipped when there is nothing to wait for: each costs a turn of
    // microtasks, tens of microseconds of a decode step whose code is out of cache.
    const last = this.slots.slice(0, this.postedTo);
    if (!this.finished(this.posted, last)) await this.settle(this.posted, last);
    if (this.slots.some((s) => !s.started)) await Promise.all(this.slots.map((s) => s.ready));
    signal?.throwIfAborted();
    const ctl = this.ctl;
    Atomics.store(ctl, ABORT, 0);
    for (let s = 0; s < MAX_STAGES; s++) {
      Atomics.store(ctl, TAKEN + s, 0);
      Atomics.store(ctl, DONE + s, 0);
    }
    // The stages, and as a key a hash (FNV-1a) of the kernels and tile counts that identify calls
    // like this one: a collision only wakes the workers early or late.
    let key = 0x811c9dc5;
    stages.forEach(([name, tiles], s) => {
      const kernel = this.names.get(name)!;
      ctl[KERNEL + s] = kernel;
      ctl[TILES + s] = tiles;
      key = Math.imul(Math.imul(key ^ kernel, 0x01000193) ^ tiles, 0x01000193);
    });
    ctl[NSTAGES] = stages.length;
    ctl[PARAMS] = params;
    const job = ++this.job;
    // This call's workers; one that dies is replaced in this.slots.
    const slots = this.slots.slice();
    // Posting the job to workers [0, n): an atomic store and a notify each, tens of microseconds
    // of the calling thread on a VM, and as long again before a worker runs. While the calling
    // thread takes tiles it counts as one of the threads, so the last worker waits until it
    // leaves: with one thread more than asked for, on a machine with no core to spare, the
    // scheduler preempts one in the middle of a stage that the others then wait for (README,
    // Threads: 2-core decode steps).
    let sent = 0;
    const post = (n = slots.length) => {
      this.posted = job;
      for (; sent < n; sent++) {
        Atomics.store(ctl, jobOf(sent), job);
        Atomics.notify(ctl, jobOf(sent));
      }
      this.postedTo = sent;
    };
    const helpers = caller ? slots.length - 1 : slots.length;
    const t0 = performance.now(), before = this.took.get(key) ?? 0;
    // A call like one that ran long (a decode loop repeats its stages) wakes them at once.
    if (!caller || before > WAKE_MS) post(helpers);
    if (caller) {
      let share;
      try {
        // Its scratch is the one after the workers' (Engine.prepare lays out size + 1). A call like
        // one that took longer than STAY_MS it leaves at LEAVE_MS: the first stages of such a call
        // each look short, and it stayed through them for 7-12 ms of a whole-sequence top-k call
        // (N = 4096, 2 threads) instead of 1.
        share = runShared(caller, ctl, params, stages, this.size, {
          leaveMs: LEAVE_MS, stayMs: before > STAY_MS ? LEAVE_MS : STAY_MS, threads: slots.length,
          wake: { ms: WAKE_MS, run: () => post(helpers) },
        });
      } catch (e) {
        abortShared(ctl);
        await this.settle(this.posted, slots.slice(0, this.postedTo));
        const err = e as Error;
        throw new Error(`sparge-wasm: the calling thread failed during this call: ${err?.name ?? 'Error'}: ${err?.message ?? String(e)}`);
      }
      const last = stages.length - 1;
      // Every tile of every stage done: the workers only pass the barriers, and the next call
      // waits for them. (A refused call ends early, with tiles left that a late worker could take
      // with the next call's parameters: it waits for the workers as usual.)
      if (share === 'done' && Atomics.load(ctl, DONE + last) >= stages[last][1]) {
        this.remember(key, t0);
        return;
      }
      post();
    }
    const stop = () => abortShared(ctl);
    signal?.addEventListener('abort', stop);
    const outcomes = await this.settle(job, slots);
    signal?.removeEventListener('abort', stop);
    this.remember(key, t0);
    const failure = outcomes.find((o) => o.outcome === Outcome.Failed);
    if (failure) throw new Error(`sparge-wasm: a worker failed during this call: ${failure.error}`);
    signal?.throwIfAborted();
    if (outcomes.some((o) => o.outcome !== Outcome.Done)) throw new Error('sparge-wasm: this call was aborted by a failure in another worker');
  }

  private remember(key: number, t0: number): void {
    if (this.took.size >= 256) this.took.clear();
    this.took.set(key, performance.now() - t0);
  }

  /** Whether every worker of `slots` has finished `job` (a failed one's error received), or died. */
  private finished(job: number, slots: readonly Slot[]): boolean {
    const ctl = this.ctl;
    return slots.every((s, i) => s.dead || (Atomics.load(ctl, doneOf(i)) >= job &&
      (Atomics.load(ctl, outcomeOf(i)) !== Outcome.Failed || s.failed?.job === job)));
  }

  /**
   * Waits until every worker of `slots` has finished `job` (at once when they have), or died;
   * returns how each ended, with the error text of a failed one.
   */
  private async settle(job: number, slots: readonly Slot[]): Promise<{ outcome: number; error?: string }[]> {
    const ctl = this.ctl;
    const all = () => this.finished(job, slots);
    if (!all()) {
      // From here on a worker that finishes posts a message; one that finished before is seen by
      // the check that follows (both sides store, then load, sequentially consistent).
      Atomics.store(ctl, LEFT, job);
      for (const s of slots) s.port?.ref();
      try {
        while (!all()) await new Promise<void>((resolve) => { this.wake = resolve; if (all()) resolve(); });
      } finally {
        this.wake = undefined;
        Atomics.store(ctl, LEFT, 0);
        for (const s of slots) s.port?.unref();
      }
    }
    return slots.map((s, i) => {
      if (s.dead) return { outcome: Outcome.Failed, error: `worker ${i} died (${s.why}); a new worker takes its place` };
      const outcome = Atomics.load(ctl, outcomeOf(i));
      return { outcome, error: outcome === Outcome.Failed ? s.failed?.error : undefined };
    });
  }

  /** Test hook: ends worker i as a crash would. */
  terminate(i: number): void {
    void this.slots[i]?.port?.terminate();
  }

  async close(): Promise<void> {
    await this.settle(this.posted, this.slots.slice(0, this.postedTo));
    this.closed = true;
    // Each worker leaves its loop first: a worker blocked in Atomics.wait is not every runtime's to interrupt.
    for (let i = 0; i < this.slots.length; i++) {
      Atomics.store(this.ctl, jobOf(i), -1);
      Atomics.notify(this.ctl, jobOf(i));
    }
    await Promise.all(this.slots.map((s) => s.port?.terminate()));
  }
}
