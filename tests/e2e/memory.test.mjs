// Out of memory in the page: a real allocation failure of the core (its heap limited on purpose with the
// worker's debugHeapLimit, src/web/heap.rs, so that the test need not fill 4 GiB) is reported as such and
// recovered like a crash: the worker restarts with the model and the volume, the painted masks are kept, and a
// run works again. (A volume too big to fit is refused before it is read: app.test.mjs.)
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { NO_WEBGPU_FLAGS, launch, openApp, screenshot, serve } from './harness.mjs';
import { loadModel, loadSample, paintLiver } from './journey.mjs';

let server;
let browser;
let page;

before(async () => {
  server = await serve();
  browser = await launch(NO_WEBGPU_FLAGS);
  ({ page } = await openApp(browser.context, server.url));
  await page.setViewportSize({ width: 1400, height: 1000 });
});
after(async () => {
  await browser?.close();
  await server?.close();
});

test('running out of memory is said as such and recovered like a crash, with the model, the volume and the masks back', async () => {
  await loadModel(page);
  await loadSample(page);
  await paintLiver(page);
  const masks = await page.evaluate(() => window.memsegApp.paintedMasks());

  // From now on the core may allocate 1 MB more: the run's first encoding cannot.
  await page.evaluate(() => window.memsegCall('debugHeapLimit', { extraMb: 1 }));
  await page.click('#run');
  await page.waitForFunction(() => /reloaded/.test(document.querySelector('#notice').textContent), null, { timeout: 120_000 });
  const notice = await page.textContent('#notice');
  assert.match(notice, /^The compute core crashed \(out of memory: [\d.]+ MB more could not be allocated with [\d.]+ MB in use; a page's WebAssembly memory holds at most 4 GiB: .*\) and was restarted: the model and the volume reloaded; your painted masks are kept\./s);
  assert.deepEqual(await page.evaluate(() => window.memsegApp.paintedMasks()), masks, 'the painted masks are intact');
  assert.equal(await page.evaluate(() => window.memsegState.volume.slices), 24);
  await screenshot(page, 'memory-recovered');

  // The new worker has no limit: a run goes through slices (cancelled after two to keep the test short).
  await page.click('#run');
  await page.waitForFunction(() => (window.memsegState.progress?.step ?? 0) >= 2, null, { timeout: 240_000 });
  await page.click('#cancel');
  await page.waitForFunction(() => /^Cancelled after/.test(document.querySelector('#run-status').textContent), null, { timeout: 240_000 });
});
