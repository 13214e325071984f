//! The last finished run as the files `memseg segment` writes: `labels.nii.gz`, `report.json`, `<slice>.png`.

use wasm_bindgen::prelude::*;

use super::state::{self, FinishedRun};
use super::{js_err, set};
use crate::imaging::{self, labels};

fn finished<T>(f: impl FnOnce(&FinishedRun) -> Result<T, String>) -> Result<T, JsError> {
    state::with(|s| s.finished.as_ref().map(f)).ok_or_else(|| JsError::new("run a segmentation first"))?.map_err(js_err)
}

/// The last run's labels as a NIfTI label volume (`.nii.gz` bytes) on the input's grid and affine.
#[wasm_bindgen]
pub fn export_nifti() -> Result<Vec<u8>, JsError> {
    finished(|f| imaging::nifti::write_nifti_labels(&f.labels.concat(), &f.volume.volume, true))
}

/// The last run's report, as `memseg segment` writes `report.json`.
#[wasm_bindgen]
pub fn export_report() -> Result<String, JsError> {
    finished(|f| serde_json::to_string_pretty(&f.report).map_err(|e| e.to_string()))
}

/// The last run's slice `z` as `memseg segment` writes `<slice>.png`: 0/255 for one class, the label
/// values for several. Returns `{name, png}`.
#[wasm_bindgen]
pub fn export_slice_png(z: usize) -> Result<JsValue, JsError> {
    let (name, png) = finished(|f| {
        let v = &f.volume.volume;
        let slice = f.labels.get(z).ok_or_else(|| format!("slice {z} is out of range"))?;
        Ok((format!("{}.png", v.slice_names[z]), labels::encode_png(v.width, v.height, slice, f.classes.len() == 1)?))
    })?;
    let out = js_sys::Object::new();
    set(&out, "name", name.into())?;
    set(&out, "png", js_sys::Uint8Array::from(png.as_slice()).into())?;
    Ok(out.into())
}

/// A label map as an 8-bit grey PNG (e.g. a drawn mask, for `memseg segment --mask`).
#[wasm_bindgen]
pub fn label_png(width: usize, height: usize, labels: Vec<u8>) -> Result<Vec<u8>, JsError> {
    labels::encode_png(width, height, &labels, false).map_err(js_err)
}
