// Finds, validates and compiles the WebAssembly modules. The .wasm files sit in build/ next to the
// package; the URL is resolved from this module so that bundlers and every runtime agree.

export type SimdChoice = 'auto' | 'relaxed' | 'baseline';

// Smallest modules that use one instruction of each feature: validating them asks the engine
// whether it would accept our builds, without fetching them.
const header = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b, 0x03, 0x02, 0x01, 0x00];
const v128const = [0xfd, 0x0c, ...new Array(16).fill(0)];
const SIMD_PROBE = new Uint8Array([...header, 0x0a, 0x2b, 0x01, 0x29, 0x00, ...v128const, ...v128const, 0xfd, 0xe4, 0x01, 0x0b]);
const RELAXED_PROBE = new Uint8Array([
  ...header, 0x0a, 0x3d, 0x01, 0x3b, 0x00, ...v128const, ...v128const, ...v128const, 0xfd, 0x85, 0x02, 0x0b,
]);

export interface Features {
  simd: boolean;
  relaxedSimd: boolean;
  sharedArrayBuffer: boolean;
  threads: boolean;
  /** why the engine runs on one thread, when it does */
  threadsReason?: string;
  /** the worker API the pool uses */
  workers?: 'web' | 'worker_threads';
  /** the module in use */
  module: 'relaxed' | 'baseline';
}

export function detect(): { simd: boolean; relaxedSimd: boolean } {
  return { simd: WebAssembly.validate(SIMD_PROBE), relaxedSimd: WebAssembly.validate(RELAXED_PROBE) };
}

export function chooseModule(simd: unknown): 'relaxed' | 'baseline' {
  if (simd !== undefined && simd !== 'auto' && simd !== 'relaxed' && simd !== 'baseline') {
    throw new TypeError(`options.simd must be 'auto', 'relaxed' or 'baseline', got ${JSON.stringify(simd)}`);
  }
  const f = detect();
  if (!f.simd) throw new Error('this WebAssembly engine lacks SIMD128, which sparge-wasm needs');
  if (simd === 'relaxed' && !f.relaxedSimd) {
    throw new Error(
      "simd: 'relaxed' was asked for but this engine does not support relaxed SIMD " +
        "(Node 20 needs --experimental-wasm-relaxed-simd); use 'auto' or 'baseline'",
    );
  }
  if (simd === 'baseline') return 'baseline';
  return f.relaxedSimd ? 'relaxed' : 'baseline';
}

async function readBytes(url: URL): Promise<BufferSource> {
  const isNode = typeof process !== 'undefined' && !!process.versions?.node;
  if (url.protocol === 'file:' && isNode) {
    const fs = await import('node:fs/promises');
    return new Uint8Array(await fs.readFile(url));
  }
  const res = await fetch(url);
  if (!res.ok) throw new Error(`could not load ${url.href}: HTTP ${res.status}`);
  return res.arrayBuffer();
}

export async function compileModule(kind: 'relaxed' | 'baseline' | 'relaxed-shared' | 'baseline-shared'): Promise<WebAssembly.Module> {
  const url = new URL(`../../build/sparge.${kind}.wasm`, import.meta.url);
  return WebAssembly.compile(await readBytes(url));
}
