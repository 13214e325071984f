// The model panel's weights: chosen or dropped files, the official SAM2.1-tiny download (asked first, streamed
// with progress, verified), the weights found on this server (models/), and the copies kept in this browser.
// It also knows where the loaded model came from, so that a crashed worker gets it back without asking.
//
// Kept weights live in the Cache API (Cache Storage), keyed by the SHA-256 of their bytes, not in OPFS: a
// cache.put is atomic (a crash or a full disk while writing leaves no half-written file to detect), the
// entry carries its metadata in its headers (name, size, overrides, what it loaded as), and it works the same
// in every browser with WebGPU (OPFS writes from the page need createWritable, missing in older Safari).
// The key is a URL on this origin that is never fetched: Cache Storage needs a URL, nothing else.

export const OFFICIAL = {
  name: 'sam2.1_hiera_tiny.pt',
  url: 'https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt',
  generation: 'SAM2.1',
};
const CACHE = 'memseg-weights-v1';
const LAST = 'memseg.weights.last'; // localStorage: the hash of the kept weights loaded last (auto-loaded)
// SAM2.1-tiny is 156 MB; the largest SAM2 is about 900 MB. Anything far bigger is not weights this app loads,
// and reading it would only exhaust the memory.
export const MAX_WEIGHTS_BYTES = 1024 * 2 ** 20;

const $ = (id) => document.getElementById(id);
const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;
const keyUrl = (sha) => new URL(`/memseg-kept-weights/${sha}`, location.origin).href;

let deps; // {call, overrides(), onModel(report), status(id, text, kind)}
let source = null; // where the loaded model came from: {name, overrides, sha?, file?, blob?, server?}
let downloading = null; // the AbortController of the download in progress

export async function sha256(bytes) {
  if (!crypto.subtle) throw new Error('this page is not a secure context (https or localhost), so it cannot hash the file');
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

// --- Loading into the worker ----------------------------------------------------------------------------

/** Loads `bytes` (transferred to the worker) with `overrides`; returns the load report. */
async function loadInWorker(bytes, name, overrides) {
  const report = await deps.call('loadSam2', { bytes, name, overrides }, { transfer: [bytes] });
  deps.onModel(report);
  return report;
}

/** The model status after a load; an earlier weights message (e.g. a failed keep) no longer applies. */
function loaded(report, name, how = '') {
  deps.status('weights-status', '');
  deps.status('model-status', `${report.generation} loaded from ${name}${how} (${report.format}, ${report.image_size} px input) in ${(report.ms / 1000).toFixed(1)} s.`, 'ok');
}

/** A file chosen or dropped: loaded, then kept in this browser when the "keep" box is ticked. */
export async function loadFile(file) {
  if (!file) return;
  if (file.size > MAX_WEIGHTS_BYTES) {
    return deps.status('model-status', `${file.name} is ${mb(file.size)}: far larger than SAM2 weights (SAM2.1-tiny is 156 MB), so it was not read.`, 'error');
  }
  const overrides = deps.overrides();
  const keep = $('weights-keep').checked;
  deps.status('model-status', `Reading ${file.name} (${mb(file.size)})…`);
  try {
    const bytes = await file.arrayBuffer();
    const sha = keep ? await sha256(bytes) : null;
    const report = await loadInWorker(bytes, file.name, overrides);
    source = { name: file.name, overrides, file, sha };
    loaded(report, file.name);
    if (keep) await keepInBrowser(file, { name: file.name, size: file.size, sha256: sha, overrides, report });
  } catch (e) {
    deps.status('model-status', `Could not load ${file.name}: ${e.message}`, 'error');
  }
}

// --- The official download ------------------------------------------------------------------------------

/** Asks in the page's own dialog; resolves true only when the user chose "Download". */
function askConsent(url) {
  const dialog = $('weights-consent');
  $('consent-url').textContent = url;
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener('close', () => resolve(dialog.returnValue === 'download'), { once: true }));
}

/**
 * Streams `url` into memory with progress (`onProgress(received, total)`; total is null without a
 * Content-Length). `signal` cancels it. A body shorter than its Content-Length is refused.
 */
