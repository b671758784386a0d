// maskToSVG: the picture of real masks is well-formed XML whose cells, decoded back, are the mask's
// exactly (causal or not, several heads, batches, non-square grids, q shorter than k), whose title
// gives the head's density, and which stays a few elements however large the mask; bad input is refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createSparge, maskToSVG } from '../dist/src/index.js';
import { maskToSVG as maskToSVGSingle } from '../dist/src/single.js';
import { gaussian, tensor, videoLike, ropeLike, loadCase, rejects } from './helpers.js';

const sparge = await createSparge({ threads: 1, simd: process.env.SPARGE_SIMD ?? 'auto' });
const KINDS = ['kept', 'full', 'skipped', 'outside'];

/** Throws unless xml is one well-formed element: tags nest and close, attributes are quoted and unique, & starts an entity. */
function wellFormed(xml) {
  const token = /<!--[\s\S]*?-->|<\/([A-Za-z][\w:.-]*)\s*>|<([A-Za-z][\w:.-]*)((?:\s+[A-Za-z_:][\w:.-]*\s*=\s*(?:"[^"<]*"|'[^'<]*'))*)\s*(\/?)>|[^<]+/y;
  const badAmp = /&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[\da-fA-F]+);)/;
  const stack = [];
  let roots = 0;
  for (let pos = 0; pos < xml.length; pos = token.lastIndex) {
    token.lastIndex = pos;
    const m = token.exec(xml);
    if (!m) throw new Error(`not well-formed at ${pos}: ${xml.slice(pos, pos + 40)}`);
    const [all, close, open, attrs = '', selfClosing] = m;
    if (close && stack.pop() !== close) throw new Error(`</${close}> closes nothing open at ${pos}`);
    if (open) {
      if (stack.length === 0) roots++;
      const names = [...attrs.matchAll(/([A-Za-z_:][\w:.-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)];
      if (new Set(names.map((a) => a[1])).size !== names.length) throw new Error(`<${open}> repeats an attribute`);
      if (names.some((a) => badAmp.test(a[2] ?? a[3]))) throw new Error(`<${open}> has a bare & in an attribute`);
      if (!selfClosing) stack.push(open);
    }
    if (!close && !open && !all.startsWith('<!--')) {
      if (stack.length === 0 && all.trim()) throw new Error(`text outside the root element at ${pos}`);
      if (badAmp.test(all)) throw new Error(`bare & in text at ${pos}`);
    }
  }
  if (stack.length || roots !== 1) throw new Error(`${stack.length} element(s) left open, ${roots} root element(s)`);
}

/** Subpaths `M x y h n v 1 h -n z` (rows of cells) or `M 0 y h 1 v n h -1 z` (marks down) of a class's path. */
function subpaths(svg, cls, pattern) {
  const m = new RegExp(`<path class="${cls}" fill="[^"]*" d="([^"]*)"/>`).exec(svg);
  if (!m) return [];
  const found = [...m[1].matchAll(pattern)];
  assert.is(found.map((f) => f[0]).join(''), m[1], `${cls}: its path is made of rectangles only`);
  return found.map((f) => f.slice(1).map(Number));
}

/** The picture's cells, back as a grid of kinds, and its marked rows and columns. */
function decode(svg, nq, nk) {
  const grid = Array.from({ length: nq }, () => new Array(nk).fill(null));
  let rects = 0;
  for (const kind of KINDS) {
    for (const [x, y, n] of subpaths(svg, kind, /M(\d+) (\d+)h(\d+)v1h-\3z/g)) {
      rects++;
      for (let j = x; j < x + n; j++) {
        assert.is(grid[y][j], null, `cell ${y}, ${j} drawn twice`);
        grid[y][j] = kind;
      }
    }
  }
  const spread = (runs) => runs.flatMap(([s, n]) => Array.from({ length: n }, (_, i) => s + i));
  const rows = spread(subpaths(svg, 'full-rows', /M0 (\d+)h1v(\d+)h-1z/g));
  const cols = spread(subpaths(svg, 'full-columns', /M(\d+) 0h(\d+)v1h-\2z/g));
  return { grid, rects, rows, cols };
}

/**
 * What the picture must show, from the mask and ALGORITHM.md's causal rule alone: a block is allowed
 * iff its first key is visible to the block's last query; a full row (column) has every allowed
 * block kept, and at least two of them.
 */
function expected(mask, { batch = 0, head = 0, causal = false, Nq, Nk }) {
  const [, H, nq, nk] = mask.dims.length === 3 ? [1, ...mask.dims] : mask.dims;
  const { blockQ: bq, blockK: bk } = mask;
  Nq ??= nq * bq;
  Nk ??= causal ? Nq : nk * bk;
  const ok = (i, j) => !causal || j * bk <= Math.min((i + 1) * bq, Nq) - 1 + Nk - Nq;
  const at = (i, j) => mask.data[((batch * H + head) * nq + i) * nk + j];
  const rowIdx = [...Array(nq).keys()], colIdx = [...Array(nk).keys()];
  const full = (cells) => cells.length >= 2 && cells.every(([i, j]) => at(i, j) === 1);
  const rows = rowIdx.filter((i) => full(colIdx.filter((j) => ok(i, j)).map((j) => [i, j])));
  const cols = colIdx.filter((j) => full(rowIdx.filter((i) => ok(i, j)).map((i) => [i, j])));
  const grid = rowIdx.map((i) => colIdx.map((j) => {
    if (!ok(i, j)) return 'outside';
    if (!at(i, j)) return 'skipped';
    return rows.includes(i) || cols.includes(j) ? 'full' : 'kept';
  }));
  const kept = grid.flat().filter((c) => c === 'kept' || c === 'full').length;
  const allowed = kept + grid.flat().filter((c) => c === 'skipped').length;
  const runs = grid.reduce((n, row) => n + row.filter((c, j) => j === 0 || c !== row[j - 1]).length, 0);
  return { grid, rows, cols, kept, allowed, runs };
}

/** Checks one head's picture against the mask; returns its kept and allowed counts. */
function checkPicture(mask, options, lengths = {}) {
  const svg = maskToSVG(mask, { ...options, ...lengths });
  wellFormed(svg);
  const [nq, nk] = mask.dims.slice(-2);
  const want = expected(mask, { ...options, Nq: lengths.queryLength, Nk: lengths.keyLength });
  const got = decode(svg, nq, nk);
  assert.equal(got.grid, want.grid, `cells of ${JSON.stringify(options)}`);
  assert.equal(got.rows, want.rows, 'full rows marked');
  assert.equal(got.cols, want.cols, 'full columns marked');
  assert.is(got.rects, want.runs, 'one rectangle per run of equal cells in a row');
  const title = /<title>Block mask, head (\d+): density ([\d.]+) \((\d+) of (\d+) allowed blocks kept\)<\/title>/.exec(svg);
  assert.ok(title, 'the title gives the density');
  assert.equal(title.slice(1).map(Number), [options.head ?? 0, +(want.kept / want.allowed).toFixed(3), want.kept, want.allowed]);
  return { ...want, svg };
}

/** Every head of a call's mask; the heads' counts together give the call's sparsity. */
function checkAllHeads(res, options, lengths) {
  const [B, H] = res.mask.dims;
  let kept = 0, allowed = 0, full = 0;
  for (let batch = 0; batch < B; batch++) {
    for (let head = 0; head < H; head++) {
      const p = checkPicture(res.mask, { ...options, head, ...(B > 1 ? { batch } : {}) }, lengths);
      kept += p.kept;
      allowed += p.allowed;
      full += p.rows.length + p.cols.length;
    }
  }
  assert.ok(Math.abs(1 - kept / allowed - res.sparsity) < 1e-12, `densities ${kept}/${allowed} against sparsity ${res.sparsity}`);
  return full;
}

const t3 = (x, H, N, D) => tensor(x, [H, N, D]);

test('non-causal, non-square grid (8 x 16 blocks of 64 x 32), three heads, with forced blocks', async () => {
  const x = videoLike(3, 2, 16, 32, 5);
  const [q, k, v] = [x.q, x.k, x.v].map((a) => t3(a, 3, x.N, 32));
  let full = 0;
  for (const opts of [{ topk: 0.3, simThreshold: 0.6 }, { cdfThreshold: 0.8, simThreshold: 0.3 }, { topk: 0.2 }]) {
    const res = await sparge.attention(q, k, v, { ...opts, blockQ: 64, blockK: 32, returnMask: true });
    assert.equal(res.mask.dims, [1, 3, 8, 16]);
    full += checkAllHeads(res, {});
  }
  assert.ok(full > 0, 'some rows or columns were kept whole');
});

test('causal (6 x 11 blocks of 128 x 64, a partial last block of each), with an attention sink', async () => {
  const x = ropeLike(2, 700, 32, 9);
  const [q, k, v] = [x.q, x.k, x.v].map((a) => t3(a, 2, 700, 32));
  for (const opts of [{ topk: 0.4 }, { cdfThreshold: 0.9, simThreshold: 0.2, attentionSink: true }]) {
    const res = await sparge.attention(q, k, v, { ...opts, causal: true, blockQ: 128, blockK: 64, returnMask: true });
    checkAllHeads(res, { causal: true });
    const { svg } = checkPicture(res.mask, { causal: true });
    assert.match(svg, /outside the causal mask: \d+/);
  }
});

test('causal with q shorter than k (chunked prefill): queryLength and keyLength place the diagonal', async () => {
  const x = ropeLike(2, 700, 32, 3);
  const q = t3(x.q.slice(0, 2 * 200 * 32), 2, 200, 32);
  const [k, v] = [x.k, x.v].map((a) => t3(a, 2, 700, 32));
  const res = await sparge.attention(q, k, v, { causal: true, topk: 0.5, blockQ: 64, blockK: 64, returnMask: true });
  assert.equal(res.mask.dims, [1, 2, 4, 11]);
  checkAllHeads(res, { causal: true }, { queryLength: 200, keyLength: 700 });
  await rejects(() => maskToSVG(res.mask, { causal: true }), RangeError, /cannot come from equal lengths; give options\.queryLength and options\.keyLength/);
});

test('a batch of two: options.batch picks the entry', async () => {
  const dims = [2, 2, 256, 32], n = dims.reduce((a, b) => a * b, 1);
  const [q, k, v] = [1, 2, 3].map((s) => tensor(gaussian(n, s), dims));
  const res = await sparge.attention(q, k, v, { causal: true, topk: 0.3, attentionSink: true, returnMask: true });
  checkAllHeads(res, { causal: true });
  assert.match(maskToSVG(res.mask, { batch: 1, causal: true }), /head 0 of 2, batch 1 of 2/);
});

test('a 64 x 64 mask stays a few elements: one path per kind of cell, scalable and crisp, nothing external', async () => {
  const c = loadCase('video_4x32x32');
  const res = await sparge.attention(c.q, c.k, c.v, { topk: 0.25, blockQ: 64, blockK: 64, returnMask: true });
  assert.equal(res.mask.dims, [1, 2, 64, 64]);
  checkAllHeads(res, {});
  const svg = maskToSVG(res.mask, { head: 1 });
  assert.ok(svg.match(/<[a-z]/g).length < 40, 'elements');
  assert.ok(svg.length < 40000, `${svg.length} characters`);
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" viewBox="0 0 \d+ \d+" width="\d+" height="\d+" shape-rendering="crispEdges"/);
  assert.not.match(svg, /<style|@import|@font-face|url\(|href/);
});

test("a reference case's 3-d mask [H, nq, nk] is read as one batch", () => {
  const c = loadCase('video_4x32x32');
  const cfg = c.configs.find((x) => x.name === 'topk25');
  const mask = { data: cfg.mask, dims: cfg.maskDims.slice(1), blockQ: cfg.blockQ, blockK: cfg.blockK };
  for (const head of [0, 1]) checkPicture(mask, { head });
});

test('the single-thread entry exports the same function', async () => {
  const res = await sparge.predictMask(t3(gaussian(2 * 300 * 16, 4), 2, 300, 16), t3(gaussian(2 * 300 * 16, 5), 2, 300, 16), { causal: true });
  assert.is(maskToSVGSingle(res, { head: 1, causal: true }), maskToSVG(res, { head: 1, causal: true }));
});

test('bad masks and options are refused, naming the argument and what was expected', async () => {
  const mask = { data: new Uint8Array(2 * 3 * 4), dims: [1, 2, 3, 4], blockQ: 64, blockK: 64 };
  const cases = [
    [undefined, {}, TypeError, /^mask must be a BlockMask \{ data: Uint8Array, dims \}, got undefined/],
    [{ ...mask, data: new Float32Array(24) }, {}, TypeError, /^mask\.data must be a Uint8Array, got Float32Array/],
    [{ ...mask, dims: [2, 3, 4, 1, 1] }, {}, RangeError, /^mask\.dims must be 3 or 4 positive integers \[B, H, nq, nk\], got \[2, 3, 4, 1, 1\]/],
    [{ ...mask, dims: [1, 2, 3, 0] }, {}, RangeError, /^mask\.dims must be 3 or 4 positive integers/],
    [{ ...mask, dims: [1, 2, 3, 5] }, {}, RangeError, /^mask\.data has 24 entries, mask\.dims \[1, 2, 3, 5\] need 30/],
    [{ ...mask, data: new Uint8Array(24).fill(2) }, {}, RangeError, /^mask\.data must hold 0 or 1, got 2 at index 0/],
    [{ ...mask, blockQ: 100 }, {}, RangeError, /^mask\.blockQ must be a multiple of 16/],
    [mask, { head: 2 }, RangeError, /^options\.head must be an integer from 0 to 1 \(mask\.dims has 2 heads\), got 2/],
    [mask, { head: 0.5 }, RangeError, /^options\.head must be an integer from 0 to 1/],
    [mask, { head: '1' }, TypeError, /^options\.head must be a number, got string/],
    [mask, { batch: 1 }, RangeError, /^options\.batch must be an integer from 0 to 0 \(mask\.dims has 1 batch entries\), got 1/],
    [mask, { causal: 1 }, TypeError, /^options\.causal must be a boolean, got number/],
    [mask, { heads: 1 }, TypeError, /^options\.heads is not an option here; expected one of head, batch, causal, queryLength, keyLength/],
    [mask, null, TypeError, /^options must be an object, got null/],
    [mask, { queryLength: 192, keyLength: 256 }, TypeError, /^options\.queryLength and options\.keyLength place the causal rule: give them with options\.causal: true/],
    [mask, { causal: true, queryLength: 192 }, TypeError, /^options\.keyLength must be a number \(give options\.queryLength and options\.keyLength together\), got undefined/],
    [mask, { causal: true, queryLength: 100, keyLength: 256 }, RangeError, /^options\.queryLength must be an integer from 129 to 192 \(the mask's 3 blocks of 64 tokens\), got 100/],
  ];
  for (const [m, o, Kind, pattern] of cases) await rejects(() => maskToSVG(m, o), Kind, pattern);
  // Lengths that fit draw the mask.
  wellFormed(maskToSVG(mask, { causal: true, queryLength: 150, keyLength: 256 }));
});

test.after(() => sparge.dispose());
test.run();
