// Writes the ONNX attention graphs the benchmarks run in onnxruntime, as protobuf bytes, so
// that no Python or model file is needed: the MatMul-Softmax-MatMul graph that exporters emit
// (also with an additive mask, for causal query chunks), onnxruntime's fused com.microsoft
// MultiHeadAttention operator, and its GroupQueryAttention with a past key/value cache.
// The messages are onnx-proto's, generated from the ONNX schema.
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
const { FLOAT, INT32 } = onnx.TensorProto.DataType;
const { AttributeType } = onnx.AttributeProto;

/** ValueInfoProto of a tensor (float unless told); a string dim is symbolic, no dims a scalar. */
function valueInfo(name, dims, elemType = FLOAT) {
  const dim = dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d }));
  return { name, type: { tensorType: { elemType, shape: { dim } } } };
}

const node = (opType, input, output, attribute = [], domain = '') => ({ input, output, opType, attribute, ...(domain ? { domain } : {}) });
const attrInt = (name, i) => ({ name, i, type: AttributeType.INT });
const attrFloat = (name, f) => ({ name, f, type: AttributeType.FLOAT });
const attrInts = (name, ints) => ({ name, ints, type: AttributeType.INTS });

const scalarInitializer = (name, x) => ({ name, dataType: FLOAT, floatData: [x] });

function model(graph, opsets) {
  const opsetImport = opsets.map(([domain, version]) => ({ ...(domain ? { domain } : {}), version }));
  const message = onnx.ModelProto.fromObject({ irVersion: 8, producerName: 'sparge-wasm bench', opsetImport, graph });
  return onnx.ModelProto.encode(message).finish();
}

/** Transpose(k), MatMul with q, then the scale: the scores of q k^T * scale, as `ss`. */
const scaledScores = () => [
  node('Transpose', ['k'], ['kt'], [attrInts('perm', [0, 1, 3, 2])]),
  node('MatMul', ['q', 'kt'], ['s']),
  node('Mul', ['s', 'scale'], ['ss']),
];

/** softmax(q k^T * scale) v over [B, H, N, D] inputs, materializing the N x N scores. */
export function matmulSoftmaxGraph(scale) {
  const dims = ['B', 'H', 'N', 'D'];
  return model({
    node: [...scaledScores(), node('Softmax', ['ss'], ['p'], [attrInt('axis', -1)]), node('MatMul', ['p', 'v'], ['o'])],
    name: 'attention',
    initializer: [scalarInitializer('scale', scale)],
    input: ['q', 'k', 'v'].map((n) => valueInfo(n, dims)),
    output: [valueInfo('o', dims)],
  }, [['', 17]]);
}

/** com.microsoft MultiHeadAttention over [B, N, H * D] inputs. */
export function multiHeadAttentionGraph(heads, scale) {
  const dims = ['B', 'N', 'HD'];
  return model({
    node: [node('MultiHeadAttention', ['q', 'k', 'v'], ['o'], [attrInt('num_heads', heads), attrFloat('scale', scale)], 'com.microsoft')],
    name: 'mha',
    input: ['q', 'k', 'v'].map((n) => valueInfo(n, dims)),
    output: [valueInfo('o', dims)],
  }, [['', 17], ['com.microsoft', 1]]);
}

/**
 * softmax(q k^T * scale + mask) v: q [B, H, M, D] against k, v [B, H, N, D], mask [M, N] (0 or
 * -Infinity). A grouped-query layer fits as is: its G query heads per key/value head are G * rows
 * query rows of that head, so the keys are not repeated.
 */
export function maskedMatmulSoftmaxGraph(scale) {
  return model({
    node: [
      ...scaledScores(), node('Add', ['ss', 'mask'], ['sm']),
      node('Softmax', ['sm'], ['p'], [attrInt('axis', -1)]), node('MatMul', ['p', 'v'], ['o']),
    ],
    name: 'masked attention',
    initializer: [scalarInitializer('scale', scale)],
    input: [
      valueInfo('q', ['B', 'H', 'M', 'D']), ...['k', 'v'].map((n) => valueInfo(n, ['B', 'H', 'N', 'D'])), valueInfo('mask', ['M', 'N']),
    ],
    output: [valueInfo('o', ['B', 'H', 'M', 'D'])],
  }, [['', 17]]);
}

/**
 * com.microsoft GroupQueryAttention: S new tokens (q [B, S, H * D], k and v [B, S, Hkv * D]) after
 * past_key and past_value [B, Hkv, P, D], bottom-right causal; present_key and present_value are
 * the past with the new tokens appended. seqlens_k [B] is P + S - 1, total_sequence_length P + S.
 */
export function groupQueryAttentionGraph(heads, kvHeads, scale) {
  return model({
    node: [node('GroupQueryAttention',
      ['q', 'k', 'v', 'past_key', 'past_value', 'seqlens_k', 'total_sequence_length'], ['o', 'present_key', 'present_value'],
      [attrInt('num_heads', heads), attrInt('kv_num_heads', kvHeads), attrFloat('scale', scale)], 'com.microsoft')],
    name: 'gqa',
    input: [
      valueInfo('q', ['B', 'S', 'HD']),
      ...['k', 'v'].map((n) => valueInfo(n, ['B', 'S', 'KD'])),
      ...['past_key', 'past_value'].map((n) => valueInfo(n, ['B', 'KH', 'P', 'D'])),
      valueInfo('seqlens_k', ['B'], INT32),
      valueInfo('total_sequence_length', [], INT32),
    ],
    output: [valueInfo('o', ['B', 'S', 'HD']), ...['present_key', 'present_value'].map((n) => valueInfo(n, ['B', 'KH', 'T', 'D']))],
  }, [['', 17], ['com.microsoft', 1]]);
}
