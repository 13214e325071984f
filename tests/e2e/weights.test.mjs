// Weights and resilience in the browser, driven as a user would: the official download (asked first in an
// in-page dialog, streamed with progress, checked, kept in Cache Storage by its SHA-256) from the official URL,
// which a route answers with the reduced fixture (nothing leaves the machine); a reload that loads the kept
// weights with no request; a full storage; the weights listed from the server's models/ folder; a too-big volume refused
// before it is read; the worker made to panic (recovered: model, volume and painted masks back, a run works)
// and made to panic twice (stopped, work kept). One browser, the CPU fallback, the reduced model.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import {
  NO_WEBGPU_FLAGS, WEBGPU_FLAGS, fixturesDir, launch, maxAbsDiff, memseg, openApp, readSafetensors, screenshot, serve,
} from './harness.mjs';

const CHECKPOINT = join(fixturesDir, 'tiny21_reduced_256.pt');
const FIXTURE = readFileSync(CHECKPOINT);
const FIXTURE_SHA = createHash('sha256').update(FIXTURE).digest('hex');
const OVERRIDES = JSON.parse(readSafetensors(join(fixturesDir, 'tiny21_reduced_128.mid.video.safetensors')).metadata.memseg)
  .hydra_overrides_extra;
// The official URL, the only one the page's security policy lets it reach: the route below answers it with the
// fixture, so nothing ever leaves the machine.
const WEIGHTS_URL = 'https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt';

let server;
let url;
let modelsDir;
let browser;
let page;
let consoleErrors;
const requests = [];
let weightsBody = null; // what the weights URL answers; 'hold' keeps the request waiting (to cancel it)
let held = null; // the held route

before(async () => {
  modelsDir = mkdtempSync(join(tmpdir(), 'memseg-models-'));
  copyFileSync(CHECKPOINT, join(modelsDir, 'reduced-sam2.1.pt'));
  writeFileSync(join(modelsDir, 'notes.txt'), 'not weights: not listed');
  server = await serve({ models: modelsDir });
  browser = await launch(NO_WEBGPU_FLAGS);
  await browser.context.route('**/*', (route) => {
    const target = route.request().url();
    requests.push(target);
    if (target === WEIGHTS_URL) {
      if (weightsBody === 'hold') {
        held = route;
        return undefined;
      }
      return route.fulfill({
        status: 200, body: weightsBody,
        headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(weightsBody.length), 'Access-Control-Allow-Origin': '*' },
      });
    }
    return target.startsWith(server.url) ? route.continue() : route.abort();
  });
  const query = new URLSearchParams(OVERRIDES.map((o) => ['override', o]));
  url = `${server.url}?${query}`;
  ({ page, consoleErrors } = await openApp(browser.context, url));
  await page.setViewportSize({ width: 1400, height: 1100 });
});

after(async () => {
  await browser?.close();
  await server?.close();
  rmSync(modelsDir, { recursive: true, force: true });
});

const weightsRequests = () => requests.filter((u) => u === WEIGHTS_URL);
const outside = () => requests.filter((u) => !u.startsWith(server.url) && u !== WEIGHTS_URL);
const keptCount = () => page.evaluate(() => caches.open('memseg-weights-v1').then((c) => c.keys()).then((k) => k.length));
const text = (selector) => page.textContent(selector);
/** Opens a collapsed list (<details>: 'kept' or 'server') as a user would. */
async function openList(which) {
  if (!(await page.evaluate((id) => document.getElementById(id).open, `weights-${which}`))) await page.click(`#weights-${which}-summary`);
}
const openKept = () => openList('kept');

async function waitStatus(id, kind, pattern) {
  await page.waitForFunction(([i, k, p]) => {
    const el = document.getElementById(i);
    return el.classList.contains(k) && new RegExp(p).test(el.textContent);
  }, [id, kind, pattern.source], { timeout: 120_000 });
}

