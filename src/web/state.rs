//! The worker's one state: what the page has loaded and what the last run made, kept between calls.
//!
//! One `thread_local` (the worker has one thread) holds a [`WebState`]; [`with`] and [`with_mut`] lend it for
//! the length of a closure, so a borrow can never be held across an `await` (a run awaits between slices
//! while the page calls in for slices to display or to cancel). What a run needs for its whole length it takes
//! as an `Rc` or a clone: the model (Burn modules share their parameter tensors, so a clone copies no weight),
//! the volume, the folded adapter. Loading another model or volume meanwhile replaces the slot without pulling
//! anything from under the run.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;

use super::inputs::{ImportedLabels, SupportSource};
use crate::backend::Compute;
use crate::imaging::Volume;
use crate::imaging::intensity::IntensityInfo;
use crate::prompt_free::PromptFree;
use crate::sam2::{Sam2Base, Sam2Config};
use crate::session::feature_cache::SharedFeatureCache;
use crate::session::slice_prompt::PromptMemo;

#[derive(Default)]
pub(crate) struct WebState {
    /// The compute device, chosen once by `init_compute`.
    pub(crate) compute: Option<Compute>,
    pub(crate) model: Option<LoadedModel>,
    /// The LW-Adapter folded into a clone of the model (`prompt_free.rs`); dropped when the model changes.
    pub(crate) adapted: Option<Rc<AdaptedModel>>,
    pub(crate) volume: Option<Rc<LoadedVolume>>,
    /// The display window last resolved (preset name and numbers): percentiles need a pass over the volume.
    pub(crate) display: Option<(String, IntensityInfo)>,
    /// The last finished run: what the exports write.
    pub(crate) finished: Option<FinishedRun>,
    /// A label volume read for the loaded volume, waiting for the user to choose its role (`inputs.rs`).
    pub(crate) imported: Option<ImportedLabels>,
    /// Another volume to take support slices from (`inputs.rs`).
    pub(crate) support_source: Option<SupportSource>,
    /// The model input's mapping resolved on the loaded volume for an intensity option, for the helpers that
    /// encode slices ahead (`encode_ahead.rs`).
    pub(crate) model_inputs: Option<(String, Rc<Volume>, IntensityInfo)>,
    /// What the last click's feedback left, so that the next click on that slice continues from it
    /// (`prompts.rs`); goes with the model.
    pub(crate) last_prompt: Option<PromptMemo>,
    /// The last propagation, kept for corrections (`corrections.rs`); goes with the model and the volume.
    pub(crate) kept: Option<super::corrections::KeptRun>,
}

/// The SAM2 model loaded by `load_sam2`, the config it was built from and its file's name.
#[derive(Clone)]
pub(crate) struct LoadedModel {
    pub(crate) model: Sam2Base,
    pub(crate) config: Sam2Config,
    pub(crate) name: String,
    /// This model's encoder features of slices already seen: a re-run (one slice corrected, a class added)
    /// encodes only what is not there. Goes with the model.
    pub(crate) features: SharedFeatureCache,
}

/// A prompt-free model and the weights file it was built on.
pub(crate) struct AdaptedModel {
    pub(crate) prompt_free: PromptFree,
    pub(crate) weights: String,
}

/// The volume being worked on, with its ground truth when it has one (the sample, or imported labels).
pub(crate) struct LoadedVolume {
    /// Shared so that a ground truth imported later makes a new `LoadedVolume` without a copy.
    pub(crate) volume: Rc<Volume>,
    pub(crate) truth: Option<Vec<Vec<u8>>>,
    /// Label values and names the volume comes with (the sample's structures).
    pub(crate) classes: Vec<(u8, String)>,
}

/// A finished run: what the exports write. The report is kept as JSON so that every kind of run (few-shot,
/// prompt-free) and a run restored from the browser's store (`results.rs`) share it.
pub(crate) struct FinishedRun {
    pub(crate) volume: Rc<LoadedVolume>,
    pub(crate) labels: Vec<Vec<u8>>,
    /// The classes segmented, in the report's order (one class: PNG masks are 0/255).
    pub(crate) classes: Vec<u8>,
    pub(crate) report: serde_json::Value,
}

thread_local! {
    static STATE: RefCell<WebState> = RefCell::new(WebState::default());
}

pub(crate) fn with<T>(f: impl FnOnce(&WebState) -> T) -> T {
    STATE.with_borrow(f)
}

pub(crate) fn with_mut<T>(f: impl FnOnce(&mut WebState) -> T) -> T {
    STATE.with_borrow_mut(f)
}

/// The compute device; an error before `init_compute`.
pub(crate) fn device() -> Result<burn::tensor::Device, JsError> {
    with(|s| s.compute.as_ref().map(|c| c.device.clone())).ok_or_else(|| JsError::new("init_compute must be called first"))
}

/// The loaded model (a clone that shares its weights); an error before `load_sam2`.
pub(crate) fn loaded_model() -> Result<LoadedModel, JsError> {
    with(|s| s.model.clone()).ok_or_else(|| JsError::new("load a model first"))
}

/// The loaded volume; an error before `load_volume` / `load_sample`.
pub(crate) fn loaded_volume() -> Result<Rc<LoadedVolume>, JsError> {
    with(|s| s.volume.clone()).ok_or_else(|| JsError::new("load a volume first"))
}
