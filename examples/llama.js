// A llama2.c-format Llama in plain JavaScript whose attention is a parameter, so that one model can
// be run with exact attention, sparge-wasm's dense path or its sparse path and the outputs compared.
// Loading from a path is the only part that needs Node (or Deno, Bun); the seeded generator is the
// tests' (mulberry32).
import { rng } from '../test/helpers.js';

/**
 * @typedef {{ data: Float32Array, dims: number[] }} Tensor
 * @typedef {(layer: number, q: Tensor, k: Tensor, v: Tensor) => Tensor | Promise<Tensor>} Attention
 *   q is [1, H, Nq, D] and k, v are [1, Hkv, Nk, D], HND; causal, aligned bottom-right
 *   (query i sees keys 0 .. i + Nk - Nq), so Nq < Nk is a continuation of a cached prefix.
 *   Returns [1, H, Nq, D].
 * @typedef {(layer: number, q: Tensor, k: Tensor, v: Tensor) => void} QKVHook
 * @typedef {(layer: number, q: Tensor, kNew: Tensor, vNew: Tensor) => Tensor | Promise<Tensor>} AttendNew
 *   Attention that keeps its own key/value history (a KV cache per layer): q is [1, H, n, D] and
 *   kNew, vNew are [1, Hkv, n, D], HND, the n positions of this step only; it appends them to its
 *   history and returns q's causal attention over all of it, [1, H, n, D].
 * @typedef {{ attention?: Attention, attendNew?: AttendNew, onQKV?: QKVHook }} ForwardOptions
 *   attendNew, when given, is used instead of attention, and the JS-side prefix is not kept
 * @typedef {{
 *   dim: number, hidden: number, layers: number, heads: number, kvHeads: number,
 *   vocab: number, seqLen: number, headSize: number, kvDim: number,
 *   embedding: Float32Array, classifier: Float32Array, rmsFinal: Float32Array,
 *   layer: { rmsAtt: Float32Array, wq: Float32Array, wk: Float32Array, wv: Float32Array,
 *            wo: Float32Array, rmsFfn: Float32Array, w1: Float32Array, w2: Float32Array,
 *            w3: Float32Array }[],
 * }} Llama
 */

const EPS = 1e-5;
const ROPE_BASE = 10000;

/**
 * Reads a llama2.c checkpoint (little-endian header of 7 int32, then float32 weights).
 * @param {string | URL | ArrayBuffer | ArrayBufferView} source a file path (Node, Deno, Bun) or the file's bytes
 * @returns {Promise<Llama>}
 */
export async function loadLlama(source) {
  const view = typeof source === 'string' || source instanceof URL
    ? await (await import('node:fs/promises')).readFile(source)
    : source;
  // A plain Uint8Array, because a Node Buffer's slice() is a view, not the copy taken below.
  const bytes = view instanceof ArrayBuffer ? new Uint8Array(view) : new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  const header = new DataView(bytes.buffer, bytes.byteOffset, 28);
  const [dim, hidden, layers, heads, kvHeads, signedVocab, seqLen] =
    Array.from({ length: 7 }, (_, i) => header.getInt32(4 * i, true));
  // llama2.c's convention: a negative vocab size means the classifier is stored separately.
  const vocab = Math.abs(signedVocab);
  const headSize = dim / heads;
  const kvDim = kvHeads * headSize;
  // A copy, because a Float32Array view needs 4-byte alignment that a Node Buffer need not have.
  const floats = new Float32Array(bytes.slice(28).buffer);
  let at = 0;
  const take = (n) => floats.subarray(at, (at += n));
  const perLayer = (n) => Array.from({ length: layers }, () => take(n));
  const embedding = take(vocab * dim);
  const rmsAtt = perLayer(dim), wq = perLayer(dim * dim), wk = perLayer(kvDim * dim);
  const wv = perLayer(kvDim * dim), wo = perLayer(dim * dim), rmsFfn = perLayer(dim);
  const w1 = perLayer(hidden * dim), w2 = perLayer(dim * hidden), w3 = perLayer(hidden * dim);
  const rmsFinal = take(dim);
  take(seqLen * headSize); // RoPE tables, recomputed in float64 instead
  const classifier = signedVocab > 0 ? embedding : take(vocab * dim);
  if (at > floats.length) throw new RangeError(`checkpoint truncated: ${floats.length} floats, header implies ${at}`);
  return {
    dim, hidden, layers, heads, kvHeads, vocab, seqLen, headSize, kvDim, embedding, classifier, rmsFinal,
    layer: Array.from({ length: layers }, (_, l) => ({
      rmsAtt: rmsAtt[l], wq: wq[l], wk: wk[l], wv: wv[l], wo: wo[l], rmsFfn: rmsFfn[l], w1: w1[l], w2: w2[l], w3: w3[l],
    })),
  };
}

