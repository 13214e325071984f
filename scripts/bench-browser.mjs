// Browser timings, headless (Debian's Chromium through Playwright, as the browser tests), printed as JSON.
//
//   node scripts/bench-browser.mjs encoder [--model tiny21_full_512] [--engines ours-flex,ort-wasm]
//        [--runs 3] [--warmup 1] [--webgpu] [--pkg www/pkg] [--timeout-min 30]
//     www/bench.html: the image encoder on memseg's core and onnxruntime-web, same weights and input
//     (models/NAME.{pt,onnx,json} from bench/export_onnx.py).
//   node scripts/bench-browser.mjs track [--model tiny21_full_512] [--volume FILE]... [--synthetic WxHxD]
//        [--helpers N] [--webgpu] [--pkg www/pkg]
//     the app itself (index.html, its worker): a propagation over the sample volume (or the given files, one
//     volume, or a synthetic NIfTI of W x H x D float voxels), from a mask on the middle slice; time per tracked
//     slice from the run's progress reports, and the WebAssembly memory of the worker and its encoder helpers
//     after the run (their peak). --helpers: encoder helpers on the CPU fallback (default: the page's, one per
//     core beyond the first, at most 3; www/encoder-pool.js).
//   node scripts/bench-browser.mjs click [--model tiny21_full_512] [--image-size 1024] [--runs 3] [--volume FILE]...
//        [--synthetic WxHxD] [--helpers N] [--webgpu] [--pkg www/pkg]
//     the prompt tool's feedback (src/web/prompts.rs) on the middle slice: the first click (encodes the slice),
//     then --runs more clicks, each added to the ones before: the time from the request to SAM's mask.
//
// --image-size: the model's input size instead of the one in models/NAME.json (512 or 1024).
// --webgpu: WebGPU through SwiftShader (slow: a CPU emulating a GPU; use the reduced model there). Without it
// Chromium has no WebGPU and both the app and the bench run on the CPU. --pkg: the wasm-bindgen output served
// at /pkg/ (default www/pkg, what `./build.sh wasm` builds). Needs `npm ci` in tests/e2e.
import { readFileSync, writeFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { NO_WEBGPU_FLAGS, WEBGPU_FLAGS, launch, openApp, repo, serve } from '../tests/e2e/harness.mjs';
import { niftiF32 } from '../tests/e2e/journey.mjs';

const USAGE = 'usage: node scripts/bench-browser.mjs encoder|track|click [options] (see the comment at the top)';

function options() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      model: { type: 'string', default: 'tiny21_full_512' },
      engines: { type: 'string', default: 'ours-flex,ort-wasm' },
      runs: { type: 'string', default: '3' },
      warmup: { type: 'string', default: '1' },
      webgpu: { type: 'boolean', default: false },
      pkg: { type: 'string', default: 'www/pkg' },
      volume: { type: 'string', multiple: true, default: [] },
      synthetic: { type: 'string' },
      helpers: { type: 'string' },
      'image-size': { type: 'string' },
      'timeout-min': { type: 'string', default: '30' },
    },
  });
  const [mode] = positionals;
  if (!['encoder', 'track', 'click'].includes(mode) || positionals.length !== 1) throw new Error(USAGE);
  const timeoutMin = Number(values['timeout-min']);
  if (!(timeoutMin > 0)) throw new Error(`--timeout-min: '${values['timeout-min']}' is not a positive number`);
  return { mode, ...values, timeoutMs: timeoutMin * 60_000, pkg: resolve(repo, values.pkg) };
}

async function benchEncoder(page, url, o) {
  const query = new URLSearchParams({ model: o.model, engines: o.engines, runs: o.runs, warmup: o.warmup, autorun: '1' });
  await page.goto(`${url}bench.html?${query}`);
  await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state), null, { timeout: o.timeoutMs });
  return page.evaluate(() => {
    if (document.body.dataset.state === 'error') throw new Error(document.getElementById('status').textContent);
    const { engines, ...rest } = window.benchResult;
    // The outputs themselves are only for the page's comparison: leave them out of the JSON.
    const slim = Object.fromEntries(Object.entries(engines).map(([k, { output, ...r }]) => [k, r]));
    return { ...rest, engines: slim };
  });
}

/** A W x H x D float volume: a gradient and a disc whose radius changes along z; no two slices alike (the feature
 * cache would reuse an identical slice's encoding). */
