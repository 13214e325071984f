// The page's small shared helpers for its status lines, errors and downloads (used by app.js, painting.js,
// persistence.js and run.js alike).
import { state } from './state.js';

export const $ = (id) => document.getElementById(id);

/** The page cannot go on (no compute device, a second crash): the error box, and the body's error state. */
export function showError(message) {
  state.errors.push(message);
  const box = $('error');
  box.textContent = message;
  box.hidden = false;
  document.body.dataset.state = 'error';
}

/** A panel's status line; kind 'error' for a recoverable failure (the app stays usable). */
export function status(id, text, kind = '') {
  const el = $(id);
  el.textContent = text;
  el.className = `status ${kind}`;
  if (kind === 'error') state.messages.push(text);
}

export function download(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}
