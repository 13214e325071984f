// A helper of the CPU fallback (encoder-pool.js): its own instance of the core on its own CPU core, with the
// main worker's weights, encoding the slices the main worker's run will reach next (src/web/encode_ahead.rs).
// Protocol as worker.js: {id, op, ...args} -> {id, ok: true, result} or {id, ok: false, error}.
import init, { encode_for_cache, init_compute, load_sam2 } from './pkg/memseg.js';

const ready = init();
let compute = null; // the Flex device, initialised once

const ops = {
  // Weights (ArrayBuffer) and overrides, exactly as the main worker loaded them.
  async load({ bytes, name, overrides }) {
    await ready;
    compute ??= init_compute('flex', null);
    await compute;
    load_sam2(new Uint8Array(bytes), name, overrides);
    return true;
  },
  // An 8-bit RGB slice -> {key, levels: [{shape, data: Float32Array}]} for the main worker's feature cache.
  async encode({ width, height, rgb }) {
    return encode_for_cache(width, height, rgb);
  },
  async memory() {
    const { memory } = await ready;
    return memory.buffer.byteLength;
  },
};

self.onmessage = async ({ data: { id, op, ...args } }) => {
  try {
    if (!ops[op]) throw new Error(`unknown operation '${op}'`);
    const result = await ops[op](args);
    const transfer = op === 'encode' ? result.levels.map((level) => level.data.buffer) : [];
    self.postMessage({ id, ok: true, result }, transfer);
  } catch (e) {
    self.postMessage({ id, ok: false, error: `${e?.name ?? 'Error'}: ${e?.message ?? String(e)}` });
  }
};
