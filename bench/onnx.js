// Writes the ONNX attention graphs the benchmarks run in onnxruntime, as protobuf bytes, so
// that no Python or model file is needed: the MatMul-Softmax-MatMul graph that exporters emit
// (also with an additive mask, for causal query chunks), onnxruntime's fused com.microsoft
// MultiHeadAttention operator, and its GroupQueryAttention with a past key/value cache.

const FLOAT = 1, INT32 = 6;

function varint(n) {
  const out = [];
  let v = BigInt.asUintN(64, BigInt(n)); // negative int64 values take ten bytes
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v) byte |= 0x80;
    out.push(byte);
  } while (v);
  return out;
}

const key = (field, wire) => varint((field << 3) | wire);
const int = (field, n) => [...key(field, 0), ...varint(n)];
const bytes = (field, b) => [...key(field, 2), ...varint(b.length), ...b];
const str = (field, s) => bytes(field, [...new TextEncoder().encode(s)]);
const f32 = (field, x) => [...key(field, 5), ...new Uint8Array(new Float32Array([x]).buffer)];

/** ValueInfoProto of a tensor (float unless told); a string dim is symbolic, no dims a scalar. */
function valueInfo(name, dims, elemType = FLOAT) {
  const dim = (d) => bytes(1, typeof d === 'string' ? str(2, d) : int(1, d));
  const shape = dims.flatMap(dim);
  const tensorType = [...int(1, elemType), ...bytes(2, shape)];
  return [...str(1, name), ...bytes(2, bytes(1, tensorType))];
}

function node(op, inputs, outputs, attributes = [], domain = '') {
  return [
    ...inputs.flatMap((i) => str(1, i)), ...outputs.flatMap((o) => str(2, o)), ...str(4, op),
    ...attributes.flatMap((a) => bytes(5, a)), ...(domain ? str(7, domain) : []),
  ];
}

const attrInt = (name, i) => [...str(1, name), ...int(3, i), ...int(20, 2)];
const attrFloat = (name, x) => [...str(1, name), ...f32(2, x), ...int(20, 1)];
const attrInts = (name, list) => [...str(1, name), ...list.flatMap((i) => int(8, i)), ...int(20, 7)];

function scalarInitializer(name, x) {
  return [...int(2, FLOAT), ...bytes(4, [...new Uint8Array(new Float32Array([x]).buffer)]), ...str(8, name)];
}

function model(graph, opsets) {
  return new Uint8Array([
    ...int(1, 8), ...str(2, 'sparge-wasm bench'),
    ...opsets.flatMap(([domain, version]) => bytes(8, [...(domain ? str(1, domain) : []), ...int(2, version)])),
    ...bytes(7, graph),
  ]);
}

/** softmax(q k^T * scale) v over [B, H, N, D] inputs, materializing the N x N scores. */
export function matmulSoftmaxGraph(scale) {
  const dims = ['B', 'H', 'N', 'D'];
  const graph = [
    ...bytes(1, node('Transpose', ['k'], ['kt'], [attrInts('perm', [0, 1, 3, 2])])),
    ...bytes(1, node('MatMul', ['q', 'kt'], ['s'])),
    ...bytes(1, node('Mul', ['s', 'scale'], ['ss'])),
    ...bytes(1, node('Softmax', ['ss'], ['p'], [attrInt('axis', -1)])),
    ...bytes(1, node('MatMul', ['p', 'v'], ['o'])),
    ...str(2, 'attention'),
    ...bytes(5, scalarInitializer('scale', scale)),
    ...['q', 'k', 'v'].flatMap((n) => bytes(11, valueInfo(n, dims))),
    ...bytes(12, valueInfo('o', dims)),
  ];
  return model(graph, [['', 17]]);
}

/** com.microsoft MultiHeadAttention over [B, N, H * D] inputs. */
export function multiHeadAttentionGraph(heads, scale) {
  const dims = ['B', 'N', 'HD'];
  const graph = [
    ...bytes(1, node('MultiHeadAttention', ['q', 'k', 'v'], ['o'],
      [attrInt('num_heads', heads), attrFloat('scale', scale)], 'com.microsoft')),
    ...str(2, 'mha'),
    ...['q', 'k', 'v'].flatMap((n) => bytes(11, valueInfo(n, dims))),
    ...bytes(12, valueInfo('o', dims)),
  ];
  return model(graph, [['', 17], ['com.microsoft', 1]]);
}

/**
 * softmax(q k^T * scale + mask) v: q [B, H, M, D] against k, v [B, H, N, D], mask [M, N] (0 or
 * -Infinity). A grouped-query layer fits as is: its G query heads per key/value head are G * rows
 * query rows of that head, so the keys are not repeated.
 */
export function maskedMatmulSoftmaxGraph(scale) {
  const graph = [
    ...bytes(1, node('Transpose', ['k'], ['kt'], [attrInts('perm', [0, 1, 3, 2])])),
    ...bytes(1, node('MatMul', ['q', 'kt'], ['s'])),
    ...bytes(1, node('Mul', ['s', 'scale'], ['ss'])),
    ...bytes(1, node('Add', ['ss', 'mask'], ['sm'])),
    ...bytes(1, node('Softmax', ['sm'], ['p'], [attrInt('axis', -1)])),
    ...bytes(1, node('MatMul', ['p', 'v'], ['o'])),
    ...str(2, 'masked attention'),
    ...bytes(5, scalarInitializer('scale', scale)),
    ...bytes(11, valueInfo('q', ['B', 'H', 'M', 'D'])),
    ...['k', 'v'].flatMap((n) => bytes(11, valueInfo(n, ['B', 'H', 'N', 'D']))),
    ...bytes(11, valueInfo('mask', ['M', 'N'])),
    ...bytes(12, valueInfo('o', ['B', 'H', 'M', 'D'])),
  ];
  return model(graph, [['', 17]]);
}

/**
 * com.microsoft GroupQueryAttention: S new tokens (q [B, S, H * D], k and v [B, S, Hkv * D]) after
 * past_key and past_value [B, Hkv, P, D], bottom-right causal; present_key and present_value are
 * the past with the new tokens appended. seqlens_k [B] is P + S - 1, total_sequence_length P + S.
 */
export function groupQueryAttentionGraph(heads, kvHeads, scale) {
  const graph = [
    ...bytes(1, node('GroupQueryAttention',
      ['q', 'k', 'v', 'past_key', 'past_value', 'seqlens_k', 'total_sequence_length'], ['o', 'present_key', 'present_value'],
      [attrInt('num_heads', heads), attrInt('kv_num_heads', kvHeads), attrFloat('scale', scale)], 'com.microsoft')),
    ...str(2, 'gqa'),
    ...bytes(11, valueInfo('q', ['B', 'S', 'HD'])),
    ...['k', 'v'].flatMap((n) => bytes(11, valueInfo(n, ['B', 'S', 'KD']))),
    ...['past_key', 'past_value'].flatMap((n) => bytes(11, valueInfo(n, ['B', 'KH', 'P', 'D']))),
    ...bytes(11, valueInfo('seqlens_k', ['B'], INT32)),
    ...bytes(11, valueInfo('total_sequence_length', [], INT32)),
    ...bytes(12, valueInfo('o', ['B', 'S', 'HD'])),
    ...['present_key', 'present_value'].flatMap((n) => bytes(12, valueInfo(n, ['B', 'KH', 'T', 'D']))),
  ];
  return model(graph, [['', 17], ['com.microsoft', 1]]);
}