test('the download asks first; declining requests nothing; a corrupted file is refused and nothing is kept', async () => {
  assert.match(await text('#weights-server-list'), /reduced-sam2\.1\.pt · 3\.7 MB/);
  assert.doesNotMatch(await text('#weights-server-list'), /notes\.txt/);
  assert.equal(await page.isHidden('#weights-kept'), true, 'nothing kept in a fresh browser');
  await page.click('#weights-download');
  await page.waitForSelector('#weights-consent[open]');
  const dialog = await text('#weights-consent');
  assert.match(dialog, /sam2\.1_hiera_tiny\.pt.*about 156 MB/s);
  assert.match(dialog, /only network request this page ever makes/);
  assert.match(dialog, /kept in this browser/);
  assert.equal(await text('#consent-url'), WEIGHTS_URL);
  await screenshot(page, 'weights-consent');
  await page.click('#consent-cancel');
  await waitStatus('weights-status', 'status', /^Download declined: nothing was requested\.$/);
  assert.deepEqual(weightsRequests(), [], 'declining makes no request');

  // A download that does not answer: Cancel ends it, with nothing kept.
  weightsBody = 'hold';
  await page.click('#weights-download');
  await page.click('#consent-download');
  await page.waitForSelector('#weights-download-box:not([hidden])');
  await page.waitForFunction(() => document.querySelector('#weights-download').disabled);
  await screenshot(page, 'weights-downloading');
  await page.click('#weights-cancel');
  await waitStatus('weights-status', 'status', /^Download cancelled: nothing was kept\./);
  assert.equal(await page.isHidden('#weights-download-box'), true);
  await held?.abort().catch(() => {});
  assert.equal(weightsRequests().length, 1);

  // The central directory of the zip damaged: the loader cannot read it.
  weightsBody = Buffer.from(FIXTURE);
  weightsBody.fill(0, weightsBody.length - 2048);
  await page.click('#weights-download');
  await page.click('#consent-download');
  await waitStatus('weights-status', 'error', /^Verification failed, nothing was kept: the file from .* is not a usable SAM2\.1-tiny checkpoint \(.+\)\.$/);
  assert.equal(weightsRequests().length, 2);
  assert.equal(await text('#weights-progress-text'), '3.7 MB of 3.7 MB', 'progress against the Content-Length');
  assert.equal(await keptCount(), 0, 'a file that fails verification is not kept');
  assert.equal(await page.evaluate(() => window.memsegState.model), null);
  await screenshot(page, 'weights-verification-failed');
});

test('the checked download is kept by its SHA-256 and a reload loads it with no request', async () => {
  weightsBody = FIXTURE;
  await page.click('#weights-download');
  await page.click('#consent-download');
  await waitStatus('model-status', 'ok', /^SAM2\.1 loaded from sam2\.1_hiera_tiny\.pt/);
  // What was checked, said exactly: against the config changed by the overrides in force, with the counts of
  // what loaded (they add up to the file's tensors as the native `memseg info` counts them), and the hash shown
  // but compared with nothing.
  await waitStatus('weights-status', 'ok', /^Checked: /);
  const checked = (await text('#weights-status')).match(new RegExp(
    `^Checked: it loads as a SAM2\\.1 checkpoint into the config in force \\(SAM2\\.1-tiny with ${OVERRIDES.length} overrides, see Advanced\\): ` +
    `(\\d+) tensors \\(([\\d.]+) M parameters\\), each name and shape as that config expects(?:; (\\d+) tensors of modules memseg does not use were left aside)?\\. ` +
    `SHA-256 ${FIXTURE_SHA}, for your records: memseg knows no published checksum to compare it with\\.$`));
  assert.ok(checked, await text('#weights-status'));
  const info = memseg('info', CHECKPOINT);
  assert.equal(Number(checked[1]) + Number(checked[3] ?? 0), info.tensors);
  assert.equal(checked[2], (info.parameters / 1e6).toFixed(1));
  await page.waitForSelector('#weights-kept:not([hidden])');
  assert.equal(await text('#weights-kept-summary'), 'Kept in this browser (1 file, 3.7 MB)');
  await openKept();
  assert.equal(await keptCount(), 1);
  assert.match(await text('#weights-kept-list'), new RegExp(`sam2\\.1_hiera_tiny\\.pt · 3\\.7 MB · SHA-256 ${FIXTURE_SHA.slice(0, 12)}`));
  assert.match(await text('#weights-storage'), /This site stores [\d.]+ MB in this browser \(of [\d.]+ MB it may use\)\.$/);
  await screenshot(page, 'weights-kept');

  requests.length = 0;
  await page.reload();
  await waitStatus('model-status', 'ok', /^SAM2\.1 loaded from sam2\.1_hiera_tiny\.pt kept in this browser, loaded automatically/);
  assert.deepEqual(weightsRequests(), [], 'no download on the next visit');
  assert.deepEqual(requests.filter((u) => /\.(pt|pth|safetensors)$/.test(u)), [], 'no weights fetched at all');
  assert.deepEqual(outside(), []);
});

