// Token orders for image and video grids. Stage 1 keeps or skips whole blocks of consecutive tokens
// and judges a block by its mean and self-similarity, which work best when a block's tokens lie
// close together. In raster order a block is a strip of rows whose ends are far apart; along a
// Hilbert curve it is a compact patch (for video, a compact space-time box). Grids of any size take
// the generalized curve of Jakub Červený's "gilbert": a box is walked from one corner to the next
// corner along its major axis by splitting it into sub-boxes that are walked the same way.
import { type Layout, type TensorLike, checkLayout, checkPerm, checkTensor } from './checks.js';
import type { Tensor } from './engine.js';

export interface TokenOrder {
  /** the grid as given: [height, width] or [frames, height, width] */
  shape: number[];
  /** perm[i]: the raster index of the token at curve position i */
  perm: Uint32Array;
  /** inverse[raster index]: that token's curve position */
  inverse: Uint32Array;
}

/** A grid vector (frame, row, column); an axis of a box is a vector along one grid axis. */
type Vec = readonly [number, number, number];
type Visit = (p: Vec) => void;

const length = (a: Vec) => Math.abs(a[0] + a[1] + a[2]);
const unit = (a: Vec): Vec => [Math.sign(a[0]), Math.sign(a[1]), Math.sign(a[2])];
const scaled = (a: Vec, s: number): Vec => [a[0] * s, a[1] * s, a[2] * s];
const plus = (...vs: Vec[]): Vec => [vs.reduce((s, v) => s + v[0], 0), vs.reduce((s, v) => s + v[1], 0), vs.reduce((s, v) => s + v[2], 0)];
const minus = (a: Vec, b: Vec): Vec => plus(a, scaled(b, -1));
const odd = (n: number) => n % 2 === 1;

// Parity decides whether a box's walk can use unit steps only. Colour the cells like a chessboard:
// unit steps alternate colours, and the walk's ends (a corner and the next one along an axis of
// length n) differ in colour when n is even. So a box needs an even major axis, or an odd number of
// cells (every length odd). The splits below choose the halves' parities so that every sub-box
// keeps that property, and the top level picks an even major axis when the grid has an even number
// of cells: then every step is to a grid neighbour (the tests check many sizes).

/** The first part of axis a when it is split near its middle, of the given parity where a's length allows. */
function half(a: Vec, wantOdd: boolean): Vec {
  const n = length(a);
  let h = Math.floor(n / 2);
  if (odd(h) !== wantOdd) h += h + 1 < n ? 1 : h > 1 ? -1 : 0;
  return scaled(unit(a), h);
}

function line(p: Vec, a: Vec, visit: Visit): void {
  const u = unit(a);
  for (let i = 0, n = length(a); i < n; i++) visit(plus(p, scaled(u, i)));
}

/** Walks the box at corner p with axes a (major), b, c, from p to the corner p + a - unit(a). */
function walk(p: Vec, a: Vec, b: Vec, c: Vec, visit: Visit): void {
  const w = length(a), h = length(b), d = length(c);
  if (h === 1 && d === 1) return line(p, a, visit);
  if (w === 1 && d === 1) return line(p, b, visit);
  if (w === 1 && h === 1) return line(p, c, visit);
  if (2 * w > 3 * h && 2 * w > 3 * d) {
    // Long: two boxes one after the other along a.
    const a2 = half(a, false);
    walk(p, a2, b, c, visit);
    walk(plus(p, a2), minus(a, a2), b, c, visit);
  } else if (3 * h > 4 * d || (odd(w) && h >= d)) {
    // The proportions are gilbert's. An odd major axis always turns: a five-box split of it cannot
    // give every sub-box a good parity.
    turn(p, a, b, c, visit);
  } else if (3 * d > 4 * h || odd(w)) {
    turn(p, a, c, b, visit);
  } else {
    split(p, a, b, c, visit);
  }
}

/** A U in the plane of a and b, c kept whole: up b's first part, along all of a, back down on a's far part. */
function turn(p: Vec, a: Vec, b: Vec, c: Vec, visit: Visit): void {
  // The legs' major axis is b's first part: even, unless b is 2 long; then the legs are one cell
  // thick and need every side odd (a2, and a's rest, since a is even here).
  const thin = length(b) === 2;
  const a2 = half(a, thin), b2 = half(b, thin);
  walk(p, b2, a2, c, visit);
  walk(plus(p, b2), a, minus(b, b2), c, visit);
  walk(plus(p, minus(a, unit(a)), minus(b2, unit(b))), scaled(b2, -1), minus(a2, a), c, visit);
}

