// Supports and ground truth from files. The worker (src/web/inputs.rs) reads and checks every file; this module
// only drives the controls:
// - a mask file for the current slice becomes its painted mask (undoable like a brush stroke);
// - a label volume for the current volume becomes its ground truth (Dice in the report) and/or painted masks on
//   chosen slices (default: the middle slice of each class's extent, FS-MedSAM2's support choice);
// - slices of another volume with its labels become supports, listed here, kept in this browser (store.js) and
//   sent with every run (the CLI's `--support IMAGE=MASK`).
import * as store from './store.js';
import { el } from './ui.js';

const $ = (id) => document.getElementById(id);
let ctx = null; // what app.js lends: see setup()
let supports = []; // support records (the worker's supportSlice, plus a thumbnail), in the order added
let imported = null; // the label volume read for the current volume, waiting for its role
let source = null; // the other volume supports are taken from: its metadata

const byName = (a, b) => (a.webkitRelativePath || a.name).localeCompare(b.webkitRelativePath || b.name, undefined, { numeric: true });

/** The user's files as the worker's [{name, bytes}] (hidden files dropped, in name order) and what to transfer. */
async function entries(fileList) {
  const files = [...fileList].filter((f) => !f.name.startsWith('.')).sort(byName);
  const list = await Promise.all(files.map(async (f) => ({ name: f.webkitRelativePath || f.name, bytes: await f.arrayBuffer() })));
  return [list, { transfer: list.map((e) => e.bytes) }];
}

const plural = (n, word, many = `${word}s`) => `${n} ${n === 1 ? word : many}`;
const className = (value) => ctx.state.classes.find((c) => c.value === value)?.name ?? `label ${value}`;

/** Defines the label values that are not classes yet ("label N", or the source's names), with colours. */
function addClasses(values, names = {}) {
  const { state } = ctx;
  let added = false;
  for (const value of values) {
    if (state.classes.some((c) => c.value === value)) continue;
    const color = ctx.palette[state.classes.length % ctx.palette.length];
    state.classes.push({ value, name: names[value] ?? `label ${value}`, color, visible: true });
    added = true;
  }
  if (state.activeClass === null && state.classes.length) state.activeClass = state.classes[0].value;
  if (added) {
    ctx.renderClasses();
    if (state.volume) ctx.persist(); // classes are kept with a volume's work; without one there is none yet
  }
}

/** "3, 10-12" (1-based, as the viewer numbers slices) -> sorted 0-based indices; throws a readable error. */
export function parseSlices(text, count) {
  const out = new Set();
  for (const part of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = part.match(/^(\d+)(?:\s*-\s*(\d+))?$/);
    if (!m) throw new Error(`"${part}" is not a slice number or range (e.g. 7 or 5-9)`);
    const [a, b] = [Number(m[1]), Number(m[2] ?? m[1])];
    if (a < 1 || b > count || a > b) throw new Error(`slices run from 1 to ${count}; "${part}" is outside`);
    for (let s = a; s <= b; s++) out.add(s - 1);
  }
  if (!out.size) throw new Error('give at least one slice');
  return [...out].sort((x, y) => x - y);
}

/** The middles of the classes' extents, 1-based, for a slice field. */
const middles = (classes) => [...new Set(classes.map((c) => c.middle + 1))].sort((a, b) => a - b).join(', ');

const extentText = (classes, names = {}) => classes.map((c) =>
  `${names[c.class] ?? className(c.class)} (slices ${c.first + 1}–${c.last + 1})`).join(', ');

// --- A mask for the current slice ------------------------------------------------------------------------

async function uploadMask(file) {
  if (!file) return;
  if (!ctx.state.volume) return ctx.status('inputs-status', 'Load a volume first.', 'error');
  const z = ctx.slice();
  try {
    const labels = await ctx.call('maskForSlice', { bytes: await file.arrayBuffer(), name: file.name, activeClass: ctx.state.activeClass });
    const values = [...new Set(labels)].filter((v) => v).sort((a, b) => a - b);
    addClasses(values);
    ctx.paint(z, labels);
    ctx.status('inputs-status', `${file.name} is now slice ${z + 1}'s mask (${values.map(className).join(', ')}); Undo brings back the previous one.`, 'ok');
  } catch (e) {
    ctx.status('inputs-status', `Could not use ${file.name} as a mask: ${e.message}`, 'error');
  }
}

// --- A label volume for the current volume ----------------------------------------------------------------

async function importLabels(fileList) {
  if (!fileList.length) return;
  if (!ctx.state.volume) return ctx.status('inputs-status', 'Load a volume first, then its labels.', 'error');
  $('import-box').hidden = true;
  imported = null;
  try {
    const [files, transfer] = await entries(fileList);
    imported = await ctx.call('importLabels', { files }, transfer);
  } catch (e) {
    return ctx.status('inputs-status', `Could not import the labels: ${e.message}`, 'error');
  }
  showImport();
}

