// The user's work on a volume (classes and painted masks) kept in this browser's IndexedDB, so that a reload
// or a crash loses nothing: it comes back when the same volume is opened again, until the user forgets it.
// Nothing here leaves the device.
const DB = 'memseg';
const STORE = 'work';

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function transact(mode, fn) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = fn(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request?.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error('the browser refused to store the work'));
    });
  } finally {
    db.close();
  }
}

/** A volume's key: where it came from and its size (the same files give the same key). */
export function volumeKey(meta) {
  return `${meta.source}|${meta.width}x${meta.height}x${meta.slices}`;
}

/** {classes, masks: [[slice, Uint8Array]]} saved for this volume, or undefined. */
export const load = (key) => transact('readonly', (s) => s.get(key));
export const save = (key, work) => transact('readwrite', (s) => s.put({ ...work, savedAt: Date.now() }, key));
export const forget = (key) => transact('readwrite', (s) => s.delete(key));

// A run's results (label maps per slice and the run's summary with its report), kept beside the work under
// their own key so that saving masks while painting never rewrites megabytes of results.
const resultsKey = (key) => `${key}|results`;
/** {slices: [[slice, Uint8Array]], summary, savedAt} kept for this volume, or undefined. */
export const loadResults = (key) => transact('readonly', (s) => s.get(resultsKey(key)));
export const saveResults = (key, results) => transact('readwrite', (s) => s.put({ ...results, savedAt: Date.now() }, resultsKey(key)));
export const forgetResults = (key) => transact('readwrite', (s) => s.delete(resultsKey(key)));

// Supports taken from other volumes (inputs.js): not tied to the volume being segmented (a support serves any
// query), so they have one entry of their own.
const SUPPORTS_KEY = 'external-supports';
/** {supports: [record], savedAt} (records as the worker's supportSlice makes them), or undefined. */
export const loadSupports = () => transact('readonly', (s) => s.get(SUPPORTS_KEY));
export const saveSupports = (supports) => transact('readwrite', (s) => s.put({ supports, savedAt: Date.now() }, SUPPORTS_KEY));
