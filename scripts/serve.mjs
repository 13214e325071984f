// Static file server for www/ (and, read-only, models/), bound to 127.0.0.1 only.
// Used by `./build.sh serve` and by the browser tests, so both see the same headers and MIME types.
// Usage: node scripts/serve.mjs [--port 8080] [--root www]
import { createServer } from 'node:http';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
};

const repo = resolve(fileURLToPath(import.meta.url), '../..');

// `pkg` overrides where /pkg/ (the wasm-bindgen output) comes from: the browser tests load a faster test build
// from target/ and so never overwrite the one `./build.sh serve` put in www/pkg.
export function startServer({ port = 8080, root = join(repo, 'www'), models = join(repo, 'models'), pkg } = {}) {
  // URL prefix -> directory, first match wins. Nothing outside these directories is served.
  const mounts = [['/models/', models], ...(pkg ? [['/pkg/', resolve(pkg)]] : []), ['/', root]];
  const server = createServer(async (req, res) => {
    try {
      const path = decodeURIComponent(new URL(req.url, 'http://127.0.0.1').pathname);
      const [prefix, dir] = mounts.find(([p]) => path.startsWith(p));
      let file = normalize(join(dir, path.slice(prefix.length)));
      if (file !== dir && !file.startsWith(dir + sep)) return send(res, 403, 'forbidden');
      let info = await stat(file).catch(() => null);
      if (info?.isDirectory()) {
        file = join(file, 'index.html');
        info = await stat(file).catch(() => null);
      }
      if (!info?.isFile()) return send(res, 404, 'not found');
      res.writeHead(200, {
        'Content-Type': MIME[extname(file)] ?? 'application/octet-stream',
        'Content-Length': info.size,
        'Cache-Control': 'no-cache',
        // Cross-origin isolation: lets the worker use SharedArrayBuffer (threads) later on.
        'Cross-Origin-Opener-Policy': 'same-origin',
        'Cross-Origin-Embedder-Policy': 'require-corp',
      });
      if (req.method === 'HEAD') return res.end();
      createReadStream(file).pipe(res);
    } catch (e) {
      send(res, 400, 'bad request');
    }
  });
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', () => ok(server));
  });
}

function send(res, code, text) {
  res.writeHead(code, { 'Content-Type': 'text/plain' });
  res.end(text);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : fallback;
  };
  const port = Number(arg('--port', process.env.PORT ?? 8080));
  const root = resolve(arg('--root', join(repo, 'www')));
  startServer({ port, root })
    .then(() => console.log(`memseg: serving ${root} on http://127.0.0.1:${port}/ (Ctrl-C to stop)`))
    .catch((e) => {
      console.error(`memseg: cannot serve on 127.0.0.1:${port}: ${e.message}`);
      process.exit(1);
    });
}
