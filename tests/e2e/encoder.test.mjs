// The SAM2 image encoder in the browser against Meta's code: the reduced-config fixture made by
// tests/fixtures/make_fixtures.py (official .pt layout, Meta's per-stage outputs), loaded through the page's
// worker on WebGPU (SwiftShader) and on the CPU fallback. Same tolerance as tests/encoder_parity.rs.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  NO_WEBGPU_FLAGS, WEBGPU_FLAGS, fixturesDir, launch, openApp, readSafetensors, relativeError, serve,
} from './harness.mjs';

const CASE = 'tiny21_reduced_deep_128';
const REL_TOL = 1e-4;
let server;
let fixture;

before(async () => {
  server = await serve();
  fixture = readSafetensors(join(fixturesDir, `${CASE}.encoder.safetensors`));
});
after(() => server?.close());

/** Loads the fixture's checkpoint in the page and runs the encoder; returns {report, stages, ms}. */
async function runInPage(page) {
  const meta = JSON.parse(fixture.metadata.memseg);
  const overrides = meta.hydra_overrides_extra;
  const checkpoint = meta.checkpoint;
  // The checkpoint reaches the page as a file would: bytes fetched by the page, not through the test's API.
  await page.route(`**/__fixture__/${checkpoint}`, (route) =>
    route.fulfill({ body: readFileSync(join(fixturesDir, checkpoint)), contentType: 'application/octet-stream' }));
  const input = Array.from(fixture.tensors.input.data);
  return page.evaluate(async ({ checkpoint, overrides, input }) => {
    const bytes = await (await fetch(`/__fixture__/${checkpoint}`)).arrayBuffer();
    const report = await window.memsegCall('loadSam2', { bytes, name: checkpoint, overrides });
    const { stages, ms } = await window.memsegCall('encoderStages', { input: new Float32Array(input) });
    const plain = Object.fromEntries(Object.entries(stages).map(([k, v]) => [k, { shape: v.shape, data: Array.from(v.data) }]));
    return { report, stages: plain, ms };
  }, { checkpoint, overrides, input });
}

function compareStages(stages) {
  const errors = {};
  for (const [name, ours] of Object.entries(stages)) {
    const reference = fixture.tensors[name];
    if (!reference) continue;
    assert.deepEqual(ours.shape, reference.shape, `${name}: shape`);
    errors[name] = relativeError(ours.data, reference.data);
  }
  return errors;
}

for (const [label, flags, backend] of [['WebGPU', WEBGPU_FLAGS, 'wgpu'], ['CPU fallback', NO_WEBGPU_FLAGS, 'flex']]) {
  test(`SAM2 encoder in the browser (${label}) matches Meta's code per stage`, async () => {
    const browser = await launch(flags);
    try {
      const { page, state, consoleErrors } = await openApp(browser.context, server.url);
      assert.equal(state.device.backend, backend);
      const { report, stages, ms } = await runInPage(page);
      assert.equal(report.generation, 'SAM2.1');
      const errors = compareStages(stages);
      const lines = Object.entries(errors).map(([k, e]) => `  ${k.padEnd(22)} ${e.toExponential(2)}`);
      console.log(`${CASE} in the browser on ${label} (${ms.toFixed(0)} ms): max |err| / std per stage\n${lines.join('\n')}`);
      assert.ok(Object.keys(errors).length >= 10, `only ${Object.keys(errors).length} stages compared`);
      for (const [name, e] of Object.entries(errors)) assert.ok(e <= REL_TOL, `${name} is off by ${e} x std`);
      assert.deepEqual(consoleErrors, []);
    } finally {
      await browser.close();
    }
  });
}

test('a file that is not a checkpoint gets a readable error and the worker stays usable', async () => {
  const browser = await launch(NO_WEBGPU_FLAGS);
  try {
    const { page } = await openApp(browser.context, server.url);
    const message = await page.evaluate(async () => {
      const bytes = new TextEncoder().encode('not a checkpoint').buffer;
      return window.memsegCall('loadSam2', { bytes, name: 'notes.txt' }).then(() => 'loaded', (e) => e.message);
    });
    assert.match(message, /notes\.txt is not a readable PyTorch checkpoint/);
    const selftest = await page.evaluate(() => window.memsegCall('selftest'));
    assert.equal(selftest.values.length, 40);
  } finally {
    await browser.close();
  }
});
