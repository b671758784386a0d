// A small SVG line chart for the benchmark results: series of [x, y] points, optional log axes,
// a legend. No dependencies, so the plots can be regenerated anywhere the benchmark runs.

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf', '#000000'];
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');

function ticks(lo, hi, log) {
  if (log) {
    const out = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      for (const m of [1, 2, 5]) {
        const v = m * 10 ** e;
        if (v >= lo && v <= hi) out.push(v);
      }
    }
    return out;
  }
  const step = 10 ** Math.floor(Math.log10((hi - lo) / 4 || 1));
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) out.push(+v.toPrecision(6));
  return out;
}

export function lineChart({ title, xLabel, yLabel, series, logX = false, logY = false, width = 760, height = 440 }) {
  const pts = series.flatMap((s) => s.points);
  const [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  const [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  const m = { l: 70, r: 250, t: 40, b: 50 };
  const f = (v, lo, hi, log) => (log ? (Math.log(v) - Math.log(lo)) / (Math.log(hi) - Math.log(lo) || 1) : (v - lo) / (hi - lo || 1));
  const X = (v) => m.l + f(v, x0, x1, logX) * (width - m.l - m.r);
  const Y = (v) => height - m.b - f(v, y0, y1, logY) * (height - m.t - m.b);
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2 - m.r / 2}" y="22" text-anchor="middle" font-size="14">${esc(title)}</text>`];
  for (const t of ticks(x0, x1, logX)) {
    out.push(`<line x1="${X(t)}" x2="${X(t)}" y1="${m.t}" y2="${height - m.b}" stroke="#eee"/>`,
      `<text x="${X(t)}" y="${height - m.b + 16}" text-anchor="middle">${t}</text>`);
  }
  for (const t of ticks(y0, y1, logY)) {
    out.push(`<line x1="${m.l}" x2="${width - m.r}" y1="${Y(t)}" y2="${Y(t)}" stroke="#eee"/>`,
      `<text x="${m.l - 6}" y="${Y(t) + 4}" text-anchor="end">${t}</text>`);
  }
  out.push(`<rect x="${m.l}" y="${m.t}" width="${width - m.l - m.r}" height="${height - m.t - m.b}" fill="none" stroke="#888"/>`,
    `<text x="${m.l + (width - m.l - m.r) / 2}" y="${height - 12}" text-anchor="middle">${esc(xLabel)}</text>`,
    `<text transform="translate(16 ${m.t + (height - m.t - m.b) / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`);
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    const sorted = [...s.points].sort((a, b) => a[0] - b[0]);
    if (s.dots) for (const [x, y] of sorted) out.push(`<circle cx="${X(x)}" cy="${Y(y)}" r="3.5" fill="${c}"/>`);
    else out.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${sorted.map(([x, y]) => `${X(x)},${Y(y)}`).join(' ')}"/>`);
    const ly = m.t + 10 + i * 18;
    out.push(`<rect x="${width - m.r + 12}" y="${ly - 8}" width="14" height="4" fill="${c}"/>`,
      `<text x="${width - m.r + 32}" y="${ly - 2}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}
