// The Dice chart of the results panel: x = slice, y = Dice against the ground truth, one line per class in its
// colour, the per-class mean in the legend; hovering shows each class's value at a slice. The values are the
// report's (per-slice Dice of `report.per_class[].slices`, computed by the core): nothing is scored here.
// Plain SVG, no library.

import { el as html, swatch } from './ui.js';

const SVG = 'http://www.w3.org/2000/svg';
const W = 360;
const H = 150;
const M = { left: 30, right: 8, top: 8, bottom: 22 };

function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  parent?.append(node);
  return node;
}

/** The runs of consecutive slices that have a Dice (a line breaks where a slice has none). */
function segments(points) {
  const runs = [];
  let run = [];
  for (const p of points) {
    if (p.dice === null) {
      if (run.length) runs.push(run);
      run = [];
    } else {
      run.push(p);
    }
  }
  if (run.length) runs.push(run);
  return runs;
}

/**
 * Draws the chart into `root` (an element with `.dice-svg`, `.dice-legend` and `.dice-readout` children).
 * series: [{name, color, mean, pooled, points: [{slice, dice|null}]}]; slices: the volume's slice count.
 */
export function diceChart(root, series, slices) {
  const x = (slice) => M.left + (slices > 1 ? (slice / (slices - 1)) * (W - M.left - M.right) : 0);
  const y = (dice) => M.top + (1 - dice) * (H - M.top - M.bottom);
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Dice per slice and class' });
  for (const v of [0, 0.5, 1]) {
    el('line', { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v), class: 'grid' }, svg);
    el('text', { x: M.left - 4, y: y(v) + 3, class: 'tick', 'text-anchor': 'end' }, svg).textContent = v.toFixed(1);
  }
  const step = Math.max(1, Math.ceil(slices / 8));
  for (let s = 0; s < slices; s += step) {
    el('text', { x: x(s), y: H - 8, class: 'tick', 'text-anchor': 'middle' }, svg).textContent = String(s + 1);
  }
  el('text', { x: W - M.right, y: H - 8, class: 'tick axis', 'text-anchor': 'end' }, svg).textContent = 'slice';
  for (const [index, s] of series.entries()) {
    for (const run of segments(s.points)) {
      el('polyline', { points: run.map((p) => `${x(p.slice)},${y(p.dice)}`).join(' '), stroke: s.color, class: 'line' }, svg);
    }
    for (const p of s.points.filter((q) => q.dice !== null)) {
      const dot = el('circle', { cx: x(p.slice), cy: y(p.dice), r: 2.2, fill: s.color, class: 'dot' }, svg);
      Object.assign(dot.dataset, { series: index, slice: p.slice, dice: p.dice });
      el('title', {}, dot).textContent = `${s.name}, slice ${p.slice + 1}: Dice ${p.dice.toFixed(3)}`;
    }
  }
  const guide = el('line', { y1: M.top, y2: H - M.bottom, class: 'guide', visibility: 'hidden' }, svg);
  const readout = root.querySelector('.dice-readout');
  const idle = 'Hover the chart for the values of a slice.';
  readout.textContent = idle;
  svg.addEventListener('mousemove', (e) => {
    const box = svg.getBoundingClientRect();
    const px = ((e.clientX - box.left) / box.width) * W;
    const slice = Math.round(((px - M.left) / (W - M.left - M.right)) * (slices - 1));
    if (slice < 0 || slice >= slices) return;
    guide.setAttribute('x1', x(slice));
    guide.setAttribute('x2', x(slice));
    guide.setAttribute('visibility', 'visible');
    const values = series.map((s) => {
      const d = s.points.find((p) => p.slice === slice)?.dice;
      return `${s.name} ${d === null || d === undefined ? '—' : d.toFixed(3)}`;
    });
    readout.textContent = `Slice ${slice + 1}: ${values.join(' · ')}`;
  });
  svg.addEventListener('mouseleave', () => {
    guide.setAttribute('visibility', 'hidden');
    readout.textContent = idle;
  });
  root.querySelector('.dice-svg').replaceChildren(svg);
  root.querySelector('.dice-legend').replaceChildren(...series.map((s) => {
    // A report written before `slice_dice_mean` existed (kept in this browser) has only the pooled Dice.
    const parts = [s.mean !== null && `mean ${s.mean.toFixed(3)}`, s.pooled !== null && `pooled ${s.pooled.toFixed(3)}`].filter(Boolean);
    const mean = parts.length === 2 ? `${parts[0]} (${parts[1]})` : parts[0] || 'no Dice';
    return html('li', {}, swatch(s.color), html('span', { className: 'name' }, s.name), html('span', { className: 'mean' }, mean));
  }));
}

/**
 * The results panel's chart from a run's report (`per_class[].slices[].dice`, `slice_dice_mean`, `dice`):
 * hidden when no class has a per-slice Dice (no ground truth). `classes`: the page's [{value, name, color}].
 */
export function showDice(root, report, classes, slices) {
  const scored = Array.isArray(report?.per_class) ? report.per_class.filter((c) => c.slices?.some((s) => s.dice !== null)) : [];
  root.hidden = !scored.length;
  if (!scored.length) return;
  const series = scored.map((c) => {
    const cls = classes.find((k) => k.value === c.class);
    return {
      name: cls?.name ?? `class ${c.class}`, color: cls?.color ?? '#888',
      mean: c.slice_dice_mean ?? null, pooled: c.dice ?? null,
      points: c.slices.map((s) => ({ slice: s.slice, dice: s.dice })),
    };
  });
  diceChart(root, series, slices ?? Math.max(...scored.map((c) => c.slices.length)));
}
