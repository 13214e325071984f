// Prompt-free adapters in the page (issue 7, src/web/prompt_free.rs): an adapter file written by `memseg train`
// is folded into the loaded SAM2 model inside the worker, and the run mode "Prompt-free (adapter)" segments
// every slice with no masks. The page only picks the file and shows what the worker answers. The file's bytes
// are kept here (an adapter is small: ~40 KB to ~0.6 MB), so that loading another model re-applies it, or says
// why it does not fit that model.

const $ = (id) => document.getElementById(id);
const MODE = 'prompt-free';

let call = null;
let status = null;
let onChange = () => {};
let loaded = null; // the worker's answer for the adapter in use: {name, weights, classes, spec, values, bytes}
let kept = null; // {name, bytes: ArrayBuffer} of that adapter's file

/** Wires the adapter box of the model panel. `onChange(classes)` runs whenever the adapter changes. */
export function setup(options) {
  ({ call, status, onChange } = options);
  $('adapter-file').addEventListener('change', (e) => {
    loadFile(e.target.files[0]);
    e.target.value = '';
  });
  const box = $('adapter-drop');
  box.addEventListener('dragover', (e) => { e.preventDefault(); e.stopPropagation(); box.classList.add('dragging'); });
  box.addEventListener('dragleave', () => box.classList.remove('dragging'));
  // Stops the drop here: the model panel around this box would take the file as SAM2 weights.
  box.addEventListener('drop', (e) => {
    e.preventDefault();
    e.stopPropagation();
    box.classList.remove('dragging');
    if (!document.body.classList.contains('running')) loadFile(e.dataTransfer.files[0]);
  });
  $('adapter-remove').addEventListener('click', remove);
  $('mode').addEventListener('change', render);
  $('mode').querySelector(`option[value="${MODE}"]`).disabled = true; // until an adapter is loaded
}

/** Whether the run panel's mode is the prompt-free one. */
export const selected = () => $('mode').value === MODE;
/** The adapter in use (the worker's description), or null. */
export const info = () => loaded;
/** What a prompt-free run still needs, for the run panel's hint; null when nothing. */
export const missing = () => (selected() && !loaded ? 'load an adapter file' : null);

const kb = (n) => `${(n / 1024).toFixed(n < 10_240 ? 1 : 0)} KB`;

async function apply(name, bytes) {
  // A copy goes to the worker (transferred); the original stays here for the next model.
  const copy = bytes.slice(0);
  return call('loadAdapter', { bytes: copy, name }, { transfer: [copy] });
}

async function loadFile(file) {
  if (!file) return;
  status('adapter-status', `Reading ${file.name}…`);
  try {
    const bytes = await file.arrayBuffer();
    loaded = await apply(file.name, bytes);
    kept = { name: file.name, bytes };
    // The run mode follows: a user who loads an adapter means to use it (the few-shot modes stay a click away).
    $('mode').querySelector(`option[value="${MODE}"]`).disabled = false;
    $('mode').value = MODE;
    status('adapter-status', describe(loaded), 'ok');
  } catch (e) {
    const still = loaded ? ` Still using ${loaded.name}.` : '';
    status('adapter-status', `Could not use ${file.name} as an adapter: ${e.message}.${still}`, 'error');
  }
  render();
}

function describe(a) {
  const classes = a.classes.join(', ');
  return `${a.name}: ${a.classes.length} class${a.classes.length === 1 ? '' : 'es'} (${classes}), rank ${a.spec.rank}, ` +
    `${a.values.toLocaleString('en')} trained values (${kb(a.bytes)}), folded into ${a.weights}. ` +
    'Run mode "Prompt-free" segments every slice with no masks.';
}

/** A new SAM2 model was loaded: the worker dropped the adapter folded into the previous one; apply it again. */
export async function modelChanged() {
  if (!kept) return;
  try {
    loaded = await apply(kept.name, kept.bytes);
    status('adapter-status', describe(loaded), 'ok');
  } catch (e) {
    loaded = null;
    status('adapter-status', `${kept.name} does not fit the model just loaded: ${e.message}`, 'error');
  }
  render();
}

async function remove() {
  try {
    await call('unloadAdapter');
  } finally {
    loaded = null;
    kept = null;
    status('adapter-status', 'No adapter: runs are few-shot, from the painted masks.');
    render();
  }
}

function render() {
  const option = $('mode').querySelector(`option[value="${MODE}"]`);
  option.disabled = !loaded;
  if (!loaded && selected()) $('mode').value = 'propagate';
  $('adapter-remove').hidden = !loaded;
  onChange(loaded?.classes ?? []);
}

/** The worker call of a prompt-free run, [op, args]: it posts the same progress messages as a few-shot run. */
export const request = (intensity) => ['runPromptFree', { options: { intensity } }];
