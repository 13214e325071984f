// Every core for the CPU fallback. The core runs on one thread per worker (WebAssembly without threads), and a
// tracked slice is the image encoder (about half its time) then the memory path, which needs the slice before
// it. So the main worker (worker.js) starts helper workers (encoder-worker.js), each with its own instance of the
// core and the same weights; during a run they encode the slices the run will reach next and hand the features
// to the main worker's feature cache (src/web/encode_ahead.rs), where the run finds them. The order is only a
// forecast: a slice the helpers have not delivered in time is encoded by the run itself, as without helpers.
// A helper that fails is dropped and the run goes on without it. Each helper holds a copy of the weights and
// the encoder's working memory: about 0.4 GB at 512 px, so their number is capped.

import { moduleWorker } from './trusted.js';

// How far ahead of the run the helpers encode: enough to keep them busy, well inside the cache's budget.
const AHEAD = 6;
// The longest the run waits for a helper's slice (a stuck helper must not stall it; an encoding takes seconds).
const WAIT_LIMIT_MS = 60_000;
// Bytes of one slice's encoder features at input size S (levels of 32, 64 and 256 channels at strides 4, 8, 16).
const featureBytes = (size) => 16 * size * size;
export const MAX_HELPERS = 3;

/** Helpers for this device: one core stays with the main worker; a request that is not a count is ignored. */
export function helpersFor(cores, requested) {
  const wanted = Number.isInteger(requested) ? requested : Math.max(0, (cores || 1) - 1);
  return Math.max(0, Math.min(MAX_HELPERS, wanted));
}

/**
 * The slices in the order a run will likely produce them, one entry per progress step (src/session: Meta's
 * propagate_in_video order, forward from the first conditioning frame then in reverse).
 */
export function visitOrder({ mode, slices, painted = [], externalSupports = false }) {
  const range = (from, to) => Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);
  if (mode === 'supports-only') return range(0, slices);
  const middle = Math.floor(slices / 2);
  const inserted = mode === 'propagate-middle' || externalSupports; // supports go in before the middle slice
  const conditioning = mode === 'propagate' ? painted : [];
  const start = Math.min(...conditioning, ...(inserted ? [middle] : []), slices);
  const forward = range(start, slices);
  // A drawn slice that starts the run is produced again by the reverse pass; an inserted support is no step.
  const reverse = range(0, conditioning.includes(start) ? start + 1 : start).reverse();
  return [...forward, ...reverse];
}

export class EncoderPool {
  constructor(count) {
    this.helpers = Array.from({ length: count }, () => this.#spawn());
    this.generation = 0; // bumped by every model load: what older helpers encoded is dropped
    this.plan = null;
    this.counts = { encoded: 0, kept: 0, encodeMs: [] };
    this.inFlight = new Map(); // slice -> the helper's encoding under way (settles once handed to the cache)
  }

  get size() {
    return this.helpers.filter((h) => !h.dead).length;
  }

  /** The main worker loaded these weights: every helper loads them too. */
  load(bytes, name, overrides) {
    const generation = ++this.generation;
    for (const h of this.helpers.filter((h) => !h.dead)) {
      h.ready = false;
      const copy = bytes.slice(0);
      this.#call(h, 'load', { bytes: copy, name, overrides }, [copy]).then(
        () => {
          if (generation !== this.generation) return;
          h.ready = true;
          this.#pump();
        },
        (e) => this.#drop(h, e),
      );
    }
  }

  /**
   * A run starts. `order`: the slices in their forecast order; `input(z)`: slice z as the model sees it
   * ({width, height, rgb}), null when the core's cache has it already; `keep(result)`: hands a helper's
   * encoding to the core's cache (true if kept).
   */
  start({ order, input, keep }) {
    this.plan = { order, input, keep, next: 0, progress: 0, ahead: AHEAD, generation: this.generation };
    this.#pump();
  }

