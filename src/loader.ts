// Finds, validates and compiles the WebAssembly modules. The .wasm files sit in build/ next to the
// package; the URL is resolved from this module so that bundlers and every runtime agree. Where
// fetching or compiling at run time is forbidden (edge runtimes, some bundlers), options.wasm hands
// the modules in instead.

export type SimdChoice = 'auto' | 'relaxed' | 'baseline';
export type Int8Dot = 'i16' | 'relaxed';
export type Splat = 'load' | 'shuffle';

/**
 * The INT8 dot product for QK. Both give the same integers, so outputs do not change, only speed.
 * On x86 engines lower the relaxed i8 x i7 dot to pmaddubsw plus a widening step, and since K's
 * codes must be split in two to stay portable, it measured 1.5x to 2.5x slower than the i16 dot
 * (Node 20, Deno 2.9, Bun 1.4: bench/micro.js). 'auto' keeps the relaxed dot for engines whose
 * dot reads its second operand as signed, as Arm's sdot does (not measured here).
 */
export function checkInt8Dot(asked: unknown, module: 'relaxed' | 'baseline'): Int8Dot | 'auto' {
  if (asked !== undefined && asked !== 'auto' && asked !== 'i16' && asked !== 'relaxed') {
    throw new TypeError(`options.int8Dot must be 'auto', 'i16' or 'relaxed', got ${JSON.stringify(asked)}`);
  }
  if (asked === 'relaxed' && module !== 'relaxed') {
    throw new RangeError("options.int8Dot: 'relaxed' needs the relaxed-SIMD module (simd: 'relaxed', or 'auto' where supported)");
  }
  return asked ?? 'auto';
}

/** A variant the engine runs, and why: what features.*Reason report. */
export interface Choice<T> {
  value: T;
  reason: string;
}

/** Resolves 'auto' with the module's probe (relaxed_dot_probe: 200 means x86-style unsigned). */
export function resolveInt8Dot(choice: Int8Dot | 'auto', module: 'relaxed' | 'baseline', probe: () => number): Choice<Int8Dot> {
  if (module === 'baseline') return { value: 'i16', reason: 'the baseline module has only the i16 dot' };
  if (choice !== 'auto') return { value: choice, reason: `int8Dot: '${choice}' was asked for` };
  return probe() === 200
    ? { value: 'i16', reason: "this engine reads the relaxed dot's second operand unsigned (x86-style), where the i16 dot measured about 2x faster" }
    : { value: 'relaxed', reason: "this engine reads the relaxed dot's second operand signed (Arm-style)" };
}

/**
 * How Stage 2 broadcasts a Q or P lane across a vector (results are the same, speed is not): 'load'
 * uses load32_splat, 'shuffle' one vector load and lane shuffles. V8 with its WebAssembly trap
 * handler (Node, Chromium) checks memory bounds with guard pages, and there loads are as fast or
 * faster (FP32 kernels 3% to 16%). Deno leaves that handler off, so every access carries a software
 * check, and Bun's JavaScriptCore handles the splat loads poorly: there shuffles measured 1.2x to
 * 1.4x faster (bench/micro.js). Engines not measured get shuffles, the smaller worst case.
 */
export function checkSplat(asked: unknown): Splat | 'auto' {
  if (asked !== undefined && asked !== 'auto' && asked !== 'load' && asked !== 'shuffle') {
    throw new TypeError(`options.splat must be 'auto', 'load' or 'shuffle', got ${JSON.stringify(asked)}`);
  }
  return asked ?? 'auto';
}

export function resolveSplat(choice: Splat | 'auto'): Choice<Splat> {
  if (choice !== 'auto') return { value: choice, reason: `splat: '${choice}' was asked for` };
  return isV8WithTrapHandler()
    ? { value: 'load', reason: 'V8 with its trap handler (Node, Chromium) checks bounds with guard pages, where splat loads measured fastest' }
    : { value: 'shuffle', reason: 'not V8 with its trap handler (Deno, Bun, other engines): fewer loads measured faster or are the smaller worst case' };
}

