// The Content-Security-Policy of memseg's pages, in one place. scripts/serve.mjs sends it as a header on every
// response (pages and the workers' scripts: a worker is governed by its own script's header), and each page
// carries the same policy in a <meta http-equiv> so that a static host with no control over headers still
// enforces it (tests/e2e/security.test.mjs checks that the two agree).
//
// The point: memseg promises that no image leaves the device. With this policy the browser itself refuses any
// connection other than to the page's own origin (and, on the app, the official weights host, used only after
// the user agrees to the download), any script not served by the page's origin, and any string used as HTML.

/** The only host the app may reach beyond its own origin: Meta's, for the consented weights download. */
export const OFFICIAL_WEIGHTS_ORIGIN = 'https://dl.fbaipublicfiles.com';

// Each directive with its reason.
const COMMON = {
  // Anything not allowed below is refused (fonts, media, frames, manifests...): the page needs none of them.
  'default-src': ["'none'"],
  // The page's own modules; 'wasm-unsafe-eval' compiles WebAssembly (the core, onnxruntime-web on the bench
  // page) and nothing else: no inline script, no eval, no script from another origin.
  'script-src': ["'self'", "'wasm-unsafe-eval'"],
  // The model worker, the encoder helpers and the bench workers are our own scripts.
  'worker-src': ["'self'"],
  // style.css only: no <style> blocks or style attributes (the page sets colours through the CSSOM).
  'style-src': ["'self'"],
  // The favicon, and the supports' thumbnails (data: URLs drawn from a canvas).
  'img-src': ["'self'", 'data:'],
  // No <base> to redirect relative URLs, no form posting anywhere, no plugins.
  'base-uri': ["'none'"],
  'form-action': ["'none'"],
  'object-src': ["'none'"],
  // Trusted Types: the browser refuses a string where HTML or a script URL goes (innerHTML, new Worker(...));
  // the one policy allowed, 'memseg' (www/trusted.js), makes script URLs of this origin only and no HTML.
  'require-trusted-types-for': ["'script'"],
  'trusted-types': ['memseg'],
};

export const POLICIES = {
  // The app: its own origin (the wasm core, models/ on the server) and the official weights download.
  app: { ...COMMON, 'connect-src': ["'self'", OFFICIAL_WEIGHTS_ORIGIN] },
  // The bench page: its own origin only (weights from models/, onnxruntime-web from /vendor/ort/).
  bench: { ...COMMON, 'connect-src': ["'self'"] },
};

// Directives a <meta> policy cannot carry, so only in the header: no page may frame ours (clickjacking), and
// violations are reported to the server that served the page (serve.mjs logs them; the browser tests fail on them).
export const REPORT_PATH = '/csp-report';
const HEADER_ONLY = { 'frame-ancestors': ["'none'"], 'report-uri': [REPORT_PATH] };

/** The policy `name` ('app' or 'bench') as a header value, or as a <meta> carries it (`meta: true`). */
export function policy(name, { meta = false } = {}) {
  const directives = { ...POLICIES[name], ...(meta ? {} : HEADER_ONLY) };
  return Object.entries(directives).map(([d, values]) => [d, ...values].join(' ')).join('; ');
}

/** Which policy governs a served path: the bench page, its script (also its workers) and onnxruntime-web's files. */
export function policyFor(path) {
  return /^\/(bench\.(html|js)$|vendor\/ort\/)/.test(path) ? 'bench' : 'app';
}
