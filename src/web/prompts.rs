//! Clicks and boxes on the shown slice (the page's prompt tool): SAM's feedback at once, computed by the core
//! exactly as the run will treat that slice ([`crate::session::slice_prompt`]). The first prompt on a slice
//! encodes it into the loaded model's feature cache, where the run finds it again; a click added to the last
//! prompt runs the prompt encoder and mask decoder once, from the state the last one left.

use image::GrayImage;
use wasm_bindgen::prelude::*;

use super::encode_ahead::mapped_slice;
use super::state::{self, loaded_model, loaded_volume};
use super::{js_err, set};
use crate::session::read_f32;
use crate::session::slice_prompt::{SlicePrompt, at_slice_size, preview_after};

/// What the page sends: the slice's prompt for one class and the run's intensity option.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PromptRequest {
    prompt: SlicePrompt,
    intensity: String,
}

/// The feedback for one slice's prompt (`{prompt, intensity}`; `painted`: the slice's painted label map, if
/// any, whose mask of the prompt's class goes in first): `{mask: Uint8Array (0/1, the slice's size), iou,
/// encoded, candidates}`. `candidates` (a first single click: SAM's ambiguity) is `[{mask, iou}]`, the chosen
/// `mask` among them, or null.
#[wasm_bindgen]
pub async fn prompt_slice(request: JsValue, painted: Option<Vec<u8>>) -> Result<JsValue, JsError> {
    let request: PromptRequest = serde_wasm_bindgen::from_value(request).map_err(|e| JsError::new(&format!("prompt: {e}")))?;
    let loaded = loaded_volume()?;
    let (w, h) = (loaded.volume.width, loaded.volume.height);
    let painted = match painted {
        Some(labels) => Some(GrayImage::from_raw(w as u32, h as u32, labels).ok_or_else(|| JsError::new(&format!("the painted mask is not {w}x{h}")))?),
        None => None,
    };
    // Refuses a slice beyond the volume.
    let image = mapped_slice(request.prompt.slice, request.intensity)?;
    let model = loaded_model()?;
    // The next click on this slice continues from this one's state (one decoder run, not a replay).
    let last = state::with_mut(|s| s.last_prompt.take());
    let (out, encoded, memo) =
        preview_after(&model.model, Some(&model.features), &image, painted.as_ref(), &request.prompt, last.as_ref()).map_err(js_err)?;
    state::with_mut(|s| s.last_prompt = Some(memo));
    let result = js_sys::Object::new();
    set(&result, "mask", mask_js(at_slice_size(out.low_res_masks, w, h)).await?.into())?;
    set(&result, "iou", f64::from(read_f32(out.iou_score).await.map_err(js_err)?[0]).into())?;
    set(&result, "encoded", encoded.into())?;
    let candidates = match out.candidates {
        None => JsValue::NULL,
        Some(c) => {
            let ious = read_f32(c.ious).await.map_err(js_err)?;
            let masks = read_f32(at_slice_size(c.masks, w, h)).await.map_err(js_err)?;
            let list = js_sys::Array::new();
            for (iou, mask) in ious.iter().zip(masks.chunks(w * h)) {
                let entry = js_sys::Object::new();
                set(&entry, "mask", js_sys::Uint8Array::from(&binary(mask)[..]).into())?;
                set(&entry, "iou", f64::from(*iou).into())?;
                list.push(&entry);
            }
            list.into()
        }
    };
    set(&result, "candidates", candidates)?;
    Ok(result.into())
}

/// Logits read back as a 0/1 mask (`binary`).
pub(super) async fn mask_js(logits: burn::tensor::Tensor<4>) -> Result<js_sys::Uint8Array, JsError> {
    Ok(js_sys::Uint8Array::from(&binary(&read_f32(logits).await.map_err(js_err)?)[..]))
}

/// Logits > 0 as 1, else 0 (the run's label maps take the same rule).
fn binary(logits: &[f32]) -> Vec<u8> {
    logits.iter().map(|&v| u8::from(v > 0.0)).collect()
}