function isV8WithTrapHandler(): boolean {
  const g = globalThis as {
    Deno?: unknown; Bun?: unknown; process?: { release?: { name?: string } };
    navigator?: { userAgentData?: { brands?: { brand: string }[] } };
  };
  if (g.Deno !== undefined || g.Bun !== undefined) return false;
  if (g.process?.release?.name === 'node') return true;
  return g.navigator?.userAgentData?.brands?.some((b) => b.brand === 'Chromium') ?? false;
}

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
  /** why this module: what 'auto' found here, or that it was asked for (likewise the other reasons) */
  moduleReason: string;
  /** the INT8 dot product of the QK kernel: i32x4.dot_i16x8_s, or the relaxed i8 x i7 dot */
  int8Dot: Int8Dot;
  int8DotReason: string;
  /** how Stage 2 broadcasts Q and P lanes: load32_splat, or a vector load and shuffles */
  splat: Splat;
  splatReason: string;
}

export function detect(): { simd: boolean; relaxedSimd: boolean } {
  return { simd: WebAssembly.validate(SIMD_PROBE), relaxedSimd: WebAssembly.validate(RELAXED_PROBE) };
}

export type ModuleKind = 'baseline' | 'relaxed' | 'baseline-shared' | 'relaxed-shared';
const KINDS: readonly ModuleKind[] = ['baseline', 'relaxed', 'baseline-shared', 'relaxed-shared'];

/**
 * Where a module comes from: its bytes, a URL to fetch (a string resolves against the page's
 * location where there is one), a Response (consumed once), or a module compiled beforehand.
 */
export type WasmSource = BufferSource | URL | string | Response | WebAssembly.Module;
export type WasmSources = Partial<Record<ModuleKind, WasmSource>>;

// By tag rather than instanceof: the caller may live in another realm than the library (Vercel's
// edge-runtime evaluates it in a VM context, and a module compiled outside is still a module).
const tag = (x: unknown) => Object.prototype.toString.call(x);
export const isUrl = (x: unknown): x is URL => tag(x) === '[object URL]';
const isResponse = (x: unknown): x is Response => tag(x) === '[object Response]';
const isModule = (x: unknown): x is WebAssembly.Module => tag(x) === '[object WebAssembly.Module]';
const isBufferSource = (x: unknown): x is BufferSource => tag(x) === '[object ArrayBuffer]' || ArrayBuffer.isView(x);

/** Validates options.wasm; strings become URLs here so that a bad one is refused up front. */
export function checkWasm(wasm: unknown): WasmSources | undefined {
  if (wasm === undefined) return undefined;
  if (wasm === null || typeof wasm !== 'object') {
    throw new TypeError(`options.wasm must be an object keyed by module kind, got ${wasm === null ? 'null' : typeof wasm}`);
  }
  const out: WasmSources = {};
  for (const [key, src] of Object.entries(wasm)) {
    if (!KINDS.includes(key as ModuleKind)) {
      throw new TypeError(`options.wasm.${key} is not a module kind; expected one of ${KINDS.join(', ')}`);
    }
    if (typeof src === 'string') {
      const base = (globalThis as { location?: { href: string } }).location?.href;
      try {
        out[key as ModuleKind] = new URL(src, base);
      } catch {
        throw new TypeError(`options.wasm.${key} is not a valid URL: ${JSON.stringify(src)}`);
      }
    } else if (isUrl(src) || isBufferSource(src) || isResponse(src) || isModule(src)) {
      out[key as ModuleKind] = src;
    } else {
      const got = src === null ? 'null' : (src as object)?.constructor?.name ?? typeof src;
      throw new TypeError(`options.wasm.${key} must be a BufferSource, URL, string, Response or WebAssembly.Module, got ${got}`);
    }
  }
  if (Object.keys(out).length === 0) throw new TypeError('options.wasm must hold at least one module');
  return out;
}

