// The app's other ways in and its memory of the work, on the CPU fallback (its results match the CLI's nearly
// voxel for voxel; WebGPU is covered by app.test.mjs): weights dropped on the page, a DICOM series chosen as a
// folder, a NIfTI volume dropped, the memory options against the CLI's flags, results that survive a reload
// (and export again without the model), and a result slice corrected and run again.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { NO_WEBGPU_FLAGS, memsegBin, screenshot, serve } from './harness.mjs';
import {
  CHECKPOINT, OVERRIDES, PAINTED_SLICE, countDiffer, downloadFrom, loadModel, loadSample, niftiF32, niftiVoxels,
  openRecorded, paintLiver, runToEnd, toClient,
} from './journey.mjs';

let server;
before(async () => {
  server = await serve();
});
after(() => server?.close());

/** Drops `files` ([{name, bytes: Buffer}]) on the element, as a user dragging them from the desktop. */
async function drop(page, selector, files) {
  const dataTransfer = await page.evaluateHandle((entries) => {
    const dt = new DataTransfer();
    for (const { name, base64 } of entries) {
      const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
      dt.items.add(new File([bytes], name));
    }
    return dt;
  }, files.map(({ name, bytes }) => ({ name, base64: bytes.toString('base64') })));
  await page.dispatchEvent(selector, 'dragover', { dataTransfer });
  await page.dispatchEvent(selector, 'drop', { dataTransfer });
}

// --- A minimal DICOM writer (Part 10, explicit VR little endian): a CT series as a scanner would write it ---

function element(group, tag, vr, value) {
  const long = ['OB', 'OW', 'UN', 'SQ', 'UT'].includes(vr);
  let data = Buffer.isBuffer(value) ? value : Buffer.from(String(value), 'latin1');
  if (data.length % 2) data = Buffer.concat([data, Buffer.from(vr === 'UI' ? '\0' : ' ')]);
  const head = Buffer.alloc(long ? 12 : 8);
  head.writeUInt16LE(group, 0);
  head.writeUInt16LE(tag, 2);
  head.write(vr, 4, 'latin1');
  if (long) head.writeUInt32LE(data.length, 8);
  else head.writeUInt16LE(data.length, 6);
  return Buffer.concat([head, data]);
}

const us = (v) => { const b = Buffer.alloc(2); b.writeUInt16LE(v); return b; };

/** One CT slice: int16 stored values (HU + 1024 with a -1024 intercept), at height z along +z. */
function dicomSlice({ hu, width, height, spacing, z, instance }) {
  const sop = `1.2.826.0.1.3680043.10.1.${instance}`;
  const ct = '1.2.840.10008.5.1.4.1.1.2';
  const pixels = Buffer.alloc(width * height * 2);
  hu.forEach((v, i) => pixels.writeInt16LE(Math.round(v) + 1024, 2 * i));
  const meta = Buffer.concat([
    element(0x0002, 0x0001, 'OB', Buffer.from([0, 1])),
    element(0x0002, 0x0002, 'UI', ct),
    element(0x0002, 0x0003, 'UI', sop),
    element(0x0002, 0x0010, 'UI', '1.2.840.10008.1.2.1'),
    element(0x0002, 0x0012, 'UI', '1.2.826.0.1.3680043.10.1'),
  ]);
  const length = Buffer.alloc(4);
  length.writeUInt32LE(meta.length);
  const body = Buffer.concat([
    element(0x0008, 0x0016, 'UI', ct),
    element(0x0008, 0x0018, 'UI', sop),
    element(0x0008, 0x0060, 'CS', 'CT'),
    element(0x0018, 0x0050, 'DS', spacing[2]),
    element(0x0020, 0x000e, 'UI', '1.2.826.0.1.3680043.10.2'),
    element(0x0020, 0x0013, 'IS', instance),
    element(0x0020, 0x0032, 'DS', `-40\\-30\\${z}`),
    element(0x0020, 0x0037, 'DS', '1\\0\\0\\0\\1\\0'),
    element(0x0028, 0x0002, 'US', us(1)),
    element(0x0028, 0x0004, 'CS', 'MONOCHROME2'),
    element(0x0028, 0x0010, 'US', us(height)),
    element(0x0028, 0x0011, 'US', us(width)),
    element(0x0028, 0x0030, 'DS', `${spacing[1]}\\${spacing[0]}`),
    element(0x0028, 0x0100, 'US', us(16)),
    element(0x0028, 0x0101, 'US', us(16)),
    element(0x0028, 0x0102, 'US', us(15)),
    element(0x0028, 0x0103, 'US', us(1)),
    element(0x0028, 0x1052, 'DS', '-1024'),
    element(0x0028, 0x1053, 'DS', '1'),
    element(0x7fe0, 0x0010, 'OW', pixels),
  ]);
  return Buffer.concat([Buffer.alloc(128), Buffer.from('DICM'), element(0x0002, 0x0000, 'UL', length), meta, body]);
}

