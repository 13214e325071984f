// Every core on the CPU fallback: helper workers encode the slices a run will reach next (www/encoder-pool.js,
// src/web/encode_ahead.rs) and hand the features to the core's cache. The run must give exactly the labels it
// gives on one worker, while the helpers' encodings are really used (fewer encodings by the run itself).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { NO_WEBGPU_FLAGS, launch, openApp, screenshot, serve } from './harness.mjs';
import { loadModel, loadSample, paintLiver, runToEnd } from './journey.mjs';

let server;
before(async () => {
  server = await serve();
});
after(() => server?.close());

/** A run on a fresh page opened with `?helpers=N`: its summary, every slice's labels, the device panel. */
async function runWith(helpers) {
  const browser = await launch(NO_WEBGPU_FLAGS);
  try {
    const outside = [];
    await browser.context.route('**/*', (route) => {
      const url = route.request().url();
      if (!url.startsWith(server.url)) outside.push(url);
      return url.startsWith(server.url) ? route.continue() : route.abort();
    });
    const { page, consoleErrors } = await openApp(browser.context, `${server.url}?backend=flex&helpers=${helpers}`);
    await loadModel(page);
    await loadSample(page);
    await paintLiver(page);
    const summary = await runToEnd(page);
    const labels = await page.evaluate(() => window.memsegState.results.map((r) => Array.from(r)));
    const status = await page.textContent('#run-status');
    await page.click('#device-panel details summary');
    const cores = await page.textContent('#device-cores');
    await screenshot(page, `cores-${helpers}`);
    assert.deepEqual(outside, []);
    assert.deepEqual(consoleErrors, []);
    return { summary, labels, status, cores };
  } finally {
    await browser.close();
  }
}

test('helper workers encode ahead on the CPU fallback and the labels are those of one worker', async () => {
  const one = await runWith(0);
  assert.equal(one.summary.encodeAhead, undefined, 'no helpers asked for: no pool');
  assert.equal(one.summary.report.frames_encoded, 24);
  assert.match(one.cores, /^1 \(the browser offers \d+\)/);

  const two = await runWith(1);
  const { helpers, encoded, kept } = two.summary.encodeAhead;
  assert.equal(helpers, 1);
  assert.ok(kept > 0, `the helper's encodings reached the cache (${encoded} encoded, ${kept} kept)`);
  assert.equal(two.summary.report.frames_encoded + kept, 24, 'each slice encoded once, by the run or the helper');
  assert.match(two.status, new RegExp(`; ${kept} encoded ahead on other cores\\)\\.$`), two.status);
  assert.match(two.cores, /^2: one tracks, 1 encode the next slices ahead/);
  assert.equal(two.labels.length, 24);
  assert.deepEqual(two.labels, one.labels, 'the same labels, slice by slice');
  assert.deepEqual(two.summary.report.per_class, one.summary.report.per_class);
});
