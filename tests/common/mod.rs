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

/// The reduced video fixtures committed in the repo.
pub fn reduced_video_fixtures() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".video.safetensors"))
        .collect();
    all.sort();
    all
}

pub struct VideoFixture {
    pub path: PathBuf,
    pub meta: serde_json::Value,
    bytes: Vec<u8>,
}

impl VideoFixture {
    pub fn open(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = serde_json::from_str(&header.metadata().as_ref().unwrap()["memseg"]).unwrap();
        Self { path: path.to_path_buf(), meta, bytes }
    }

    pub fn name(&self) -> String {
        self.path.file_name().unwrap().to_string_lossy().into_owned()
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
        Some(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// Frame `f` as Meta's model input: `frames_u8` `[N, S, S, 3]` normalised with ImageNet mean/std.
    pub fn frame(&self, f: usize, device: &Device) -> Tensor<4> {
        let (shape, values) = self.tensor("frames_u8").unwrap();
        let [_, h, w, _] = [shape[0], shape[1], shape[2], shape[3]];
        let plane = h * w;
        let mut data = vec![0f32; 3 * plane];
        for i in 0..plane {
            for c in 0..3 {
                let v = values[(f * plane + i) * 3 + c] / 255.0;
                data[c * plane + i] = (v - transforms::IMAGENET_MEAN[c]) / transforms::IMAGENET_STD[c];
            }
        }
        Tensor::from_data(TensorData::new(data, [1, 3, h, w]), device)
    }

    pub fn num_frames(&self) -> usize {
        self.meta["num_frames"].as_u64().unwrap() as usize
    }
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
