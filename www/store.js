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
