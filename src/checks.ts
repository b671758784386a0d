// Input checks. Everything here runs before any memory is touched, so a bad call throws a
// TypeError or RangeError naming the argument and leaves the engine as it was.

export type Layout = 'HND' | 'NHD';

/** Anything with { data, dims }: an onnxruntime-web Tensor fits. */
export interface TensorLike {
  data: Float32Array;
  dims: readonly number[];
}

export interface Shape {
  B: number;
  H: number;
  N: number;
  D: number;
  /** true when the caller gave 3-d dims (B = 1 implied): outputs keep that form. */
  threeD: boolean;
}

const fmt = (dims: readonly unknown[]) => `[${dims.join(', ')}]`;

/** By tag rather than instanceof, so that arrays made in another realm (a vm context, an iframe) pass. */
export const isF32 = (x: unknown): x is Float32Array => ArrayBuffer.isView(x) && (x as Float32Array)[Symbol.toStringTag] === 'Float32Array';
const isU8 = (x: unknown): x is Uint8Array => ArrayBuffer.isView(x) && (x as Uint8Array)[Symbol.toStringTag] === 'Uint8Array';

export function checkTensor(name: string, t: unknown, layout: Layout): Shape {
  if (t === null || typeof t !== 'object') {
    throw new TypeError(`${name} must be a tensor { data: Float32Array, dims: number[] }, got ${t === null ? 'null' : typeof t}`);
  }
  const { data, dims } = t as { data: unknown; dims: unknown };
  if (!isF32(data)) {
    const got = data === undefined ? 'undefined' : (data as object)?.constructor?.name ?? typeof data;
    throw new TypeError(`${name}.data must be a Float32Array, got ${got}`);
  }
  if (!Array.isArray(dims)) throw new TypeError(`${name}.dims must be an array of integers`);
  if (dims.length !== 3 && dims.length !== 4) {
    throw new RangeError(`${name}.dims must have 3 or 4 entries, got ${fmt(dims)}`);
  }
  for (const d of dims) {
    if (!Number.isInteger(d) || d < 1) {
      throw new RangeError(`${name}.dims must be positive integers, got ${fmt(dims)}`);
    }
  }
  const full = dims.length === 3 ? [1, ...dims] : dims;
  const size = full.reduce((a: number, b: number) => a * b, 1);
  if (data.length !== size) {
    throw new RangeError(`${name}.data has ${data.length} elements but ${name}.dims ${fmt(dims)} need ${size}`);
  }
  const [B, a, b, D] = full as number[];
  const [H, N] = layout === 'HND' ? [a, b] : [b, a];
  if (D > MAX_HEAD_DIM) throw new RangeError(`${name}: head dim must be at most ${MAX_HEAD_DIM}, got ${D}`);
  return { B, H, N, D, threeD: dims.length === 3 };
}

export const MAX_HEAD_DIM = 1024;

/** NaN or Infinity anywhere would poison a whole block's quantization scale: refuse it. */
export function checkFinite(name: string, t: TensorLike): void {
  const data = t.data;
  for (let i = 0; i < data.length; i++) {
    const x = data[i];
    if (x - x !== 0) throw new RangeError(`${name}.data must be finite, got ${x} at index ${i}`);
  }
}
const MAX_BLOCK = 512;

export interface Problem {
  q: Shape;
  k: Shape;
  layout: Layout;
}

/** v is checked (and required) when the call computes an output, not for Stage 1 alone. */
export function checkQKV(q: unknown, k: unknown, v: unknown, layout: Layout, needV: boolean): Problem {
  const qs = checkTensor('q', q, layout);
  const ks = checkTensor('k', k, layout);
  if (needV) {
    checkTensor('v', v, layout);
    const kd = (k as TensorLike).dims, vd = (v as TensorLike).dims;
    if (kd.length !== vd.length || kd.some((d, i) => d !== vd[i])) {
      throw new RangeError(`v.dims must equal k.dims ${fmt(kd)}, got ${fmt(vd)}`);
    }
  }
  if (qs.threeD !== ks.threeD) throw new RangeError(`q.dims and k.dims must have the same number of entries`);
  if (qs.B !== ks.B) throw new RangeError(`k batch size must equal q's (${qs.B}), got ${ks.B}`);
  if (qs.D !== ks.D) throw new RangeError(`k head dim must equal q's (${qs.D}), got ${ks.D}`);
  if (qs.H % ks.H !== 0) {
    throw new RangeError(`q heads (${qs.H}) must be a multiple of k/v heads (${ks.H})`);
  }
  return { q: qs, k: ks, layout };
}

export function checkLayout(layout: unknown, name = 'options.layout'): Layout {
  if (layout === undefined) return 'HND';
  if (layout !== 'HND' && layout !== 'NHD') {
    throw new TypeError(`${name} must be 'HND' or 'NHD', got ${JSON.stringify(layout)}`);
  }
  return layout;
}

