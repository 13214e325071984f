//! JavaScript bindings, used by `www/worker.js`. A thin layer: each export converts arguments, calls the core,
//! and turns errors into `Error` objects with readable messages.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;

mod adapter;
mod bench;
mod diagnostics;
mod inputs;
mod results;

use crate::backend::{self, Compute, Preference};
use crate::imaging::intensity::{self, Intensity, IntensityInfo};
use crate::imaging::phantom::{self, Phantom};
use crate::imaging::{self, Volume};
use crate::report::{InputInfo, SegmentReport, class_reports};
use crate::session::{MemoryOptions, Mode, Placement, Session, Support, label_map, read_f32};
use crate::sam2::Sam2Base;
use crate::sam2::weights::{LoadReport, WeightsFormat, load_weights_bytes};
use crate::selftest;
use burn::tensor::{Tensor, TensorData};
use image::GrayImage;

thread_local! {
    /// The worker's compute device, chosen once by `init_compute`.
    static COMPUTE: RefCell<Option<Compute>> = const { RefCell::new(None) };
}

/// Runs when the module is instantiated: panics go to the console and, as a message, to the page.
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        post_panic_to_page(&info.to_string());
    }));
}

/// Inside a dedicated worker, a panic is also posted as `{type: "panic", message}` so the page can show it:
/// the panic itself surfaces in JavaScript only as an opaque "unreachable" trap.
fn post_panic_to_page(message: &str) {
    let Ok(scope) = js_sys::global().dyn_into::<web_sys::DedicatedWorkerGlobalScope>() else { return };
    let msg = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&msg, &"type".into(), &"panic".into());
    let _ = js_sys::Reflect::set(&msg, &"message".into(), &message.into());
    let _ = scope.post_message(&msg);
}

pub(crate) fn to_js<T: serde::Serialize>(value: &T) -> Result<JsValue, JsError> {
    value.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(|e| JsError::new(&e.to_string()))
}

/// Chooses the device. `preference` is "auto", "wgpu" or "flex"; `webgpu_unavailable` is the page's reason
/// when it found no `navigator.gpu` or no adapter (then wgpu is not tried). Returns what was chosen.
#[wasm_bindgen]
pub async fn init_compute(preference: String, webgpu_unavailable: Option<String>) -> Result<JsValue, JsError> {
    if COMPUTE.with_borrow(|c| c.is_some()) {
        return Err(JsError::new("the compute device is already initialised in this worker"));
    }
    let pref: Preference = preference.parse().map_err(|e: String| JsError::new(&e))?;
    let compute = backend::init_browser(pref, webgpu_unavailable).await.map_err(|e| JsError::new(&e))?;
    let report = to_js(&compute)?;
    COMPUTE.with_borrow_mut(|c| *c = Some(compute));
    Ok(report)
}

fn device() -> Result<burn::tensor::Device, JsError> {
    COMPUTE
        .with_borrow(|c| c.as_ref().map(|c| c.device.clone()))
        .ok_or_else(|| JsError::new("init_compute must be called first"))
}

/// The core's input limits (`imaging::MAX_SIDE`, `MAX_SLICES`, `MAX_VALUES`), so that the page refuses an
/// oversized volume up front (`www/limits.js`) with the same numbers the readers enforce, never a copy of them.
#[wasm_bindgen]
pub fn limits() -> Result<JsValue, JsError> {
    to_js(&serde_json::json!({
        "maxSide": imaging::MAX_SIDE,
        "maxSlices": imaging::MAX_SLICES,
        "maxValues": imaging::MAX_VALUES,
    }))
}

/// Runs the self-test computation on the chosen device.
#[wasm_bindgen]
pub async fn run_selftest() -> Result<JsValue, JsError> {
    let result = selftest::run(&device()?).await.map_err(|e| JsError::new(&e))?;
    to_js(&result)
}

thread_local! {
    /// The SAM2 model loaded by `load_sam2`, on the worker's device, and its file's name. Replaced (and the
    /// previous one dropped) when another model is loaded. A segmentation run works on a clone: Burn modules
    /// share their parameter tensors, so a clone copies no weight, and a model loaded during a run takes the
    /// slot without pulling the running one from under it (it is freed when the run ends).
    static MODEL: RefCell<Option<(Sam2Base, String)>> = const { RefCell::new(None) };
}

