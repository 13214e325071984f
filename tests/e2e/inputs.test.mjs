// Supports and ground truth from files, driven through the page as a user would: a mask PNG uploaded for a
// slice, a NIfTI label volume imported for a (non-sample) volume as ground truth and as painted masks, supports
// taken from a second volume with its label volume, a supports-only run compared with the native CLI given
// the same supports (`memseg segment --support IMAGE=MASK --mode supports-only`), bad files, and the supports
// kept across a reload. The data is the sample phantom (its values and truth read from the worker), written
// by the test as NIfTI files: a short query volume and a cropped, mirrored second volume.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { NO_WEBGPU_FLAGS, fixturesDir, launch, memsegBin, openApp, readSafetensors, screenshot, serve } from './harness.mjs';

const CHECKPOINT = join(fixturesDir, 'tiny21_reduced_256.pt');
const OVERRIDES = JSON.parse(readSafetensors(join(fixturesDir, 'tiny21_reduced_128.mid.video.safetensors')).metadata.memseg)
  .hydra_overrides_extra;
const [W, H, D] = [96, 96, 24]; // the sample
const QUERY_SLICES = [8, 16]; // the query: the sample's slices 8..15 (8 slices, to keep the runs short)
const Q = QUERY_SLICES[1] - QUERY_SLICES[0];
const CROP = { x: 4, y: 10, w: 88, h: 80 }; // the second volume: a crop of the sample, mirrored left-right

let server;
let browser;
let page;
let consoleErrors;
const dir = mkdtempSync(join(tmpdir(), 'memseg-inputs-'));

before(async () => {
  server = await serve();
  browser = await launch(NO_WEBGPU_FLAGS);
  ({ page, consoleErrors } = await openApp(browser.context, server.url));
  await page.setViewportSize({ width: 1400, height: 1000 });
});
after(async () => {
  await browser?.close();
  await server?.close();
});

/** A NIfTI-1 file: float32 values or uint8 labels, with spacing and a diagonal sform. */
function nifti(values, [nx, ny, nz], spacing, { labels = false } = {}) {
  const header = Buffer.alloc(352);
  header.writeInt32LE(348, 0);
  [3, nx, ny, nz, 1, 1, 1, 1].forEach((d, i) => header.writeInt16LE(d, 40 + 2 * i));
  header.writeInt16LE(labels ? 2 : 16, 70); // uint8 / float32
  header.writeInt16LE(labels ? 8 : 32, 72);
  [1, ...spacing, 1, 1, 1, 1].forEach((p, i) => header.writeFloatLE(p, 76 + 4 * i));
  header.writeFloatLE(352, 108);
  header.writeUInt8(2, 123);
  header.writeInt16LE(1, 254);
  [[spacing[0], 0, 0, 0], [0, spacing[1], 0, 0], [0, 0, spacing[2], 0]].forEach((row, r) =>
    row.forEach((v, c) => header.writeFloatLE(v, 280 + 16 * r + 4 * c)));
  header.write('n+1\0', 344, 'latin1');
  const body = labels ? Buffer.from(Uint8Array.from(values)) : Buffer.from(Float32Array.from(values).buffer);
  return Buffer.concat([header, body]);
}

function niftiVoxels(path) {
  const raw = gunzipSync(readFileSync(path));
  return raw.subarray(raw.readFloatLE(108));
}

/** The crop-and-mirror of one sample slice (values or labels) that makes the second volume. */
function cropMirror(slice) {
  const out = [];
  for (let y = 0; y < CROP.h; y++) for (let x = 0; x < CROP.w; x++) out.push(slice[(CROP.y + y) * W + CROP.x + CROP.w - 1 - x]);
  return out;
}

const png = (width, height, labels) => page.evaluate(({ width, height, labels }) =>
  window.memsegCall('labelPng', { width, height, labels: new Uint8Array(labels) }).then((b) => Array.from(b)), { width, height, labels });

function write(name, bytes) {
  const path = join(dir, name);
  writeFileSync(path, Buffer.from(bytes));
  return path;
}

