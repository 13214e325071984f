// The encoder pool's pure parts (www/encoder-pool.js), without a browser: how many helpers a device gets, and
// the forecast of a run's visiting order (one entry per progress step, as src/session produces them).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_HELPERS, helpersFor, visitOrder } from '../../www/encoder-pool.js';

test('helpers: one per core beyond the first, capped; a bad ?helpers= value falls back to that', () => {
  assert.equal(helpersFor(1), 0);
  assert.equal(helpersFor(2), 1);
  assert.equal(helpersFor(16), MAX_HELPERS);
  assert.equal(helpersFor(undefined), 0, 'no navigator.hardwareConcurrency');
  assert.equal(helpersFor(8, 0), 0);
  assert.equal(helpersFor(8, 2), 2);
  assert.equal(helpersFor(8, 99), MAX_HELPERS);
  assert.equal(helpersFor(8, -4), 0);
  for (const bad of [NaN, 1.5, Infinity]) assert.equal(helpersFor(4, bad), 3, `?helpers=${bad}`);
});

test('the forecast order follows the session: forward from the first conditioning slice, then in reverse', () => {
  assert.deepEqual(visitOrder({ mode: 'supports-only', slices: 4 }), [0, 1, 2, 3]);
  // A painted slice starts the run and is produced again by the reverse pass.
  assert.deepEqual(visitOrder({ mode: 'propagate', slices: 6, painted: [4, 2] }), [2, 3, 4, 5, 2, 1, 0]);
  // Supports inserted before the middle slice are no step.
  assert.deepEqual(visitOrder({ mode: 'propagate-middle', slices: 5, painted: [0] }), [2, 3, 4, 1, 0]);
  assert.deepEqual(visitOrder({ mode: 'propagate', slices: 5, painted: [3], externalSupports: true }), [2, 3, 4, 1, 0]);
});
