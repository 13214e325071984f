//! Prompt-free segmentation in the browser (issue 7): an adapter file from `memseg train` folded into a clone
//! of the loaded SAM2 model, then every slice of the loaded volume segmented with no masks. A thin layer over
//! [`crate::adapter_segment`], the code `memseg segment --adapter` runs, so the page and the CLI give the same
//! label maps; the finished run goes into the same slot as a few-shot run, so the exports work unchanged.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;

use super::{FINISHED, Finished, StepMessage, current, js_err, loaded_model, mapping, post_step, to_js};
use crate::adapter_segment::{PROMPT_FREE_MODE, PromptFree, PromptFreeReport};
use crate::imaging::intensity;
use crate::report::{InputInfo, class_reports};
use crate::sam2::Sam2Config;
use crate::sam2::adapter::trainable_parameters;

/// The adapted model and the weights file it was built on.
struct Adapted {
    prompt_free: PromptFree,
    weights: String,
}

thread_local! {
    /// The config the loaded model was built from: an adapter file must have been trained on the same image
    /// encoder. Set by `load_sam2` through [`model_loaded`].
    static CONFIG: RefCell<Option<Sam2Config>> = const { RefCell::new(None) };
    /// The loaded adapter, folded. An `Rc`, so that a run keeps its model while another adapter is loaded.
    static ADAPTED: RefCell<Option<Rc<Adapted>>> = const { RefCell::new(None) };
}

/// Called when a SAM2 model is loaded: remembers its config and drops the adapter folded into the previous
/// model (its weights are that model's; the page asks for the adapter again).
pub(crate) fn model_loaded(config: &Sam2Config) {
    CONFIG.with_borrow_mut(|c| *c = Some(config.clone()));
    ADAPTED.with_borrow_mut(|a| *a = None);
}

fn adapted() -> Result<Rc<Adapted>, JsError> {
    ADAPTED.with_borrow(|a| a.clone()).ok_or_else(|| JsError::new("load an adapter file first"))
}

/// Reads an adapter file (bytes; `name` for messages), checks that it was trained on the loaded model's image
/// encoder and folds it into a clone of that model (the loaded model itself stays plain, for few-shot runs).
/// Returns `{name, weights, classes (background left out), spec, values, bytes}`. On error the previous
/// adapter, if any, stays.
#[wasm_bindgen]
pub fn load_adapter(bytes: Vec<u8>, name: String) -> Result<JsValue, JsError> {
    let (model, weights) = loaded_model().map_err(|_| JsError::new("load the SAM2 model the adapter was trained on first"))?;
    let config = CONFIG.with_borrow(|c| c.clone()).ok_or_else(|| JsError::new("load a model first"))?;
    let prompt_free = PromptFree::load(model, &config, &bytes, &name).map_err(js_err)?;
    let info = serde_json::json!({
        "name": name,
        "weights": weights,
        "classes": prompt_free.foreground(),
        "spec": prompt_free.set.spec,
        "values": trainable_parameters(&config, &prompt_free.set.spec),
        "bytes": bytes.len(),
    });
    ADAPTED.with_borrow_mut(|a| *a = Some(Rc::new(Adapted { prompt_free, weights })));
    to_js(&info)
}

/// Forgets the loaded adapter (the page's "Remove").
#[wasm_bindgen]
pub fn unload_adapter() {
    ADAPTED.with_borrow_mut(|a| *a = None);
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
    FINISHED.with_borrow_mut(|f| *f = None);
    let current = current()?;
    let adapted = adapted()?;
    let started = js_sys::Date::now();
    let v = &current.volume;
    let mapping = mapping(v, &options.intensity).map_err(js_err)?;
    let (slices, intensity_info) = intensity::to_rgb8_with_info(v, &mapping).map_err(js_err)?;
    let total = slices.len();
    let mut labels = Vec::with_capacity(total);
    for (z, slice) in slices.iter().enumerate() {
        let map = adapted.prompt_free.segment(slice).await.map_err(js_err)?;
        let step = StepMessage { step: z + 1, total, slice: z, reverse: false, started, labels: &map, bank: None };
        let go_on = post_step(&on_step, step).await?;
        labels.push(map);
        if !go_on {
            return to_js(&serde_json::json!({"cancelled": true, "steps": z + 1, "total": total}));
        }
    }
    let classes = adapted.prompt_free.foreground();
    let report = PromptFreeReport {
        complete: true,
        input: InputInfo::of(v, intensity_info),
        weights: adapted.weights.clone(),
        adapter: adapted.prompt_free.name.clone(),
        mode: PROMPT_FREE_MODE,
        order: (0..total).collect(),
        frames_encoded: total,
        seconds: (js_sys::Date::now() - started) / 1000.0,
        per_class: class_reports(&labels, current.truth.as_deref(), &classes, v),
        classes: classes.clone(),
        outputs: vec!["labels.nii.gz".into(), "report.json".into()],
    };
    let summary = to_js(&serde_json::json!({"cancelled": false, "steps": total, "total": total, "report": &report}))?;
    let report = serde_json::to_value(&report).map_err(js_err)?;
    FINISHED.with_borrow_mut(|f| *f = Some(Finished { current: current.clone(), labels, classes, report }));
    Ok(summary)
}
