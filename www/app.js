// The page: talks to the compute worker (worker.js) and renders what it answers. No computation happens here
// beyond drawing: reading weights and images, the model, the masks' propagation and the exports all run in
// the worker, so the page stays responsive.
// This file only wires the page together: the device and self-test, loading a volume, the viewer, the
// controls' enabled state and the crash recovery. The rest lives by job, over one state object (state.js):
// painting.js (classes, brush, undo), persistence.js (work kept in this browser), run.js (runs and exports).
import * as adapter from './adapter.js';
import { checkVolumeFiles, describeEstimate, limitsUnavailable, memoryNote, setLimits } from './limits.js';
import * as painting from './painting.js';
import * as persistence from './persistence.js';
import * as prompts from './prompts.js';
import { crashRecovery } from './recovery.js';
import * as resolution from './resolution.js';
import { connect } from './rpc.js';
import { moduleWorker } from './trusted.js';
import * as runner from './run.js';
import { PALETTE, state } from './state.js';
import * as weights from './weights.js';
import * as inputs from './inputs.js';
import * as store from './store.js';
import { $, el, showError, status } from './ui.js';
import { Viewer } from './viewer.js';

const params = new URLSearchParams(location.search);
const preference = () => params.get('backend') ?? 'auto';
// ?helpers=N: encoder helpers on the CPU fallback (encoder-pool.js); default one per core beyond the first.
const helpers = () => (params.has('helpers') ? Number(params.get('helpers')) : undefined);

// A crashed worker is replaced (rpc.js) and the work brought back (see "Crash recovery" below).
const call = connect(() => moduleWorker('./worker.js', import.meta.url), {
  onCrash: (reason) => recoverFromCrash(reason),
  onFailure: (reason) => showError(`Error: ${reason}`),
});
// The worker protocol, for the browser tests and the console (e.g. memsegCall('encoderStages', {...})).
window.memsegCall = call;

// --- Device and self-test -------------------------------------------------------------------------------

function renderDevice(d) {
  const gpu = d.backend === 'wgpu';
  $('device-summary').replaceChildren(...(gpu
    ? [el('span', { className: 'badge gpu' }, 'WebGPU'), 'Computing on the GPU']
    : [el('span', { className: 'badge cpu' }, 'CPU fallback'), 'Computing on the CPU (WebAssembly)']));
  $('device-backend').textContent = gpu ? `wgpu (${d.adapter?.graphics_api ?? 'WebGPU'})` : 'Flex (pure Rust, CPU)';
  $('device-vendor').textContent = d.webgpuAdapter?.vendor ?? '—';
  $('device-architecture').textContent = d.webgpuAdapter?.architecture ?? '—';
  const mib = d.adapter ? `${(d.adapter.max_storage_buffer_binding_size / 2 ** 20).toFixed(0)} MiB` : '—';
  $('device-binding').textContent = mib;
  $('device-reason').textContent = d.fallback_reason ?? (gpu ? '—' : 'CPU chosen by the ?backend=flex setting');
  $('device-cores').textContent = gpu ? '—' : d.encoderHelpers > 0
    ? `${1 + d.encoderHelpers}: one tracks, ${d.encoderHelpers} encode the next slices ahead (of ${navigator.hardwareConcurrency} offered)`
    : `1 (the browser offers ${navigator.hardwareConcurrency})`;
  $('device-details').hidden = false;
}

/** Starts compute in the worker (again after a crash), then asks the core for its input limits (limits.js). */
async function startCompute() {
  state.device = await call('init', { preference: preference(), helpers: helpers() });
  renderDevice(state.device);
  resolution.showHint(); // its times are per backend
  setLimits(await call('limits'));
}