export async function fetchWithProgress(url, { signal, onProgress, sameOrigin = false }) {
  const response = await fetch(url, {
    signal, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer', mode: sameOrigin ? 'same-origin' : 'cors',
  });
  if (!response.ok) throw new Error(`the server answered ${response.status} ${response.statusText}`.trim());
  const total = Number(response.headers.get('Content-Length')) || null;
  const chunks = [];
  let received = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    onProgress(received, total);
  }
  if (total && received < total) throw new Error(`the download stopped at ${received} of ${total} bytes`);
  const bytes = new Uint8Array(received);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return bytes.buffer;
}

function showProgress(received, total) {
  if (total) $('weights-progress').value = received / total;
  else $('weights-progress').removeAttribute('value'); // indeterminate
  $('weights-progress-text').textContent = total ? `${mb(received)} of ${mb(total)}` : `${mb(received)}`;
}

function setDownloading(controller) {
  downloading = controller;
  $('weights-download-box').hidden = !controller;
  $('weights-download').disabled = Boolean(controller);
}

/** The download action: consent, streaming fetch, hash, load as SAM2.1-tiny (the verification), keep. */
async function download() {
  // The official URL only: the page's security policy (scripts/csp.mjs) lets it reach that host and no other.
  const url = OFFICIAL.url;
  if (!(await askConsent(url))) {
    return deps.status('weights-status', 'Download declined: nothing was requested.');
  }
  const controller = new AbortController();
  setDownloading(controller);
  showProgress(0, null);
  deps.status('weights-status', `Downloading ${OFFICIAL.name} from ${url}…`);
  let bytes;
  try {
    bytes = await fetchWithProgress(url, { signal: controller.signal, onProgress: showProgress });
  } catch (e) {
    setDownloading(null);
    const why = e.name === 'AbortError' ? 'Download cancelled' : `The download failed (${e.message})`;
    return deps.status('weights-status', `${why}: nothing was kept. You can also download ${url} yourself and choose the file above.`, e.name === 'AbortError' ? '' : 'error');
  }
  setDownloading(null);
  await verifyAndKeep(bytes, url);
}

/**
 * What loading the download checked, said exactly: the config it was checked against (SAM2.1-tiny, or that
 * changed by the overrides in force), the tensors and parameters loaded (the loader refuses a missing tensor or
 * a wrong shape), and that the hash is shown, not compared: memseg knows no checksum published for the file.
 */
export function checkedSummary(report, overrides, sha) {
  const config = overrides.length
    ? `the config in force (${OFFICIAL.generation}-tiny with ${overrides.length} override${overrides.length === 1 ? '' : 's'}, see Advanced)`
    : `${OFFICIAL.generation}-tiny's config`;
  const skipped = report.skipped_tensors ? `; ${report.skipped_tensors} tensors of modules memseg does not use were left aside` : '';
  return `Checked: it loads as a ${report.generation} checkpoint into ${config}: ${report.loaded_tensors} tensors ` +
    `(${(report.loaded_parameters / 1e6).toFixed(1)} M parameters), each name and shape as that config expects${skipped}. ` +
    `SHA-256 ${sha}, for your records: memseg knows no published checksum to compare it with.`;
}

/** The downloaded bytes: hashed, loaded (the Rust loader checks every tensor's name and shape), then kept. */
async function verifyAndKeep(bytes, url) {
  const overrides = deps.overrides();
  try {
    const sha = await sha256(bytes);
    deps.status('weights-status', `Downloaded ${mb(bytes.byteLength)}, SHA-256 ${sha}. Verifying: loading it as a ${OFFICIAL.generation}-tiny checkpoint…`);
    const copy = new Blob([bytes]); // the worker takes the bytes; the blob is what gets kept
    const report = await loadInWorker(bytes, OFFICIAL.name, overrides);
    if (report.generation !== OFFICIAL.generation || report.format !== 'pt') {
      throw new Error(`it loads as ${report.generation} (${report.format}), not as Meta's ${OFFICIAL.generation} checkpoint`);
    }
    source = { name: OFFICIAL.name, overrides, sha, blob: copy };
    loaded(report, OFFICIAL.name);
    deps.status('weights-status', checkedSummary(report, overrides, sha), 'ok');
    await keepInBrowser(copy, { name: OFFICIAL.name, size: copy.size, sha256: sha, overrides, report, url });
  } catch (e) {
    deps.status('weights-status', `Verification failed, nothing was kept: the file from ${url} is not a usable ${OFFICIAL.generation}-tiny checkpoint (${e.message}).`, 'error');
  }
}

