// sparge-wasm: SpargeAttn (training-free sparse + INT8 quantized attention) on WebAssembly SIMD128.
// The main entry: a pool of Web Workers or worker_threads, and build/ read with node:fs in Node.
import { compileModule, fetchBytes } from './loader.js';
import { type CreateOptions, type Sparge, type Host, makeSparge, sharedMemory } from './create.js';
import { Pool, workerKind } from './pool.js';
import { importNode, isNode } from './node.js';

export type * from './create.js';
export { DEFAULT_BLOCK_Q, DEFAULT_BLOCK_K } from './engine.js';
export { maskToSVG, type MaskPictureOptions } from './svg.js';
export { hilbertOrder, permuteTokens, type TokenOrder } from './order.js';

const host: Host = {
  async read(url) {
    if (url.protocol === 'file:' && isNode()) {
      const fs = await importNode<typeof import('node:fs/promises')>('node:fs/promises');
      return new Uint8Array(await fs.readFile(url));
    }
    return fetchBytes(url);
  },

  /** navigator.hardwareConcurrency, else Node's os.availableParallelism(). */
  async hardwareThreads() {
    const nav = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator;
    if (nav?.hardwareConcurrency) return nav.hardwareConcurrency;
    try {
      const os = await importNode<typeof import('node:os')>('node:os');
      return os.availableParallelism?.() ?? os.cpus().length;
    } catch {
      return 1;
    }
  },

  async startPool(kind, sources, size, workerUrl) {
    const shared = sharedMemory();
    const workers = await workerKind(workerUrl);
    if (sources && !sources[`${kind}-shared`]) return `options.wasm holds no '${kind}-shared' module`;
    if (typeof shared === 'string') return shared;
    if (!workers) return 'this runtime has neither Web Workers nor worker_threads';
    const module = await compileModule(`${kind}-shared`, sources, host.read);
    try {
      return { pool: await Pool.create(workers, module, shared, size, workerUrl), memory: shared, module, workers };
    } catch (e) {
      return `workers could not be started: ${(e as Error).message}`;
    }
  },
};

export async function createSparge(options: CreateOptions = {}): Promise<Sparge> {
  return makeSparge(options, host);
}