/** A permutation of the N tokens (perm[i]: the input row that goes to position i), as a copy of its own. */
export function checkPerm(name: string, x: unknown, N: number): Uint32Array {
  if (!Array.isArray(x) && !(ArrayBuffer.isView(x) && 'length' in x)) {
    throw new TypeError(`${name} must be a Uint32Array or an array of token indices, got ${x === null ? 'null' : (x as object)?.constructor?.name ?? typeof x}`);
  }
  const a = x as ArrayLike<unknown>;
  if (a.length !== N) throw new RangeError(`${name} must have one entry per token (${N}), got ${a.length}`);
  const perm = new Uint32Array(N), at = new Int32Array(N).fill(-1);
  for (let i = 0; i < N; i++) {
    const v = a[i];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= N) {
      throw new RangeError(`${name} must be a permutation of 0..${N - 1}, got ${String(v)} at index ${i}`);
    }
    if (at[v] >= 0) throw new RangeError(`${name} must be a permutation of 0..${N - 1}, got ${v} twice (at ${at[v]} and ${i})`);
    at[v] = i;
    perm[i] = v;
  }
  return perm;
}

/**
 * options.order: a token order ({ perm }, as hilbertOrder returns) or its perm alone. It permutes
 * q's rows and k's alike, so it needs self-attention's equal lengths, and causal attention is
 * defined on the tokens' own order.
 */
export function checkOrder(x: unknown, q: Shape, k: Shape, causal: boolean): Uint32Array | undefined {
  if (x === undefined) return undefined;
  const perm = x !== null && typeof x === 'object' && !Array.isArray(x) && !ArrayBuffer.isView(x) ? (x as { perm?: unknown }).perm : x;
  const name = perm === x ? 'options.order' : 'options.order.perm';
  if (perm === undefined || perm === null) {
    throw new TypeError(`options.order must be a token order { perm } (as hilbertOrder returns) or a permutation array, got ${x === null ? 'null' : 'an object without perm'}`);
  }
  if (causal) throw new RangeError('options.order cannot be used with causal: true (causal attention follows the tokens\' own order)');
  if (q.N !== k.N) throw new RangeError(`options.order needs q and k of equal length (self-attention), got ${q.N} and ${k.N}`);
  return checkPerm(name, perm, q.N);
}

export function checkBool(name: string, x: unknown, dflt: boolean): boolean {
  if (x === undefined) return dflt;
  if (typeof x !== 'boolean') throw new TypeError(`options.${name} must be a boolean, got ${typeof x}`);
  return x;
}

/** required: an entry of an array, where undefined is not "the default" but a hole. */
export function checkNumber(name: string, x: unknown, dflt: number, lo: number, hi: number, open = '', required = false): number {
  if (x === undefined && !required) return dflt;
  if (typeof x !== 'number') throw new TypeError(`options.${name} must be a number, got ${x === null ? 'null' : typeof x}`);
  const loOk = open.includes('(') ? x > lo : x >= lo;
  const hiOk = open.includes(')') ? x < hi : x <= hi;
  if (Number.isNaN(x) || !loOk || !hiOk) {
    const range = `${open.includes('(') ? '(' : '['}${lo}, ${hi}${open.includes(')') ? ')' : ']'}`;
    throw new RangeError(`options.${name} must be in ${range}, got ${x}`);
  }
  return x;
}

/**
 * A per-head setting: one number for every query head, or an array of one per head (length H).
 * Each entry is checked as checkNumber does, and named by its index.
 */
export function checkPerHead(name: string, x: unknown, dflt: number, lo: number, hi: number, open: string, H: number): number[] {
  if (x === undefined || typeof x === 'number') return new Array<number>(H).fill(checkNumber(name, x, dflt, lo, hi, open));
  if (!Array.isArray(x) && !ArrayBuffer.isView(x)) {
    throw new TypeError(`options.${name} must be a number or an array of one per query head, got ${x === null ? 'null' : typeof x}`);
  }
  const a = Array.from(x as ArrayLike<unknown>);
  if (a.length !== H) throw new RangeError(`options.${name} must have one entry per query head (${H}), got ${a.length}`);
  return a.map((v, i) => checkNumber(`${name}[${i}]`, v, dflt, lo, hi, open, true));
}

/** options.precision of the sparse path: 'int8' or 'f32', for all heads or one per query head; true = f32. */
export function checkPrecision(x: unknown, H: number): boolean[] {
  const one = (v: unknown, name: string) => {
    if (v !== 'int8' && v !== 'f32') throw new TypeError(`options.${name} must be 'int8' or 'f32', got ${JSON.stringify(v) ?? String(v)}`);
    return v === 'f32';
  };
  if (x === undefined) return new Array<boolean>(H).fill(false);
  if (!Array.isArray(x)) return new Array<boolean>(H).fill(one(x, 'precision'));
  if (x.length !== H) throw new RangeError(`options.precision must have one entry per query head (${H}), got ${x.length}`);
  return x.map((v, i) => one(v, `precision[${i}]`));
}

