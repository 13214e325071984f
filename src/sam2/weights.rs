//! Loading Meta's official checkpoints (`sam2_hiera_tiny.pt`, `sam2.1_hiera_tiny.pt`, ...) into [`Sam2Base`].
//!
//! The `.pt` file is a zip holding a pickled `{"model": state_dict}`; `pytorch-reader` parses it from bytes
//! (so the browser can use the same path), and burn-store's applier puts each tensor into the module field of
//! the same name (Linear weights transposed, LayerNorm weight/bias to gamma/beta). Loading is strict: every
//! parameter of the model must be present with its exact shape, and every key of the checkpoint must be one
//! the model consumes or one of the SAM2 parts listed in [`NOT_YET_PORTED`].
//!
//! The compact format (`memseg convert`) is a safetensors file: every tensor under Meta's key, F32 or F16,
//! and `__metadata__` with `format` = `memseg-sam2`, `format_version` = `1`, `generation` (`SAM2` or
//! `SAM2.1`), `config` (the [`Sam2Config`] as JSON, read back by [`Sam2Config::from_json`]), `source` (the
//! file it was converted from) and `dtype` (`f32` or `f16`). It carries its config, so loading it needs no
//! overrides. [`load_weights_bytes`] takes either format (a `.pt` is a zip: it starts with `PK`).

use std::collections::{BTreeMap, BTreeSet};

use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, bridge};
use burn::tensor::{Device, TensorData, f16};
use pytorch_reader::{DType, PytorchReader};
use safetensors::SafeTensors;
use serde::Serialize;

use super::config::Sam2Config;
use super::sam2_base::Sam2Base;

/// Checkpoint key prefixes of SAM2 modules this port does not build yet. Their tensors are accepted (the
/// official checkpoints hold them) but not loaded. Shrinks as the port grows.
pub const NOT_YET_PORTED: &[&str] = &[];

/// State-dict entries that are buffers, not `nn.Parameter`s: Meta's published parameter counts leave them out.
pub const BUFFERS: &[&str] = &["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"];

/// `__metadata__["format"]` of a compact weights file, and the `format_version`s this build reads.
pub const COMPACT_FORMAT: &str = "memseg-sam2";
pub const COMPACT_FORMAT_VERSION: &str = "1";

/// SAM2.0 and SAM2.1 checkpoints differ in a few modules; the keys tell which one a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Generation {
    #[serde(rename = "SAM2")]
    Sam2_0,
    #[serde(rename = "SAM2.1")]
    Sam2_1,
}

impl Generation {
    pub fn as_str(self) -> &'static str {
        match self {
            Generation::Sam2_0 => "SAM2",
            Generation::Sam2_1 => "SAM2.1",
        }
    }

    /// SAM2.1 added the no-object spatial embedding and the object pointers' temporal projection.
    fn of_keys<'a>(mut keys: impl Iterator<Item = &'a str>) -> Self {
        match keys.any(|k| k == "no_obj_embed_spatial" || k.starts_with("obj_ptr_tpos_proj.")) {
            true => Generation::Sam2_1,
            false => Generation::Sam2_0,
        }
    }
}

/// How a compact file stores the values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    F32,
    /// Half the size; every value rounded to the nearest f16 (widened back to f32 on load).
    F16,
}

impl WeightDtype {
    pub fn as_str(self) -> &'static str {
        match self {
            WeightDtype::F32 => "f32",
            WeightDtype::F16 => "f16",
        }
    }
}

impl std::str::FromStr for WeightDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(WeightDtype::F32),
            "f16" | "float16" | "half" => Ok(WeightDtype::F16),
            _ => Err(format!("unknown weight dtype '{s}': expected f32 or f16")),
        }
    }
}

