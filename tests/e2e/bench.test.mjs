// The encoder bench page (www/bench.html): a quick smoke test on the reduced model, never a timing check.
// memseg's core and onnxruntime-web run the same encoder (tests/fixtures/tiny21_reduced_256.{pt,onnx,json},
// made by bench/export_onnx.py --reduced --out tests/fixtures), so their outputs must agree: that is what
// shows both engines really ran the model the page says they ran.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { NO_WEBGPU_FLAGS, fixturesDir, launch, screenshot, serve } from './harness.mjs';

const MODEL = 'tiny21_reduced_256';
let server;
let browser;

before(async () => {
  server = await serve();
  // One browser for the file. The WebGPU engines are left to scripts/bench-browser.mjs --webgpu: on SwiftShader
  // their first run alone (shader compilation) takes over a minute, too long for a smoke test.
  browser = await launch(NO_WEBGPU_FLAGS);
  // The page reads models/NAME.{json,pt,onnx}; here they come from the fixtures (the workers' fetches too).
  await browser.context.route(`**/models/${MODEL}.*`, (route) => {
    const file = new URL(route.request().url()).pathname.split('/').pop();
    route.fulfill({ body: readFileSync(join(fixturesDir, file)) });
  });
});
after(async () => {
  await browser?.close();
  await server?.close();
});

/** Opens bench.html with `query` (autorun) and waits for it to finish; returns page, outcome, console errors. */
async function runBench(query) {
  const page = await browser.context.newPage();
  const consoleErrors = [];
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
  page.on('pageerror', (e) => consoleErrors.push(e.message));
  await page.goto(`${server.url}bench.html?${new URLSearchParams({ ...query, autorun: '1' })}`);
  await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state), null, { timeout: 100_000 });
  const outcome = await page.evaluate(() => ({
    state: document.body.dataset.state, status: document.getElementById('status').textContent,
    rows: [...document.querySelectorAll('#results tbody tr')].map((tr) => tr.textContent),
    result: window.benchResult && { ...window.benchResult, engines: Object.fromEntries(
      Object.entries(window.benchResult.engines).map(([k, { output, ...r }]) => [k, { ...r, outputLength: output?.length }])) },
  }));
  return { page, outcome, consoleErrors };
}

function checkPair(outcome, ours, ort, runs) {
  const { engines, comparisons } = outcome.result;
  for (const engine of [ours, ort]) {
    assert.equal(engines[engine].error, undefined, `${engine}: ${engines[engine].error}`);
    assert.equal(engines[engine].runsMs.length, runs);
    assert.ok(engines[engine].runsMs.every((ms) => ms > 0));
    assert.equal(engines[engine].outputLength, 32 * 16 * 16); // vision_features [1, 32, 16, 16]
  }
  const pair = comparisons.find((c) => c.ours === ours && c.ort === ort);
  assert.ok(pair, `no comparison of ${ours} with ${ort}`);
  assert.ok(Number.isFinite(pair.ratio) && pair.ratio > 0);
  // Same weights, same input: the two encoders agree to float rounding (a wrong model would be off by ~1).
  assert.ok(pair.outputDiff < 1e-3, `${ours} vs ${ort}: outputs differ by ${pair.outputDiff} x std`);
}

test('the bench page times memseg and onnxruntime-web on the CPU on the same encoder', async () => {
  const { page, outcome, consoleErrors } = await runBench({ model: MODEL, engines: 'ours-flex,ort-wasm', warmup: '0', runs: '2' });
  assert.equal(outcome.state, 'done', outcome.status);
  assert.equal(outcome.status, 'Done.');
  checkPair(outcome, 'ours-flex', 'ort-wasm', 2);
  assert.equal(outcome.rows.length, 2);
  assert.match(await page.textContent('#ratios'), /memseg, CPU \(Flex\) \/ onnxruntime-web, WASM \(1 thread\): [\d.]+× the time/);
  await screenshot(page, 'bench-cpu');
  assert.deepEqual(consoleErrors, []);
  await page.close();
});

test('a missing model, a bad run count and a missing WebGPU get readable errors', async () => {
  const missing = await runBench({ model: 'no-such-model', engines: 'ours-flex', runs: '1' });
  assert.equal(missing.outcome.state, 'error');
  assert.match(missing.outcome.status, /models\/no-such-model\.json: HTTP 404; make it with bench\/export_onnx\.py/);
  await screenshot(missing.page, 'bench-error');
  await missing.page.close();
  const zero = await runBench({ model: MODEL, engines: 'ours-flex', runs: '0' });
  assert.equal(zero.outcome.state, 'error');
  assert.match(zero.outcome.status, /timed runs: a whole number from 1 to 50/);
  await zero.page.close();
  // WebGPU engines in a browser without WebGPU: each row says why, the run still finishes.
  const noGpu = await runBench({ model: MODEL, engines: 'ours-wgpu,ort-webgpu', warmup: '0', runs: '1' });
  assert.equal(noGpu.outcome.state, 'done');
  assert.equal(noGpu.outcome.status, 'Done; failed: memseg, WebGPU, onnxruntime-web, WebGPU.');
  for (const engine of ['ours-wgpu', 'ort-webgpu']) {
    assert.match(noGpu.outcome.result.engines[engine].error, /exposes no WebGPU|WebGPU is present but found no adapter/);
  }
  await screenshot(noGpu.page, 'bench-no-webgpu');
  await noGpu.page.close();
});

test('the app links to the bench page from its footer only', async () => {
  const page = await browser.context.newPage();
  await page.goto(server.url);
  const links = await page.$$eval('a[href="bench.html"]', (as) => as.map((a) => a.closest('footer') !== null));
  assert.deepEqual(links, [true]);
  await page.close();
});
