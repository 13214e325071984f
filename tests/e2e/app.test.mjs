// The segmentation app driven as a user would: the reduced-config checkpoint (official .pt layout) uploaded
// through the file input (its config overrides typed into the advanced field), the sample volume, a mask
// painted with the mouse, a run, the exports downloaded; the exported labels are compared with the native
// CLI's on the same volume and the same painted mask. Every request the page makes is intercepted: none may
// leave the local server. Bad files must give readable messages and leave the app usable.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { NO_WEBGPU_FLAGS, WEBGPU_FLAGS, screenshot, serve } from './harness.mjs';
import {
  PAINTED_SLICE, countDiffer, downloadFrom, loadModel, loadSample, nativeRun, niftiF32, niftiVoxels, openRecorded,
  paintLiver, runToEnd, toClient, unzipStored,
} from './journey.mjs';

let server;

before(async () => {
  server = await serve();
});
after(() => server?.close());

for (const [label, flags, backend] of [['WebGPU', WEBGPU_FLAGS, 'wgpu'], ['CPU fallback', NO_WEBGPU_FLAGS, 'flex']]) {
  test(`the whole journey in the browser (${label}) gives the native CLI's labels, with no request leaving the page`, async () => {
    const { browser, page, state, consoleErrors, outside } = await openRecorded(server, flags);
    const dir = mkdtempSync(join(tmpdir(), 'memseg-app-'));
    const tag = backend === 'wgpu' ? 'webgpu' : 'cpu';
    try {
      assert.equal(state.device.backend, backend);
      assert.match(await page.textContent('#privacy'), /Nothing leaves this device/);
      await screenshot(page, `app-start-${tag}`);
      await loadModel(page);
      await loadSample(page);
      const mask = await paintLiver(page);
      await screenshot(page, `app-painted-${tag}`);
      const run = await runToEnd(page);
      await page.check('#outline');
      await page.fill('#slice', '15');
      await page.waitForFunction(() => document.querySelector('#slice-label').textContent.startsWith('Slice 16 / 24'));
      await screenshot(page, `app-results-${tag}`);
      assert.equal(run.report.complete, true);
      assert.deepEqual(run.report.classes, [1]);
      assert.deepEqual(run.report.drawn_slices, [PAINTED_SLICE]);
      // On the CPU fallback, encoder helpers (www/encoder-pool.js) encode slices for the run, even while painting.
      assert.equal(run.report.frames_encoded + (run.encodeAhead?.kept ?? 0), 24, 'each slice encoded once');
      assert.equal(run.encodeAhead?.helpers ?? 0, state.device.encoderHelpers);
      if (backend === 'wgpu') assert.equal(state.device.encoderHelpers, 0, 'helpers on the CPU fallback only');
      const perSlice = (run.report.seconds / run.steps).toFixed(2);

      const niftiPath = await downloadFrom(page, '#export-nifti', dir);
      const reportPath = await downloadFrom(page, '#export-report', dir);
      const zipPath = await downloadFrom(page, '#export-png', dir);
      const ours = niftiVoxels(niftiPath);
      const exported = JSON.parse(readFileSync(reportPath, 'utf8'));
      assert.equal(ours.length, 96 * 96 * 24);
      assert.deepEqual(exported.per_class[0].voxels, ours.filter((v) => v === 1).length);
      // The reduced checkpoint has random weights: its masks mean nothing, but the report scores them.
      assert.ok(exported.per_class[0].dice >= 0 && exported.per_class[0].dice <= 1);
      // What the viewer showed while the run progressed is what was exported.
      const shown = (await page.evaluate(() => window.memsegApp.results())).flat();
      assert.deepEqual(Buffer.from(shown), Buffer.from(ours));
      const pngs = unzipStored(readFileSync(zipPath));
      assert.equal(pngs.length, 24, 'one PNG per slice');

      const native = await nativeRun(page, mask, dir);
      const differ = countDiffer(ours, native.labels);
      const nativePerSlice = (native.report.seconds / native.report.order.length).toFixed(2);
      console.log(`${label}: ${run.steps} slices at ${perSlice} s a slice in the browser (native CLI, Flex: ${nativePerSlice} s); ` +
        `${differ} of ${ours.length} voxels differ from the CLI's labels; Dice vs truth ${exported.per_class[0].dice.toFixed(4)} ` +
        `(CLI ${native.report.per_class[0].voxels} voxels, browser ${exported.per_class[0].voxels})`);
      assert.deepEqual(native.report.order, run.report.order);
      // The zip holds the CLI's PNG files, by name, and the same bytes wherever the labels agree.
      const names = native.report.outputs.filter((n) => n.endsWith('.png'));
      assert.deepEqual(pngs.map((p) => p.name), names);
      const samePngs = pngs.filter((p) => readFileSync(join(dir, 'native', p.name)).equals(p.bytes)).length;
      assert.ok(samePngs >= 24 - differ, `${samePngs} PNGs equal the CLI's`);
      // Floating-point sums in another order (wasm vs native SIMD, GPU vs CPU) can flip a pixel whose logit
      // is within rounding of 0; anything more is a real difference.
      assert.ok(differ <= ours.length * 1e-3, `${differ} voxels differ from the CLI`);
      if (backend === 'flex') {
        await supportModeMatchesCli(page, mask, dir, 'supports-only');
        await supportModeMatchesCli(page, mask, dir, 'propagate-middle');
      }
      assert.deepEqual(outside(), [], 'requests that left the local server');
      assert.deepEqual(consoleErrors, []);
    } finally {
      await browser.close();
    }
  });
}

