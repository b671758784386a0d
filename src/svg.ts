// maskToSVG: a block mask as a picture, one head at a time. The output is plain SVG with no fonts,
// CSS or scripts, so it can be written to a file, inlined in a page or put in a README as it is.
import { checkMaskAlone, checkOptions, checkBool, checkBlock, checkIndex } from './checks.js';
import { DEFAULT_BLOCK_Q, DEFAULT_BLOCK_K, allowedBlocks } from './engine.js';
import { dimsOf } from './memory.js';

export interface MaskPictureOptions {
  /** query head to draw (default 0) */
  head?: number;
  /** batch entry to draw (default 0) */
  batch?: number;
  /**
   * Whether the call was causal: a mask does not record it. Blocks the causal rule forbids are
   * drawn apart and count in neither side of the density.
   */
  causal?: boolean;
  /**
   * Token counts of q and k, where they differ (chunked prefill, a KV cache): the causal rule is
   * aligned bottom-right, so it depends on them. Give both or neither; equal lengths are assumed.
   */
  queryLength?: number;
  keyLength?: number;
}

/** What a cell shows; the order is the legend's. */
const CELLS = [
  { name: 'kept', fill: '#2160a8', label: 'kept', note: '' },
  { name: 'full', fill: '#e8731a', label: 'kept, in a full row or column', note: ' (rows and columns marked at the edges)' },
  { name: 'skipped', fill: '#d3dfee', label: 'skipped', note: '' },
  { name: 'outside', fill: '#f4f4f4', label: 'outside the causal mask', note: '' },
] as const;
const KEPT = 0, FULL = 1, SKIPPED = 2, OUTSIDE = 3;

/** px: the grid's longer side, its shorter side at least (a decode step's mask is one row), margins */
const GRID = 640, MIN_SIDE = 96, LEFT = 60, TOP = 64, MARK = 6, GAP = 3, LINE = 18, MIN_WIDTH = 600;

const OPTION_KEYS = ['head', 'batch', 'causal', 'queryLength', 'keyLength'] as const;

/**
 * An SVG document of one head's block mask: query blocks down, key blocks across, each cell drawn
 * with the size of its block in tokens; density = kept / allowed blocks in the title.
 */
export function maskToSVG(mask: unknown, options?: MaskPictureOptions): string {
  const { data, dims: [B, H, nq, nk] } = checkMaskAlone(mask);
  const o = checkOptions(options, OPTION_KEYS);
  const head = checkIndex('head', o.head, H, `mask.dims has ${H} heads`);
  const batch = checkIndex('batch', o.batch, B, `mask.dims has ${B} batch entries`);
  const causal = checkBool('causal', o.causal, false);
  const m = mask as { blockQ?: unknown; blockK?: unknown };
  const bq = checkBlock('mask.blockQ', m.blockQ, DEFAULT_BLOCK_Q), bk = checkBlock('mask.blockK', m.blockK, DEFAULT_BLOCK_K);
  const allowed = allowedPerRow(o, causal, nq, nk, bq, bk);
  const at = (batch * H + head) * nq * nk;
  const grid = classify(data.subarray(at, at + nq * nk), allowed, nk);
  return render(grid, { nq, nk, bq, bk, head, H, batch, B, causal });
}

/** Key blocks each query block may see, by the engine's own causal rule. */
function allowedPerRow(o: Record<string, unknown>, causal: boolean, nq: number, nk: number, bq: number, bk: number): number[] {
  const given = o.queryLength !== undefined || o.keyLength !== undefined;
  if (given && !causal) throw new TypeError('options.queryLength and options.keyLength place the causal rule: give them with options.causal: true');
  const [NQ, NK] = !causal ? [nq * bq, nk * bk] : given
    ? [tokens('queryLength', o.queryLength, nq, bq), tokens('keyLength', o.keyLength, nk, bk)]
    : equalLengths(nq, nk, bq, bk);
  const d = dimsOf(1, 1, 1, NQ, NK, 1, bq, bk);
  return Array.from({ length: nq }, (_, i) => allowedBlocks(d, causal, i));
}