  /**
   * Nothing runs yet (the user paints): encode the slices a run would start with, as many as the core's
   * feature cache holds beside a run's own (`cacheBytes` at input size `imageSize`). Same arguments as start.
   */
  idle({ order, input, keep, cacheBytes, imageSize }) {
    const room = Math.floor(cacheBytes / featureBytes(imageSize)) - 2 * AHEAD;
    if (room <= 0) return;
    this.plan = { order: order.slice(0, room), input, keep, next: 0, progress: -1, ahead: room, generation: this.generation };
    this.#pump();
  }

  /**
   * The run has produced `steps` slices. When a helper is encoding the slice the run computes next, this waits
   * for it (its features then reach the cache first): encoding it twice would only slow both down.
   */
  async progress(steps) {
    const plan = this.plan;
    if (!plan) return;
    plan.progress = steps;
    this.#pump();
    const pending = this.inFlight.get(plan.order[steps]);
    if (pending) await Promise.race([pending, new Promise((resolve) => setTimeout(resolve, WAIT_LIMIT_MS))]);
  }

  /**
   * The run ended: nothing more is started (encodings under way still reach the cache, for a re-run). Returns
   * what the helpers did since the previous run ended (idle encoding included).
   */
  stop() {
    this.plan = null;
    const done = { helpers: this.size, ...this.counts };
    this.counts = { encoded: 0, kept: 0, encodeMs: [] };
    return done;
  }

  /** Each live helper's WebAssembly memory in bytes. */
  memory() {
    return Promise.all(this.helpers.filter((h) => !h.dead).map((h) => this.#call(h, 'memory', {})));
  }

  #pump() {
    const plan = this.plan;
    if (!plan) return;
    for (const h of this.helpers) {
      if (h.dead || !h.ready || h.busy) continue;
      // The slice being computed now (order[progress]) is the run's own; begin after it.
      plan.next = Math.max(plan.next, plan.progress + 1);
      let slice = null;
      while (!slice) {
        if (plan.next >= plan.order.length || plan.next > plan.progress + plan.ahead) return;
        try {
          slice = plan.input(plan.order[plan.next++]);
        } catch {
          this.plan = null; // the volume went away: the run will fail on its own
          return;
        }
      }
      h.busy = true;
      const started = performance.now();
      const z = plan.order[plan.next - 1];
      const done = this.#call(h, 'encode', slice, [slice.rgb.buffer]).then(
        (result) => {
          h.busy = false;
          if (plan.generation === this.generation) {
            this.counts.encoded += 1;
            this.counts.encodeMs.push(Math.round(performance.now() - started));
            try {
              if (plan.keep(result)) this.counts.kept += 1;
            } catch (e) {
              return this.#drop(h, e); // features the core refuses: this helper is not the model the run uses
            }
          }
          this.#pump();
        },
        (e) => this.#drop(h, e),
      );
      this.inFlight.set(z, done);
      done.finally(() => this.inFlight.get(z) === done && this.inFlight.delete(z));
    }
  }

  #spawn() {
    const worker = moduleWorker('./encoder-worker.js', import.meta.url);
    const helper = { worker, calls: new Map(), nextId: 0, ready: false, busy: false, dead: false };
    worker.onmessage = ({ data }) => {
      const call = helper.calls.get(data.id);
      helper.calls.delete(data.id);
      if (data.ok) call?.resolve(data.result);
      else call?.reject(new Error(data.error));
    };
    worker.onerror = (e) => this.#drop(helper, new Error(e.message || 'the helper worker failed to start'));
    return helper;
  }

  #call(helper, op, args, transfer = []) {
    return new Promise((resolve, reject) => {
      const id = helper.nextId++;
      helper.calls.set(id, { resolve, reject });
      helper.worker.postMessage({ id, op, ...args }, transfer);
    });
  }

  #drop(helper, error) {
    if (helper.dead) return;
    helper.dead = true;
    helper.worker.terminate();
    for (const call of helper.calls.values()) call.reject(error);
    helper.calls.clear();
    console.warn(`memseg: an encoder helper stopped (${error?.message ?? error}); going on with ${this.size}`);
  }
}
