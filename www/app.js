// The page: talks to the compute worker and renders what it says. No computation happens here.
const $ = (id) => document.getElementById(id);

// Exposed for the browser tests and for curious users in the console.
window.memsegState = { device: null, selftest: null, errors: [] };

const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
const pending = new Map();
let nextId = 1;

function call(op, args = {}) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, op, ...args });
  });
}

// The worker protocol, for the browser tests and the console (e.g. memsegCall('encoderStages', {...})).
window.memsegCall = call;

worker.onmessage = ({ data }) => {
  if (data.type === 'panic') return showError(`The compute core crashed: ${data.message}\nReload the page to start again.`);
  const waiter = pending.get(data.id);
  if (!waiter) return;
  pending.delete(data.id);
  data.ok ? waiter.resolve(data.result) : waiter.reject(new Error(data.error));
};
// The worker script itself failed (e.g. the wasm core was never built): fail what waits on it with the reason.
worker.onerror = (e) => {
  e.preventDefault();
  const reason = `the compute worker failed to start: ${e.message || 'the WebAssembly core could not be loaded (build it with ./build.sh serve)'}`;
  if (pending.size === 0) showError(`Error: ${reason}`);
  for (const { reject } of pending.values()) reject(new Error(reason));
  pending.clear();
};

function showError(message) {
  window.memsegState.errors.push(message);
  const box = $('error');
  box.textContent = message;
  box.hidden = false;
  document.body.dataset.state = 'error';
}

function renderDevice(d) {
  const gpu = d.backend === 'wgpu';
  $('device-summary').innerHTML = gpu
    ? '<span class="badge gpu">WebGPU</span>Computing on the GPU'
    : '<span class="badge cpu">CPU fallback</span>Computing on the CPU (WebAssembly)';
  $('device-backend').textContent = gpu ? `wgpu (${d.adapter?.graphics_api ?? 'WebGPU'})` : 'Flex (pure Rust, CPU)';
  $('device-vendor').textContent = d.webgpuAdapter?.vendor ?? '—';
  $('device-architecture').textContent = d.webgpuAdapter?.architecture ?? '—';
  const mib = d.adapter ? `${(d.adapter.max_storage_buffer_binding_size / 2 ** 20).toFixed(0)} MiB` : '—';
  $('device-binding').textContent = mib;
  $('device-reason').textContent = d.fallback_reason ?? (gpu ? '—' : 'CPU chosen by the ?backend=flex setting');
  $('device-details').hidden = false;
}

function renderSelftest(r) {
  const [rows, cols] = r.shape;
  const table = $('selftest-table');
  const head = `<tr><th></th>${Array.from({ length: cols }, (_, j) => `<th>${j}</th>`).join('')}</tr>`;
  const body = Array.from({ length: rows }, (_, i) =>
    `<tr><th>${i}</th>${r.values.slice(i * cols, (i + 1) * cols).map((v) => `<td>${v.toFixed(6)}</td>`).join('')}</tr>`);
  table.innerHTML = head + body.join('');
  table.hidden = false;
  $('selftest-summary').textContent = `${rows}×${cols} result in ${r.ms.toFixed(1)} ms`;
}

async function selftest() {
  $('selftest-rerun').disabled = true;
  try {
    const r = await call('selftest');
    window.memsegState.selftest = r;
    renderSelftest(r);
    document.body.dataset.state = 'ready';
  } catch (e) {
    showError(`Self-test failed: ${e.message}`);
  } finally {
    $('selftest-rerun').disabled = false;
  }
}

async function main() {
  const preference = new URLSearchParams(location.search).get('backend') ?? 'auto';
  try {
    const device = await call('init', { preference });
    window.memsegState.device = device;
    renderDevice(device);
  } catch (e) {
    $('device-summary').textContent = 'No compute device';
    return showError(`Could not start the compute device: ${e.message}`);
  }
  $('selftest-rerun').addEventListener('click', selftest);
  await selftest();
}

main();
