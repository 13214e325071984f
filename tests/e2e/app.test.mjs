// The segmentation app driven as a user would: the reduced-config checkpoint (official .pt layout) uploaded
// through the file input (its config overrides typed into the advanced field), the sample volume, a mask
// painted with the mouse, a run, the exports downloaded; the exported labels are compared with the native
// CLI's on the same volume and the same painted mask. Every request the page makes is intercepted: none may
// leave the local server. Bad files must give readable messages and leave the app usable.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import {
  NO_WEBGPU_FLAGS, WEBGPU_FLAGS, fixturesDir, launch, memsegBin, openApp, readSafetensors, screenshot, serve,
} from './harness.mjs';

const CHECKPOINT = join(fixturesDir, 'tiny21_reduced_256.pt');
// The reduced model's config, as tests/segment_cli.rs gives it to the CLI.
const OVERRIDES = JSON.parse(readSafetensors(join(fixturesDir, 'tiny21_reduced_128.mid.video.safetensors')).metadata.memseg)
  .hydra_overrides_extra;
const PAINTED_SLICE = 12; // the sample's middle slice (24 slices), where the viewer opens
let server;

before(async () => {
  server = await serve();
});
after(() => server?.close());

/** Opens the app with every request recorded; requests leaving the local server are refused. */
async function openRecorded(flags) {
  const browser = await launch(flags);
  const requests = [];
  await browser.context.route('**/*', (route) => {
    const url = route.request().url();
    requests.push(url);
    return url.startsWith(server.url) ? route.continue() : route.abort();
  });
  const app = await openApp(browser.context, server.url);
  await app.page.setViewportSize({ width: 1400, height: 1000 });
  const outside = () => requests.filter((u) => !u.startsWith(server.url));
  return { browser, ...app, requests, outside };
}

async function loadModel(page) {
  await page.click('#model-panel details summary');
  await page.fill('#model-overrides', OVERRIDES.join('\n'));
  await page.setInputFiles('#model-file', CHECKPOINT);
  await page.waitForSelector('#model-status.ok, #model-status.error', { timeout: 120_000 });
  assert.match(await page.textContent('#model-status'), /SAM2\.1 loaded from tiny21_reduced_256\.pt/);
}

async function loadSample(page) {
  await page.click('#load-sample');
  await page.waitForSelector('#volume-status.ok');
  assert.match(await page.textContent('#volume-status'), /96×96, 24 slices/);
  await page.waitForFunction(() => document.querySelector('#slice-label').textContent.startsWith('Slice 13 / 24'));
}

/** Canvas (client) coordinates of image pixel (x, y) of the 96×96 sample, at the default zoom. */
async function toClient(page, x, y) {
  const box = await page.locator('#view').boundingBox();
  const scale = Math.min(box.width / 96, box.height / 96);
  return [box.x + (box.width - 96 * scale) / 2 + x * scale, box.y + (box.height - 96 * scale) / 2 + y * scale];
}

/** Paints the liver (class 1, the sample's first class, active by default) with a few mouse strokes. */
async function paintLiver(page) {
  for (const y of [35, 39, 43, 47, 51]) {
    await page.mouse.move(...(await toClient(page, 24, y)));
    await page.mouse.down();
    for (const x of [30, 36, 42]) await page.mouse.move(...(await toClient(page, x, y)), { steps: 4 });
    await page.mouse.up();
  }
  const masks = await page.evaluate(() => window.memsegApp.paintedMasks());
  assert.equal(masks.length, 1);
  assert.equal(masks[0].slice, PAINTED_SLICE);
  const painted = masks[0].labels.filter((v) => v === 1).length;
  assert.ok(painted > 200, `${painted} pixels painted`);
  assert.ok(masks[0].labels.every((v) => v === 0 || v === 1));
  return masks[0];
}

async function runToEnd(page, steps = 25) {
  await page.click('#run');
  await page.waitForSelector('#run-status.ok, #run-status.error', { timeout: 540_000 });
  const text = await page.textContent('#run-status');
  assert.match(text, new RegExp(`^Done: ${steps} slices`), text);
  return page.evaluate(() => window.memsegState.lastRun);
}

async function downloadFrom(page, selector, dir) {
  const [file] = await Promise.all([page.waitForEvent('download'), page.click(selector)]);
  const path = join(dir, file.suggestedFilename());
  await file.saveAs(path);
  return path;
}

