//! Loading Meta's official checkpoints (`sam2_hiera_tiny.pt`, `sam2.1_hiera_tiny.pt`, ...) into [`Sam2Base`].
//!
//! The `.pt` file is a zip holding a pickled `{"model": state_dict}`; `pytorch-reader` parses it from bytes
//! (so the browser can use the same path), and burn-store's applier puts each tensor into the module field of
//! the same name (Linear weights transposed, LayerNorm weight/bias to gamma/beta). Loading is strict: every
//! parameter of the model must be present with its exact shape, and every key of the checkpoint must be one
//! the model consumes or one of the SAM2 parts listed in [`NOT_YET_PORTED`].

use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, bridge};
use burn::tensor::{Device, TensorData};
use pytorch_reader::{DType, PytorchReader};
use serde::Serialize;

use super::config::Sam2Config;
use super::sam2_base::Sam2Base;

/// Checkpoint key prefixes of SAM2 modules this port does not build yet. Their tensors are accepted (the
/// official checkpoints hold them) but not loaded. Shrinks as the port grows.
pub const NOT_YET_PORTED: &[&str] = &[];

/// SAM2.0 and SAM2.1 checkpoints differ in a few modules; the keys tell which one a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Generation {
    #[serde(rename = "SAM2")]
    Sam2_0,
    #[serde(rename = "SAM2.1")]
    Sam2_1,
}

/// A checkpoint read into memory: its tensors as f32, by Meta's key.
pub struct Checkpoint {
    pub generation: Generation,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// What a load did, for `memseg info` and logs.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    pub generation: Generation,
    pub loaded_tensors: usize,
    pub loaded_parameters: usize,
    /// Tensors of modules not ported yet, present in the file and left aside.
    pub skipped_tensors: usize,
}

impl Checkpoint {
    /// Parses an official `.pt` (weights under `"model"`). `name` is used in error messages.
    pub fn from_pt_bytes(bytes: Vec<u8>, name: &str) -> Result<Self, String> {
        let reader = PytorchReader::from_bytes(bytes, Some("model"))
            .map_err(|e| format!("{name} is not a readable PyTorch checkpoint with a \"model\" entry: {e}"))?;
        let mut tensors = Vec::with_capacity(reader.len());
        for (key, tensor) in reader.tensors() {
            let raw = tensor.read().map_err(|e| format!("{name}: cannot read tensor '{key}': {e}"))?;
            let values = to_f32(tensor.dtype(), &raw).ok_or_else(|| {
                format!("{name}: tensor '{key}' has type {:?}; SAM2 weights must be floating point", tensor.dtype())
            })?;
            tensors.push((key.clone(), tensor.shape().to_vec(), values));
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let is_2_1 = tensors.iter().any(|(k, ..)| k == "no_obj_embed_spatial" || k.starts_with("obj_ptr_tpos_proj."));
        let generation = if is_2_1 { Generation::Sam2_1 } else { Generation::Sam2_0 };
        Ok(Self { generation, tensors })
    }

    #[cfg(not(target_family = "wasm"))]
    pub fn from_pt_file(path: &std::path::Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_pt_bytes(bytes, &path.display().to_string())
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(k, ..)| k.as_str())
    }

    /// Builds the model of `config` for this checkpoint's generation (SAM2.0 or SAM2.1) and loads it.
    pub fn into_model(self, mut config: Sam2Config, device: &Device) -> Result<(Sam2Base, LoadReport), String> {
        config.set_generation(self.generation);
        let mut model = Sam2Base::new(&config, device);
        let report = self.load_into(&mut model)?;
        Ok((model, report))
    }

    /// Puts the weights into `model`, refusing missing, unexpected or wrongly shaped tensors (all named).
    pub fn load_into(self, model: &mut Sam2Base) -> Result<LoadReport, String> {
        let generation = self.generation;
        let (skipped, used): (Vec<_>, Vec<_>) =
            self.tensors.into_iter().partition(|(k, ..)| NOT_YET_PORTED.iter().any(|p| k.starts_with(p)));
        let parameters = used.iter().map(|(_, _, v)| v.len()).sum();
        let packed = used.into_iter().map(|(k, shape, v)| bridge::from_data(TensorData::new(v, shape), k, None)).collect();
        let result = model.apply(packed, None, Some(Box::new(PyTorchToBurnAdapter)), false);
        let mut problems = Vec::new();
        if !result.missing.is_empty() {
            let names: Vec<&str> = result.missing.iter().map(|(p, _)| p.as_str()).collect();
            problems.push(format!("missing tensors: {}", names.join(", ")));
        }
        if !result.unused.is_empty() {
            problems.push(format!("unexpected tensors: {}", result.unused.join(", ")));
        }
        problems.extend(result.errors.iter().map(|e| e.to_string()));
        if !problems.is_empty() {
            return Err(format!("the checkpoint does not fit this SAM2 config: {}", problems.join("; ")));
        }
        Ok(LoadReport {
            generation,
            loaded_tensors: result.applied.len(),
            loaded_parameters: parameters,
            skipped_tensors: skipped.len(),
        })
    }
}

fn to_f32(dtype: DType, raw: &[u8]) -> Option<Vec<f32>> {
    use burn::tensor::{bf16, f16};
    let words = |n: usize| raw.chunks_exact(n);
    Some(match dtype {
        DType::F32 => words(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
        DType::F64 => words(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
        DType::F16 => words(2).map(|b| f16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect(),
        DType::BF16 => words(2).map(|b| bf16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect(),
        _ => return None,
    })
}
