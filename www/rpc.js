// The page's side of the worker protocol (see worker.js): call(op, args, {onProgress, transfer}) -> Promise.
//
// The worker can die under the page: a Rust panic (posted as {type: 'panic'} by the core's panic hook), a trap
// the worker reports as {type: 'crash'} (WebAssembly out of memory, "memory access out of bounds",
// "unreachable"), a lost GPU device ({type: 'device-lost'}), or an uncaught error once it is running. After any
// of these the WebAssembly instance cannot be trusted, so every pending call is rejected with a WorkerCrash,
// `onCrash(reason)` is told once, and nothing more is sent to that worker until `call.restart()` replaces it.

/** The rejection of calls that were pending (or made) while the worker crashed. */
export class WorkerCrash extends Error {
  constructor(reason) {
    super(`the compute core crashed: ${reason}`);
    this.name = 'WorkerCrash';
    this.reason = reason;
  }
}

/**
 * `makeWorker` creates the worker (called again by `call.restart()`); a Worker instance is accepted too, which
 * then cannot be restarted. `onCrash(reason)`: the worker died (see above). `onFailure(reason)`: the worker
 * failed before answering anything (e.g. the wasm core was never built): restarting it would not help.
 */
export function connect(makeWorker, { onCrash, onPanic, onFailure }) {
  const create = typeof makeWorker === 'function' ? makeWorker : () => makeWorker;
  const crashed = onCrash ?? onPanic;
  const pending = new Map();
  let nextId = 1;
  let worker = null;
  let dead = null; // the crash reason once the current worker died
  let answered = false; // whether the current worker ever answered: an error before that is a start failure

  function die(reason) {
    if (dead) return;
    dead = reason;
    for (const { reject } of pending.values()) reject(new WorkerCrash(reason));
    pending.clear();
    crashed?.(reason);
  }

  function attach(w) {
    w.onmessage = ({ data }) => {
      if (w !== worker) return; // a message from a replaced worker
      if (data.type === 'panic') return die(`the Rust core panicked: ${data.message}`);
      if (data.type === 'crash') return die(data.message);
      if (data.type === 'device-lost') return die(`the GPU device was lost (${data.reason}: ${data.message || 'no detail'})`);
      answered = true;
      const waiter = pending.get(data.id);
      if (!waiter) return;
      if (data.type === 'progress') return waiter.onProgress?.(data);
      pending.delete(data.id);
      data.ok ? waiter.resolve(data.result) : waiter.reject(new Error(data.error));
    };
    // An uncaught error in the worker: before its first answer the script itself failed to start (nothing to
    // recover); afterwards the worker is in an unknown state, which is a crash.
    w.onerror = (e) => {
      e.preventDefault();
      if (w !== worker) return;
      if (answered) return die(`the compute worker failed: ${e.message || 'an uncaught error'}`);
      const reason = `the compute worker failed to start: ${e.message || 'the WebAssembly core could not be loaded (build it with ./build.sh serve)'}`;
      if (pending.size === 0) onFailure(reason);
      for (const { reject } of pending.values()) reject(new Error(reason));
      pending.clear();
    };
  }

  function start() {
    worker = create();
    dead = null;
    answered = false;
    attach(worker);
  }

  function call(op, args = {}, { onProgress, transfer = [] } = {}) {
    if (dead) return Promise.reject(new WorkerCrash(dead));
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject, onProgress });
      worker.postMessage({ id, op, ...args }, transfer);
    });
  }

  /** Ends the current worker (crashed or not) and starts a fresh one; it still has to be initialised. */
  call.restart = () => {
    if (typeof makeWorker !== 'function') throw new Error('this worker cannot be restarted');
    for (const { reject } of pending.values()) reject(new WorkerCrash('the worker was restarted'));
    pending.clear();
    worker.terminate();
    start();
  };
  /** Why the current worker died, or null while it is alive. */
  call.crashed = () => dead;

  start();
  return call;
}
