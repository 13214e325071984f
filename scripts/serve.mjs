// Static file server for www/ (and, read-only, models/), bound to 127.0.0.1 only.
// Used by `./build.sh serve` and by the browser tests, so both see the same headers and MIME types.
// GET /models/index.json is generated from the models folder (weights files: name and size), so the page can
// list the weights found on this server without a directory listing of anything else.
// Every response carries the page's Content-Security-Policy (scripts/csp.mjs); the browser reports violations
// to POST /csp-report, which are logged and kept in `server.cspReports` (the browser tests fail on any).
// Usage: node scripts/serve.mjs [--port 8080] [--root www] [--models models]
import { createServer } from 'node:http';
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { REPORT_PATH, policy, policyFor } from './csp.mjs';

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

// What the page can load as weights: Meta's checkpoints and memseg's compact files.
const WEIGHTS_EXTENSIONS = new Set(['.pt', '.pth', '.safetensors']);

/** The weights files directly in `dir`: [{name, size}] sorted by name; an empty list when it does not exist. */
export async function listModels(dir) {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  const files = entries.filter((e) => e.isFile() && !e.name.startsWith('.') && WEIGHTS_EXTENSIONS.has(extname(e.name).toLowerCase()));
  const listed = await Promise.all(files.map(async (e) => ({ name: e.name, size: (await stat(join(dir, e.name))).size })));
  return listed.sort((a, b) => a.name.localeCompare(b.name));
}

const HEADERS = {
  'Cache-Control': 'no-cache',
  // Cross-origin isolation: lets the worker use SharedArrayBuffer (threads) later on.
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};

// `pkg` overrides where /pkg/ (the wasm-bindgen output) comes from: the browser tests load a faster test build
// from target/ and so never overwrite the one `./build.sh serve` put in www/pkg.
export function startServer({ port = 8080, root = join(repo, 'www'), models = join(repo, 'models'), pkg } = {}) {
  // URL prefix -> directory, first match wins. Nothing outside these directories is served.
  models = resolve(models);
  const mounts = [['/models/', models], ...(pkg ? [['/pkg/', resolve(pkg)]] : []),
    ['/vendor/ort/', join(repo, 'tests/e2e/node_modules/onnxruntime-web/dist')], ['/', root]]; // ort: bench.html only
  const cspReports = [];
  const server = createServer(async (req, res) => {
    try {
      const path = decodeURIComponent(new URL(req.url, 'http://127.0.0.1').pathname);
      if (path === REPORT_PATH && req.method === 'POST') return receiveReport(req, res, cspReports);
      const headers = { ...HEADERS, 'Content-Security-Policy': policy(policyFor(path)) };
      if (path === '/models/index.json') {
        const body = JSON.stringify(await listModels(models));
        res.writeHead(200, { ...headers, 'Content-Type': MIME['.json'], 'Content-Length': Buffer.byteLength(body) });
        return res.end(req.method === 'HEAD' ? undefined : body);
      }
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
        ...headers,
      });
      if (req.method === 'HEAD') return res.end();
      createReadStream(file).pipe(res);
    } catch (e) {
      send(res, 400, 'bad request');
    }
  });
  server.cspReports = cspReports;
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', () => ok(server));
  });
}

// A CSP violation report (report-uri's JSON, at most 64 KiB): kept and logged, answered 204.
function receiveReport(req, res, reports) {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (chunk) => {
    body += chunk;
    if (body.length > 65536) req.destroy();
  });
  req.on('end', () => {
    let report;
    try {
      report = JSON.parse(body)['csp-report'] ?? {};
    } catch {
      return send(res, 400, 'bad report');
    }
    reports.push(report);
    console.error(`memseg: the page's security policy blocked ${report['blocked-uri'] || 'something'} (${report['violated-directive']}) on ${report['document-uri']}`);
    res.writeHead(204).end();
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
  const models = resolve(arg('--models', join(repo, 'models')));
  startServer({ port, root, models })
    .then(() => console.log(`memseg: serving ${root} on http://127.0.0.1:${port}/ (Ctrl-C to stop)`))
    .catch((e) => {
      console.error(`memseg: cannot serve on 127.0.0.1:${port}: ${e.message}`);
      process.exit(1);
    });
}
