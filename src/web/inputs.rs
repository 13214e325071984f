//! Supports and ground truth from files: a mask uploaded for one slice, a label volume imported for the
//! current volume (as ground truth and/or as masks on chosen slices), and support slices taken from another
//! volume with its labels. The checks live in `imaging::labels`; the intensity rule for supports is the CLI's
//! (`intensity::for_support`), so a support added here segments as `memseg segment --support` does.

use std::rc::{Rc, Weak};

use image::GrayImage;
use wasm_bindgen::prelude::*;

use super::state::{self, LoadedVolume};
use super::{js_err, set, to_js};
use crate::imaging::intensity::{self, Intensity};
use crate::imaging::labels::{self, ClassExtent};
use crate::imaging::phantom::{self, Phantom};
use crate::imaging::{self, InputFile, SourceKind, Volume};
use crate::session::Support;

/// `[{name, bytes: Uint8Array}]` from the page as input files.
pub(crate) fn input_files(files: &js_sys::Array) -> Result<Vec<InputFile>, JsError> {
    let mut inputs = Vec::new();
    for file in files.iter() {
        let field = |key: &str| js_sys::Reflect::get(&file, &key.into()).map_err(|_| JsError::new("bad file entry"));
        let name = field("name")?.as_string().unwrap_or_else(|| "file".into());
        let bytes = js_sys::Uint8Array::new(&field("bytes")?).to_vec();
        inputs.push(InputFile { name, bytes });
    }
    Ok(inputs)
}

fn get(object: &JsValue, key: &str) -> Result<JsValue, JsError> {
    js_sys::Reflect::get(object, &key.into()).map_err(|_| JsError::new(&format!("missing field '{key}'")))
}

// --- A mask for the current slice ------------------------------------------------------------------------

/// A mask file (PNG etc.) for one slice of the current volume -> its label map (`Uint8Array`). A binary
/// 0/255 mask is the `active_class`; any other values are taken as class values (a label map).
#[wasm_bindgen]
pub fn mask_for_slice(bytes: Vec<u8>, name: String, active_class: Option<u8>) -> Result<Vec<u8>, JsError> {
    let loaded = state::loaded_volume()?;
    let v = &loaded.volume;
    let mut labels = labels::mask_from_bytes(&bytes, &name, v.width, v.height).map_err(js_err)?;
    if let (Some(class), [255]) = (active_class, labels::distinct_labels(&labels).as_slice()) {
        labels.iter_mut().filter(|l| **l == 255).for_each(|l| *l = class);
    }
    Ok(labels)
}

// --- A label volume for the current volume ----------------------------------------------------------------

/// Labels read for the loaded volume, waiting for the user to choose their role; tied to that volume.
pub(crate) struct ImportedLabels {
    volume: Weak<LoadedVolume>,
    source: String,
    labels: Rc<Vec<Vec<u8>>>,
}

fn extents_js(source: &str, labels: &[Vec<u8>]) -> Result<JsValue, JsError> {
    let classes: Vec<ClassExtent> = labels::class_extents(labels);
    to_js(&serde_json::json!({ "source": source, "slices": labels.len(), "classes": classes }))
}

/// Reads a label volume (one NIfTI, or one label image per slice) on the current volume's grid and keeps it
/// until the user picks its role. Returns `{source, slices, classes: [{class, first, last, middle, voxels}]}`.
#[wasm_bindgen]
pub fn import_labels(files: js_sys::Array) -> Result<JsValue, JsError> {
    let loaded = state::loaded_volume()?;
    let files = input_files(&files)?;
    let labels = labels::label_volume(&files, &loaded.volume).map_err(js_err)?;
    let source = files.first().map(|f| f.name.clone()).unwrap_or_default();
    let summary = extents_js(&source, &labels)?;
    let imported = ImportedLabels { volume: Rc::downgrade(&loaded), source, labels: Rc::new(labels) };
    state::with_mut(|s| s.imported = Some(imported));
    Ok(summary)
}

/// The imported labels, if they still belong to the loaded volume.
fn imported() -> Result<(Rc<LoadedVolume>, Rc<Vec<Vec<u8>>>, String), JsError> {
    let loaded = state::loaded_volume()?;
    state::with(|s| {
        s.imported
            .as_ref()
            .filter(|i| i.volume.upgrade().is_some_and(|v| Rc::ptr_eq(&v, &loaded)))
            .map(|i| (loaded.clone(), i.labels.clone(), i.source.clone()))
    })
    .ok_or_else(|| JsError::new("import a label volume for this volume first"))
}

