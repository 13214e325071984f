// "No lost work" after a crash of the compute worker (a Rust panic, WebAssembly out of memory, a lost GPU):
// restart the worker, re-initialise compute, reload the model and the volume, keep the painted masks, and
// say plainly what happened. It never loops: a second crash within `windowMs` of the first (or during the
// recovery itself) stops it, with the work kept, and the user is told to reload the page.

import { WorkerCrash } from './rpc.js';

/**
 * `restart()` replaces the worker; `steps` is [[what, async fn]] run in order (an fn returning false did not
 * apply, e.g. no model was loaded); `report` = {started(reason), recovered(reason, done, failed), gaveUp(reason)}.
 * Returns the page's `onCrash(reason)`.
 */
export function crashRecovery({ restart, steps, report, windowMs = 120_000 }) {
  let last = -Infinity;
  let recovering = false;
  let stopped = false;
  const giveUp = (reason) => {
    stopped = true;
    report.gaveUp(reason);
  };

  async function runSteps(reason) {
    const done = [];
    const failed = [];
    for (const [what, step] of steps) {
      try {
        if ((await step()) !== false) done.push(what);
      } catch (e) {
        if (e instanceof WorkerCrash) throw e; // crashed again while recovering
        failed.push(`${what}: ${e.message}`);
      }
    }
    report.recovered(reason, done, failed);
  }

  return async function onCrash(reason) {
    if (stopped) return;
    const now = Date.now();
    if (recovering || now - last < windowMs) return giveUp(reason);
    last = now;
    recovering = true;
    report.started(reason);
    try {
      restart();
      await runSteps(reason);
    } catch (e) {
      if (!stopped) giveUp(e.reason ?? e.message);
    } finally {
      recovering = false;
    }
  };
}
