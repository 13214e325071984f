// The foundation end to end: Rust core -> wasm -> worker -> page, on WebGPU and on the CPU fallback, checked
// against the same computation run natively by the CLI.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { NO_WEBGPU_FLAGS, WEBGPU_FLAGS, launch, maxAbsDiff, memseg, openApp, screenshot, serve } from './harness.mjs';

let server;
let native;

before(async () => {
  server = await serve();
  native = memseg('--backend', 'flex', 'selftest');
});
after(() => server?.close());

test('WebGPU page computes the self-test on a WebGPU adapter and matches the native core', async () => {
  const browser = await launch(WEBGPU_FLAGS);
  try {
    const { page, state, consoleErrors } = await openApp(browser.context, server.url);
    await screenshot(page, 'foundation-webgpu');
    assert.deepEqual(state.errors, []);
    assert.equal(state.device.backend, 'wgpu', `fell back: ${state.device.fallback_reason}`);
    assert.equal(state.device.adapter.graphics_api, 'BrowserWebGpu');
    assert.match(state.device.webgpuAdapter.architecture, /swiftshader/i);
    assert.match(await page.textContent('#device-summary'), /WebGPU/);
    assert.match(await page.textContent('#device-architecture'), /swiftshader/i);
    assert.deepEqual(state.selftest.shape, native.shape);
    assert.ok(maxAbsDiff(state.selftest.values, native.values) <= 1e-5);
    assert.deepEqual(consoleErrors, []);
  } finally {
    await browser.close();
  }
});

test('without WebGPU the page falls back to the CPU, says why, and matches the native core', async () => {
  const browser = await launch(NO_WEBGPU_FLAGS);
  try {
    const { page, state, consoleErrors } = await openApp(browser.context, server.url);
    await screenshot(page, 'foundation-cpu-fallback');
    assert.deepEqual(state.errors, []);
    assert.equal(state.device.backend, 'flex');
    assert.match(state.device.fallback_reason, /WebGPU/);
    assert.match(await page.textContent('#device-summary'), /CPU fallback/);
    assert.match(await page.textContent('#device-reason'), /WebGPU/);
    assert.ok(maxAbsDiff(state.selftest.values, native.values) <= 1e-5);
    assert.deepEqual(consoleErrors, []);
  } finally {
    await browser.close();
  }
});

test('a missing wasm core gives a readable error on the page, not a blank page', async () => {
  const empty = await serve({ pkg: mkdtempSync(join(tmpdir(), 'memseg-nopkg-')) });
  const browser = await launch(WEBGPU_FLAGS);
  try {
    const { page, state } = await openApp(browser.context, empty.url, { timeout: 30_000 });
    assert.equal(await page.isVisible('#error'), true);
    assert.match(await page.textContent('#error'), /compute worker failed to start|could not be loaded/);
    assert.equal(state.selftest, null);
  } finally {
    await browser.close();
    await empty.close();
  }
});
