// The page's one state object: what the user loaded, painted and ran. Every module of the page reads and
// writes this object (never a copy), so there is one place to look for what the page holds. It is also
// window.memsegState, for the browser tests and curious users in the console.

export const state = {
  device: null, selftest: null, errors: [], messages: [],
  model: null, volume: null, classes: [], activeClass: null, running: false, lastRun: null, progress: null,
  z: 0, // the slice shown
  drawn: new Map(), // slice -> Uint8Array label map painted by the user
  history: new Map(), // slice -> {undo: [snapshot], redo: [snapshot]}
  prompts: new Map(), // "slice:class[@round]" -> {slice, class, round, box, clicks}: the prompt tool's clicks and boxes (prompts.js)
  feedback: new Map(), // the same keys -> SAM's mask for that prompt, {mask, iou, candidates, encoded, ms}
  round: 0, // the round clicks go to: 0 before the first propagation, then corrections of the run (prompts.js)
  correctable: false, // the worker keeps the last run, so corrections are answered at once and Run resumes it
  correctionWhy: null, // why the last run cannot take corrections, when it cannot
  promptHistory: new Map(), // slice -> {undo: [prompts], redo: [prompts]}
  results: [], // slice -> Uint8Array label map from the last run (partial while it runs)
  workKey: null, // the current volume's key in the browser's store (store.js)
  volumeSource: null, // {files, volume} (File objects, read again; the 4-D volume) or {sample: true}: what the volume came from
  lastFiles: null, // the files last given, read again when the 4-D volume is changed
  runLost: false, // a run was in flight when the worker crashed
};
window.memsegState = state;

export const PALETTE = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4', '#f032e6', '#bfef45'];
