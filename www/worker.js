// The compute worker: owns the WebAssembly core and the GPU device so the page never blocks.
// Protocol: the page posts {id, op, ...args}; the worker answers {id, ok: true, result} or
// {id, ok: false, error}. Long operations also post {id, type: 'progress', ...} while they run.
// A Rust panic is posted as {type: 'panic', message}.
import init, {
  encoder_stages, export_nifti, export_report, export_slice_png, init_compute, label_png, load_sam2, load_sample,
  load_volume, run_segmentation, run_selftest, slice_rgba, truth_slice, volume_values,
} from './pkg/memseg.js';

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

let running = null; // {id, cancel: boolean} while a segmentation runs

const ops = {
  async init({ preference = 'auto' }) {
    await ready;
    const probe = preference === 'flex' ? {} : await probeWebGpu();
    const compute = await init_compute(preference, probe.unavailable ?? null);
    return { ...compute, webgpuAdapter: compute.backend === 'wgpu' ? probe.adapter : null };
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
    return { ...report, name, ms: performance.now() - start };
  },
  // A preprocessed [1, 3, S, S] input (Float32Array) -> every encoder stage, {name: {shape, data}}.
  async encoderStages({ input }) {
    await ready;
    const start = performance.now();
    const stages = await encoder_stages(input);
    return { stages, ms: performance.now() - start };
  },
  // [{name, bytes: ArrayBuffer}] -> the volume's metadata.
  async loadVolume({ files }) {
    await ready;
    if (running) throw new Error('a segmentation is running: cancel it before loading another volume');
    return load_volume(files.map(({ name, bytes }) => ({ name, bytes: new Uint8Array(bytes) })));
  },
  async loadSample() {
    await ready;
    if (running) throw new Error('a segmentation is running: cancel it before loading another volume');
    return load_sample();
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
  // masks: [{slice, labels: Uint8Array}]. Posts {type: 'progress', step, total, slice, reverse, elapsedMs,
  // labels} after every slice; the 'cancel' op stops it between slices.
  async run({ options, masks }, id) {
    if (running) throw new Error('a segmentation is already running');
    running = { id, cancel: false };
    try {
      return await run_segmentation(options, masks, async (step) => {
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
  async exportNifti() {
    return export_nifti();
  },
  async exportReport() {
    return export_report();
  },
  async exportSlicePng({ z }) {
    return export_slice_png(z);
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
    self.postMessage({ id, ok: false, error: e?.message ?? String(e) });
  }
};
