// The page's privacy enforced by the browser (scripts/csp.mjs): every page and worker script is served with the
// Content-Security-Policy and carries it in a <meta> too; a request to another origin is refused by the policy
// itself, from the page and from its worker; strings cannot become HTML or worker scripts (Trusted Types); and
// markup in names a user or a file brings (class names, file names) is shown as text and runs nothing, in the
// class list, the teaching view and the results table of a real run.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { OFFICIAL_WEIGHTS_ORIGIN, policy } from '../../scripts/csp.mjs';
import { NO_WEBGPU_FLAGS, repo, screenshot, serve } from './harness.mjs';
import { loadModel, loadSample, openRecorded, paintStrokes, runToEnd } from './journey.mjs';

// Markup that would run if it reached the DOM as HTML: it sets a flag the tests look for.
const MARKUP = '<img src=x onerror="window.__memsegInjected=1">';
const OUTSIDE = 'https://example.org/upload';

let server;
before(async () => {
  server = await serve();
});
after(() => server?.close());

test('every page and worker script carries the policy, as a header and in the page', async () => {
  const served = async (path) => {
    const response = await fetch(new URL(path, server.url));
    assert.equal(response.status, 200, path);
    return { csp: response.headers.get('content-security-policy'), text: await response.text() };
  };
  for (const [path, name] of [['', 'app'], ['index.html', 'app'], ['worker.js', 'app'], ['encoder-worker.js', 'app'],
    ['pkg/memseg.js', 'app'], ['bench.html', 'bench'], ['bench.js', 'bench'], ['vendor/ort/ort.all.min.mjs', 'bench']]) {
    assert.equal((await served(path)).csp, policy(name), path);
  }
  for (const [page, name] of [['index.html', 'app'], ['bench.html', 'bench']]) {
    const { text } = await served(page);
    const meta = text.match(/<meta http-equiv="Content-Security-Policy" content="([^"]*)">/);
    assert.equal(meta?.[1], policy(name, { meta: true }), `${page}'s <meta> policy`);
    assert.ok(text.indexOf(meta[0]) < text.indexOf('<script'), `${page}: the policy comes before any script`);
    assert.doesNotMatch(text, /<script(?![^>]*\bsrc=)|\son[a-z]+=|style=|<style/i, `${page}: no inline script, handler or style`);
  }
  // The one host the app may reach besides its own is the one the download uses.
  const official = readFileSync(join(repo, 'www/weights.js'), 'utf8').match(/url: '([^']+)'/)[1];
  assert.equal(new URL(official).origin, OFFICIAL_WEIGHTS_ORIGIN);
  assert.match(policy('app'), new RegExp(`connect-src 'self' ${OFFICIAL_WEIGHTS_ORIGIN}(;|$)`));
  assert.doesNotMatch(policy('bench'), /https:/);
});

test('the policy itself blocks other origins, HTML from strings and foreign workers; names with markup stay text', async () => {
  const { browser, page, consoleErrors, requests } = await openRecorded(server, NO_WEBGPU_FLAGS);
  try {
    // From the page: the fetch fails before any request is made (the route never sees it), and the browser
    // reports the violation of connect-src.
    const blocked = await page.evaluate(async (url) => {
      const seen = new Promise((resolve) => document.addEventListener('securitypolicyviolation', (e) => resolve(e.effectiveDirective), { once: true }));
      const error = await fetch(url, { method: 'POST', body: 'slice' }).then(() => null, (e) => e.name);
      return { error, directive: await seen };
    }, OUTSIDE);
    assert.deepEqual(blocked, { error: 'TypeError', directive: 'connect-src' });
    // From the model worker, which runs under its script's header.
    const [worker] = page.workers();
    assert.ok(worker, 'the model worker runs');
    assert.equal(await worker.evaluate((url) => fetch(url).then(() => 'sent', (e) => e.name), OUTSIDE), 'TypeError');
    assert.deepEqual(requests.filter((u) => u.startsWith('https://example.org')), [], 'no request reached the network layer');
    // Trusted Types: a string is refused as HTML and as a worker's script, even one of this origin, and no other
    // policy can be made. (Not eval: DevTools' evaluate, which runs this, is exempt from the policy's eval rule.)
    const refused = await page.evaluate(() => {
      const attempt = (f) => { try { f(); return 'allowed'; } catch (e) { return e.name; } };
      return {
        html: attempt(() => { document.createElement('div').innerHTML = '<b>x</b>'; }),
        worker: attempt(() => new Worker('worker.js', { type: 'module' })),
        policy: attempt(() => trustedTypes.createPolicy('other', { createHTML: (s) => s })),
      };
    });
    assert.deepEqual(refused, { html: 'TypeError', worker: 'TypeError', policy: 'TypeError' });
    // The browser reports each refusal to the server (asynchronously): two fetches, two sinks, one policy.
    const provoked = [];
    for (let waited = 0; provoked.length < 5 && waited < 10_000; waited += 100) {
      provoked.push(...server.takeCspReports().map((r) => r['violated-directive']));
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(provoked.sort(), ['connect-src', 'connect-src', 'require-trusted-types-for', 'require-trusted-types-for', 'trusted-types']);
    consoleErrors.length = 0; // the browser logs each refusal above

    // A class named with markup, painted and tracked: the class list, the teaching view and the results table
    // show the name as text, and nothing in it runs.
    await loadModel(page);
    await loadSample(page);
    await page.fill('#class-name', MARKUP);
    await page.click('#add-class button[type=submit]');
    await page.waitForFunction((name) => document.querySelector('#class-list').textContent.includes(name), MARKUP);
    await paintStrokes(page);
    await runToEnd(page);
    for (const where of ['#class-list', '#results-table', '#teaching']) {
      assert.ok((await page.textContent(where)).includes(MARKUP), `${where} shows the name as text`);
    }
    // A file whose name is markup, refused as a label volume: its name in the message is text too.
    await page.setInputFiles('#labels-files', { name: `${MARKUP}.nii`, mimeType: 'application/octet-stream', buffer: Buffer.from('not a volume') });
    await page.waitForFunction((name) => document.querySelector('#inputs-status').textContent.includes(name), MARKUP);
    await screenshot(page, 'security-markup-as-text');
    assert.equal(await page.evaluate(() => window.__memsegInjected), undefined, 'the markup ran');
    assert.equal(await page.locator('img[src="x"]').count(), 0, 'the markup became an element');
    assert.deepEqual(consoleErrors, []);
  } finally {
    await browser.close();
  }
});
