// The prompt tool: clicks and boxes on the shown slice for the active class, SAM's feedback at once, and the
// prompts a run is conditioned on. The core computes the feedback exactly as the run treats the slice
// (src/session/slice_prompt.rs): the box first, then each click appended to the ones before; on a painted
// slice the class's painted mask goes in first and the clicks refine it. The first prompt on a slice encodes it
// (seconds on the CPU), later ones only run SAM's prompt encoder and mask decoder.
//
//
// Rounds: clicks before the first run (round 0) give a slice its starting mask, SAM's answer on that slice
// alone. After a propagation, clicks are corrections (round state.round >= 1): on the tracked mask, with the
// run's memory (src/session/correct.rs, src/web/corrections.rs), the worker answering at once; the next Run
// tracks again from the corrected slices only. A full run replays the rounds in order, with the same result.
// Corrections need the run the worker keeps (state.correctable): after a reload, a paint stroke or another
// window they wait for the next Run.
//
// state.prompts: key "slice:class" (round 0) or "slice:class@round" -> {slice, class, round, box: [x0, y0,
// x1, y1] | null, clicks: [{x, y, positive}]}; state.feedback: the same keys -> {mask: Uint8Array (0/1), iou,
// candidates: [{mask, iou}] | null, encoded, ms, answered: the prompt it answers}.
import { paint } from './painting.js';
import { persist } from './persistence.js';
import { state } from './state.js';
import { $, status } from './ui.js';

let call = null;
let viewer = null;
let onChange = () => {};
const asked = new Map(); // key -> the latest request's number, so that a slow answer never replaces a newer one
let nextAsk = 0;

const keyOf = (slice, cls, round = 0) => (round ? `${slice}:${cls}@${round}` : `${slice}:${cls}`);
const keyOfPrompt = (p) => keyOf(p.slice, p.class, p.round);
const empty = (p) => !p.box && !p.clicks.length;

/** `call` is the worker protocol, `viewer` redraws the slice, `onChange()` updates the page's controls. */
export function setup(options) {
  ({ call, viewer, onChange } = options);
  $('clear-prompts').addEventListener('click', () => clearSlice(state.z));
}

/** The prompts on slice `z` (every class), for the viewer's markers. */
export const onSlice = (z) => [...state.prompts.values()].filter((p) => p.slice === z);

/** The feedback masks on slice `z` of the round open now (a run's result supersedes earlier rounds'): [{class, mask}]. */
export const feedbackOn = (z) => onSlice(z).filter((p) => p.round === state.round)
  .map((p) => ({ class: p.class, mask: state.feedback.get(keyOfPrompt(p))?.mask })).filter((f) => f.mask);

/** The prompts a run sends (src/session/slice_prompt.rs's SlicePrompt), round by round, slice by slice: copies. */
export function runPrompts() {
  return [...state.prompts.values()].filter((p) => !empty(p)).sort((a, b) => a.round - b.round || a.slice - b.slice || a.class - b.class)
    .map(({ slice, class: cls, round, box, clicks }) => ({
      slice, class: cls, ...(round ? { round } : {}), ...(box ? { box: [...box] } : {}), clicks: clicks.map((c) => ({ ...c })),
    }));
}

/** Whether the next Run only tracks again from corrections (the worker keeps the run they correct). */
export const correcting = () => state.correctable && runPrompts().some((p) => p.round === state.round);

/** A correction cannot be made now: says why (null when it can, or before the first run). */
function cannotCorrect() {
  if (state.round === 0 || state.correctable) return null;
  return state.correctionWhy ?? 'Corrections are made on a run\'s result, and the worker holds none now (a reload, a paint stroke or another window since): press Run first, then click.';
}

/** After a run: the round the clicks go to now, and whether the worker keeps the run to correct. */
export function afterRun(correction) {
  state.correctable = Boolean(correction?.correctable);
  state.correctionWhy = correction?.why ?? null;
  if (correction?.round) state.round = correction.round;
  persist();
  renderChoices();
}

/** A paint stroke or another window after a run: the kept run no longer matches the work, the next Run is a
 * full one (it replays the corrections), and new corrections wait for it. */
export function workChanged() {
  if (!state.correctable) return;
  state.correctable = false;
  state.correctionWhy = null;
  for (const p of state.prompts.values()) if (p.round && p.round === state.round) state.feedback.delete(keyOfPrompt(p));
}

/** Slice `z`'s prompts as they are now, for its undo stack. */
function snapshot(z) {
  const h = state.promptHistory.get(z) ?? { undo: [], redo: [] };
  state.promptHistory.set(z, h);
  h.undo.push(structuredClone(onSlice(z)));
  h.redo = [];
}

function promptFor(z, cls) {
  const key = keyOf(z, cls, state.round);
  if (!state.prompts.has(key)) state.prompts.set(key, { slice: z, class: cls, round: state.round, box: null, clicks: [] });
  return state.prompts.get(key);
}

/** A click at image pixel (x, y) of slice `z`: on the structure (`positive`) or on the background. */
export function click(z, x, y, positive) {
  const { width, height } = state.volume;
  if (!(x >= 0 && y >= 0 && x < width && y < height)) return;
  const why = cannotCorrect();
  if (why) return status('prompt-status', why, 'error');
  snapshot(z);
  promptFor(z, state.activeClass).clicks.push({ x: Math.floor(x), y: Math.floor(y), positive });
  changed(keyOf(z, state.activeClass, state.round));
}

