// Register-resident peaks and kernel rates, for the bench command (src/cli.ts) and bench/micro.js:
// the Stage 2 microkernels over L1-resident tiles and Stages 0 and 1 over a whole problem, beside
// loops of the kernels' instructions that keep their data in registers (assembly/bench.ts, built
// into build/bench.<module>.wasm), measured in the same run. Gop/s counts a multiply-add as 2 ops;
// exp2 and the stages count one op per value.
import { readFile } from 'node:fs/promises';
import process from 'node:process';
import { dimsOf, paramViews, plan, writeParams } from './memory.js';
import { P, Head } from '../assembly/params.js';
import { rng } from './inputs.js';
import { isNode } from './node.js';
import { type Budget, medianMs } from './timing.js';

export type BenchModule = 'baseline' | 'relaxed';

export interface KernelRow {
  module: BenchModule;
  /** a register-resident loop, a Stage 2 microkernel tile, or a whole stage */
  kind: 'peak' | 'tile' | 'stage';
  name: string;
  /** median time of one call */
  ms: number;
  gops: number;
  /** the peak row whose instruction mix this kernel runs */
  peak?: string;
  percentOfPeak?: number;
}

export interface KernelOptions {
  budget: Budget;
  /** only the rows whose names contain one of these words */
  filter?: string[];
  /** called before each row is measured */
  onRow?(name: string, index: number, count: number): void;
}

type Exports = Record<string, (...args: number[]) => number>;

interface Task {
  kind: KernelRow['kind'];
  name: string;
  ops: number;
  run(): void;
  peak?: string;
}

const PEAK_ITERS = 200000, TILE_ITERS = 2000;
/** The tiles' operands lie below this, the stages' problem above it. */
const TILES_END = 1 << 20;
const I16_MIX = 'i32x4.dot_i16x8_s + add (i16 QK mix)', RELAXED_WIDEN = 'i16x8.relaxed_dot + widen', RELAXED_MIX = 'relaxed QK mix (2 dots per 16 MACs)';
const EXP2 = 'exp2';
/** The multiply-add the FP32 kernels use: fused only in the relaxed module. */
const f32Peak = (module: BenchModule) => (module === 'relaxed' ? 'f32 relaxed_madd (FMA)' : 'f32 mul + add');

/** The JavaScript runtime and its version. */
export function runtimeName(): string {
  const g = globalThis as { Deno?: { version: { deno: string } }; Bun?: { version: string } };
  if (g.Deno) return `deno ${g.Deno.version.deno}`;
  if (g.Bun) return `bun ${g.Bun.version}`;
  return `node ${process.version}`;
}

/** Whether this engine runs the given build of the benchmark kernels. */
export async function benchModuleValid(module: BenchModule): Promise<boolean> {
  return WebAssembly.validate(await benchBytes(module));
}

/**
 * Whether this process can run the relaxed build: 'native', or 'flag' where the engine has relaxed
 * SIMD behind a V8 flag (Node 20 and 21), which this turns on for the modules compiled after it.
 */
export async function allowRelaxedSimd(): Promise<'native' | 'flag' | undefined> {
  if (await benchModuleValid('relaxed')) return 'native';
  if (!isNode()) return undefined;
  const v8 = await import('node:v8');
  v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
  return (await benchModuleValid('relaxed')) ? 'flag' : undefined;
}

async function benchBytes(module: BenchModule): Promise<BufferSource> {
  return new Uint8Array(await readFile(new URL(`../../build/bench.${module}.wasm`, import.meta.url)));
}

/** Every row of one module, measured in order; each kernel with its share of its peak. */
export async function measureKernels(module: BenchModule, o: KernelOptions): Promise<KernelRow[]> {
  const memory = new WebAssembly.Memory({ initial: 2048 });
  const { instance } = await WebAssembly.instantiate(await benchBytes(module), { env: { memory } });
  const k = instance.exports as Exports;
  const all = [...peakTasks(k, module), ...tileTasks(k, module, memory), ...stageTasks(k, memory)];
  const tasks = all.filter((t) => !o.filter || o.filter.some((w) => t.name.includes(w)));
  const rows: KernelRow[] = [];
  for (const [i, t] of tasks.entries()) {
    o.onRow?.(t.name, i, tasks.length);
    const ms = await medianMs(t.run, o.budget);
    rows.push({ module, kind: t.kind, name: t.name, ms, gops: t.ops / ms / 1e6, peak: t.peak });
  }
  const widen = rows.find((r) => r.name === RELAXED_WIDEN);
  // The relaxed QK kernel spends two of those dots on 16 MACs (Q's codes split into q+ and q- in
  // [0, 127]), so the peak of its mix is half that loop's rate.
  if (widen) rows.push({ ...widen, name: RELAXED_MIX, gops: widen.gops / 2 });
  for (const r of rows) {
    const peak = rows.find((p) => p.kind === 'peak' && p.name === r.peak);
    if (peak) r.percentOfPeak = (100 * r.gops) / peak.gops;
  }
  return rows;
}

function peakTasks(k: Exports, module: BenchModule): Task[] {
  const peak = (name: string, opsPerIter: number, fn: string, seed: number): Task =>
    ({ kind: 'peak', name, ops: opsPerIter * PEAK_ITERS, run: () => k[fn](PEAK_ITERS, seed) });
  const relaxed = module === 'relaxed';
  return [
    peak('f32 mul + add', 2 * 48, 'peak_f32_muladd', 0.5),
    ...(relaxed ? [peak(f32Peak(module), 2 * 48, 'peak_f32_madd', 0.5)] : []),
    peak('i8 extend + i32x4.dot_i16x8_s', 2 * 128, 'peak_i8_extend_dot', 3),
    peak(I16_MIX, 2 * 64, 'peak_i16_dot', 3),
    ...(relaxed ? [
      peak('i32x4.relaxed_dot_i8x16_i7x16_add_s', 2 * 128, 'peak_relaxed_dot_add', 3),
      peak(RELAXED_WIDEN, 2 * 128, 'peak_relaxed_dot_i16', 3),
    ] : []),
    peak(EXP2, 32, 'peak_exp2', 0.5),
  ];
}

