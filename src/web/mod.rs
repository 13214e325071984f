//! JavaScript bindings, used by `www/worker.js`. A thin shell: each export converts JavaScript values, calls
//! the core (the volume job, `crate::job`, for every run) and turns errors into `Error` objects with readable
//! messages. What the worker keeps between calls is one [`state::WebState`].
//!
//! Files: this one (start-up, the device, the model); `volume.rs` (the volume and its display); `run.rs` (a
//! few-shot run and the progress messages every run posts); `prompt_free.rs` (adapters and prompt-free runs);
//! `exports.rs` and `results.rs` (the last run's files, and a run brought back from the browser's store);
//! `inputs.rs` (masks, label volumes and supports from files); `prompts.rs` (clicks and boxes: SAM's feedback); `corrections.rs` (clicks after a run); `bench.rs` (the encoder for the bench page and
//! the parity tests); `diagnostics.rs` (a deliberate panic for the crash-recovery tests); `heap.rs` (the
//! allocator: out-of-memory recorded for the page) and `c_alloc.rs` (the C allocation functions the JPEG 2000
//! decoder calls).

use wasm_bindgen::prelude::*;

mod bench;
mod c_alloc;
mod corrections;
mod diagnostics;
mod encode_ahead;
mod exports;
mod heap;
mod inputs;
mod prompt_free;
mod prompts;
mod results;
mod run;
mod state;
mod volume;

use crate::backend::{self, Preference};
use crate::imaging;
use crate::sam2::weights::{LoadReport, WeightsFormat, load_weights_bytes};
use crate::selftest;
use crate::session::feature_cache::FeatureCache;
use state::LoadedModel;

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

pub(crate) fn to_js<T: serde::Serialize>(value: &T) -> Result<JsValue, JsError> {
    value.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(|e| JsError::new(&e.to_string()))
}

pub(crate) fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// Sets `key` on a JavaScript object.
pub(crate) fn set(object: &js_sys::Object, key: &str, value: JsValue) -> Result<(), JsError> {
    js_sys::Reflect::set(object, &key.into(), &value).map(|_| ()).map_err(|_| JsError::new("reflect"))
}

/// A tensor read back from the device as `{shape, data: Float32Array}`; `name` labels a failed read.
pub(crate) async fn tensor_to_js(name: &str, tensor: burn::tensor::Tensor<4>) -> Result<js_sys::Object, JsError> {
    let shape = tensor.dims().to_vec();
    let values = crate::session::read_f32(tensor).await.map_err(|e| JsError::new(&format!("{name}: {e}")))?;
    let entry = js_sys::Object::new();
    set(&entry, "shape", to_js(&shape)?)?;
    set(&entry, "data", js_sys::Float32Array::from(values.as_slice()).into())?;
    Ok(entry)
}

/// Chooses the device. `preference` is "auto", "wgpu" or "flex"; `webgpu_unavailable` is the page's reason
/// when it found no `navigator.gpu` or no adapter (then wgpu is not tried). Returns what was chosen.
#[wasm_bindgen]
pub async fn init_compute(preference: String, webgpu_unavailable: Option<String>) -> Result<JsValue, JsError> {
    if state::with(|s| s.compute.is_some()) {
        return Err(JsError::new("the compute device is already initialised in this worker"));
    }
    let pref: Preference = preference.parse().map_err(|e: String| JsError::new(&e))?;
    let compute = backend::init_browser(pref, webgpu_unavailable).await.map_err(|e| JsError::new(&e))?;
    let report = to_js(&compute)?;
    state::with_mut(|s| s.compute = Some(compute));
    Ok(report)
}

/// Runs the self-test computation on the chosen device.
#[wasm_bindgen]
pub async fn run_selftest() -> Result<JsValue, JsError> {
    let result = selftest::run(&state::device()?).await.map_err(|e| JsError::new(&e))?;
    to_js(&result)
}

/// The page's feature cache: 32 slices at 512 px, 8 at 1024. Half the CLI's, so that the worker's wasm memory
/// while propagating 100 slices at 512 stays near 512 MiB beyond the volume (weights ~150 MiB, the slices as
/// 8-bit RGB 75 MiB, the encoder's working memory); the helpers only need a few slices ahead of the run.
const PAGE_FEATURE_CACHE_BYTES: usize = 128 << 20;

/// The core's input limits (`imaging::MAX_SIDE`, `MAX_SLICES`, `MAX_VALUES`), so that the page refuses an
/// oversized volume up front (`www/limits.js`) with the same numbers the readers enforce, never a copy of them.
#[wasm_bindgen]
pub fn limits() -> Result<JsValue, JsError> {
    to_js(&serde_json::json!({
        "maxSide": imaging::MAX_SIDE,
        "maxSlices": imaging::MAX_SLICES,
        "maxValues": imaging::MAX_VALUES,
        "featureCacheBytes": PAGE_FEATURE_CACHE_BYTES,
    }))
}

/// Loads weights (bytes of the file): an official `.pt` checkpoint, into a SAM2 model built from the tiny
/// config, or compact weights from `memseg convert`, into the model of the config they carry; Meta's
/// Hydra-style `overrides` (e.g. `++model.image_size=512`) apply on top. Returns the load report, the
/// file's format and the model's input size. The adapter folded into the previous model goes with it (its
/// weights are that model's; the page asks for the adapter again).
#[wasm_bindgen]
pub fn load_sam2(bytes: Vec<u8>, name: String, overrides: Vec<String>) -> Result<JsValue, JsError> {
    #[derive(serde::Serialize)]
    struct Loaded {
        #[serde(flatten)]
        report: LoadReport,
        format: WeightsFormat,
        image_size: usize,
    }
    let device = state::device()?;
    let weights = load_weights_bytes(bytes, &name).map_err(|e| JsError::new(&e))?;
    let format = weights.format;
    let (model, config, report) = weights.into_model(&overrides, &device).map_err(|e| JsError::new(&e))?;
    let image_size = config.image_size;
    state::with_mut(|s| {
        let features = FeatureCache::shared(PAGE_FEATURE_CACHE_BYTES);
        s.model = Some(LoadedModel { model, config, name, features });
        s.adapted = None;
        s.last_prompt = None;
        s.kept = None;
    });
    to_js(&Loaded { report, format, image_size })
}