/** A token count that gives `blocks` blocks of `size`. */
function tokens(name: string, x: unknown, blocks: number, size: number): number {
  if (typeof x !== 'number') {
    throw new TypeError(`options.${name} must be a number (give options.queryLength and options.keyLength together), got ${x === null ? 'null' : typeof x}`);
  }
  if (!Number.isInteger(x) || Math.ceil(x / size) !== blocks || x < 1) {
    throw new RangeError(`options.${name} must be an integer from ${(blocks - 1) * size + 1} to ${blocks * size} (the mask's ${blocks} blocks of ${size} tokens), got ${x}`);
  }
  return x;
}

/**
 * Equal lengths fit for these block counts. With Nq = Nk the causal rule does not depend on which:
 * every query block but the last ends at a multiple of blockQ, and the last sees every key block.
 */
function equalLengths(nq: number, nk: number, bq: number, bk: number): [number, number] {
  const n = Math.min(nq * bq, nk * bk);
  if (n <= Math.max((nq - 1) * bq, (nk - 1) * bk)) {
    throw new RangeError(`mask.dims: ${nq} query blocks of ${bq} tokens and ${nk} key blocks of ${bk} cannot come from equal lengths; ` +
      'give options.queryLength and options.keyLength');
  }
  return [n, n];
}

interface Grid {
  cells: Uint8Array;
  fullRows: boolean[];
  fullCols: boolean[];
  counts: number[];
}

/**
 * Each cell's kind. The mask does not record which blocks the self-similarity rule forced, and
 * computing it again would need q and k; what it forces shows as rows and columns kept whole, so
 * those are what is marked, under that name (attention sinks and settings that keep every block
 * make them too). A row or column with one allowed block is kept whole by any rule and is not marked.
 * Blocks set outside the causal mask are drawn outside it: the kernels never read them.
 */
function classify(mask: Uint8Array, allowed: number[], nk: number): Grid {
  const nq = allowed.length;
  const kept = (i: number, j: number) => j < allowed[i] && mask[i * nk + j] === 1;
  const fullRows = allowed.map((n, i) => n >= 2 && mask.subarray(i * nk, i * nk + n).every((x) => x === 1));
  const fullCols = Array.from({ length: nk }, (_, j) => {
    const rows = allowed.flatMap((n, i) => (j < n ? [i] : []));
    return rows.length >= 2 && rows.every((i) => kept(i, j));
  });
  const cells = new Uint8Array(nq * nk), counts = [0, 0, 0, 0];
  for (let i = 0; i < nq; i++) {
    for (let j = 0; j < nk; j++) {
      const c = j >= allowed[i] ? OUTSIDE : !kept(i, j) ? SKIPPED : fullRows[i] || fullCols[j] ? FULL : KEPT;
      cells[i * nk + j] = c;
      counts[c]++;
    }
  }
  return { cells, fullRows, fullCols, counts };
}

/** Runs of equal values in values[from, to): [start, length, value], start counted from `from`. */
function runs(values: ArrayLike<number>, from = 0, to = values.length): [number, number, number][] {
  const out: [number, number, number][] = [];
  for (let s = from; s < to;) {
    let e = s + 1;
    while (e < to && values[e] === values[s]) e++;
    out.push([s - from, e - s, values[s]]);
    s = e;
  }
  return out;
}

/** One path per kind, a rectangle per run of a row, in cell units: small for any mask. */
function cellPaths(g: Grid, nq: number, nk: number): string[] {
  const d = CELLS.map(() => [] as string[]);
  for (let i = 0; i < nq; i++) {
    for (const [j, n, c] of runs(g.cells, i * nk, (i + 1) * nk)) d[c].push(`M${j} ${i}h${n}v1h-${n}z`);
  }
  return CELLS.flatMap((c, k) => (d[k].length ? [`<path class="${c.name}" fill="${c.fill}" d="${d[k].join('')}"/>`] : []));
}

/** Marks beside full rows (down) or above full columns (across), one rectangle per run. */
function marks(name: string, full: boolean[], down: boolean): string {
  const d = runs(full.map(Number)).filter(([, , v]) => v === 1)
    .map(([s, n]) => (down ? `M0 ${s}h1v${n}h-1z` : `M${s} 0h${n}v1h-${n}z`));
  return d.length ? `<path class="${name}" fill="${CELLS[FULL].fill}" d="${d.join('')}"/>` : '';
}

/** Coordinates to two decimals: enough for any screen, and short. */
const r2 = (x: number) => Math.round(x * 100) / 100;