function showImport() {
  const { source: name, classes } = imported;
  if (!classes.length) {
    imported = null;
    return ctx.status('inputs-status', `${name} holds no label (every voxel is 0).`, 'error');
  }
  $('import-summary').textContent = `${name}: ${plural(classes.length, 'class', 'classes')}: ${extentText(classes)}.`;
  $('import-slices').value = middles(classes);
  $('import-box').hidden = false;
  ctx.status('inputs-status', 'Choose how to use these labels, then Apply.');
}

async function applyImport() {
  const asTruth = $('import-truth').checked;
  const asMasks = $('import-masks').checked;
  if (!asTruth && !asMasks) return ctx.status('inputs-status', 'Tick at least one use for the labels.', 'error');
  try {
    const slices = asMasks ? parseSlices($('import-slices').value, ctx.state.volume.slices) : [];
    addClasses(imported.classes.map((c) => c.class));
    const done = [];
    if (asTruth) {
      await ctx.call('useImportedAsTruth');
      ctx.state.volume.has_truth = true;
      done.push('ground truth: the next run reports Dice per class');
    }
    const painted = [];
    for (const z of slices) {
      const labels = await ctx.call('importedSlice', { z });
      if (!labels.some((v) => v)) continue;
      ctx.paint(z, labels);
      painted.push(z + 1);
    }
    if (asMasks) {
      const empty = slices.length - painted.length;
      done.push(painted.length ? `painted ${plural(painted.length, 'slice')} (${painted.join(', ')})` : 'no chosen slice holds a label');
      if (empty && painted.length) done.push(`${plural(empty, 'chosen slice')} without labels skipped`);
    }
    $('import-box').hidden = true;
    ctx.status('inputs-status', `${imported.source}: ${done.join('; ')}.`, 'ok');
  } catch (e) {
    ctx.status('inputs-status', `Could not apply the labels: ${e.message}`, 'error');
  }
}

// --- Supports from another volume -----------------------------------------------------------------------

async function loadSource(what, op, files) {
  ctx.status('supports-status', `Reading ${what}…`);
  try {
    const [list, transfer] = files ? await entries(files) : [];
    source = files ? await ctx.call(op, { files: list }, transfer) : await ctx.call(op);
    renderSource();
    ctx.status('supports-status', source.hasLabels
      ? 'Pick its slices (default: the middle of each class) and add them as supports.'
      : 'Now give its label volume, or a mask for one slice.', 'ok');
  } catch (e) {
    ctx.status('supports-status', `Could not read ${what}: ${e.message}`, 'error');
  }
}

const sourceNames = () => Object.fromEntries((source?.names ?? []).map(({ value, name }) => [value, name]));

function renderSource() {
  $('support-source').hidden = !source;
  if (!source) return;
  const labels = source.hasLabels
    ? (source.classes.length ? `labels: ${extentText(source.classes, sourceNames())}` : 'its labels are all 0')
    : 'no labels yet';
  $('support-source-summary').textContent = `${source.source}: ${source.width}×${source.height}, ${plural(source.slices, 'slice')}; ${labels}.`;
  $('support-slices').value = source.classes.length ? middles(source.classes) : String(Math.floor(source.slices / 2) + 1);
  $('support-add').disabled = !source.hasLabels;
}

async function sourceLabels(fileList) {
  if (!fileList.length) return;
  try {
    const [files, transfer] = await entries(fileList);
    source = await ctx.call('supportSourceLabels', { files }, transfer);
    renderSource();
    ctx.status('supports-status', 'Labels read: pick the slices and add them as supports.', 'ok');
  } catch (e) {
    ctx.status('supports-status', `Could not use these labels: ${e.message}`, 'error');
  }
}

/** Adds the picked slices of the source (labels from its label volume, or `mask` for a single slice). */
async function addSupports(mask) {
  const added = [];
  try {
    const slices = parseSlices($('support-slices').value, source.slices);
    if (mask && slices.length !== 1) throw new Error('a mask file is for one slice: give one slice number');
    for (const z of slices) {
      const args = mask ? { z, mask: await mask.arrayBuffer(), maskName: mask.name } : { z };
      added.push(addRecord(await ctx.call('supportSlice', args)));
    }
  } catch (e) {
    ctx.status('supports-status', `Could not add the support: ${e.message}`, 'error');
  }
  if (added.length) {
    await save();
    ctx.status('supports-status', `Added ${added.map((r) => r.name).join(', ')}: every run uses ${supports.length === 1 ? 'it' : `these ${supports.length} supports`}.`, 'ok');
  }
  render();
}

/** Keeps a support record (replacing one of the same volume and slice), with a thumbnail. */
function addRecord(record) {
  const { rgba, ...kept } = record;
  addClasses(kept.classes, sourceNames());
  // The names as shown now, kept with the support: they name the classes it brings to a later volume too.
  kept.classNames = Object.fromEntries(kept.classes.map((v) => [v, className(v)]));
  kept.thumbnail = thumbnail(kept, rgba);
  supports = supports.filter((s) => !(s.volume === kept.volume && s.slice === kept.slice));
  supports.push(kept);
  return kept;
}

