// The runtime-neutral part of reading the reference cases (no node: imports), shared by helpers.js
// and by the cross-runtime checks in test/runtimes/, which also run in Deno, Bun and browser pages.

function f16ToF32(u16) {
  const out = new Float32Array(u16.length);
  for (let i = 0; i < u16.length; i++) {
    const h = u16[i], s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
    out[i] = e === 0 ? s * f * 2 ** -24 : e === 31 ? (f ? NaN : s * Infinity) : s * (1 + f / 1024) * 2 ** (e - 15);
  }
  return out;
}

/** f16 values from a file's bytes; copied first, since a file buffer may start at an odd offset. */
export const f16Bytes = (bytes) => f16ToF32(new Uint16Array(new Uint8Array(bytes).buffer));

export function l1(out, ref) {
  let a = 0, b = 0;
  for (let i = 0; i < ref.length; i++) { a += Math.abs(out[i] - ref[i]); b += Math.abs(ref[i]); }
  return a / b;
}

/** The attention options of config `c` of a case's meta.json. */
export function configOptions(meta, c) {
  return {
    causal: meta.causal,
    simThreshold: c.simth,
    ...(c.cdf !== undefined ? { cdfThreshold: c.cdf } : { topk: c.topk }),
    attentionSink: !!c.sink,
    blockQ: c.BLKQ ?? meta.BLKQ,
    blockK: c.BLKK ?? meta.BLKK,
  };
}
