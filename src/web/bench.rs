//! The timing hook of the bench page (`www/bench.html`): one `forward_image` of the loaded model, with every
//! output read back to JavaScript memory, so that the page's clock covers the same work as onnxruntime-web's
//! `session.run` on the exported encoder (`bench/export_onnx.py`: the same three `backbone_fpn` levels).

use burn::tensor::{Tensor, TensorData};
use wasm_bindgen::prelude::*;

use super::{device, loaded_model, to_js};

/// Runs the loaded model's image encoder on a preprocessed `[1, 3, S, S]` input (S = the model's size) and
/// returns `{shapes, vision_features}`: the shape of every `backbone_fpn` level and the values of the last
/// one (`vision_features`), which the page compares with onnxruntime-web's output on the same weights.
#[wasm_bindgen]
pub async fn bench_encode(input: Vec<f32>) -> Result<JsValue, JsError> {
    let device = device()?;
    let (model, _) = loaded_model()?;
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
    let set = |key: &str, value: JsValue| {
        js_sys::Reflect::set(&out, &key.into(), &value).map_err(|_| JsError::new("could not build the result object"))
    };
    set("shapes", to_js(&shapes)?)?;
    set("vision_features", js_sys::Float32Array::from(last.as_slice()).into())?;
    Ok(out.into())
}
