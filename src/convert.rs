//! `memseg convert` (an official `.pt` or a compact file -> compact weights, f32 or f16) and `memseg info`
//! (what a weights file of either format holds). The format itself is in [`crate::sam2::weights`].

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use clap::Args;
use serde::Serialize;

use crate::sam2::Sam2Config;
use crate::sam2::weights::{Checkpoint, Generation, WeightDtype, WeightsFormat, load_weights_bytes, load_weights_file};

#[derive(Args)]
pub struct ConvertArgs {
    /// An official SAM2/SAM2.1 checkpoint (.pt), or compact weights to re-encode.
    #[arg(long)]
    pub weights: PathBuf,
    /// The compact weights file to write (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// How the values are stored: f32 (exact) or f16 (half the size, rounded to nearest).
    #[arg(long, default_value = "f32")]
    pub dtype: WeightDtype,
    /// A config override in Meta's Hydra form (e.g. ++model.image_size=512), stored in the file. Repeatable.
    #[arg(long = "override")]
    pub overrides: Vec<String>,
}

#[derive(Args)]
pub struct InfoArgs {
    /// A weights file: an official .pt or compact weights from `memseg convert`.
    pub file: PathBuf,
}

/// What `memseg info` prints.
#[derive(Serialize)]
pub struct Info {
    pub file: String,
    pub format: WeightsFormat,
    /// Compact files only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format_version: Option<&'static str>,
    pub generation: Generation,
    /// How the values are stored (`f32`, `f16`, `bf16`, ... or several joined by `+`).
    pub dtype: String,
    /// The file the weights came from (compact files keep the original checkpoint's name).
    pub source: String,
    /// The config a compact file carries; null for a `.pt`, which holds weights only (the CLI then uses
    /// SAM2.1-tiny's with any `--override`).
    pub config: Option<Sam2Config>,
    pub tensors: usize,
    /// Meta's count (its `nn.Parameter`s, e.g. 38,962,498 for SAM2.1-tiny).
    pub parameters: usize,
    /// Every stored number, buffers included.
    pub values: usize,
    pub file_bytes: u64,
}

/// What `memseg convert` prints.
#[derive(Serialize)]
pub struct ConvertReport {
    pub out: String,
    pub info: Info,
    /// The largest |stored - original| over all weights: 0 for f32; f16's rounding otherwise.
    pub max_abs_rounding_error: f32,
}

pub fn info(args: &InfoArgs) -> Result<Info, String> {
    let weights = load_weights_file(&args.file)?;
    let file_bytes = std::fs::metadata(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?.len();
    let format_version = (weights.format == WeightsFormat::Compact).then_some(crate::sam2::weights::COMPACT_FORMAT_VERSION);
    let c = &weights.checkpoint;
    Ok(Info {
        file: args.file.display().to_string(),
        format: weights.format,
        format_version,
        generation: c.generation,
        dtype: c.stored_dtype.clone(),
        source: c.source.clone(),
        tensors: c.tensors().len(),
        parameters: c.parameter_count(),
        values: c.value_count(),
        config: weights.config,
        file_bytes,
    })
}

/// Converts, then proves the result: the written bytes are read back and loaded (strictly) into the model of
/// their config on the Flex CPU device before the file appears, so a config that does not fit the weights
/// fails here and not in the browser. The file is written as `OUT.tmp` and renamed: never half a file.
pub fn convert(args: &ConvertArgs) -> Result<ConvertReport, String> {
    let weights = load_weights_file(&args.weights)?;
    let config = weights.config(&args.overrides)?;
    let bytes = weights.checkpoint.to_compact_bytes(&config, args.dtype)?;
    let out = args.out.display().to_string();
    let reread = load_weights_bytes(bytes.clone(), &out)?;
    let max_abs_rounding_error = rounding_error(&weights.checkpoint, &reread.checkpoint);
    reread.into_model(&[], &Device::flex()).map_err(|e| format!("{out} was not written: {e}"))?;
    write_atomically(&args.out, &bytes)?;
    let info = info(&InfoArgs { file: args.out.clone() })?;
    Ok(ConvertReport { out, info, max_abs_rounding_error })
}

/// Largest |b - a| over the weights of two checkpoints with the same keys and shapes.
fn rounding_error(a: &Checkpoint, b: &Checkpoint) -> f32 {
    let pairs = a.tensors().iter().zip(b.tensors()).flat_map(|(x, y)| x.2.iter().zip(&y.2));
    pairs.map(|(x, y)| (y - x).abs()).fold(0f32, f32::max)
}

/// Writes `OUT.tmp` next to `out`, syncs it and renames it over `out`; removes the temporary file on failure.
fn write_atomically(out: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, out)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", out.display())
    })
}