/// Loads weights (bytes of the file): an official `.pt` checkpoint, into a SAM2 model built from the tiny
/// config, or compact weights from `memseg convert`, into the model of the config they carry; Meta's
/// Hydra-style `overrides` (e.g. `++model.image_size=512`) apply on top. Returns the load report, the
/// file's format and the model's input size.
#[wasm_bindgen]
pub fn load_sam2(bytes: Vec<u8>, name: String, overrides: Vec<String>) -> Result<JsValue, JsError> {
    #[derive(serde::Serialize)]
    struct Loaded {
        #[serde(flatten)]
        report: LoadReport,
        format: WeightsFormat,
        image_size: usize,
    }
    let device = device()?;
    let weights = load_weights_bytes(bytes, &name).map_err(|e| JsError::new(&e))?;
    let format = weights.format;
    let (model, config, report) = weights.into_model(&overrides, &device).map_err(|e| JsError::new(&e))?;
    MODEL.with_borrow_mut(|m| *m = Some((model, name)));
    adapter::model_loaded(&config);
    to_js(&Loaded { report, format, image_size: config.image_size })
}

pub(crate) fn loaded_model() -> Result<(Sam2Base, String), JsError> {
    MODEL.with_borrow(|m| m.clone()).ok_or_else(|| JsError::new("load a model first"))
}

/// Runs the image encoder (`forward_image`) on a preprocessed `[1, 3, S, S]` input and returns every stage
/// the encoder reports, as `{name: {shape, data: Float32Array}}`: used to check the browser against Meta.
#[wasm_bindgen]
pub async fn encoder_stages(input: Vec<f32>) -> Result<JsValue, JsError> {
    let device = device()?;
    let (model, _) = loaded_model()?;
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
        let shape = tensor.dims().to_vec();
        let data = tensor.into_data_async().await.map_err(|e| JsError::new(&format!("{name}: read-back failed: {e:?}")))?;
        let values = data.try_to_vec::<f32>().map_err(|e| JsError::new(&format!("{name}: {e:?}")))?;
        let entry = js_sys::Object::new();
        js_sys::Reflect::set(&entry, &"shape".into(), &to_js(&shape)?).map_err(|_| JsError::new("reflect"))?;
        js_sys::Reflect::set(&entry, &"data".into(), &js_sys::Float32Array::from(values.as_slice()).into())
            .map_err(|_| JsError::new("reflect"))?;
        js_sys::Reflect::set(&out, &name.into(), &entry).map_err(|_| JsError::new("reflect"))?;
    }
    Ok(out.into())
}

// --- The segmentation app: a volume, its display, a few-shot run, exports ------------------------------------

/// The volume being worked on, with the ground truth when it has one (the sample phantom).
pub(crate) struct Current {
    /// Shared so that a ground truth imported later (`inputs.rs`) makes a new `Current` without a copy.
    pub(crate) volume: Rc<Volume>,
    pub(crate) truth: Option<Vec<Vec<u8>>>,
    /// Label values and names the volume comes with (the sample's structures).
    pub(crate) classes: Vec<(u8, String)>,
}

/// A finished run: what the exports write. The report is kept as JSON so that every kind of run (few-shot,
/// prompt-free) and a run restored from the browser's store (`results.rs`) share it.
pub(crate) struct Finished {
    pub(crate) current: Rc<Current>,
    pub(crate) labels: Vec<Vec<u8>>,
    /// The classes segmented, in the report's order (one class: PNG masks are 0/255).
    pub(crate) classes: Vec<u8>,
    pub(crate) report: serde_json::Value,
}

thread_local! {
    /// Shared with a running segmentation (an `Rc`, so no `RefCell` borrow is held across an await).
    static CURRENT: RefCell<Option<Rc<Current>>> = const { RefCell::new(None) };
    /// The display window last resolved (preset name and numbers): percentiles need a pass over the volume.
    static DISPLAY: RefCell<Option<(String, IntensityInfo)>> = const { RefCell::new(None) };
    pub(crate) static FINISHED: RefCell<Option<Finished>> = const { RefCell::new(None) };
}

pub(crate) fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

pub(crate) fn current() -> Result<Rc<Current>, JsError> {
    CURRENT.with_borrow(|c| c.clone()).ok_or_else(|| JsError::new("load a volume first"))
}

/// `"auto"` (the volume's usual mapping, as `memseg segment` picks it), a preset name, `window:LOW,HIGH` or
/// `percentile:LOW,HIGH`.
pub(crate) fn mapping(volume: &Volume, name: &str) -> Result<Intensity, String> {
    if name == "auto" { Ok(intensity::default_for(volume)) } else { intensity::preset(name) }
}

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

