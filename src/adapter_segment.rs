//! Prompt-free segmentation with a trained adapter file (`sam2::adapter`, `docs/adapters.md`): no masks, a
//! label map for every slice from one encoder and one decoder pass. Kept apart from `segment.rs` (the few-shot
//! path); shared by `memseg segment --adapter` and the browser (`web/adapter.rs`), so that both produce the
//! same label maps from the same 8-bit slices.
//!
//! Each slice (already mapped to 8 bits, as for the few-shot path) is resized bilinearly to its size rounded up
//! to a multiple of 32 (Hiera's total stride; the PEG makes any such size and aspect ratio valid), encoded once
//! by the folded encoder, decoded by the class tokens, and its label map (argmax of the logits upsampled to
//! the rounded size, then nearest back to the slice's size) holds the class values (0 = background).

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use serde::Serialize;

use crate::report::{ClassReport, InputInfo};
use crate::sam2::adapter::{self, AdapterSet};
use crate::sam2::transforms::{IMAGENET_MEAN, IMAGENET_STD};
use crate::sam2::{Sam2Base, Sam2Config};

/// A SAM2 model with an adapter file's LW-Adapters folded into its encoder (plus the PEG), and the file's
/// class tokens. Built from a clone of the loaded model: Burn modules share their parameter tensors, so only
/// the folded `qkv` / `mlp.layers.0` weights are new memory.
pub struct PromptFree {
    pub model: Sam2Base,
    pub set: AdapterSet,
    /// The adapter file's name, for messages and the report.
    pub name: String,
}

impl PromptFree {
    /// Reads the adapter file (`name` is used in messages), checks it against `config` (the config `model`
    /// was built from) and folds it: inference then costs the plain encoder plus the PEG.
    pub fn load(mut model: Sam2Base, config: &Sam2Config, bytes: &[u8], name: &str) -> Result<Self, String> {
        let set = AdapterSet::from_bytes(bytes, name, &mut model, config)?;
        model.image_encoder = adapter::fold_encoder(model.image_encoder);
        Ok(Self { model, set, name: name.to_string() })
    }

    /// The label values segmented (background 0 left out), as the reports list them.
    pub fn foreground(&self) -> Vec<u8> {
        self.set.spec.classes.iter().copied().filter(|&c| c != 0).collect()
    }

    /// The label map of one 8-bit slice (`[h * w]` class values at the slice's own size). Async for the
    /// browser's GPU read-back; natively `pollster::block_on` it.
    pub async fn segment(&self, image: &RgbImage) -> Result<Vec<u8>, String> {
        let (w0, h0) = image.dimensions();
        if w0 == 0 || h0 == 0 {
            return Err("an empty slice (0 pixels) cannot be segmented".into());
        }
        let (input, [h, w]) = model_input(image, &self.model.device());
        let labels = self.set.label_indices(self.set.logits(&self.model, input), [h, w]);
        let data = labels.into_data_async().await.map_err(|e| format!("reading the label map from the device failed: {e:?}"))?;
        let indices = data.convert::<i64>().try_into_vec::<i64>().map_err(|e| format!("{e:?}"))?;
        let classes = &self.set.spec.classes;
        let values: Vec<u8> = indices.iter().map(|&i| classes.get(i as usize).copied().unwrap_or(0)).collect();
        if [w, h] == [w0 as usize, h0 as usize] {
            return Ok(values);
        }
        let map = image::GrayImage::from_raw(w as u32, h as u32, values).ok_or("label map size mismatch")?;
        Ok(image::imageops::resize(&map, w0, h0, image::imageops::FilterType::Nearest).into_raw())
    }
}

