// The app's journey steps shared by the browser tests: the reduced-config checkpoint (official .pt layout)
// uploaded through the file input, the sample volume, a mask painted with the mouse, runs, downloads, and the
// native CLI run on the same inputs for comparison.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { fixturesDir, launch, memsegBin, openApp, readSafetensors } from './harness.mjs';

export const CHECKPOINT = join(fixturesDir, 'tiny21_reduced_256.pt');
// The reduced model's config, as tests/segment_cli.rs gives it to the CLI.
export const OVERRIDES = JSON.parse(readSafetensors(join(fixturesDir, 'tiny21_reduced_128.mid.video.safetensors')).metadata.memseg)
  .hydra_overrides_extra;
export const PAINTED_SLICE = 12; // the sample's middle slice (24 slices), where the viewer opens

/** Opens the app with every request recorded; requests leaving the local server are refused. */
export async function openRecorded(server, flags) {
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

export async function loadModel(page) {
  await page.click('#model-panel details summary');
  await page.fill('#model-overrides', OVERRIDES.join('\n'));
  await page.setInputFiles('#model-file', CHECKPOINT);
  await page.waitForSelector('#model-status.ok, #model-status.error', { timeout: 120_000 });
  assert.match(await page.textContent('#model-status'), /SAM2\.1 loaded from tiny21_reduced_256\.pt/);
}

export async function loadSample(page) {
  await page.click('#load-sample');
  await page.waitForSelector('#volume-status.ok');
  assert.match(await page.textContent('#volume-status'), /96×96, 24 slices/);
  await page.waitForFunction(() => document.querySelector('#slice-label').textContent.startsWith('Slice 13 / 24'));
}

/** Canvas (client) coordinates of image pixel (x, y) of the 96×96 sample, at the default zoom. */
export async function toClient(page, x, y) {
  // A click on a control lower in the (long) left column scrolls the page; a stroke must land on the canvas.
  await page.locator('#view').scrollIntoViewIfNeeded();
  const box = await page.locator('#view').boundingBox();
  const scale = Math.min(box.width / 96, box.height / 96);
  return [box.x + (box.width - 96 * scale) / 2 + x * scale, box.y + (box.height - 96 * scale) / 2 + y * scale];
}

/** Brush strokes across the liver of the sample's middle slice, in the active class. */
export async function paintStrokes(page) {
  for (const y of [35, 39, 43, 47, 51]) {
    await page.mouse.move(...(await toClient(page, 24, y)));
    await page.mouse.down();
    for (const x of [30, 36, 42]) await page.mouse.move(...(await toClient(page, x, y)), { steps: 4 });
    await page.mouse.up();
  }
}

/** Paints the liver (class 1, the sample's first class, active by default) with a few mouse strokes. */
export async function paintLiver(page) {
  await paintStrokes(page);
  const masks = await page.evaluate(() => window.memsegApp.paintedMasks());
  assert.equal(masks.length, 1);
  assert.equal(masks[0].slice, PAINTED_SLICE);
  const painted = masks[0].labels.filter((v) => v === 1).length;
  assert.ok(painted > 200, `${painted} pixels painted`);
  assert.ok(masks[0].labels.every((v) => v === 0 || v === 1));
  return masks[0];
}

export async function runToEnd(page, steps = 25) {
  await page.click('#run');
  await page.waitForSelector('#run-status.ok, #run-status.error', { timeout: 540_000 });
  const text = await page.textContent('#run-status');
  assert.match(text, new RegExp(`^Done: ${steps} slices`), text);
  return page.evaluate(() => window.memsegState.lastRun);
}

export async function downloadFrom(page, selector, dir) {
  const [file] = await Promise.all([page.waitForEvent('download'), page.click(selector)]);
  const path = join(dir, file.suggestedFilename());
  await file.saveAs(path);
  return path;
}

/** A float32 NIfTI-1 file (the volume the CLI gets): dims, spacing and a diagonal sform. */
export function niftiF32(values, [nx, ny, nz], spacing) {
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
export function unzipStored(zip) {
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
export function niftiVoxels(path) {
  const raw = gunzipSync(readFileSync(path));
  return raw.subarray(raw.readFloatLE(108));
}

/**
 * The CLI on the same volume and painted mask (the page's own volume values and mask, written as files);
 * `supports` (the CLI's mode arguments) gives the painted slice as a support instead of a drawn mask.
 * Returns the CLI's labels and report.
 */
export async function nativeRun(page, mask, dir, { supports = false, extra = [] } = {}) {
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
    '--modality', 'ct', '--out', out, ...extra, ...OVERRIDES.map((o) => `--override=${o}`),
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  return { labels: niftiVoxels(join(out, 'labels.nii.gz')), report: JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) };
}

/** How many voxels of two label volumes differ. */
export function countDiffer(a, b) {
  assert.equal(a.length, b.length);
  let differ = 0;
  for (let i = 0; i < a.length; i++) differ += a[i] !== b[i];
  return differ;
}