/** A float32 NIfTI-1 file (the volume the CLI gets): dims, spacing and a diagonal sform. */
function niftiF32(values, [nx, ny, nz], spacing) {
  const header = Buffer.alloc(352);
  header.writeInt32LE(348, 0);
  [3, nx, ny, nz, 1, 1, 1, 1].forEach((d, i) => header.writeInt16LE(d, 40 + 2 * i));
  header.writeInt16LE(16, 70); // float32
  header.writeInt16LE(32, 72);
  [1, ...spacing, 1, 1, 1, 1].forEach((p, i) => header.writeFloatLE(p, 76 + 4 * i));
  header.writeFloatLE(352, 108);
  header.writeUInt8(2, 123); // mm
  header.writeInt16LE(1, 254); // sform
  [[spacing[0], 0, 0, 0], [0, spacing[1], 0, 0], [0, 0, spacing[2], 0]].forEach((row, r) =>
    row.forEach((v, c) => header.writeFloatLE(v, 280 + 16 * r + 4 * c)));
  header.write('n+1\0', 344, 'latin1');
  return Buffer.concat([header, Buffer.from(Float32Array.from(values).buffer)]);
}

/** The entries of a ZIP archive of stored (uncompressed) files: [{name, bytes}]. */
function unzipStored(zip) {
  const entries = [];
  for (let p = 0; zip.readUInt32LE(p) === 0x04034b50;) {
    assert.equal(zip.readUInt16LE(p + 8), 0, 'stored');
    const [size, nameLength, extra] = [zip.readUInt32LE(p + 18), zip.readUInt16LE(p + 26), zip.readUInt16LE(p + 28)];
    const name = zip.subarray(p + 30, p + 30 + nameLength).toString('utf8');
    const start = p + 30 + nameLength + extra;
    entries.push({ name, bytes: zip.subarray(start, start + size) });
    p = start + size;
  }
  return entries;
}

/** The voxels of a .nii.gz (uint8 labels). */
function niftiVoxels(path) {
  const raw = gunzipSync(readFileSync(path));
  return raw.subarray(raw.readFloatLE(108));
}

/**
 * The CLI on the same volume and painted mask (the page's own volume values and mask, written as files);
 * `supports` (the CLI's mode arguments) gives the painted slice as a support instead of a drawn mask.
 * Returns the CLI's labels and report.
 */
async function nativeRun(page, mask, dir, { supports = false } = {}) {
  const meta = await page.evaluate(() => window.memsegState.volume);
  const values = await page.evaluate(async () => Array.from(await window.memsegCall('volumeValues')));
  const dims = [meta.width, meta.height, meta.slices];
  const volume = join(dir, 'sample.nii');
  writeFileSync(volume, niftiF32(values, dims, meta.spacing_mm));
  const png = await page.evaluate(({ labels }) =>
    window.memsegCall('labelPng', { width: 96, height: 96, labels: new Uint8Array(labels) }).then((b) => Array.from(b)), mask);
  const maskPath = join(dir, 'painted.png');
  writeFileSync(maskPath, Buffer.from(png));
  const out = join(dir, supports ? `native-${supports.join('')}` : 'native');
  let prompts = ['--mask', `${mask.slice}=${maskPath}`];
  if (supports) {
    const area = meta.width * meta.height;
    const slice = join(dir, 'support.nii');
    writeFileSync(slice, niftiF32(values.slice(mask.slice * area, (mask.slice + 1) * area), [meta.width, meta.height, 1], meta.spacing_mm));
    prompts = ['--support', `${slice}=${maskPath}`, ...supports];
  }
  execFileSync(memsegBin, [
    '--backend', 'flex', 'segment', '--weights', CHECKPOINT, '--frames', volume, ...prompts,
    '--modality', 'ct', '--out', out, ...OVERRIDES.map((o) => `--override=${o}`),
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  return { labels: niftiVoxels(join(out, 'labels.nii.gz')), report: JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) };
}

for (const [label, flags, backend] of [['WebGPU', WEBGPU_FLAGS, 'wgpu'], ['CPU fallback', NO_WEBGPU_FLAGS, 'flex']]) {
  test(`the whole journey in the browser (${label}) gives the native CLI's labels, with no request leaving the page`, async () => {
    const { browser, page, state, consoleErrors, outside } = await openRecorded(flags);
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
      assert.equal(run.report.frames_encoded, 24, 'each slice encoded once');
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
      let differ = 0;
      for (let i = 0; i < ours.length; i++) differ += ours[i] !== native.labels[i];
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
  let differ = 0;
  for (let i = 0; i < ours.length; i++) differ += ours[i] !== native.labels[i];
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
  const { browser, page, consoleErrors, outside } = await openRecorded(NO_WEBGPU_FLAGS);
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
