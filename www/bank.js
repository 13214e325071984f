// The teaching view: SAM2's memory bank at each step of a run, per class, as the core held it and attended to
// it (the `bank` snapshot of every progress message, `StepBank` in src/session/bank_snapshot.rs). Nothing is decided here:
// the roles, temporal slots, pointers and scores are the core's; this file lays them out and explains them.

import { el, swatch } from './ui.js';

const fmt = (x) => x.toFixed(2);
const sliceName = (i) => `slice ${i + 1}`;

/** A snapshot's frame reference ({slice} or {support}) as a short name. */
function placeName(at, supportNames) {
  if ('slice' in at) return sliceName(at.slice);
  return supportNames[at.support] ? `support ${at.support + 1} (${supportNames[at.support]})` : `support ${at.support + 1}`;
}

const key = (at) => ('slice' in at ? `z${at.slice}` : `s${at.support}`);

/**
 * Each cell's role at one step for one class: current, cond (attended conditioning memory), recent (attended
 * tracked memory), pointer (only its object pointer attended), held (in the bank, unused) or none.
 */
function roles(view, current) {
  const cells = new Map();
  const cell = (at) => {
    if (!cells.has(key(at))) cells.set(key(at), { role: 'none', at });
    return cells.get(key(at));
  };
  for (const h of view.held) Object.assign(cell(h.at), { role: 'held', conditioning: h.conditioning });
  for (const p of view.pointers) Object.assign(cell(p.at), { role: 'pointer', pointer: p.distance });
  for (const s of view.spatial) {
    Object.assign(cell(s.at), { role: s.t_pos === 0 ? 'cond' : 'recent', tPos: s.t_pos, tposEnc: s.tpos_enc, conditioning: s.conditioning });
  }
  Object.assign(cell({ slice: current }), { role: 'current', drawn: view.conditioning });
  return cells;
}

/** A slice's clicks and box for one class (prompts.js), in words: "2 clicks on it, 1 on the background, a box". */
function promptNote(p) {
  const on = p.clicks.filter((c) => c.positive).length;
  const off = p.clicks.length - on;
  const parts = [on && `${on} click${on > 1 ? 's' : ''} on it`, off && `${off} on the background`, p.box && 'a box'].filter(Boolean);
  return parts.join(', ') + (p.round ? ` (a correction after run ${p.round})` : '');
}

function cellTitle(c, supportNames) {
  const parts = [placeName(c.at, supportNames)];
  if (c.role === 'current' && c.prompt) parts.push(`being segmented: a clicked slice, its mask is SAM's answer to your prompt (${promptNote(c.prompt)})`);
  else if (c.role === 'current') parts.push(c.drawn ? 'being segmented: a drawn slice, its mask is yours' : 'being segmented');
  else if (c.prompt) parts.push(`conditioned by your prompt: ${promptNote(c.prompt)}`);
  if (c.role === 'cond') parts.push(`conditioning memory, t_pos 0 (maskmem_tpos_enc[${c.tposEnc}])`);
  if (c.role === 'recent') parts.push(`${c.conditioning ? 'conditioning frame in a recent slot' : 'recent memory'}, t_pos ${c.tPos} (maskmem_tpos_enc[${c.tposEnc}])`);
  if (c.role === 'held') parts.push('in memory, not attended at this step');
  if (c.pointer !== undefined) parts.push(`object pointer, temporal distance ${c.pointer}`);
  return parts.join(' · ');
}

function cellText(c) {
  if (c.role === 'cond') return 'C';
  if (c.role === 'recent') return String(c.tPos);
  if (c.role === 'current') return c.drawn ? '✎' : '▶';
  return '';
}

/** Why the supports were chosen (SGP's `select_supports`). */
function supportsWhy(view, supportNames) {
  if (!view.supports.length) return '';
  const items = view.supports.map((s) => `${placeName({ support: s.support }, supportNames)}: cos ${fmt(s.score)}, rank ${s.rank}${s.chosen ? ' ✓ chosen' : ''}`);
  return `Supports ranked by the cosine similarity of their image features (SGP): ${items.join('; ')}.`;
}