// --- Kept in this browser -------------------------------------------------------------------------------

function openCache() {
  if (typeof caches === 'undefined') throw new Error('this browser offers no Cache Storage here (it needs https or localhost)');
  return caches.open(CACHE);
}

/** Keeps `body` (a File or Blob) under its hash; a full storage is reported, the loaded model stays. */
async function keepInBrowser(body, meta) {
  const { report, ...rest } = meta;
  const info = { ...rest, generation: report.generation, format: report.format, imageSize: report.image_size, keptAt: Date.now() };
  try {
    const cache = await openCache();
    await cache.put(keyUrl(meta.sha256), new Response(body, {
      headers: { 'Content-Type': 'application/octet-stream', 'X-Memseg-Weights': encodeURIComponent(JSON.stringify(info)) },
    }));
    localStorage.setItem(LAST, meta.sha256);
  } catch (e) {
    const full = e.name === 'QuotaExceededError' || /quota/i.test(e.message);
    const detail = e.message.replace(/\.$/, '');
    const why = full ? `this browser has no room left for this site (${e.name}: ${detail})` : detail;
    deps.status('weights-status', `The model is loaded, but it could not be kept in this browser: ${why}. ` +
      'Free some space (e.g. forget other kept weights) or it will be asked for again after a reload.', 'error');
  }
  await renderKept();
}

/** [{sha256, name, size, generation, overrides, keptAt, ...}] of the weights kept in this browser. */
export async function listKept() {
  const cache = await openCache();
  const entries = [];
  for (const request of await cache.keys()) {
    const response = await cache.match(request);
    const raw = response?.headers.get('X-Memseg-Weights');
    if (raw) entries.push(JSON.parse(decodeURIComponent(raw)));
  }
  return entries.sort((a, b) => b.keptAt - a.keptAt);
}

/** Loads kept weights, checking that their bytes still have the hash they were kept under. */
async function loadKept(sha, { auto = false } = {}) {
  const cache = await openCache();
  const response = await cache.match(keyUrl(sha));
  if (!response) throw new Error('these weights are no longer kept in this browser');
  const info = JSON.parse(decodeURIComponent(response.headers.get('X-Memseg-Weights')));
  deps.status('model-status', `Loading ${info.name} kept in this browser (no network)…`);
  const bytes = await response.arrayBuffer();
  if ((await sha256(bytes)) !== sha) {
    await cache.delete(keyUrl(sha));
    throw new Error(`the copy of ${info.name} kept in this browser is damaged (its SHA-256 changed); it was forgotten`);
  }
  const report = await loadInWorker(bytes, info.name, info.overrides);
  source = { name: info.name, overrides: info.overrides, sha };
  localStorage.setItem(LAST, sha);
  loaded(report, info.name, auto ? ' kept in this browser, loaded automatically' : ' kept in this browser');
  return report;
}

async function forget(sha) {
  const cache = await openCache();
  await cache.delete(keyUrl(sha));
  if (localStorage.getItem(LAST) === sha) localStorage.removeItem(LAST);
  deps.status('weights-status', 'Forgot the cached weights: the space is freed.');
  await renderKept();
}

function listItem(text, buttons) {
  const li = document.createElement('li');
  const label = document.createElement('span');
  label.textContent = text;
  li.append(label, ...buttons.map(([name, title, onClick]) => {
    const b = document.createElement('button');
    Object.assign(b, { type: 'button', className: 'secondary small', textContent: name, title });
    b.addEventListener('click', onClick);
    return b;
  }));
  return li;
}

