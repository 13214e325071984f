//! `memseg segment`: a volume (image files, a DICOM series or a NIfTI file) segmented by the volume job
//! ([`crate::job`]): few-shot from masks drawn on some of its slices and/or external supports, or prompt-free
//! with an adapter (`--adapter`). This module only turns the command's paths into a job and the job's result
//! into files ([`crate::files`]).
//!
//! Outputs go to a staging folder renamed to `--out` only when everything is written:
//! - `<slice stem>.png` per slice at the slice's own size: 0/255 for one class, the label values for several;
//! - `<slice stem>.logits.npy` with `--save-logits` (few-shot): the low-resolution logits, float32
//!   `[S/4, S/4]` for one class, `[classes, S/4, S/4]` for several;
//! - `labels.nii.gz`: the label volume on the input's voxel grid and affine (overlays the input in any viewer);
//! - `report.json`: inputs, intensity mapping, settings, and per class and slice the area, the volume in mL
//!   (from the spacing), and Dice / IoU when a ground truth is given.
//!
//! Prompt-free inputs that do not form one volume (images of different sizes) are segmented one by one, each
//! its own `<stem>.png`, with an [`ImagesReport`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::files::{self, check_out, write_label_png, write_labels_nifti, write_report, write_staged_outputs};
use crate::imaging::{self, Volume, intensity};
use crate::job::{DrawnMask, Finished, Job, Method, Outcome, Prompts, StepEvent};
use crate::progress::Progress;
use crate::prompt_free::PromptFree;
use crate::report::{PROMPT_FREE_MODE, PromptFreeReport, RunReport, SegmentReport};
use crate::session::slice_prompt::SlicePrompt;
use crate::session::{MemoryOptions, Mode};

/// Most distinct non-zero values a mask may hold (see `imaging::labels`).
pub const MAX_CLASSES: usize = imaging::labels::MAX_MASK_CLASSES;

/// The inputs and outputs both kinds of `memseg segment` share.
pub struct VolumeArgs {
    pub weights: PathBuf,
    /// Image files in order, directories of images (sorted by name), a DICOM series directory, or a NIfTI file.
    pub frames: Vec<PathBuf>,
    /// An intensity preset or `window:LOW,HIGH` / `percentile:LOW,HIGH`; default by modality.
    pub intensity: Option<String>,
    /// Sets the modality when the file does not say (NIfTI, images): `ct` or `mr`.
    pub modality: Option<imaging::Modality>,
    /// How the files are read (the volume of a 4-D NIfTI).
    pub read: imaging::ReadOptions,
    /// A ground-truth label volume (NIfTI) or a folder of per-slice label PNGs, for Dice and IoU.
    pub truth: Option<PathBuf>,
    pub out: PathBuf,
    /// Replace `--out` if it exists.
    pub overwrite: bool,
    pub overrides: Vec<String>,
}

/// Few-shot `memseg segment`.
pub struct SegmentRequest {
    pub volume: VolumeArgs,
    /// (slice index, mask file) drawn on slices of the query.
    pub masks: Vec<(usize, PathBuf)>,
    /// Clicks and boxes on slices of the query.
    pub prompts: Vec<SlicePrompt>,
    /// (image, mask) pairs from anywhere: the external supports.
    pub supports: Vec<(PathBuf, PathBuf)>,
    pub mode: Mode,
    pub memory: MemoryOptions,
    /// Label values to segment; default: every value found in the masks.
    pub classes: Option<Vec<u8>>,
    pub save_logits: bool,
}

/// `memseg segment --adapter`.
pub struct PromptFreeRequest {
    pub volume: VolumeArgs,
    pub adapter: PathBuf,
}

/// A volume read and checked, with what the job needs from the files around it.
struct Prepared {
    volume: Volume,
    mapping: intensity::Intensity,
    truth: Option<Vec<Vec<u8>>>,
}

/// Reads the volume, chooses its mapping, reads the truth and checks `--out`: everything that can be refused
/// before the model is loaded.
fn prepare(args: &VolumeArgs, volume: Volume) -> Result<Prepared, String> {
    let mapping = intensity::choose(&volume, args.intensity.as_deref())?;
    let truth = args.truth.as_deref().map(|t| files::read_label_volume(t, &volume)).transpose()?;
    check_out(&args.out, args.overwrite)?;
    Ok(Prepared { volume, mapping, truth })
}

