// The teaching view and the Dice chart, driven through the page: a propagation on the sample volume with the
// reduced model; the memory-bank strip of a chosen step must show the cells SAM2's rules give for that slice and
// exactly what the worker sent for that step; the scrubber replays the steps and a cell click moves the viewer;
// the chart's points are the per-slice Dice of the exported labels against the sample's ground truth.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { NO_WEBGPU_FLAGS, screenshot, serve } from './harness.mjs';
import { PAINTED_SLICE, downloadFrom, loadModel, loadSample, niftiVoxels, openRecorded, paintLiver, runToEnd } from './journey.mjs';

let server;
before(async () => {
  server = await serve();
});
after(() => server?.close());

/** The cells of the first class's strip: [{slice | support, role, tpos, pointer, text}]. */
const stripCells = (page) => page.$$eval('#teaching .bank-class:first-of-type .bank-cell', (cells) => cells.map((c) => ({
  slice: c.dataset.slice === undefined ? null : Number(c.dataset.slice),
  support: c.dataset.support === undefined ? null : Number(c.dataset.support),
  role: c.dataset.role,
  tpos: c.dataset.tpos === undefined ? null : Number(c.dataset.tpos),
  pointer: c.dataset.pointer === undefined ? null : Number(c.dataset.pointer),
  text: c.textContent,
})));

/** What the strip must show for one class's snapshot: the step data, cell by cell. */
function expectedFromStep(view, current) {
  const cells = new Map();
  const at = (p) => (cells.has(p.slice) ? cells.get(p.slice) : cells.set(p.slice, { role: 'none', tpos: null, pointer: null }).get(p.slice));
  for (const h of view.held) at(h.at).role = 'held';
  for (const p of view.pointers) Object.assign(at(p.at), { role: 'pointer', pointer: p.distance });
  for (const s of view.spatial) Object.assign(at(s.at), { role: s.t_pos === 0 ? 'cond' : 'recent', tpos: s.t_pos });
  at({ slice: current }).role = 'current';
  return cells;
}

function sliceDice(pred, truth, cls) {
  let p = 0;
  let t = 0;
  let both = 0;
  for (let i = 0; i < pred.length; i++) {
    const a = pred[i] === cls;
    const b = truth[i] === cls;
    p += a;
    t += b;
    both += a && b;
  }
  return p + t === 0 ? null : (2 * both) / (p + t);
}

/**
 * With SGP's similarity eviction, each tracked step says what the rule did with the new memory, with the
 * rule's own numbers (from the step data), and the recent slots are the kept memories.
 */
async function evictionIsExplained(page) {
  await page.click('#run-panel details summary');
  await page.check('#similarity-eviction');
  await runToEnd(page);
  const steps = await page.evaluate(() => window.memsegApp.bankSteps());
  const outcomes = steps.map((s) => s.bank.objects[0].eviction?.outcome ?? null);
  // The first forward step is the painted slice (no decision); the pool of 6 fills on the next 6 slices.
  assert.deepEqual(outcomes.slice(0, 7), [null, 'added', 'added', 'added', 'added', 'added', 'added']);
  // A decision whose next step is in the same pass (the reverse pass starts from the conditioning memories).
  const index = outcomes.findIndex((o, k) => (o === 'replaced' || o === 'rejected') && steps[k + 1]?.reverse === false);
  assert.ok(index > 0, `a full pool decided something: ${outcomes}`);
  const e = steps[index].bank.objects[0].eviction;
  await page.fill('#teaching .bank-step', String(index));
  const why = await page.textContent('#teaching .bank-why');
  const [j, simIJ] = e.closest_to_it;
  const [i, simNewI] = e.least_similar;
  const verb = e.outcome === 'replaced' ? `replaces slice ${j.slice + 1}` : 'is not kept';
  assert.ok(why.startsWith(`Similarity eviction: slice ${e.new.slice + 1}'s new memory (predicted IoU ${e.new_iou.toFixed(2)}) ${verb}`), why);
  assert.ok(why.includes(`least like it is slice ${i.slice + 1} (cos ${simNewI.toFixed(2)})`) && why.includes(`(cos ${simIJ.toFixed(2)}`), why);
  // The recent slots of the next step are the memories kept after this decision, closest first.
  const kept = e.pool.map((m) => m.at.slice).map((s) => (e.outcome === 'replaced' && s === j.slice ? e.new.slice : s));
  const next = steps[index + 1].bank.objects[0];
  assert.deepEqual(next.spatial.filter((x) => !x.conditioning).map((x) => x.at.slice).sort((a, b) => a - b), kept.sort((a, b) => a - b));
  await page.fill('#teaching .bank-step', String(index + 1));
  const recent = (await stripCells(page)).filter((c) => c.role === 'recent').map((c) => c.slice);
  assert.deepEqual(recent, kept);
  console.log(`similarity eviction: ${outcomes.filter((o) => o === 'replaced').length} replaced, ${outcomes.filter((o) => o === 'rejected').length} rejected`);
  await page.fill('#teaching .bank-step', String(index));
  await page.locator('#teaching').scrollIntoViewIfNeeded();
  await screenshot(page, 'teaching-eviction');
}