/// Slice `z` of the imported labels (to paint it as a mask).
#[wasm_bindgen]
pub fn imported_slice(z: usize) -> Result<Vec<u8>, JsError> {
    let (_, labels, _) = imported()?;
    let n = labels.len();
    labels.get(z).cloned().ok_or_else(|| JsError::new(&format!("slice {} is out of range (1 to {n})", z + 1)))
}

/// Makes the imported labels the current volume's ground truth: the next run's report gets Dice and IoU.
#[wasm_bindgen]
pub fn use_imported_as_truth() -> Result<String, JsError> {
    let (loaded, labels, source) = imported()?;
    let with_truth = Rc::new(LoadedVolume {
        volume: loaded.volume.clone(),
        truth: Some(labels.as_ref().clone()),
        classes: loaded.classes.clone(),
    });
    state::with_mut(|s| {
        // Tie the import to the new `LoadedVolume` too, so it can still be painted from.
        if let Some(i) = &mut s.imported {
            i.volume = Rc::downgrade(&with_truth);
        }
        s.volume = Some(with_truth);
    });
    Ok(source)
}

// --- Supports from another volume ---------------------------------------------------------------------

/// The other volume support slices are taken from, with its labels when given.
pub(crate) struct SupportSource {
    volume: Volume,
    labels: Option<Vec<Vec<u8>>>,
    /// Names of its classes, when it comes with them (the sample).
    names: Vec<(u8, String)>,
}

fn source_meta(source: &SupportSource) -> Result<JsValue, JsError> {
    let v = &source.volume;
    let classes = source.labels.as_deref().map(labels::class_extents).unwrap_or_default();
    let names: Vec<serde_json::Value> = source.names.iter().map(|(value, name)| serde_json::json!({"value": value, "name": name})).collect();
    to_js(&serde_json::json!({
        "source": v.source, "width": v.width, "height": v.height, "slices": v.depth,
        "hasLabels": source.labels.is_some(), "classes": classes, "names": names,
    }))
}

/// Reads another volume (NIfTI, DICOM series, PNG / JPEG / TIFF slices) to take supports from; its labels
/// come separately (`support_source_labels`) or as a mask per slice.
#[wasm_bindgen]
pub fn load_support_volume(files: js_sys::Array) -> Result<JsValue, JsError> {
    let volume = imaging::read_files(&input_files(&files)?).map_err(js_err)?;
    let source = SupportSource { volume, labels: None, names: Vec::new() };
    let meta = source_meta(&source)?;
    state::with_mut(|s| s.support_source = Some(source));
    Ok(meta)
}

/// The sample phantom, with its labels, as the volume to take supports from.
#[wasm_bindgen]
pub fn load_support_sample() -> Result<JsValue, JsError> {
    let Phantom { volume, labels } = phantom::sample();
    let labels = Some(labels.chunks(volume.width * volume.height).map(<[u8]>::to_vec).collect());
    let names = phantom::CLASSES.iter().map(|&(v, n)| (v, n.to_string())).collect();
    let source = SupportSource { volume, labels, names };
    let meta = source_meta(&source)?;
    state::with_mut(|s| s.support_source = Some(source));
    Ok(meta)
}

/// The label volume of the support source, on its grid.
#[wasm_bindgen]
pub fn support_source_labels(files: js_sys::Array) -> Result<JsValue, JsError> {
    let files = input_files(&files)?;
    state::with_mut(|s| {
        let source = s.support_source.as_mut().ok_or_else(|| JsError::new("load the volume to take supports from first"))?;
        source.labels = Some(labels::label_volume(&files, &source.volume).map_err(js_err)?);
        source_meta(source)
    })
}