/** A small preview of the support slice with its labels over it in the classes' colours, as a data URL. */
function thumbnail({ width, height, labels }, rgba) {
  const full = new OffscreenCanvas(width, height);
  const image = new ImageData(new Uint8ClampedArray(rgba), width, height);
  const colours = new Map(ctx.state.classes.map((c) => [c.value, c.color]));
  for (let i = 0; i < labels.length; i++) {
    const hex = colours.get(labels[i]);
    if (!hex) continue;
    for (let k = 0; k < 3; k++) {
      const c = parseInt(hex.slice(1 + 2 * k, 3 + 2 * k), 16);
      image.data[4 * i + k] = Math.round(image.data[4 * i + k] * 0.45 + c * 0.55);
    }
  }
  full.getContext('2d').putImageData(image, 0, 0);
  const side = 64;
  const scale = side / Math.max(width, height);
  const small = document.createElement('canvas');
  [small.width, small.height] = [Math.round(width * scale), Math.round(height * scale)];
  small.getContext('2d').drawImage(full, 0, 0, small.width, small.height);
  return small.toDataURL('image/png');
}

function render() {
  const list = $('support-list');
  list.replaceChildren(...supports.map((s, i) => {
    const held = `${s.width}×${s.height} · ${s.classes.map((v) => s.classNames?.[v] ?? className(v)).join(', ')}`;
    const button = el('button', { type: 'button', className: 'secondary small' }, 'Remove');
    button.addEventListener('click', () => remove(i));
    return el('li', {}, el('img', { alt: '', src: s.thumbnail }),
      el('div', {}, el('span', { className: 'name' }, `${s.volume} · slice ${s.slice + 1}`), el('span', { className: 'classes-held hint' }, held)),
      button);
  }));
  if (!supports.length) list.replaceChildren(el('li', { className: 'hint' }, 'No support from another volume.'));
  ctx.onChange();
}

async function remove(i) {
  const [gone] = supports.splice(i, 1);
  render();
  await save();
  ctx.status('supports-status', `Removed ${gone.name}.`);
}

async function save() {
  try {
    await store.saveSupports(supports);
  } catch (e) {
    ctx.status('supports-status', `Could not keep the supports in this browser: ${e.message}`, 'error');
  }
}

// --- For app.js ----------------------------------------------------------------------------------------

/** The supports for a run, as the worker's run op takes them. */
export function runSupports() {
  return supports.map(({ name, width, height, channels, kind, bitDepth, values, labels }) =>
    ({ name, width, height, channels, kind, bitDepth, values, labels }));
}

/** The label values the supports hold, sorted. */
export function supportClasses() {
  return [...new Set(supports.flatMap((s) => s.classes))].sort((a, b) => a - b);
}

export const count = () => supports.length;

/** A new volume was loaded: labels imported for the previous one no longer apply; supports' classes exist. */
export function volumeChanged() {
  imported = null;
  $('import-box').hidden = true;
  for (const s of supports) addClasses(s.classes, s.classNames);
}

export function setBusy(busy) {
  for (const id of ['mask-file', 'labels-files', 'labels-folder', 'support-volume-files', 'support-volume-folder',
    'support-sample', 'support-labels-files', 'support-mask-file', 'import-apply']) $(id).disabled = busy;
  $('support-add').disabled = busy || !source?.hasLabels;
  for (const b of $('support-list').querySelectorAll('button')) b.disabled = busy;
}

/**
 * ctx: {call, state, status(id, text, kind), slice() -> current slice, paint(slice, labels) (undoable),
 * renderClasses(), persist(), palette, onChange()}. Restores the supports kept in this browser.
 */
export async function setup(context) {
  ctx = context;
  const onFiles = (id, fn) => $(id).addEventListener('change', async (e) => {
    await fn(e.target.files);
    e.target.value = ''; // the same file can be picked again after a fix
  });
  onFiles('mask-file', (files) => uploadMask(files[0]));
  onFiles('labels-files', importLabels);
  onFiles('labels-folder', importLabels);
  $('import-apply').addEventListener('click', applyImport);
  $('import-cancel').addEventListener('click', () => { $('import-box').hidden = true; ctx.status('inputs-status', ''); });
  onFiles('support-volume-files', (files) => files.length && loadSource('the volume', 'loadSupportVolume', files));
  onFiles('support-volume-folder', (files) => files.length && loadSource('the DICOM folder', 'loadSupportVolume', files));
  $('support-sample').addEventListener('click', () => loadSource('the sample volume', 'loadSupportSample'));
  onFiles('support-labels-files', sourceLabels);
  onFiles('support-mask-file', (files) => files.length && addSupports(files[0]));
  $('support-add').addEventListener('click', () => addSupports(null));
  // For the browser tests and the console: the supports as plain data.
  window.memsegInputs = {
    supports: () => supports.map(({ name, volume, slice, width, height, kind, bitDepth, classes, values, labels }) =>
      ({ name, volume, slice, width, height, kind, bitDepth, classes, values: Array.from(values), labels: Array.from(labels) })),
  };
  const kept = await store.loadSupports().catch(() => undefined);
  supports = kept?.supports ?? [];
  render();
  if (supports.length) ctx.status('supports-status', `Restored ${plural(supports.length, 'support')} kept in this browser.`, 'ok');
}
