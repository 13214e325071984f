// The prompt tool: clicks and boxes on the shown slice for the active class, SAM's feedback at once, and the
// prompts a run is conditioned on. The core computes the feedback exactly as the run treats the slice
// (src/session/slice_prompt.rs): the box first, then each click appended to the ones before; on a painted
// slice the class's painted mask goes in first and the clicks refine it. The first prompt on a slice encodes it
// (seconds on the CPU), later ones only run SAM's prompt encoder and mask decoder.
//
// state.prompts: key "slice:class" -> {slice, class, box: [x0, y0, x1, y1] | null, clicks: [{x, y, positive}]};
// state.feedback: the same keys -> {mask: Uint8Array (0/1), iou, candidates: [{mask, iou}] | null, encoded, ms,
// answered: the prompt it answers}.
import { paint } from './painting.js';
import { persist } from './persistence.js';
import { state } from './state.js';
import { $, status } from './ui.js';

let call = null;
let viewer = null;
let onChange = () => {};
const asked = new Map(); // key -> the latest request's number, so that a slow answer never replaces a newer one
let nextAsk = 0;

const keyOf = (slice, cls) => `${slice}:${cls}`;
const empty = (p) => !p.box && !p.clicks.length;

/** `call` is the worker protocol, `viewer` redraws the slice, `onChange()` updates the page's controls. */
export function setup(options) {
  ({ call, viewer, onChange } = options);
  $('clear-prompts').addEventListener('click', () => clearSlice(state.z));
}

/** The prompts on slice `z` (every class), for the viewer's markers. */
export const onSlice = (z) => [...state.prompts.values()].filter((p) => p.slice === z);

/** The feedback masks on slice `z`: [{class, mask}]. */
export const feedbackOn = (z) => onSlice(z).map((p) => ({ class: p.class, mask: state.feedback.get(keyOf(p.slice, p.class))?.mask })).filter((f) => f.mask);

/** The prompts a run sends (src/session/slice_prompt.rs's SlicePrompt), slice by slice: copies, never aliases. */
export function runPrompts() {
  return [...state.prompts.values()].filter((p) => !empty(p)).sort((a, b) => a.slice - b.slice || a.class - b.class)
    .map(({ slice, class: cls, box, clicks }) => ({ slice, class: cls, ...(box ? { box: [...box] } : {}), clicks: clicks.map((c) => ({ ...c })) }));
}

/** Slice `z`'s prompts as they are now, for its undo stack. */
function snapshot(z) {
  const h = state.promptHistory.get(z) ?? { undo: [], redo: [] };
  state.promptHistory.set(z, h);
  h.undo.push(structuredClone(onSlice(z)));
  h.redo = [];
}

function promptFor(z, cls) {
  const key = keyOf(z, cls);
  if (!state.prompts.has(key)) state.prompts.set(key, { slice: z, class: cls, box: null, clicks: [] });
  return state.prompts.get(key);
}

/** A click at image pixel (x, y) of slice `z`: on the structure (`positive`) or on the background. */
export function click(z, x, y, positive) {
  const { width, height } = state.volume;
  if (!(x >= 0 && y >= 0 && x < width && y < height)) return;
  snapshot(z);
  promptFor(z, state.activeClass).clicks.push({ x: Math.floor(x), y: Math.floor(y), positive });
  changed(z, state.activeClass);
}

/** A box dragged on slice `z` (image pixels, any two corners): replaces the class's box there. */
export function box(z, [xa, ya], [xb, yb]) {
  const { width, height } = state.volume;
  const clamp = (v, max) => Math.min(max, Math.max(0, Math.round(v)));
  const b = [clamp(Math.min(xa, xb), width), clamp(Math.min(ya, yb), height), clamp(Math.max(xa, xb), width), clamp(Math.max(ya, yb), height)];
  if (b[2] <= b[0] || b[3] <= b[1]) return;
  snapshot(z);
  promptFor(z, state.activeClass).box = b;
  changed(z, state.activeClass);
}

/** Undo (`from` 'undo') or redo a prompt change on slice `z`; false when there is nothing to undo. */
export function undoRedo(z, from, to) {
  const h = state.promptHistory.get(z);
  if (!h?.[from].length) return false;
  h[to].push(structuredClone(onSlice(z)));
  replaceSlice(z, h[from].pop());
  return true;
}

export const canUndo = (z, which) => Boolean(state.promptHistory.get(z)?.[which].length);

/** Drops slice `z`'s clicks and boxes (undoable). */
export function clearSlice(z) {
  if (!onSlice(z).length) return;
  snapshot(z);
  replaceSlice(z, []);
}