/**
 * out[t, o] = sum_i x[t, i] w[o, i] for n rows: w is row-major [out, in] as stored. Four rows of x
 * per pass over a row of w, so that each weight loaded serves four products.
 */
function matmul(out, x, w, n, inDim, outDim) {
  let t = 0;
  for (; t + 4 <= n; t += 4) {
    const x0 = t * inDim, x1 = x0 + inDim, x2 = x1 + inDim, x3 = x2 + inDim;
    for (let o = 0; o < outDim; o++) {
      const wo = o * inDim;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < inDim; i++) {
        const wi = w[wo + i];
        s0 += x[x0 + i] * wi;
        s1 += x[x1 + i] * wi;
        s2 += x[x2 + i] * wi;
        s3 += x[x3 + i] * wi;
      }
      out[t * outDim + o] = s0;
      out[(t + 1) * outDim + o] = s1;
      out[(t + 2) * outDim + o] = s2;
      out[(t + 3) * outDim + o] = s3;
    }
  }
  for (; t < n; t++) {
    const xo = t * inDim;
    for (let o = 0; o < outDim; o++) {
      const wo = o * inDim;
      let s = 0;
      for (let i = 0; i < inDim; i++) s += x[xo + i] * w[wo + i];
      out[t * outDim + o] = s;
    }
  }
}

function rmsnorm(out, x, weight, n, dim) {
  for (let t = 0; t < n; t++) {
    const o = t * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[o + i] * x[o + i];
    const r = 1 / Math.sqrt(ss / dim + EPS);
    for (let i = 0; i < dim; i++) out[o + i] = x[o + i] * r * weight[i];
  }
}

/** Rotates pairs (2i, 2i+1) of every head of rows [n, width], row t at position pos0 + t. */
function rope(x, n, width, headSize, pos0) {
  for (let t = 0; t < n; t++) {
    const pos = pos0 + t;
    for (let h = 0; h < width; h += headSize) {
      for (let i = 0; i < headSize; i += 2) {
        const angle = pos * Math.pow(ROPE_BASE, -i / headSize);
        const c = Math.cos(angle), s = Math.sin(angle);
        const a = t * width + h + i;
        const x0 = x[a], x1 = x[a + 1];
        x[a] = x0 * c - x1 * s;
        x[a + 1] = x0 * s + x1 * c;
      }
    }
  }
}

/** Writes rows [n, heads * d] (token-major) into rows row .. row + n - 1 of a head-major [heads, rows, d] array. */
function scatterHeads(dst, src, n, heads, d, rows, row) {
  for (let t = 0; t < n; t++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < d; i++) dst[(h * rows + row + t) * d + i] = src[t * heads * d + h * d + i];
    }
  }
}

/** The key/value cache: per layer [Hkv, capacity, D], so that decoding one token reuses the prefix. */
function createState(model, capacity) {
  const size = model.kvDim * capacity;
  return {
    pos: 0,
    capacity,
    /** set once a step ran through attendNew: from then on the history lives outside this state */
    external: false,
    k: Array.from({ length: model.layers }, () => new Float32Array(size)),
    v: Array.from({ length: model.layers }, () => new Float32Array(size)),
  };
}

