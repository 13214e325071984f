//! `memseg segment --adapter A --frames ... --out DIR` with no masks: prompt-free label maps from a trained
//! adapter file (`sam2::adapter`, `docs/adapters.md`). Kept apart from `segment.rs` (the few-shot path).
//!
//! Frames are image files or folders of images (sorted by name). Each image is resized to its size rounded
//! up to a multiple of 32 (bilinear), encoded once by the adapted encoder, decoded by the class tokens, and
//! its label map (argmax, upsampled to the rounded size, then nearest back to the image's size) is written as
//! `<stem>.png` holding the class values (0 = background).

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;

use crate::sam2::adapter::AdapterSet;
use crate::sam2::transforms::{IMAGENET_MEAN, IMAGENET_STD};

#[derive(Clone, Debug, Serialize)]
pub struct AdapterSegmentReport {
    pub adapter: String,
    pub classes: Vec<u8>,
    /// Per image: file written and pixels per class (same order as `classes`).
    pub slices: Vec<(String, Vec<usize>)>,
}

fn list_frames(frames: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for f in frames {
        if f.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(f)
                .map_err(|e| format!("cannot list {}: {e}", f.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| ["png", "jpg", "jpeg", "tif", "tiff"].contains(&x.to_ascii_lowercase().to_str().unwrap_or(""))))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(f.clone());
        }
    }
    if out.is_empty() {
        return Err("--frames: no images found".into());
    }
    Ok(out)
}

/// Runs the adapted model on every frame; `overrides` as for the weights elsewhere.
pub fn run(weights: &Path, adapter: &Path, frames: &[PathBuf], out: &Path, overrides: &[String], device: &Device) -> Result<AdapterSegmentReport, String> {
    let (mut model, config, _) = crate::sam2::weights::load_weights_file(weights)?.into_model(overrides, device)?;
    let bytes = std::fs::read(adapter).map_err(|e| format!("cannot read {}: {e}", adapter.display()))?;
    let set = AdapterSet::from_bytes(&bytes, &adapter.display().to_string(), &mut model, &config)?;
    // Structural re-parameterization: the adapters cost nothing at inference.
    model.image_encoder = crate::sam2::adapter::fold_encoder(model.image_encoder);
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let progress = crate::progress::Progress::new();
    let files = list_frames(frames)?;
    progress.start(files.len(), "prompt-free segmentation");
    let mut slices = Vec::new();
    for file in files {
        let img = image::open(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?.to_rgb8();
        let (w0, h0) = img.dimensions();
        let (h, w) = ((h0 as usize).next_multiple_of(32), (w0 as usize).next_multiple_of(32));
        let img = image::imageops::resize(&img, w as u32, h as u32, image::imageops::FilterType::Triangle);
        let mut planar = vec![0f32; 3 * h * w];
        for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
            for c in 0..3 {
                planar[c * h * w + i] = (px[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            }
        }
        let input = Tensor::from_data(TensorData::new(planar, [1, 3, h, w]), device);
        let labels = set.label_indices(set.logits(&model, input), [h, w]);
        let idx = labels.into_data().convert::<i64>().try_into_vec::<i64>().map_err(|e| format!("{e:?}"))?;
        let values: Vec<u8> = idx.iter().map(|&i| set.spec.classes[i as usize]).collect();
        let map = image::GrayImage::from_raw(w as u32, h as u32, values).expect("sized");
        let map = image::imageops::resize(&map, w0, h0, image::imageops::FilterType::Nearest);
        let counts = set.spec.classes.iter().map(|&c| map.as_raw().iter().filter(|&&v| v == c).count()).collect();
        let stem = file.file_stem().map_or("slice".into(), |s| s.to_string_lossy().to_string());
        let path = out.join(format!("{stem}.png"));
        map.save(&path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        slices.push((path.display().to_string(), counts));
        progress.inc();
    }
    progress.finish();
    Ok(AdapterSegmentReport { adapter: adapter.display().to_string(), classes: set.spec.classes.clone(), slices })
}
