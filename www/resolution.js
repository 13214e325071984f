// The model's input resolution as a visible choice: Meta's 1024 or MedSAM2's 512 (about a quarter of the work a
// slice), applied as the Hydra override `++model.image_size=N` after any typed under "Advanced", as the CLI's
// --image-size does. The hint gives the time a slice took on this device at each size in its last finished
// run (kept in localStorage per backend), so the choice is made knowing its cost here.
import { state } from './state.js';
import { $ } from './ui.js';

const KEY = 'memseg.secondsPerSlice';

const seconds = (s) => (s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(1)} s`);

function measured() {
  try {
    return JSON.parse(localStorage.getItem(KEY) ?? '{}');
  } catch {
    return {}; // a damaged entry is forgotten, not fatal
  }
}

/** The overrides the select adds: none when the weights file's own size is kept. */
export const overrides = () => ($('model-size').value ? [`++model.image_size=${$('model-size').value}`] : []);

/** Remembers a finished run's time per slice for the loaded model's size on this backend, and shows it. */
export function remember(secondsPerSlice) {
  const size = state.model?.image_size;
  const backend = state.device?.backend;
  if (!size || !backend || !(secondsPerSlice > 0)) return;
  const all = measured();
  all[`${backend}:${size}`] = secondsPerSlice;
  try {
    localStorage.setItem(KEY, JSON.stringify(all));
  } catch {
    // storage full or refused: the hint just stays as it was
  }
  showHint();
}

/** "Last runs on this device: 1.2 s a slice at 512, 4.8 s a slice at 1024", or what to expect before any run. */
export function showHint() {
  const backend = state.device?.backend;
  const all = measured();
  const known = Object.entries(all)
    .map(([key, s]) => [key.split(':'), s])
    .filter(([[b, n], s]) => b === backend && Number(n) > 0 && s > 0)
    .sort(([[, a]], [[, b]]) => a - b)
    .map(([[, n], s]) => `${seconds(s)} a slice at ${n}`);
  const loaded = state.model ? ` The loaded model runs at ${state.model.image_size}.` : '';
  $('model-size-hint').textContent = (known.length
    ? `Last runs on this device: ${known.join(', ')}.`
    : '512 needs about a quarter of the work of 1024 a slice; the time a slice takes here shows after a run.') + loaded;
}

export function setup() {
  $('model-size').addEventListener('change', () => {
    showHint();
    if (state.model) $('model-size-hint').textContent += ' Load the weights again to apply the new size.';
  });
  showHint();
}
