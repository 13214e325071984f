//! Files in and out for the native commands (`memseg segment`, `memseg eval`): volumes, masks, label volumes
//! and supports read from paths, a checkpoint loaded from a path, and outputs written into a staging folder
//! that is renamed to `--out` only when complete, so a failed run never leaves a folder that looks finished.
//!
//! The checks themselves live in [`crate::imaging`] and are shared with the browser (which reads the same
//! formats from bytes); this module only adds paths, folders and their error messages.

use std::path::{Path, PathBuf};

use image::GrayImage;

use crate::imaging::{self, Volume, intensity, labels};
use crate::sam2::Sam2Base;
use crate::session::Support;

/// What `--frames` names: one path (a NIfTI file, a DICOM series folder, a folder of images, one image), or
/// several image files / folders of images stacked in the order given.
pub fn load_inputs(inputs: &[PathBuf], options: imaging::ReadOptions) -> Result<Volume, String> {
    match inputs {
        [] => Err("no input given".into()),
        [one] => imaging::read_path_with(one, options),
        many => {
            let mut files = Vec::new();
            for path in many {
                if path.is_dir() {
                    files.extend(imaging::read_dir_files(path)?);
                } else {
                    files.push(imaging::read_input_file(path)?);
                }
            }
            imaging::read_files_with(&files, options)
        }
    }
}

/// The query volume from the `--frames` inputs, with the `--modality` override.
pub fn load_volume(inputs: &[PathBuf], modality: Option<imaging::Modality>, options: imaging::ReadOptions) -> Result<Volume, String> {
    let mut volume = load_inputs(inputs, options)?;
    if let Some(m) = modality {
        volume.modality = m;
    }
    Ok(volume)
}

/// A mask file as a label map of `width` × `height` (the checks: [`labels::mask_from_bytes`]).
pub fn read_mask(path: &Path, width: usize, height: usize) -> Result<GrayImage, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let name = path.display().to_string();
    let values = labels::mask_from_bytes(&bytes, &name, width, height)?;
    GrayImage::from_raw(width as u32, height as u32, values).ok_or_else(|| format!("{name}: the mask's pixel count does not match its size"))
}

/// A label volume (NIfTI, or a folder of label PNGs one per slice) on `like`'s grid, as u8 slices; the page's
/// rule ([`labels::on_grid`]): a value that is not a whole number in 0..=255 is refused, not rounded.
pub fn read_label_volume(path: &Path, like: &Volume) -> Result<Vec<Vec<u8>>, String> {
    labels::on_grid(&load_inputs(&[path.to_path_buf()], Default::default())?, like).map_err(|e| with_path(path, e))
}

/// Prefixes an error with the path, unless the reader already named the file.
fn with_path(path: &Path, error: String) -> String {
    let name = path.display().to_string();
    if error.starts_with(&name) { error } else { format!("{name}: {error}") }
}

/// External supports (`--support IMAGE=MASK.png`), through the query's mapping as the page's supports from
/// another volume ([`intensity::for_support`]).
pub fn read_supports(pairs: &[(PathBuf, PathBuf)], query: &intensity::Intensity) -> Result<Vec<Support>, String> {
    let mut supports = Vec::new();
    for (image_path, mask_path) in pairs {
        let volume = load_inputs(std::slice::from_ref(image_path), Default::default())?;
        if volume.depth != 1 {
            return Err(format!("{}: a support is one slice, this holds {}", image_path.display(), volume.depth));
        }
        let own = intensity::for_support(&volume, query);
        let image = intensity::to_rgb8(&volume, &own)?.remove(0);
        let labels = read_mask(mask_path, volume.width, volume.height)?;
        supports.push(Support { name: image_path.display().to_string(), image, labels });
    }
    Ok(supports)
}

/// The model of a checkpoint (official `.pt` or memseg's compact file), with Hydra-style overrides, and the
/// config it was built from.
pub fn load_model(weights: &Path, overrides: &[String], device: &burn::tensor::Device) -> Result<(Sam2Base, crate::sam2::Sam2Config), String> {
    let weights_file = crate::sam2::weights::load_weights_file(weights)?;
    let (model, config, _) = weights_file.into_model(overrides, device).map_err(|e| format!("{}: {e}", weights.display()))?;
    Ok((model, config))
}

/// Checked before any work, so a long run does not end on a refusal.
pub fn check_out(out: &Path, overwrite: bool) -> Result<(), String> {
    if out.exists() && !overwrite {
        return Err(format!("{} exists; choose another --out or pass --overwrite", out.display()));
    }
    Ok(())
}

/// The staging folder next to `out`.
fn staging(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    out.with_file_name(format!(".{name}.partial"))
}

/// Runs `write` on a fresh staging folder next to `out`, then renames the folder to `out` (replacing it:
/// [`check_out`] has refused an existing `out` without `--overwrite`). On failure the staging folder is
/// removed, so nothing that looks like a result is left behind.
pub fn write_staged_outputs<T>(out: &Path, write: impl FnOnce(&Path) -> Result<T, String>) -> Result<T, String> {
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

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `<stem>.png` in `dir` ([`labels::encode_png`]). Returns the file name.
pub fn write_label_png(dir: &Path, stem: &str, width: usize, height: usize, labels: &[u8], binary: bool) -> Result<String, String> {
    let name = format!("{stem}.png");
    let png = labels::encode_png(width, height, labels, binary).map_err(|e| format!("{name}: {e}"))?;
    write_file(&dir.join(&name), &png)?;
    Ok(name)
}

/// `labels.nii.gz` in `dir`: the label volume on `volume`'s grid and affine. Returns the file name.
pub fn write_labels_nifti(dir: &Path, volume: &Volume, labels: &[Vec<u8>]) -> Result<String, String> {
    let bytes = imaging::nifti::write_nifti_labels(&labels.concat(), volume, true)?;
    write_file(&dir.join("labels.nii.gz"), &bytes)?;
    Ok("labels.nii.gz".into())
}

/// `report.json` in `dir`, pretty-printed (the report lists `report.json` among its outputs before this).
pub fn write_report(dir: &Path, report: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    write_file(&dir.join("report.json"), text.as_bytes())
}

/// A float32 NumPy array.
pub fn write_npy(path: &Path, shape: &[u64], values: &[f32]) -> Result<(), String> {
    use npyz::WriterBuilder;
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let file = std::io::BufWriter::new(std::fs::File::create(path).map_err(fail)?);
    let mut writer = npyz::WriteOptions::new().default_dtype().shape(shape).writer(file).begin_nd().map_err(fail)?;
    writer.extend(values.iter().copied()).map_err(fail)?;
    writer.finish().map_err(fail)
}
