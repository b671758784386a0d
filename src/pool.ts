// The worker pool: N workers instantiate one compiled module over one shared WebAssembly memory.
// A call posts its stages to every worker; workers take tiles from atomic counters (tiles.ts), so
// uneven sparsity balances itself. The calling thread takes tiles too for its first millisecond,
// while the workers wake: a short call (a decode step) is often done before they are, and then
// returns without waiting for their replies, which the next call collects first.
// Life cycle after piscina: workers are unref'd while idle (a forgotten engine does not keep a Node
// process alive), a failed call rejects with the worker's error, a dead worker is replaced.
import type { FromWorker, ToWorker } from './worker.js';
import { importNode, isNode } from './node.js';
import { type Kernels, type Stage, ABORT, CONTROL_OFFSET, CONTROL_SLOTS, DONE, MAX_STAGES, TAKEN, abortShared, runShared } from './tiles.js';

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

/** Which worker API this runtime has: Web Workers first (Deno, Bun, browsers), then Node's. */
export async function workerKind(): Promise<'web' | 'worker_threads' | undefined> {
  if (typeof (globalThis as { Worker?: unknown }).Worker === 'function') return 'web';
  if (isNode()) {
    try {
      await importNode('node:worker_threads');
      return 'worker_threads';
    } catch {
      return undefined;
    }
  }
  return undefined;
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

const WORKER_FILE = './worker.js';

/** How long the calling thread takes tiles of a call before it leaves the rest to the workers. */
const CALLER_MS = 1;

type Reply = { ok: boolean; error?: string; aborted?: boolean };

interface Slot {
  port?: Port;
  /** resolves when the worker has instantiated the module */
  ready: Promise<void>;
  /** settles the worker's part of the call in flight */
  reply?: (r: { ok: boolean; error?: string; aborted?: boolean }) => void;
  dead: boolean;
}

export class Pool {
  private readonly slots: Slot[] = [];
  private readonly ctl: Int32Array;
  private job = 0;
  private closed = false;
  /** the workers' replies to a call the calling thread finished alone */
  private joining?: Promise<unknown>;

  private constructor(
    private readonly kind: 'web' | 'worker_threads',
    private readonly module: WebAssembly.Module,
    private readonly memory: WebAssembly.Memory,
    readonly size: number,
    private readonly url?: URL,
  ) {
    this.ctl = new Int32Array(memory.buffer, CONTROL_OFFSET, CONTROL_SLOTS);
  }

  /** url: the worker script, when not ./worker.js next to this module (options.workerUrl) */
  static async create(kind: 'web' | 'worker_threads', module: WebAssembly.Module, memory: WebAssembly.Memory, size: number, url?: URL): Promise<Pool> {
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
    const slot: Slot = { ready: Promise.resolve(), dead: false };
    let ready!: () => void, failed!: (e: Error) => void, started = false;
    slot.ready = new Promise<void>((res, rej) => { ready = res; failed = rej; });
    // Seen by the next call (or by create); unobserved until then, it must not end the process.
    slot.ready.catch(() => {});
    const listener: Listener = {
      message: (m) => {
        if (m.type === 'ready') {
          started = true;
          slot.port?.unref();
          ready();
        }
        else if (m.job === this.job) slot.reply?.(m.type === 'done' ? { ok: true } : { ok: false, error: m.error, aborted: m.aborted });
      },
      died: (why) => {
        if (slot.dead || this.closed) return;
        slot.dead = true;
        failed(new Error(`sparge-wasm worker ${i} could not start: ${why}`));
        // Other workers may wait at a barrier for tiles this one took: release them.
        abortShared(this.ctl);
        slot.reply?.({ ok: false, error: `worker ${i} died (${why}); a new worker takes its place` });
        void Promise.resolve(slot.port?.terminate()).catch(() => {});
        // Replace a worker that ran; one that could not even start would fail again, forever.
        if (started) this.slots[i] = this.start(i);
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
    // Workers still passing the barriers of a call that is done must not see this one's counters.
    await this.joining;
    this.joining = undefined;
    await Promise.all(this.slots.map((s) => s.ready));
    signal?.throwIfAborted();
    const ctl = this.ctl;
    Atomics.store(ctl, ABORT, 0);
    for (let s = 0; s < MAX_STAGES; s++) {
      Atomics.store(ctl, TAKEN + s, 0);
      Atomics.store(ctl, DONE + s, 0);
    }
    const job = ++this.job;
    // This call's workers; one that dies is replaced in this.slots, and its replacement stays
    // referenced (keeping the process alive) until it is ready.
    const slots = this.slots.slice();
    const replies = Promise.all(slots.map((slot) => new Promise<Reply>((res) => {
      slot.reply = res;
      slot.port!.ref();
      slot.port!.post({ type: 'run', job, params, stages: stages.map((s) => [s[0], s[1]] as Stage) });
    }))).then((results) => {
      for (const slot of slots) {
        slot.reply = undefined;
        slot.port?.unref();
      }
      return results;
    });
    if (caller) {
      let share;
      try {
        // Its scratch is the one after the workers' (Engine.prepare lays out size + 1).
        share = runShared(caller, ctl, params, stages, this.size, performance.now() + CALLER_MS);
      } catch (e) {
        abortShared(ctl);
        await replies;
        const err = e as Error;
        throw new Error(`sparge-wasm: the calling thread failed during this call: ${err?.name ?? 'Error'}: ${err?.message ?? String(e)}`);
      }
      const last = stages.length - 1;
      if (share === 'done' && Atomics.load(ctl, DONE + last) >= stages[last][1]) {
        // Every tile of every stage is done, so the workers only pass the barriers: their replies
        // carry no news. (A refused call ends early, with tiles left that a late worker could
        // take with the next call's parameters: it waits for the replies as usual.)
        this.joining = replies;
        return;
      }
    }
    const stop = () => abortShared(ctl);
    signal?.addEventListener('abort', stop);
    const results = await replies;
    signal?.removeEventListener('abort', stop);
    const failure = results.find((r) => !r.ok && !r.aborted);
    if (failure) throw new Error(`sparge-wasm: a worker failed during this call: ${failure.error}`);
    signal?.throwIfAborted();
    if (results.some((r) => !r.ok)) throw new Error('sparge-wasm: this call was aborted by a failure in another worker');
  }

  /** Test hook: ends worker i as a crash would. */
  terminate(i: number): void {
    void this.slots[i]?.port?.terminate();
  }

  async close(): Promise<void> {
    await this.joining;
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.port?.terminate()));
  }
}
