// The encoder benchmark (bench.html). This one file has two roles: in the page it reads the set-up, draws the
// results and starts one worker per engine; inside such a worker (`new Worker('bench.js')`) it loads one
// engine, times it and posts the result back. A fresh worker per engine keeps the engines from sharing memory
// or a GPU device, and keeps the page responsive while the CPU engines run.
//
// Engines: memseg's core (the wasm build in pkg/, as the app uses it) on its CPU fallback (Flex) or WebGPU,
// and onnxruntime-web (served from /vendor/ort/, the npm package in tests/e2e) with its WASM execution
// provider on one thread (memseg's wasm build is single-threaded too) or its WebGPU one. Both run the same
// encoder: bench/export_onnx.py writes Meta's weights as a .pt for memseg and an .onnx of the same model.

import { moduleWorker } from './trusted.js';

const ENGINES = {
  'ours-flex': { label: 'memseg, CPU (Flex)', kind: 'ours', backend: 'flex' },
  'ours-wgpu': { label: 'memseg, WebGPU', kind: 'ours', backend: 'wgpu' },
  'ort-wasm': { label: 'onnxruntime-web, WASM (1 thread)', kind: 'ort', backend: 'wasm' },
  'ort-webgpu': { label: 'onnxruntime-web, WebGPU', kind: 'ort', backend: 'webgpu' },
};
// Which onnxruntime-web engine each of ours is compared with (same kind of hardware).
const PAIRS = [['ours-flex', 'ort-wasm'], ['ours-wgpu', 'ort-webgpu']];
const ORT_DIR = new URL('./vendor/ort/', import.meta.url).href;

if (typeof document === 'undefined') workerMain();
else pageMain();

// --- In the worker: one engine --------------------------------------------------------------------------

