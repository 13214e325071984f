// The prompt tool on the CPU fallback: clicks and a box with the mouse give SAM's mask at once (the first
// click SAM's three candidates), undo and redo, the prompted slices condition the run exactly as the CLI's
// --points / --box condition it (voxel for voxel within the usual rounding), a prompted slice's result is its
// feedback, the teaching view marks them; after the run, clicks on a tracked slice correct it on the run's
// memory, and Run tracks again from there only, as the CLI's INDEX@1 replays it; the clicks come back after a
// reload, the corrections waiting for the next run.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { NO_WEBGPU_FLAGS, memsegBin, screenshot, serve } from './harness.mjs';
import {
  CHECKPOINT, OVERRIDES, PAINTED_SLICE, countDiffer, downloadFrom, loadModel, loadSample, niftiF32, niftiVoxels,
  openRecorded, runToEnd, toClient,
} from './journey.mjs';

const BOXED_SLICE = 16;
const CORRECTED_SLICE = 20; // tracked forward from slice 13 (the first prompted slice)

let server;
before(async () => {
  server = await serve();
});
after(() => server?.close());

/** The feedback of (slice, class 1[, round]) once the core answered the prompt as it is now, with `clicks` clicks. */
async function feedback(page, slice, clicks, round = 0) {
  const key = round ? `${slice}:1@${round}` : `${slice}:1`;
  await page.waitForFunction(({ key, clicks }) => {
    const s = window.memsegState;
    const p = s.prompts.get(key);
    const f = s.feedback.get(key);
    return p?.clicks.length === clicks && f?.answered.clicks.length === clicks && JSON.stringify(f.answered.box ?? null) === JSON.stringify(p.box);
  }, { key, clicks }, { timeout: 120_000 });
  return page.evaluate((key) => {
    const f = window.memsegState.feedback.get(key);
    return { ...f, mask: Array.from(f.mask), candidates: f.candidates?.map((c) => ({ iou: c.iou, mask: Array.from(c.mask) })) ?? null };
  }, key);
}