/** The cached [Hkv, capacity, D] prefix of `length` positions as its own [1, Hkv, length, D] tensor. */
function cachedPrefix(cache, model, capacity, length) {
  const { kvHeads: Hkv, headSize: D } = model;
  const data = new Float32Array(Hkv * length * D);
  for (let h = 0; h < Hkv; h++) data.set(cache.subarray(h * capacity * D, (h * capacity + length) * D), h * length * D);
  return { data, dims: [1, Hkv, length, D] };
}

/**
 * Runs the tokens at the state's next positions, appends their keys and values, returns their logits.
 * @param {Llama} model @param {ReturnType<typeof createState>} state @param {ArrayLike<number>} tokens
 * @param {ForwardOptions} [options] @returns {Promise<Tensor>}
 */
async function run(model, state, tokens, { attention = fp64Attention, attendNew, onQKV } = {}) {
  const { dim, hidden, heads: H, headSize: D, kvDim, vocab } = model;
  const n = tokens.length;
  const pos0 = state.pos;
  const total = pos0 + n;
  if (total > state.capacity) throw new RangeError(`${total} positions exceed the state's ${state.capacity}`);
  if (attendNew) state.external = true;
  else if (state.external) throw new Error('this state ran through attendNew and holds no key/value prefix for attention');
  const x = new Float64Array(n * dim);
  for (let t = 0; t < n; t++) {
    const tok = tokens[t];
    if (!(tok >= 0 && tok < vocab)) throw new RangeError(`token ${tok} at ${pos0 + t} is outside the vocabulary of ${vocab}`);
    for (let i = 0; i < dim; i++) x[t * dim + i] = model.embedding[tok * dim + i];
  }
  const xb = new Float64Array(n * dim);
  const q = new Float64Array(n * dim), k = new Float64Array(n * kvDim), v = new Float64Array(n * kvDim);
  const att = new Float64Array(n * dim), proj = new Float64Array(n * dim);
  const h1 = new Float64Array(n * hidden), h3 = new Float64Array(n * hidden);
  for (let l = 0; l < model.layers; l++) {
    const w = model.layer[l];
    rmsnorm(xb, x, w.rmsAtt, n, dim);
    matmul(q, xb, w.wq, n, dim, dim);
    matmul(k, xb, w.wk, n, dim, kvDim);
    matmul(v, xb, w.wv, n, dim, kvDim);
    rope(q, n, dim, D, pos0);
    rope(k, n, kvDim, D, pos0);
    const qT = { data: new Float32Array(H * n * D), dims: [1, H, n, D] };
    scatterHeads(qT.data, q, n, H, D, n, 0);
    let o;
    if (attendNew) {
      // Only this step's rows: the attention appends them to the history it keeps.
      const kNew = { data: new Float32Array(kvDim * n), dims: [1, model.kvHeads, n, D] };
      const vNew = { data: new Float32Array(kvDim * n), dims: [1, model.kvHeads, n, D] };
      scatterHeads(kNew.data, k, n, model.kvHeads, D, n, 0);
      scatterHeads(vNew.data, v, n, model.kvHeads, D, n, 0);
      onQKV?.(l, qT, kNew, vNew);
      o = (await attendNew(l, qT, kNew, vNew)).data;
    } else {
      scatterHeads(state.k[l], k, n, model.kvHeads, D, state.capacity, pos0);
      scatterHeads(state.v[l], v, n, model.kvHeads, D, state.capacity, pos0);
      const kT = cachedPrefix(state.k[l], model, state.capacity, total);
      const vT = cachedPrefix(state.v[l], model, state.capacity, total);
      onQKV?.(l, qT, kT, vT);
      o = (await attention(l, qT, kT, vT)).data;
    }
    for (let t = 0; t < n; t++) {
      for (let h = 0; h < H; h++) {
        for (let i = 0; i < D; i++) att[t * dim + h * D + i] = o[(h * n + t) * D + i];
      }
    }
    matmul(proj, att, w.wo, n, dim, dim);
    for (let i = 0; i < n * dim; i++) x[i] += proj[i];
    rmsnorm(xb, x, w.rmsFfn, n, dim);
    matmul(h1, xb, w.w1, n, dim, hidden);
    matmul(h3, xb, w.w3, n, dim, hidden);
    for (let i = 0; i < n * hidden; i++) h1[i] = (h1[i] / (1 + Math.exp(-h1[i]))) * h3[i];
    matmul(proj, h1, w.w2, n, hidden, dim);
    for (let i = 0; i < n * dim; i++) x[i] += proj[i];
  }
  rmsnorm(xb, x, model.rmsFinal, n, dim);
  const logits = new Float32Array(n * vocab);
  matmul(logits, xb, model.classifier, n, dim, vocab);
  state.pos = total;
  return { data: logits, dims: [n, vocab] };
}

