//! `memseg segment`: a volume (image files, a DICOM series or a NIfTI file) segmented from masks drawn on some
//! of its slices and/or external supports, through the few-shot [`session`](crate::session).
//!
//! Native only (files in, files out). Outputs go to a staging folder renamed to `--out` only when everything
//! is written, so a failed run never leaves a folder that looks complete:
//! - `<slice stem>.png` per slice at the slice's own size: 0/255 for one class, the label values for several;
//! - `<slice stem>.logits.npy` with `--save-logits`: the low-resolution logits, float32 `[S/4, S/4]` for one
//!   class, `[classes, S/4, S/4]` for several;
//! - `labels.nii.gz`: the label volume on the input's voxel grid and affine (overlays the input in any viewer);
//! - `report.json`: inputs, intensity mapping, settings, and per class and slice the area, the volume in mL
//!   (from the spacing), and Dice / IoU when a ground truth is given.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::GrayImage;

use crate::imaging::{self, Volume, intensity};
use crate::progress::Progress;
/// The report types live in [`crate::report`] (shared with the browser); re-exported for `eval`.
pub use crate::report::{ClassReport, InputInfo, Overlap, SegmentReport, SliceReport, class_reports};
use crate::sam2::Sam2Base;
use crate::session::{MemoryOptions, Mode, Session, SliceOutput, Support, label_map, read_f32};

/// Most distinct non-zero values a mask may hold: more means it is not a mask (a photo, a JPEG-compressed
/// mask) rather than a label map.
pub const MAX_CLASSES: usize = imaging::labels::MAX_MASK_CLASSES;

pub struct SegmentRequest {
    pub weights: PathBuf,
    /// Image files in order, directories of images (sorted by name), a DICOM series directory, or a NIfTI file.
    pub frames: Vec<PathBuf>,
    /// (slice index, mask file) drawn on slices of the query.
    pub masks: Vec<(usize, PathBuf)>,
    /// (image, mask) pairs from anywhere: the external supports.
    pub supports: Vec<(PathBuf, PathBuf)>,
    pub mode: Mode,
    pub memory: MemoryOptions,
    /// Label values to segment; default: every value found in the masks.
    pub classes: Option<Vec<u8>>,
    /// An intensity preset or `window:LOW,HIGH` / `percentile:LOW,HIGH`; default by modality.
    pub intensity: Option<String>,
    /// Sets the modality when the file does not say (NIfTI, images): `ct` or `mr`.
    pub modality: Option<imaging::Modality>,
    /// A ground-truth label volume (NIfTI) or a folder of per-slice label PNGs, for Dice and IoU.
    pub truth: Option<PathBuf>,
    pub out: PathBuf,
    pub save_logits: bool,
    /// Replace `--out` if it exists.
    pub overwrite: bool,
    pub overrides: Vec<String>,
}

/// A mask file as a label map of `frame`'s size: grey 8- or 16-bit (values must fit 0..=255), at most
/// [`MAX_CLASSES`] non-zero values, not empty.
pub fn read_mask(path: &Path, width: usize, height: usize) -> Result<GrayImage, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let name = path.display().to_string();
    // The checks are shared with the browser's mask upload.
    let labels = imaging::labels::mask_from_bytes(&bytes, &name, width, height)?;
    GrayImage::from_raw(width as u32, height as u32, labels).ok_or_else(|| format!("{name}: the mask's pixel count does not match its size"))
}

/// The non-zero values of a label map, sorted.
pub fn classes_in(labels: &GrayImage) -> Vec<u8> {
    distinct_labels(labels.as_raw())
}

pub use crate::imaging::labels::distinct_labels;

/// What `--frames` names: one path (a NIfTI file, a DICOM series folder, a folder of images, one image), or
/// several image files / folders of images stacked in the order given.
pub fn load_inputs(inputs: &[PathBuf]) -> Result<Volume, String> {
    match inputs {
        [] => Err("no input given".into()),
        [one] => imaging::read_path(one),
        many => {
            let mut files = Vec::new();
            for path in many {
                if path.is_dir() {
                    files.extend(imaging::read_dir_files(path)?);
                } else {
                    files.push(imaging::read_input_file(path)?);
                }
            }
            imaging::read_files(&files)
        }
    }
}