/**
 * All three axes split, in five boxes (coordinates along a, b, c): [0, a2) x [0, b2) x [0, c2) up b;
 * [0, a2) x [b2, h) x all of c up c; all of a x [0, b2) x [c2, d) along a; [a2, w) x [b2, h) x all
 * of c down c; [a2, w) x [0, b2) x [0, c2) back down b. Only an even major axis comes here (an odd
 * one takes a turn, which keeps the parities right).
 */
function split(p: Vec, a: Vec, b: Vec, c: Vec, visit: Visit): void {
  const h = length(b), d = length(c);
  // The columns' major axis is c: with d odd they need a2 and the rest of b odd; with b even as
  // well, that takes b2 odd (as does b 2 long), and then the corner boxes (major b2) need every
  // half odd.
  const allOdd = h === 2 || (odd(d) && !odd(h));
  const a2 = half(a, allOdd || odd(d)), b2 = half(b, allOdd), c2 = half(c, allOdd);
  const ua = unit(a), ub = unit(b), uc = unit(c);
  walk(p, b2, c2, a2, visit);
  walk(plus(p, b2), c, a2, minus(b, b2), visit);
  walk(plus(p, minus(b2, ub), minus(c, uc)), a, scaled(b2, -1), minus(c2, c), visit);
  walk(plus(p, minus(a, ua), b2, minus(c, uc)), scaled(c, -1), minus(a2, a), minus(b, b2), visit);
  walk(plus(p, minus(a, ua), minus(b2, ub)), scaled(b2, -1), c2, minus(a2, a), visit);
}

/** The grid's axes, major first: the longest, or the longest even one when the cell count is even. */
function axes(frames: number, height: number, width: number): [Vec, Vec, Vec] {
  const all: Vec[] = [[0, 0, width], [0, height, 0], [frames, 0, 0]];
  all.sort((u, v) => length(v) - length(u));
  const even = all.findIndex((v) => !odd(length(v)));
  const major = even >= 0 && odd(length(all[0])) ? even : 0;
  return [all[major], ...all.filter((_, i) => i !== major)] as [Vec, Vec, Vec];
}

function checkShape(shape: unknown): number[] {
  if (!Array.isArray(shape)) throw new TypeError(`shape must be an array [height, width] or [frames, height, width], got ${shape === null ? 'null' : typeof shape}`);
  if (shape.length !== 2 && shape.length !== 3) {
    throw new RangeError(`shape must have 2 entries [height, width] or 3 [frames, height, width], got [${shape.join(', ')}]`);
  }
  if (shape.some((n) => !Number.isInteger(n) || n < 1)) throw new RangeError(`shape must hold positive integers, got [${shape.join(', ')}]`);
  return shape as number[];
}

/** The generalized Hilbert curve over a 2-d or 3-d grid of any size; raster index = (f * height + y) * width + x. */
export function hilbertOrder(shape: readonly number[]): TokenOrder {
  const given = checkShape(shape);
  const [frames, height, width] = given.length === 3 ? given : [1, ...given];
  const perm = new Uint32Array(frames * height * width);
  let i = 0;
  walk([0, 0, 0], ...axes(frames, height, width), (p) => {
    perm[i++] = (p[0] * height + p[1]) * width + p[2];
  });
  const inverse = new Uint32Array(perm.length);
  for (let j = 0; j < perm.length; j++) inverse[perm[j]] = j;
  return { shape: [...given], perm, inverse };
}

/**
 * A copy of tensor with its token axis permuted: row i is the input's row perm[i]. With an order's
 * perm it takes raster order to curve order; with its inverse, back.
 */
export function permuteTokens(tensor: TensorLike, perm: ArrayLike<number>, layout: Layout = 'HND'): Tensor {
  const lay = checkLayout(layout, 'layout');
  const { B, H, N, D } = checkTensor('tensor', tensor, lay);
  const p = checkPerm('perm', perm, N);
  // A token's row: D channels of one head (HND), or all heads' (NHD), N of them per run.
  const runs = lay === 'HND' ? B * H : B, row = lay === 'HND' ? D : H * D;
  const src = tensor.data, out = new Float32Array(src.length);
  for (let r = 0; r < runs; r++) {
    const base = r * N * row;
    for (let i = 0; i < N; i++) out.set(src.subarray(base + p[i] * row, base + (p[i] + 1) * row), base + i * row);
  }
  return { data: out, dims: [...tensor.dims] };
}
