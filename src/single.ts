// sparge-wasm/single: the single-thread entry, for runtimes without workers or node: modules
// (Cloudflare workerd, Vercel Edge; the `workerd`, `worker` and `edge-light` export conditions).
// It starts no workers and imports no node: module, so bundlers for those targets need nothing
// external. Without options.wasm it fetches build/sparge.<kind>.wasm next to the package, which
// works in browsers, Deno and Bun; Node's fetch reads no file: URLs, and there the main entry is meant.
import { fetchBytes } from './loader.js';
import { type CreateOptions, type Sparge, type Host, makeSparge } from './create.js';

export type * from './create.js';
export { DEFAULT_BLOCK_Q, DEFAULT_BLOCK_K } from './engine.js';
export { maskToSVG, type MaskPictureOptions } from './svg.js';
export { hilbertOrder, permuteTokens, type TokenOrder } from './order.js';

const host: Host = {
  async read(url) {
    try {
      return await fetchBytes(url);
    } catch (e) {
      if (url.protocol !== 'file:') throw e;
      throw new Error(`sparge-wasm/single could not fetch ${url.href} (${(e as Error).message}): this runtime's fetch reads no files; ` +
        "pass the builds with options.wasm, or in Node import 'sparge-wasm'");
    }
  },
  singleThread: "sparge-wasm/single is the single-thread entry: it starts no workers (import 'sparge-wasm' for threads)",
};

/** Same options as the main entry's createSparge (workerUrl is checked and unused); threads is always 1. */
export async function createSparge(options: CreateOptions = {}): Promise<Sparge> {
  return makeSparge(options, host);
}
