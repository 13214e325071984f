//! Runs in the page: the page's options and masks become a volume job ([`crate::job`]); every step is posted
//! to the page, which answers whether to go on; a finished run is kept for the exports. The prompt-free run
//! (`prompt_free.rs`) goes through the same [`run_job`].

use image::GrayImage;
use wasm_bindgen::prelude::*;

use super::state::{self, FinishedRun, LoadedVolume};
use super::{corrections, inputs, js_err, set, to_js};
use crate::imaging::intensity;
use crate::job::{self, Corrections, DrawnMask, Finished, Job, Method, Outcome, Prompts, StepEvent};
use crate::session::slice_prompt::SlicePrompt;
use crate::session::{MemoryOptions, Mode, Placement};

/// What the page sends to start a few-shot run.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RunOptions {
    classes: Vec<u8>,
    /// "propagate" (from the drawn slices), "propagate-middle" (the drawn slices as supports inserted before
    /// the middle slice) or "supports-only".
    mode: String,
    /// The model input's intensity mapping ("auto" or as `intensity::choose` takes it).
    intensity: String,
    max_conditioning: Option<usize>,
    select_supports: Option<usize>,
    #[serde(default)]
    similarity_eviction: bool,
    /// Clicks and boxes on the volume's slices (`www/prompts.js`), conditioning frames after the painted masks;
    /// those of round 1 on are corrections after a run (`corrections.rs`).
    #[serde(default)]
    prompts: Vec<SlicePrompt>,
}

/// The page's mode names: the session's mode, and whether the drawn masks are supports.
fn page_mode(name: &str) -> Result<(Mode, bool), JsError> {
    match name {
        "propagate" => Ok((Mode::Propagate(Placement::Middle), false)),
        "propagate-middle" => Ok((Mode::Propagate(Placement::Middle), true)),
        "supports-only" => Ok((Mode::SupportsOnly, true)),
        other => Err(JsError::new(&format!("unknown mode '{other}'"))),
    }
}

/// Reads `[{slice, labels: Uint8Array}]` as masks drawn on the loaded volume's slices.
fn drawn_masks(masks: &js_sys::Array, loaded: &LoadedVolume) -> Result<Vec<DrawnMask>, JsError> {
    let v = &loaded.volume;
    let mut out = Vec::new();
    for entry in masks.iter() {
        let field = |key: &str| js_sys::Reflect::get(&entry, &key.into()).map_err(|_| JsError::new("bad mask entry"));
        let slice = field("slice")?.as_f64().ok_or_else(|| JsError::new("a mask without its slice"))? as usize;
        let values = js_sys::Uint8Array::new(&field("labels")?).to_vec();
        let labels = GrayImage::from_raw(v.width as u32, v.height as u32, values)
            .ok_or_else(|| JsError::new(&format!("the mask of slice {slice} is not {}x{}", v.width, v.height)))?;
        let name = format!("slice {slice} ({})", v.slice_names.get(slice).map_or("?", String::as_str));
        out.push(DrawnMask { slice, name, labels });
    }
    Ok(out)
}

/// Segments the volume from the masks drawn on its slices (`[{slice, labels}]`, label maps of the slice's
/// size) and the supports from other volumes (records of `support_slice`) with the loaded model. After every
/// slice it calls `on_step` (see [`post_step`]). Returns `{cancelled, steps, total, report, correction[,
/// resumed]}` (`correction`: see `corrections::status`; `resumed`: only the corrections' slices were tracked
/// again); a finished run is kept for the exports, a cancelled or failed one leaves nothing to export.
///
/// "propagate" (S1SFQ / kSFQ on the query's own slices) conditions on the drawn slices and tracks from the
/// first of them; "propagate-middle" inserts them as supports before the middle slice (FS-MedSAM2's
/// S1SFQ); "supports-only" (1S1Q / kS1Q) segments every slice from them alone.
#[wasm_bindgen]
pub async fn run_segmentation(
    options: JsValue,
    masks: js_sys::Array,
    supports: js_sys::Array,
    on_step: js_sys::Function,
) -> Result<JsValue, JsError> {
    let mut options: RunOptions = serde_wasm_bindgen::from_value(options).map_err(|e| JsError::new(&format!("run options: {e}")))?;
    let loaded = state::loaded_volume()?;
    let model = state::loaded_model()?;
    let v = &loaded.volume;
    let mapping = intensity::choose(v, Some(&options.intensity)).map_err(js_err)?;
    let drawn = drawn_masks(&masks, &loaded)?;
    // Supports from other volumes (`inputs.rs`), mapped like the query as `memseg segment --support`.
    let supports = inputs::external_supports(&supports, &mapping)?;
    if drawn.is_empty() && supports.is_empty() && options.prompts.is_empty() {
        return Err(JsError::new("paint a mask or click on at least one slice (or add a support) first"));
    }
    let (mode, drawn_as_supports) = page_mode(&options.mode)?;
    let clicks = std::mem::take(&mut options.prompts);
    // Corrections added to the last run, nothing else changed: only what they change is tracked again.
    if let Some((kept, finished)) = corrections::resumable(&options, &clicks, &drawn, &supports).map_err(js_err)? {
        let (summary, kept) = resume_job(&loaded, kept, finished.labels, &on_step).await?;
        corrections::keep(kept, &options, &clicks, &drawn, &supports);
        set(&summary.clone().into(), "resumed", true.into())?;
        return with_correction_status(summary, None);
    }
    // The exports follow the latest run only: a failed or cancelled run leaves nothing to export.
    state::with_mut(|s| (s.finished, s.kept) = (None, None));
    let memory = MemoryOptions {
        max_conditioning: options.max_conditioning,
        select_supports: options.select_supports,
        similarity_eviction: options.similarity_eviction,
    };
    let why_not = match mode {
        Mode::SupportsOnly => Some("corrections follow a propagation; this mode segments each slice from the supports alone".to_string()),
        Mode::Propagate(_) if memory.similarity_eviction => Some("corrections need every tracked memory: similarity eviction is on".into()),
        Mode::Propagate(_) => corrections::may_keep(&model, v.depth, options.classes.len()).err(),
    };
    let feature_cache = Some(model.features.clone());
    let prompts = Prompts {
        drawn: drawn.clone(),
        clicks: clicks.clone(),
        drawn_as_supports,
        supports: supports.clone(),
        classes: Some(options.classes.clone()),
        mode,
        memory,
        keep_logits: false,
        feature_cache,
        keep_for_corrections: why_not.is_none(),
    };
    let method = Method::FewShot { model: &model.model, prompts };
    let (summary, kept) = run_job(&loaded, mapping, model.name.clone(), method, &on_step).await?;
    corrections::keep(kept, &options, &clicks, &drawn, &supports);
    with_correction_status(summary, why_not)
}