/** The page's current volume written as a DICOM series, one file a slice, named in shuffled order. */
async function writeDicomSeries(page, dir) {
  const meta = await page.evaluate(() => window.memsegState.volume);
  const values = await page.evaluate(async () => Array.from(await window.memsegCall('volumeValues')));
  const area = meta.width * meta.height;
  mkdirSync(dir, { recursive: true });
  for (let k = 0; k < meta.slices; k++) {
    const hu = values.slice(k * area, (k + 1) * area);
    // Names sort differently from the slice order: the reader must order by position along the normal.
    const name = `IM${String((k * 7) % meta.slices).padStart(4, '0')}_${k}.dcm`;
    writeFileSync(join(dir, name), dicomSlice({ hu, width: meta.width, height: meta.height, spacing: meta.spacing_mm, z: k * meta.spacing_mm[2], instance: k + 1 }));
  }
  return meta;
}

/** Paints a few horizontal strokes of the active class on the shown slice (image coordinates). */
async function paintStrokes(page, rows, xs) {
  for (const y of rows) {
    await page.mouse.move(...(await toClient(page, xs[0], y)));
    await page.mouse.down();
    for (const x of xs.slice(1)) await page.mouse.move(...(await toClient(page, x, y)), { steps: 4 });
    await page.mouse.up();
  }
}

async function goToSlice(page, z, slices) {
  await page.fill('#slice', String(z));
  await page.waitForFunction((label) => document.querySelector('#slice-label').textContent.startsWith(label), `Slice ${z + 1} / ${slices}`);
}

/** The painted masks as PNG files for the CLI: {slice: path}. */
async function maskFiles(page, dir) {
  const files = {};
  for (const { slice, labels } of await page.evaluate(() => window.memsegApp.paintedMasks())) {
    const png = await page.evaluate(({ labels }) =>
      window.memsegCall('labelPng', { width: 96, height: 96, labels: new Uint8Array(labels) }).then((b) => Array.from(b)), { labels });
    files[slice] = join(dir, `mask-${slice}.png`);
    writeFileSync(files[slice], Buffer.from(png));
  }
  return files;
}

