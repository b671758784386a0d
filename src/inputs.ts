// Deterministic synthetic inputs, shipped for the bench command (src/cli.ts) and shared with the
// tests and benchmarks (test/helpers.js re-exports them), so every measurement sees the same tokens.

/** Seeded uniform [0, 1) generator (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function gaussian(n: number, seed: number, sigma = 1): Float32Array {
  const r = rng(seed), out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(r(), 1e-12), v = r();
    const m = sigma * Math.sqrt(-2 * Math.log(u));
    out[i] = m * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = m * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/**
 * Video-like tokens: a frames x side x side grid (side: a number, or [height, width]) in raster
 * order, whose features vary smoothly in space and time, plus noise, so attention is local and
 * most key blocks are negligible (as in video diffusion).
 */
export function videoLike(H: number, frames: number, side: number | readonly [number, number], D: number, seed: number, noise = 0.3) {
  const [height, width] = typeof side === 'number' ? [side, side] : side;
  const N = frames * height * width, r = rng(seed);
  // q and k share the positional features, so a token attends to its space-time neighbours.
  const freq = Array.from({ length: H * D }, () => [r() * 0.5, r() * 0.5, r() * 0.3, r() * 6.28]);
  const make = (salt: number) => {
    const out = new Float32Array(H * N * D);
    const g = gaussian(H * N * D, seed * 7 + salt, noise);
    for (let h = 0; h < H; h++) {
      for (let n = 0; n < N; n++) {
        const f = Math.floor(n / (height * width)), y = Math.floor(n / width) % height, x = n % width;
        for (let d = 0; d < D; d++) {
          const [a, b, c, ph] = freq[h * D + d];
          out[(h * N + n) * D + d] = 2 * Math.sin(a * x + b * y + c * f + ph) + g[(h * N + n) * D + d];
        }
      }
    }
    return out;
  };
  return { q: make(1), k: make(2), v: gaussian(H * N * D, seed + 99), N };
}
