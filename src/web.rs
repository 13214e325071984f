//! JavaScript bindings, used by `www/worker.js`. A thin layer: each export converts arguments, calls the core,
//! and turns errors into `Error` objects with readable messages.

use std::cell::RefCell;

use wasm_bindgen::prelude::*;

use crate::backend::{self, Compute, Preference};
use crate::selftest;

thread_local! {
    /// The worker's compute device, chosen once by `init_compute`.
    static COMPUTE: RefCell<Option<Compute>> = const { RefCell::new(None) };
}

/// Runs when the module is instantiated: panics go to the console and, as a message, to the page.
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        post_panic_to_page(&info.to_string());
    }));
}

/// Inside a dedicated worker, a panic is also posted as `{type: "panic", message}` so the page can show it:
/// the panic itself surfaces in JavaScript only as an opaque "unreachable" trap.
fn post_panic_to_page(message: &str) {
    let Ok(scope) = js_sys::global().dyn_into::<web_sys::DedicatedWorkerGlobalScope>() else { return };
    let msg = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&msg, &"type".into(), &"panic".into());
    let _ = js_sys::Reflect::set(&msg, &"message".into(), &message.into());
    let _ = scope.post_message(&msg);
}

fn to_js<T: serde::Serialize>(value: &T) -> Result<JsValue, JsError> {
    value.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(|e| JsError::new(&e.to_string()))
}

/// Chooses the device. `preference` is "auto", "wgpu" or "flex"; `webgpu_unavailable` is the page's reason
/// when it found no `navigator.gpu` or no adapter (then wgpu is not tried). Returns what was chosen.
#[wasm_bindgen]
pub async fn init_compute(preference: String, webgpu_unavailable: Option<String>) -> Result<JsValue, JsError> {
    if COMPUTE.with_borrow(|c| c.is_some()) {
        return Err(JsError::new("the compute device is already initialised in this worker"));
    }
    let pref: Preference = preference.parse().map_err(|e: String| JsError::new(&e))?;
    let compute = backend::init_browser(pref, webgpu_unavailable).await.map_err(|e| JsError::new(&e))?;
    let report = to_js(&compute)?;
    COMPUTE.with_borrow_mut(|c| *c = Some(compute));
    Ok(report)
}

fn device() -> Result<burn::tensor::Device, JsError> {
    COMPUTE
        .with_borrow(|c| c.as_ref().map(|c| c.device.clone()))
        .ok_or_else(|| JsError::new("init_compute must be called first"))
}

/// Runs the self-test computation on the chosen device.
#[wasm_bindgen]
pub async fn run_selftest() -> Result<JsValue, JsError> {
    let result = selftest::run(&device()?).await.map_err(|e| JsError::new(&e))?;
    to_js(&result)
}