/// The summary with `correction: {round, correctable, why}` (`corrections::status`).
fn with_correction_status(summary: JsValue, why: Option<String>) -> Result<JsValue, JsError> {
    set(&summary.clone().into(), "correction", corrections::status(why)?)?;
    Ok(summary)
}

/// Tracks the kept run again from its corrections (`job::resume`), from the finished run's label maps.
async fn resume_job(loaded: &std::rc::Rc<LoadedVolume>, kept: Corrections, labels: Vec<Vec<u8>>, on_step: &js_sys::Function) -> Result<(JsValue, Option<Corrections>), JsError> {
    let started = js_sys::Date::now();
    let mut post = async |e: StepEvent<'_>| post_step(on_step, &e, started).await;
    let seconds = || (js_sys::Date::now() - started) / 1000.0;
    let outcome = job::resume(kept, labels, &loaded.volume, loaded.truth.as_deref(), &mut post, seconds).await.map_err(js_err)?;
    finish(loaded, outcome)
}

/// Runs a job on the loaded volume, posting every step to `on_step`; returns the page's summary
/// `{cancelled, steps, total[, report]}` and the run kept for corrections if the job kept it; keeps a finished
/// run for the exports.
pub(crate) async fn run_job(
    loaded: &std::rc::Rc<LoadedVolume>,
    mapping: intensity::Intensity,
    weights: String,
    method: Method<'_>,
    on_step: &js_sys::Function,
) -> Result<(JsValue, Option<Corrections>), JsError> {
    let started = js_sys::Date::now();
    let job = Job { volume: &loaded.volume, mapping, truth: loaded.truth.as_deref(), weights, method };
    let mut post = async |e: StepEvent<'_>| post_step(on_step, &e, started).await;
    let outcome = job.run(&mut post, || (js_sys::Date::now() - started) / 1000.0).await.map_err(js_err)?;
    finish(loaded, outcome)
}

/// A job's outcome: the page's summary, the finished run kept for the exports, and what it keeps for
/// corrections.
fn finish(loaded: &std::rc::Rc<LoadedVolume>, outcome: Outcome<Finished>) -> Result<(JsValue, Option<Corrections>), JsError> {
    let mut finished = match outcome {
        Outcome::Done(finished) => finished,
        Outcome::Cancelled { steps, total } => return Ok((to_js(&serde_json::json!({"cancelled": true, "steps": steps, "total": total}))?, None)),
    };
    *finished.report.outputs_mut() = vec!["labels.nii.gz".into(), "report.json".into()];
    let (steps, total) = (finished.steps, finished.total);
    let summary = to_js(&serde_json::json!({"cancelled": false, "steps": steps, "total": total, "report": &finished.report}))?;
    let classes = finished.report.classes().to_vec();
    let report = serde_json::to_value(&finished.report).map_err(js_err)?;
    let run = FinishedRun { volume: loaded.clone(), labels: finished.labels, classes, report };
    state::with_mut(|s| s.finished = Some(run));
    Ok((summary, finished.corrections))
}

/// Calls `on_step({step, total, slice, reverse, elapsedMs, labels[, bank]})` and awaits what it returns:
/// `true` to go on, `false` to stop. The worker yields to its event loop in that promise, so a cancel posted
/// meanwhile is seen (on the CPU backend a step never awaits anything else). `bank` is the teaching view's
/// snapshot of each class's memory bank (few-shot runs; a few hundred bytes).
async fn post_step(on_step: &js_sys::Function, e: &StepEvent<'_>, started: f64) -> Result<bool, String> {
    let js = |e: JsError| format!("progress message: {:?}", JsValue::from(e));
    let message = js_sys::Object::new();
    set(&message, "step", e.step.into()).map_err(js)?;
    set(&message, "total", e.total.into()).map_err(js)?;
    set(&message, "slice", e.slice.into()).map_err(js)?;
    set(&message, "reverse", e.reverse.into()).map_err(js)?;
    set(&message, "elapsedMs", (js_sys::Date::now() - started).into()).map_err(js)?;
    set(&message, "labels", js_sys::Uint8Array::from(e.labels).into()).map_err(js)?;
    if let Some(bank) = e.bank {
        set(&message, "bank", to_js(bank).map_err(js)?).map_err(js)?;
    }
    let go_on = on_step.call1(&JsValue::NULL, &message).map_err(|e| format!("progress callback: {e:?}"))?;
    let go_on = wasm_bindgen_futures::JsFuture::from(js_sys::Promise::resolve(&go_on))
        .await
        .map_err(|e| format!("progress callback: {e:?}"))?;
    Ok(go_on.as_bool() != Some(false))
}
