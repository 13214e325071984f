// The model's resolution as a visible choice in the model panel: the select applies `++model.image_size=N`
// after the typed overrides (as the CLI's --image-size does), and a finished run's time per slice is shown for
// its size on this device, kept across reloads. A second run reuses the first one's encoder features.
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { NO_WEBGPU_FLAGS, screenshot, serve } from './harness.mjs';
import { CHECKPOINT, loadModel, loadSample, openRecorded, paintLiver, runToEnd } from './journey.mjs';

let server;
before(async () => {
  server = await serve();
});
after(() => server?.close());

test('the resolution select sets the loaded model size, and a run leaves its time per slice for that size', async () => {
  const { browser, page, outside } = await openRecorded(server, NO_WEBGPU_FLAGS);
  try {
    assert.match(await page.textContent('#model-size-hint'), /quarter of the work/);
    // The weights file's own size (the reduced fixture at 128 through its overrides): a run records its time.
    await loadModel(page);
    assert.equal(await page.evaluate(() => window.memsegState.model.image_size), 128);
    assert.match(await page.textContent('#model-size-hint'), /loaded model runs at 128/);
    await loadSample(page);
    await paintLiver(page);
    const run = await runToEnd(page);
    const perSlice = run.report.seconds / run.steps;
    const hint = await page.textContent('#model-size-hint');
    const shown = hint.match(/Last runs on this device: ([\d.]+) (ms|s) a slice at 128/);
    assert.ok(shown, hint);
    // Shown rounded to the millisecond under a second, to 0.1 s above.
    const [shownSeconds, rounding] = shown[2] === 'ms' ? [Number(shown[1]) / 1000, 0.0006] : [Number(shown[1]), 0.051];
    assert.ok(Math.abs(shownSeconds - perSlice) <= rounding, `${hint} vs ${perSlice} s`);

    // Run again, as after correcting a mask: every slice's encoder features come from the core's cache, the
    // labels are the same, and the faster run is not taken as this size's time per slice.
    const rerun = await runToEnd(page);
    assert.equal(rerun.report.frames_encoded, 0, 'no slice encoded twice');
    assert.deepEqual(rerun.report.per_class, run.report.per_class);
    assert.match(await page.textContent('#run-status'), /24 slices reused from the last run/);
    assert.equal(await page.textContent('#model-size-hint'), hint);

    // 512 chosen: the next load applies it after the typed overrides; the time at 128 is still shown.
    await page.selectOption('#model-size', '512');
    assert.match(await page.textContent('#model-size-hint'), /Load the weights again/);
    // The same weights under another name (a file input fires no change for the file it already holds).
    const again = join(mkdtempSync(join(tmpdir(), 'memseg-size-')), 'again.pt');
    copyFileSync(CHECKPOINT, again);
    await page.setInputFiles('#model-file', again); // the overrides typed for the first load stay
    await page.waitForFunction(() => window.memsegState.model?.name === 'again.pt', null, { timeout: 120_000 });
    assert.equal(await page.evaluate(() => window.memsegState.model.image_size), 512);
    assert.match(await page.textContent('#model-size-hint'), /loaded model runs at 512/);
    await screenshot(page, 'resolution-512');
    await page.reload();
    await page.waitForFunction(() => window.memsegState?.device);
    assert.match(await page.textContent('#model-size-hint'), /a slice at 128/, 'kept across a reload');
    assert.deepEqual(outside(), []);
  } finally {
    await browser.close();
  }
});
