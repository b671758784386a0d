// Slots of the parameter block that TypeScript writes into WebAssembly memory before each call.
// Every kernel reads its shapes and buffer offsets from here, so one compiled module can serve
// any number of instances (threads) over the same memory without sharing globals.
// This file is valid both as AssemblyScript and as TypeScript: src/ imports the same enum.
export enum P {
  // shapes
  B, H, HKV, NQ, NK, DP, BQ, BK, NQB, NKB,
  // options (0/1 flags and integers)
  CAUSAL, SINK, CDF_MODE,
  // 1: INT8 QK with the relaxed i8 x i7 dot (relaxed module only), 0: with i32x4.dot_i16x8_s
  QK_MODE,
  // 1: Stage 2 broadcasts Q and P lanes by shuffling a loaded vector, 0: by load32_splat
  SPLAT,
  // 1: K and V live in a KV cache (src/kvcache.ts): KMAX and VMAX come from TypeScript, K is never
  // rescaled, and Stage 1 always keeps the key block holding the newest keys
  CACHED,
  // 1: a KV cache's key blocks are smoothed by its fixed mean (KMEAN)
  SMOOTH,
  // set by input_range: 0 go on, 1 NaN or Infinity in an input, 2 scores beyond float32's range
  STATUS,
  // f32 options (SCALE and QK_MUL as input_range leaves them, see check.ts)
  SCALE, QK_MUL,
  // f64 (two slots each, at even slots, written by TypeScript): scale, and scale * log2(e)
  SCALE64, SCALE64_HI, QK_MUL64, QK_MUL64_HI,
  // set by input_range: max |x| of Q, K and V (f32), powers of two Q and K are multiplied by (i32
  // exponents), and the exponent subtracted from Stage 2's exponentials to keep P.V finite (f32)
  QMAX, KMAX, VMAX, QEXP, KEXP, VSHIFT,
  // byte offsets of the buffers (VH: a KV cache's bfloat16 copy of V, which its sparse steps read; 0 for none)
  Q, K, V, VH, KMEAN, QC, QSCALE, KC, KSCALE, QF, KF, QBAR, QSIM, KBAR, KSIM, MASK, OUT, TILEMAX,
  // key blocks per (batch, kv head) in the K-side buffers: NKB for a call, a KV cache's capacity
  KSTRIDE,
  // split-KV: each query tile's key blocks are cut into SPLITS ranges of SPAN blocks, whose partial
  // outputs, maxima and sums (PART) merge_splits combines; SPLITS = 1 normalizes in place
  SPAN, SPLITS, PART,
  // optional outputs: each row's log-sum-exp (LSE, 0 for none), kept blocks per query tile (KEPT)
  LSE, KEPT,
  // appending to a KV cache: NNEW new rows per kv head at KNEW and VNEW, after LEN0 rows; KPSUM
  // holds per kv head the sums of the keys before each block (KSTRIDE + 1 rows)
  KNEW, VNEW, NNEW, LEN0, KPSUM,
  // G > 1: a one-row step whose G query heads of a kv head are the rows of one Stage 2 tile
  // (tile = (b * HKV + hk) * SPLITS + split), each with its own mask row, Q scale and pvThreshold
  GROUP,
  // 1: Stage 1 ranks key blocks once per kv head for its query heads together (option groupSelection)
  SHARED,
  // per query head: a record of Head.COUNT 4-byte fields (Stage 1 and Stage 2 settings)
  HEADS,
  SCRATCH, SCRATCH_STRIDE,
  COUNT,
}

/** Fields of a query head's record in the HEADS buffer: per-head settings of Stage 1 and Stage 2. */
export enum Head {
  // key blocks to keep (top-k mode, i32), the CDF threshold (f32), simThreshold (f32), pvThreshold
  // (f32), 1 where the head's QK runs in FP32 instead of INT8 (i32)
  NKEEP, CDF, SIM, PV, FP32,
  COUNT,
}
