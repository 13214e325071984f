// WebGPU device loss, seen from the worker. Burn's wgpu backend requests the GPUDevice itself, inside the
// WebAssembly core, and keeps it there: JavaScript never gets it. wasm-bindgen calls `adapter.requestDevice`
// through the prototype at call time, so wrapping that method before the core initialises hands us the device
// it creates, and with it `device.lost`, which otherwise surfaces only as failed or panicking GPU work later.

let device = null;

/** Calls `onLost({reason, message})` when the device the core requests is lost. Call before `init_compute`. */
export function watchDeviceLoss(onLost) {
  const Adapter = globalThis.GPUAdapter;
  if (!Adapter || Adapter.prototype.requestDevice.memsegWatched) return;
  const original = Adapter.prototype.requestDevice;
  const wrapped = async function requestDevice(...args) {
    const requested = await original.apply(this, args);
    device = requested;
    requested.lost.then((info) => onLost({ reason: info.reason, message: info.message }));
    return requested;
  };
  wrapped.memsegWatched = true;
  Adapter.prototype.requestDevice = wrapped;
}

/** Diagnostic: destroys the core's device, which the browser reports as lost (reason "destroyed"). */
export function loseDevice() {
  if (!device) throw new Error('no WebGPU device to lose: the core computes on the CPU');
  device.destroy();
  return true;
}