function replaceSlice(z, prompts) {
  const before = onSlice(z).map((p) => p.class);
  for (const cls of before) {
    state.prompts.delete(keyOf(z, cls));
    state.feedback.delete(keyOf(z, cls));
  }
  for (const p of prompts) state.prompts.set(keyOf(z, p.class), p);
  for (const cls of new Set([...before, ...prompts.map((p) => p.class)])) changed(z, cls);
}

/** Saves, redraws and asks the core for the new feedback of (z, cls). */
function changed(z, cls) {
  persist();
  onChange();
  const key = keyOf(z, cls);
  const p = state.prompts.get(key);
  if (!p || empty(p)) {
    state.prompts.delete(key);
    state.feedback.delete(key);
    renderChoices();
    viewer.draw();
    return;
  }
  viewer.draw();
  refresh(p);
}

/** Asks the core for a prompt's feedback (again: after a reload, or when the painted mask changed). */
export async function refresh(p) {
  const key = keyOf(p.slice, p.class);
  const ask = ++nextAsk;
  asked.set(key, ask);
  const started = performance.now();
  const first = !onSlice(p.slice).some((q) => state.feedback.has(keyOf(q.slice, q.class)));
  if (first) status('prompt-status', `Encoding slice ${p.slice + 1} for its clicks…`);
  try {
    const painted = state.drawn.get(p.slice);
    const request = { prompt: runPrompts().find((q) => q.slice === p.slice && q.class === p.class), intensity: $('window').value };
    const out = await call('promptSlice', { request, painted: painted ? painted.slice() : null });
    if (asked.get(key) !== ask || state.prompts.get(key) !== p) return; // a newer change is on its way
    const ms = performance.now() - started;
    state.feedback.set(key, { ...out, ms, answered: request.prompt });
    const how = out.encoded ? `slice encoded and prompted in ${Math.round(ms)} ms` : `${Math.round(ms)} ms`;
    status('prompt-status', `Slice ${p.slice + 1}: SAM's mask (predicted IoU ${out.iou.toFixed(2)}), ${how}.`, 'ok');
  } catch (e) {
    if (asked.get(key) === ask) status('prompt-status', `No feedback for slice ${p.slice + 1}: ${e.message}`, 'error');
  }
  renderChoices();
  viewer.draw();
}

/** SAM's candidate masks for a first single click on the shown slice, the chosen one marked. */
export function renderChoices() {
  const box = $('prompt-choices');
  const key = keyOf(state.z, state.activeClass);
  const candidates = state.feedback.get(key)?.candidates;
  box.hidden = !candidates;
  if (!candidates) return box.replaceChildren();
  const best = candidates.reduce((b, c, i) => (c.iou > candidates[b].iou ? i : b), 0);
  box.replaceChildren(document.createTextNode('SAM\'s masks for one click: '), ...candidates.map((c, i) => {
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = `${i + 1}: IoU ${c.iou.toFixed(2)}${i === best ? ' ✓' : ''}`;
    button.title = i === best ? 'The mask SAM chose (highest predicted IoU): the run uses the click itself'
      : 'Use this mask instead: it becomes a painted mask for this class on this slice (the click is dropped)';
    button.disabled = i === best;
    button.addEventListener('click', () => choose(state.z, state.activeClass, c.mask));
    return button;
  }));
}

/** Another of SAM's candidates: it becomes the class's painted mask on slice `z`, and the click goes. */
function choose(z, cls, mask) {
  const labels = (state.drawn.get(z) ?? new Uint8Array(mask.length)).slice();
  for (let i = 0; i < mask.length; i++) {
    if (mask[i]) labels[i] = cls;
    else if (labels[i] === cls) labels[i] = 0;
  }
  snapshot(z);
  state.prompts.delete(keyOf(z, cls));
  state.feedback.delete(keyOf(z, cls));
  paint(z, labels);
  renderChoices();
  status('prompt-status', `Slice ${z + 1}: that mask is now painted for the class; correct it with the brush or click again.`, 'ok');
}

/** After a painted mask changed on slice `z`: its prompts' feedback is computed again (the mask goes in first). */
export function paintedChanged(z) {
  for (const p of onSlice(z)) refresh(p);
}

/** The saved prompts of the volume (persistence.js), their feedback asked for again. */
export function restore(prompts) {
  state.prompts.clear();
  state.feedback.clear();
  state.promptHistory.clear();
  for (const p of prompts ?? []) state.prompts.set(keyOf(p.slice, p.class), { slice: p.slice, class: p.class, box: p.box ?? null, clicks: p.clicks ?? [] });
}
