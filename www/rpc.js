// The page's side of the worker protocol (see worker.js): call(op, args, {onProgress, transfer}) -> Promise.
export function connect(worker, { onPanic, onFailure }) {
  const pending = new Map();
  let nextId = 1;

  worker.onmessage = ({ data }) => {
    if (data.type === 'panic') return onPanic(data.message);
    const waiter = pending.get(data.id);
    if (!waiter) return;
    if (data.type === 'progress') return waiter.onProgress?.(data);
    pending.delete(data.id);
    data.ok ? waiter.resolve(data.result) : waiter.reject(new Error(data.error));
  };
  // The worker script itself failed (e.g. the wasm core was never built): fail what waits on it.
  worker.onerror = (e) => {
    e.preventDefault();
    const reason = `the compute worker failed to start: ${e.message || 'the WebAssembly core could not be loaded (build it with ./build.sh serve)'}`;
    if (pending.size === 0) onFailure(reason);
    for (const { reject } of pending.values()) reject(new Error(reason));
    pending.clear();
  };

  return function call(op, args = {}, { onProgress, transfer = [] } = {}) {
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject, onProgress });
      worker.postMessage({ id, op, ...args }, transfer);
    });
  };
}