/**
 * The painted slice used as a support, against the CLI given the same slice as `--support`: supports-only
 * (1S1Q, every slice from the support alone) or propagate-middle (S1SFQ, the support inserted before the
 * middle slice).
 */
async function supportModeMatchesCli(page, mask, dir, mode) {
  await page.selectOption('#mode', mode);
  const run = await runToEnd(page, 24);
  assert.deepEqual(run.report.supports, [`slice ${PAINTED_SLICE} (slice_00${PAINTED_SLICE})`]);
  assert.deepEqual(run.report.mode, mode === 'supports-only' ? 'supports_only' : { propagate: 'middle' });
  const ours = niftiVoxels(await downloadFrom(page, '#export-nifti', dir));
  const cliMode = mode === 'supports-only' ? ['--mode', 'supports-only'] : ['--mode', 'propagate', '--support-at', 'middle'];
  const native = await nativeRun(page, mask, dir, { supports: cliMode });
  const differ = countDiffer(ours, native.labels);
  console.log(`${mode} on the CPU fallback: ${differ} of ${ours.length} voxels differ from the CLI's labels`);
  assert.deepEqual(native.report.order, run.report.order);
  assert.deepEqual(native.report.mode, run.report.mode);
  assert.ok(differ <= ours.length * 1e-3, `${differ} voxels differ from the CLI`);
}

const paintedPixels = (page) => page.evaluate(() => window.memsegApp.paintedMasks()
  .reduce((n, m) => n + m.labels.filter((v) => v !== 0).length, 0));

/** Undo / redo, the eraser, a new class, zoom and window presets, on the painted slice. */
async function editingTools(page) {
  const painted = await paintedPixels(page);
  await page.click('#undo');
  const undone = await paintedPixels(page);
  assert.ok(undone < painted, `undo: ${undone} vs ${painted}`);
  await page.click('#redo');
  assert.equal(await paintedPixels(page), painted);
  await page.check('#tool-eraser');
  await page.mouse.move(...(await toClient(page, 20, 43)));
  await page.mouse.down();
  await page.mouse.move(...(await toClient(page, 50, 43)), { steps: 10 });
  await page.mouse.up();
  assert.ok(await paintedPixels(page) < painted, 'the eraser removes pixels');
  await page.click('#undo');
  assert.equal(await paintedPixels(page), painted);
  await page.check('#tool-brush');
  // A new class becomes the active one; the sample's liver is picked again by its radio button.
  await page.fill('#class-name', 'lesion');
  await page.click('#add-class button[type=submit]');
  assert.deepEqual(await page.$$eval('#class-list .name', (els) => els.map((e) => e.textContent)), ['liver', 'kidneys', 'spine', 'lesion']);
  assert.equal(await page.evaluate(() => window.memsegState.activeClass), 4);
  await page.check('#class-list input[value="1"]');
  assert.equal(await page.evaluate(() => window.memsegState.activeClass), 1);
  await page.click('#zoom-in');
  assert.equal(await page.textContent('#zoom-value'), '125%');
  await page.click('#zoom-reset');
  assert.equal(await page.textContent('#zoom-value'), '100%');
  for (const preset of ['ct-lung', 'ct-bone', 'mr', 'auto']) {
    await page.selectOption('#window', preset);
    await page.waitForTimeout(100);
  }
  const messages = await page.evaluate(() => window.memsegState.messages);
  assert.deepEqual(messages.filter((m) => /slice/i.test(m)), [], 'the viewer showed every preset');
}