/** What SGP's eviction rule did with this slice's new memory, with its numbers. */
function evictionWhy(e, supportNames) {
  if (!e) return '';
  const name = (at) => placeName(at, supportNames);
  const head = `Similarity eviction: ${name(e.new)}'s new memory (predicted IoU ${fmt(e.new_iou)})`;
  if (e.outcome === 'added') return `${head} is kept: the bank had room (${e.pool.length} of ${e.capacity} tracked memories).`;
  const [i, simNewI] = e.least_similar;
  const [j, simIJ] = e.closest_to_it;
  const iouJ = e.pool.find((m) => key(m.at) === key(j)).iou;
  const rule = `the kept memory least like it is ${name(i)} (cos ${fmt(simNewI)}); the one most like ${name(i)} is ${name(j)} ` +
    `(cos ${fmt(simIJ)}, IoU ${fmt(iouJ)})`;
  if (e.outcome === 'replaced') {
    return `${head} replaces ${name(j)}: ${rule}; ${fmt(simNewI)} < ${fmt(simIJ)} (the new memory adds more variety) and ` +
      `${fmt(e.new_iou)} > ${fmt(iouJ)} − 0.1.`;
  }
  const why = simNewI >= simIJ ? `${fmt(simNewI)} ≥ ${fmt(simIJ)}: it would add no variety` : `its IoU ${fmt(e.new_iou)} ≤ ${fmt(iouJ)} − 0.1`;
  return `${head} is not kept: ${rule}; ${why}.`;
}

function explanation(step, mode, options) {
  const recent = step.bank.num_maskmem - 1;
  if (mode === 'supports-only') {
    return 'Supports only: each slice is segmented as if it followed the supports in a fresh video, so SAM2 attends to the ' +
      'supports (C) and their object pointers (dots) and to nothing else.' + (options.selectSupports ? ` Only the ${options.selectSupports} most similar supports are used.` : '');
  }
  const tracked = options.similarityEviction
    ? `${recent} tracked memories chosen for variety and quality by the similarity eviction (numbered by temporal slot: ${recent} = the closest)`
    : `the ${recent} most recent slices it segmented, numbered by temporal slot (${recent} = the neighbouring slice, 1 = the oldest)`;
  return `To segment the marked slice (▶), SAM2 attends to the conditioning slices (C: your painted masks, clicked slices (outlined) or supports) and to ${tracked}. ` +
    'It also reads the object pointers (dots) of earlier slices. Grey cells are held in memory but unused at this step.';
}

export class BankView {
  /**
   * root: the panel element; app: {classes() -> [{value, name, color}], supportNames() -> [string],
   * onPick(slice)}.
   */
  constructor(root, app) {
    this.root = root;
    this.app = app;
    this.steps = [];
    this.shown = -1;
    this.follow = true;
    this.strips = root.querySelector('.bank-strips');
    this.scrubber = root.querySelector('.bank-step');
    this.label = root.querySelector('.bank-step-label');
    this.scrubber.addEventListener('input', () => {
      this.follow = Number(this.scrubber.value) === this.steps.length - 1;
      this.show(Number(this.scrubber.value));
    });
    this.strips.addEventListener('click', (e) => {
      const slice = e.target.closest('[data-slice]')?.dataset.slice;
      if (slice !== undefined) app.onPick(Number(slice));
    });
  }

  /** A new run: `slices` in the volume, its classes (values, in the run's order), mode and memory options. */
  start({ slices, classes, mode, options }) {
    Object.assign(this, { slices, classes, mode, options, steps: [], shown: -1, follow: true });
    // The run's clicks and boxes (options.prompts): "slice:class" -> prompt, marked on their cells.
    this.prompted = new Map((options.prompts ?? []).map((p) => [`${p.slice}:${p.class}`, p]));
    this.root.hidden = false;
    this.scrubber.max = 0;
    this.scrubber.value = 0;
    this.strips.replaceChildren();
    this.label.textContent = 'Waiting for the first slice…';
  }

  /** A progress message of the run: {step, total, slice, reverse, bank}. */
  push(message) {
    const { step, total, slice, reverse, bank } = message;
    this.steps.push({ step, total, slice, reverse, bank });
    this.scrubber.max = this.steps.length - 1;
    if (this.follow) {
      this.scrubber.value = this.steps.length - 1;
      this.show(this.steps.length - 1);
    }
  }