/// The query volume from the `--frames` inputs, with the modality override.
pub fn load_volume(inputs: &[PathBuf], modality: Option<imaging::Modality>) -> Result<Volume, String> {
    let mut volume = load_inputs(inputs)?;
    if let Some(m) = modality {
        volume.modality = m;
    }
    Ok(volume)
}

/// The model of a checkpoint (official `.pt` or memseg's compact file), with Hydra-style overrides.
pub fn load_model(weights: &Path, overrides: &[String], device: &burn::tensor::Device) -> Result<Sam2Base, String> {
    let weights_file = crate::sam2::weights::load_weights_file(weights)?;
    let (model, ..) = weights_file.into_model(overrides, device).map_err(|e| format!("{}: {e}", weights.display()))?;
    Ok(model)
}

/// What running a session over a volume gives: labels `[depth][h*w]` at the slices' size, the low-resolution
/// logits per slice (`[classes * (S/4)^2]`, when kept), and the bookkeeping.
pub struct VolumeResult {
    pub labels: Vec<Vec<u8>>,
    pub logits: Vec<Option<Vec<f32>>>,
    pub order: Vec<usize>,
    pub frames_encoded: usize,
}

/// Runs `session` to the end, turning each slice's logits into a label map as soon as it comes.
pub fn run_session(
    model: &Sam2Base,
    session: &Session,
    mode: Mode,
    memory: MemoryOptions,
    size: (usize, usize),
    keep_logits: bool,
    progress: &Progress,
) -> Result<VolumeResult, String> {
    let (width, height) = size;
    let n = session.num_slices();
    let mut run = pollster::block_on(session.start(model, mode, memory))?;
    progress.start(run.total_steps(), "segmenting slices");
    let mut result = VolumeResult { labels: vec![Vec::new(); n], logits: vec![None; n], order: Vec::new(), frames_encoded: 0 };
    while let Some(output) = pollster::block_on(run.step()) {
        let output: SliceOutput = output?;
        let values = pollster::block_on(read_f32(output.at_size(height, width)))?;
        let per_class: Vec<Vec<f32>> = values.chunks(width * height).map(<[f32]>::to_vec).collect();
        result.labels[output.slice] = label_map(&per_class, &session.classes);
        if keep_logits {
            result.logits[output.slice] = Some(pollster::block_on(read_f32(burn::tensor::Tensor::cat(output.logits, 1)))?);
        }
        result.order.push(output.slice);
        progress.inc();
    }
    progress.finish();
    if let Some(missing) = result.labels.iter().position(Vec::is_empty) {
        return Err(format!("slice {missing} was not reached by the propagation"));
    }
    result.frames_encoded = run.frames_encoded();
    Ok(result)
}

pub fn run(req: &SegmentRequest, device: &burn::tensor::Device) -> Result<SegmentReport, String> {
    let started = Instant::now();
    let volume = load_volume(&req.frames, req.modality)?;
    let mapping = match &req.intensity {
        Some(name) => intensity::preset(name)?,
        None => intensity::default_for(&volume),
    };
    let (slices, intensity_info) = intensity::to_rgb8_with_info(&volume, &mapping)?;
    let (w, h) = (volume.width, volume.height);

    let drawn: Vec<(usize, GrayImage)> =
        req.masks.iter().map(|(i, p)| read_mask(p, w, h).map(|m| (*i, m))).collect::<Result<_, _>>()?;
    let supports = read_supports(&req.supports, &mapping)?;
    if drawn.is_empty() && supports.is_empty() {
        return Err("give at least one mask (--mask INDEX=MASK.png) or support (--support IMAGE=MASK.png)".into());
    }
    let classes = match &req.classes {
        Some(c) => c.clone(),
        None => all_classes(drawn.iter().map(|(_, m)| m).chain(supports.iter().map(|s| &s.labels))),
    };
    let truth = req.truth.as_deref().map(|t| read_label_volume(t, &volume)).transpose()?;
    check_out(&req.out, req.overwrite)?;

    let mut session = Session::new(slices, classes.clone())?;
    for ((index, path), (_, labels)) in req.masks.iter().zip(drawn) {
        session.add_query_mask(*index, &path.display().to_string(), labels)?;
    }
    let support_names: Vec<String> = supports.iter().map(|s| s.name.clone()).collect();
    for support in supports {
        session.add_support(support)?;
    }
    let model = load_model(&req.weights, &req.overrides, device)?;
    let result = run_session(&model, &session, req.mode, req.memory, (w, h), req.save_logits, &Progress::new())?;

    let report = SegmentReport {
        complete: true,
        input: InputInfo::of(&volume, intensity_info),
        weights: req.weights.display().to_string(),
        mode: req.mode,
        memory: req.memory,
        classes: classes.clone(),
        supports: support_names,
        drawn_slices: req.masks.iter().map(|(i, _)| *i).collect(),
        order: result.order.clone(),
        frames_encoded: result.frames_encoded,
        seconds: started.elapsed().as_secs_f64(),
        per_class: class_reports(&result.labels, truth.as_deref(), &classes, &volume),
        outputs: Vec::new(),
    };
    write_outputs(req, &volume, &result, report, model.image_size() / 4)
}

