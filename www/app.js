// The page: talks to the compute worker (worker.js) and renders what it answers. No computation happens here
// beyond drawing: reading weights and images, the model, the masks' propagation and the exports all run in
// the worker, so the page stays responsive.
import { connect } from './rpc.js';
import * as store from './store.js';
import { Viewer } from './viewer.js';
import { zip } from './zip.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const PALETTE = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4', '#f032e6', '#bfef45'];

// Exposed for the browser tests and for curious users in the console.
const state = window.memsegState = {
  device: null, selftest: null, errors: [], messages: [],
  model: null, volume: null, classes: [], activeClass: null, running: false, lastRun: null, progress: null,
};
const drawn = new Map(); // slice -> Uint8Array label map painted by the user
const history = new Map(); // slice -> {undo: [snapshot], redo: [snapshot]}
let results = []; // slice -> Uint8Array label map from the last run (partial while it runs)
let z = 0;
let workKey = null; // the current volume's key in the browser's store (store.js)

const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
const call = connect(worker, {
  onPanic: (message) => showError(`The compute core crashed: ${message}\nReload the page to start again.`),
  onFailure: (reason) => showError(`Error: ${reason}`),
});
// The worker protocol, for the browser tests and the console (e.g. memsegCall('encoderStages', {...})).
window.memsegCall = call;

function showError(message) {
  state.errors.push(message);
  const box = $('error');
  box.textContent = message;
  box.hidden = false;
  document.body.dataset.state = 'error';
}

/** A panel's status line; kind 'error' for a recoverable failure (the app stays usable). */
function status(id, text, kind = '') {
  const el = $(id);
  el.textContent = text;
  el.className = `status ${kind}`;
  if (kind === 'error') state.messages.push(text);
}

