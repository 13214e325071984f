// Prompt-free adapters in the browser (issue 7): an adapter is trained with the CLI (`memseg train`, a few
// seconds on the reduced model) on slices of the sample volume and its labels, uploaded beside the reduced
// SAM2 checkpoint, and run on the sample with no masks on the CPU fallback. The exported labels, report and
// PNGs are compared with `memseg segment --adapter` on the same volume. Bad adapter files must give readable
// messages naming what does not match, and leave the loaded adapter usable.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { NO_WEBGPU_FLAGS, WEBGPU_FLAGS, fixturesDir, launch, memsegBin, openApp, readSafetensors, screenshot, serve } from './harness.mjs';
import { niftiF32, niftiVoxels, unzipStored } from './journey.mjs';

const CHECKPOINT = join(fixturesDir, 'tiny21_reduced_256.pt');
// The reduced model's config, as app.test.mjs and tests/segment_cli.rs give it.
const OVERRIDES = JSON.parse(readSafetensors(join(fixturesDir, 'tiny21_reduced_128.mid.video.safetensors')).metadata.memseg)
  .hydra_overrides_extra;
const TRAIN_SLICES = [4, 8, 12, 16, 20]; // of the sample's 24: every organ appears in some of them

let server;
let browser;
let page;
let consoleErrors;
let dir;
// The CPU fallback by default (the same backend as the CLI's Flex: the labels must agree to a few knife-edge
// voxels); MEMSEG_ADAPTER_WEBGPU=1 runs the page on WebGPU (SwiftShader) instead, to measure that difference.
const WEBGPU = process.env.MEMSEG_ADAPTER_WEBGPU === '1';
const BACKEND = WEBGPU ? 'WebGPU' : 'the CPU fallback';