/** The kept weights with Load / Forget, and how much this site stores. */
export async function renderKept() {
  let kept = [];
  try {
    kept = await listKept();
  } catch (e) {
    $('weights-storage').textContent = `Weights cannot be kept here: ${e.message}.`;
  }
  $('weights-kept-list').replaceChildren(...kept.map((k) => listItem(`${k.name} · ${mb(k.size)} · SHA-256 ${k.sha256.slice(0, 12)}…`, [
    ['Load', `Load ${k.name} from this browser`, () => loadKept(k.sha256).catch((e) => deps.status('model-status', `Could not load ${k.name}: ${e.message}`, 'error'))],
    ['Forget', `Forget cached weights ${k.name} (frees ${mb(k.size)})`, () => forget(k.sha256)],
  ])));
  $('weights-kept').hidden = kept.length === 0;
  const size = kept.reduce((n, k) => n + k.size, 0);
  $('weights-kept-summary').textContent = `Kept in this browser (${kept.length} file${kept.length > 1 ? 's' : ''}, ${mb(size)})`;
  if (navigator.storage?.estimate) {
    const { usage, quota } = await navigator.storage.estimate();
    $('weights-storage').textContent = `The last loaded is loaded again on the next visit, with no network. This site stores ${mb(usage)} in this browser (of ${mb(quota)} it may use).`;
  }
}

// --- Weights found on this server (models/) -------------------------------------------------------------

/** Lists models/index.json (same origin only); the section stays hidden when the server has none. */
async function renderServer() {
  let listed = [];
  try {
    const response = await fetch('models/index.json', { cache: 'no-store', mode: 'same-origin' });
    if (response.ok) listed = await response.json();
  } catch {
    listed = []; // served without scripts/serve.mjs (no listing): nothing to offer
  }
  $('weights-server-list').replaceChildren(...listed.map(({ name, size }) =>
    listItem(`${name} · ${mb(size)}`, [['Load', `Load ${name} from this server`, () => loadFromServer(name)]])));
  $('weights-server').hidden = listed.length === 0;
  $('weights-server-summary').textContent = `Weights found on this server (${listed.length})`;
}

async function loadFromServer(name) {
  const overrides = deps.overrides();
  deps.status('model-status', `Fetching ${name} from this server…`);
  const controller = new AbortController();
  setDownloading(controller);
  try {
    const url = `models/${encodeURIComponent(name)}`;
    const bytes = await fetchWithProgress(url, { sameOrigin: true, signal: controller.signal, onProgress: showProgress });
    setDownloading(null);
    const report = await loadInWorker(bytes, name, overrides);
    source = { name, overrides, server: name };
    loaded(report, name, ' (this server)');
  } catch (e) {
    setDownloading(null);
    deps.status('model-status', `Could not load ${name} from this server: ${e.message}`, 'error');
  }
}

// --- Crash recovery and start-up ------------------------------------------------------------------------

/** The loaded model again, from where it came (kept copy, file, download or server), after a crash. */
export async function reload() {
  if (!source) return null;
  const { name, overrides } = source;
  if (source.sha && (await openCache().then((c) => c.match(keyUrl(source.sha))).catch(() => null))) return loadKept(source.sha);
  const body = source.blob ?? source.file;
  const bytes = body ? await body.arrayBuffer()
    : await fetchWithProgress(`models/${encodeURIComponent(source.server)}`, { sameOrigin: true, onProgress() {} });
  const report = await loadInWorker(bytes, name, overrides);
  loaded(report, name, ' again');
  return report;
}

/** What the loaded model came from, for messages. */
export const sourceName = () => source?.name ?? null;

/** Wires the panel: `dependencies` = {call, overrides(), onModel(report), status(id, text, kind)}. */
export function setup(dependencies) {
  deps = dependencies;
  $('weights-download').addEventListener('click', download);
  $('weights-cancel').addEventListener('click', () => downloading?.abort());
}

/**
 * Once the worker is initialised: lists the server's and the kept weights, and loads the kept weights loaded
 * last. Automatically, because the user asked to keep them so as not to be asked again, it needs no network,
 * and a crash recovery or a reload then finds the model as it was; "Forget" stops it.
 */
export async function start() {
  await Promise.all([renderServer(), renderKept()]);
  const last = localStorage.getItem(LAST);
  if (last && !source) {
    await loadKept(last, { auto: true }).catch((e) => deps.status('model-status', `Could not load the kept weights: ${e.message}`, 'error'));
  }
}
