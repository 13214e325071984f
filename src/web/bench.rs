//! The image encoder alone, for the bench page and the parity tests: `bench_encode` is the bench page's timing
//! hook (`www/bench.html`): one `forward_image` of the loaded model, with every output read back to JavaScript
//! memory, so that the page's clock covers the same work as onnxruntime-web's `session.run` on the exported
//! encoder (`bench/export_onnx.py`: the same three `backbone_fpn` levels); `encoder_stages` returns every
//! stage, to check the browser against Meta's code.

use burn::tensor::{Tensor, TensorData};
use wasm_bindgen::prelude::*;

use super::state::{device, loaded_model};
use super::{set, tensor_to_js, to_js};

/// Runs the loaded model's image encoder on a preprocessed `[1, 3, S, S]` input (S = the model's size) and
/// returns `{shapes, vision_features}`: the shape of every `backbone_fpn` level and the values of the last
/// one (`vision_features`), which the page compares with onnxruntime-web's output on the same weights.
#[wasm_bindgen]
pub async fn bench_encode(input: Vec<f32>) -> Result<JsValue, JsError> {
    let device = device()?;
    let model = loaded_model()?.model;
    let side = model.image_size();
    if input.len() != 3 * side * side {
        return Err(JsError::new(&format!(
            "the input has {} values; the loaded model takes [1, 3, {side}, {side}] = {}",
            input.len(),
            3 * side * side
        )));
    }
    let x = Tensor::<4>::from_data(TensorData::new(input, [1, 3, side, side]), &device);
    let levels = model.forward_image(x).backbone_fpn;
    let mut shapes = Vec::with_capacity(levels.len());
    let mut last = Vec::new();
    // Every level is read back (not only the last), as onnxruntime-web hands back every output.
    for (i, level) in levels.into_iter().enumerate() {
        shapes.push(level.dims().to_vec());
        let data = level.into_data_async().await.map_err(|e| JsError::new(&format!("level {i}: read-back failed: {e:?}")))?;
        last = data.try_into_vec::<f32>().map_err(|e| JsError::new(&format!("level {i}: {e:?}")))?;
    }
    let out = js_sys::Object::new();
    set(&out, "shapes", to_js(&shapes)?)?;
    set(&out, "vision_features", js_sys::Float32Array::from(last.as_slice()).into())?;
    Ok(out.into())
}

/// Runs the image encoder (`forward_image`) on a preprocessed `[1, 3, S, S]` input and returns every stage
/// the encoder reports, as `{name: {shape, data: Float32Array}}`: used to check the browser against Meta.
#[wasm_bindgen]
pub async fn encoder_stages(input: Vec<f32>) -> Result<JsValue, JsError> {
    let device = device()?;
    let model = loaded_model()?.model;
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
        set(&out, &name, tensor_to_js(&name, tensor).await?.into())?;
    }
    Ok(out.into())
}