  show(index) {
    const s = this.steps[index];
    if (!s) return;
    this.shown = index;
    this.label.textContent = `Step ${index + 1} / ${this.steps.length}: ${sliceName(s.slice)}${s.reverse ? ', reverse pass' : ''}`;
    const supportNames = this.app.supportNames();
    const supports = this.supportCount(supportNames);
    const all = this.app.classes();
    const blocks = s.bank.objects.map((view, object) => {
      const cls = all.find((c) => c.value === this.classes[object]) ?? { name: `class ${this.classes[object]}`, color: '#888' };
      return this.strip(view, s.slice, cls, supports, supportNames);
    });
    const intro = document.createElement('p');
    intro.className = 'hint bank-explain';
    intro.textContent = explanation(s, this.mode, this.options);
    this.strips.replaceChildren(intro, ...blocks, this.axis(supports));
  }

  /** Slice numbers under the strips (1, 5, 10, ...), in the strips' grid. */
  axis(supports) {
    const row = document.createElement('div');
    row.className = 'bank-strip bank-axis';
    row.style.setProperty('--cells', String(supports + this.slices));
    const every = this.slices > 60 ? 10 : 5;
    for (let i = 0; i < this.slices; i++) {
      if (i !== 0 && (i + 1) % every !== 0) continue;
      const tick = document.createElement('span');
      tick.textContent = String(i + 1);
      tick.style.gridColumn = String(supports + i + 1);
      row.append(tick);
    }
    for (let i = 0; i < supports; i++) {
      const tick = document.createElement('span');
      tick.textContent = `S${i + 1}`;
      tick.style.gridColumn = String(i + 1);
      row.append(tick);
    }
    for (const tick of row.children) tick.style.gridRow = '1';
    return row;
  }

  /** How many supports the run has: the names when known, else the highest support index any step shows. */
  supportCount(names) {
    let n = names.length;
    for (const { bank } of this.steps) {
      for (const v of bank.objects) {
        for (const at of [...v.held.map((h) => h.at), ...v.spatial.map((x) => x.at), ...v.supports.map((x) => ({ support: x.support }))]) {
          if ('support' in at) n = Math.max(n, at.support + 1);
        }
      }
    }
    return n;
  }

  strip(view, current, cls, supports, supportNames) {
    const cells = roles(view, current);
    const block = document.createElement('div');
    block.className = 'bank-class';
    const count = el('span', { className: 'bank-count' });
    const head = el('div', { className: 'bank-head' }, swatch(cls.color), el('span', { className: 'name' }, cls.name), ' ', count);
    const attended = view.spatial.length;
    const prompt = (slice) => this.prompted?.get(`${slice}:${cls.value}`);
    count.textContent = view.conditioning
      ? (prompt(current) ? `${prompt(current).round ? 'corrected slice: the tracked mask as you corrected it' : 'clicked slice: SAM\'s mask from your prompt'} (${promptNote(prompt(current))})` : 'drawn slice: its mask is used as it is')
      : `${attended} memories and ${view.pointers.length} pointers attended · ${view.held.length} held`;
    const row = document.createElement('div');
    row.className = 'bank-strip';
    row.style.setProperty('--cells', String(supports + this.slices));
    const places = [...Array.from({ length: supports }, (_, i) => ({ support: i })), ...Array.from({ length: this.slices }, (_, i) => ({ slice: i }))];
    for (const at of places) {
      const c = { ...(cells.get(key(at)) ?? { role: 'none', at }), prompt: 'slice' in at ? prompt(at.slice) : undefined };
      const el = document.createElement('span');
      el.className = `bank-cell role-${c.role}${c.pointer !== undefined ? ' ptr' : ''}${'support' in at ? ' support' : ''}${c.prompt ? ' prompted' : ''}`;
      el.dataset.role = c.role;
      if ('slice' in at) el.dataset.slice = at.slice;
      else el.dataset.support = at.support;
      if (c.tPos !== undefined) el.dataset.tpos = c.tPos;
      if (c.pointer !== undefined) el.dataset.pointer = c.pointer;
      el.textContent = cellText(c);
      el.title = cellTitle(c, supportNames);
      row.append(el);
    }
    block.append(head, row);
    const why = [supportsWhy(view, supportNames), evictionWhy(view.eviction, supportNames)].filter(Boolean);
    if (why.length) {
      const p = document.createElement('p');
      p.className = 'bank-why';
      p.textContent = why.join(' ');
      block.append(p);
    }
    return block;
  }

  /** Another volume: the steps belong to the previous one. */
  clear() {
    this.steps = [];
    this.root.hidden = true;
  }

  /** The run ended (finished, cancelled or failed): the scrubber replays its steps. */
  finish() {
    if (!this.steps.length) this.root.hidden = true;
    else this.show(this.shown);
  }
}