/// External supports. An 8-bit image is taken as it is (the picture the user saw and drew on, already
/// windowed); a DICOM / NIfTI / 16-bit slice gets the query's intensity mapping, so both look alike to the model.
fn read_supports(pairs: &[(PathBuf, PathBuf)], mapping: &intensity::Intensity) -> Result<Vec<Support>, String> {
    let mut supports = Vec::new();
    for (image_path, mask_path) in pairs {
        let volume = load_inputs(std::slice::from_ref(image_path))?;
        if volume.depth != 1 {
            return Err(format!("{}: a support is one slice, this holds {}", image_path.display(), volume.depth));
        }
        let own = intensity::for_support(&volume, mapping);
        let (mut images, _) = intensity::to_rgb8_with_info(&volume, &own)?;
        let labels = read_mask(mask_path, volume.width, volume.height)?;
        supports.push(Support { name: image_path.display().to_string(), image: images.remove(0), labels });
    }
    Ok(supports)
}

fn all_classes<'a>(maps: impl Iterator<Item = &'a GrayImage>) -> Vec<u8> {
    let mut classes: Vec<u8> = maps.flat_map(classes_in).collect();
    classes.sort_unstable();
    classes.dedup();
    classes
}

/// A label volume (NIfTI, or a folder of label PNGs one per slice) on `like`'s grid, as u8 slices.
pub fn read_label_volume(path: &Path, like: &Volume) -> Result<Vec<Vec<u8>>, String> {
    let labels = load_inputs(&[path.to_path_buf()])?;
    let (l, v) = (&labels, like);
    if (l.width, l.height, l.depth, l.channels) != (v.width, v.height, v.depth, 1) {
        let (lw, lh, ld, lc) = (l.width, l.height, l.depth, l.channels);
        let (vw, vh, vd) = (v.width, v.height, v.depth);
        return Err(format!("{}: the labels are {lw}x{lh}x{ld} ({lc} channels) but the image is {vw}x{vh}x{vd}", path.display()));
    }
    let n = labels.width * labels.height;
    Ok(labels.data.chunks(n).map(|s| s.iter().map(|&v| v.round().clamp(0.0, 255.0) as u8).collect()).collect())
}

/// The staging folder next to `out`; `out` itself must not exist unless `overwrite`.
fn staging(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    out.with_file_name(format!(".{name}.partial"))
}

/// Checked before any work, so a long run does not end on a refusal.
pub(crate) fn check_out(out: &Path, overwrite: bool) -> Result<(), String> {
    if out.exists() && !overwrite {
        return Err(format!("{} exists; choose another --out or pass --overwrite", out.display()));
    }
    Ok(())
}

/// Writes everything into the staging folder, then renames it to `--out`; on failure the staging folder is
/// removed, so nothing that looks like a result is left behind.
fn write_outputs(req: &SegmentRequest, volume: &Volume, result: &VolumeResult, report: SegmentReport, low_res: usize) -> Result<SegmentReport, String> {
    write_staged_outputs(&req.out, |stage| write_staged(stage, volume, result, report, low_res))
}

