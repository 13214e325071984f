// The work on a volume kept in this browser (IndexedDB, store.js), so that a reload, a crash or a lost GPU
// loses nothing: the classes, painted masks and clicks / boxes (saved a moment after each change), and a run's results (saved
// when it ends, and every few seconds while it runs). A finished run's exports work again after a reload (the
// worker rebuilds them from the kept labels: restoreRun); an unfinished one is shown, not exported.
// Everything is kept under state.workKey, the volume's key (store.volumeKey).
import * as prompts from './prompts.js';
import { state } from './state.js';
import * as store from './store.js';
import { status } from './ui.js';

let call = null;
let onForget = () => {};
// The pending debounced saves: private to this module, they are not the page's state but when it is written.
let saveTimer = null;
let resultsTimer = null;

/** `call` is the worker protocol; `onForget()` redraws the page once the work was dropped from it. */
export function setup(options) {
  ({ call, onForget } = options);
}

const work = () => ({
  classes: state.classes, activeClass: state.activeClass, masks: [...state.drawn.entries()], prompts: prompts.runPrompts(), round: state.round,
});

/** Saves the classes and painted masks (debounced: a brush stroke saves once, at its end). */
export function persist() {
  clearTimeout(saveTimer);
  const key = state.workKey;
  saveTimer = setTimeout(() => {
    store.save(key, work()).catch((e) => status('work-status', `Could not keep the work in this browser: ${e.message}`, 'error'));
  }, 250);
}

/**
 * Saves the painted work now, before the worker's crash recovery loads the volume again (restoreWork reads the
 * store): the latest strokes may still wait for persist()'s debounce. Nothing is written for a volume with
 * neither painting nor kept work.
 */
export async function saveWorkNow() {
  clearTimeout(saveTimer);
  if (state.workKey && (state.drawn.size || state.prompts.size || (await store.load(state.workKey)))) await store.save(state.workKey, work());
}

/** The work saved for this volume by an earlier visit, if any. */
export async function restoreWork() {
  const saved = await store.load(state.workKey).catch(() => undefined);
  if (!saved) return;
  state.classes = saved.classes;
  state.activeClass = saved.activeClass;
  for (const [slice, labels] of saved.masks) state.drawn.set(slice, labels);
  prompts.restore(saved.prompts, saved.round ?? 0);
  const clicked = new Set((saved.prompts ?? []).map((p) => p.slice)).size;
  const also = clicked ? ` and ${clicked} slice${clicked === 1 ? '' : 's'} with clicks or a box` : '';
  status('work-status', `Restored ${saved.masks.length} painted slice${saved.masks.length === 1 ? '' : 's'}${also} kept in this browser.`, 'ok');
}

/** The "Forget" button: drops this volume's painted masks and results, from the page and from the store. */
export async function forgetWork() {
  clearTimeout(saveTimer);
  clearTimeout(resultsTimer);
  state.drawn.clear();
  state.history.clear();
  prompts.restore([]);
  state.results = [];
  state.lastRun = null;
  onForget();
  try {
    await Promise.all([store.forget(state.workKey), store.forgetResults(state.workKey)]);
    status('work-status', 'Forgot the painted masks and results kept for this volume.');
  } catch (e) {
    status('work-status', `Could not forget the kept work: ${e.message}`, 'error');
  }
}

/** Saves the run's results so far and its summary: in 5 s (while it runs), or `now` (when it ends). */
export function persistResults(summary, { now = false } = {}) {
  clearTimeout(resultsTimer);
  const key = state.workKey;
  const slices = state.results.map((labels, slice) => [slice, labels]).filter(([, labels]) => labels);
  const save = () => store.saveResults(key, { slices, summary })
    .catch((e) => status('work-status', `Could not keep the results in this browser: ${e.message}`, 'error'));
  if (now) return save();
  resultsTimer = setTimeout(save, 5000);
}

/** The results kept for this volume, if any: shown again, and a finished run's exports rebuilt by the worker. */
export async function restoreResults() {
  const kept = await store.loadResults(state.workKey).catch(() => undefined);
  if (!kept) return;
  for (const [slice, labels] of kept.slices) state.results[slice] = labels;
  const when = new Date(kept.savedAt).toLocaleString();
  const { width, height, slices } = state.volume;
  if (kept.summary?.report) {
    try {
      const labels = new Uint8Array(width * height * slices);
      for (const [slice, map] of kept.slices) labels.set(map, slice * map.length);
      await call('restoreRun', { labels, report: JSON.stringify(kept.summary.report) }, { transfer: [labels.buffer] });
      state.lastRun = kept.summary;
      status('run-status', `Restored the results of the run of ${when}, kept in this browser.`, 'ok');
    } catch (e) {
      status('run-status', `The results kept from ${when} could not be restored: ${e.message}`, 'error');
    }
  } else {
    status('run-status', `Restored an unfinished run of ${when} (${kept.slices.length} of ${slices} slices); run again to finish it.`);
  }
}