/**
 * The build to run. Without options.wasm every build is at hand; with it, only those it holds, so
 * 'auto' takes relaxed SIMD only where the engine accepts it and options.wasm holds a relaxed build.
 */
export function chooseModule(simd: unknown, sources?: WasmSources): Choice<'relaxed' | 'baseline'> {
  if (simd !== undefined && simd !== 'auto' && simd !== 'relaxed' && simd !== 'baseline') {
    throw new TypeError(`options.simd must be 'auto', 'relaxed' or 'baseline', got ${JSON.stringify(simd)}`);
  }
  const given = (kind: 'relaxed' | 'baseline') => !sources || !!(sources[kind] ?? sources[`${kind}-shared`]);
  if ((simd === 'relaxed' || simd === 'baseline') && !given(simd)) {
    throw new RangeError(`options.wasm holds no ${simd} build ('${simd}' or '${simd}-shared'), which simd: '${simd}' needs`);
  }
  const f = detect();
  if (!f.simd) throw new Error('this WebAssembly engine lacks SIMD128, which sparge-wasm needs');
  if (simd === 'relaxed' && !f.relaxedSimd) {
    throw new RangeError(
      "options.simd: 'relaxed' needs relaxed SIMD, which this WebAssembly engine lacks " +
        "(Node 20 needs --experimental-wasm-relaxed-simd; Node 22 and later have it); use 'auto' or 'baseline'",
    );
  }
  if (simd === 'relaxed' || simd === 'baseline') return { value: simd, reason: `simd: '${simd}' was asked for` };
  if (f.relaxedSimd && given('relaxed')) return { value: 'relaxed', reason: 'this engine accepts relaxed SIMD' };
  if (!given('baseline')) throw new RangeError('options.wasm holds only relaxed-SIMD builds, which this engine does not support');
  return {
    value: 'baseline',
    reason: f.relaxedSimd ? 'options.wasm holds no relaxed build'
      : 'this engine lacks relaxed SIMD (Node 20 has it behind --experimental-wasm-relaxed-simd)',
  };
}

/** A module's bytes from its URL, by fetch (what the single-thread entry reads with). */
export async function fetchBytes(url: URL): Promise<BufferSource> {
  return responseBytes(await fetch(url));
}

async function responseBytes(res: Response): Promise<ArrayBuffer> {
  if (!res.ok) throw new Error(`could not load ${res.url || 'the WebAssembly module'}: HTTP ${res.status}`);
  return res.arrayBuffer();
}

/**
 * build/sparge.<kind>.wasm next to the package. Resolved only when options.wasm is not given, since
 * some runtimes give modules no URL to resolve against (the library bundled into one script, workerd).
 */
function builtUrl(kind: ModuleKind): URL {
  try {
    return new URL(`../../build/sparge.${kind}.wasm`, import.meta.url);
  } catch (e) {
    const why = typeof import.meta.url === 'string' ? (e as Error).message : 'this runtime gives modules no URL (import.meta.url is undefined)';
    throw new Error(`sparge-wasm cannot locate build/sparge.${kind}.wasm: ${why}; pass the builds with options.wasm`);
  }
}

/**
 * Compiles one build, from options.wasm when given, else from build/ next to the package; `read`
 * is the entry's way to read a URL (the main entry reads file: URLs with node:fs in Node).
 */
export async function compileModule(kind: ModuleKind, sources: WasmSources | undefined, read: (url: URL) => Promise<BufferSource>): Promise<WebAssembly.Module> {
  const src = sources ? sources[kind] : builtUrl(kind);
  if (src === undefined) throw new RangeError(`options.wasm holds no '${kind}' module, which this engine needs`);
  if (isUrl(src)) return WebAssembly.compile(await read(src));
  if (isResponse(src)) return WebAssembly.compile(await responseBytes(src));
  if (isBufferSource(src)) return WebAssembly.compile(src);
  return src as WebAssembly.Module;
}
