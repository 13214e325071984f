//! The volume being worked on: read from the user's files or made (the sample), shown slice by slice through a
//! display window, its raw values and ground truth for the tests and the console.

use std::rc::Rc;

use wasm_bindgen::prelude::*;

use super::state::{self, LoadedVolume};
use super::{inputs, js_err, to_js};
use crate::imaging::intensity::{self, IntensityInfo};
use crate::imaging::phantom::{self, Phantom};
use crate::imaging::{self, Volume};

#[derive(serde::Serialize)]
struct VolumeMeta {
    source: String,
    kind: imaging::SourceKind,
    width: usize,
    height: usize,
    slices: usize,
    channels: usize,
    spacing_mm: [f64; 3],
    modality: imaging::Modality,
    bit_depth: u8,
    slice_names: Vec<String>,
    /// The mapping "auto" resolves to.
    auto_intensity: IntensityInfo,
    has_truth: bool,
    /// Classes the volume comes with: `{value, name}`.
    classes: Vec<serde_json::Value>,
}

/// Makes `loaded` the volume to work on (forgetting the display window and the last run); returns its metadata.
fn set_loaded(loaded: LoadedVolume) -> Result<JsValue, JsError> {
    let v = &loaded.volume;
    let meta = VolumeMeta {
        source: v.source.clone(),
        kind: v.kind,
        width: v.width,
        height: v.height,
        slices: v.depth,
        channels: v.channels,
        spacing_mm: v.spacing,
        modality: v.modality,
        bit_depth: v.bit_depth,
        slice_names: v.slice_names.clone(),
        auto_intensity: intensity::resolve(v, &intensity::default_for(v)).map_err(js_err)?,
        has_truth: loaded.truth.is_some(),
        classes: loaded.classes.iter().map(|(value, name)| serde_json::json!({"value": value, "name": name})).collect(),
    };
    state::with_mut(|s| {
        s.volume = Some(Rc::new(loaded));
        s.model_inputs = None;
        s.display = None;
        s.finished = None;
        s.kept = None;
    });
    to_js(&meta)
}

/// Reads the user's files (`[{name, bytes: Uint8Array}]`: one NIfTI, a DICOM series, or PNG / JPEG / TIFF
/// slices in order) as the volume to work on; returns its metadata. `volume` picks one volume of a 4-D NIfTI
/// file (0-based). The previous volume stays on error.
#[wasm_bindgen]
pub fn load_volume(files: js_sys::Array, volume: Option<usize>) -> Result<JsValue, JsError> {
    let options = imaging::ReadOptions { volume };
    let volume = imaging::read_files_with(&inputs::input_files(&files)?, options).map_err(js_err)?;
    set_loaded(LoadedVolume { volume: Rc::new(volume), truth: None, classes: Vec::new() })
}

/// The built-in sample: the phantom of `imaging::phantom`, with its ground truth (the report gets Dice).
#[wasm_bindgen]
pub fn load_sample() -> Result<JsValue, JsError> {
    let Phantom { volume, labels } = phantom::sample();
    let truth = labels.chunks(volume.width * volume.height).map(<[u8]>::to_vec).collect();
    let classes = phantom::CLASSES.iter().map(|&(v, n)| (v, n.to_string())).collect();
    set_loaded(LoadedVolume { volume: Rc::new(volume), truth: Some(truth), classes })
}

/// The raw values of the volume (`Float32Array`, slice-major, channels interleaved): for the console and
/// the tests, which hand the same volume to the CLI.
#[wasm_bindgen]
pub fn volume_values() -> Result<Vec<f32>, JsError> {
    Ok(state::loaded_volume()?.volume.data.clone())
}

/// The ground-truth labels of slice `z`, when the volume has them (the sample).
#[wasm_bindgen]
pub fn truth_slice(z: usize) -> Result<Option<Vec<u8>>, JsError> {
    Ok(state::loaded_volume()?.truth.as_ref().and_then(|t| t.get(z).cloned()))
}

/// The display window `window` of `v` (a name as `intensity::choose` takes it), resolved once per name.
fn display_window(v: &Volume, window: String) -> Result<IntensityInfo, JsError> {
    if let Some(info) = state::with(|s| s.display.as_ref().filter(|(n, _)| *n == window).map(|(_, i)| i.clone())) {
        return Ok(info);
    }
    let info = intensity::resolve(v, &intensity::choose(v, Some(&window)).map_err(js_err)?).map_err(js_err)?;
    state::with_mut(|s| s.display = Some((window, info.clone())));
    Ok(info)
}

/// Slice `z` as RGBA (width × height × 4) through the display window `window` ("auto", a preset name,
/// `window:LOW,HIGH` or `percentile:LOW,HIGH`).
#[wasm_bindgen]
pub fn slice_rgba(z: usize, window: String) -> Result<Vec<u8>, JsError> {
    let loaded = state::loaded_volume()?;
    let v = &loaded.volume;
    let info = display_window(v, window)?;
    let values = v.slice(z);
    if values.is_empty() {
        return Err(JsError::new(&format!("slice {z} is out of range ({} slices)", v.depth)));
    }
    let scale = if info.high > info.low { 255.0 / (info.high - info.low) } else { 0.0 };
    let to_u8 = |x: f32| ((x - info.low) * scale).round().clamp(0.0, 255.0) as u8;
    let mut rgba = Vec::with_capacity(v.width * v.height * 4);
    for pixel in values.chunks(v.channels) {
        match pixel {
            [g] => rgba.extend([to_u8(*g), to_u8(*g), to_u8(*g), 255]),
            [r, g, b] => rgba.extend([to_u8(*r), to_u8(*g), to_u8(*b), 255]),
            _ => return Err(JsError::new("unsupported channel count")),
        }
    }
    Ok(rgba)
}