fn set_current(current: Current) -> Result<JsValue, JsError> {
    let v = &current.volume;
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
        has_truth: current.truth.is_some(),
        classes: current.classes.iter().map(|(value, name)| serde_json::json!({"value": value, "name": name})).collect(),
    };
    CURRENT.with_borrow_mut(|c| *c = Some(Rc::new(current)));
    DISPLAY.with_borrow_mut(|d| *d = None);
    FINISHED.with_borrow_mut(|f| *f = None);
    to_js(&meta)
}

/// Reads the user's files (`[{name, bytes: Uint8Array}]`: one NIfTI, a DICOM series, or PNG / JPEG / TIFF
/// slices in order) as the volume to work on; returns its metadata. The previous volume stays on error.
#[wasm_bindgen]
pub fn load_volume(files: js_sys::Array) -> Result<JsValue, JsError> {
    let volume = imaging::read_files(&inputs::input_files(&files)?).map_err(js_err)?;
    set_current(Current { volume: Rc::new(volume), truth: None, classes: Vec::new() })
}

/// The built-in sample: the phantom of `imaging::phantom`, with its ground truth (the report gets Dice).
#[wasm_bindgen]
pub fn load_sample() -> Result<JsValue, JsError> {
    let Phantom { volume, labels } = phantom::sample();
    let truth = labels.chunks(volume.width * volume.height).map(<[u8]>::to_vec).collect();
    let classes = phantom::CLASSES.iter().map(|&(v, n)| (v, n.to_string())).collect();
    set_current(Current { volume: Rc::new(volume), truth: Some(truth), classes })
}

/// The raw values of the volume (`Float32Array`, slice-major, channels interleaved): for the console and
/// the tests, which hand the same volume to the CLI.
#[wasm_bindgen]
pub fn volume_values() -> Result<Vec<f32>, JsError> {
    Ok(current()?.volume.data.clone())
}

/// The ground-truth labels of slice `z`, when the volume has them (the sample).
#[wasm_bindgen]
pub fn truth_slice(z: usize) -> Result<Option<Vec<u8>>, JsError> {
    Ok(current()?.truth.as_ref().and_then(|t| t.get(z).cloned()))
}

/// Slice `z` as RGBA (width × height × 4) through the display window `window` (see [`mapping`]).
#[wasm_bindgen]
pub fn slice_rgba(z: usize, window: String) -> Result<Vec<u8>, JsError> {
    let current = current()?;
    let v = &current.volume;
    let cached = DISPLAY.with_borrow(|d| d.as_ref().filter(|(n, _)| *n == window).map(|(_, i)| i.clone()));
    let info = match cached {
        Some(info) => info,
        None => {
            let info = intensity::resolve(v, &mapping(v, &window).map_err(js_err)?).map_err(js_err)?;
            DISPLAY.with_borrow_mut(|d| *d = Some((window, info.clone())));
            info
        }
    };
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

/// What the page sends to start a run.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RunOptions {
    classes: Vec<u8>,
    /// "propagate" (from the drawn slices), "propagate-middle" (the drawn slices as supports inserted before
    /// the middle slice) or "supports-only".
    mode: String,
    /// The model input's intensity mapping (see [`mapping`]).
    intensity: String,
    max_conditioning: Option<usize>,
    select_supports: Option<usize>,
    #[serde(default)]
    similarity_eviction: bool,
}

/// Reads `[{slice, labels: Uint8Array}]`.
fn drawn_masks(masks: &js_sys::Array, width: usize, height: usize) -> Result<Vec<(usize, GrayImage)>, JsError> {
    let mut out = Vec::new();
    for entry in masks.iter() {
        let field = |key: &str| js_sys::Reflect::get(&entry, &key.into()).map_err(|_| JsError::new("bad mask entry"));
        let slice = field("slice")?.as_f64().ok_or_else(|| JsError::new("a mask without its slice"))? as usize;
        let labels = js_sys::Uint8Array::new(&field("labels")?).to_vec();
        let image = GrayImage::from_raw(width as u32, height as u32, labels)
            .ok_or_else(|| JsError::new(&format!("the mask of slice {slice} is not {width}x{height}")))?;
        out.push((slice, image));
    }
    Ok(out)
}

