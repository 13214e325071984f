// The page's small shared helpers for its status lines, errors and downloads (used by app.js, painting.js,
// persistence.js and run.js alike).
import { state } from './state.js';

export const $ = (id) => document.getElementById(id);

/**
 * A new element: `props` are set as properties (className, type, value, title...), `children` appended (a string
 * becomes a text node). The page builds its DOM this way and never from HTML strings: names, file names and
 * DICOM text are data a file carries, and the page's Trusted Types policy refuses strings as HTML anyway.
 */
export function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

/** A class's colour swatch (a CSSOM style, which the page's style-src policy allows, unlike a style attribute). */
export function swatch(color) {
  const node = el('span', { className: 'swatch' });
  node.style.background = color;
  return node;
}

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