function workerMain() {
  self.onmessage = async ({ data }) => {
    const progress = (text) => self.postMessage({ type: 'progress', text });
    try {
      const result = await benchEngine(data, progress);
      self.postMessage({ type: 'done', result });
    } catch (e) {
      self.postMessage({ type: 'error', message: e?.message ?? String(e) });
    }
  };
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status} (make the files with bench/export_onnx.py)`);
  return new Uint8Array(await response.arrayBuffer());
}

/** {engine, meta, input, warmup, runs} -> {loadMs, runsMs, output (vision_features), shape, device}. */
async function benchEngine({ engine, meta, input, warmup, runs }, progress) {
  const { kind, backend } = ENGINES[engine];
  const runner = kind === 'ours' ? await loadOurs(backend, meta, progress) : await loadOrt(backend, meta, progress);
  const runsMs = [];
  let output = null;
  for (let i = 0; i < warmup + runs; i++) {
    progress(i < warmup ? `warm-up run ${i + 1} of ${warmup}` : `timed run ${i - warmup + 1} of ${runs}`);
    const start = performance.now();
    output = await runner.run(input);
    const ms = performance.now() - start;
    if (i >= warmup) runsMs.push(ms);
  }
  return { loadMs: runner.loadMs, runsMs, output, device: runner.device };
}

async function probeWebGpu() {
  if (!navigator.gpu) throw new Error('this browser exposes no WebGPU (navigator.gpu is missing)');
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new Error('WebGPU is present but found no adapter');
  return adapter.info?.description || adapter.info?.vendor || 'WebGPU adapter';
}

async function loadOurs(backend, meta, progress) {
  progress('loading the memseg core');
  let core;
  try {
    core = await import('./pkg/memseg.js');
    await core.default();
  } catch (e) {
    throw new Error(`the memseg core could not be loaded (${e.message}); build it with ./build.sh wasm`);
  }
  // wgpu panics instead of failing when there is no WebGPU, so check first (as worker.js does).
  if (backend === 'wgpu') await probeWebGpu();
  const compute = await core.init_compute(backend, null);
  if (compute.backend !== backend) throw new Error(`asked for ${backend}, the core chose ${compute.backend}`);
  progress(`loading ${meta.pt}`);
  const start = performance.now();
  core.load_sam2(await fetchBytes(`models/${meta.pt}`), meta.pt, meta.overrides);
  const loadMs = performance.now() - start;
  return {
    loadMs,
    device: compute.backend,
    async run(input) {
      const { vision_features } = await core.bench_encode(input);
      return vision_features;
    },
  };
}

async function loadOrt(backend, meta, progress) {
  progress('loading onnxruntime-web');
  let ort;
  try {
    ort = await import(`${ORT_DIR}ort.all.min.mjs`);
  } catch (e) {
    throw new Error(`onnxruntime-web could not be loaded from ${ORT_DIR} (${e.message}); install it with ` +
      '`npm ci` in tests/e2e');
  }
  ort.env.wasm.wasmPaths = ORT_DIR;
  ort.env.wasm.numThreads = 1; // as memseg's wasm build: one thread
  let device = 'wasm';
  if (backend === 'webgpu') device = `webgpu: ${await probeWebGpu()}`;
  progress(`loading ${meta.onnx}`);
  const start = performance.now();
  const session = await ort.InferenceSession.create(await fetchBytes(`models/${meta.onnx}`), {
    executionProviders: [backend], graphOptimizationLevel: 'all',
  });
  const loadMs = performance.now() - start;
  const s = meta.image_size;
  return {
    loadMs,
    device,
    async run(input) {
      const outputs = await session.run({ image: new ort.Tensor('float32', input, [1, 3, s, s]) });
      // Every output is on the CPU by now (the default output location); vision_features is the last level.
      return outputs.backbone_fpn_2.data;
    },
  };
}

// --- In the page ----------------------------------------------------------------------------------------

function pageMain() {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  if (params.has('model')) $('model').value = params.get('model');
  if (params.has('warmup')) $('warmup').value = params.get('warmup');
  if (params.has('runs')) $('runs').value = params.get('runs');
  if (params.has('engines')) {
    const wanted = params.get('engines').split(',');
    for (const box of document.querySelectorAll('input[name=engine]')) box.checked = wanted.includes(box.value);
  }
  $('setup').addEventListener('submit', (e) => {
    e.preventDefault();
    runBenchmark($).catch((err) => finish($, 'error', err.message));
  });
  $('start').disabled = false;
  document.body.dataset.state = 'ready';
  if (params.get('autorun') === '1') $('start').click();
}

function finish($, state, message, failures = false) {
  $('status').textContent = message;
  $('status').className = `status ${state === 'error' || failures ? 'error' : 'ok'}`;
  $('start').disabled = false;
  document.body.dataset.state = state;
}

function readSetup($) {
  const name = $('model').value.trim();
  if (!/^[\w.-]+$/.test(name)) throw new Error(`'${name}' is not a model name (letters, digits, '.', '-', '_')`);
  const warmup = Number($('warmup').value);
  const runs = Number($('runs').value);
  if (!Number.isInteger(warmup) || warmup < 0 || warmup > 20) throw new Error('warm-up runs: a whole number from 0 to 20');
  if (!Number.isInteger(runs) || runs < 1 || runs > 50) throw new Error('timed runs: a whole number from 1 to 50');
  const engines = [...document.querySelectorAll('input[name=engine]:checked')].map((b) => b.value);
  if (!engines.length) throw new Error('choose at least one engine');
  return { name, warmup, runs, engines };
}

async function readMeta(name) {
  const response = await fetch(`models/${name}.json`);
  if (!response.ok) throw new Error(`models/${name}.json: HTTP ${response.status}; make it with bench/export_onnx.py`);
  const meta = await response.json();
  for (const key of ['pt', 'onnx', 'image_size', 'overrides']) {
    if (meta[key] === undefined) throw new Error(`models/${name}.json has no '${key}' (not written by bench/export_onnx.py?)`);
  }
  return meta;
}

async function runBenchmark($) {
  const setup = readSetup($);
  $('start').disabled = true;
  document.body.dataset.state = 'running';
  $('status').className = 'status';
  $('results').tBodies[0].replaceChildren();
  $('ratios').textContent = '';
  const meta = await readMeta(setup.name);
  const input = seededNormal(3 * meta.image_size * meta.image_size, 20240917);
  const results = {};
  for (const engine of setup.engines) {
    const say = (text) => { $('status').textContent = `${ENGINES[engine].label}: ${text}`; };
    results[engine] = await inWorker({ engine, meta, input, warmup: setup.warmup, runs: setup.runs }, say)
      .then(summarise, (e) => ({ error: e.message }));
    drawResults($, results);
  }
  const report = { model: setup.name, image_size: meta.image_size, warmup: setup.warmup, runs: setup.runs,
    userAgent: navigator.userAgent, engines: results, comparisons: compare(results) };
  drawResults($, results, report.comparisons);
  window.benchResult = report;
  const failed = Object.entries(results).filter(([, r]) => r.error).map(([e]) => ENGINES[e].label);
  finish($, 'done', failed.length ? `Done; failed: ${failed.join(', ')}.` : 'Done.', failed.length > 0);
}

/** Runs one engine in a fresh worker; resolves with the worker's result, rejects with its error. */
function inWorker(job, onProgress) {
  const worker = moduleWorker('./bench.js', import.meta.url);
  return new Promise((resolve, reject) => {
    worker.onmessage = ({ data }) => {
      if (data.type === 'progress') return onProgress(data.text);
      if (data.type === 'done') resolve(data.result);
      else reject(new Error(data.message)); // 'error', or 'panic' posted by the core's panic hook
    };
    worker.onerror = (e) => {
      e.preventDefault();
      reject(new Error(`the worker failed: ${e.message || 'unknown error'}`));
    };
    worker.postMessage({ ...job, input: job.input.slice() }); // a copy: the page keeps the input for the next engine
  }).finally(() => worker.terminate());
}

function summarise(result) {
  const sorted = [...result.runsMs].sort((a, b) => a - b);
  return { ...result, medianMs: sorted[Math.floor(sorted.length / 2)], minMs: sorted[0] };
}

/** For each pair that both ran: median ours / median onnxruntime-web, and how far the outputs are apart. */
function compare(results) {
  const out = [];
  for (const [ours, ort] of PAIRS) {
    const a = results[ours];
    const b = results[ort];
    if (!a || !b || a.error || b.error) continue;
    out.push({ ours, ort, ratio: a.medianMs / b.medianMs, outputDiff: relativeError(a.output, b.output) });
  }
  return out;
}

/** max |a - b| / std(b): the parity measure of the encoder tests. */
function relativeError(a, b) {
  if (a.length !== b.length) return NaN;
  let mean = 0;
  for (const v of b) mean += v / b.length;
  let variance = 0;
  let max = 0;
  for (let i = 0; i < b.length; i++) {
    variance += (b[i] - mean) ** 2 / b.length;
    max = Math.max(max, Math.abs(a[i] - b[i]));
  }
  return max / Math.sqrt(variance);
}

/** A reproducible N(0, 1) input (mulberry32 + Box-Muller): the same for every engine and every visit. */
function seededNormal(n, seed) {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform()));
    const theta = 2 * Math.PI * uniform();
    out[i] = r * Math.cos(theta);
    if (i + 1 < n) out[i + 1] = r * Math.sin(theta);
  }
  return out;
}

function drawResults($, results, comparisons = []) {
  const ms = (v) => (v === undefined ? '' : v < 10_000 ? `${v.toFixed(0)} ms` : `${(v / 1000).toFixed(1)} s`);
  const rows = Object.entries(results).map(([engine, r]) => {
    const tr = document.createElement('tr');
    const cells = r.error
      ? [[ENGINES[engine].label, 'left'], [`failed: ${r.error}`, 'error', 5]]
      : [[`${ENGINES[engine].label}`, 'left'], [ms(r.loadMs)], [ms(r.medianMs)], [ms(r.minMs)],
        [r.runsMs.map((v) => v.toFixed(0)).join(', '), 'left'],
        [comparisons.find((c) => c.ours === engine || c.ort === engine)?.outputDiff.toExponential(1) ?? '']];
    for (const [text, cls, span] of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      if (cls) td.className = cls;
      if (span) td.colSpan = span;
      tr.append(td);
    }
    return tr;
  });
  $('results').tBodies[0].replaceChildren(...rows);
  $('ratios').textContent = comparisons
    .map((c) => `${ENGINES[c.ours].label} / ${ENGINES[c.ort].label}: ${c.ratio.toFixed(2)}× the time`)
    .join(' · ');
}