/// Segments the volume from the masks drawn on its slices (`[{slice, labels}]`, label maps of the slice's
/// size) with the loaded model. After every slice it calls `on_step({step, total, slice, reverse, elapsedMs,
/// labels})` and awaits what it returns: a promise of `true` to go on, `false` to stop. The worker yields to
/// its event loop in that promise, so a cancel message posted meanwhile is seen (on the CPU backend a step
/// never awaits anything else). Returns `{cancelled, steps, total, report}`; a finished run is kept for the
/// exports, a cancelled or failed one leaves nothing to export.
///
/// The run works on a clone of the loaded model (see `MODEL`) and on the volume's `Rc`, so no `RefCell`
/// borrow is held across an await and the worker can serve other calls (slices to display, cancel) meanwhile.
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
    let options: RunOptions = serde_wasm_bindgen::from_value(options).map_err(|e| JsError::new(&format!("run options: {e}")))?;
    // The exports follow the latest run only: a failed or cancelled run leaves nothing to export.
    FINISHED.with_borrow_mut(|f| *f = None);
    let current = current()?;
    let (model, weights) = loaded_model()?;
    let started = js_sys::Date::now();
    let v = &current.volume;
    let (w, h) = (v.width, v.height);
    let mapping = mapping(v, &options.intensity).map_err(js_err)?;
    let (slices, intensity_info) = intensity::to_rgb8_with_info(v, &mapping).map_err(js_err)?;
    let drawn = drawn_masks(&masks, w, h)?;
    // Supports from other volumes (`inputs.rs`), mapped like the query as `memseg segment --support`.
    let external = inputs::external_supports(&supports, &mapping)?;
    if drawn.is_empty() && external.is_empty() {
        return Err(JsError::new("paint a mask on at least one slice (or add a support) first"));
    }
    let memory = MemoryOptions {
        max_conditioning: options.max_conditioning,
        select_supports: options.select_supports,
        similarity_eviction: options.similarity_eviction,
    };
    let mut session = Session::new(slices.clone(), options.classes.clone()).map_err(js_err)?;
    let (mode, as_supports) = match options.mode.as_str() {
        "propagate" => (Mode::Propagate(Placement::Middle), false),
        "propagate-middle" => (Mode::Propagate(Placement::Middle), true),
        "supports-only" => (Mode::SupportsOnly, true),
        other => return Err(JsError::new(&format!("unknown mode '{other}'"))),
    };
    let mut support_names = Vec::new();
    let mut drawn_slices = Vec::new();
    for (slice, labels) in drawn {
        let name = format!("slice {slice} ({})", v.slice_names.get(slice).map_or("?", String::as_str));
        if as_supports {
            let image = slices.get(slice).cloned().ok_or_else(|| JsError::new(&format!("slice {slice} is out of range")))?;
            session.add_support(Support { name: name.clone(), image, labels }).map_err(js_err)?;
            support_names.push(name);
        } else {
            session.add_query_mask(slice, &name, labels).map_err(js_err)?;
            drawn_slices.push(slice);
        }
    }
    for support in external {
        support_names.push(support.name.clone());
        session.add_support(support).map_err(js_err)?;
    }
    let mut run = session.start(&model, mode, memory).await.map_err(js_err)?;
    let total = run.total_steps();
    let mut labels = vec![Vec::new(); v.depth];
    let mut order = Vec::new();
    while let Some(output) = run.step().await {
        let output = output.map_err(js_err)?;
        let values = read_f32(output.at_size(h, w)).await.map_err(js_err)?;
        let per_class: Vec<Vec<f32>> = values.chunks(w * h).map(<[f32]>::to_vec).collect();
        let map = label_map(&per_class, &options.classes);
        order.push(output.slice);
        let step = StepMessage {
            step: order.len(),
            total,
            slice: output.slice,
            reverse: output.reverse,
            started,
            labels: &map,
            // The teaching view: each class's memory bank and attention at this step (a few hundred bytes).
            bank: Some(to_js(&output.bank)?),
        };
        let go_on = post_step(&on_step, step).await?;
        labels[output.slice] = map;
        if !go_on {
            return to_js(&serde_json::json!({"cancelled": true, "steps": order.len(), "total": total}));
        }
    }
    if let Some(missing) = labels.iter().position(Vec::is_empty) {
        return Err(JsError::new(&format!("slice {missing} was not reached by the propagation")));
    }
    let report = SegmentReport {
        complete: true,
        input: InputInfo::of(v, intensity_info),
        weights,
        mode,
        memory,
        classes: options.classes.clone(),
        supports: support_names,
        drawn_slices,
        order,
        frames_encoded: run.frames_encoded(),
        seconds: (js_sys::Date::now() - started) / 1000.0,
        per_class: class_reports(&labels, current.truth.as_deref(), &options.classes, v),
        outputs: vec!["labels.nii.gz".into(), "report.json".into()],
    };
    let summary = to_js(&serde_json::json!({"cancelled": false, "steps": report.order.len(), "total": total, "report": &report}))?;
    let report = serde_json::to_value(&report).map_err(js_err)?;
    FINISHED.with_borrow_mut(|f| *f = Some(Finished { current: current.clone(), labels, classes: options.classes, report }));
    Ok(summary)
}

