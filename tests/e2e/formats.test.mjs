// The page reads the files of tests/fixtures/dicom and tests/fixtures/nifti as the native reader does and as the
// reference readers decoded them (pydicom: make_dicom_fixtures.py; nibabel: make_nifti_fixtures.py): JPEG 2000,
// enhanced multi-frame CT/MR with per-frame geometry and rescale, signed 12-bit, 32-bit, big endian, palette
// colour, planar RGB, YBR_FULL, multi-frame YBR_FULL_422 JPEG, an RGB-coded JPEG; JPEG-LS refused by name;
// NIfTI-2; a 4-D NIfTI refused until a volume is picked in "Reading options", then each volume. Each file is
// given through the page's file picker, as a user would; the values are read back from the worker.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { NO_WEBGPU_FLAGS, fixturesDir, launch, openApp, serve } from './harness.mjs';

const DIR = join(fixturesDir, 'dicom');
const reference = JSON.parse(readFileSync(join(DIR, 'reference.json'), 'utf8'));
const NIFTI_DIR = join(fixturesDir, 'nifti');
const niftiReference = JSON.parse(readFileSync(join(NIFTI_DIR, 'reference.json'), 'utf8'));

let server;
let browser;
let page;
let consoleErrors;

before(async () => {
  server = await serve();
  browser = await launch(NO_WEBGPU_FLAGS);
  ({ page, consoleErrors } = await openApp(browser.context, server.url));
});
after(async () => {
  await browser?.close();
  await server?.close();
});

/** Waits for the page's verdict on `file` (after `action`, which gives it): [ok, status text]. */
async function verdict(file, action) {
  await page.evaluate(() => document.querySelector('#volume-status').classList.remove('ok', 'error'));
  await action();
  await page.waitForFunction((f) => {
    const s = document.querySelector('#volume-status');
    return (s.classList.contains('ok') || s.classList.contains('error')) && s.textContent.includes(f);
  }, file, { timeout: 30_000 }).catch(async (e) => {
    throw new Error(`${e.message}; the status says: ${await page.textContent('#volume-status')}`);
  });
  return page.evaluate(() => [document.querySelector('#volume-status').classList.contains('ok'), document.querySelector('#volume-status').textContent]);
}

/** Gives one file to the image picker: [ok, status text]. */
const load = (path) => verdict(path.split('/').pop(), () => page.setInputFiles('#image-files', path));

const values = () => page.evaluate(async () => Array.from(await window.memsegCall('volumeValues')));

test('every DICOM fixture reads in the page as the reference reader decodes it; JPEG-LS is refused by name', async () => {
  for (const [name, ref] of Object.entries(reference)) {
    const [ok, text] = await load(join(DIR, `${name}.dcm`));
    if (ref.refused) {
      assert.ok(!ok && text.includes(ref.refused) && text.includes('convert'), `${name}: ${text}`);
      continue;
    }
    assert.ok(ok, `${name} (${ref.transfer_syntax}) is refused: ${text}`);
    const volume = await page.evaluate(() => window.memsegState.volume);
    assert.deepEqual([volume.kind, volume.width, volume.height, volume.slices], ['dicom', ref.columns, ref.rows, ref.frames], name);
    const step = ref.slice_step ?? 1;
    const spacing = volume.spacing_mm.map((v) => +v.toFixed(4));
    assert.deepEqual(spacing, [ref.pixel_spacing[1], ref.pixel_spacing[0], step].map((v) => +v.toFixed(4)), `${name}: spacing`);
    const read = await values();
    assert.equal(read.length, ref.values.length, `${name}: ${read.length} values`);
    const worst = read.reduce((m, v, i) => Math.max(m, Math.abs(v - ref.values[i])), 0);
    assert.ok(worst <= ref.bound, `${name}: values differ by up to ${worst} from the reference (bound ${ref.bound})`);
  }
  assert.deepEqual(consoleErrors, []);
});

test('NIfTI-2 reads as nibabel reads it; a 4-D NIfTI is refused until a volume is picked, then each volume reads', async () => {
  await page.click('#image-panel details summary'); // "Reading options"
  for (const [name, ref] of Object.entries(niftiReference)) {
    const path = join(NIFTI_DIR, ref.file);
    if (ref.volumes > 1) {
      await page.fill('#nifti-volume', '');
      const [ok, text] = await load(path);
      assert.ok(!ok && text.includes(`${ref.volumes} volumes`) && text.includes('Reading options'), `${name}: ${text}`);
    }
    for (const read of ref.reads) {
      let verdictOk;
      let text;
      if (read.volume === null) {
        [verdictOk, text] = await load(path);
      } else {
        // Picking the volume reads the last files given again, with no need to give them anew.
        [verdictOk, text] = await verdict(`volume ${read.volume} of`, async () => {
          await page.fill('#nifti-volume', String(read.volume));
          await page.dispatchEvent('#nifti-volume', 'change');
        });
      }
      assert.ok(verdictOk, `${name} volume ${read.volume}: ${text}`);
      const volume = await page.evaluate(() => window.memsegState.volume);
      assert.deepEqual([volume.kind, volume.width, volume.height, volume.slices], ['nifti', ...read.shape], name);
      const got = await values();
      const worst = got.reduce((m, v, i) => Math.max(m, Math.abs(v - read.values[i]) / Math.max(1, Math.abs(read.values[i]))), 0);
      assert.ok(worst < 1e-6, `${name} volume ${read.volume}: values differ by ${worst} (relative)`);
    }
  }
  await page.fill('#nifti-volume', '');
  assert.deepEqual(consoleErrors, []);
});