before(async () => {
  server = await serve();
  browser = await launch(WEBGPU ? WEBGPU_FLAGS : NO_WEBGPU_FLAGS);
  ({ page, consoleErrors } = await openApp(browser.context, server.url));
  await page.setViewportSize({ width: 1400, height: 1000 });
  dir = mkdtempSync(join(tmpdir(), 'memseg-adapter-'));
});
after(async () => {
  await browser?.close();
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function loadModel() {
  await page.click('#model-panel details.advanced summary');
  await page.fill('#model-overrides', OVERRIDES.join('\n'));
  await page.setInputFiles('#model-file', CHECKPOINT);
  await page.waitForSelector('#model-status.ok, #model-status.error', { timeout: 120_000 });
  assert.match(await page.textContent('#model-status'), /SAM2\.1 loaded from tiny21_reduced_256\.pt/);
}

async function loadSample() {
  await page.click('#load-sample');
  await page.waitForSelector('#volume-status.ok');
  assert.match(await page.textContent('#volume-status'), /96×96, 24 slices/);
}

/**
 * A training set from the sample: some slices as the page shows them with the "auto" window (the mapping a
 * run uses, so the adapter sees at training what it sees at inference) and their ground-truth labels, as
 * grey PNGs in `memseg train`'s layout.
 */
async function writeDataset(root) {
  mkdirSync(join(root, 'images'), { recursive: true });
  mkdirSync(join(root, 'labels'), { recursive: true });
  for (const z of TRAIN_SLICES) {
    const [image, labels] = await page.evaluate(async (z) => {
      const call = window.memsegCall;
      const rgba = await call('slice', { z, window: 'auto' });
      const grey = new Uint8Array(rgba.length / 4).map((_, i) => rgba[4 * i]);
      const truth = await call('truthSlice', { z });
      const png = (labels) => call('labelPng', { width: 96, height: 96, labels }).then((b) => Array.from(b));
      return [await png(grey), await png(truth)];
    }, z);
    writeFileSync(join(root, `images/slice_${z}.png`), Buffer.from(image));
    writeFileSync(join(root, `labels/slice_${z}.png`), Buffer.from(labels));
  }
}

function cli(args) {
  return execFileSync(memsegBin, ['--backend', 'flex', ...args, ...OVERRIDES.map((o) => `--override=${o}`)],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

async function downloadFrom(selector) {
  const [file] = await Promise.all([page.waitForEvent('download'), page.click(selector)]);
  const path = join(dir, `browser-${file.suggestedFilename()}`);
  await file.saveAs(path);
  return path;
}




/** The adapter file with its recorded base config changed (`change(config)`), as if trained on another model. */
function withOtherConfig(path, change) {
  const bytes = readFileSync(path);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
  const config = JSON.parse(header.__metadata__.config);
  change(config);
  header.__metadata__.config = JSON.stringify(config);
  let text = JSON.stringify(header);
  text += ' '.repeat((8 - (text.length % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
  return Buffer.concat([length, Buffer.from(text), bytes.subarray(8 + n)]);
}

async function uploadAdapter(name, buffer) {
  await page.evaluate(() => { document.querySelector('#adapter-status').className = 'status'; });
  await page.setInputFiles('#adapter-file', { name, mimeType: 'application/octet-stream', buffer });
  await page.waitForSelector('#adapter-status.ok, #adapter-status.error', { timeout: 60_000 });
  return page.textContent('#adapter-status');
}

test('a trained adapter segments the volume prompt-free in the browser, as `memseg segment --adapter` does', async () => {
  // Before any model: the adapter cannot be folded into anything, and the page says so.
  const early = await uploadAdapter('early.safetensors', Buffer.from('not yet'));
  assert.match(early, /Could not use early\.safetensors as an adapter: load the SAM2 model the adapter was trained on first/);
  await loadModel();
  await loadSample();

  const data = join(dir, 'data');
  await writeDataset(data);
  const adapterPath = join(dir, 'adapter.safetensors');
  const epochs = JSON.parse(cli(['train', '--weights', CHECKPOINT, '--dataset', data, '--out', adapterPath,
    '--epochs', '8', '--batch', '2', '--lr', '5e-3', '--val-fraction', '0']));
  assert.equal(epochs.length, 8);
  console.log(`memseg train on ${TRAIN_SLICES.length} sample slices: loss ${epochs.map((e) => e.loss.toFixed(3)).join(' -> ')}, ` +
    `${epochs[7].images_per_second.toFixed(1)} images/s (Flex)`);

  const text = await uploadAdapter('adapter.safetensors', readFileSync(adapterPath));
  assert.match(text, /adapter\.safetensors: 3 classes \(1, 2, 3\), rank 8, [\d,]+ trained values \([\d.]+ KB\), folded into tiny21_reduced_256\.pt/);
  assert.equal(await page.inputValue('#mode'), 'prompt-free', 'loading an adapter selects the prompt-free mode');
  assert.equal(await page.isEnabled('#run'), true, 'no mask needed');
  await screenshot(page, 'adapter-loaded');

  await page.click('#run');
  await page.waitForSelector('#run-status.ok, #run-status.error', { timeout: WEBGPU ? 560_000 : 300_000 });
  const status = await page.textContent('#run-status');
  assert.match(status, /^Done: 24 slices/, status);
  const run = await page.evaluate(() => window.memsegState.lastRun);
  assert.equal(run.report.mode, 'prompt_free');
  assert.deepEqual(run.report.classes, [1, 2, 3]);
  assert.equal(run.report.frames_encoded, 24);
  assert.equal(run.report.adapter, 'adapter.safetensors');
  assert.deepEqual(await page.$$eval('#class-list .name', (els) => els.map((e) => e.textContent)), ['liver', 'kidneys', 'spine']);
  await page.check('#outline');
  await page.fill('#slice', '12');
  await page.waitForFunction(() => document.querySelector('#slice-label').textContent.startsWith('Slice 13 / 24'));
  await screenshot(page, 'adapter-results');

  const ours = niftiVoxels(await downloadFrom('#export-nifti'));
  const report = JSON.parse(readFileSync(await downloadFrom('#export-report'), 'utf8'));
  const pngs = unzipStored(readFileSync(await downloadFrom('#export-png')));
  assert.equal(ours.length, 96 * 96 * 24);
  for (const c of report.per_class) assert.equal(c.voxels, ours.filter((v) => v === c.class).length);
  const shown = (await page.evaluate(() => window.memsegApp.results())).flat();
  assert.deepEqual(Buffer.from(shown), Buffer.from(ours), 'what the viewer showed is what was exported');

  // The CLI on the same volume (the page's own values) and adapter.
  const meta = await page.evaluate(() => window.memsegState.volume);
  const values = await page.evaluate(async () => Array.from(await window.memsegCall('volumeValues')));
  writeFileSync(join(dir, 'sample.nii'), niftiF32(values, [96, 96, 24], meta.spacing_mm));
  const out = join(dir, 'native');
  const native = JSON.parse(cli(['segment', '--adapter', adapterPath, '--weights', CHECKPOINT, '--frames', join(dir, 'sample.nii'),
    '--modality', 'ct', '--out', out]));
  const theirs = niftiVoxels(join(out, 'labels.nii.gz'));
  let differ = 0;
  for (let i = 0; i < ours.length; i++) differ += ours[i] !== theirs[i];
  const dice = report.per_class.map((c) => `${c.class}: ${c.dice.toFixed(3)}`).join(', ');
  console.log(`prompt-free on ${BACKEND}: ${differ} of ${ours.length} voxels differ from memseg segment --adapter; ` +
    `Dice vs the sample's truth ${dice}; ${run.report.seconds.toFixed(1)} s for 24 slices in the browser, ` +
    `${native.seconds.toFixed(1)} s natively`);
  assert.equal(native.mode, 'prompt_free');
  assert.deepEqual(native.classes, report.classes);
  // The same code: only a float sum in another order (wasm vs native SIMD, GPU vs CPU) can flip a pixel whose
  // two best logits tie to rounding; anything more is a real difference.
  assert.ok(differ <= ours.length * 1e-3, `${differ} voxels differ from the CLI`);
  assert.deepEqual(pngs.map((p) => p.name), native.outputs.filter((n) => n.endsWith('.png')));
  const samePngs = pngs.filter((p) => readFileSync(join(out, p.name)).equals(p.bytes)).length;
  assert.ok(samePngs >= 24 - differ, `${samePngs} PNGs equal the CLI's`);
  // The adapter learned something of the liver (8 epochs on 5 slices of a random-weights model): above what
  // needs no image, labelling everything liver (2p / (1 + p), about 0.3 for the liver's share p of the
  // voxels) or a random class per voxel (about 0.2).
  assert.ok(report.per_class[0].dice > 0.4, `liver Dice ${report.per_class[0].dice}`);

  // Bad adapter files: a readable message naming the file and what does not match; the loaded one stays.
  const random = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) % 251));
  assert.match(await uploadAdapter('random.safetensors', random),
    /Could not use random\.safetensors as an adapter: random\.safetensors is not a complete safetensors file/);
  const other = withOtherConfig(adapterPath, (c) => { c.image_encoder.trunk.embed_dim *= 2; });
  assert.match(await uploadAdapter('other-model.safetensors', other),
    /Could not use other-model\.safetensors as an adapter: other-model\.safetensors was trained on another image encoder/);
  assert.match(await uploadAdapter('weights.safetensors', readFileSync(CHECKPOINT)),
    /Could not use weights\.safetensors as an adapter: weights\.safetensors is not a complete safetensors file/);
  assert.match(await page.textContent('#adapter-status'), /Still using adapter\.safetensors\.$/);
  await screenshot(page, 'adapter-bad-file');
  assert.equal(await page.inputValue('#mode'), 'prompt-free');
  assert.equal(await page.isEnabled('#run'), true, 'the adapter loaded before stays usable');

  // Loading a model again folds the kept adapter into the new model (the worker dropped the old fold).
  await page.evaluate(() => { document.querySelector('#adapter-status').className = 'status'; });
  await page.setInputFiles('#model-file', { name: 'again.pt', mimeType: 'application/octet-stream', buffer: readFileSync(CHECKPOINT) });
  await page.waitForSelector('#adapter-status.ok, #adapter-status.error', { timeout: 60_000 });
  assert.match(await page.textContent('#adapter-status'), /^adapter\.safetensors: 3 classes .*folded into again\.pt/);
  assert.equal(await page.isEnabled('#run'), true);

  // Cancel stops a prompt-free run between slices, as a few-shot one; nothing is left to export.
  await page.click('#run');
  await page.click('#cancel');
  await page.waitForFunction(() => /^Cancelled after/.test(document.querySelector('#run-status').textContent), null, { timeout: 120_000 });
  const [, steps, total] = (await page.textContent('#run-status')).match(/Cancelled after (\d+) of (\d+)/).map(Number);
  console.log(`cancel of a prompt-free run on ${BACKEND}: stopped after ${steps} of ${total} slices`);
  assert.ok(total === 24 && steps >= 1 && steps < total, `cancelled after ${steps} of ${total}`);
  assert.equal(await page.isDisabled('#export-nifti'), true, 'a cancelled run exports nothing');
  assert.deepEqual(consoleErrors, []);
});