/// Slice `z` of the support source as a support record for the page to keep (and send to every run):
/// `{name, volume, slice, width, height, channels, kind, bitDepth, values: Float32Array (raw), labels:
/// Uint8Array, classes, rgba: Uint8Array (a preview through the source's own default window)}`. The labels are
/// the source's label volume's slice, or `mask` (bytes of a mask file) when given.
#[wasm_bindgen]
pub fn support_slice(z: usize, mask: Option<Vec<u8>>, mask_name: Option<String>) -> Result<JsValue, JsError> {
    state::with(|s| {
        let source = s.support_source.as_ref().ok_or_else(|| JsError::new("load the volume to take supports from first"))?;
        let v = &source.volume;
        if z >= v.depth {
            return Err(JsError::new(&format!("slice {} is out of range (1 to {})", z + 1, v.depth)));
        }
        let labels = match (mask, &source.labels) {
            (Some(bytes), _) => labels::mask_from_bytes(&bytes, mask_name.as_deref().unwrap_or("mask"), v.width, v.height).map_err(js_err)?,
            (None, Some(all)) => all[z].clone(),
            (None, None) => return Err(JsError::new("give this volume's label volume, or a mask for the slice")),
        };
        let classes = labels::distinct_labels(&labels);
        if classes.is_empty() {
            return Err(JsError::new(&format!("slice {} of {} holds no label: pick a labelled slice", z + 1, v.source)));
        }
        let slice = one_slice(v, z)?;
        let preview = intensity::to_rgb8(&slice, &intensity::default_for(v)).map_err(js_err)?.remove(0);
        let rgba: Vec<u8> = preview.pixels().flat_map(|p| [p[0], p[1], p[2], 255]).collect();
        let out = js_sys::Object::new();
        let name = format!("{} slice {}", imaging::file_stem(&v.source), z + 1);
        set(&out, "name", name.into())?;
        set(&out, "volume", v.source.clone().into())?;
        set(&out, "slice", z.into())?;
        set(&out, "width", v.width.into())?;
        set(&out, "height", v.height.into())?;
        set(&out, "channels", v.channels.into())?;
        set(&out, "kind", to_js(&v.kind)?)?;
        set(&out, "bitDepth", v.bit_depth.into())?;
        set(&out, "modality", to_js(&v.modality)?)?;
        set(&out, "values", js_sys::Float32Array::from(slice.data.as_slice()).into())?;
        set(&out, "labels", js_sys::Uint8Array::from(labels.as_slice()).into())?;
        set(&out, "classes", to_js(&classes)?)?;
        set(&out, "rgba", js_sys::Uint8Array::from(rgba.as_slice()).into())?;
        Ok(out.into())
    })
}

/// Slice `z` of `v` as a volume of its own, keeping what decides its intensity mapping (kind, bit depth,
/// modality).
fn one_slice(v: &Volume, z: usize) -> Result<Volume, JsError> {
    let mut slice = Volume::new(&v.source, v.kind, [v.width, v.height, 1, v.channels], v.slice(z).to_vec()).map_err(js_err)?;
    (slice.bit_depth, slice.modality, slice.spacing) = (v.bit_depth, v.modality, v.spacing);
    Ok(slice)
}

fn kind_of(name: &str) -> Result<SourceKind, JsError> {
    match name {
        "raster" => Ok(SourceKind::Raster),
        "dicom" => Ok(SourceKind::Dicom),
        "nifti" => Ok(SourceKind::Nifti),
        other => Err(JsError::new(&format!("unknown support image kind '{other}'"))),
    }
}

fn number(record: &JsValue, key: &str) -> Result<usize, JsError> {
    get(record, key)?.as_f64().filter(|n| n.fract() == 0.0 && *n >= 0.0).map(|n| n as usize).ok_or_else(|| JsError::new(&format!("support field '{key}' is not a count")))
}

/// One support record (as `support_slice` made it, perhaps restored from the browser's store) as the
/// session's support, through the query's mapping as `memseg segment --support` does (`intensity::for_support`).
fn support_from_record(record: &JsValue, query: &Intensity) -> Result<Support, JsError> {
    let name = get(record, "name")?.as_string().ok_or_else(|| JsError::new("support without a name"))?;
    let bad = |what: &str| JsError::new(&format!("support {name}: {what}"));
    let (width, height, channels) = (number(record, "width")?, number(record, "height")?, number(record, "channels")?);
    let kind = kind_of(&get(record, "kind")?.as_string().unwrap_or_default())?;
    let values = js_sys::Float32Array::new(&get(record, "values")?).to_vec();
    let labels = js_sys::Uint8Array::new(&get(record, "labels")?).to_vec();
    let mut image = Volume::new(&name, kind, [width, height, 1, channels], values).map_err(js_err)?;
    image.bit_depth = number(record, "bitDepth")?.try_into().map_err(|_| bad("bad bit depth"))?;
    let mapping = intensity::for_support(&image, query);
    let rgb = intensity::to_rgb8(&image, &mapping).map_err(js_err)?.remove(0);
    let labels = GrayImage::from_raw(width as u32, height as u32, labels).ok_or_else(|| bad("the mask does not fill the image"))?;
    Ok(Support { name, image: rgb, labels })
}

/// The page's external supports for a run (`[record]`, see `support_slice`), mapped like the query.
pub(crate) fn external_supports(records: &js_sys::Array, query: &Intensity) -> Result<Vec<Support>, JsError> {
    records.iter().map(|r| support_from_record(&r, query)).collect()
}
