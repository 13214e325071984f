//! Encoding slices ahead on the other cores (the CPU fallback): the browser runs this WebAssembly on one
//! thread per worker, so the page starts helper workers (`www/encoder-pool.js`), each with its own instance
//! of the core and the same weights. While the main worker tracks slice after slice, a helper encodes the
//! slices the run will reach next and hands the features to the main worker's feature cache
//! ([`crate::session::feature_cache`]); the run then finds them there instead of encoding them itself.
//!
//! Three calls: the main worker gives a slice as the model will see it ([`model_input_slice`]: the run's own
//! intensity mapping), a helper encodes it ([`encode_for_cache`]: the features and their cache key, computed
//! where the pixels are), the main worker keeps the result ([`cache_features`]). A helper's features are the
//! ones the main worker would compute: same code, same weights, same single-threaded arithmetic.

use std::rc::Rc;

use image::RgbImage;
use wasm_bindgen::prelude::*;

use super::state::{self, loaded_model, loaded_volume};
use super::{js_err, set, tensor_to_js};
use crate::imaging::intensity;
use crate::sam2::sam2_base::ImageFeatures;
use crate::session::feature_cache::Key;
use crate::session::preprocess;

/// Slice `z` of the loaded volume as 8-bit RGB, `{width, height, rgb: Uint8Array}`, under the intensity mapping
/// a run with the same `intensity` option uses; `null` when the loaded model's cache already holds its
/// features. The resolved mapping (percentiles need a pass over the volume) is kept for the next slices.
#[wasm_bindgen]
pub fn model_input_slice(z: usize, intensity: String) -> Result<JsValue, JsError> {
    let slice = mapped_slice(z, intensity)?;
    let model = loaded_model()?;
    if model.features.borrow().contains(&Key::of(&slice, model.model.image_size())) {
        return Ok(JsValue::NULL);
    }
    let out = js_sys::Object::new();
    set(&out, "width", slice.width().into())?;
    set(&out, "height", slice.height().into())?;
    set(&out, "rgb", js_sys::Uint8Array::from(slice.as_raw().as_slice()).into())?;
    Ok(out.into())
}

/// Slice `z` of the loaded volume as the model sees it in a run with the `intensity` option (the run maps
/// the whole volume the same way: same pixels, same cache keys). The resolved mapping is kept.
pub(super) fn mapped_slice(z: usize, intensity: String) -> Result<RgbImage, JsError> {
    let loaded = loaded_volume()?;
    let kept = state::with(|s| s.model_inputs.clone()).filter(|(option, volume, _)| *option == intensity && Rc::ptr_eq(volume, &loaded.volume));
    let info = match kept {
        Some((_, _, info)) => info,
        None => {
            let mapping = intensity::choose(&loaded.volume, Some(&intensity)).map_err(js_err)?;
            let info = intensity::resolve(&loaded.volume, &mapping).map_err(js_err)?;
            state::with_mut(|s| s.model_inputs = Some((intensity, loaded.volume.clone(), info.clone())));
            info
        }
    };
    intensity::slice_to_rgb8(&loaded.volume, z, &info).map_err(js_err)
}

/// Encodes an 8-bit RGB image with the loaded model: `{key, levels: [{shape, data: Float32Array}]}`.
#[wasm_bindgen]
pub async fn encode_for_cache(width: u32, height: u32, rgb: Vec<u8>) -> Result<JsValue, JsError> {
    let model = loaded_model()?.model;
    let image = RgbImage::from_raw(width, height, rgb).ok_or_else(|| JsError::new(&format!("the pixels are not {width}x{height} RGB")))?;
    let key = Key::of(&image, model.image_size());
    let features = model.forward_image(preprocess(&model, &image));
    let levels = js_sys::Array::new();
    for (i, level) in features.backbone_fpn.into_iter().enumerate() {
        levels.push(&tensor_to_js(&format!("level {i}"), level).await?.into());
    }
    let out = js_sys::Object::new();
    set(&out, "key", key.to_string().into())?;
    set(&out, "levels", levels.into())?;
    Ok(out.into())
}

/// Keeps features from [`encode_for_cache`] in the loaded model's feature cache. Returns whether they were kept:
/// not there yet, and the cache's budget had room. Features for another input size are not kept (`false`); levels
/// of the wrong shape, count or length are an error. The helpers must have the main worker's weights: the page
/// drops what a helper encoded before the model last changed (`www/encoder-pool.js`).
#[wasm_bindgen]
pub fn cache_features(key: String, levels: js_sys::Array) -> Result<bool, JsError> {
    let key: Key = key.parse().map_err(js_err)?;
    let loaded = loaded_model()?;
    if key.image_size() != loaded.model.image_size() {
        return Ok(false);
    }
    let mut numbers = Vec::new();
    for (i, level) in levels.iter().enumerate() {
        let field = |name: &str| js_sys::Reflect::get(&level, &name.into()).map_err(|_| JsError::new(&format!("feature level {i}: no {name}")));
        let shape: Vec<usize> = serde_wasm_bindgen::from_value(field("shape")?).map_err(|e| JsError::new(&format!("feature level {i}: {e}")))?;
        let data = field("data")?;
        if !data.is_instance_of::<js_sys::Float32Array>() {
            return Err(JsError::new(&format!("feature level {i}: data is not a Float32Array")));
        }
        numbers.push((shape, js_sys::Float32Array::from(data).to_vec()));
    }
    let features = ImageFeatures::from_levels(&loaded.model, numbers).map_err(js_err)?;
    Ok(loaded.features.borrow_mut().insert_ahead(key, &features))
}
