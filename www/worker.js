// The compute worker: owns the WebAssembly core and the GPU device so the page never blocks.
// Protocol: the page posts {id, op, ...args}; the worker answers {id, ok: true, result} or
// {id, ok: false, error}. Long operations also post {id, type: 'progress', ...} while they run.
// A Rust panic is posted as {type: 'panic', message}; a trap without one (WebAssembly out of memory, "memory
// access out of bounds", "unreachable") as {type: 'crash', message}; a lost GPU device as {type: 'device-lost',
// reason, message}. After any of them this worker cannot be trusted: the page replaces it (rpc.js, app.js).
import init, {
  encoder_stages, export_nifti, export_report, export_slice_png, init_compute, label_png, limits, load_sam2,
  load_sample, load_volume, restore_run, run_segmentation, run_selftest, slice_rgba, truth_slice, volume_values,
} from './pkg/memseg.js';
import * as inputs from './pkg/memseg.js';

// Optional exports (diagnostics) are looked up at call time, so an older build of the core still loads.
import * as core from './pkg/memseg.js';
import { loseDevice, watchDeviceLoss } from './device-watch.js';
import { EncoderPool, helpersFor, visitOrder } from './encoder-pool.js';

watchDeviceLoss((lost) => self.postMessage({ type: 'device-lost', ...lost }));

const ready = init().catch((e) => {
  throw new Error(`the WebAssembly core could not be loaded (${e.message}); build it with ./build.sh serve`);
});