function renderSelftest(r) {
  const [rows, cols] = r.shape;
  const head = el('tr', {}, el('th'), ...Array.from({ length: cols }, (_, j) => el('th', {}, String(j))));
  const body = Array.from({ length: rows }, (_, i) =>
    el('tr', {}, el('th', {}, String(i)), ...r.values.slice(i * cols, (i + 1) * cols).map((v) => el('td', {}, v.toFixed(6)))));
  $('selftest-table').replaceChildren(head, ...body);
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
// The typed overrides, then the resolution choice (resolution.js), as the CLI applies --image-size last.
const modelOverrides = () => [...$('model-overrides').value.split('\n').map((s) => s.trim()).filter(Boolean), ...resolution.overrides()];

// --- Volume and viewer ----------------------------------------------------------------------------------

const viewer = new Viewer($('view'), {
  classes: () => state.classes,
  drawn: (s) => state.drawn.get(s),
  result: (s) => state.results[s],
  opacity: () => $('opacity').value / 100,
  outline: () => $('outline').checked,
  tool: () => document.querySelector('input[name=tool]:checked').value,
  brushRadius: () => Number($('brush-size').value) / 2,
  activeClass: () => state.activeClass,
  canPaint: () => Boolean(state.volume && state.activeClass && !state.running),
  beginStroke: painting.beginStroke,
  endStroke: painting.endStroke,
  prompts: prompts.onSlice,
  round: () => state.round,
  feedback: prompts.feedbackOn,
  click: (z, x, y, positive) => (state.model ? prompts.click(z, x, y, positive) : needModel()),
  box: (z, from, to) => (state.model ? prompts.box(z, from, to) : needModel()),
});

const needModel = () => status('prompt-status', 'Load a model first: clicks and boxes get SAM\'s answer at once.', 'error');

/** Every prompt's feedback asked for again (a model loaded, another window: the feedback is the model's, on the
 * slice as the window maps it); a run kept for corrections was the old model's or window's. */
function refreshPrompts() {
  prompts.workChanged();
  state.feedback.clear();
  if (state.model) for (const p of state.prompts.values()) prompts.refresh(p);
  viewer.draw();
}

let shown = 0; // the latest slice request, so that a slow answer never replaces a newer one
async function showSlice(next) {
  if (!state.volume) return;
  const z = state.z = Math.max(0, Math.min(state.volume.slices - 1, next));
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

/** A new volume in the worker: the page starts over on it, with the work and results kept for it, if any. */
async function volumeLoaded(meta) {
  state.volume = meta;
  state.lastRun = null;
  runner.teaching.clear();
  state.drawn.clear();
  state.history.clear();
  prompts.restore([]);
  state.results = [];
  const [sx, sy, sz] = meta.spacing_mm.map((v) => +v.toFixed(3));
  status('volume-status', `${meta.source}: ${meta.width}×${meta.height}, ${meta.slices} slices, ${sx}×${sy}×${sz} mm, ${meta.modality === 'other' ? 'modality not given' : meta.modality.toUpperCase()}; ${memoryNote(meta)}.`, 'ok');
  $('slice').max = meta.slices - 1;
  $('slice').disabled = false;
  $('viewer-empty').hidden = true;
  if (meta.classes.length) {
    state.classes = meta.classes.map(({ value, name }, i) => ({ value, name, color: PALETTE[i % PALETTE.length], visible: true }));
    state.activeClass = state.classes[0].value;
  }
  state.workKey = store.volumeKey(meta);
  await persistence.restoreWork();
  await persistence.restoreResults();
  inputs.volumeChanged();
  painting.renderClasses();
  runner.renderResults();
  refreshPrompts();
  showSlice(Math.floor(meta.slices / 2));
}

/** Files as the worker's loadVolume takes them (bytes transferred, not copied). */
const readFiles = (files) => Promise.all(files.map(async (f) => ({ name: f.webkitRelativePath || f.name, bytes: await f.arrayBuffer() })));

/** The volume of a 4-D NIfTI file the user picked (0-based), or null. */
function chosenVolume() {
  const text = $('nifti-volume').value.trim();
  return text === '' ? null : Number(text);
}

async function loadVolume(fileList) {
  const files = [...fileList].filter((f) => !f.name.startsWith('.'));
  if (!files.length) return;
  state.lastFiles = files; // read again when the user picks another volume of a 4-D file
  files.sort((a, b) => (a.webkitRelativePath || a.name).localeCompare(b.webkitRelativePath || b.name, undefined, { numeric: true }));
  const check = await checkVolumeFiles(files);
  if (check.error) return status('volume-status', `Not read: ${check.error}.`, 'error');
  status('volume-status', `Reading ${files.length} file${files.length > 1 ? 's' : ''} (${describeEstimate(check)})…`);
  try {
    state.volumeSource = { files, volume: chosenVolume() };
    const entries = await readFiles(files);
    const volume = chosenVolume();
    await volumeLoaded(await call('loadVolume', { files: entries, volume }, { transfer: entries.map((e) => e.bytes) }));
  } catch (e) {
    status('volume-status', `Could not read the images: ${e.message}`, 'error');
  }
}

async function loadSample() {
  status('volume-status', 'Generating the sample volume…');
  try {
    state.volumeSource = { sample: true };
    await volumeLoaded(await call('loadSample'));
  } catch (e) {
    status('volume-status', `Could not make the sample: ${e.message}`, 'error');
  }
}

// --- Controls -------------------------------------------------------------------------------------------

/** Enables, hides and labels the controls for what the page holds now; called after every change. */
function updateControls() {
  const { z } = state;
  const h = state.history.get(z);
  const busy = state.running;
  const prompting = tool() === 'prompt';
  $('undo').disabled = busy || (prompting ? !prompts.canUndo(z, 'undo') : !h?.undo.length);
  $('redo').disabled = busy || (prompting ? !prompts.canUndo(z, 'redo') : !h?.redo.length);
  $('clear-slice').disabled = busy || !state.drawn.has(z);
  $('clear-prompts').disabled = busy || !prompts.onSlice(z).length;
  $('prompt-panel').hidden = !prompting;
  $('brush-size-row').hidden = prompting; // the brush's size means nothing to clicks
  prompts.renderChoices();
  $('forget-work').disabled = busy || !state.volume;
  $('correct-slice').disabled = busy || !state.results[z];
  const { masks } = painting.paintedMasks();
  const clicked = [...new Set(prompts.runPrompts().map((p) => p.slice + 1))];
  const given = [masks.length && `painted: slice${masks.length > 1 ? 's' : ''} ${masks.map((m) => m.slice + 1).join(', ')}`,
    clicked.length && `clicks or a box on slice${clicked.length > 1 ? 's' : ''} ${clicked.join(', ')}`].filter(Boolean);
  $('drawn-status').textContent = given.length ? `${given.join('; ')}.`.replace(/^./, (c) => c.toUpperCase())
    : 'Paint the structure on one or more slices with the brush, or click on it with the click / box tool.';
  const prompted = masks.length || clicked.length;
  $('run').disabled = busy || !state.model || !state.volume || (adapter.selected() ? !adapter.info() : !prompted && !inputs.count());
  $('run').hidden = busy;
  $('cancel').hidden = !busy;
  for (const id of Object.keys(runner.exporters)) $(id).disabled = busy || !state.lastRun;
  for (const id of ['model-file', 'image-files', 'image-folder', 'load-sample']) $(id).disabled = busy;
  $('viewer-empty').hidden = Boolean(state.volume);
  if (state.volume) {
    const name = state.volume.slice_names[z];
    const marks = `${state.drawn.has(z) ? ' · painted' : ''}${prompts.onSlice(z).length ? ' · clicked' : ''}`;
    $('slice-label').textContent = `Slice ${z + 1} / ${state.volume.slices}${name ? ` · ${name}` : ''}${marks}`;
  }
  // The run panel's hint says what is missing, unless it shows a result, an error or a cancellation.
  const runStatus = $('run-status');
  if (!busy && runStatus.className === 'status' && !/^(Cancel|Restored)/.test(runStatus.textContent)) {
    const missing = [!state.model && 'load a model', !state.volume && 'load a volume', adapter.missing(), !adapter.selected() && !prompted && !inputs.count() && 'paint a mask or click on the structure'].filter(Boolean);
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

/** The viewer's own controls: window, slice, zoom, opacity, outline, brush size. */
function wireViewer() {
  $('brush-size').addEventListener('input', () => { $('brush-size-value').textContent = $('brush-size').value; });
  $('opacity').addEventListener('input', () => viewer.draw());
  $('outline').addEventListener('change', () => viewer.draw());
  // The window is also the model's input mapping: the clicks' feedback is computed again under it.
  $('window').addEventListener('change', () => { showSlice(state.z); refreshPrompts(); });
  $('slice').addEventListener('input', () => showSlice(Number($('slice').value)));
  const zoomBy = (f) => { viewer.setZoom(viewer.zoom * f); $('zoom-value').textContent = `${Math.round(viewer.zoom * 100)}%`; };
  $('zoom-in').addEventListener('click', () => zoomBy(1.25));
  $('zoom-out').addEventListener('click', () => zoomBy(0.8));
  $('zoom-reset').addEventListener('click', () => zoomBy(1 / viewer.zoom));
  $('view').addEventListener('wheel', (e) => {
    if (!state.volume) return;
    e.preventDefault();
    if (e.ctrlKey) zoomBy(e.deltaY < 0 ? 1.1 : 1 / 1.1);
    else showSlice(state.z + Math.sign(e.deltaY));
  }, { passive: false });
}

const tool = () => document.querySelector('input[name=tool]:checked')?.value;

/** Undo / redo on the shown slice: the prompt tool's clicks and boxes, or the painting. */
function undoRedo(from, to) {
  if (tool() === 'prompt') prompts.undoRedo(state.z, from, to);
  else painting.undoRedo(from, to);
  updateControls();
}

/**
 * Keyboard: B brush, E eraser, C click / box; Ctrl+Z undo, Ctrl+Shift+Z or Ctrl+Y redo (the shown slice);
 * Delete: clear the shown slice's clicks and boxes. Not while typing in a field.
 */
function shortcut(e) {
  if (e.target.closest?.('input[type=text], input[type=number], textarea, select') || state.running || !state.volume) return;
  const key = e.key.toLowerCase();
  const pick = { b: 'tool-brush', e: 'tool-eraser', c: 'tool-prompt' }[key];
  if (pick && !e.ctrlKey && !e.metaKey && !e.altKey) {
    $(pick).checked = true;
    updateControls();
  } else if ((e.ctrlKey || e.metaKey) && key === 'z') {
    e.preventDefault();
    e.shiftKey ? undoRedo('redo', 'undo') : undoRedo('undo', 'redo');
  } else if ((e.ctrlKey || e.metaKey) && key === 'y') {
    e.preventDefault();
    undoRedo('redo', 'undo');
  } else if (key === 'delete' && tool() === 'prompt') {
    prompts.clearSlice(state.z);
  } else {
    return;
  }
  updateControls();
}

/** Each module gets what it needs from the others as callbacks here, so none of them imports app.js. */
function wire() {
  $('model-overrides').value = params.getAll('override').join('\n');
  persistence.setup({
    call,
    onForget() {
      runner.renderResults();
      viewer.draw();
      updateControls();
    },
  });
  painting.setup({ viewer, onChange: updateControls, onPainted: prompts.paintedChanged });
  prompts.setup({ call, viewer, onChange: updateControls });
  for (const radio of document.querySelectorAll('input[name=tool]')) radio.addEventListener('change', updateControls);
  document.addEventListener('keydown', shortcut);
  $('undo').addEventListener('click', () => undoRedo('undo', 'redo'));
  $('redo').addEventListener('click', () => undoRedo('redo', 'undo'));
  resolution.setup();
  runner.setup({ call, viewer, onChange: updateControls, onPick: showSlice });
  adapter.setup({ call, status, onChange: painting.adapterClasses });
  weights.setup({
    call, status, overrides: modelOverrides,
    onModel(report) {
      state.model = report;
      resolution.showHint();
      updateControls();
      adapter.modelChanged();
      refreshPrompts();
    },
  });
  $('model-file').addEventListener('change', (e) => loadModel(e.target.files[0]));
  dropZone($('model-panel'), (files) => loadModel(files[0]));
  $('image-files').addEventListener('change', (e) => loadVolume(e.target.files));
  $('image-folder').addEventListener('change', (e) => loadVolume(e.target.files));
  $('nifti-volume').addEventListener('change', () => state.lastFiles && loadVolume(state.lastFiles));
  dropZone($('image-panel'), loadVolume);
  $('load-sample').addEventListener('click', loadSample);
  $('forget-work').addEventListener('click', persistence.forgetWork);
  wireViewer();
  $('selftest-rerun').addEventListener('click', selftest);
  inputs.setup({
    call, state, status, slice: () => state.z, renderClasses: painting.renderClasses, persist: persistence.persist,
    palette: PALETTE, onChange: updateControls, paint: painting.paint,
  });
  painting.renderClasses();
  updateControls();
}

// For the browser tests and the console: the painted masks as plain arrays, the clicks and boxes.
window.memsegApp = {
  paintedMasks: () => painting.paintedMasks().masks.map(({ slice, labels }) => ({ slice, labels: Array.from(labels) })),
  results: () => state.results.map((r) => (r ? Array.from(r) : null)),
  slice: () => state.z,
  prompts: () => prompts.runPrompts(),
  bankSteps: () => runner.teaching.steps,
};

async function main() {
  wire();
  try {
    await startCompute();
  } catch (e) {
    $('device-summary').textContent = 'No compute device';
    // The core may be loaded without a device: volumes are still checked against its limits, or told why not.
    call('limits').then(setLimits, (err) => limitsUnavailable(err.message));
    return showError(`Could not start the compute device: ${e.message}`);
  }
  await selftest();
  await weights.start();
}

// --- Crash recovery -------------------------------------------------------------------------------------
// The worker crashed (rpc.js says why): a new one gets the device, the model and the volume back; the painted
// masks are saved first and come back with the volume (restoreWork), as after a reload. See recovery.js.

async function reloadVolume() {
  const source = state.volumeSource;
  if (!source) return false;
  await persistence.saveWorkNow();
  const meta = source.sample ? await call('loadSample') : await call('loadVolume', { files: await readFiles(source.files), volume: source.volume });
  await volumeLoaded(meta);
  return true;
}

function notice(text) {
  $('notice').textContent = text;
  $('notice').hidden = false;
}

const recovery = crashRecovery({
  restart: () => call.restart(),
  steps: [
    ['the compute device', startCompute],
    ['the model', async () => Boolean(await weights.reload())],
    ['the volume', reloadVolume],
  ],
  report: {
    started(reason) {
      state.runLost = state.running;
      state.model = null; // until the new worker has it again
      updateControls();
      notice(`The compute core crashed (${reason}). Restarting it and reloading the model and the volume…`);
    },
    recovered(reason, done, failed) {
      const back = done.filter((w) => w !== 'the compute device');
      notice(`The compute core crashed (${reason}) and was restarted${back.length ? `: ${back.join(' and ')} reloaded` : ''}; ` +
        `your painted masks are kept.${failed.length ? ` Could not reload ${failed.join('; ')}.` : ''}\n` +
        (state.runLost ? 'The run in progress was lost: press Run again.' : 'You can go on where you were.'));
      if (state.runLost) status('run-status', 'The run was interrupted by the crash: press Run again.', 'error');
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

main();
