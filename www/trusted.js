// The page's one Trusted Types policy, 'memseg': the only one its Content-Security-Policy allows
// (scripts/csp.mjs). With `require-trusted-types-for 'script'` the browser refuses a plain string (or URL) where a
// script URL goes, such as `new Worker(...)`; this policy turns a URL into one only when this origin serves it.
// It makes no HTML: the page never builds HTML from strings (ui.js `el`), so nothing may be turned into HTML.

const policy = globalThis.trustedTypes?.createPolicy('memseg', {
  createScriptURL(url) {
    const resolved = new URL(url, globalThis.location.href);
    if (resolved.origin !== globalThis.location.origin) throw new TypeError(`${resolved.href} is not a script of this page`);
    return resolved.href;
  },
});

/** A module worker running `url` (relative to `base`), which must be on this page's origin. */
export function moduleWorker(url, base) {
  const href = new URL(url, base).href;
  return new Worker(policy ? policy.createScriptURL(href) : href, { type: 'module' });
}