/**
 * Prefill: all positions of `tokens` in one pass (each attention call sees the whole sequence).
 * The model was trained on up to model.seqLen positions; longer inputs run but leave its training.
 * @param {Llama} model
 * @param {ArrayLike<number>} tokens
 * @param {ForwardOptions} [options] attention defaults to fp64Attention; onQKV sees each layer's
 *   post-RoPE q, k, v (fresh arrays the caller may keep) before attention runs on them
 * @returns {Promise<Tensor>} logits [N, vocab]: row t is the distribution of token t + 1
 */
export function forward(model, tokens, options) {
  return run(model, createState(model, tokens.length), tokens, options);
}

/** Exact causal attention in float64 (bottom-right aligned, GQA). @type {Attention} */
export function fp64Attention(_layer, q, k, v) {
  const [, H, Nq, D] = q.dims;
  const [, Hkv, Nk] = k.dims;
  const qd = q.data, kd = k.data, vd = v.data;
  const group = H / Hkv;
  const scale = 1 / Math.sqrt(D);
  const out = new Float32Array(H * Nq * D);
  const p = new Float64Array(Nk);
  const qi = new Float64Array(D);
  const acc = new Float64Array(D);
  for (let h = 0; h < H; h++) {
    const kv = Math.floor(h / group) * Nk * D;
    for (let i = 0; i < Nq; i++) {
      const qo = (h * Nq + i) * D;
      for (let d = 0; d < D; d++) qi[d] = qd[qo + d] * scale;
      const last = i + Nk - Nq;
      let max = -Infinity;
      for (let j = 0; j <= last; j++) {
        const ko = kv + j * D;
        let s = 0;
        for (let d = 0; d < D; d++) s += qi[d] * kd[ko + d];
        p[j] = s;
        if (s > max) max = s;
      }
      acc.fill(0);
      let sum = 0;
      for (let j = 0; j <= last; j++) {
        const e = Math.exp(p[j] - max);
        const vo = kv + j * D;
        sum += e;
        for (let d = 0; d < D; d++) acc[d] += e * vd[vo + d];
      }
      for (let d = 0; d < D; d++) out[qo + d] = acc[d] / sum;
    }
  }
  return { data: out, dims: [1, H, Nq, D] };
}

/**
 * sparge-wasm's attention per layer: options[layer] (or one options object for every layer) are
 * passed to sparge.attention with causal: true, and 'dense' selects sparge.denseAttention.
 * The returned function's `sparsity[layer]` is the block sparsity of that layer's last call
 * (0 for dense).
 * @param {import('../dist/src/index.js').Sparge} sparge
 * @param {(import('../dist/src/index.js').SpargeOptions | 'dense')[] | import('../dist/src/index.js').SpargeOptions | 'dense'} optionsPerLayer
 * @returns {Attention & { sparsity: number[] }}
 */
export function spargeAttention(sparge, optionsPerLayer) {
  const sparsity = [];
  const attention = async (layer, q, k, v) => {
    const options = Array.isArray(optionsPerLayer) ? optionsPerLayer[layer] : optionsPerLayer;
    if (options === 'dense') {
      sparsity[layer] = 0;
      return sparge.denseAttention(q, k, v, { causal: true });
    }
    const res = await sparge.attention(q, k, v, { causal: true, ...options });
    sparsity[layer] = res.sparsity;
    return res.output;
  };
  return Object.assign(attention, { sparsity });
}