function download(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

// --- Device and self-test -------------------------------------------------------------------------------

function renderDevice(d) {
  const gpu = d.backend === 'wgpu';
  $('device-summary').innerHTML = gpu
    ? '<span class="badge gpu">WebGPU</span>Computing on the GPU'
    : '<span class="badge cpu">CPU fallback</span>Computing on the CPU (WebAssembly)';
  $('device-backend').textContent = gpu ? `wgpu (${d.adapter?.graphics_api ?? 'WebGPU'})` : 'Flex (pure Rust, CPU)';
  $('device-vendor').textContent = d.webgpuAdapter?.vendor ?? '—';
  $('device-architecture').textContent = d.webgpuAdapter?.architecture ?? '—';
  const mib = d.adapter ? `${(d.adapter.max_storage_buffer_binding_size / 2 ** 20).toFixed(0)} MiB` : '—';
  $('device-binding').textContent = mib;
  $('device-reason').textContent = d.fallback_reason ?? (gpu ? '—' : 'CPU chosen by the ?backend=flex setting');
  $('device-details').hidden = false;
}

function renderSelftest(r) {
  const [rows, cols] = r.shape;
  const head = `<tr><th></th>${Array.from({ length: cols }, (_, j) => `<th>${j}</th>`).join('')}</tr>`;
  const body = Array.from({ length: rows }, (_, i) =>
    `<tr><th>${i}</th>${r.values.slice(i * cols, (i + 1) * cols).map((v) => `<td>${v.toFixed(6)}</td>`).join('')}</tr>`);
  $('selftest-table').innerHTML = head + body.join('');
  $('selftest-table').hidden = false;
  $('selftest-summary').textContent = `${rows}×${cols} result in ${r.ms.toFixed(1)} ms`;
}

async function selftest() {
  $('selftest-rerun').disabled = true;
  try {
    state.selftest = await call('selftest');
    renderSelftest(state.selftest);
    document.body.dataset.state = 'ready';
  } catch (e) {
    showError(`Self-test failed: ${e.message}`);
  } finally {
    $('selftest-rerun').disabled = false;
  }
}

// --- Model ----------------------------------------------------------------------------------------------

async function loadModel(file) {
  if (!file) return;
  const overrides = $('model-overrides').value.split('\n').map((s) => s.trim()).filter(Boolean);
  status('model-status', `Reading ${file.name} (${(file.size / 1e6).toFixed(1)} MB)…`);
  try {
    const bytes = await file.arrayBuffer();
    const report = await call('loadSam2', { bytes, name: file.name, overrides }, { transfer: [bytes] });
    state.model = report;
    status('model-status', `${report.generation} loaded from ${file.name} (${report.format}, ${report.image_size} px input) in ${(report.ms / 1000).toFixed(1)} s.`, 'ok');
  } catch (e) {
    status('model-status', `Could not load ${file.name}: ${e.message}`, 'error');
  }
  updateControls();
}

// --- Volume and viewer ----------------------------------------------------------------------------------

const viewer = new Viewer($('view'), {
  classes: () => state.classes,
  drawn: (s) => drawn.get(s),
  result: (s) => results[s],
  opacity: () => $('opacity').value / 100,
  outline: () => $('outline').checked,
  tool: () => document.querySelector('input[name=tool]:checked').value,
  brushRadius: () => Number($('brush-size').value) / 2,
  activeClass: () => state.activeClass,
  canPaint: () => Boolean(state.volume && state.activeClass && !state.running),
  beginStroke(s) {
    const h = history.get(s) ?? { undo: [], redo: [] };
    history.set(s, h);
    h.undo.push(drawn.get(s)?.slice() ?? null);
    h.redo = [];
    if (!drawn.has(s)) drawn.set(s, new Uint8Array(state.volume.width * state.volume.height));
    return drawn.get(s);
  },
  endStroke() {
    persist();
    updateControls();
  },
});

let shown = 0; // the latest slice request, so that a slow answer never replaces a newer one
async function showSlice(next) {
  if (!state.volume) return;
  z = Math.max(0, Math.min(state.volume.slices - 1, next));
  $('slice').value = z;
  updateControls();
  const token = ++shown;
  try {
    const rgba = await call('slice', { z, window: $('window').value });
    if (token === shown) viewer.setSlice(z, state.volume.width, state.volume.height, rgba);
  } catch (e) {
    status('volume-status', `Cannot show slice ${z}: ${e.message}`, 'error');
  }
  updateControls();
}

// Saves the classes and painted masks in IndexedDB (debounced), so a reload or a crash loses nothing.
let saveTimer = null;
function persist() {
  clearTimeout(saveTimer);
  const key = workKey;
  saveTimer = setTimeout(() => {
    const work = { classes: state.classes, activeClass: state.activeClass, masks: [...drawn.entries()] };
    store.save(key, work).catch((e) => status('work-status', `Could not keep the work in this browser: ${e.message}`, 'error'));
  }, 250);
}

/** The work saved for this volume by an earlier visit, if any. */
async function restoreWork() {
  const saved = await store.load(workKey).catch(() => undefined);
  if (!saved) return;
  state.classes = saved.classes;
  state.activeClass = saved.activeClass;
  for (const [slice, labels] of saved.masks) drawn.set(slice, labels);
  status('work-status', `Restored ${saved.masks.length} painted slice${saved.masks.length === 1 ? '' : 's'} kept in this browser.`, 'ok');
}

async function forgetWork() {
  clearTimeout(saveTimer);
  drawn.clear();
  history.clear();
  viewer.draw();
  updateControls();
  try {
    await store.forget(workKey);
    status('work-status', 'Forgot the painted masks kept for this volume.');
  } catch (e) {
    status('work-status', `Could not forget the kept masks: ${e.message}`, 'error');
  }
}

async function volumeLoaded(meta) {
  state.volume = meta;
  state.lastRun = null;
  drawn.clear();
  history.clear();
  results = [];
  const [sx, sy, sz] = meta.spacing_mm.map((v) => +v.toFixed(3));
  status('volume-status', `${meta.source}: ${meta.width}×${meta.height}, ${meta.slices} slices, ${sx}×${sy}×${sz} mm, ${meta.modality === 'other' ? 'modality not given' : meta.modality.toUpperCase()}.`, 'ok');
  $('slice').max = meta.slices - 1;
  $('slice').disabled = false;
  $('viewer-empty').hidden = true;
  if (meta.classes.length) {
    state.classes = meta.classes.map(({ value, name }, i) => ({ value, name, color: PALETTE[i % PALETTE.length], visible: true }));
    state.activeClass = state.classes[0].value;
  }
  workKey = store.volumeKey(meta);
  await restoreWork();
  renderClasses();
  renderResults();
  showSlice(Math.floor(meta.slices / 2));
}

async function loadVolume(fileList) {
  const files = [...fileList].filter((f) => !f.name.startsWith('.'));
  if (!files.length) return;
  files.sort((a, b) => (a.webkitRelativePath || a.name).localeCompare(b.webkitRelativePath || b.name, undefined, { numeric: true }));
  status('volume-status', `Reading ${files.length} file${files.length > 1 ? 's' : ''}…`);
  try {
    const entries = await Promise.all(files.map(async (f) => ({ name: f.webkitRelativePath || f.name, bytes: await f.arrayBuffer() })));
    await volumeLoaded(await call('loadVolume', { files: entries }, { transfer: entries.map((e) => e.bytes) }));
  } catch (e) {
    status('volume-status', `Could not read the images: ${e.message}`, 'error');
  }
}

async function loadSample() {
  status('volume-status', 'Generating the sample volume…');
  try {
    await volumeLoaded(await call('loadSample'));
  } catch (e) {
    status('volume-status', `Could not make the sample: ${e.message}`, 'error');
  }
}

// --- Classes and painting -------------------------------------------------------------------------------

function renderClasses() {
  const list = $('class-list');
  list.replaceChildren(...state.classes.map((c) => {
    const li = document.createElement('li');
    li.innerHTML = `<label class="pick"><input type="radio" name="active-class" value="${c.value}">
      <span class="swatch" style="background:${c.color}"></span><span class="name"></span>
      <span class="value">${c.value}</span></label>
      <label class="visible" title="Show this class"><input type="checkbox"> show</label>`;
    li.querySelector('.name').textContent = c.name;
    const radio = li.querySelector('input[type=radio]');
    radio.checked = c.value === state.activeClass;
    radio.addEventListener('change', () => { state.activeClass = c.value; persist(); });
    const visible = li.querySelector('input[type=checkbox]');
    visible.checked = c.visible;
    visible.addEventListener('change', () => { c.visible = visible.checked; viewer.draw(); });
    return li;
  }));
  $('class-color').value = PALETTE[state.classes.length % PALETTE.length];
  if (!state.classes.length) list.innerHTML = '<li class="hint">No class yet: add one below (or load the sample).</li>';
}

function addClass(name, color) {
  const used = new Set(state.classes.map((c) => c.value));
  const value = [...Array(255).keys()].map((i) => i + 1).find((v) => !used.has(v));
  state.classes.push({ value, name, color, visible: true });
  state.activeClass = value;
  renderClasses();
  persist();
  updateControls();
}

function undoRedo(from, to) {
  const h = history.get(z);
  if (!h?.[from].length) return;
  h[to].push(drawn.get(z)?.slice() ?? null);
  const snapshot = h[from].pop();
  snapshot ? drawn.set(z, snapshot) : drawn.delete(z);
  persist();
  viewer.draw();
  updateControls();
}

function clearSlice() {
  if (!drawn.has(z)) return;
  viewer.app.beginStroke(z).fill(0);
  drawn.delete(z);
  persist();
  viewer.draw();
  updateControls();
}

/** The painted slices holding some label, with the classes they hold. */
function paintedMasks() {
  const masks = [];
  const classes = new Set();
  for (const [slice, labels] of [...drawn.entries()].sort((a, b) => a[0] - b[0])) {
    let any = false;
    for (const v of labels) if (v) { classes.add(v); any = true; }
    if (any) masks.push({ slice, labels });
  }
  return { masks, classes: [...classes].sort((a, b) => a - b) };
}

// --- Run ------------------------------------------------------------------------------------------------

const optionalInt = (id) => ($(id).value === '' ? null : Number($(id).value));
const seconds = (ms) => (ms < 1000 ? `${Math.round(ms)} ms` : ms < 60_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`);

async function run() {
  const { masks, classes } = paintedMasks();
  if (!masks.length) return status('run-status', 'Paint a mask on at least one slice first.', 'error');
  const options = {
    classes, mode: $('mode').value, intensity: $('window').value,
    maxConditioning: optionalInt('max-conditioning'), selectSupports: optionalInt('select-supports'),
    similarityEviction: $('similarity-eviction').checked,
  };
  state.running = true;
  state.lastRun = null;
  state.progress = null;
  results = [];
  viewer.draw();
  updateControls();
  const names = classes.map((v) => state.classes.find((c) => c.value === v)?.name ?? v).join(', ');
  status('run-status', `Starting (${names})…`);
  $('run-progress').hidden = false;
  $('run-progress').value = 0;
  try {
    const summary = await call('run', { options, masks: masks.map((m) => ({ slice: m.slice, labels: m.labels.slice() })) }, {
      onProgress(p) {
        results[p.slice] = p.labels;
        state.progress = { step: p.step, total: p.total, slice: p.slice, elapsedMs: p.elapsedMs };
        $('run-progress').value = p.step / p.total;
        const left = (p.elapsedMs / p.step) * (p.total - p.step);
        status('run-status', `Slice ${p.step} / ${p.total} (slice ${p.slice + 1}${p.reverse ? ', reverse pass' : ''}) · ${seconds(p.elapsedMs)} elapsed · about ${seconds(left)} left`);
        if (p.slice === z) viewer.draw();
      },
    });
    if (summary.cancelled) {
      status('run-status', `Cancelled after ${summary.steps} of ${summary.total} slices.`);
    } else {
      state.lastRun = summary;
      const perSlice = (summary.report.seconds * 1000) / summary.steps;
      status('run-status', `Done: ${summary.steps} slices in ${seconds(summary.report.seconds * 1000)} (${seconds(perSlice)} a slice).`, 'ok');
    }
  } catch (e) {
    status('run-status', `The run failed: ${e.message}`, 'error');
  } finally {
    state.running = false;
    $('run-progress').hidden = true;
    renderResults();
    viewer.draw();
    updateControls();
  }
}

// --- Results and exports --------------------------------------------------------------------------------

function renderResults() {
  const table = $('results-table');
  const report = state.lastRun?.report;
  table.hidden = !report;
  if (!report) return;
  const name = (v) => state.classes.find((c) => c.value === v)?.name ?? `class ${v}`;
  const truth = report.per_class.some((c) => c.dice !== null);
  table.innerHTML = `<tr><th>Class</th><th>Voxels</th><th>Volume</th>${truth ? '<th>Dice</th>' : ''}</tr>` +
    report.per_class.map((c) => `<tr><td class="left">${name(c.class)}</td><td>${c.voxels}</td><td>${c.volume_ml.toFixed(2)} mL</td>${
      truth ? `<td>${c.dice === null ? '—' : c.dice.toFixed(3)}</td>` : ''}</tr>`).join('');
}

async function exportWith(what, make) {
  try {
    await make();
  } catch (e) {
    status('run-status', `Could not export the ${what}: ${e.message}`, 'error');
  }
}

const exporters = {
  'export-nifti': () => exportWith('labels', async () => download(new Blob([await call('exportNifti')]), 'labels.nii.gz')),
  'export-report': () => exportWith('report', async () =>
    download(new Blob([await call('exportReport')], { type: 'application/json' }), 'report.json')),
  'export-png': () => exportWith('PNG masks', async () => {
    const files = [];
    for (let s = 0; s < state.volume.slices; s++) {
      const { name, png } = await call('exportSlicePng', { z: s });
      files.push({ name, bytes: png });
    }
    download(zip(files), 'masks.zip');
  }),
};

// --- Controls -------------------------------------------------------------------------------------------

function updateControls() {
  const h = history.get(z);
  const busy = state.running;
  $('undo').disabled = busy || !h?.undo.length;
  $('redo').disabled = busy || !h?.redo.length;
  $('clear-slice').disabled = busy || !drawn.has(z);
  $('forget-work').disabled = busy || !state.volume;
  const { masks } = paintedMasks();
  $('drawn-status').textContent = masks.length
    ? `Painted: slice${masks.length > 1 ? 's' : ''} ${masks.map((m) => m.slice + 1).join(', ')}.`
    : 'Paint the structure on one or more slices with the brush.';
  $('run').disabled = busy || !state.model || !state.volume || !masks.length;
  $('run').hidden = busy;
  $('cancel').hidden = !busy;
  for (const id of Object.keys(exporters)) $(id).disabled = busy || !state.lastRun;
  for (const id of ['model-file', 'image-files', 'image-folder', 'load-sample']) $(id).disabled = busy;
  $('viewer-empty').hidden = Boolean(state.volume);
  if (state.volume) {
    const name = state.volume.slice_names[z];
    $('slice-label').textContent = `Slice ${z + 1} / ${state.volume.slices}${name ? ` · ${name}` : ''}${drawn.has(z) ? ' · painted' : ''}`;
  }
  // The run panel's hint says what is missing, unless it shows a result, an error or a cancellation.
  const runStatus = $('run-status');
  if (!busy && runStatus.className === 'status' && !runStatus.textContent.startsWith('Cancel')) {
    const missing = [!state.model && 'load a model', !state.volume && 'load a volume', !masks.length && 'paint a mask'].filter(Boolean);
    runStatus.textContent = missing.length ? `To run: ${missing.join(', ')}.` : 'Ready: press Run.';
  }
  document.body.classList.toggle('running', busy);
}

function dropZone(el, onFiles) {
  el.addEventListener('dragover', (e) => { e.preventDefault(); el.classList.add('dragging'); });
  el.addEventListener('dragleave', () => el.classList.remove('dragging'));
  el.addEventListener('drop', (e) => {
    e.preventDefault();
    el.classList.remove('dragging');
    if (!state.running) onFiles(e.dataTransfer.files);
  });
}

function wire() {
  $('model-overrides').value = params.getAll('override').join('\n');
  $('model-file').addEventListener('change', (e) => loadModel(e.target.files[0]));
  dropZone($('model-panel'), (files) => loadModel(files[0]));
  $('image-files').addEventListener('change', (e) => loadVolume(e.target.files));
  $('image-folder').addEventListener('change', (e) => loadVolume(e.target.files));
  dropZone($('image-panel'), loadVolume);
  $('load-sample').addEventListener('click', loadSample);
  $('add-class').addEventListener('submit', (e) => {
    e.preventDefault();
    addClass($('class-name').value.trim(), $('class-color').value);
    $('class-name').value = '';
  });
  $('brush-size').addEventListener('input', () => { $('brush-size-value').textContent = $('brush-size').value; });
  $('undo').addEventListener('click', () => undoRedo('undo', 'redo'));
  $('redo').addEventListener('click', () => undoRedo('redo', 'undo'));
  $('clear-slice').addEventListener('click', clearSlice);
  $('forget-work').addEventListener('click', forgetWork);
  $('run').addEventListener('click', run);
  $('cancel').addEventListener('click', () => {
    status('run-status', 'Cancelling after the current slice…');
    call('cancel');
  });
  for (const [id, fn] of Object.entries(exporters)) $(id).addEventListener('click', fn);
  $('opacity').addEventListener('input', () => viewer.draw());
  $('outline').addEventListener('change', () => viewer.draw());
  $('window').addEventListener('change', () => showSlice(z));
  $('slice').addEventListener('input', () => showSlice(Number($('slice').value)));
  const zoomBy = (f) => { viewer.setZoom(viewer.zoom * f); $('zoom-value').textContent = `${Math.round(viewer.zoom * 100)}%`; };
  $('zoom-in').addEventListener('click', () => zoomBy(1.25));
  $('zoom-out').addEventListener('click', () => zoomBy(0.8));
  $('zoom-reset').addEventListener('click', () => zoomBy(1 / viewer.zoom));
  $('view').addEventListener('wheel', (e) => {
    if (!state.volume) return;
    e.preventDefault();
    if (e.ctrlKey) zoomBy(e.deltaY < 0 ? 1.1 : 1 / 1.1);
    else showSlice(z + Math.sign(e.deltaY));
  }, { passive: false });
  $('selftest-rerun').addEventListener('click', selftest);
  renderClasses();
  updateControls();
}

// For the browser tests and the console: the painted masks as plain arrays.
window.memsegApp = {
  paintedMasks: () => paintedMasks().masks.map(({ slice, labels }) => ({ slice, labels: Array.from(labels) })),
  results: () => results.map((r) => (r ? Array.from(r) : null)),
  slice: () => z,
};

async function main() {
  wire();
  const preference = params.get('backend') ?? 'auto';
  try {
    state.device = await call('init', { preference });
    renderDevice(state.device);
  } catch (e) {
    $('device-summary').textContent = 'No compute device';
    return showError(`Could not start the compute device: ${e.message}`);
  }
  await selftest();
}

main();