/** The files the test works with, made from the sample phantom's values and truth. */
async function makeFiles() {
  await page.click('#load-sample');
  await page.waitForSelector('#volume-status.ok');
  const values = await page.evaluate(async () => Array.from(await window.memsegCall('volumeValues')));
  const truth = [];
  for (let z = 0; z < D; z++) truth.push(await page.evaluate((z) => window.memsegCall('truthSlice', { z }).then(Array.from), z));
  const area = W * H;
  const slices = [...Array(D).keys()].map((z) => values.slice(z * area, (z + 1) * area));
  const [q0, q1] = QUERY_SLICES;
  const query = { values: slices.slice(q0, q1), truth: truth.slice(q0, q1) };
  const second = { values: slices.map(cropMirror), truth: truth.map(cropMirror) };
  const spacing = [1.5, 1.5, 3];
  const files = {
    query: write('query.nii', nifti(query.values.flat(), [W, H, Q], spacing)),
    queryLabels: write('query_labels.nii', nifti(query.truth.flat(), [W, H, Q], spacing, { labels: true })),
    second: write('second.nii', nifti(second.values.flat(), [CROP.w, CROP.h, D], spacing)),
    secondLabels: write('second_labels.nii', nifti(second.truth.flat(), [CROP.w, CROP.h, D], spacing, { labels: true })),
    sampleLabels: write('sample_labels.nii', nifti(truth.flat(), [W, H, D], spacing, { labels: true })),
  };
  return { query, second, files, spacing };
}

async function loadModel() {
  await page.click('#model-panel details summary');
  await page.fill('#model-overrides', OVERRIDES.join('\n'));
  await page.setInputFiles('#model-file', CHECKPOINT);
  await page.waitForSelector('#model-status.ok, #model-status.error', { timeout: 120_000 });
  assert.match(await page.textContent('#model-status'), /SAM2\.1 loaded/);
}

async function loadQuery(path) {
  await page.setInputFiles('#image-files', path);
  await page.waitForFunction(() => document.querySelector('#volume-status').textContent.startsWith('query.nii'));
  await page.waitForFunction((n) => document.querySelector('#slice-label').textContent.startsWith(`Slice ${n / 2 + 1} / ${n}`), Q);
}

const painted = async () => new Map((await page.evaluate(() => window.memsegApp.paintedMasks())).map((m) => [m.slice, m.labels]));

async function statusAfter(id, action) {
  await page.evaluate((id) => { document.getElementById(id).textContent = ''; }, id);
  await action();
  await page.waitForFunction((id) => document.getElementById(id).textContent !== '' &&
    !document.getElementById(id).textContent.startsWith('Reading'), id);
  return { text: await page.textContent(`#${id}`), error: await page.evaluate((id) => document.getElementById(id).classList.contains('error'), id) };
}

async function runToEnd(steps = '\\d+') {
  await page.click('#run');
  await page.waitForSelector('#run-status.ok, #run-status.error', { timeout: 540_000 });
  const text = await page.textContent('#run-status');
  assert.match(text, new RegExp(`^Done: ${steps} slices`), text);
  return page.evaluate(() => window.memsegState.lastRun);
}

async function exportLabels(name) {
  const [file] = await Promise.all([page.waitForEvent('download'), page.click('#export-nifti')]);
  const path = join(dir, name);
  await file.saveAs(path);
  return niftiVoxels(path);
}

function dice(pred, truth, c) {
  let [both, p, t] = [0, 0, 0];
  for (let i = 0; i < pred.length; i++) {
    both += pred[i] === c && truth[i] === c;
    p += pred[i] === c;
    t += truth[i] === c;
  }
  return p + t ? (2 * both) / (p + t) : null;
}

/** The middle of each class's slice range in `truth` (FS-MedSAM2's support slice), 0-based. */
function middles(truth) {
  const zs = new Set();
  for (const c of [1, 2, 3]) {
    const holds = truth.map((s, z) => (s.includes(c) ? z : -1)).filter((z) => z >= 0);
    zs.add(holds[0] + Math.floor((holds.at(-1) - holds[0] + 1) / 2));
  }
  return [...zs].sort((a, b) => a - b);
}

