// The run controller: starts a segmentation in the worker (few-shot from the painted masks and supports, or
// prompt-free with an adapter), shows its progress and results as they come, cancels it, and exports what it
// made (labels.nii.gz, report.json, PNG masks). The results table and the Dice chart render the last run.
import * as adapter from './adapter.js';
import { BankView } from './bank.js';
import { showDice } from './chart.js';
import * as inputs from './inputs.js';
import { adapterClasses, paintedMasks } from './painting.js';
import * as prompts from './prompts.js';
import { persistResults } from './persistence.js';
import * as resolution from './resolution.js';
import { state } from './state.js';
import { $, download, el, status } from './ui.js';
import { zip } from './zip.js';

let call = null;
let viewer = null;
let onChange = () => {};
// The teaching view (bank.js): each class's memory bank at every step of the run, replayable afterwards.
export let teaching = null;

const optionalInt = (id) => ($(id).value === '' ? null : Number($(id).value));
const seconds = (ms) => (ms < 1000 ? `${Math.round(ms)} ms` : ms < 60_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`);

async function exportWith(what, make) {
  try {
    await make();
  } catch (e) {
    status('run-status', `Could not export the ${what}: ${e.message}`, 'error');
  }
}

/** The export buttons, by id: enabled only when a finished run is there to export (app.js's controls). */
export const exporters = {
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

/**
 * Wires the run panel. `call` is the worker protocol, `viewer` redraws the slice, `onChange()` updates the
 * page's controls and `onPick(slice)` shows a slice picked in the teaching view.
 */
export function setup(options) {
  let onPick;
  ({ call, viewer, onChange, onPick } = options);
  teaching = new BankView($('teaching'), {
    classes: () => state.classes,
    supportNames: () => state.lastRun?.report?.supports ?? [],
    onPick,
  });
  $('run').addEventListener('click', run);
  $('cancel').addEventListener('click', () => {
    status('run-status', 'Cancelling after the current slice…');
    call('cancel');
  });
  for (const [id, fn] of Object.entries(exporters)) $(id).addEventListener('click', fn);
}

/** What a run segments: its worker request and classes, or {error} when something it needs is missing. */
function request() {
  // Prompt-free (adapter.js): the adapter's classes on every slice, no masks or supports.
  const promptFree = adapter.selected();
  const { masks, classes: painted } = paintedMasks();
  // Supports from other volumes (inputs.js) join the painted masks, as `--support` joins `--mask` in the CLI.
  const supports = inputs.runSupports();
  // Clicks and boxes (prompts.js) condition their slices like painted masks, each the way SAM2 takes it;
  // corrections (later rounds) are replayed after the passes before them.
  const clicks = promptFree ? [] : prompts.runPrompts();
  const given = [...painted, ...inputs.supportClasses(), ...clicks.map((p) => p.class)];
  const classes = promptFree ? adapter.info()?.classes ?? [] : [...new Set(given)].sort((a, b) => a - b);
  if (promptFree && !classes.length) return { error: 'Load an adapter file first (model panel).' };
  if (promptFree) adapterClasses(classes);
  if (!promptFree && !masks.length && !supports.length && !clicks.length) return { error: 'Paint a mask or click on at least one slice (or add a support) first.' };
  const options = {
    classes, mode: $('mode').value, intensity: $('window').value,
    maxConditioning: optionalInt('max-conditioning'), selectSupports: optionalInt('select-supports'),
    similarityEviction: $('similarity-eviction').checked, prompts: clicks,
  };
  const [op, args] = promptFree ? adapter.request(options.intensity)
    : ['run', { options, masks: masks.map((m) => ({ slice: m.slice, labels: m.labels.slice() })), supports }];
  return { promptFree, classes, options, op, args };
}

/** A slice done: its labels shown (when it is the one on screen) and kept, and the progress line. */
function progressed(p) {
  state.results[p.slice] = p.labels;
  if (p.bank) teaching.push(p);
  persistResults({ partial: true, steps: p.step, total: p.total });
  state.progress = { step: p.step, total: p.total, slice: p.slice, elapsedMs: p.elapsedMs };
  $('run-progress').value = p.step / p.total;
  const left = (p.elapsedMs / p.step) * (p.total - p.step);
  status('run-status', `Slice ${p.step} / ${p.total} (slice ${p.slice + 1}${p.reverse ? ', reverse pass' : ''}) · ${seconds(p.elapsedMs)} elapsed · about ${seconds(left)} left`);
  if (p.slice === state.z) viewer.draw();
}

function finished(summary) {
  if (!summary.cancelled && summary.correction) prompts.afterRun(summary.correction);
  if (summary.cancelled) {
    status('run-status', `Cancelled after ${summary.steps} of ${summary.total} slices.`);
    persistResults({ partial: true, steps: summary.steps, total: summary.total }, { now: true }); // not awaited: the UI frees now
  } else {
    state.lastRun = summary;
    persistResults(summary, { now: true });
    const perSlice = (summary.report.seconds * 1000) / summary.steps;
    // Slices whose encoder features a previous run left (the core's feature cache) cost less: such a run's
    // time is not what a fresh volume takes at this size.
    // (Slices the encoder helpers delivered during this run are not encoded by the core either.)
    const reused = Math.max(0, state.volume.slices - summary.report.frames_encoded - (summary.encodeAhead?.kept ?? 0));
    if (summary.resumed) {
      const why = summary.correction?.why ? ` ${summary.correction.why}` : '';
      return status('run-status', `Tracked again from the corrections: ${summary.steps} slices in ${seconds(summary.report.seconds * 1000)}; the others kept their masks.${why}`, 'ok');
    }
    if (reused === 0) resolution.remember(perSlice / 1000);
    const ahead = summary.encodeAhead?.kept ? `; ${summary.encodeAhead.kept} encoded ahead on other cores` : '';
    const note = (reused > 0 ? `; ${reused} slices reused from the last run, not encoded again` : '') + ahead;
    const why = summary.correction?.why ? ` Corrections after it: ${summary.correction.why}.` : '';
    status('run-status', `Done: ${summary.steps} slices in ${seconds(summary.report.seconds * 1000)} (${seconds(perSlice)} a slice${note}).${why}`, 'ok');
  }
}

export async function run() {
  const { error, promptFree, classes, options, op, args } = request();
  if (error) return status('run-status', error, 'error');
  // Corrections on the run the worker keeps: only the slices they change come back, the others stay (the
  // worker decides, and says so in the summary's `resumed`).
  const resumed = !promptFree && prompts.correcting();
  state.running = true;
  state.lastRun = null;
  state.progress = null;
  if (!resumed) state.results = [];
  state.correctable = false; // the worker hands its kept run to this run, or drops it
  viewer.draw();
  onChange();
  const names = classes.map((v) => state.classes.find((c) => c.value === v)?.name ?? v).join(', ');
  status('run-status', `Starting (${names})…`);
  $('run-progress').hidden = false;
  $('run-progress').value = 0;
  if (!promptFree) teaching.start({ slices: state.volume.slices, classes, mode: options.mode, options });
  try {
    finished(await call(op, args, { onProgress: progressed }));
  } catch (e) {
    status('run-status', `The run failed: ${e.message}`, 'error');
  } finally {
    state.running = false;
    $('run-progress').hidden = true;
    teaching.finish();
    renderResults();
    viewer.draw();
    onChange();
  }
}

/** The last run's table (voxels, volume, Dice when the volume has ground truth) and Dice chart. */
export function renderResults() {
  const table = $('results-table');
  const report = state.lastRun?.report;
  showDice($('dice-chart'), report, state.classes, state.volume?.slices);
  table.hidden = !report;
  if (!report) return;
  const name = (v) => state.classes.find((c) => c.value === v)?.name ?? `class ${v}`;
  const truth = report.per_class.some((c) => c.dice !== null);
  const row = (cell, values) => el('tr', {}, ...values.map((v, i) => el(cell, i === 0 && cell === 'td' ? { className: 'left' } : {}, v)));
  const head = ['Class', 'Voxels', 'Volume', ...(truth ? ['Dice'] : [])];
  table.replaceChildren(row('th', head), ...report.per_class.map((c) => row('td', [name(c.class), String(c.voxels),
    `${c.volume_ml.toFixed(2)} mL`, ...(truth ? [c.dice === null ? '—' : c.dice.toFixed(3)] : [])])));
}
