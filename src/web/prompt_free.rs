//! Prompt-free segmentation in the page: an adapter file from `memseg train` folded into a clone of the loaded
//! SAM2 model ([`crate::prompt_free`]), then every slice of the loaded volume segmented with no masks by the
//! same volume job `memseg segment --adapter` runs, so the page and the CLI give the same label maps. The
//! finished run goes into the same slot as a few-shot run, so the exports work unchanged.

use std::rc::Rc;

use wasm_bindgen::prelude::*;

use super::run::run_job;
use super::state::{self, AdaptedModel};
use super::{js_err, to_js};
use crate::imaging::intensity;
use crate::job::Method;
use crate::prompt_free::PromptFree;
use crate::sam2::adapter::trainable_parameters;

/// Reads an adapter file (bytes; `name` for messages), checks that it was trained on the loaded model's image
/// encoder and folds it into a clone of that model (the loaded model itself stays plain, for few-shot runs).
/// Returns `{name, weights, classes (background left out), spec, values, bytes}`. On error the previous
/// adapter, if any, stays.
#[wasm_bindgen]
pub fn load_adapter(bytes: Vec<u8>, name: String) -> Result<JsValue, JsError> {
    let loaded = state::loaded_model().map_err(|_| JsError::new("load the SAM2 model the adapter was trained on first"))?;
    let prompt_free = PromptFree::load(loaded.model, &loaded.config, &bytes, &name).map_err(js_err)?;
    let info = serde_json::json!({
        "name": name,
        "weights": loaded.name,
        "classes": prompt_free.foreground(),
        "spec": prompt_free.set.spec,
        "values": trainable_parameters(&loaded.config, &prompt_free.set.spec),
        "bytes": bytes.len(),
    });
    state::with_mut(|s| s.adapted = Some(Rc::new(AdaptedModel { prompt_free, weights: loaded.name })));
    to_js(&info)
}

/// Forgets the loaded adapter (the page's "Remove").
#[wasm_bindgen]
pub fn unload_adapter() {
    state::with_mut(|s| s.adapted = None);
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PromptFreeOptions {
    /// The model input's intensity mapping, as for a few-shot run.
    intensity: String,
}

/// Segments every slice of the volume with the loaded adapter, no masks. Progress and cancellation as
/// `run_segmentation`: after every slice `on_step({step, total, slice, reverse, elapsedMs, labels})` is
/// called and awaited (`false` stops the run). Returns `{cancelled, steps, total, report}`; a finished run is
/// kept for the exports (NIfTI, report, PNGs), a cancelled or failed one leaves nothing to export.
#[wasm_bindgen]
pub async fn run_prompt_free(options: JsValue, on_step: js_sys::Function) -> Result<JsValue, JsError> {
    let options: PromptFreeOptions =
        serde_wasm_bindgen::from_value(options).map_err(|e| JsError::new(&format!("run options: {e}")))?;
    state::with_mut(|s| s.finished = None);
    let loaded = state::loaded_volume()?;
    let adapted = state::with(|s| s.adapted.clone()).ok_or_else(|| JsError::new("load an adapter file first"))?;
    let mapping = intensity::choose(&loaded.volume, Some(&options.intensity)).map_err(js_err)?;
    state::with_mut(|s| s.kept = None);
    Ok(run_job(&loaded, mapping, adapted.weights.clone(), Method::PromptFree(&adapted.prompt_free), &on_step).await?.0)
}