function syntheticNifti(spec) {
  const [nx, ny, nz] = spec.split('x').map(Number);
  if (![nx, ny, nz].every((n) => Number.isInteger(n) && n > 0)) throw new Error(`--synthetic: '${spec}' is not WxHxD`);
  const values = new Float32Array(nx * ny * nz);
  for (let z = 0; z < nz; z++) {
    const r = Math.min(nx, ny) * (0.15 + 0.1 * Math.sin((z / nz) * Math.PI));
    for (let y = 0; y < ny; y++) for (let x = 0; x < nx; x++) {
      const inside = (x - nx / 2) ** 2 + (y - ny / 2) ** 2 < r * r;
      values[(z * ny + y) * nx + x] = inside ? 200 : 40 + (60 * (x + y)) / (nx + ny) + (z % 2 ? 0 : 30) + z / nz;
    }
  }
  return niftiF32(values, [nx, ny, nz], [1, 1, 1]);
}

/** The model's metadata (models/NAME.json), its overrides changed for --image-size. */
function modelMeta(o) {
  const meta = JSON.parse(readFileSync(resolve(repo, 'models', `${o.model}.json`), 'utf8'));
  if (!o['image-size']) return meta;
  const size = Number(o['image-size']);
  if (!(Number.isInteger(size) && size % 32 === 0 && size > 0)) throw new Error(`--image-size: '${o['image-size']}' is not a multiple of 32`);
  const side = size / 16;
  const overrides = [`++model.image_size=${size}`, ...['self_attention', 'cross_attention'].map((a) => `++model.memory_attention.layer.${a}.feat_sizes=[${side},${side}]`)];
  return { ...meta, name: `${meta.name}@${size}`, image_size: size, overrides };
}

/** The paths the page fetches the volume from (none: the sample), routed or written here. */
async function volumeFiles(page, o) {
  // The volume's files reach the page as fetched bytes, as a picked file would: given files routed here, a
  // synthetic volume written into models/ (served by the app's server: a large body does not fit a route).
  const bodies = new Map(o.volume.map((path) => [basename(path), () => readFileSync(path)]));
  const files = [...bodies.keys()].map((name) => `__volume__/${encodeURIComponent(name)}`);
  if (o.synthetic) {
    const name = `synthetic-${o.synthetic}.nii`;
    writeFileSync(resolve(repo, 'models', name), syntheticNifti(o.synthetic));
    files.push(`models/${name}`);
  }
  await page.route('**/__volume__/*', (route) => {
    const name = decodeURIComponent(new URL(route.request().url()).pathname.split('/').pop());
    route.fulfill({ body: bodies.get(name)() });
  });
  return files;
}

/** Loads the model (models/NAME) and the volume (--volume, --synthetic or the sample) in the page's worker. */
async function loadInPage(page, o) {
  const meta = modelMeta(o);
  const files = await volumeFiles(page, o);
  const loaded = await page.evaluate(async ({ meta, files }) => {
    const call = window.memsegCall;
    const bytes = await (await fetch(`models/${meta.pt}`)).arrayBuffer();
    const model = await call('loadSam2', { bytes, name: meta.pt, overrides: meta.overrides });
    const volume = files.length
      ? await call('loadVolume', { files: await Promise.all(files.map(async (name) => ({
        name: decodeURIComponent(name.split('/').pop()), bytes: await (await fetch(name)).arrayBuffer() }))) })
      : await call('loadSample');
    return { model, volume };
  }, { meta, files });
  return { meta, files, ...loaded };
}