/** The CLI on the page's own volume (written as NIfTI) with the page's prompts as --points / --box. */
async function cliRun(page, prompts, dir) {
  const meta = await page.evaluate(() => window.memsegState.volume);
  const values = await page.evaluate(async () => Array.from(await window.memsegCall('volumeValues')));
  const volume = join(dir, 'sample.nii');
  writeFileSync(volume, niftiF32(values, [meta.width, meta.height, meta.slices], meta.spacing_mm));
  const target = (p) => `${p.slice}:${p.class}${p.round ? `@${p.round}` : ''}`;
  const args = prompts.flatMap((p) => [
    ...(p.box ? ['--box', `${target(p)}=${p.box.join(',')}`] : []),
    ...(p.clicks.length ? ['--points', `${target(p)}=${p.clicks.map((c) => `${c.x},${c.y},${c.positive ? 1 : 0}`).join(';')}`] : []),
  ]);
  const out = join(dir, 'cli');
  execFileSync(memsegBin, [
    '--backend', 'flex', 'segment', '--weights', CHECKPOINT, '--frames', volume, ...args, '--modality', 'ct',
    '--out', out, ...OVERRIDES.map((o) => `--override=${o}`),
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  return { labels: niftiVoxels(join(out, 'labels.nii.gz')), report: JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')), args };
}

test('clicks and a box: SAM\'s mask at once, undo, the run conditioned as the CLI\'s --points / --box, kept across a reload', async () => {
  const { browser, page, consoleErrors, outside } = await openRecorded(server, NO_WEBGPU_FLAGS);
  const dir = mkdtempSync(join(tmpdir(), 'memseg-prompts-'));
  try {
    await loadModel(page);
    await loadSample(page);
    await page.check('#tool-prompt');
    assert.equal(await page.isVisible('#prompt-panel'), true);

    // A click on the liver of the middle slice: SAM offers three masks. (The slice is encoded now, unless an
    // encoder helper already did it while the page was idle: the middle slice is where a run starts.)
    await page.mouse.click(...(await toClient(page, 33.5, 43.5)));
    const first = await feedback(page, PAINTED_SLICE, 1);
    assert.equal(first.candidates.length, 3, 'one click: SAM\'s three candidate masks');
    assert.ok(first.candidates.some((c) => c.mask.join() === first.mask.join()), 'the shown mask is one of them');
    assert.equal(await page.locator('#prompt-choices button').count(), 3);
    assert.ok(first.mask.some((v) => v === 1), 'the click finds a structure');

    // A right click on the background: no encoding, two clicks are no longer ambiguous.
    await page.mouse.click(...(await toClient(page, 80.5, 20.5)), { button: 'right' });
    const second = await feedback(page, PAINTED_SLICE, 2);
    assert.equal(second.encoded, false, 'later clicks only run the prompt encoder and mask decoder');
    assert.equal(second.candidates, null);
    console.log(`click feedback (reduced model, CPU fallback): first ${Math.round(first.ms)} ms (encoded: ${first.encoded}), next ${Math.round(second.ms)} ms`);
    assert.deepEqual(await page.evaluate((k) => window.memsegState.prompts.get(k).clicks, `${PAINTED_SLICE}:1`),
      [{ x: 33, y: 43, positive: true }, { x: 80, y: 20, positive: false }]);

    // Undo drops the background click (its feedback is the first click's again), redo brings it back.
    await page.keyboard.press('Control+z');
    const undone = await feedback(page, PAINTED_SLICE, 1);
    assert.equal(undone.mask.join(), first.mask.join(), 'undo gives the one-click mask again');
    await page.keyboard.press('Control+y');
    assert.equal((await feedback(page, PAINTED_SLICE, 2)).mask.join(), second.mask.join());

    // Bad prompts reach the core only through the worker: each is refused with a message, nothing changes.
    const refusals = await page.evaluate(async () => {
      const ask = (prompt, painted = null) => window.memsegCall('promptSlice', { request: { prompt, intensity: 'auto' }, painted })
        .then(() => 'accepted', (e) => e.message);
      const click = [{ x: 5, y: 5, positive: true }];
      return [
        await ask({ slice: 99, class: 1, clicks: click }),
        await ask({ slice: 3, class: 1, clicks: [{ x: 96, y: 5, positive: true }] }),
        await ask({ slice: 3, class: 1 }),
        await ask({ slice: 3, class: 1, box: [30, 5, 10, 20] }),
        await ask({ slice: 3, class: 1, clicks: [{ x: 5, y: 5, positive: 2 }] }),
        await ask({ slice: 3, class: 1, clicks: click }, new Uint8Array(10)),
      ];
    });
    const expected = [/slice 99 is out of range/, /\(96, 5\) is not inside the 96x96 slice/, /give a box or at least one click/,
      /empty or inverted/, /prompt: .*invalid type/, /painted mask is not 96x96/];
    refusals.forEach((r, i) => assert.match(r, expected[i]));

    // A box dragged on slice 17.
    await page.fill('#slice', String(BOXED_SLICE));
    await page.waitForFunction((l) => document.querySelector('#slice-label').textContent.startsWith(l), `Slice ${BOXED_SLICE + 1} / 24`);
    await page.mouse.move(...(await toClient(page, 20, 28)));
    await page.mouse.down();
    await page.mouse.move(...(await toClient(page, 46, 58)), { steps: 6 });
    await page.mouse.up();
    const boxed = await feedback(page, BOXED_SLICE, 0);
    assert.deepEqual(await page.evaluate((k) => window.memsegState.prompts.get(k).box, `${BOXED_SLICE}:1`), [20, 28, 46, 58]);
    await screenshot(page, 'prompts-box');

    // The run: both prompted slices condition it; each one's result is its feedback.
    const prompts = await page.evaluate(() => window.memsegApp.prompts());
    const run = await runToEnd(page, 25);
    assert.deepEqual(run.report.prompts, prompts.map(({ slice, class: c, box, clicks }) => ({ slice, class: c, ...(box ? { box } : {}), ...(clicks.length ? { clicks } : {}) })));
    const results = await page.evaluate(() => window.memsegApp.results());
    assert.equal(results[PAINTED_SLICE].join(), second.mask.join(), 'the clicked slice\'s result is its feedback');
    assert.equal(results[BOXED_SLICE].join(), boxed.mask.join(), 'the boxed slice\'s result is its feedback');

    // The teaching view marks the prompted slices and says what was given there.
    const marked = await page.evaluate(() => [...document.querySelectorAll('#teaching .bank-cell.prompted')].map((c) => [Number(c.dataset.slice), c.title]));
    assert.deepEqual([...new Set(marked.map(([z]) => z))].sort((a, b) => a - b), [PAINTED_SLICE, BOXED_SLICE]);
    assert.ok(marked.some(([z, t]) => z === PAINTED_SLICE && /1 click on it, 1 on the background/.test(t)), JSON.stringify(marked));
    assert.ok(marked.some(([z, t]) => z === BOXED_SLICE && /a box/.test(t)));

    // A correction after the run: clicks on a slice the run tracked, answered on the run's memory (no encoding,
    // no SAM candidates); taking the last one back and giving it again ends where it was.
    assert.equal(await page.evaluate(() => [window.memsegState.round, window.memsegState.correctable].join()), '1,true');
    const before = await page.evaluate(() => window.memsegApp.results());
    await page.fill('#slice', String(CORRECTED_SLICE));
    await page.waitForFunction((l) => document.querySelector('#slice-label').textContent.startsWith(l), `Slice ${CORRECTED_SLICE + 1} / 24`);
    await page.mouse.click(...(await toClient(page, 33.5, 43.5)));
    const corrected1 = await feedback(page, CORRECTED_SLICE, 1, 1);
    await page.mouse.click(...(await toClient(page, 60.5, 50.5)), { button: 'right' });
    const corrected = await feedback(page, CORRECTED_SLICE, 2, 1);
    assert.equal(corrected.candidates, null, 'a correction has no candidates to choose from');
    assert.equal(corrected.encoded, false);
    console.log(`correction feedback (reduced model, CPU fallback): ${Math.round(corrected1.ms)} ms, then ${Math.round(corrected.ms)} ms`);
    await page.keyboard.press('Control+z');
    assert.equal((await feedback(page, CORRECTED_SLICE, 1, 1)).mask.join(), corrected1.mask.join(), 'undo of a correction click');
    await page.keyboard.press('Control+y');
    assert.equal((await feedback(page, CORRECTED_SLICE, 2, 1)).mask.join(), corrected.mask.join(), 'redo of a correction click');

    // Run: only the slices from the corrected one outwards (forward: 20..23) are tracked again.
    const withCorrection = await page.evaluate(() => window.memsegApp.prompts());
    await page.click('#run');
    await page.waitForSelector('#run-status.ok, #run-status.error', { timeout: 540_000 });
    assert.match(await page.textContent('#run-status'), /^Tracked again from the corrections: 4 slices/);
    const rerun = await page.evaluate(() => window.memsegState.lastRun);
    assert.deepEqual(rerun.report.order.slice(-4), [20, 21, 22, 23]);
    assert.deepEqual(rerun.report.prompts.at(-1), { slice: CORRECTED_SLICE, class: 1, round: 1, clicks: withCorrection.at(-1).clicks });
    const after = await page.evaluate(() => window.memsegApp.results());
    assert.equal(after[CORRECTED_SLICE].join(), corrected.mask.join(), 'the corrected slice\'s result is its feedback');
    for (let z = 0; z < CORRECTED_SLICE; z++) assert.equal(after[z].join(), before[z].join(), `slice ${z} is left as it was`);
    assert.equal(await page.evaluate(() => window.memsegState.round), 2, 'the next clicks are the next round\'s');

    // The CLI with the same clicks, box and correction on the same volume: the whole history replayed.
    const ours = niftiVoxels(await downloadFrom(page, '#export-nifti', dir));
    const native = await cliRun(page, withCorrection, dir);
    const differ = countDiffer(ours, native.labels);
    console.log(`page vs CLI (${native.args.join(' ')}): ${differ} of ${ours.length} voxels differ`);
    assert.ok(differ <= ours.length * 1e-3, `${differ} voxels differ from the CLI`);
    assert.deepEqual(native.report.order, rerun.report.order);

    // A reload keeps the clicks, the box and the correction with the painted work; a new correction waits for a
    // run (the run it would correct is gone with the reload).
    await page.reload();
    await loadSample(page);
    assert.deepEqual(await page.evaluate(() => window.memsegApp.prompts()), withCorrection);
    assert.match(await page.textContent('#work-status'), /3 slices with clicks or a box/);
    // The weights kept in this browser load by themselves after the reload, and the clicks' feedback is asked
    // for again: both settle before the click below, whose refusal they would otherwise overwrite.
    await page.waitForFunction(() => /kept in this browser/.test(document.querySelector('#model-status').textContent), null, { timeout: 120_000 });
    await page.waitForFunction(() => {
      const s = window.memsegState;
      return [...s.prompts.values()].filter((p) => !p.round).length <= s.feedback.size;
    }, null, { timeout: 120_000 });
    await page.check('#tool-prompt');
    await page.mouse.click(...(await toClient(page, 33.5, 43.5)));
    await page.waitForSelector('#prompt-status.error');
    assert.match(await page.textContent('#prompt-status'), /press Run first/);
    assert.deepEqual(await page.evaluate(() => window.memsegApp.prompts()), withCorrection, 'the refused click is not kept');
    assert.deepEqual(consoleErrors, []);
    assert.deepEqual(outside(), []);
  } finally {
    await browser.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
