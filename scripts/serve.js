// A static server for the browser demo (demo/index.html) and the browser test: serves the
// repository on loopback with the two headers that make a page cross-origin isolated, which is what
// gives it SharedArrayBuffer and so threads (Web Workers over one shared WebAssembly memory).
//   npm run serve                       http://127.0.0.1:8080/demo/
//   node scripts/serve.js --port 9000 --no-isolation    (to see the one-thread fallback)
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const ISOLATION = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};
const TYPES = {
  '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json', '.svg': 'image/svg+xml',
};

/** Serves `root` on 127.0.0.1:port (0: any free port) with `headers` on every response. */
export function serve({ root = REPO, port = 0, headers = ISOLATION } = {}) {
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url, 'http://localhost').pathname).slice(1);
    let file = path.resolve(root, rel);
    if (fs.statSync(file, { throwIfNoEntry: false })?.isDirectory()) file = path.join(file, 'index.html');
    if (!file.startsWith(path.resolve(root) + path.sep) || !fs.statSync(file, { throwIfNoEntry: false })?.isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'Cache-Control': 'no-store', ...headers });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--port');
  const port = i < 0 ? 8080 : Number(process.argv[i + 1]);
  const isolated = !process.argv.includes('--no-isolation');
  const server = await serve({ port, headers: isolated ? ISOLATION : {} });
  console.log(`serving ${REPO} at http://127.0.0.1:${server.address().port}/demo/ (${isolated ? 'cross-origin isolated' : 'not isolated'}); Ctrl-C stops`);
}