/** A block size; name is the argument's full name (options.blockQ, mask.blockQ). */
export function checkBlock(name: string, x: unknown, dflt: number): number {
  if (x === undefined) return dflt;
  if (typeof x !== 'number' || !Number.isInteger(x)) {
    throw new TypeError(`${name} must be an integer, got ${String(x)}`);
  }
  if (x < 16 || x > MAX_BLOCK || x % 16 !== 0) {
    throw new RangeError(`${name} must be a multiple of 16 from 16 to ${MAX_BLOCK}, got ${x}`);
  }
  return x;
}

/** options.output: a Float32Array of exactly the output's length, or nothing. */
export function checkOutput(x: unknown, length: number): Float32Array | undefined {
  if (x === undefined) return undefined;
  if (!isF32(x)) {
    const got = x === null ? 'null' : (x as object)?.constructor?.name ?? typeof x;
    throw new TypeError(`options.output must be a Float32Array, got ${got}`);
  }
  if (x.length !== length) throw new RangeError(`options.output must have ${length} elements for these inputs, got ${x.length}`);
  return x;
}

/** options.signal: an AbortSignal (recognised by shape, so one from another realm works too). */
export function checkSignal(x: unknown): AbortSignal | undefined {
  if (x === undefined) return undefined;
  const s = x as { aborted?: unknown; addEventListener?: unknown; throwIfAborted?: unknown } | null;
  if (s === null || typeof s !== 'object' || typeof s.aborted !== 'boolean' || typeof s.addEventListener !== 'function' || typeof s.throwIfAborted !== 'function') {
    throw new TypeError(`options.signal must be an AbortSignal, got ${x === null ? 'null' : typeof x}`);
  }
  return x as AbortSignal;
}

export function checkOptions(options: unknown, known: readonly string[]): Record<string, unknown> {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`options must be an object, got ${options === null ? 'null' : typeof options}`);
  }
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw new TypeError(`options.${key} is not an option here; expected one of ${known.join(', ')}`);
    }
  }
  return options as Record<string, unknown>;
}

export interface BlockMaskLike {
  data: Uint8Array;
  dims: readonly number[];
  blockQ?: number;
  blockK?: number;
}

export function checkMask(mask: unknown, dims: readonly number[]): Uint8Array {
  const { data, dims: md } = maskParts(mask);
  if (!Array.isArray(md) || md.length !== 4 || md.some((d, i) => d !== dims[i])) {
    throw new RangeError(`mask.dims must be ${fmt(dims)} for these inputs and block sizes, got ${Array.isArray(md) ? fmt(md) : String(md)}`);
  }
  return checkMaskData(data, dims);
}

/**
 * A mask on its own, with no call to say what its dims must be: [B, H, nq, nk], or [H, nq, nk] (as
 * the reference cases store them) read as B = 1.
 */
export function checkMaskAlone(mask: unknown): { data: Uint8Array; dims: number[] } {
  const { data, dims } = maskParts(mask);
  if (!Array.isArray(dims) || (dims.length !== 3 && dims.length !== 4) || dims.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new RangeError(`mask.dims must be 3 or 4 positive integers [B, H, nq, nk], got ${Array.isArray(dims) ? fmt(dims) : String(dims)}`);
  }
  checkMaskData(data, dims);
  return { data, dims: dims.length === 3 ? [1, ...dims] : [...dims] };
}

function maskParts(mask: unknown): { data: Uint8Array; dims: unknown } {
  if (mask === null || typeof mask !== 'object') {
    throw new TypeError(`mask must be a BlockMask { data: Uint8Array, dims }, got ${mask === null ? 'null' : typeof mask}`);
  }
  const { data, dims } = mask as { data: unknown; dims: unknown };
  if (!isU8(data)) {
    const got = data === undefined ? 'undefined' : (data as object)?.constructor?.name ?? typeof data;
    throw new TypeError(`mask.data must be a Uint8Array, got ${got}`);
  }
  return { data, dims };
}

function checkMaskData(data: Uint8Array, dims: readonly number[]): Uint8Array {
  const size = dims.reduce((a, b) => a * b, 1);
  if (data.length !== size) throw new RangeError(`mask.data has ${data.length} entries, mask.dims ${fmt(dims)} need ${size}`);
  for (let i = 0; i < data.length; i++) {
    if (data[i] > 1) throw new RangeError(`mask.data must hold 0 or 1, got ${data[i]} at index ${i}`);
  }
  return data;
}

/** An index option: an integer from 0 to count - 1; `of` says what is counted, for the message. */
export function checkIndex(name: string, x: unknown, count: number, of: string): number {
  if (x === undefined) return 0;
  if (typeof x !== 'number') throw new TypeError(`options.${name} must be a number, got ${x === null ? 'null' : typeof x}`);
  if (!Number.isInteger(x) || x < 0 || x >= count) {
    throw new RangeError(`options.${name} must be an integer from 0 to ${count - 1} (${of}), got ${x}`);
  }
  return x;
}