test('cancel stops a run between slices; bad files give readable messages, the app stays usable, work survives a reload', async () => {
  const { browser, page, consoleErrors, outside } = await openRecorded(server, NO_WEBGPU_FLAGS);
  try {
    // A "model" of random bytes.
    const random = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) % 251));
    await page.setInputFiles('#model-file', { name: 'random.pt', mimeType: 'application/octet-stream', buffer: random });
    await page.waitForSelector('#model-status.error');
    assert.match(await page.textContent('#model-status'), /Could not load random\.pt: .*random\.pt/);
    // A truncated NIfTI.
    const nifti = niftiF32(new Array(16 * 16 * 4).fill(1), [16, 16, 4], [1, 1, 1]);
    await page.setInputFiles('#image-files', { name: 'cut.nii', mimeType: 'application/octet-stream', buffer: nifti.subarray(0, 900) });
    await page.waitForSelector('#volume-status.error');
    assert.match(await page.textContent('#volume-status'), /Could not read the images: cut\.nii: truncated/);
    await screenshot(page, 'app-bad-files');
    // The whole file loads, through the same input.
    await page.setInputFiles('#image-files', { name: 'small.nii', mimeType: 'application/octet-stream', buffer: nifti });
    await page.waitForSelector('#volume-status.ok');
    assert.match(await page.textContent('#volume-status'), /small\.nii: 16×16, 4 slices, 1×1×1 mm, modality not given/);

    // Still usable: the real model and the sample load; a run is cancelled after its first slices.
    await loadModel(page);
    await loadSample(page);
    await paintLiver(page);
    await editingTools(page);
    await page.click('#run');
    await page.click('#cancel');
    await page.waitForFunction(() => /^Cancelled after/.test(document.querySelector('#run-status').textContent), null, { timeout: 300_000 });
    const [, steps, total] = (await page.textContent('#run-status')).match(/Cancelled after (\d+) of (\d+)/).map(Number);
    assert.equal(total, 25);
    console.log(`cancel on the CPU fallback: stopped after ${steps} of ${total} slices`);
    assert.ok(steps >= 1 && steps < total, `cancelled after ${steps} of ${total}`);
    assert.equal(await page.isDisabled('#export-nifti'), true, 'a cancelled run exports nothing');
    assert.equal(await page.isEnabled('#run'), true);
    // The UI answered while the worker computed: the viewer still scrolls.
    await page.mouse.move(...(await toClient(page, 48, 48)));
    await page.mouse.wheel(0, 100);
    await page.waitForFunction(() => document.querySelector('#slice-label').textContent.startsWith('Slice 14 / 24'));

    // The painted masks and classes survive a reload (IndexedDB) until the user forgets them.
    const painted = await paintedPixels(page);
    await page.reload();
    await page.waitForFunction(() => document.body.dataset.state === 'ready');
    await loadSample(page);
    assert.match(await page.textContent('#work-status'), /Restored 1 painted slice kept in this browser/);
    assert.equal(await paintedPixels(page), painted);
    assert.deepEqual(await page.$$eval('#class-list .name', (els) => els.map((e) => e.textContent)), ['liver', 'kidneys', 'spine', 'lesion']);
    await screenshot(page, 'app-restored');
    await page.click('#forget-work');
    await page.waitForFunction(() => /^Forgot/.test(document.querySelector('#work-status').textContent));
    assert.equal(await paintedPixels(page), 0);
    await page.reload();
    await page.waitForFunction(() => document.body.dataset.state === 'ready');
    await loadSample(page);
    assert.equal(await paintedPixels(page), 0);
    assert.deepEqual(outside(), []);
    assert.deepEqual(consoleErrors, []);
  } finally {
    await browser.close();
  }
});