/// Runs `write` on a fresh staging folder next to `out`, then renames the folder to `out` (replacing it:
/// [`check_out`] has refused an existing `out` without `--overwrite`). Shared with `segment --adapter`.
pub(crate) fn write_staged_outputs<T>(out: &Path, write: impl FnOnce(&Path) -> Result<T, String>) -> Result<T, String> {
    let stage = staging(out);
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(|e| format!("cannot clear {}: {e}", stage.display()))?;
    }
    std::fs::create_dir_all(&stage).map_err(|e| format!("cannot create {}: {e}", stage.display()))?;
    let written = write(&stage).and_then(|report| {
        if out.exists() {
            std::fs::remove_dir_all(out).map_err(|e| format!("cannot replace {}: {e}", out.display()))?;
        }
        std::fs::rename(&stage, out).map_err(|e| format!("cannot move {} to {}: {e}", stage.display(), out.display()))?;
        Ok(report)
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&stage);
    }
    written
}

/// `<stem>.png` in `dir`: the label values, or 0/255 when `binary` (one class). Returns the file name.
pub(crate) fn write_label_png(dir: &Path, stem: &str, width: usize, height: usize, labels: &[u8], binary: bool) -> Result<String, String> {
    let name = format!("{stem}.png");
    let png = dir.join(&name);
    let pixels = labels.iter().map(|&v| if binary && v > 0 { 255 } else { v }).collect();
    GrayImage::from_raw(width as u32, height as u32, pixels)
        .ok_or_else(|| format!("{name}: the labels do not fill {width}x{height}"))?
        .save(&png)
        .map_err(|e| format!("cannot write {}: {e}", png.display()))?;
    Ok(name)
}

/// `labels.nii.gz` in `dir`: the label volume on `volume`'s grid and affine. Returns the file name.
pub(crate) fn write_labels_nifti(dir: &Path, volume: &Volume, labels: &[Vec<u8>]) -> Result<String, String> {
    let nifti = dir.join("labels.nii.gz");
    let bytes = imaging::nifti::write_nifti_labels(&labels.concat(), volume, true)?;
    std::fs::write(&nifti, bytes).map_err(|e| format!("cannot write {}: {e}", nifti.display()))?;
    Ok("labels.nii.gz".into())
}

fn write_staged(stage: &Path, volume: &Volume, result: &VolumeResult, mut report: SegmentReport, low_res: usize) -> Result<SegmentReport, String> {
    let fail = |p: &Path, e: &dyn std::fmt::Display| format!("cannot write {}: {e}", p.display());
    let binary = report.classes.len() == 1;
    for (z, labels) in result.labels.iter().enumerate() {
        let stem = &volume.slice_names[z];
        report.outputs.push(write_label_png(stage, stem, volume.width, volume.height, labels, binary)?);
        if let Some(logits) = &result.logits[z] {
            let npy = stage.join(format!("{stem}.logits.npy"));
            let classes = report.classes.len() as u64;
            let shape: Vec<u64> =
                if binary { vec![low_res as u64, low_res as u64] } else { vec![classes, low_res as u64, low_res as u64] };
            write_npy(&npy, &shape, logits)?;
            report.outputs.push(format!("{stem}.logits.npy"));
        }
    }
    report.outputs.push(write_labels_nifti(stage, volume, &result.labels)?);
    report.outputs.push("report.json".into());
    let json = stage.join("report.json");
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&json, text).map_err(|e| fail(&json, &e))?;
    Ok(report)
}

/// Float32 NumPy array.
fn write_npy(path: &Path, shape: &[u64], values: &[f32]) -> Result<(), String> {
    use npyz::WriterBuilder;
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let file = std::io::BufWriter::new(std::fs::File::create(path).map_err(fail)?);
    let mut writer = npyz::WriteOptions::new().default_dtype().shape(shape).writer(file).begin_nd().map_err(fail)?;
    writer.extend(values.iter().copied()).map_err(fail)?;
    writer.finish().map_err(fail)
}