// wgpu panics instead of failing when there is no WebGPU, so probe it here first.
async function probeWebGpu() {
  if (!navigator.gpu) return { unavailable: 'this browser exposes no WebGPU (navigator.gpu is missing)' };
  let adapter;
  try {
    adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (e) {
    return { unavailable: `WebGPU adapter request failed: ${e.message}` };
  }
  if (!adapter) return { unavailable: 'WebGPU is present but found no adapter' };
  const info = adapter.info ?? {};
  return {
    adapter: {
      vendor: info.vendor || 'unknown', architecture: info.architecture || 'unknown',
      description: info.description || '', isFallbackAdapter: Boolean(info.isFallbackAdapter),
    },
  };
}

// Lets the worker's event loop run (a macrotask, so queued messages such as 'cancel' are handled):
// on the CPU backend a segmentation step never awaits anything, so without this no message would get
// through until the run ends.
const channel = new MessageChannel();
const waiting = [];
channel.port1.onmessage = () => waiting.shift()?.();
function yieldToEventLoop() {
  return new Promise((resolve) => {
    waiting.push(resolve);
    channel.port2.postMessage(0);
  });
}

const asInputs = (files) => files.map(({ name, bytes }) => ({ name, bytes: new Uint8Array(bytes) }));

let running = null; // {id, cancel: boolean} while a segmentation runs
let pool = null; // helpers encoding slices ahead on the other cores (CPU fallback only; encoder-pool.js)
let volumeSlices = 0; // the loaded volume's slice count, for the helpers' forecast of a run's order
let modelSize = 0; // the loaded model's input size

// What the helpers need to encode slices of the loaded volume for the loaded model's cache.
const fromCore = (intensity) => ({
  input: (z) => core.model_input_slice(z, intensity),
  keep: ({ key, levels }) => core.cache_features(key, levels),
});

// While nothing runs (the user paints), the helpers encode the slices a run from the middle would start
// with, under the page's default intensity ('auto'): a run with another window finds none of them.
function encodeWhileIdle() {
  if (!pool || running || !volumeSlices || !modelSize) return;
  const order = visitOrder({ mode: 'propagate-middle', slices: volumeSlices });
  pool.idle({ order, ...fromCore('auto'), cacheBytes: limits().featureCacheBytes, imageSize: modelSize });
}

const ops = {
  // helpers: encoder helpers for the CPU fallback (default: one per core beyond this worker's, at most 3).
  async init({ preference = 'auto', helpers }) {
    await ready;
    const probe = preference === 'flex' ? {} : await probeWebGpu();
    const compute = await init_compute(preference, probe.unavailable ?? null);
    // On the GPU the device is the bottleneck, not this thread: no helpers.
    const count = compute.backend === 'wgpu' ? 0 : helpersFor(navigator.hardwareConcurrency, helpers);
    if (count > 0) pool = new EncoderPool(count);
    return { ...compute, webgpuAdapter: compute.backend === 'wgpu' ? probe.adapter : null, encoderHelpers: count };
  },
  // The core's input limits, {maxSide, maxSlices, maxValues}: the page checks a volume's files against them
  // before reading them (limits.js). Needs the core loaded, not a compute device.
  async limits() {
    await ready;
    return limits();
  },
  async selftest() {
    await ready;
    const start = performance.now();
    const result = await run_selftest();
    return { ...result, ms: performance.now() - start };
  },
  // Weights (ArrayBuffer: an official .pt or compact weights from `memseg convert`) and Meta-style config
  // overrides -> the load report, with the file's format and the model's image_size.
  async loadSam2({ bytes, name, overrides = [] }) {
    await ready;
    if (running) throw new Error('a segmentation is running: cancel it before loading another model');
    const start = performance.now();
    const report = load_sam2(new Uint8Array(bytes), name, overrides);
    pool?.load(bytes, name, overrides);
    modelSize = report.image_size;
    encodeWhileIdle();
    return { ...report, name, ms: performance.now() - start };
  },
  // A preprocessed [1, 3, S, S] input (Float32Array) -> every encoder stage, {name: {shape, data}}.
  async encoderStages({ input }) {
    await ready;
    const start = performance.now();
    const stages = await encoder_stages(input);
    return { stages, ms: performance.now() - start };
  },
  // [{name, bytes: ArrayBuffer}], the volume of a 4-D NIfTI (0-based, or null) -> the volume's metadata.
  async loadVolume({ files, volume = null }) {
    await ready;
    if (running) throw new Error('a segmentation is running: cancel it before loading another volume');
    const meta = load_volume(files.map(({ name, bytes }) => ({ name, bytes: new Uint8Array(bytes) })), volume ?? undefined);
    volumeSlices = meta.slices;
    encodeWhileIdle();
    return meta;
  },
  async loadSample() {
    await ready;
    if (running) throw new Error('a segmentation is running: cancel it before loading another volume');
    const meta = load_sample();
    volumeSlices = meta.slices;
    encodeWhileIdle();
    return meta;
  },
  async slice({ z, window }) {
    return slice_rgba(z, window);
  },
  async truthSlice({ z }) {
    return truth_slice(z) ?? null;
  },
  async volumeValues() {
    return volume_values();
  },
  // options: {classes, mode, intensity, maxConditioning, selectSupports, similarityEviction};
  // masks: [{slice, labels: Uint8Array}]; supports: support records from other volumes (inputs.js).
  // Posts {type: 'progress', step, total, slice, reverse, elapsedMs, labels, bank} after every slice (bank: the
  // memory bank snapshot of the teaching view, src/session/bank_snapshot.rs); the 'cancel' op stops it between slices.
  // With encoder helpers, the summary says what they did: encodeAhead {helpers, encoded, kept}.
  async run({ options, masks, supports }, id) {
    if (running) throw new Error('a segmentation is already running');
    running = { id, cancel: false };
    const conditioned = [...masks.map((m) => m.slice), ...(options.prompts ?? []).map((p) => p.slice)];
    const order = visitOrder({ mode: options.mode, slices: volumeSlices, painted: conditioned, externalSupports: (supports ?? []).length > 0 });
    // Tracking again from corrections visits a few slices, not this order: the helpers would encode the wrong ones.
    const open = core.correction_round();
    const resuming = open !== undefined && (options.prompts ?? []).some((p) => p.round === open);
    if (!resuming) pool?.start({ order, ...fromCore(options.intensity) });
    try {
      const summary = await run_segmentation(options, masks, supports ?? [], async (step) => {
        self.postMessage({ id, type: 'progress', ...step }, [step.labels.buffer]);
        await pool?.progress(step.step);
        await yieldToEventLoop();
        return !running.cancel;
      });
      return pool ? { ...summary, encodeAhead: pool.stop() } : summary;
    } finally {
      pool?.stop();
      running = null;
    }
  },
  // A slice's clicks and box for one class -> SAM's mask at once (src/web/prompts.rs): request {prompt:
  // {slice, class, box?, clicks}, intensity}; painted: the slice's painted label map or null.
  async promptSlice({ request, painted }) {
    await ready;
    if (running) throw new Error('a segmentation is running: wait for it or cancel it first');
    return core.prompt_slice(request, painted ?? undefined);
  },
  // A correction on a slice the last run tracked (src/web/corrections.rs): request {prompt: {slice, class, round,
  // box?, clicks}} -> {mask, iou} on the run's memory.
  async correctSlice({ request }) {
    await ready;
    if (running) throw new Error('a segmentation is running: wait for it or cancel it first');
    return core.correct_slice(request);
  },
  async discardCorrection({ slice, cls }) {
    core.discard_correction(slice, cls);
  },
  // Masks, label volumes and supports from files (src/web/inputs.rs): files are [{name, bytes: ArrayBuffer}].
  async maskForSlice({ bytes, name, activeClass }) {
    return inputs.mask_for_slice(new Uint8Array(bytes), name, activeClass ?? undefined);
  },
  async importLabels({ files }) {
    return inputs.import_labels(asInputs(files));
  },
  async importedSlice({ z }) {
    return inputs.imported_slice(z);
  },
  async useImportedAsTruth() {
    return inputs.use_imported_as_truth();
  },
  async loadSupportVolume({ files }) {
    if (running) throw new Error('a segmentation is running: wait for it or cancel it first');
    return inputs.load_support_volume(asInputs(files));
  },
  async loadSupportSample() {
    return inputs.load_support_sample();
  },
  async supportSourceLabels({ files }) {
    return inputs.support_source_labels(asInputs(files));
  },
  async supportSlice({ z, mask, maskName }) {
    return inputs.support_slice(z, mask ? new Uint8Array(mask) : undefined, maskName ?? undefined);
  },
  // Prompt-free adapters (src/web/prompt_free.rs, www/adapter.js): an adapter file folded into the loaded model,
  // then a run with no masks; progress and 'cancel' as for 'run'.
  async loadAdapter({ bytes, name }) {
    await ready;
    if (running) throw new Error('a segmentation is running: cancel it before loading an adapter');
    return core.load_adapter(new Uint8Array(bytes), name);
  },
  async unloadAdapter() {
    await ready;
    return core.unload_adapter();
  },
  async runPromptFree({ options }, id) {
    if (running) throw new Error('a segmentation is already running');
    running = { id, cancel: false };
    try {
      return await core.run_prompt_free(options, async (step) => {
        self.postMessage({ id, type: 'progress', ...step }, [step.labels.buffer]);
        await yieldToEventLoop();
        return !running.cancel;
      });
    } finally {
      running = null;
    }
  },
  async cancel() {
    if (running) running.cancel = true;
    return Boolean(running);
  },
  // WebAssembly memory in bytes, this worker's and each encoder helper's: it only grows, so after a run it is
  // that run's peak (the bench reports it; scripts/bench-browser.mjs).
  async memory() {
    const { memory } = await ready;
    return { worker: memory.buffer.byteLength, helpers: (await pool?.memory()) ?? [] };
  },
  async exportNifti() {
    return export_nifti();
  },
  async exportReport() {
    return export_report();
  },
  async exportSlicePng({ z }) {
    return export_slice_png(z);
  },
  // A finished run's labels (Uint8Array, slice-major) and report (JSON text), kept by the page, become what
  // the exports write again (after a reload).
  async restoreRun({ labels, report }) {
    await ready;
    return restore_run(labels, report);
  },
  // Diagnostics for the page's crash recovery (the browser tests, the console): a real Rust panic, and the
  // WebGPU device destroyed under the core (seen as lost).
  async debugPanic({ message = 'debugPanic' }) {
    await ready;
    if (!core.debug_panic) throw new Error('this build of the core has no debug_panic');
    return core.debug_panic(message);
  },
  async debugLoseDevice() {
    return loseDevice();
  },
  // From now on at most `extraMb` more MB may be allocated (src/web/heap.rs): the next large step runs out of
  // memory for real, and the page recovers from it.
  async debugHeapLimit({ extraMb }) {
    await ready;
    if (!core.debug_heap_limit) throw new Error('this build of the core has no debug_heap_limit');
    return core.debug_heap_limit(extraMb * 2 ** 20);
  },
  async labelPng({ width, height, labels }) {
    return label_png(width, height, labels);
  },
};

self.onmessage = async ({ data: { id, op, ...args } }) => {
  try {
    if (!ops[op]) throw new Error(`unknown operation '${op}'`);
    self.postMessage({ id, ok: true, result: await ops[op](args, id) });
  } catch (e) {
    if (isCrash(e)) self.postMessage({ type: 'crash', message: outOfMemory() ?? `${e.name}: ${e.message}` });
    self.postMessage({ id, ok: false, error: e?.message ?? String(e) });
  }
};

// A trap outside an operation's own promise (in a future the core polls): when it was an allocation that
// failed, the page is told so rather than getting a bare "unreachable".
for (const type of ['error', 'unhandledrejection']) {
  self.addEventListener(type, (event) => {
    const oom = outOfMemory();
    if (!oom) return;
    event.preventDefault();
    self.postMessage({ type: 'crash', message: oom });
  });
}

const mb = (bytes) => `${(bytes / 2 ** 20).toFixed(bytes < 10 * 2 ** 20 ? 1 : 0)} MB`;

/** The core's account of an allocation that failed (src/web/heap.rs), or null when none has. */
function outOfMemory() {
  let failure = [];
  try {
    failure = core.heap_failure?.() ?? [];
  } catch {
    return null; // the core never started
  }
  const [asked, live] = failure;
  if (asked === undefined) return null;
  return `out of memory: ${mb(asked)} more could not be allocated with ${mb(live)} in use; a page's ` +
    'WebAssembly memory holds at most 4 GiB: try a smaller volume, a crop, or the 512 resolution';
}

/**
 * A trap of the WebAssembly core (a RuntimeError: "unreachable" after a panic or an allocation failure,
 * "memory access out of bounds") or its memory unable to grow (RangeError): the core's state is lost.
 */
function isCrash(e) {
  return e instanceof WebAssembly.RuntimeError || (e instanceof RangeError && /memory|allocation/i.test(e.message));
}