/// One slice's progress, as the page's `onProgress` receives it.
pub(crate) struct StepMessage<'a> {
    pub(crate) step: usize,
    pub(crate) total: usize,
    pub(crate) slice: usize,
    pub(crate) reverse: bool,
    /// `Date.now()` when the run started: the message carries the time elapsed.
    pub(crate) started: f64,
    pub(crate) labels: &'a [u8],
    /// The teaching view's data (few-shot runs only).
    pub(crate) bank: Option<JsValue>,
}

/// Calls `on_step({step, total, slice, reverse, elapsedMs, labels[, bank]})` and awaits what it returns:
/// `true` to go on, `false` to stop. The worker yields to its event loop in that promise, so a cancel posted
/// meanwhile is seen (on the CPU backend a step never awaits anything else).
pub(crate) async fn post_step(on_step: &js_sys::Function, m: StepMessage<'_>) -> Result<bool, JsError> {
    let message = js_sys::Object::new();
    let set = |k: &str, value: JsValue| js_sys::Reflect::set(&message, &k.into(), &value).map(|_| ()).map_err(|_| JsError::new("reflect"));
    set("step", m.step.into())?;
    set("total", m.total.into())?;
    set("slice", m.slice.into())?;
    set("reverse", m.reverse.into())?;
    set("elapsedMs", (js_sys::Date::now() - m.started).into())?;
    set("labels", js_sys::Uint8Array::from(m.labels).into())?;
    if let Some(bank) = m.bank {
        set("bank", bank)?;
    }
    let go_on = on_step.call1(&JsValue::NULL, &message).map_err(|e| JsError::new(&format!("progress callback: {e:?}")))?;
    let go_on = wasm_bindgen_futures::JsFuture::from(js_sys::Promise::resolve(&go_on))
        .await
        .map_err(|e| JsError::new(&format!("progress callback: {e:?}")))?;
    Ok(go_on.as_bool() != Some(false))
}

fn finished<T>(f: impl FnOnce(&Finished) -> Result<T, String>) -> Result<T, JsError> {
    FINISHED.with_borrow(|done| done.as_ref().map(f)).ok_or_else(|| JsError::new("run a segmentation first"))?.map_err(js_err)
}

/// The last run's labels as a NIfTI label volume (`.nii.gz` bytes) on the input's grid and affine.
#[wasm_bindgen]
pub fn export_nifti() -> Result<Vec<u8>, JsError> {
    finished(|f| imaging::nifti::write_nifti_labels(&f.labels.concat(), &f.current.volume, true))
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
        let v = &f.current.volume;
        let labels = f.labels.get(z).ok_or_else(|| format!("slice {z} is out of range"))?;
        let binary = f.classes.len() == 1;
        let pixels = labels.iter().map(|&l| if binary && l > 0 { 255 } else { l }).collect();
        Ok((format!("{}.png", v.slice_names[z]), encode_png(v.width, v.height, pixels)?))
    })?;
    let out = js_sys::Object::new();
    js_sys::Reflect::set(&out, &"name".into(), &name.into()).map_err(|_| JsError::new("reflect"))?;
    js_sys::Reflect::set(&out, &"png".into(), &js_sys::Uint8Array::from(png.as_slice()).into()).map_err(|_| JsError::new("reflect"))?;
    Ok(out.into())
}

/// A label map as an 8-bit grey PNG (e.g. a drawn mask, for `memseg segment --mask`).
#[wasm_bindgen]
pub fn label_png(width: usize, height: usize, labels: Vec<u8>) -> Result<Vec<u8>, JsError> {
    encode_png(width, height, labels).map_err(js_err)
}

fn encode_png(width: usize, height: usize, pixels: Vec<u8>) -> Result<Vec<u8>, String> {
    let image = GrayImage::from_raw(width as u32, height as u32, pixels).ok_or("the labels do not fill the image")?;
    let mut png = std::io::Cursor::new(Vec::new());
    image.write_to(&mut png, image::ImageFormat::Png).map_err(|e| format!("PNG encoding failed: {e}"))?;
    Ok(png.into_inner())
}
