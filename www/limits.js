// Up-front limits: what the page refuses before reading any image file, and the memory a volume will take.
// The Rust core enforces its limits while decoding (src/imaging/mod.rs: a side, slices, values); checking here
// first, from the files' sizes and headers, means a volume that cannot fit is refused with a readable message
// before its bytes are read into memory, instead of exhausting the worker. The numbers are the core's own,
// asked of the worker once it is up (app.js: setLimits), never a copy of them.

let limits = null; // {maxSide, maxSlices, maxValues}
let known = null;
// A check waits for the limits while the worker starts; it rejects when the core could not be loaded at all.
const whenKnown = new Promise((resolve, reject) => { known = { resolve, reject }; });
whenKnown.catch(() => {}); // only the checks that wait for it care

/** The core's limits (the worker's `limits` op); set again after a crash recovery, to the same numbers. */
export function setLimits(value) {
  limits = value;
  known.resolve();
}

/** The core could not answer (it was not loaded): checks say so instead of waiting for ever. */
export function limitsUnavailable(reason) {
  known.reject(new Error(reason));
}

// A wasm32 memory tops out at 4 GiB. The model, its activations at 1024 px and the run's working copies need
// about 1 GiB of it (SAM2.1-tiny's weights are 156 MB); the rest is what a volume may take while it is read.
const WASM_MEMORY = 4 * 2 ** 30;
const RESERVED = 2 ** 30;
export const VOLUME_BUDGET = WASM_MEMORY - RESERVED;

const mb = (bytes) => (bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`);

/** The memory a loaded volume holds: its values as 32-bit floats, plus the 8-bit RGB copy a run makes. */
export function loadedBytes({ width, height, slices, channels = 1 }) {
  return width * height * slices * (channels * 4 + 3);
}

export const memoryNote = (meta) => `about ${mb(loadedBytes(meta))} in memory`;

/** The first `n` bytes of a file, decompressed first when it is gzip (`.nii.gz`). */
async function head(file, n) {
  if (!file.name.toLowerCase().endsWith('.gz')) return new Uint8Array(await file.slice(0, n).arrayBuffer());
  const reader = file.stream().pipeThrough(new DecompressionStream('gzip')).getReader();
  const out = new Uint8Array(n);
  let got = 0;
  try {
    while (got < n) {
      const { done, value } = await reader.read();
      if (done) break;
      const take = Math.min(value.length, n - got);
      out.set(value.subarray(0, take), got);
      got += take;
    }
  } catch {
    return out.subarray(0, got); // a damaged archive: the core's reader says what is wrong with it
  } finally {
    reader.cancel().catch(() => {});
  }
  return out.subarray(0, got);
}

/** {width, height, slices, channels, volumes, bytesPerValue} from a NIfTI-1 header, or null (NIfTI-2 and anything else). */
async function niftiShape(file) {
  const h = await head(file, 348);
  if (h.length < 348) return null;
  const view = new DataView(h.buffer, h.byteOffset, h.length);
  const little = view.getInt32(0, true) === 348;
  if (!little && view.getInt32(0, false) !== 348) return null;
  const dim = (i) => view.getInt16(40 + 2 * i, little);
  const rank = dim(0);
  if (rank < 1 || rank > 7) return null;
  const extent = (i) => (i <= rank ? Math.max(1, dim(i)) : 1);
  let extra = 1; // components along the 5th+ axes are more values of each voxel (the reader refuses them)
  for (let i = 5; i <= rank; i++) extra *= extent(i);
  // Of a 4-D file, one volume is read; its bytes are all in the file.
  return { width: extent(1), height: extent(2), slices: extent(3), channels: extra, volumes: extent(4), bytesPerValue: Math.max(1, view.getInt16(72, little) / 8) };
}

/** {width, height, channels} from a PNG's IHDR, or null. */
async function pngShape(file) {
  const h = await head(file, 26);
  if (h.length < 26 || h[0] !== 0x89 || h[1] !== 0x50 || h[2] !== 0x4e || h[3] !== 0x47) return null;
  const view = new DataView(h.buffer, h.byteOffset, h.length);
  return { width: view.getUint32(16), height: view.getUint32(20), channels: [2, 3, 6].includes(h[25]) ? 3 : 1 };
}

/** The core's own wording for a shape over its limits (src/imaging/mod.rs), or null when it fits. */
function shapeError(name, { width, height, slices, channels }) {
  const { maxSide, maxSlices, maxValues } = limits;
  if (width > maxSide || height > maxSide) return `${name}: ${width}×${height} pixels is larger than the ${maxSide}×${maxSide} supported`;
  if (slices > maxSlices) return `${name}: ${slices} slices is more than the ${maxSlices} supported`;
  if (width * height * slices * channels > maxValues) {
    return `${name}: ${width}×${height}×${slices}×${channels} values is more than the ${maxValues} supported`;
  }
  return null;
}

/** The volume's shape when the headers tell it before reading: one NIfTI, or PNG slices. */
async function shapeOf(files) {
  const lower = files[0].name.toLowerCase();
  if (files.length === 1 && (lower.endsWith('.nii') || lower.endsWith('.nii.gz'))) {
    const shape = await niftiShape(files[0]);
    return shape && { ...shape, raw: shape.width * shape.height * shape.slices * shape.channels * shape.volumes * shape.bytesPerValue };
  }
  if (files.every((f) => f.name.toLowerCase().endsWith('.png'))) {
    const first = await pngShape(files[0]);
    return first && { ...first, slices: files.length, raw: first.width * first.height * first.channels * files.length };
  }
  return null;
}

/**
 * Checks image files before they are read: `{error}` for what cannot fit, otherwise `{estimate, exact}` (bytes
 * the volume will take in memory once loaded; exact when a header gave its shape).
 */
export async function checkVolumeFiles(files) {
  const name = files.length === 1 ? files[0].name : `${files.length} files`;
  const total = files.reduce((n, f) => n + f.size, 0);
  try {
    await whenKnown;
  } catch (e) {
    return { error: `${name}: cannot be checked against the core's limits (${e.message})` };
  }
  if (files.length > limits.maxSlices) return { error: `${name}: more than the ${limits.maxSlices} slices supported (one slice a file)` };
  const shape = await shapeOf(files);
  const problem = shape && shapeError(name, shape);
  if (problem) return { error: problem };
  // Unknown shape (DICOM, JPEG, TIFF): 16-bit samples are the common case, 4 bytes a value once loaded.
  const estimate = shape ? loadedBytes(shape) : total * 2 + total * 1.5;
  const peak = total + (shape?.raw ?? total) + estimate; // the files' bytes, decoded, converted
  if (peak > VOLUME_BUDGET) {
    return { error: `${name}: ${mb(total)} of files would need about ${mb(peak)} while being read, more than the ${mb(VOLUME_BUDGET)} ` +
      'the page can give a volume (WebAssembly memory is limited to 4 GiB, about 1 GiB of it for the model). Use fewer slices or a smaller crop.' };
  }
  return { estimate, exact: Boolean(shape), total };
}

export const describeEstimate = ({ estimate, exact, total }) =>
  `${mb(total)} of files; ${exact ? '' : 'roughly '}${mb(estimate)} in memory once loaded`;
