// The compute worker: owns the WebAssembly core and the GPU device so the page never blocks.
// Protocol: the page posts {id, op, ...args}; the worker answers {id, ok: true, result} or
// {id, ok: false, error}. A Rust panic is also posted as {type: 'panic', message}.
import init, { encoder_stages, init_compute, load_sam2, run_selftest } from './pkg/memseg.js';

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
    return load_sam2(new Uint8Array(bytes), name, overrides);
  },
  // A preprocessed [1, 3, S, S] input (Float32Array) -> every encoder stage, {name: {shape, data}}.
  async encoderStages({ input }) {
    await ready;
    const start = performance.now();
    const stages = await encoder_stages(input);
    return { stages, ms: performance.now() - start };
  },
};

self.onmessage = async ({ data: { id, op, ...args } }) => {
  try {
    if (!ops[op]) throw new Error(`unknown operation '${op}'`);
    self.postMessage({ id, ok: true, result: await ops[op](args) });
  } catch (e) {
    self.postMessage({ id, ok: false, error: e?.message ?? String(e) });
  }
};