function cli(frames, prompts, out, extra = []) {
  execFileSync(memsegBin, [
    '--backend', 'flex', 'segment', '--weights', CHECKPOINT, '--frames', frames, ...prompts, '--out', out, ...extra,
    ...OVERRIDES.map((o) => `--override=${o}`),
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  return { labels: niftiVoxels(join(out, 'labels.nii.gz')), report: JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) };
}

function assertNearCli(ours, native, what) {
  const differ = countDiffer(ours, native.labels);
  console.log(`${what}: ${differ} of ${ours.length} voxels differ from the CLI's labels`);
  // A pixel whose logit is within rounding of 0 may flip between wasm and native SIMD sums; more is a bug.
  assert.ok(differ <= ours.length * 1e-3, `${what}: ${differ} voxels differ from the CLI`);
}

test('weights and a volume dropped on the page, a DICOM folder, and the memory options give the CLI\'s labels', async () => {
  const { browser, page, consoleErrors, outside } = await openRecorded(server, NO_WEBGPU_FLAGS);
  const dir = mkdtempSync(join(tmpdir(), 'memseg-work-'));
  try {
    await page.setViewportSize({ width: 1400, height: 1000 });
    // Weights dropped on the model panel (the overrides for the reduced config typed first).
    await page.click('#model-panel details summary');
    await page.fill('#model-overrides', OVERRIDES.join('\n'));
    await drop(page, '#model-panel', [{ name: 'tiny21_reduced_256.pt', bytes: readFileSync(CHECKPOINT) }]);
    await page.waitForSelector('#model-status.ok, #model-status.error', { timeout: 120_000 });
    assert.match(await page.textContent('#model-status'), /SAM2\.1 loaded from tiny21_reduced_256\.pt/);

    // The sample, written as a DICOM series and as a NIfTI file by the test.
    await loadSample(page);
    const dicomDir = join(dir, 'series');
    const meta = await writeDicomSeries(page, dicomDir);
    const values = await page.evaluate(async () => Array.from(await window.memsegCall('volumeValues')));
    const nifti = niftiF32(values, [96, 96, 24], meta.spacing_mm);
    await drop(page, '#image-panel', [{ name: 'dropped.nii', bytes: nifti }]);
    await page.waitForFunction(() => /^dropped\.nii: 96×96, 24 slices/.test(document.querySelector('#volume-status').textContent));

    // The DICOM folder through the folder picker: the CT series, ordered along its normal, HU restored.
    await page.setInputFiles('#image-folder', dicomDir);
    await page.waitForSelector('#volume-status.ok');
    await page.waitForFunction(() => /: 96×96, 24 slices, .* CT;/.test(document.querySelector('#volume-status').textContent));
    const dicom = await page.evaluate(() => window.memsegState.volume);
    assert.equal(dicom.kind, 'dicom');
    assert.deepEqual(dicom.spacing_mm.map((v) => +v.toFixed(3)), meta.spacing_mm.map((v) => +v.toFixed(3)));
    const read = await page.evaluate(async () => Array.from(await window.memsegCall('volumeValues')));
    assert.ok(read.every((v, i) => v === Math.round(values[i])), 'the series reads back as written (HU, in order)');
    await screenshot(page, 'work-dicom');

    // Paint the liver on the middle slice and on slice 17 (the classes defined for the sample stay, the
    // liver active).
    assert.equal(await page.evaluate(() => window.memsegState.activeClass), 1);
    await paintLiver(page);
    await goToSlice(page, 16, 24);
    await paintStrokes(page, [36, 40, 44, 48], [24, 32, 40]);
    const masks = await maskFiles(page, dir);
    assert.deepEqual(Object.keys(masks).map(Number), [PAINTED_SLICE, 16]);
    const prompts = Object.entries(masks).flatMap(([slice, path]) => ['--mask', `${slice}=${path}`]);

    // Propagation from both painted slices, one conditioning frame in attention, SGP's eviction.
    await page.click('#run-panel details summary');
    await page.fill('#max-conditioning', '1');
    await page.check('#similarity-eviction');
    const run = await runToEnd(page, 25);
    assert.deepEqual(run.report.memory, { max_conditioning: 1, select_supports: null, similarity_eviction: true });
    assert.deepEqual(run.report.drawn_slices, [PAINTED_SLICE, 16]);
    const ours = niftiVoxels(await downloadFrom(page, '#export-nifti', dir));
    const native = cli(dicomDir, prompts, join(dir, 'cli-propagate'), ['--max-conditioning', '1', '--similarity-eviction']);
    assert.deepEqual(native.report.order, run.report.order);
    assert.deepEqual(native.report.memory, run.report.memory);
    assertNearCli(ours, native, 'DICOM, propagate, max-conditioning 1, similarity eviction');

    // Supports only, the one support most similar to each slice (SGP's selection): the painted slices given
    // to the CLI as supports (their images as single-slice NIfTI files).
    await page.fill('#max-conditioning', '');
    await page.uncheck('#similarity-eviction');
    await page.fill('#select-supports', '1');
    await page.selectOption('#mode', 'supports-only');
    const selected = await runToEnd(page, 24);
    assert.deepEqual(selected.report.memory, { max_conditioning: null, select_supports: 1, similarity_eviction: false });
    const supportArgs = Object.entries(masks).flatMap(([slice, path]) => {
      const image = join(dir, `support-${slice}.nii`);
      writeFileSync(image, niftiF32(read.slice(slice * 96 * 96, (Number(slice) + 1) * 96 * 96), [96, 96, 1], meta.spacing_mm));
      return ['--support', `${image}=${path}`];
    });
    const nativeSelected = cli(dicomDir, supportArgs, join(dir, 'cli-select'), ['--mode', 'supports-only', '--select-supports', '1', '--modality', 'ct']);
    assertNearCli(niftiVoxels(await downloadFrom(page, '#export-nifti', dir)), nativeSelected, 'DICOM, supports-only, select 1 support');
    assert.deepEqual(outside(), []);
    assert.deepEqual(consoleErrors, []);
  } finally {
    await browser.close();
  }
});

test('results survive a reload and export again without the model; a corrected slice conditions the next run', async () => {
  const { browser, page, consoleErrors, outside } = await openRecorded(server, NO_WEBGPU_FLAGS);
  const dir = mkdtempSync(join(tmpdir(), 'memseg-work-'));
  try {
    await page.setViewportSize({ width: 1400, height: 1000 });
    await loadModel(page);
    await loadSample(page);
    await paintLiver(page);
    await runToEnd(page);
    const before = niftiVoxels(await downloadFrom(page, '#export-nifti', dir));
    const shown = await page.evaluate(() => window.memsegApp.results());

    // Reload: no model, the same volume: the results come back, and the exports work from them.
    await page.reload();
    await page.waitForFunction(() => document.body.dataset.state === 'ready');
    await loadSample(page);
    await page.waitForFunction(() => /^Restored the results/.test(document.querySelector('#run-status').textContent));
    assert.deepEqual(await page.evaluate(() => window.memsegApp.results()), shown);
    assert.equal(await page.isEnabled('#export-nifti'), true);
    const again = niftiVoxels(await downloadFrom(page, '#export-nifti', dir));
    assert.ok(again.equals(before), 'the restored run exports the same labels');
    await screenshot(page, 'work-restored-results');

    // Correct the first slice with a result (the checkpoint's random weights decide which): the result
    // becomes a painted mask, the brush adds to it, and the next run is conditioned on it too.
    await loadModel(page);
    const fix = shown.findIndex((r, s) => s !== PAINTED_SLICE && r.some((v) => v !== 0));
    assert.ok(fix >= 0, 'some slice besides the painted one has a result');
    await goToSlice(page, fix, 24);
    assert.equal(await page.isEnabled('#correct-slice'), true);
    await page.click('#correct-slice');
    const copied = (await page.evaluate(() => window.memsegApp.paintedMasks())).find((m) => m.slice === fix);
    assert.deepEqual(copied.labels, shown[fix], 'the corrected slice starts from its result');
    await paintStrokes(page, [20, 24], [60, 70]);
    const masks = await maskFiles(page, dir);
    const conditioning = [fix, PAINTED_SLICE].sort((a, b) => a - b);
    assert.deepEqual(Object.keys(masks).map(Number).sort((a, b) => a - b), conditioning);
    // How many steps depends on where the first conditioning slice is (Meta's order: forward, then back).
    const rerun = await runToEnd(page, '\\d+');
    assert.deepEqual(rerun.report.drawn_slices, conditioning);
    const ours = niftiVoxels(await downloadFrom(page, '#export-nifti', dir));
    const values = await page.evaluate(async () => Array.from(await window.memsegCall('volumeValues')));
    const meta = await page.evaluate(() => window.memsegState.volume);
    const volume = join(dir, 'sample.nii');
    writeFileSync(volume, niftiF32(values, [96, 96, 24], meta.spacing_mm));
    const prompts = Object.entries(masks).flatMap(([slice, path]) => ['--mask', `${slice}=${path}`]);
    const native = cli(volume, prompts, join(dir, 'cli-corrected'), ['--modality', 'ct']);
    assert.deepEqual(native.report.order, rerun.report.order);
    assertNearCli(ours, native, `corrected slice ${fix + 1} + painted slice ${PAINTED_SLICE + 1}`);
    assert.deepEqual(outside(), []);
    assert.deepEqual(consoleErrors, []);
  } finally {
    await browser.close();
  }
});