/// Runs a job to the end with a progress bar (the CLI never cancels).
fn run_job(job: Job, message: &str, started: Instant) -> Result<Finished, String> {
    let progress = Progress::new();
    let mut on_step = async |e: StepEvent<'_>| {
        progress.step(e.step, e.total, message);
        Ok(true)
    };
    let outcome = pollster::block_on(job.run(&mut on_step, || started.elapsed().as_secs_f64()))?;
    progress.finish();
    match outcome {
        Outcome::Done(finished) => Ok(finished),
        Outcome::Cancelled { .. } => Err("the run stopped before the end".into()),
    }
}

pub fn run(req: &SegmentRequest, device: &burn::tensor::Device) -> Result<SegmentReport, String> {
    let started = Instant::now();
    let args = &req.volume;
    let p = prepare(args, files::load_volume(&args.frames, args.modality, args.read)?)?;
    let (w, h) = (p.volume.width, p.volume.height);
    let drawn = req
        .masks
        .iter()
        .map(|(slice, path)| Ok(DrawnMask { slice: *slice, name: path.display().to_string(), labels: files::read_mask(path, w, h)? }))
        .collect::<Result<Vec<_>, String>>()?;
    let supports = files::read_supports(&req.supports, &p.mapping)?;
    if drawn.is_empty() && supports.is_empty() && req.prompts.is_empty() {
        return Err("give at least one mask (--mask INDEX=MASK.png), support (--support IMAGE=MASK.png), or clicks or a box (--points, --box)".into());
    }
    let (model, _) = files::load_model(&args.weights, &args.overrides, device)?;
    let prompts = Prompts {
        drawn,
        clicks: req.prompts.clone(),
        drawn_as_supports: false,
        supports,
        classes: req.classes.clone(),
        mode: req.mode,
        memory: req.memory,
        keep_logits: req.save_logits,
        // One run per invocation: nothing to reuse.
        feature_cache: None,
        keep_for_corrections: false,
    };
    let job = Job {
        volume: &p.volume,
        mapping: p.mapping,
        truth: p.truth.as_deref(),
        weights: args.weights.display().to_string(),
        method: Method::FewShot { model: &model, prompts },
    };
    let finished = run_job(job, "segmenting slices", started)?;
    let RunReport::FewShot(report) = write_outputs(&args.out, &p.volume, finished, model.image_size() / 4)? else {
        unreachable!("a few-shot job gives a few-shot report")
    };
    Ok(report)
}

/// The report of a prompt-free volume, or of images of different sizes.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum PromptFreeOutcome {
    Volume(PromptFreeReport),
    Images(ImagesReport),
}

pub fn run_prompt_free(req: &PromptFreeRequest, device: &burn::tensor::Device) -> Result<PromptFreeOutcome, String> {
    let started = Instant::now();
    let args = &req.volume;
    let volume = match files::load_volume(&args.frames, args.modality, args.read) {
        Ok(volume) => volume,
        Err(e) => return run_images(req, e, started, device).map(PromptFreeOutcome::Images),
    };
    let p = prepare(args, volume)?;
    let pf = load_adapter(req, device)?;
    let job = Job {
        volume: &p.volume,
        mapping: p.mapping,
        truth: p.truth.as_deref(),
        weights: args.weights.display().to_string(),
        method: Method::PromptFree(&pf),
    };
    let finished = run_job(job, "prompt-free segmentation", started)?;
    let RunReport::PromptFree(report) = write_outputs(&args.out, &p.volume, finished, 0)? else {
        unreachable!("a prompt-free job gives a prompt-free report")
    };
    Ok(PromptFreeOutcome::Volume(report))
}

/// Loads the model and folds the adapter into it.
fn load_adapter(req: &PromptFreeRequest, device: &burn::tensor::Device) -> Result<PromptFree, String> {
    let (model, config) = files::load_model(&req.volume.weights, &req.volume.overrides, device)?;
    let bytes = std::fs::read(&req.adapter).map_err(|e| format!("cannot read {}: {e}", req.adapter.display()))?;
    PromptFree::load(model, &config, &bytes, &req.adapter.display().to_string())
}

