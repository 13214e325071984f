//! Reading the video parity fixtures written by `tests/fixtures/make_fixtures.py` from Meta's `sam2`
//! (`<case>.<scenario>.video.safetensors`: Meta's metadata, frames, prompts and every step's outputs).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use memseg::sam2::weights::Checkpoint;
use memseg::sam2::{Sam2Base, Sam2Config, transforms};
use safetensors::SafeTensors;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The video fixtures of a folder, by file name.
pub fn video_fixtures(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.to_string_lossy().ends_with(".video.safetensors"));
    files.sort();
    files
}

/// The reduced video fixtures committed in the repo.
pub fn reduced_video_fixtures() -> Vec<PathBuf> {
    video_fixtures(&fixtures())
}

/// The full-size fixtures, when `MEMSEG_FULL_FIXTURES` names the folder `make_fixtures.py --full` wrote.
pub fn full_fixtures_dir() -> Option<PathBuf> {
    std::env::var_os("MEMSEG_FULL_FIXTURES").map(PathBuf::from)
}

pub struct VideoFixture {
    pub path: PathBuf,
    /// The file name without `.video.safetensors`, e.g. `tiny21_reduced_128.mid`.
    pub name: String,
    pub meta: serde_json::Value,
    bytes: Vec<u8>,
}

/// One recorded module call (metadata `calls.<module>[j]`).
pub struct Call {
    pub k: usize,
    /// `prompt.<i>`, `preflight.<p>` or `step.<k>`.
    pub phase: String,
    /// The frame whose features the call used.
    pub frame: Option<usize>,
    pub scalars: serde_json::Value,
    /// The tensors the fixture recorded for this call (`in.<arg>`, `out.<i>`).
    pub tensors: Vec<String>,
}

impl Call {
    pub fn has(&self, names: &[&str]) -> bool {
        names.iter().all(|n| self.tensors.iter().any(|t| t == n))
    }
}

impl VideoFixture {
    pub fn open(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = serde_json::from_str(&header.metadata().as_ref().unwrap()["memseg"]).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().trim_end_matches(".video.safetensors").to_string();
        Self { path: path.to_path_buf(), name, meta, bytes }
    }

    pub fn config(&self) -> Sam2Config {
        let mut config = Sam2Config::tiny();
        for o in self.meta["hydra_overrides_extra"].as_array().unwrap() {
            config.apply_override(o.as_str().unwrap()).unwrap();
        }
        config.validate().unwrap();
        config
    }

    /// The model from the fixture's official-layout checkpoint (its generation decides the SAM2.0/2.1 flags).
    pub fn model(&self, device: &Device) -> Sam2Base {
        let checkpoint = self.path.parent().unwrap().join(self.meta["checkpoint"].as_str().unwrap());
        Checkpoint::from_pt_file(&checkpoint).unwrap().into_model(self.config(), device).unwrap().0
    }

    /// A stored tensor by its logical key (resolved through the metadata's `aliases`), as f32.
    pub fn tensor(&self, key: &str) -> Option<(Vec<usize>, Vec<f32>)> {
        let key = self.meta["aliases"].get(key).and_then(|a| a.as_str()).unwrap_or(key);
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let view = st.tensor(key).ok()?;
        let words = |n: usize| view.data().chunks_exact(n);
        let values: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => words(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
            safetensors::Dtype::BF16 => words(2).map(|b| burn::tensor::bf16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect(),
            safetensors::Dtype::I32 => words(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
            safetensors::Dtype::U8 => view.data().iter().map(|&b| b as f32).collect(),
            safetensors::Dtype::BOOL => view.data().iter().map(|&b| b as f32).collect(),
            other => panic!("{key}: unexpected dtype {other:?}"),
        };
        Some((view.shape().to_vec(), values))
    }

    pub fn load<const D: usize>(&self, key: &str, device: &Device) -> Option<Tensor<D>> {
        let (shape, values) = self.tensor(key)?;
        assert_eq!(shape.len(), D, "{key}: rank");
        Some(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// The recorded calls of `module`, in call order.
    pub fn calls(&self, module: &str) -> Vec<Call> {
        let calls = self.meta["calls"][module].as_array().cloned().unwrap_or_default();
        calls
            .iter()
            .map(|c| Call {
                k: c["k"].as_u64().unwrap() as usize,
                phase: c["step_or_phase"].as_str().unwrap_or("?").to_string(),
                frame: c["frame"].as_u64().map(|f| f as usize),
                scalars: c["scalars"].clone(),
                tensors: c["tensors"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect(),
            })
            .collect()
    }

    /// Frame `f` of `frames_u8` `[N, S, S, 3]` through our preprocessing (the frames are S x S: no resize),
    /// which the fixture script checks is Meta's model input bit for bit.
    pub fn frame(&self, f: usize, device: &Device) -> Tensor<4> {
        let (shape, pixels) = self.tensor("frames_u8").expect("frames_u8");
        let image = rgb_frame(&shape, &pixels, f);
        transforms::preprocess_rgb8(&image, image.height() as usize, device)
    }

    /// Every frame of `frames_u8` `[N, H, W, 3]` as an 8-bit RGB image (what the session takes).
    pub fn frames_rgb(&self) -> Vec<image::RgbImage> {
        let (shape, pixels) = self.tensor("frames_u8").expect("frames_u8");
        (0..shape[0]).map(|f| rgb_frame(&shape, &pixels, f)).collect()
    }

    pub fn num_frames(&self) -> usize {
        self.meta["num_frames"].as_u64().unwrap() as usize
    }

    /// The mask prompt of frame `f` as a label map of class 1.
    pub fn mask_labels(&self, f: usize) -> image::GrayImage {
        let (_, mask) = self.tensor(&format!("prompt.{f}.mask")).expect("a mask prompt on that frame");
        let s = (mask.len() as f64).sqrt() as u32;
        image::GrayImage::from_fn(s, s, |x, y| image::Luma([u8::from(mask[(y * s + x) as usize] > 0.5)]))
    }
}

/// Frames as an 8-bit RGB volume (a job maps it with `Intensity::Identity`: the slices stay as they are).
pub fn frames_volume(frames: &[image::RgbImage]) -> memseg::imaging::Volume {
    let (w, h) = frames[0].dimensions();
    let data = frames.iter().flat_map(|f| f.as_raw().iter().map(|&v| f32::from(v))).collect();
    memseg::imaging::Volume::new("frames", memseg::imaging::SourceKind::Raster, [w as usize, h as usize, frames.len(), 3], data).unwrap()
}

/// Frame `f` of a `[N, H, W, 3]` tensor of 0-255 values.
fn rgb_frame(shape: &[usize], pixels: &[f32], f: usize) -> image::RgbImage {
    let [_, h, w, _] = shape[..] else { panic!("frames_u8 shape {shape:?}") };
    let bytes = pixels[f * h * w * 3..(f + 1) * h * w * 3].iter().map(|&v| v as u8).collect();
    image::RgbImage::from_raw(w as u32, h as u32, bytes).unwrap()
}

pub fn values<const D: usize>(t: &Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    let data = t.to_data();
    (data.shape().to_vec(), data.convert::<f32>().try_to_vec::<f32>().unwrap())
}

pub fn std_dev(v: &[f32]) -> f32 {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt() as f32
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}
