//! JavaScript bindings, used by `www/worker.js`. A thin layer: each export converts arguments, calls the core,
//! and turns errors into `Error` objects with readable messages.

use std::cell::RefCell;

use wasm_bindgen::prelude::*;

use crate::backend::{self, Compute, Preference};
use crate::sam2::Sam2Base;
use crate::sam2::weights::{LoadReport, WeightsFormat, load_weights_bytes};
use crate::selftest;
use burn::tensor::{Tensor, TensorData};

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

thread_local! {
    /// The SAM2 model loaded by `load_sam2`, on the worker's device.
    static MODEL: RefCell<Option<Sam2Base>> = const { RefCell::new(None) };
}

/// Loads weights (bytes of the file): an official `.pt` checkpoint, into a SAM2 model built from the tiny
/// config, or compact weights from `memseg convert`, into the model of the config they carry; Meta's
/// Hydra-style `overrides` (e.g. `++model.image_size=512`) apply on top. Returns the load report, the
/// file's format and the model's input size.
#[wasm_bindgen]
pub fn load_sam2(bytes: Vec<u8>, name: String, overrides: Vec<String>) -> Result<JsValue, JsError> {
    #[derive(serde::Serialize)]
    struct Loaded {
        #[serde(flatten)]
        report: LoadReport,
        format: WeightsFormat,
        image_size: usize,
    }
    let device = device()?;
    let weights = load_weights_bytes(bytes, &name).map_err(|e| JsError::new(&e))?;
    let format = weights.format;
    let (model, config, report) = weights.into_model(&overrides, &device).map_err(|e| JsError::new(&e))?;
    MODEL.with_borrow_mut(|m| *m = Some(model));
    to_js(&Loaded { report, format, image_size: config.image_size })
}

/// Runs the image encoder (`forward_image`) on a preprocessed `[1, 3, S, S]` input and returns every stage
/// the encoder reports, as `{name: {shape, data: Float32Array}}`: used to check the browser against Meta.
#[wasm_bindgen]
pub async fn encoder_stages(input: Vec<f32>) -> Result<JsValue, JsError> {
    let device = device()?;
    let model = MODEL.with_borrow(|m| m.clone()).ok_or_else(|| JsError::new("load_sam2 must be called first"))?;
    let side = ((input.len() / 3) as f64).sqrt() as usize;
    if 3 * side * side != input.len() {
        return Err(JsError::new(&format!("input of {} values is not [1, 3, S, S]", input.len())));
    }
    let x = Tensor::<4>::from_data(TensorData::new(input, [1, 3, side, side]), &device);
    let mut stages = Vec::new();
    let features = model.forward_image_with(x, |name, t| stages.push((name.to_string(), t.clone())));
    stages.push(("image_embed".to_string(), features.image_embed().clone()));
    let out = js_sys::Object::new();
    for (name, tensor) in stages {
        let shape = tensor.dims().to_vec();
        let data = tensor.into_data_async().await.map_err(|e| JsError::new(&format!("{name}: read-back failed: {e:?}")))?;
        let values = data.try_to_vec::<f32>().map_err(|e| JsError::new(&format!("{name}: {e:?}")))?;
        let entry = js_sys::Object::new();
        js_sys::Reflect::set(&entry, &"shape".into(), &to_js(&shape)?).map_err(|_| JsError::new("reflect"))?;
        js_sys::Reflect::set(&entry, &"data".into(), &js_sys::Float32Array::from(values.as_slice()).into())
            .map_err(|_| JsError::new("reflect"))?;
        js_sys::Reflect::set(&out, &name.into(), &entry).map_err(|_| JsError::new("reflect"))?;
    }
    Ok(out.into())
}