/// Writes a finished job into `out` (see the module's list); `low_res` is the logits' side.
fn write_outputs(out: &Path, volume: &Volume, finished: Finished, low_res: usize) -> Result<RunReport, String> {
    let Finished { labels, logits, mut report, .. } = finished;
    let binary = report.classes().len() == 1;
    let classes = report.classes().len() as u64;
    write_staged_outputs(out, |stage| {
        let mut outputs = Vec::new();
        for (z, slice) in labels.iter().enumerate() {
            let stem = &volume.slice_names[z];
            outputs.push(write_label_png(stage, stem, volume.width, volume.height, slice, binary)?);
            if let Some(values) = &logits[z] {
                let side = low_res as u64;
                let shape = if binary { vec![side, side] } else { vec![classes, side, side] };
                files::write_npy(&stage.join(format!("{stem}.logits.npy")), &shape, values)?;
                outputs.push(format!("{stem}.logits.npy"));
            }
        }
        outputs.push(write_labels_nifti(stage, volume, &labels)?);
        outputs.push("report.json".into());
        *report.outputs_mut() = outputs;
        write_report(stage, &report)?;
        Ok(report)
    })
}

/// Images of different sizes (e.g. photographs): each its own label map `<stem>.png`.
#[derive(Debug, Serialize)]
pub struct ImagesReport {
    pub complete: bool,
    pub weights: String,
    pub adapter: String,
    pub mode: &'static str,
    pub classes: Vec<u8>,
    pub images: Vec<ImageEntry>,
    pub seconds: f64,
    pub outputs: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ImageEntry {
    pub source: String,
    pub width: usize,
    pub height: usize,
    /// Pixels of each class, in the order of `classes`.
    pub area_pixels: Vec<usize>,
}

/// The inputs did not form one volume (`why`): if they are all images, each is segmented on its own
/// (images of different sizes); otherwise `why` is the error.
fn run_images(req: &PromptFreeRequest, why: String, started: Instant, device: &burn::tensor::Device) -> Result<ImagesReport, String> {
    let args = &req.volume;
    let paths = list_images(&args.frames).ok_or(why)?;
    let images: Vec<Volume> = paths.iter().map(|f| imaging::read_path(f)).collect::<Result<_, _>>()?;
    let mappings = images.iter().map(|i| intensity::choose(i, args.intensity.as_deref())).collect::<Result<Vec<_>, _>>()?;
    if args.truth.is_some() {
        return Err("--truth needs the frames to form one volume (images of one size)".into());
    }
    check_out(&args.out, args.overwrite)?;
    let pf = load_adapter(req, device)?;
    let classes = pf.foreground();
    let progress = Progress::new();
    progress.start(images.len(), "prompt-free segmentation");
    let mut labels = Vec::new();
    let mut entries = Vec::new();
    for ((path, image), mapping) in paths.iter().zip(&images).zip(&mappings) {
        let map = pollster::block_on(pf.segment(&intensity::to_rgb8(image, mapping)?.remove(0)))?;
        let area_pixels = classes.iter().map(|&c| map.iter().filter(|&&v| v == c).count()).collect();
        entries.push(ImageEntry { source: path.display().to_string(), width: image.width, height: image.height, area_pixels });
        labels.push(map);
        progress.inc();
    }
    progress.finish();
    let binary = classes.len() == 1;
    let mut report = ImagesReport {
        complete: true,
        weights: args.weights.display().to_string(),
        adapter: pf.name.clone(),
        mode: PROMPT_FREE_MODE,
        classes,
        images: entries,
        seconds: started.elapsed().as_secs_f64(),
        outputs: Vec::new(),
    };
    write_staged_outputs(&args.out, |stage| {
        for (image, map) in images.iter().zip(&labels) {
            report.outputs.push(write_label_png(stage, &image.slice_names[0], image.width, image.height, map, binary)?);
        }
        report.outputs.push("report.json".into());
        write_report(stage, &report)?;
        Ok(report)
    })
}

/// The image files `frames` name (files, or folders of them), or `None` if any is not an image.
fn list_images(frames: &[PathBuf]) -> Option<Vec<PathBuf>> {
    let is_image = |p: &Path| {
        p.extension().and_then(|x| x.to_str()).is_some_and(|x| ["png", "jpg", "jpeg", "tif", "tiff"].contains(&x.to_ascii_lowercase().as_str()))
    };
    let mut out = Vec::new();
    for f in frames {
        if f.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(f).ok()?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
            found.retain(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')));
            found.sort();
            if !found.iter().all(|p| is_image(p)) {
                return None;
            }
            out.extend(found);
        } else if is_image(f) {
            out.push(f.clone());
        } else {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}