test('the teaching view shows the memory bank of every step, and the chart the Dice of every slice', async () => {
  const { browser, page, consoleErrors, outside } = await openRecorded(server, NO_WEBGPU_FLAGS);
  const dir = mkdtempSync(join(tmpdir(), 'memseg-teaching-'));
  try {
    await loadModel(page);
    await loadSample(page);
    await paintLiver(page);
    assert.equal(await page.isHidden('#teaching'), true, 'no teaching view before a run');
    const run = await runToEnd(page);
    const steps = await page.evaluate(() => window.memsegApp.bankSteps());
    assert.deepEqual(steps.map((s) => s.slice), run.report.order, 'one snapshot per step, in the run order');
    assert.ok(steps.every((s) => s.bank.objects.length === 1 && s.bank.num_maskmem === 7));
    // The scrubber ends on the last step after the run.
    assert.equal(await page.inputValue('#teaching .bank-step'), String(steps.length - 1));

    // Step 9: slice 20 (0-based) of the forward pass, 8 slices after the painted one.
    const index = 8;
    await page.fill('#teaching .bank-step', String(index));
    const step = steps[index];
    assert.deepEqual([step.slice, step.reverse], [PAINTED_SLICE + 8, false]);
    assert.equal(await page.textContent('#teaching .bank-step-label'), `Step 9 / 25: slice ${step.slice + 1}`);
    const cells = await stripCells(page);
    assert.equal(cells.length, 24, 'one cell per slice, no support in this mode');
    const expected = expectedFromStep(step.bank.objects[0], step.slice);
    for (const c of cells) {
      const want = expected.get(c.slice) ?? { role: 'none', tpos: null, pointer: null };
      assert.deepEqual([c.role, c.tpos, c.pointer], [want.role, want.tpos, want.pointer], `cell of slice ${c.slice}`);
    }
    // And SAM2's rule, from the slice numbers alone: the painted slice conditions (C), slices z-1 .. z-6 are
    // the recent memories with temporal slots 6 .. 1, the slices in between give object pointers.
    const role = (s) => cells.find((c) => c.slice === s);
    assert.deepEqual([role(PAINTED_SLICE).role, role(PAINTED_SLICE).text], ['cond', 'C']);
    for (let d = 1; d <= 6; d++) assert.deepEqual([role(step.slice - d).role, role(step.slice - d).tpos], ['recent', 7 - d]);
    assert.equal(role(PAINTED_SLICE + 1).role, 'pointer');
    assert.equal(role(PAINTED_SLICE + 1).pointer, 7);
    assert.equal(role(step.slice).role, 'current');
    assert.ok(cells.filter((c) => c.slice > step.slice).every((c) => c.role === 'none'), 'nothing after the slice yet');
    await page.locator('#teaching').scrollIntoViewIfNeeded();
    await screenshot(page, 'teaching-step');

    // The scrubber replays: step 1 is the painted slice itself (its own mask, nothing attended).
    await page.fill('#teaching .bank-step', '0');
    assert.match(await page.textContent('#teaching .bank-step-label'), /^Step 1 \/ 25: slice 13$/);
    assert.match(await page.textContent('#teaching .bank-count'), /drawn slice/);
    assert.deepEqual((await stripCells(page)).filter((c) => c.role !== 'none').map((c) => [c.slice, c.role]), [[PAINTED_SLICE, 'current']]);
    // The last step: slice 1 in the reverse pass, its recent memories after it.
    await page.fill('#teaching .bank-step', '24');
    assert.equal(await page.textContent('#teaching .bank-step-label'), 'Step 25 / 25: slice 1, reverse pass');
    const last = await stripCells(page);
    assert.deepEqual(last.filter((c) => c.role === 'recent').map((c) => [c.slice, c.tpos]), [[1, 6], [2, 5], [3, 4], [4, 3], [5, 2], [6, 1]]);
    // A click on a cell shows that slice in the viewer.
    await page.click('#teaching .bank-class .bank-cell[data-slice="5"]');
    await page.waitForFunction(() => document.querySelector('#slice-label').textContent.startsWith('Slice 6 / 24'));

    // The chart: each point is the Dice of the exported labels against the sample's truth on that slice.
    const labels = niftiVoxels(await downloadFrom(page, '#export-nifti', dir));
    const area = 96 * 96;
    const want = [];
    for (let z = 0; z < 24; z++) {
      const truth = await page.evaluate((s) => window.memsegCall('truthSlice', { z: s }).then((t) => Array.from(t)), z);
      want.push(sliceDice(labels.subarray(z * area, (z + 1) * area), truth, 1));
    }
    assert.equal(await page.isVisible('#dice-chart'), true);
    const dots = await page.$$eval('#dice-chart circle.dot', (els) => els.map((e) => [Number(e.dataset.slice), Number(e.dataset.dice)]));
    assert.deepEqual(dots.map(([s]) => s), want.flatMap((d, z) => (d === null ? [] : [z])), 'a point for each slice with a Dice');
    for (const [s, d] of dots) assert.ok(Math.abs(d - want[s]) < 1e-12, `slice ${s}: chart ${d}, test ${want[s]}`);
    const scored = want.filter((d) => d !== null);
    const mean = scored.reduce((a, b) => a + b, 0) / scored.length;
    assert.match(await page.textContent('#dice-chart .dice-legend'), new RegExp(`liver.*mean ${mean.toFixed(3)}`));
    // Hovering a point shows its slice's value.
    const [hs, hd] = dots[Math.floor(dots.length / 2)];
    await page.hover(`#dice-chart circle.dot[data-slice="${hs}"]`);
    assert.equal(await page.textContent('#dice-chart .dice-readout'), `Slice ${hs + 1}: liver ${hd.toFixed(3)}`);
    const bytes = JSON.stringify(steps.map((x) => x.bank)).length / steps.length;
    console.log(`teaching: ${steps.length} snapshots of ${Math.round(bytes)} bytes of JSON on average; ` +
      `per-slice Dice mean ${mean.toFixed(4)} over ${scored.length} slices`);
    await page.locator('#results-panel').scrollIntoViewIfNeeded();
    await screenshot(page, 'teaching-dice-chart');

    await evictionIsExplained(page);
    assert.deepEqual(outside(), []);
    assert.deepEqual(consoleErrors, []);
  } finally {
    await browser.close();
  }
});