/** The CLI on the same inputs (`args` after `--frames`) gives the page's labels, order and intensity mapping. */
function matchesCli(what, run, fromPage, args) {
  const out = join(dir, `native-${what}`);
  execFileSync(memsegBin, [
    '--backend', 'flex', 'segment', '--weights', CHECKPOINT, '--frames', ...args, '--out', out,
    ...OVERRIDES.map((o) => `--override=${o}`),
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  const native = niftiVoxels(join(out, 'labels.nii.gz'));
  const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
  let differ = 0;
  for (let i = 0; i < fromPage.length; i++) differ += fromPage[i] !== native[i];
  console.log(`${what} with supports from another volume: ${differ} of ${fromPage.length} voxels differ from the CLI's`);
  assert.deepEqual(report.classes, run.report.classes);
  assert.deepEqual(report.mode, run.report.mode);
  assert.deepEqual(report.order, run.report.order);
  assert.deepEqual(report.input.intensity, run.report.input.intensity);
  assert.ok(fromPage.some((v) => v), 'the run segments something');
  // As in app.test.mjs: only pixels whose logit is within rounding of 0 may flip (wasm vs native sums).
  assert.ok(differ <= fromPage.length * 1e-3, `${differ} voxels differ from the CLI`);
}

test('masks, label volumes and supports from files; supports-only equals the CLI; bad files; supports kept', async () => {
  const { query, second, files } = await makeFiles();
  // A fresh page, so that no class is left from the sample: the query is a volume without class names.
  await page.reload();
  await page.waitForFunction(() => document.body.dataset.state === 'ready');
  await loadModel();
  await loadQuery(files.query);
  const mid = Q / 2; // the viewer opens on the middle slice

  // (a) A 0/255 mask PNG for the current slice is the active class; a label-map PNG keeps its values.
  await page.fill('#class-name', 'liver');
  await page.click('#add-class button[type=submit]');
  const liver = query.truth[mid].map((v) => (v === 1 ? 255 : 0));
  const empty = await statusAfter('inputs-status', () => page.setInputFiles('#mask-file', write('empty.png', [])));
  assert.ok(empty.error, `an empty file is refused: ${empty.text}`); // (c)
  assert.match(empty.text, /Could not use empty\.png as a mask: empty\.png/);
  const binary = write('liver_binary.png', await png(W, H, liver));
  let s = await statusAfter('inputs-status', () => page.setInputFiles('#mask-file', binary));
  assert.ok(!s.error, s.text);
  let masks = await painted();
  assert.deepEqual(masks.get(mid), query.truth[mid].map((v) => (v === 1 ? 1 : 0)));
  await page.click('#undo');
  assert.equal((await painted()).has(mid), false, 'undo removes the uploaded mask');
  await page.click('#redo');
  const labelMap = write('labelmap.png', await png(W, H, query.truth[mid]));
  s = await statusAfter('inputs-status', () => page.setInputFiles('#mask-file', labelMap));
  assert.ok(!s.error, s.text);
  assert.deepEqual((await painted()).get(mid), query.truth[mid]);

  // (c) Bad files: messages, nothing painted, the app goes on.
  const bad = [
    ['small.png', await png(10, 10, Array(100).fill(1)), /10x10 but its image is 96x96/],
    ['photo.png', await png(W, H, [...Array(W * H).keys()].map((i) => i % 200)), /distinct values/],
    ['junk.png', Buffer.from('not an image at all'), /junk\.png/],
  ];
  for (const [name, bytes, message] of bad) {
    s = await statusAfter('inputs-status', () => page.setInputFiles('#mask-file', write(name, bytes)));
    assert.ok(s.error, `${name}: ${s.text}`);
    assert.match(s.text, message);
  }
  s = await statusAfter('inputs-status', () => page.setInputFiles('#labels-files', files.sampleLabels));
  assert.ok(s.error);
  assert.match(s.text, /96x96x24 .*96x96x8/);
  s = await statusAfter('inputs-status', () => page.setInputFiles('#labels-files', files.query));
  assert.match(s.text, /image rather than its labels/);
  assert.deepEqual((await painted()).get(mid), query.truth[mid], 'bad files change nothing');

  // (a) The label volume: as ground truth and as masks on the middle slice of each class.
  s = await statusAfter('inputs-status', () => page.setInputFiles('#labels-files', files.queryLabels));
  assert.ok(!s.error, s.text);
  const defaults = middles(query.truth);
  assert.equal(await page.inputValue('#import-slices'), defaults.map((z) => z + 1).join(', '));
  await page.check('#import-masks');
  await screenshot(page, 'inputs-import');
  s = await statusAfter('inputs-status', () => page.click('#import-apply'));
  assert.ok(!s.error, s.text);
  masks = await painted();
  for (const z of defaults) assert.deepEqual(masks.get(z), query.truth[z], `slice ${z} painted from the file`);
  assert.deepEqual(await page.$$eval('#class-list .name', (els) => els.map((e) => e.textContent)), ['liver', 'label 2', 'label 3']);

  // The run reports Dice against the imported truth, as computed here from the exported labels.
  const run = await runToEnd();
  assert.deepEqual([...new Set(run.report.order)].sort((a, b) => a - b), [...Array(Q).keys()]);
  assert.deepEqual(run.report.drawn_slices, [...masks.keys()].sort((a, b) => a - b));
  const ours = await exportLabels('propagate.nii.gz');
  const truthFlat = query.truth.flat();
  for (const c of run.report.per_class) {
    assert.ok(c.dice !== null, `class ${c.class} has a Dice`);
    assert.ok(Math.abs(c.dice - dice(ours, truthFlat, c.class)) < 1e-9, `class ${c.class}: ${c.dice}`);
  }
  assert.equal(await page.$$eval('#results-table th', (ths) => ths.some((th) => th.textContent === 'Dice')), true);
  await screenshot(page, 'inputs-truth-dice');
  console.log(`propagate on the imported masks: Dice ${run.report.per_class.map((c) => c.dice.toFixed(3)).join(', ')}`);

  // (b) Supports from a second volume (88×80, mirrored) and its label volume, then supports-only.
  await page.click('#forget-work');
  await page.waitForFunction(() => window.memsegApp.paintedMasks().length === 0);
  s = await statusAfter('supports-status', () => page.setInputFiles('#support-volume-files', files.second));
  assert.ok(!s.error, s.text);
  s = await statusAfter('supports-status', () => page.setInputFiles('#support-labels-files', files.sampleLabels));
  assert.ok(s.error, 'labels of another grid are refused');
  assert.match(s.text, /96x96x24 .*88x80x24/);
  s = await statusAfter('supports-status', () => page.setInputFiles('#support-labels-files', files.secondLabels));
  assert.ok(!s.error, s.text);
  const picks = middles(second.truth);
  assert.equal(await page.inputValue('#support-slices'), picks.map((z) => z + 1).join(', '));
  s = await statusAfter('supports-status', () => page.click('#support-add'));
  assert.ok(!s.error, s.text);
  assert.equal(await page.locator('#support-list li').count(), picks.length);
  await screenshot(page, 'inputs-supports');
  await page.selectOption('#mode', 'supports-only');
  const only = await runToEnd(Q);
  assert.deepEqual(only.report.mode, 'supports_only');
  assert.equal(only.report.supports.length, picks.length);
  const fromPage = await exportLabels('supports-only.nii.gz');

  const supportArgs = [];
  for (const z of picks) {
    const image = write(`support_${z}.nii`, nifti(second.values[z], [CROP.w, CROP.h, 1], [1.5, 1.5, 3]));
    const mask = write(`support_${z}.png`, await png(CROP.w, CROP.h, second.truth[z]));
    supportArgs.push('--support', `${image}=${mask}`);
  }
  matchesCli('supports-only', only, fromPage, [files.query, ...supportArgs, '--mode', 'supports-only']);

  // In "propagate" the supports join a mask drawn on the query (here uploaded), as --support joins --mask.
  s = await statusAfter('inputs-status', () => page.setInputFiles('#mask-file', labelMap));
  assert.ok(!s.error, s.text);
  await page.selectOption('#mode', 'propagate');
  const joined = await runToEnd();
  assert.deepEqual(joined.report.drawn_slices, [mid]);
  assert.equal(joined.report.supports.length, picks.length);
  matchesCli('propagate', joined, await exportLabels('propagate-supports.nii.gz'),
    [files.query, '--mask', `${mid}=${labelMap}`, ...supportArgs, '--mode', 'propagate']);

  // (d) The supports survive a reload, intact.
  const before = await page.evaluate(() => window.memsegInputs.supports());
  await page.reload();
  await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state));
  await page.waitForFunction((n) => document.querySelectorAll('#support-list li img').length === n, picks.length);
  assert.match(await page.textContent('#supports-status'), new RegExp(`Restored ${picks.length} support`));
  assert.deepEqual(await page.evaluate(() => window.memsegInputs.supports()), before);
  await page.locator('#support-list li button').first().click();
  await page.waitForFunction((n) => document.querySelectorAll('#support-list li img').length === n, picks.length - 1);
  const kept = await page.evaluate(() => window.memsegInputs.supports());
  assert.deepEqual(kept, before.slice(1), 'the first support removed');

  // The sample as the other volume, a mask file for one of its slices (a mask per slice, no label volume).
  s = await statusAfter('supports-status', () => page.click('#support-sample'));
  assert.ok(!s.error, s.text);
  await page.fill('#support-slices', '7, 8');
  s = await statusAfter('supports-status', () => page.setInputFiles('#support-mask-file', labelMap));
  assert.match(s.text, /one slice/);
  await page.fill('#support-slices', '9'); // the sample's slice 8 (0-based), the query's first slice
  const sampleMask = write('sample_slice8.png', await png(W, H, query.truth[0].map((v) => (v === 3 ? 3 : 0))));
  s = await statusAfter('supports-status', () => page.setInputFiles('#support-mask-file', sampleMask));
  assert.ok(!s.error, s.text);
  const withSample = await page.evaluate(() => window.memsegInputs.supports());
  assert.equal(withSample.length, picks.length);
  assert.deepEqual([withSample.at(-1).volume, withSample.at(-1).slice, withSample.at(-1).classes], ['sample phantom', QUERY_SLICES[0], [3]]);
  await screenshot(page, 'inputs-after-reload');
  const messages = await page.evaluate(() => window.memsegState.messages);
  assert.deepEqual(messages.filter((m) => !/one slice/.test(m)), [], 'no other error since the reload');
  assert.deepEqual(consoleErrors, []);
});
