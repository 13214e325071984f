// The page: talks to the compute worker (worker.js) and renders what it answers. No computation happens here
// beyond drawing: reading weights and images, the model, the masks' propagation and the exports all run in
// the worker, so the page stays responsive.
import * as adapter from './adapter.js';
import { BankView } from './bank.js';
import { showDice } from './chart.js';
import { checkVolumeFiles, describeEstimate, memoryNote } from './limits.js';
import { crashRecovery } from './recovery.js';
import { connect } from './rpc.js';
import * as weights from './weights.js';
import * as inputs from './inputs.js';
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

// A crashed worker is replaced (rpc.js) and the work brought back (see "Crash recovery" below).
const call = connect(() => new Worker(new URL('./worker.js', import.meta.url), { type: 'module' }), {
  onCrash: (reason) => recoverFromCrash(reason),
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

// Weights by file, download, this server's models/ or kept in this browser: weights.js.
const loadModel = (file) => weights.loadFile(file);
const modelOverrides = () => $('model-overrides').value.split('\n').map((s) => s.trim()).filter(Boolean);

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
  clearTimeout(resultsTimer);
  drawn.clear();
  history.clear();
  results = [];
  state.lastRun = null;
  renderResults();
  viewer.draw();
  updateControls();
  try {
    await Promise.all([store.forget(workKey), store.forgetResults(workKey)]);
    status('work-status', 'Forgot the painted masks and results kept for this volume.');
  } catch (e) {
    status('work-status', `Could not forget the kept work: ${e.message}`, 'error');
  }
}

// --- Results kept in this browser -----------------------------------------------------------------------
// A run's label maps and report are saved when it ends, and every few seconds while it runs, so that a
// reload, a crash or a lost GPU keeps what was computed. A finished run's exports work again after a reload
// (the worker rebuilds them from the kept labels: restoreRun); an unfinished one is shown, not exported.

let resultsTimer = null;
function persistResults(summary, { now = false } = {}) {
  clearTimeout(resultsTimer);
  const key = workKey;
  const slices = results.map((labels, slice) => [slice, labels]).filter(([, labels]) => labels);
  const save = () => store.saveResults(key, { slices, summary })
    .catch((e) => status('work-status', `Could not keep the results in this browser: ${e.message}`, 'error'));
  if (now) return save();
  resultsTimer = setTimeout(save, 5000);
}

async function restoreResults() {
  const kept = await store.loadResults(workKey).catch(() => undefined);
  if (!kept) return;
  for (const [slice, labels] of kept.slices) results[slice] = labels;
  const when = new Date(kept.savedAt).toLocaleString();
  if (kept.summary?.report) {
    try {
      const labels = new Uint8Array(state.volume.width * state.volume.height * state.volume.slices);
      for (const [slice, map] of kept.slices) labels.set(map, slice * map.length);
      await call('restoreRun', { labels, report: JSON.stringify(kept.summary.report) }, { transfer: [labels.buffer] });
      state.lastRun = kept.summary;
      status('run-status', `Restored the results of the run of ${when}, kept in this browser.`, 'ok');
    } catch (e) {
      status('run-status', `The results kept from ${when} could not be restored: ${e.message}`, 'error');
    }
  } else {
    status('run-status', `Restored an unfinished run of ${when} (${kept.slices.length} of ${state.volume.slices} slices); run again to finish it.`);
  }
}

/** Makes the current slice's result a painted mask, to correct with the brush and run again. */
function correctSlice() {
  if (!results[z] || state.running) return;
  viewer.app.beginStroke(z).set(results[z]);
  persist();
  viewer.draw();
  updateControls();
  status('work-status', `Slice ${z + 1}'s result is now a painted mask: correct it with the brush or the eraser, then Run again. ` +
    'Every painted slice conditions the propagation, so the correction steers the slices around it.');
}

async function volumeLoaded(meta) {
  state.volume = meta;
  state.lastRun = null;
  teaching.clear();
  drawn.clear();
  history.clear();
  results = [];
  const [sx, sy, sz] = meta.spacing_mm.map((v) => +v.toFixed(3));
  status('volume-status', `${meta.source}: ${meta.width}×${meta.height}, ${meta.slices} slices, ${sx}×${sy}×${sz} mm, ${meta.modality === 'other' ? 'modality not given' : meta.modality.toUpperCase()}; ${memoryNote(meta)}.`, 'ok');
  $('slice').max = meta.slices - 1;
  $('slice').disabled = false;
  $('viewer-empty').hidden = true;
  if (meta.classes.length) {
    state.classes = meta.classes.map(({ value, name }, i) => ({ value, name, color: PALETTE[i % PALETTE.length], visible: true }));
    state.activeClass = state.classes[0].value;
  }
  workKey = store.volumeKey(meta);
  await restoreWork();
  await restoreResults();
  inputs.volumeChanged();
  renderClasses();
  renderResults();
  showSlice(Math.floor(meta.slices / 2));
}

async function loadVolume(fileList) {
  const files = [...fileList].filter((f) => !f.name.startsWith('.'));
  if (!files.length) return;
  files.sort((a, b) => (a.webkitRelativePath || a.name).localeCompare(b.webkitRelativePath || b.name, undefined, { numeric: true }));
  const check = await checkVolumeFiles(files);
  if (check.error) return status('volume-status', `Not read: ${check.error}.`, 'error');
  status('volume-status', `Reading ${files.length} file${files.length > 1 ? 's' : ''} (${describeEstimate(check)})…`);
  try {
    volumeSource = { files };
    const entries = await Promise.all(files.map(async (f) => ({ name: f.webkitRelativePath || f.name, bytes: await f.arrayBuffer() })));
    await volumeLoaded(await call('loadVolume', { files: entries }, { transfer: entries.map((e) => e.bytes) }));
  } catch (e) {
    status('volume-status', `Could not read the images: ${e.message}`, 'error');
  }
}

async function loadSample() {
  status('volume-status', 'Generating the sample volume…');
  try {
    volumeSource = { sample: true };
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

/** The adapter's classes (adapter.js) join the class list, so that its results get names and colours. */
function adapterClasses(values) {
  const missing = values.filter((v) => !state.classes.some((c) => c.value === v));
  for (const value of missing) state.classes.push({ value, name: `class ${value}`, color: PALETTE[state.classes.length % PALETTE.length], visible: true });
  if (missing.length) {
    state.activeClass ??= state.classes[0].value;
    renderClasses();
    if (state.volume) persist();
  }
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

// The teaching view (bank.js): each class's memory bank at every step of the run, replayable afterwards.
const teaching = new BankView($('teaching'), {
  classes: () => state.classes,
  supportNames: () => state.lastRun?.report?.supports ?? [],
  onPick: (slice) => showSlice(slice),
});

async function run() {
  // Prompt-free (adapter.js): the adapter's classes on every slice, no masks or supports.
  const promptFree = adapter.selected();
  const { masks, classes: painted } = paintedMasks();
  // Supports from other volumes (inputs.js) join the painted masks, as `--support` joins `--mask` in the CLI.
  const supports = inputs.runSupports();
  const classes = promptFree ? adapter.info()?.classes ?? [] : [...new Set([...painted, ...inputs.supportClasses()])].sort((a, b) => a - b);
  if (promptFree && !classes.length) return status('run-status', 'Load an adapter file first (model panel).', 'error');
  if (promptFree) adapterClasses(classes);
  if (!promptFree && !masks.length && !supports.length) return status('run-status', 'Paint a mask on at least one slice (or add a support) first.', 'error');
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
  if (!promptFree) teaching.start({ slices: state.volume.slices, classes, mode: options.mode, options });
  try {
    const [op, args] = promptFree ? adapter.request(options.intensity)
      : ['run', { options, masks: masks.map((m) => ({ slice: m.slice, labels: m.labels.slice() })), supports }];
    const summary = await call(op, args, {
      onProgress(p) {
        results[p.slice] = p.labels;
        if (p.bank) teaching.push(p);
        persistResults({ partial: true, steps: p.step, total: p.total });
        state.progress = { step: p.step, total: p.total, slice: p.slice, elapsedMs: p.elapsedMs };
        $('run-progress').value = p.step / p.total;
        const left = (p.elapsedMs / p.step) * (p.total - p.step);
        status('run-status', `Slice ${p.step} / ${p.total} (slice ${p.slice + 1}${p.reverse ? ', reverse pass' : ''}) · ${seconds(p.elapsedMs)} elapsed · about ${seconds(left)} left`);
        if (p.slice === z) viewer.draw();
      },
    });
    if (summary.cancelled) {
      status('run-status', `Cancelled after ${summary.steps} of ${summary.total} slices.`);
      persistResults({ partial: true, steps: summary.steps, total: summary.total }, { now: true }); // not awaited: the UI frees now
    } else {
      state.lastRun = summary;
      persistResults(summary, { now: true });
      const perSlice = (summary.report.seconds * 1000) / summary.steps;
      status('run-status', `Done: ${summary.steps} slices in ${seconds(summary.report.seconds * 1000)} (${seconds(perSlice)} a slice).`, 'ok');
    }
  } catch (e) {
    status('run-status', `The run failed: ${e.message}`, 'error');
  } finally {
    state.running = false;
    $('run-progress').hidden = true;
    teaching.finish();
    renderResults();
    viewer.draw();
    updateControls();
  }
}

// --- Results and exports --------------------------------------------------------------------------------

function renderResults() {
  const table = $('results-table');
  const report = state.lastRun?.report;
  showDice($('dice-chart'), report, state.classes, state.volume?.slices);
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
  $('correct-slice').disabled = busy || !results[z];
  const { masks } = paintedMasks();
  $('drawn-status').textContent = masks.length
    ? `Painted: slice${masks.length > 1 ? 's' : ''} ${masks.map((m) => m.slice + 1).join(', ')}.`
    : 'Paint the structure on one or more slices with the brush.';
  $('run').disabled = busy || !state.model || !state.volume || (adapter.selected() ? !adapter.info() : !masks.length && !inputs.count());
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
  if (!busy && runStatus.className === 'status' && !/^(Cancel|Restored)/.test(runStatus.textContent)) {
    const missing = [!state.model && 'load a model', !state.volume && 'load a volume', adapter.missing(), !adapter.selected() && !masks.length && !inputs.count() && 'paint a mask'].filter(Boolean);
    runStatus.textContent = missing.length ? `To run: ${missing.join(', ')}.` : 'Ready: press Run.';
  }
  inputs.setBusy(busy);
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
  adapter.setup({ call, status, onChange: adapterClasses });
  weights.setup({
    call, status, overrides: modelOverrides,
    onModel(report) {
      state.model = report;
      updateControls();
      adapter.modelChanged();
    },
  });
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
  $('correct-slice').addEventListener('click', correctSlice);
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
  inputs.setup({
    call, state, status, slice: () => z, renderClasses, persist, palette: PALETTE, onChange: updateControls,
    paint(s, labels) { // a mask from a file: undoable like a brush stroke, kept like painting
      viewer.app.beginStroke(s).set(labels);
      persist();
      viewer.draw();
      updateControls();
    },
  });
  renderClasses();
  updateControls();
}

// For the browser tests and the console: the painted masks as plain arrays.
window.memsegApp = {
  paintedMasks: () => paintedMasks().masks.map(({ slice, labels }) => ({ slice, labels: Array.from(labels) })),
  results: () => results.map((r) => (r ? Array.from(r) : null)),
  slice: () => z,
  bankSteps: () => teaching.steps,
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
  await weights.start();
}

// --- Crash recovery -------------------------------------------------------------------------------------
// The worker crashed (rpc.js says why): a new one gets the device, the model and the volume back; the painted
// masks are saved first and come back with the volume (restoreWork), as after a reload. See recovery.js.

let volumeSource = null; // {files} (File objects, read again) or {sample: true}: what the volume came from
let runLost = false; // a run was in flight when the worker crashed

async function reloadVolume() {
  if (!volumeSource) return false;
  clearTimeout(saveTimer);
  // The latest strokes may still wait for persist()'s debounce: save them now, as restoreWork reads the store.
  if (workKey && (drawn.size || (await store.load(workKey)))) {
    await store.save(workKey, { classes: state.classes, activeClass: state.activeClass, masks: [...drawn.entries()] });
  }
  const meta = volumeSource.sample ? await call('loadSample') : await call('loadVolume', {
    files: await Promise.all(volumeSource.files.map(async (f) => ({ name: f.webkitRelativePath || f.name, bytes: await f.arrayBuffer() }))),
  });
  await volumeLoaded(meta);
  return true;
}

const recovery = crashRecovery({
  restart: () => call.restart(),
  steps: [
    ['the compute device', async () => { state.device = await call('init', { preference: params.get('backend') ?? 'auto' }); renderDevice(state.device); }],
    ['the model', async () => Boolean(await weights.reload())],
    ['the volume', reloadVolume],
  ],
  report: {
    started(reason) {
      runLost = state.running;
      state.model = null; // until the new worker has it again
      updateControls();
      notice(`The compute core crashed (${reason}). Restarting it and reloading the model and the volume…`);
    },
    recovered(reason, done, failed) {
      const back = done.filter((w) => w !== 'the compute device');
      notice(`The compute core crashed (${reason}) and was restarted${back.length ? `: ${back.join(' and ')} reloaded` : ''}; ` +
        `your painted masks are kept.${failed.length ? ` Could not reload ${failed.join('; ')}.` : ''}\n` +
        (runLost ? 'The run in progress was lost: press Run again.' : 'You can go on where you were.'));
      if (runLost) status('run-status', 'The run was interrupted by the crash: press Run again.', 'error');
      updateControls();
    },
    gaveUp(reason) {
      $('notice').hidden = true;
      state.model = null; // it went with the worker: nothing can run until the page is reloaded
      status('model-status', 'The model was lost with the crashed compute core: reload the page.', 'error');
      updateControls();
      showError(`The compute core crashed again (${reason}) soon after a first crash, so memseg stopped restarting it. ` +
        'Your painted masks are kept in this browser: reload the page to go on. If it keeps crashing, try a smaller ' +
        'volume, or the CPU with ?backend=flex.');
    },
  },
});
function recoverFromCrash(reason) {
  return recovery(reason);
}

function notice(text) {
  $('notice').textContent = text;
  $('notice').hidden = false;
}

main();
