// What every runtime computes for the cross-runtime checks (Node, Deno, Bun, browser pages): two
// reference cases with 1 and 2 threads, on the baseline build and, where the engine accepts it,
// the relaxed one, reduced to a digest that can be compared bitwise across processes and pages.
import { f16Bytes, l1, configOptions } from '../reference.js';

export const CASES = [['video_4x32x32', 'topk25'], ['stories260K_L2', 'cdf90_sim30']];
const THREADS = [1, 2];

/** FNV-1a over the output's bytes: equal hashes stand for bitwise-equal outputs. */
function fnv1a(f32) {
  const b = new Uint8Array(f32.buffer, f32.byteOffset, f32.byteLength);
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 0x01000193);
  return (h >>> 0).toString(16).padStart(8, '0');
}

/** `read(path)` gives the bytes of a file under the reference folder. */
async function loadCase(read, name, config) {
  const meta = JSON.parse(new TextDecoder().decode(await read(`${name}/meta.json`)));
  const f16 = async (file) => f16Bytes(await read(`${name}/${file}.f16`));
  const tensor = async (file) => ({ data: await f16(file), dims: meta.files[file] });
  return {
    q: await tensor('q'), k: await tensor('k'), v: await tensor('v'),
    options: configOptions(meta, meta.configs.find((c) => c.name === config)),
    reference: await f16(`o_${config}`),
  };
}

async function run(createSparge, c, simd, threads) {
  const s = await createSparge({ threads, simd });
  try {
    const res = await s.attention(c.q, c.k, c.v, c.options);
    const f = s.features;
    return {
      output: res.output.data,
      entry: {
        simd, threadsAsked: threads, threads: s.threads, module: f.module, splat: f.splat, workers: f.workers ?? null,
        threadsReason: f.threadsReason ?? null, hash: fnv1a(res.output.data), head: Array.from(res.output.data.subarray(0, 4)),
        sparsity: res.sparsity, l1VsReference: l1(res.output.data, c.reference),
      },
      relaxedSimd: f.relaxedSimd,
    };
  } finally {
    await s.dispose();
  }
}

function runtime() {
  const g = globalThis;
  if (g.Deno) return `deno ${g.Deno.version.deno}`;
  if (g.Bun) return `bun ${g.Bun.version}`;
  if (g.process?.versions?.node) return `node ${g.process.versions.node}`;
  return g.navigator?.userAgent ?? 'unknown';
}

export async function digest(createSparge, read) {
  const results = [];
  for (const [name, config] of CASES) {
    const c = await loadCase(read, name, config);
    let baseline, relaxedSimd;
    for (const threads of THREADS) {
      const r = await run(createSparge, c, 'baseline', threads);
      baseline ??= r.output;
      relaxedSimd = r.relaxedSimd;
      results.push({ case: `${name}/${config}`, ...r.entry });
    }
    if (!relaxedSimd) continue;
    for (const threads of THREADS) {
      const r = await run(createSparge, c, 'relaxed', threads);
      results.push({ case: `${name}/${config}`, ...r.entry, l1VsBaseline: l1(r.output, baseline) });
    }
  }
  return { runtime: runtime(), crossOriginIsolated: globalThis.crossOriginIsolated ?? null, results };
}