/// A checkpoint read into memory: its tensors as f32, by Meta's key.
pub struct Checkpoint {
    pub generation: Generation,
    /// Name of the file the weights were first read from (kept through conversions).
    pub source: String,
    /// How the file stored the values: `f32`, `f16`, `bf16`, `f64`, or several joined by `+`.
    pub stored_dtype: String,
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
        let mut dtypes = BTreeSet::new();
        for (key, tensor) in reader.tensors() {
            let raw = tensor.read().map_err(|e| format!("{name}: cannot read tensor '{key}': {e}"))?;
            tensors.push((key.clone(), tensor.shape().to_vec(), to_f32(name, key, tensor.dtype(), &raw)?));
            dtypes.insert(dtype_name(tensor.dtype()));
        }
        Ok(Self::new(tensors, file_name(name), dtypes))
    }

    #[cfg(not(target_family = "wasm"))]
    pub fn from_pt_file(path: &std::path::Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_pt_bytes(bytes, &path.display().to_string())
    }

    fn new(mut tensors: Vec<(String, Vec<usize>, Vec<f32>)>, source: String, dtypes: BTreeSet<String>) -> Self {
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let generation = Generation::of_keys(tensors.iter().map(|(k, ..)| k.as_str()));
        let stored_dtype = dtypes.into_iter().collect::<Vec<_>>().join("+");
        Self { generation, source, stored_dtype, tensors }
    }

    /// Reads a compact weights file (see the module doc) and the config it carries, validated and set to the
    /// file's generation. Refuses damaged or truncated files, safetensors files without memseg's metadata,
    /// and format versions this build does not know; every message names the file.
    pub fn from_compact_bytes(bytes: &[u8], name: &str) -> Result<(Self, Sam2Config), String> {
        let damaged = |e: safetensors::SafeTensorError| format!("{name} is damaged or truncated (not a complete safetensors file: {e})");
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(damaged)?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(COMPACT_FORMAT) {
            return Err(format!(
                "{name} is a safetensors file but not memseg's compact SAM2 weights (no \"format\": \"{COMPACT_FORMAT}\" \
                 metadata); make one from an official checkpoint with `memseg convert`"
            ));
        }
        let field = |key: &str| meta.get(key).ok_or_else(|| format!("{name}: compact weights metadata lacks \"{key}\""));
        let version = field("format_version")?;
        if version != COMPACT_FORMAT_VERSION {
            return Err(format!(
                "{name} is compact weights format version {version}; this memseg reads version {COMPACT_FORMAT_VERSION} \
                 (convert the original checkpoint again with this memseg, or use a newer memseg)"
            ));
        }
        let mut config = Sam2Config::from_json(field("config")?).map_err(|e| format!("{name}: {e}"))?;
        let st = SafeTensors::deserialize(bytes).map_err(damaged)?;
        let mut tensors = Vec::with_capacity(st.len());
        let mut dtypes = BTreeSet::new();
        for (key, view) in st.iter() {
            let dtype = match view.dtype() {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::F16 => DType::F16,
                other => return Err(format!("{name}: tensor '{key}' is {other}; compact weights hold F32 or F16")),
            };
            tensors.push((key.to_string(), view.shape().to_vec(), to_f32(name, key, dtype, view.data())?));
            dtypes.insert(dtype_name(dtype));
        }
        let source = meta.get("source").cloned().unwrap_or_else(|| file_name(name));
        let checkpoint = Self::new(tensors, source, dtypes);
        let generation = field("generation")?;
        if generation != checkpoint.generation.as_str() {
            let found = checkpoint.generation.as_str();
            return Err(format!("{name}: metadata says generation {generation} but the tensors are those of {found}"));
        }
        config.set_generation(checkpoint.generation);
        config.validate().map_err(|e| format!("{name}: the config it carries is unusable: {e}"))?;
        Ok((checkpoint, config))
    }

    /// Writes the compact format with `config` (set to this checkpoint's generation) in the metadata.
    /// f16 refuses a value beyond f16's range (it would become infinite); otherwise rounds to nearest.
    /// The bytes depend only on the inputs (safetensors' own writer orders `__metadata__` by hash).
    pub fn to_compact_bytes(&self, config: &Sam2Config, dtype: WeightDtype) -> Result<Vec<u8>, String> {
        let mut config = config.clone();
        config.set_generation(self.generation);
        let meta = BTreeMap::from([
            ("format", COMPACT_FORMAT.to_string()),
            ("format_version", COMPACT_FORMAT_VERSION.to_string()),
            ("generation", self.generation.as_str().to_string()),
            ("config", serde_json::to_string(&config).map_err(|e| e.to_string())?),
            ("source", self.source.clone()),
            ("dtype", dtype.as_str().to_string()),
        ]);
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::json!(meta));
        let mut data = Vec::with_capacity(self.value_count() * if dtype == WeightDtype::F32 { 4 } else { 2 });
        for (key, shape, values) in &self.tensors {
            let start = data.len();
            match dtype {
                WeightDtype::F32 => data.extend(values.iter().flat_map(|v| v.to_le_bytes())),
                WeightDtype::F16 => {
                    if let Some(v) = values.iter().find(|v| v.is_finite() && f16::from_f32(**v).is_infinite()) {
                        return Err(format!("tensor '{key}' holds {v}, beyond f16's range (65504): keep f32"));
                    }
                    data.extend(values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()));
                }
            }
            let entry = serde_json::json!({"dtype": dtype.as_str().to_uppercase(), "shape": shape, "data_offsets": [start, data.len()]});
            header.insert(key.clone(), entry);
        }
        safetensors_bytes(&header, data)
    }

    /// The weights of a built model under Meta's keys (reads the device's tensors back: native only).
    #[cfg(not(target_family = "wasm"))]
    pub fn from_model(model: &Sam2Base, source: &str) -> Result<Self, String> {
        let mut tensors = Vec::new();
        for tensor in model.collect(None, Some(Box::new(burn::store::BurnToPyTorchAdapter)), false) {
            let key = tensor.name.clone();
            let data = bridge::into_data(tensor).map_err(|e| format!("tensor '{key}': {e:?}"))?;
            let shape = data.shape().to_vec();
            let values = data.convert::<f32>().try_into_vec::<f32>().map_err(|e| format!("tensor '{key}': {e:?}"))?;
            tensors.push((key, shape, values));
        }
        Ok(Self::new(tensors, source.to_string(), BTreeSet::from([dtype_name(DType::F32)])))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(k, ..)| k.as_str())
    }

    /// The tensors, by key in sorted order: (key, shape, values).
    pub fn tensors(&self) -> &[(String, Vec<usize>, Vec<f32>)] {
        &self.tensors
    }

    /// Every stored number, the buffers included.
    pub fn value_count(&self) -> usize {
        self.tensors.iter().map(|(_, _, v)| v.len()).sum()
    }

    /// The parameters as Meta counts them (its `nn.Parameter`s: the [`BUFFERS`] left out).
    pub fn parameter_count(&self) -> usize {
        self.tensors.iter().filter(|(k, ..)| !BUFFERS.contains(&k.as_str())).map(|(_, _, v)| v.len()).sum()
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

/// A weights file of either format, as [`load_weights_bytes`] read it.
pub struct Weights {
    pub format: WeightsFormat,
    pub checkpoint: Checkpoint,
    /// The config a compact file carries; None for a `.pt`, which holds weights only.
    pub config: Option<Sam2Config>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightsFormat {
    /// Meta's official checkpoint: a zip with a pickled `{"model": state_dict}`.
    Pt,
    /// memseg's safetensors file with the config in its metadata.
    Compact,
}

impl Weights {
    /// The model config: the file's own (compact) or SAM2.1-tiny's (`.pt`), then `overrides` in Meta's Hydra
    /// form on top, set to the checkpoint's generation and validated.
    pub fn config(&self, overrides: &[String]) -> Result<Sam2Config, String> {
        let mut config = self.config.clone().unwrap_or_else(Sam2Config::tiny);
        for o in overrides {
            config.apply_override(o)?;
        }
        config.set_generation(self.checkpoint.generation);
        config.validate()?;
        Ok(config)
    }

    /// Builds the model of [`Weights::config`] and loads the weights (strictly).
    pub fn into_model(self, overrides: &[String], device: &Device) -> Result<(Sam2Base, Sam2Config, LoadReport), String> {
        let config = self.config(overrides)?;
        let (model, report) = self.checkpoint.into_model(config.clone(), device)?;
        Ok((model, config, report))
    }
}

/// Reads a weights file of either format from its bytes (the browser's way; `name` is for messages): an
/// official `.pt` (a zip, "PK") or memseg's compact safetensors file.
pub fn load_weights_bytes(bytes: Vec<u8>, name: &str) -> Result<Weights, String> {
    if bytes.starts_with(b"PK") {
        let checkpoint = Checkpoint::from_pt_bytes(bytes, name)?;
        return Ok(Weights { format: WeightsFormat::Pt, checkpoint, config: None });
    }
    // safetensors: an 8-byte little-endian header length, then the JSON header.
    if bytes.get(8) == Some(&b'{') {
        let (checkpoint, config) = Checkpoint::from_compact_bytes(&bytes, name)?;
        return Ok(Weights { format: WeightsFormat::Compact, checkpoint, config: Some(config) });
    }
    Err(format!(
        "{name} is not a readable PyTorch checkpoint (.pt) nor memseg compact weights (.safetensors from \
         `memseg convert`): it starts with neither a zip nor a safetensors header"
    ))
}

#[cfg(not(target_family = "wasm"))]
pub fn load_weights_file(path: &std::path::Path) -> Result<Weights, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    load_weights_bytes(bytes, &path.display().to_string())
}

/// A safetensors file from its JSON header (with `__metadata__` and every tensor's entry) and the data: the
/// header's length (u64 LE), the header (space-padded to 8 bytes), the data. The bytes depend only on the
/// inputs (safetensors' own writer orders `__metadata__` by hash).
pub fn safetensors_bytes(header: &serde_json::Map<String, serde_json::Value>, data: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut head = serde_json::to_vec(header).map_err(|e| e.to_string())?;
    head.resize(head.len().next_multiple_of(8), b' ');
    let mut bytes = Vec::with_capacity(8 + head.len() + data.len());
    bytes.extend((head.len() as u64).to_le_bytes());
    bytes.extend(head);
    bytes.extend(data);
    Ok(bytes)
}

/// The last component of a path (no folders of the user's machine in the files we write).
fn file_name(name: &str) -> String {
    name.rsplit(['/', '\\']).next().unwrap_or(name).to_string()
}

/// `f32`, `f16`, `bf16`, ...
fn dtype_name(dtype: DType) -> String {
    format!("{dtype:?}").to_ascii_lowercase()
}

fn to_f32(name: &str, key: &str, dtype: DType, raw: &[u8]) -> Result<Vec<f32>, String> {
    use burn::tensor::bf16;
    let words = |n: usize| raw.chunks_exact(n);
    Ok(match dtype {
        DType::F32 => words(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
        DType::F64 => words(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
        DType::F16 => words(2).map(|b| f16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect(),
        DType::BF16 => words(2).map(|b| bf16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect(),
        _ => return Err(format!("{name}: tensor '{key}' has type {dtype:?}; SAM2 weights must be floating point")),
    })
}
