// Shared set-up for the browser tests: Debian's Chromium, headless, with WebGPU through SwiftShader
// (see ../shared/docs/browser-testing.md), and the same static server `./build.sh serve` uses.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startServer } from '../../scripts/serve.mjs';

export const repo = resolve(fileURLToPath(import.meta.url), '../../..');
export const pkgDir = resolve(repo, process.env.MEMSEG_PKG ?? 'target/wasm-test-pkg');
export const memsegBin = resolve(repo, process.env.MEMSEG_BIN ?? 'target/release/memseg');
export const screenshotDir = join(repo, 'target/e2e-screenshots');

const COMMON_FLAGS = [
  '--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--no-first-run', '--disable-dev-shm-usage',
];
export const WEBGPU_FLAGS = [
  '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader', '--use-webgpu-adapter=swiftshader',
];
// No WebGPU at all: navigator.gpu is absent, as in browsers without WebGPU support.
export const NO_WEBGPU_FLAGS = ['--disable-gpu', '--disable-features=WebGPU,Vulkan'];

/** Starts Chromium with a fresh profile; returns {browser, close}. */
export async function launch(flags) {
  const userDataDir = mkdtempSync(join(tmpdir(), 'memseg-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [...COMMON_FLAGS, ...flags],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Serves www/ on a free loopback port; `pkg` is where /pkg/ is served from, `models` the models folder.
 * Every journey runs under the page's Content-Security-Policy (scripts/csp.mjs): the browser reports any
 * violation to the server, and `close()` fails when one was reported that the test did not take with
 * `takeCspReports()` (the tests that provoke one on purpose).
 */
export async function serve({ pkg = pkgDir, models } = {}) {
  const server = await startServer({ port: 0, pkg, models });
  const reports = server.cspReports;
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    takeCspReports: () => reports.splice(0),
    async close() {
      await new Promise((r) => server.close(r));
      const seen = reports.map((r) => `${r['violated-directive']} blocked ${r['blocked-uri']} on ${r['document-uri']}`);
      assert.deepEqual(seen, [], 'the page broke its own Content-Security-Policy');
    },
  };
}

/** Opens the page and waits until it is ready or shows an error; returns page, state and console errors. */
export async function openApp(context, url, { timeout = 120_000 } = {}) {
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
  page.on('pageerror', (e) => consoleErrors.push(e.message));
  await page.goto(url);
  await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state), null, { timeout });
  const state = await page.evaluate(() => window.memsegState);
  return { page, state, consoleErrors };
}

export async function screenshot(page, name) {
  mkdirSync(screenshotDir, { recursive: true });
  await page.screenshot({ path: join(screenshotDir, `${name}.png`), fullPage: true });
}

/** Runs the native CLI and parses its JSON output. */
export function memseg(...args) {
  return JSON.parse(execFileSync(memsegBin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
}

export function maxAbsDiff(a, b) {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  return Math.max(...a.map((v, i) => Math.abs(v - b[i])));
}

export const fixturesDir = join(repo, 'tests/fixtures');

/** Reads a .safetensors file (F32 and U8 tensors): {metadata, tensors: {name: {shape, data}}}. */
export function readSafetensors(path) {
  const bytes = readFileSync(path);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
  const body = 8 + headerLength;
  const tensors = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets: [from, to] } = entry;
    const raw = bytes.subarray(body + from, body + to);
    const copy = new Uint8Array(raw).buffer; // aligned copy
    const data = dtype === 'F32' ? new Float32Array(copy) : dtype === 'U8' ? new Uint8Array(copy) : null;
    if (!data) throw new Error(`${path}: ${name} has unsupported dtype ${dtype}`);
    tensors[name] = { shape, data };
  }
  return { metadata: header.__metadata__ ?? {}, tensors };
}

/** Max |a - b| / std(b), the parity measure of tests/encoder_parity.rs. */
export function relativeError(ours, reference) {
  const n = reference.length;
  if (ours.length !== n) throw new Error(`length ${ours.length} != ${n}`);
  let mean = 0;
  for (const v of reference) mean += v / n;
  let variance = 0;
  let max = 0;
  for (let i = 0; i < n; i++) {
    variance += (reference[i] - mean) ** 2 / n;
    max = Math.max(max, Math.abs(ours[i] - reference[i]));
  }
  return max / Math.sqrt(variance);
}
