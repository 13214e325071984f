//! Corrections after a run (`crate::session::Correctable`): the worker keeps the last propagation with every
//! memory; a click on a slice it tracked gives the corrected mask at once (`correct_slice`), and the next
//! "Run" tracks again from the corrected slices only ([`resume`]) when nothing else changed since the run.
//! Anything else (a painted mask, an option, the volume or the model changed) runs from the start, the
//! corrections replayed round by round, which gives the same result (the core's `job::resume` is tested to
//! equal it).

use std::hash::{DefaultHasher, Hash, Hasher};

use wasm_bindgen::prelude::*;

use super::prompts::mask_js;
use super::state::{self, FinishedRun, LoadedModel};
use super::{js_err, set, to_js};
use crate::job::{Corrections, DrawnMask};
use crate::session::slice_prompt::{SlicePrompt, at_slice_size};
use crate::session::{Correctable, Support, read_f32};

/// The most memory a kept run may hold for corrections: beyond it (long volumes, many classes, 1024 px) the
/// run releases its memories as it goes and corrections need a run from the start.
pub(crate) const CORRECTION_MEMORY_BYTES: usize = 160 << 20;

/// A finished propagation kept for corrections, and what it was run from.
pub(crate) struct KeptRun {
    pub(crate) corrections: Corrections,
    /// [`inputs_key`] of the run's inputs, the corrections of the round now open left out.
    key: u64,
}

/// What a run's inputs hash to, leaving out the prompts of round `open` and later (the corrections that
/// may be added to it): two runs with the same key differ by those corrections only.
pub(crate) fn inputs_key(options: &impl serde::Serialize, prompts: &[SlicePrompt], open: usize, drawn: &[DrawnMask], supports: &[Support]) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_string(options).unwrap_or_default().hash(&mut h);
    serde_json::to_string(&prompts.iter().filter(|p| p.round < open).collect::<Vec<_>>()).unwrap_or_default().hash(&mut h);
    for d in drawn {
        (d.slice, d.labels.as_raw()).hash(&mut h);
    }
    for s in supports {
        (&s.name, s.image.as_raw(), s.labels.as_raw()).hash(&mut h);
    }
    h.finish()
}

/// Whether a run over `slices` slices and `classes` classes may keep its memories for corrections, and why
/// not when it may not.
pub(crate) fn may_keep(model: &LoadedModel, slices: usize, classes: usize) -> Result<(), String> {
    let bytes = Correctable::memory_bytes(model.config.memory_encoder.out_dim, model.config.image_size) * slices * classes;
    if bytes > CORRECTION_MEMORY_BYTES {
        return Err(format!(
            "corrections after this run would keep {} MiB of memories ({slices} slices, {classes} classes at {} px; at most {} MiB): \
             click before running instead, or segment fewer slices",
            bytes >> 20,
            model.config.image_size,
            CORRECTION_MEMORY_BYTES >> 20
        ));
    }
    Ok(())
}

/// Keeps a finished run's corrections state, with the key of its inputs.
pub(crate) fn keep(corrections: Option<Corrections>, options: &impl serde::Serialize, prompts: &[SlicePrompt], drawn: &[DrawnMask], supports: &[Support]) {
    let kept = corrections.map(|c| {
        let key = inputs_key(options, prompts, c.correctable.round(), drawn, supports);
        KeptRun { corrections: c, key }
    });
    state::with_mut(|s| s.kept = kept);
}

/// The kept run, if the run asked for now is it with corrections of the open round added, and the finished
/// run's label maps to update. Puts the corrections asked for into it (the page's feedback has applied
/// most of them already: those are not recomputed).
pub(crate) fn resumable(options: &impl serde::Serialize, prompts: &[SlicePrompt], drawn: &[DrawnMask], supports: &[Support]) -> Result<Option<(Corrections, FinishedRun)>, String> {
    let Some(mut kept) = state::with_mut(|s| s.kept.take()) else { return Ok(None) };
    let open = kept.corrections.correctable.round();
    let asked: Vec<&SlicePrompt> = prompts.iter().filter(|p| p.round == open).collect();
    if asked.is_empty() || prompts.iter().any(|p| p.round > open) || inputs_key(options, prompts, open, drawn, supports) != kept.key {
        return Ok(None);
    }
    let Some(finished) = state::with_mut(|s| s.finished.take()) else { return Ok(None) };
    let c = &mut kept.corrections.correctable;
    let pending = c.pending();
    for p in &pending {
        if !asked.iter().any(|a| (a.slice, a.class) == (p.slice, p.class)) {
            c.discard(p.slice, p.class);
        }
    }
    for a in asked {
        if !pending.contains(a) {
            c.correct(a)?;
        }
    }
    Ok(Some((kept.corrections, finished)))
}

/// What the page sends for a correction's feedback.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CorrectionRequest {
    prompt: SlicePrompt,
}

/// A correction on a slice the last run tracked (`{prompt}`, the slice's whole correction for one class,
/// of the round the run opened): `{mask: Uint8Array (0/1, the slice's size), iou}`, computed on the run's
/// memory as the next run will (one decoder run for a click added to the last one).
#[wasm_bindgen]
pub async fn correct_slice(request: JsValue) -> Result<JsValue, JsError> {
    let request: CorrectionRequest = serde_wasm_bindgen::from_value(request).map_err(|e| JsError::new(&format!("correction: {e}")))?;
    let volume = state::loaded_volume()?;
    let (w, h) = (volume.volume.width, volume.volume.height);
    let mut kept = state::with_mut(|s| s.kept.take()).ok_or_else(|| JsError::new(NO_RUN))?;
    let out = kept.corrections.correctable.correct(&request.prompt);
    state::with_mut(|s| s.kept = Some(kept));
    let out = out.map_err(js_err)?;
    let result = js_sys::Object::new();
    set(&result, "mask", mask_js(at_slice_size(out.low_res_masks, w, h)).await?.into())?;
    set(&result, "iou", f64::from(read_f32(out.iou_score).await.map_err(js_err)?[0]).into())?;
    Ok(result.into())
}

const NO_RUN: &str = "corrections are made on a run's result, and there is none to correct now (a reload, \
    another volume or model, or a change since the run): press Run, then click";

/// The round the kept run takes corrections of, if the worker keeps one.
#[wasm_bindgen]
pub fn correction_round() -> Option<usize> {
    state::with(|s| s.kept.as_ref().map(|k| k.corrections.correctable.round()))
}

/// Drops the correction of `slice` for `class` (the page took it back): the slice is as the run tracked it.
#[wasm_bindgen]
pub fn discard_correction(slice: usize, class: u8) {
    state::with_mut(|s| {
        if let Some(kept) = s.kept.as_mut() {
            kept.corrections.correctable.discard(slice, class);
        }
    });
}

/// The round the page's clicks go to now and whether the worker holds the run to correct:
/// `{round, correctable, why}` (`why`: why the last run cannot take corrections, if it cannot).
pub(crate) fn status(why: Option<String>) -> Result<JsValue, JsError> {
    let round = correction_round();
    to_js(&serde_json::json!({"round": round, "correctable": round.is_some(), "why": why}))
}
