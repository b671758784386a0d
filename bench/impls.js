// The attention implementations the benchmark compares, each behind the same two calls:
// prepare(inputs) once per input size, then run() -> output in HND order.
import { createSparge } from '../dist/src/index.js';
import { matmulSoftmaxGraph, multiHeadAttentionGraph } from './onnx.js';

/** [H, N, D] <-> [N, H, D] (B = 1), for the operators that take tokens first. */
function swapHeadsTokens(x, A, Bn, D) {
  const out = new Float32Array(x.length);
  for (let a = 0; a < A; a++) for (let b = 0; b < Bn; b++) out.set(x.subarray((a * Bn + b) * D, (a * Bn + b + 1) * D), (b * A + a) * D);
  return out;
}

/** Plain JavaScript attention: one query row at a time, online softmax, Float32Array storage. */
function plainJs(q, k, v, H, N, D, scale) {
  const out = new Float32Array(H * N * D), s = new Float32Array(N), acc = new Float32Array(D);
  for (let h = 0; h < H; h++) {
    const base = h * N * D;
    for (let i = 0; i < N; i++) {
      const qi = base + i * D;
      let m = -Infinity;
      for (let j = 0; j < N; j++) {
        const kj = base + j * D;
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[qi + d] * k[kj + d];
        s[j] = dot * scale;
        if (s[j] > m) m = s[j];
      }
      acc.fill(0);
      let l = 0;
      for (let j = 0; j < N; j++) {
        const p = Math.exp(s[j] - m);
        l += p;
        const vj = base + j * D;
        for (let d = 0; d < D; d++) acc[d] += p * v[vj + d];
      }
      for (let d = 0; d < D; d++) out[qi + d] = acc[d] / l;
    }
  }
  return out;
}

/**
 * onnxruntime-node session options for `threads`. Its threads spin between runs by default, which
 * would take the CPU from the implementations measured after it in the same process.
 */
export function ortNodeOptions(threads) {
  return { graphOptimizationLevel: 'all', intraOpNumThreads: threads, interOpNumThreads: 1, extra: { session: { intra_op: { allow_spinning: '0' } } } };
}

async function onnx(ort, graph, threads, layout, isWeb) {
  const opts = isWeb ? { graphOptimizationLevel: 'all', executionProviders: ['wasm'] } : ortNodeOptions(threads);
  const session = await ort.InferenceSession.create(graph, opts);
  let feeds, H, N, D;
  return {
    prepare({ q, k, v, dims }) {
      [, H, N, D] = dims;
      const t = (x) => layout === 'NHD'
        ? new ort.Tensor('float32', swapHeadsTokens(x, H, N, D), [1, N, H * D])
        : new ort.Tensor('float32', x, dims);
      feeds = { q: t(q), k: t(k), v: t(v) };
    },
    async run() {
      const o = (await session.run(feeds)).o.data;
      return { output: layout === 'NHD' ? swapHeadsTokens(o, N, H, D) : o };
    },
  };
}

/**
 * Every implementation by name. `threads` applies to all; onnxruntime-web's thread count is
 * process-wide and must be set before its first session.
 */
export async function implementations(threads, simd) {
  const sparge = await createSparge({ threads, simd });
  let ortWeb, ortNode;
  const web = async () => {
    if (!ortWeb) {
      ortWeb = await import('onnxruntime-web');
      ortWeb.env.wasm.numThreads = threads;
    }
    return ortWeb;
  };
  const node = async () => (ortNode ??= await import('onnxruntime-node'));
  const ours = (label, options) => ({
    label, module: sparge.features.module,
    prepare(x) { this.x = x; this.t = (d) => ({ data: d, dims: x.dims }); },
    async run() {
      const { q, k, v } = this.x;
      if (!options) return { output: (await sparge.denseAttention(this.t(q), this.t(k), this.t(v))).data };
      const r = await sparge.attention(this.t(q), this.t(k), this.t(v), options);
      return { output: r.output.data, sparsity: r.sparsity };
    },
  });
  // Per-head settings calibrated on the input itself (not timed): speed at a set accuracy.
  const calibrated = (label, target) => ({
    ...ours(label, {}),
    async prepare(x) {
      this.x = x;
      this.t = (d) => ({ data: d, dims: x.dims });
      this.options = (await sparge.calibrate({ q: this.t(x.q), k: this.t(x.k), v: this.t(x.v) }, { target })).params;
    },
    async run() {
      const r = await sparge.attention(this.t(this.x.q), this.t(this.x.k), this.t(this.x.v), this.options);
      return { output: r.output.data, sparsity: r.sparsity };
    },
  });
  const scale = (dims) => 1 / Math.sqrt(dims[3]);
  const lazy = (label, make) => ({
    label,
    async prepare(x) { this.impl = await make(x.dims); this.impl.prepare(x); },
    run() { return this.impl.run(); },
  });
  const impls = {
    'sparge dense FP32': ours('sparge dense FP32'),
    'sparge topk 0.5': ours('sparge topk 0.5', { topk: 0.5 }),
    'sparge topk 0.25': ours('sparge topk 0.25', { topk: 0.25 }),
    'sparge topk 0.1': ours('sparge topk 0.1', { topk: 0.1 }),
    'sparge CDF 0.95': ours('sparge CDF 0.95', { cdfThreshold: 0.95 }),
    'sparge calibrated 0.05': calibrated('sparge calibrated 0.05', 0.05),
    'ort-web MatMul-Softmax-MatMul': lazy('ort-web MatMul-Softmax-MatMul', async (dims) => onnx(await web(), matmulSoftmaxGraph(scale(dims)), threads, 'HND', true)),
    'ort-web MultiHeadAttention': lazy('ort-web MultiHeadAttention', async (dims) => onnx(await web(), multiHeadAttentionGraph(dims[1], scale(dims)), threads, 'NHD', true)),
    'ort-node MatMul-Softmax-MatMul': lazy('ort-node MatMul-Softmax-MatMul', async (dims) => onnx(await node(), matmulSoftmaxGraph(scale(dims)), threads, 'HND')),
    'ort-node MultiHeadAttention': lazy('ort-node MultiHeadAttention', async (dims) => onnx(await node(), multiHeadAttentionGraph(dims[1], scale(dims)), threads, 'NHD')),
    'plain JavaScript': {
      label: 'plain JavaScript',
      prepare(x) { this.x = x; },
      run() {
        const { q, k, v, dims } = this.x;
        return { output: plainJs(q, k, v, dims[1], dims[2], dims[3], scale(dims)) };
      },
    },
  };
  return { impls, sparge };
}