/**
 * sparge-wasm KV caches, one per layer (createKVCache, HND, capacity model.seqLen), behind an
 * AttendNew: each call appends the step's keys and values to its layer's cache, then runs
 * cache.denseAttention(q, { causal: true }) for 'dense' or cache.attention(q, { causal: true,
 * ...options }) otherwise. optionsPerLayer is as for spargeAttention. `sparsity[layer]` is the
 * block sparsity of that layer's last call (0 for dense); clear() empties every cache (for a new
 * sequence) and dispose() returns their memory.
 * @param {import('../dist/src/index.js').Sparge} sparge
 * @param {Llama} model
 * @param {(import('../dist/src/index.js').SpargeOptions | 'dense')[] | import('../dist/src/index.js').SpargeOptions | 'dense'} optionsPerLayer
 * @returns {AttendNew & { sparsity: number[], caches: import('../dist/src/index.js').KVCache[], clear(): void, dispose(): Promise<void> }}
 */
export function spargeKVCaches(sparge, model, optionsPerLayer) {
  const caches = Array.from({ length: model.layers }, () =>
    sparge.createKVCache({ heads: model.kvHeads, headDim: model.headSize, capacity: model.seqLen }));
  const sparsity = [];
  const attendNew = async (layer, q, kNew, vNew) => {
    const cache = caches[layer];
    const chosen = Array.isArray(optionsPerLayer) ? optionsPerLayer[layer] : optionsPerLayer;
    // A layer's settings may carry a `decode` set for one-row steps (calibrated on decode-shaped samples).
    const { decode, ...whole } = chosen === 'dense' ? {} : chosen;
    const options = chosen === 'dense' ? 'dense' : decode && q.dims[2] === 1 ? decode : whole;
    await cache.append(kNew, vNew);
    if (options === 'dense') {
      sparsity[layer] = 0;
      return cache.denseAttention(q, { causal: true });
    }
    const res = await cache.attention(q, { causal: true, ...options });
    sparsity[layer] = res.sparsity;
    return res.output;
  };
  return Object.assign(attendNew, {
    sparsity,
    caches,
    clear() {
      for (const cache of caches) cache.clear();
    },
    async dispose() {
      for (const cache of caches) await cache.dispose();
    },
  });
}

/** Row t of logits [N, vocab] as float64 log-probabilities. */
function logSoftmaxRow(logits, t) {
  const V = logits.dims[1];
  const row = new Float64Array(logits.data.subarray(t * V, (t + 1) * V));
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (row[i] > max) max = row[i];
  let sum = 0;
  for (let i = 0; i < V; i++) sum += Math.exp(row[i] - max);
  const lse = max + Math.log(sum);
  for (let i = 0; i < V; i++) row[i] -= lse;
  return row;
}

/**
 * Mean log-probability (nats) of tokens[1..] given their prefixes.
 * @param {Tensor} logits [N, vocab] from forward(model, tokens)
 * @param {ArrayLike<number>} tokens
 */
export function logProbs(logits, tokens) {
  let sum = 0;
  for (let t = 0; t + 1 < tokens.length; t++) sum += logSoftmaxRow(logits, t)[tokens[t + 1]];
  return sum / (tokens.length - 1);
}

function argmax(data, from, n) {
  let best = 0;
  for (let i = 1; i < n; i++) if (data[from + i] > data[from + best]) best = i;
  return best;
}

/**
 * Fraction of positions whose most likely next token is the same under both.
 * @param {Tensor} logitsA [N, vocab]
 * @param {Tensor} logitsB [N, vocab]
 */
export function nextTokenAgreement(logitsA, logitsB) {
  const [N, V] = logitsA.dims;
  let same = 0;
  for (let t = 0; t < N; t++) same += +(argmax(logitsA.data, t * V, V) === argmax(logitsB.data, t * V, V));
  return same / N;
}

/**
 * Mean over positions of KL(ref || other) of the next-token distributions, in nats.
 * @param {Tensor} logitsRef [N, vocab]
 * @param {Tensor} logits [N, vocab]
 */