interface Shape {
  nq: number; nk: number; bq: number; bk: number;
  head: number; H: number; batch: number; B: number; causal: boolean;
}

/** Cell sizes in px, proportional to the blocks' token counts so a causal mask shows its true slope. */
function cellSize(s: Shape): [number, number] {
  const px = GRID / Math.max(s.nq * s.bq, s.nk * s.bk);
  return [r2(Math.max(px * s.bk, MIN_SIDE / s.nk)), r2(Math.max(px * s.bq, MIN_SIDE / s.nq))];
}

function titleOf(g: Grid, s: Shape): string {
  const kept = g.counts[KEPT] + g.counts[FULL], allowed = kept + g.counts[SKIPPED];
  const density = allowed ? (kept / allowed).toFixed(3) : 'n/a';
  return `Block mask, head ${s.head}: density ${density} (${kept} of ${allowed} allowed blocks kept)`;
}

function render(g: Grid, s: Shape): string {
  const [cw, ch] = cellSize(s);
  const gw = r2(s.nk * cw), gh = r2(s.nq * ch);
  const legend = CELLS.flatMap((c, k) => (k === OUTSIDE && !s.causal ? [] : [{ ...c, n: g.counts[k] }]));
  const W = Math.ceil(Math.max(LEFT + gw + 16, MIN_WIDTH)), H = Math.ceil(TOP + gh + 44 + legend.length * LINE);
  const title = titleOf(g, s);
  const where = `head ${s.head} of ${s.H}${s.B > 1 ? `, batch ${s.batch} of ${s.B}` : ''}; ${s.nq} × ${s.nk} blocks of ${s.bq} × ${s.bk} tokens${s.causal ? '; causal' : ''}`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" shape-rendering="crispEdges" font-family="sans-serif" font-size="12">`,
    `<title>${title}</title>`,
    '<desc>Block mask of one head: query blocks down, key blocks across. A full row (column) is one whose every allowed block is kept; ' +
      'the self-similarity rule forces such rows and columns, and so do attention sinks and settings that keep every block.</desc>',
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="12" y="22" font-size="14" font-weight="bold">${title}</text>`,
    `<text x="12" y="40" fill="#444">${where}</text>`,
    `<g transform="translate(${LEFT} ${TOP}) scale(${cw} ${ch})">`, ...cellPaths(g, s.nq, s.nk), '</g>',
    `<g transform="translate(${LEFT - GAP - MARK} ${TOP}) scale(${MARK} ${ch})">${marks('full-rows', g.fullRows, true)}</g>`,
    `<g transform="translate(${LEFT} ${TOP - GAP - MARK}) scale(${cw} ${MARK})">${marks('full-columns', g.fullCols, false)}</g>`,
    `<rect x="${LEFT}" y="${TOP}" width="${gw}" height="${gh}" fill="none" stroke="#888"/>`,
    ...axes(s, cw, ch, gw, gh),
    ...legend.map((c, k) => swatch(c, TOP + gh + 36 + k * LINE)),
    '</svg>',
  ].join('\n') + '\n';
}

function swatch(c: { fill: string; label: string; note: string; n: number }, y: number): string {
  return `<rect x="${LEFT}" y="${r2(y)}" width="12" height="12" fill="${c.fill}" stroke="#888"/><text x="${LEFT + 18}" y="${r2(y + 10)}">${c.label}: ${c.n}${c.note}</text>`;
}

/** The axes' names and the numbers of their first and last blocks. */
function axes(s: Shape, cw: number, ch: number, gw: number, gh: number): string[] {
  const text = (x: number, y: number, anchor: string, t: string | number) => `<text x="${r2(x)}" y="${r2(y)}" text-anchor="${anchor}">${t}</text>`;
  const ends = (n: number) => (n > 1 ? [0, n - 1] : [0]);
  const below = TOP + gh + 14;
  return [
    ...ends(s.nq).map((i) => text(LEFT - MARK - 2 * GAP, TOP + (i + 0.5) * ch + 4, 'end', i)),
    ...ends(s.nk).map((j) => text(LEFT + (j + 0.5) * cw, below, 'middle', j)),
    text(LEFT + gw / 2, below + 14, 'middle', 'key blocks'),
    `<text transform="translate(14 ${r2(TOP + gh / 2)}) rotate(-90)" text-anchor="middle">query blocks</text>`,
  ];
}