/** A box dragged on slice `z` (image pixels, any two corners): replaces the class's box there. */
export function box(z, [xa, ya], [xb, yb]) {
  const { width, height } = state.volume;
  const clamp = (v, max) => Math.min(max, Math.max(0, Math.round(v)));
  const b = [clamp(Math.min(xa, xb), width), clamp(Math.min(ya, yb), height), clamp(Math.max(xa, xb), width), clamp(Math.max(ya, yb), height)];
  if (b[2] <= b[0] || b[3] <= b[1]) return;
  const why = cannotCorrect();
  if (why) return status('prompt-status', why, 'error');
  snapshot(z);
  promptFor(z, state.activeClass).box = b;
  changed(keyOf(z, state.activeClass, state.round));
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
  const before = new Map(onSlice(z).map((p) => [keyOfPrompt(p), p]));
  const unchanged = new Set(prompts.filter((p) => JSON.stringify(p) === JSON.stringify(state.prompts.get(keyOfPrompt(p)))).map(keyOfPrompt));
  for (const key of before.keys()) {
    state.prompts.delete(key);
    if (!unchanged.has(key)) state.feedback.delete(key);
  }
  for (const p of prompts) state.prompts.set(keyOfPrompt(p), p);
  for (const [key, old] of before) if (!unchanged.has(key) && !state.prompts.has(key)) changed(key, old);
  for (const p of prompts) if (!unchanged.has(keyOfPrompt(p))) changed(keyOfPrompt(p));
}

/** Saves, redraws and asks the core for the new feedback of the prompt under `key` (`old`: the prompt that was
 * there, when it is gone). */
function changed(key, old = null) {
  persist();
  onChange();
  const p = state.prompts.get(key);
  if (!p || empty(p)) {
    const gone = p ?? old;
    state.prompts.delete(key);
    state.feedback.delete(key);
    // A correction taken back: the worker's kept run forgets it too (the slice is as the run tracked it).
    if (gone?.round && gone.round === state.round && state.correctable) call('discardCorrection', { slice: gone.slice, cls: gone.class }).catch(() => {});
    renderChoices();
    viewer.draw();
    return;
  }
  viewer.draw();
  refresh(p);
}

/** Asks the core for a prompt's feedback (again: after a reload, or when the painted mask changed): SAM on the
 * slice alone (round 0), or the correction on the kept run (later rounds: only while the worker keeps it). */
export async function refresh(p) {
  const key = keyOfPrompt(p);
  if (p.round && (p.round !== state.round || !state.correctable)) return; // its run's result shows it
  const ask = ++nextAsk;
  asked.set(key, ask);
  const started = performance.now();
  const first = !p.round && !onSlice(p.slice).some((q) => state.feedback.has(keyOfPrompt(q)));
  if (first) status('prompt-status', `Encoding slice ${p.slice + 1} for its clicks…`);
  try {
    const prompt = runPrompts().find((q) => keyOfPrompt({ round: 0, ...q }) === key);
    let out;
    if (p.round) {
      out = { ...(await call('correctSlice', { request: { prompt } })), candidates: null, encoded: false };
    } else {
      const painted = state.drawn.get(p.slice);
      out = await call('promptSlice', { request: { prompt, intensity: $('window').value }, painted: painted ? painted.slice() : null });
    }
    if (asked.get(key) !== ask || state.prompts.get(key) !== p) return; // a newer change is on its way
    const ms = performance.now() - started;
    state.feedback.set(key, { ...out, ms, answered: prompt });
    const how = out.encoded ? `slice encoded and prompted in ${Math.round(ms)} ms` : `${Math.round(ms)} ms`;
    const what = p.round ? 'corrected mask (Run tracks again from here)' : 'SAM\'s mask';
    status('prompt-status', `Slice ${p.slice + 1}: ${what} (predicted IoU ${out.iou.toFixed(2)}), ${how}.`, 'ok');
  } catch (e) {
    if (asked.get(key) === ask) status('prompt-status', `No feedback for slice ${p.slice + 1}: ${e.message}`, 'error');
  }
  renderChoices();
  viewer.draw();
}

/** SAM's candidate masks for a first single click on the shown slice, the chosen one marked. */
export function renderChoices() {
  const box = $('prompt-choices');
  const key = keyOf(state.z, state.activeClass, state.round);
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

/** After a painted mask changed on slice `z`: its prompts' feedback is computed again (the mask goes in first),
 * and a run kept for corrections no longer matches the work. */
export function paintedChanged(z) {
  workChanged();
  for (const p of onSlice(z)) if (!p.round) refresh(p);
}

/** The saved prompts of the volume (persistence.js) and the round their clicks had reached; the feedback of
 * round 0 is asked for again, corrections wait for the next Run (the run they corrected is gone). */
export function restore(prompts, round = 0) {
  state.prompts.clear();
  state.feedback.clear();
  state.promptHistory.clear();
  state.round = round;
  state.correctable = false;
  state.correctionWhy = null;
  for (const p of prompts ?? []) {
    const q = { slice: p.slice, class: p.class, round: p.round ?? 0, box: p.box ?? null, clicks: p.clicks ?? [] };
    state.prompts.set(keyOfPrompt(q), q);
  }
}