export function meanKL(logitsRef, logits) {
  const [N, V] = logitsRef.dims;
  let sum = 0;
  for (let t = 0; t < N; t++) {
    const p = logSoftmaxRow(logitsRef, t), q = logSoftmaxRow(logits, t);
    for (let i = 0; i < V; i++) sum += Math.exp(p[i]) * (p[i] - q[i]);
  }
  return sum / N;
}

/**
 * Draws n tokens, BOS (1) first, at temperature 1, decoding one token at a time over a key/value
 * cache (so attention sees 1 query against the prefix); it does not stop at a BOS it draws.
 * @param {Llama} model
 * @param {number} n
 * @param {number} seed
 * @param {ForwardOptions} [options]
 * @returns {Promise<number[]>}
 */
export async function sampleTokens(model, n, seed, options) {
  const random = rng(seed);
  const state = createState(model, n);
  const tokens = [1];
  while (tokens.length < n) {
    const logits = await run(model, state, [tokens[tokens.length - 1]], options);
    const logp = logSoftmaxRow(logits, 0);
    const coin = random();
    let cdf = 0;
    let next = model.vocab - 1;
    for (let i = 0; i < model.vocab; i++) {
      cdf += Math.exp(logp[i]);
      if (coin < cdf) { next = i; break; }
    }
    tokens.push(next);
  }
  return tokens;
}

/**
 * @typedef {ForwardOptions & {
 *   forced?: ArrayLike<number>,
 *   onStep?: (step: { phase: 'prefill' | 'decode', index: number, ms: number }) => void,
 * }} GenerateOptions
 *   forced: teacher forcing, the n tokens to feed instead of the argmax (the logits are recorded
 *   all the same), so that two attention methods can be compared step by step on one sequence;
 *   onStep runs after the prefill (index 0) and after each decode step (index 1 .. n - 1), e.g. to
 *   read an attention's sparsity of that step
 */

/**
 * Greedy generation: the prompt in one prefill step, then n tokens, each the argmax of the last
 * distribution (or options.forced[i]), decoded one at a time over the key/value history. Token 0
 * comes from the prefill's last row and token i from decode step i, which feeds token i - 1, so
 * there are n - 1 decode steps and the last token is never fed back. An options.attendNew must
 * start empty (e.g. fresh or cleared caches).
 * @param {Llama} model
 * @param {ArrayLike<number>} prompt at least one token
 * @param {number} n tokens to generate
 * @param {GenerateOptions} [options]
 * @returns {Promise<{ tokens: number[], logits: Float32Array[], prefillMs: number, decodeMs: number, decodeSteps: number }>}
 *   tokens: the n generated (or forced) tokens; logits[i]: the next-token logits token i was chosen from
 */
export async function generate(model, prompt, n, options = {}) {
  const { forced, onStep, ...forwardOptions } = options;
  if (prompt.length < 1) throw new RangeError('generate needs a prompt of at least one token');
  if (forced && forced.length < n) throw new RangeError(`options.forced has ${forced.length} tokens, ${n} are needed`);
  const V = model.vocab;
  const state = createState(model, prompt.length + Math.max(n - 1, 0));
  const tokens = [];
  const logits = [];
  let t0 = performance.now();
  let out = await run(model, state, prompt, forwardOptions);
  const prefillMs = performance.now() - t0;
  onStep?.({ phase: 'prefill', index: 0, ms: prefillMs });
  let row = out.data.slice((prompt.length - 1) * V, prompt.length * V);
  let decodeMs = 0;
  for (let i = 0; i < n; i++) {
    if (i > 0) {
      t0 = performance.now();
      out = await run(model, state, [tokens[i - 1]], forwardOptions);
      const ms = performance.now() - t0;
      decodeMs += ms;
      onStep?.({ phase: 'decode', index: i, ms });
      row = out.data.slice(0, V);
    }
    logits.push(row);
    tokens.push(forced ? forced[i] : argmax(row, 0, V));
  }
  return { tokens, logits, prefillMs, decodeMs, decodeSteps: Math.max(n - 1, 0) };
}

/** Greedy's choice from next-token logits: the index of the largest (the first of ties). */
export function argmaxToken(logits) {
  return argmax(logits, 0, logits.length);
}