test('a full storage is reported and the chosen weights still load', async () => {
  const cdp = await browser.context.newCDPSession(page);
  const origin = server.url.slice(0, -1);
  await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 1024 });
  try {
    await page.setInputFiles('#model-file', { name: 'chosen.pt', mimeType: 'application/octet-stream', buffer: FIXTURE });
    await waitStatus('weights-status', 'error', /^The model is loaded, but it could not be kept in this browser: this browser has no room left for this site/);
    assert.match(await text('#model-status'), /^SAM2\.1 loaded from chosen\.pt/);
    assert.equal(await page.evaluate(() => window.memsegState.model?.generation), 'SAM2.1');
  } finally {
    await cdp.send('Storage.overrideQuotaForOrigin', { origin });
  }
});

test('weights found on the server load from the same origin', async () => {
  requests.length = 0;
  assert.equal(await text('#weights-server-summary'), 'Weights found on this server (1)');
  await openList('server');
  await page.click('#weights-server-list button:has-text("Load")');
  await waitStatus('model-status', 'ok', /^SAM2\.1 loaded from reduced-sam2\.1\.pt \(this server\)/);
  assert.deepEqual(requests.filter((u) => u.endsWith('.pt')), [`${server.url}models/reduced-sam2.1.pt`]);
});

/** A NIfTI-1 header (no voxels) claiming `dims` of float32. */
function niftiHeader([nx, ny, nz]) {
  const header = Buffer.alloc(352);
  header.writeInt32LE(348, 0);
  [3, nx, ny, nz, 1, 1, 1, 1].forEach((d, i) => header.writeInt16LE(d, 40 + 2 * i));
  header.writeInt16LE(16, 70);
  header.writeInt16LE(32, 72);
  header.writeFloatLE(352, 108);
  header.write('n+1\0', 344, 'latin1');
  return header;
}

test('a volume too big for the page is refused before it is read, with the limit it breaks', async () => {
  await page.setInputFiles('#image-files', { name: 'wide.nii', mimeType: 'application/octet-stream', buffer: niftiHeader([9000, 16, 4]) });
  await waitStatus('volume-status', 'error', /^Not read: wide\.nii: 9000×16 pixels is larger than the 8192×8192 supported\.$/);
  const gz = gzipSync(niftiHeader([4096, 4096, 20]));
  await page.setInputFiles('#image-files', { name: 'big.nii.gz', mimeType: 'application/octet-stream', buffer: gz });
  await waitStatus('volume-status', 'error', /^Not read: big\.nii\.gz: 4096×4096×20×1 values is more than the 268435456 supported\.$/);
  await screenshot(page, 'weights-too-big');
  assert.equal(await page.evaluate(() => window.memsegState.volume), null, 'nothing was loaded');
});

/** Canvas (client) coordinates of pixel (x, y) of the 96×96 sample at the default zoom. */
async function toClient(x, y) {
  const box = await page.locator('#view').boundingBox();
  const scale = Math.min(box.width / 96, box.height / 96);
  return [box.x + (box.width - 96 * scale) / 2 + x * scale, box.y + (box.height - 96 * scale) / 2 + y * scale];
}

async function paint() {
  for (const y of [38, 44, 50]) {
    await page.mouse.move(...(await toClient(24, y)));
    await page.mouse.down();
    await page.mouse.move(...(await toClient(42, y)), { steps: 6 });
    await page.mouse.up();
  }
  return page.evaluate(() => window.memsegApp.paintedMasks());
}