async function benchTrack(page, o) {
  const { meta, files, model, volume } = await loadInPage(page, o);
  return page.evaluate(async ({ meta, files, model, volume }) => {
    const call = window.memsegCall;
    const { width, height, slices: depth } = volume;
    const z = Math.floor(depth / 2);
    // The sample's ground truth of its first structure on the middle slice, or a centred disc on another volume.
    let labels = files.length ? null : await call('truthSlice', { z });
    if (labels) labels = labels.map((v) => (v === 1 ? 1 : 0));
    else {
      labels = new Uint8Array(width * height);
      const r = Math.min(width, height) / 6;
      for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
        labels[y * width + x] = (x - width / 2) ** 2 + (y - height / 2) ** 2 < r * r ? 1 : 0;
      }
    }
    const steps = [];
    const options = { classes: [1], mode: 'propagate', intensity: 'auto', maxConditioning: null, selectSupports: null,
      similarityEviction: false };
    const summary = await call('run', { options, masks: [{ slice: z, labels }] }, {
      onProgress: (p) => steps.push({ step: p.step, slice: p.slice, reverse: p.reverse, elapsedMs: p.elapsedMs }),
    });
    const perStep = steps.map((s, i) => s.elapsedMs - (i ? steps[i - 1].elapsedMs : 0));
    const sorted = [...perStep].sort((a, b) => a - b);
    const mib = (bytes) => Math.round(bytes / 2 ** 20);
    const memory = await call('memory');
    return {
      model: meta.name, image_size: model.image_size, volume: { width, height, depth }, maskOnSlice: z, steps: steps.length,
      totalMs: steps.at(-1)?.elapsedMs, medianMsPerSlice: sorted[Math.floor(sorted.length / 2)],
      meanMsPerSlice: steps.at(-1)?.elapsedMs / steps.length, perStepMs: perStep.map(Math.round),
      reportSeconds: summary.report?.seconds, framesEncoded: summary.report?.frames_encoded, encodeAhead: summary.encodeAhead,
      // WebAssembly memory only grows: after the run it is the run's peak. The volume is held as f32 voxels.
      wasmMemoryMiB: { worker: mib(memory.worker), helpers: memory.helpers.map(mib), volume: mib(width * height * depth * 4) },
    };
  }, { meta, files, model, volume });
}

/**
 * Clicks on the middle slice through the page's worker, as the prompt tool makes them: the first click (the
 * slice encoded unless a helper did it ahead), then `--runs` more, each appended to the ones before (the core
 * continues from the last click: each runs the prompt encoder and mask decoder once).
 */
async function benchClick(page, o) {
  const { meta, model, volume } = await loadInPage(page, o);
  return page.evaluate(async ({ meta, model, volume, runs }) => {
    const call = window.memsegCall;
    const { width, height, slices } = volume;
    const slice = Math.floor(slices / 2);
    const clicks = [];
    const times = [];
    for (let k = 0; k <= runs; k++) {
      // Inside the middle third of the slice, alternating object / background.
      clicks.push({ x: Math.floor(width * (0.35 + 0.3 * ((k * 0.618) % 1))), y: Math.floor(height * (0.35 + 0.3 * ((k * 0.382) % 1))), positive: k % 2 === 0 });
      const started = performance.now();
      const out = await call('promptSlice', { request: { prompt: { slice, class: 1, clicks: clicks.map((c) => ({ ...c })) }, intensity: 'auto' }, painted: null });
      times.push({ clicks: k + 1, ms: Math.round(performance.now() - started), encoded: out.encoded });
    }
    const later = times.slice(1).map((t) => t.ms).sort((a, b) => a - b);
    return {
      model: meta.name, image_size: model.image_size, volume: { width, height, slices }, slice,
      firstClickMs: times[0].ms, firstEncoded: times[0].encoded, secondClickMs: times[1]?.ms,
      medianLaterClickMs: later[Math.floor(later.length / 2)], clicks: times,
    };
  }, { meta, model, volume, runs: Number(o.runs) });
}

async function main() {
  const o = options();
  const server = await serve({ pkg: o.pkg });
  const browser = await launch(o.webgpu ? WEBGPU_FLAGS : NO_WEBGPU_FLAGS);
  try {
    let result;
    browser.context.on('page', (page) => page.on('crash', () => console.error('bench-browser: the page crashed')));
    if (o.mode === 'encoder') {
      const page = await browser.context.newPage();
      result = await benchEncoder(page, server.url, o);
    } else {
      const query = o.helpers === undefined ? '' : `?helpers=${Number(o.helpers)}`;
      const { page, state } = await openApp(browser.context, `${server.url}${query}`);
      if (!state.device) throw new Error(`the app did not start: ${JSON.stringify(state.errors)}`);
      page.setDefaultTimeout(o.timeoutMs);
      result = { device: state.device?.backend, ...(await (o.mode === 'click' ? benchClick : benchTrack)(page, o)) };
    }
    console.log(JSON.stringify({ mode: o.mode, webgpu: o.webgpu, pkg: o.pkg, ...result }, null, 1));
  } finally {
    // A crashed browser must not hide the error that came first.
    await browser.close().catch(() => {});
    await server.close();
  }
}

main().catch((e) => {
  console.error(`bench-browser: ${e.message}`);
  process.exit(1);
});