/** Microkernel tiles at D = 64: 4 query rows against a 64-key block, 4 * 64 * 64 MACs a pass. */
function tileTasks(k: Exports, module: BenchModule, memory: WebAssembly.Memory): Task[] {
  const DP = 64, BK = 64, MACS = 4 * BK * DP, tileOps = 2 * MACS * TILE_ITERS;
  const Q = 65536, KB = Q + 4096, S = KB + 16384, O = S + 4096, V = O + 4096, ALPHA = V + 32768, X = ALPHA + 64;
  const QF = X + 4096, KF = QF + 4 * DP * 4;
  const r = rng(1);
  const i8 = new Int8Array(memory.buffer), u8 = new Uint8Array(memory.buffer), f32 = new Float32Array(memory.buffer);
  const fill = (at: number, n: number, f: () => number, to: Int8Array | Uint8Array | Float32Array) => {
    for (let i = 0; i < n; i++) to[at + i] = f();
  };
  // Q bytes in [0, 127], valid for both INT8 paths (low and high bytes of i16 codes, or the
  // relaxed dot's q+ and q- parts); K codes in [-127, 127].
  fill(Q, 4 * DP * 2, () => Math.floor(r() * 128), u8);
  fill(KB, BK * DP, () => Math.round(r() * 254 - 127), i8);
  fill(V >> 2, BK * DP, () => r() - 0.5, f32);
  fill(S >> 2, 4 * BK, r, f32);
  fill(ALPHA >> 2, 4, () => 0.5, f32);
  fill(X >> 2, 1024, () => -20 * r(), f32);
  fill(QF >> 2, 4 * DP + BK * DP, () => r() - 0.5, f32);

  const tasks: Task[] = [];
  // Each kernel in both broadcast variants (P.SPLAT); the engine picks one per runtime.
  for (const [splat, shuf] of [['load', 0], ['shuffle', 1]] as const) {
    const tile = (name: string, peak: string, run: () => void): Task => ({ kind: 'tile', name: `${name}, splat by ${splat}`, ops: tileOps, peak, run });
    tasks.push(tile('QK INT8, i16 dot', I16_MIX, () => k.bench_qk_i16(Q, KB, DP, BK, S, TILE_ITERS, shuf)));
    if (module === 'relaxed') {
      tasks.push(tile('QK INT8, relaxed dot', RELAXED_MIX, () => k.bench_qk_relaxed(Q, KB, DP, BK, S, TILE_ITERS, shuf)));
    }
    tasks.push(tile('QK FP32 (dense)', f32Peak(module), () => k.bench_qk_f32(QF, KF, DP, BK, S, TILE_ITERS, shuf)));
    tasks.push(tile('P.V', f32Peak(module), () => k.bench_pv(O, S, V, DP, BK, ALPHA, TILE_ITERS, shuf)));
  }
  tasks.push({ kind: 'tile', name: 'exp2 over 1024 values', ops: 1024 * TILE_ITERS, peak: EXP2, run: () => k.bench_exp2(X, 1024, TILE_ITERS) });
  return tasks;
}

/** Stages 0 and 1 on a real problem: B=1, H=8, N=4096, D=64, blocks 128 x 64, top-k 16 of 64 key blocks. */
function stageTasks(k: Exports, memory: WebAssembly.Memory): Task[] {
  const H = 8, N = 4096, D = 64;
  const d = dimsOf(1, H, H, N, N, D, 128, 64);
  const p = plan(d, 'sparse', 1, k.attention_scratch_bytes(d.BQ, d.BK, d.DP), { base: TILES_END });
  memory.grow(Math.max(0, Math.ceil(p.end / 65536) - memory.buffer.byteLength / 65536));
  writeParams(paramViews(memory.buffer), p, d, false, 1 / 8);
  const f32 = new Float32Array(memory.buffer), r = rng(2), elems = H * N * D;
  for (const slot of [P.Q, P.K, P.V]) {
    const at = p.at[slot]! >> 2;
    for (let i = 0; i < elems; i++) f32[at + i] = Math.sin(i * 0.001 + (i % 64)) + 0.1 * (r() - 0.5);
  }
  // simThreshold and pvThreshold stay 0.
  const heads = new Int32Array(memory.buffer, p.at[P.HEADS], H * Head.COUNT);
  for (let h = 0; h < H; h++) heads[h * Head.COUNT + Head.NKEEP] = 16;
  // One tile per kernel call, as the engine's calling-thread path runs them, without its promise.
  const stage = (name: string, fn: string, tiles: number, ops = elems): Task => ({
    kind: 'stage', name, ops,
    run: () => {
      for (let t = 0; t < tiles; t++) k[fn](p.params, t, t + 1, 0);
    },
  });
  return [
    stage('stage 0: K mean', 'k_mean', H),
    stage('stage 0: quantize Q (per block INT8)', 'quantize_q', H * d.NQB),
    stage('stage 0: quantize K (smoothed, packed)', 'quantize_k', H * d.NKB),
    stage('stage 1: pool + self-similarity of Q', 'pool_q', H * d.NQB),
    stage('stage 1: pool + self-similarity of K', 'pool_k', H * d.NKB),
    stage('stage 1: scores, softmax, top-k', 'predict', H * d.NQB, H * d.NQB * d.NKB),
  ];
}