test('after a panic of the core the worker restarts with the model, the volume and the painted masks; a run works', async () => {
  await openKept();
  await page.click('#weights-kept-list button:has-text("Load")'); // so the model comes back from the cache
  await waitStatus('model-status', 'ok', /^SAM2\.1 loaded from sam2\.1_hiera_tiny\.pt kept in this browser \(/);
  await page.click('#load-sample');
  await waitStatus('volume-status', 'ok', /96×96, 24 slices.*; about 1\.5 MB in memory\.$/);
  await page.waitForFunction(() => document.querySelector('#slice-label').textContent.startsWith('Slice 13 / 24'));
  const masks = await paint();
  assert.equal(masks.length, 1);

  requests.length = 0;
  const error = await page.evaluate(() => window.memsegCall('debugPanic', { message: 'test crash' }).then(() => null, (e) => e.message));
  assert.match(error, /^the compute core crashed: the Rust core panicked: .*diagnostic panic requested by the page: test crash/s);
  await page.waitForFunction(() => /reloaded/.test(document.querySelector('#notice').textContent), null, { timeout: 120_000 });
  const notice = await text('#notice');
  assert.match(notice, /^The compute core crashed \(the Rust core panicked: .*test crash.*\) and was restarted: the model and the volume reloaded; your painted masks are kept\./s);
  await waitStatus('model-status', 'ok', /^SAM2\.1 loaded from sam2\.1_hiera_tiny\.pt kept in this browser/);
  assert.deepEqual(weightsRequests(), [], 'the model came back from the cache');
  assert.equal(await page.evaluate(() => window.memsegState.volume.slices), 24);
  assert.deepEqual(await page.evaluate(() => window.memsegApp.paintedMasks()), masks, 'the painted masks are intact');
  assert.equal(await page.isHidden('#error'), true);
  await screenshot(page, 'weights-recovered');

  // The new worker computes: a run starts and goes through slices (cancelled after two to keep the test short).
  await page.click('#run');
  await page.waitForFunction(() => (window.memsegState.progress?.step ?? 0) >= 2, null, { timeout: 240_000 });
  await page.click('#cancel');
  await page.waitForFunction(() => /^Cancelled after/.test(document.querySelector('#run-status').textContent), null, { timeout: 240_000 });
});

test('forgetting the kept weights frees the space; a second crash soon after the first stops, with the work kept', async () => {
  await openKept();
  await page.click('#weights-kept-list button:has-text("Forget")');
  await waitStatus('weights-status', 'status', /^Forgot the cached weights: the space is freed\.$/);
  assert.equal(await keptCount(), 0);
  assert.equal(await page.isHidden('#weights-kept'), true);

  const masks = await page.evaluate(() => window.memsegApp.paintedMasks());
  await page.evaluate(() => window.memsegCall('debugPanic', { message: 'second crash' }).catch(() => {}));
  await page.waitForFunction(() => document.body.dataset.state === 'error');
  assert.match(await text('#error'), /^The compute core crashed again \(.*second crash.*\) soon after a first crash, so memseg stopped restarting it\. Your painted masks are kept/s);
  assert.deepEqual(await page.evaluate(() => window.memsegApp.paintedMasks()), masks);
  assert.equal(await page.isDisabled('#run'), true, 'nothing can run on the dead worker');
  assert.match(await text('#model-status'), /^The model was lost with the crashed compute core: reload the page\.$/);
  await screenshot(page, 'weights-crashed-twice');
  assert.deepEqual(outside(), [], 'no request left the local server except the weights URL');
  // The panics are logged by the core's panic hook, as they should be; nothing else may be.
  assert.deepEqual(consoleErrors.filter((m) => !/diagnostic panic requested by the page/.test(m) && !/unreachable/i.test(m)), []);
});

test('a lost WebGPU device is seen and the worker restarts on WebGPU', async () => {
  const gpu = await launch(WEBGPU_FLAGS);
  try {
    const app = await openApp(gpu.context, server.url);
    assert.equal(app.state.device.backend, 'wgpu');
    const lost = await app.page.evaluate(() => window.memsegCall('debugLoseDevice'));
    assert.equal(lost, true);
    await app.page.waitForFunction(() => /and was restarted/.test(document.querySelector('#notice').textContent), null, { timeout: 120_000 });
    assert.match(await app.page.textContent('#notice'), /^The compute core crashed \(the GPU device was lost \(destroyed: /);
    assert.equal(await app.page.evaluate(() => window.memsegState.device.backend), 'wgpu', 'back on WebGPU');
    assert.equal(await app.page.isHidden('#error'), true);
    // The new device computes: the self-test runs again.
    const rerun = await app.page.evaluate(() => window.memsegCall('selftest'));
    assert.deepEqual(rerun.shape, app.state.selftest.shape);
    assert.ok(maxAbsDiff(rerun.values, app.state.selftest.values) < 1e-5, 'the same numbers as before the loss');
  } finally {
    await gpu.close();
  }
});
