// Classes and painting: the class list (added by the user, by an adapter, by imported labels), brush strokes
// with undo and redo per slice, clearing a slice, and turning a slice's result into a painted mask to correct.
// The strokes themselves are drawn by viewer.js; what they paint lives in state.drawn.
import { PALETTE, state } from './state.js';
import { $, el, status, swatch } from './ui.js';
import { persist } from './persistence.js';

let viewer = null;
let onChange = () => {};
let onPainted = () => {};

/**
 * `viewer` redraws the slice; `onChange()` runs after every change to what is painted (app.js: the controls),
 * `onPainted(slice)` after a slice's painted mask changed (prompts.js: its clicks refine that mask).
 */
export function setup(options) {
  ({ viewer, onChange, onPainted = () => {} } = options);
  $('add-class').addEventListener('submit', (e) => {
    e.preventDefault();
    addClass($('class-name').value.trim(), $('class-color').value);
    $('class-name').value = '';
  });
  $('clear-slice').addEventListener('click', clearSlice);
  $('correct-slice').addEventListener('click', correctSlice);
}

/** Redraws and re-saves after a change to the painted masks. */
function painted() {
  persist();
  viewer.draw();
  onChange();
  onPainted(state.z);
}

/** A stroke (or a mask set at once) starts on slice `s`: its undo snapshot, and the label map to paint into. */
export function beginStroke(s) {
  const h = state.history.get(s) ?? { undo: [], redo: [] };
  state.history.set(s, h);
  h.undo.push(state.drawn.get(s)?.slice() ?? null);
  h.redo = [];
  if (!state.drawn.has(s)) state.drawn.set(s, new Uint8Array(state.volume.width * state.volume.height));
  return state.drawn.get(s);
}

export function endStroke(s) {
  persist();
  onChange();
  onPainted(s);
}

/** A whole mask for slice `s` (from a file, inputs.js): undoable like a brush stroke, kept like painting. */
export function paint(s, labels) {
  beginStroke(s).set(labels);
  persist();
  viewer.draw();
  onChange();
  onPainted(s);
}

export function renderClasses() {
  const list = $('class-list');
  list.replaceChildren(...state.classes.map((c) => {
    const radio = el('input', { type: 'radio', name: 'active-class', value: String(c.value), checked: c.value === state.activeClass });
    radio.addEventListener('change', () => { state.activeClass = c.value; persist(); });
    const visible = el('input', { type: 'checkbox', checked: c.visible });
    visible.addEventListener('change', () => { c.visible = visible.checked; viewer.draw(); });
    return el('li', {},
      el('label', { className: 'pick' }, radio, ' ', swatch(c.color), ' ', el('span', { className: 'name' }, c.name), ' ',
        el('span', { className: 'value' }, String(c.value))),
      ' ', el('label', { className: 'visible', title: 'Show this class' }, visible, ' show'));
  }));
  $('class-color').value = PALETTE[state.classes.length % PALETTE.length];
  if (!state.classes.length) list.replaceChildren(el('li', { className: 'hint' }, 'No class yet: add one below (or load the sample).'));
}

function addClass(name, color) {
  const used = new Set(state.classes.map((c) => c.value));
  const value = [...Array(255).keys()].map((i) => i + 1).find((v) => !used.has(v));
  state.classes.push({ value, name, color, visible: true });
  state.activeClass = value;
  renderClasses();
  persist();
  onChange();
}

/** The adapter's classes (adapter.js) join the class list, so that its results get names and colours. */
export function adapterClasses(values) {
  const missing = values.filter((v) => !state.classes.some((c) => c.value === v));
  for (const value of missing) state.classes.push({ value, name: `class ${value}`, color: PALETTE[state.classes.length % PALETTE.length], visible: true });
  if (missing.length) {
    state.activeClass ??= state.classes[0].value;
    renderClasses();
    if (state.volume) persist();
  }
  onChange();
}

/** Undo (`from` 'undo', `to` 'redo') or redo a painting change on the shown slice (app.js: buttons, keys). */
export function undoRedo(from, to) {
  const { z } = state;
  const h = state.history.get(z);
  if (!h?.[from].length) return;
  h[to].push(state.drawn.get(z)?.slice() ?? null);
  const snapshot = h[from].pop();
  snapshot ? state.drawn.set(z, snapshot) : state.drawn.delete(z);
  painted();
}

function clearSlice() {
  const { z } = state;
  if (!state.drawn.has(z)) return;
  beginStroke(z).fill(0);
  state.drawn.delete(z);
  painted();
}

/** Makes the current slice's result a painted mask, to correct with the brush and run again. */
function correctSlice() {
  const { z } = state;
  if (!state.results[z] || state.running) return;
  paint(z, state.results[z]);
  status('work-status', `Slice ${z + 1}'s result is now a painted mask: correct it with the brush or the eraser, then Run again. ` +
    'Every painted slice conditions the propagation, so the correction steers the slices around it.');
}

/** The painted slices holding some label, with the classes they hold. */
export function paintedMasks() {
  const masks = [];
  const classes = new Set();
  for (const [slice, labels] of [...state.drawn.entries()].sort((a, b) => a[0] - b[0])) {
    let any = false;
    for (const v of labels) if (v) { classes.add(v); any = true; }
    if (any) masks.push({ slice, labels });
  }
  return { masks, classes: [...classes].sort((a, b) => a - b) };
}
