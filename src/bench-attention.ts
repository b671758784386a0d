// Dense against sparse attention for the bench command (src/cli.ts), run by the engine that
// createSparge's 'auto' settings build here, so that its features say what 'auto' picked and why.
// Inputs are video-like tokens (src/inputs.ts), where sparse attention keeps its accuracy.
import { createSparge, type Features, type Sparge } from './index.js';
import { videoLike } from './inputs.js';
import { type Budget, medianMs } from './timing.js';

export const HEADS = 8, HEAD_DIM = 64;
export const TOPKS = [0.25, 0.1];

export interface AttentionRow {
  N: number;
  variant: string;
  /** median time of one call (B=1, H=8, D=64) */
  ms: number;
  /** dense's time over this variant's */
  speedup: number;
  sparsity: number;
}

export interface AttentionReport {
  threads: number;
  features: Features;
  rows: AttentionRow[];
}

export interface AttentionOptions {
  /** sequence lengths, multiples of 1024 (video-like frames of 32 x 32 tokens) */
  sizes: number[];
  threads: number | 'auto';
  budget: Budget;
  /** called before each size is measured */
  onSize?(N: number): void;
}

export async function measureAttention(o: AttentionOptions): Promise<AttentionReport> {
  const sparge = await createSparge({ threads: o.threads });
  try {
    const rows: AttentionRow[] = [];
    for (const N of o.sizes) {
      o.onSize?.(N);
      rows.push(...await measureSize(sparge, N, o.budget));
    }
    return { threads: sparge.threads, features: sparge.features, rows };
  } finally {
    await sparge.dispose();
  }
}

async function measureSize(sparge: Sparge, N: number, budget: Budget): Promise<AttentionRow[]> {
  const x = videoLike(HEADS, N / 1024, 32, HEAD_DIM, 7);
  const tensor = (data: Float32Array) => ({ data, dims: [1, HEADS, N, HEAD_DIM] });
  const [q, k, v] = [tensor(x.q), tensor(x.k), tensor(x.v)];
  // One output for every call: the times hold no allocation of it.
  const output = new Float32Array(HEADS * N * HEAD_DIM);
  const dense = await medianMs(() => sparge.denseAttention(q, k, v, { output }), budget);
  const rows: AttentionRow[] = [{ N, variant: 'dense FP32', ms: dense, speedup: 1, sparsity: 0 }];
  for (const topk of TOPKS) {
    const { sparsity } = await sparge.attention(q, k, v, { topk, output });
    const ms = await medianMs(() => sparge.attention(q, k, v, { topk, output }), budget);
    rows.push({ N, variant: `sparse, top-k ${topk}`, ms, speedup: dense / ms, sparsity });
  }
  return rows;
}