/// The model input `[1, 3, H, W]` (ImageNet-normalised, as SAM2's transforms and `memseg train`) at the
/// slice's size rounded up to multiples of 32, and that size.
pub fn model_input(image: &RgbImage, device: &Device) -> (Tensor<4>, [usize; 2]) {
    let (w0, h0) = image.dimensions();
    let (h, w) = ((h0 as usize).next_multiple_of(32), (w0 as usize).next_multiple_of(32));
    let resized;
    let pixels = if [w, h] == [w0 as usize, h0 as usize] {
        image
    } else {
        resized = image::imageops::resize(image, w as u32, h as u32, image::imageops::FilterType::Triangle);
        &resized
    };
    let mut planar = vec![0f32; 3 * h * w];
    for (i, px) in pixels.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            planar[c * h * w + i] = (px[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    (Tensor::from_data(TensorData::new(planar, [1, 3, h, w]), device), [h, w])
}

/// `report.json` of a prompt-free run (the CLI's and the browser's export): the few-shot report's inputs,
/// classes and per-class areas / volumes / Dice, with the adapter in place of supports and memory options.
#[derive(Debug, Serialize)]
pub struct PromptFreeReport {
    /// Written last: a report without it (or no report) means the run did not finish.
    pub complete: bool,
    pub input: InputInfo,
    pub weights: String,
    pub adapter: String,
    /// Always `"prompt_free"`: tells this report from a few-shot one.
    pub mode: &'static str,
    /// Label values segmented (background left out).
    pub classes: Vec<u8>,
    /// Slices in the order they were produced (each once).
    pub order: Vec<usize>,
    /// Image-encoder runs: one per slice.
    pub frames_encoded: usize,
    pub seconds: f64,
    pub per_class: Vec<ClassReport>,
    pub outputs: Vec<String>,
}

pub const PROMPT_FREE_MODE: &str = "prompt_free";

#[cfg(not(target_family = "wasm"))]
pub use native::{AdapterOutcome, AdapterSegmentRequest, ImageEntry, ImagesReport, run};

/// `memseg segment --adapter`: files in, files out.
#[cfg(not(target_family = "wasm"))]
mod native {
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    use serde::Serialize;

    use super::{PROMPT_FREE_MODE, PromptFree, PromptFreeReport};
    use crate::imaging::{self, Volume, intensity};
    use crate::progress::Progress;
    use crate::report::{InputInfo, class_reports};
    use crate::segment::{self, check_out, write_label_png, write_labels_nifti, write_staged_outputs};

    /// What `memseg segment --adapter` was given.
    pub struct AdapterSegmentRequest {
        pub weights: PathBuf,
        pub adapter: PathBuf,
        /// As for the few-shot `segment`: images in order, folders of images, a DICOM series folder or a NIfTI
        /// file. Images of different sizes are segmented one by one (no common grid: no `labels.nii.gz`).
        pub frames: Vec<PathBuf>,
        pub intensity: Option<String>,
        pub modality: Option<imaging::Modality>,
        /// A ground-truth label volume (NIfTI) or folder of label PNGs, for Dice and IoU (volumes only).
        pub truth: Option<PathBuf>,
        pub out: PathBuf,
        pub overwrite: bool,
        pub overrides: Vec<String>,
    }

    /// The report of a volume, or of images of different sizes.
    #[derive(Debug, Serialize)]
    #[serde(untagged)]
    pub enum AdapterOutcome {
        Volume(PromptFreeReport),
        Images(ImagesReport),
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

    /// Loads the model and folds the adapter into it.
    fn load(req: &AdapterSegmentRequest, device: &burn::tensor::Device) -> Result<PromptFree, String> {
        let weights = crate::sam2::weights::load_weights_file(&req.weights)?;
        let (model, config, _) = weights.into_model(&req.overrides, device).map_err(|e| format!("{}: {e}", req.weights.display()))?;
        let bytes = std::fs::read(&req.adapter).map_err(|e| format!("cannot read {}: {e}", req.adapter.display()))?;
        PromptFree::load(model, &config, &bytes, &req.adapter.display().to_string())
    }

    pub fn run(req: &AdapterSegmentRequest, device: &burn::tensor::Device) -> Result<AdapterOutcome, String> {
        let started = Instant::now();
        let volume = match segment::load_volume(&req.frames, req.modality) {
            Ok(volume) => volume,
            Err(e) => return run_images(req, e, started, device).map(AdapterOutcome::Images),
        };
        let mapping = match &req.intensity {
            Some(name) => intensity::preset(name)?,
            None => intensity::default_for(&volume),
        };
        let (slices, info) = intensity::to_rgb8_with_info(&volume, &mapping)?;
        let truth = req.truth.as_deref().map(|t| segment::read_label_volume(t, &volume)).transpose()?;
        check_out(&req.out, req.overwrite)?;
        let pf = load(req, device)?;
        let progress = Progress::new();
        progress.start(slices.len(), "prompt-free segmentation");
        let mut labels = Vec::with_capacity(slices.len());
        for slice in &slices {
            labels.push(pollster::block_on(pf.segment(slice))?);
            progress.inc();
        }
        progress.finish();
        let classes = pf.foreground();
        let report = PromptFreeReport {
            complete: true,
            input: InputInfo::of(&volume, info),
            weights: req.weights.display().to_string(),
            adapter: pf.name.clone(),
            mode: PROMPT_FREE_MODE,
            order: (0..labels.len()).collect(),
            frames_encoded: labels.len(),
            seconds: started.elapsed().as_secs_f64(),
            per_class: class_reports(&labels, truth.as_deref(), &classes, &volume),
            classes,
            outputs: Vec::new(),
        };
        write_staged_outputs(&req.out, |stage| write_volume(stage, &volume, &labels, report)).map(AdapterOutcome::Volume)
    }

    fn write_volume(stage: &Path, volume: &Volume, labels: &[Vec<u8>], mut report: PromptFreeReport) -> Result<PromptFreeReport, String> {
        let binary = report.classes.len() == 1;
        for (z, slice) in labels.iter().enumerate() {
            report.outputs.push(write_label_png(stage, &volume.slice_names[z], volume.width, volume.height, slice, binary)?);
        }
        report.outputs.push(write_labels_nifti(stage, volume, labels)?);
        report.outputs.push("report.json".into());
        write_json(stage, &report)?;
        Ok(report)
    }

    fn write_json(stage: &Path, report: &impl Serialize) -> Result<(), String> {
        let json = stage.join("report.json");
        let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        std::fs::write(&json, text).map_err(|e| format!("cannot write {}: {e}", json.display()))
    }

    /// The inputs did not form one volume (`why`): if they are all images, each is segmented on its own
    /// (images of different sizes); otherwise `why` is the error.
    fn run_images(req: &AdapterSegmentRequest, why: String, started: Instant, device: &burn::tensor::Device) -> Result<ImagesReport, String> {
        let files = list_images(&req.frames).ok_or(why)?;
        let images: Vec<Volume> = files.iter().map(|f| imaging::read_path(f)).collect::<Result<_, _>>()?;
        let mapping = req.intensity.as_deref().map(intensity::preset).transpose()?;
        if req.truth.is_some() {
            return Err("--truth needs the frames to form one volume (images of one size)".into());
        }
        check_out(&req.out, req.overwrite)?;
        let pf = load(req, device)?;
        let classes = pf.foreground();
        let binary = classes.len() == 1;
        let progress = Progress::new();
        progress.start(images.len(), "prompt-free segmentation");
        let mut labels = Vec::new();
        let mut entries = Vec::new();
        for (file, image) in files.iter().zip(&images) {
            let own = mapping.unwrap_or_else(|| intensity::default_for(image));
            let rgb = intensity::to_rgb8(image, &own)?.remove(0);
            let map = pollster::block_on(pf.segment(&rgb))?;
            let area_pixels = classes.iter().map(|&c| map.iter().filter(|&&v| v == c).count()).collect();
            entries.push(ImageEntry { source: file.display().to_string(), width: image.width, height: image.height, area_pixels });
            labels.push(map);
            progress.inc();
        }
        progress.finish();
        let report = ImagesReport {
            complete: true,
            weights: req.weights.display().to_string(),
            adapter: pf.name.clone(),
            mode: PROMPT_FREE_MODE,
            classes,
            images: entries,
            seconds: started.elapsed().as_secs_f64(),
            outputs: Vec::new(),
        };
        write_staged_outputs(&req.out, |stage| {
            let mut report = report;
            for (image, map) in images.iter().zip(&labels) {
                report.outputs.push(write_label_png(stage, &image.slice_names[0], image.width, image.height, map, binary)?);
            }
            report.outputs.push("report.json".into());
            write_json(stage, &report)?;
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
                let mut files: Vec<PathBuf> = std::fs::read_dir(f).ok()?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
                files.retain(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')));
                files.sort();
                if !files.iter().all(|p| is_image(p)) {
                    return None;
                }
                out.extend(files);
            } else if is_image(f) {
                out.push(f.clone());
            } else {
                return None;
            }
        }
        (!out.is_empty()).then_some(out)
    }
}
