//! `memseg bench`: timings of the core, reported next to a peer (Meta's PyTorch code) run on the same machine,
//! input and thread count, in the same invocation. Never used in tests: these machines are shared and noisy.

use std::process::Command;
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use serde::Serialize;

use crate::sam2::{Sam2Base, Sam2Config};

#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    pub who: String,
    pub runs_ms: Vec<f64>,
    pub median_ms: f64,
    pub min_ms: f64,
}

impl Timing {
    pub fn new(who: impl Into<String>, mut runs_ms: Vec<f64>) -> Self {
        let mut sorted = runs_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let median_ms = sorted[sorted.len() / 2];
        runs_ms.shrink_to_fit();
        Self { who: who.into(), min_ms: sorted[0], median_ms, runs_ms }
    }
}

/// Times `forward_image` (trunk, neck, high-res projections) on one `[1, 3, S, S]` input, waiting for the
/// device after each run. Weights are random: the time does not depend on their values.
pub fn encoder(config: &Sam2Config, device: &Device, who: &str, warmup: usize, runs: usize) -> Result<Timing, String> {
    let model = Sam2Base::new(config, device);
    let s = config.image_size;
    let input = Tensor::<4>::random([1, 3, s, s], Distribution::Normal(0.0, 1.0), device);
    let mut times = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let start = Instant::now();
        let features = model.forward_image(input.clone());
        // Reading one value back waits for every queued kernel on GPU backends.
        features.image_embed().clone().slice([0..1, 0..1, 0..1, 0..1]).into_data();
        if i >= warmup {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(Timing::new(who, times))
}

/// Times the memory attention of one tracked frame attending to `memories` past frames (each a spatial
/// memory of `(S/16)^2` tokens and an object pointer split into `hidden/mem_dim` tokens), as in a tracking step.
/// Weights and inputs are random: the time does not depend on their values.
pub fn memory_attention(config: &Sam2Config, device: &Device, who: &str, memories: usize, warmup: usize, runs: usize) -> Result<Timing, String> {
    let model = Sam2Base::new(config, device);
    let g = config.image_size / 16;
    let (c, m) = (config.image_encoder.neck.d_model, config.memory_encoder.out_dim);
    let ptr_tokens = memories * (c / m);
    let tokens = memories * g * g + ptr_tokens;
    let normal = Distribution::Normal(0.0, 1.0);
    let curr = Tensor::<3>::random([g * g, 1, c], normal, device);
    let curr_pos = Tensor::<3>::random([g * g, 1, c], normal, device);
    let memory = Tensor::<3>::random([tokens, 1, m], normal, device);
    let memory_pos = Tensor::<3>::random([tokens, 1, m], normal, device);
    let mut times = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let start = Instant::now();
        let out = model.memory_attention.forward(curr.clone(), curr_pos.clone(), memory.clone(), memory_pos.clone(), ptr_tokens);
        out.slice([0..1, 0..1, 0..1]).into_data();
        if i >= warmup {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(Timing::new(who, times))
}

/// A whole propagation through the session: what a user waits for per slice.
#[derive(Clone, Debug, Serialize)]
pub struct PropagateTiming {
    pub who: String,
    pub slices: usize,
    /// Each tracked (not drawn) slice, encoder + memory attention + heads + memory encoder, in visiting order.
    pub per_slice: Timing,
    pub total_s: f64,
    pub frames_encoded: usize,
    /// Peak resident memory of the process (MiB), natively from /proc; for the GPU, sample the driver outside.
    pub peak_rss_mib: Option<f64>,
    /// The same propagation run again through the feature cache the first run filled (`--rerun`): what a
    /// user waits for after correcting a mask.
    pub rerun: Option<Rerun>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Rerun {
    pub per_slice: Timing,
    pub total_s: f64,
    pub frames_encoded: usize,
}

/// Slice `z` of `n` of the synthetic volume used for propagation timings: a grey gradient and a disc whose
/// radius follows z (the content does not change the time, only keeps masks non-trivial); no two alike.
pub fn synthetic_slice(z: usize, n: usize, size: usize) -> image::RgbImage {
    let r = size as f32 * (0.15 + 0.1 * (z as f32 / n.max(1) as f32 * std::f32::consts::PI).sin());
    let c = size as f32 / 2.0;
    image::RgbImage::from_fn(size as u32, size as u32, |x, y| {
        let d = ((x as f32 - c).powi(2) + (y as f32 - c).powi(2)).sqrt();
        // The z term keeps every slice distinct (the feature cache would reuse an identical slice's encoding).
        let v = if d < r { 200 } else { (60 + (x + y) as usize * 60 / (2 * size) + z % 16) as u8 };
        image::Rgb([v, v, v])
    })
}

/// The middle slice's disc as a label map (class 1).
pub fn synthetic_mask(n: usize, size: usize) -> image::GrayImage {
    let slice = synthetic_slice(n / 2, n, size);
    image::GrayImage::from_fn(size as u32, size as u32, |x, y| image::Luma([u8::from(slice.get_pixel(x, y)[0] == 200)]))
}

/// A session over `slices` synthetic slices at `size`, class 1 drawn on the middle one.
fn synthetic_session(slices: usize, size: usize) -> Result<crate::session::Session, String> {
    let query = (0..slices).map(|z| synthetic_slice(z, slices, size)).collect();
    let mut session = crate::session::Session::new(query, vec![1])?;
    session.add_query_mask(slices / 2, "synthetic", synthetic_mask(slices, size))?;
    Ok(session)
}

/// Times a propagation over `slices` synthetic slices from a mask drawn on the middle one (S1SFQ order:
/// forward then reverse), reading each slice's logits back as the CLI does; with `rerun`, times it again
/// through the feature cache. Weights are random.
pub fn propagate(config: &Sam2Config, device: &Device, who: &str, slices: usize, rerun: bool) -> Result<PropagateTiming, String> {
    use crate::session::feature_cache::{DEFAULT_BUDGET_BYTES, FeatureCache};
    let model = Sam2Base::new(config, device);
    let mut session = synthetic_session(slices, config.image_size)?;
    if rerun {
        session.use_feature_cache(FeatureCache::shared(DEFAULT_BUDGET_BYTES));
    }
    let (per_slice, total_s, frames_encoded) = time_propagation(&model, &session, who, slices / 2)?;
    let rerun = match rerun {
        true => {
            let (per_slice, total_s, frames_encoded) = time_propagation(&model, &session, who, slices / 2)?;
            Some(Rerun { per_slice, total_s, frames_encoded })
        }
        false => None,
    };
    Ok(PropagateTiming { who: who.into(), slices, per_slice, total_s, frames_encoded, peak_rss_mib: peak_rss_mib(), rerun })
}

/// One run of `session`: the time of each slice but `drawn`, the total seconds and the encoder runs.
fn time_propagation(model: &Sam2Base, session: &crate::session::Session, who: &str, drawn: usize) -> Result<(Timing, f64, usize), String> {
    use crate::session::{MemoryOptions, Mode, Placement, read_f32};
    let started = Instant::now();
    let mut run = pollster::block_on(session.start(model, Mode::Propagate(Placement::Middle), MemoryOptions::default()))?;
    let mut times = Vec::new();
    let mut last = Instant::now();
    while let Some(out) = pollster::block_on(run.step()) {
        let out = out?;
        pollster::block_on(read_f32(out.logits[0].clone()))?;
        if out.slice != drawn {
            times.push(last.elapsed().as_secs_f64() * 1000.0);
        }
        last = Instant::now();
    }
    Ok((Timing::new(who, times), started.elapsed().as_secs_f64(), run.frames_encoded()))
}

/// The `k`-th click of the click benchmarks (here and in `bench/peer_sam2.py`): spread over the middle of a
/// `size` slice, alternately on the object and on the background.
pub fn bench_click(k: usize, size: usize) -> crate::session::slice_prompt::Click {
    let spread = |golden: f64| (size as f64 * (0.35 + 0.3 * ((k as f64 * golden) % 1.0))).floor() as f32;
    crate::session::slice_prompt::Click { x: spread(0.618), y: spread(0.382), positive: k % 2 == 0 }
}

/// Times a click's feedback on a synthetic `S x S` slice, as the page's prompt tool gives it
/// (`slice_prompt::preview_after`, then the mask at the slice's size read back): the first click encodes the
/// slice (not timed), each of the `runs` next ones adds a click and runs the prompt encoder and mask decoder
/// once, continuing from the last. Weights are random.
pub fn click(config: &Sam2Config, device: &Device, who: &str, runs: usize) -> Result<Timing, String> {
    use crate::session::feature_cache::{DEFAULT_BUDGET_BYTES, FeatureCache};
    use crate::session::read_f32;
    use crate::session::slice_prompt::{SlicePrompt, at_slice_size, preview_after};
    let model = Sam2Base::new(config, device);
    let s = config.image_size;
    let image = synthetic_slice(0, 1, s);
    let cache = FeatureCache::shared(DEFAULT_BUDGET_BYTES);
    let mut prompt = SlicePrompt { slice: 0, class: 1, bbox: None, clicks: Vec::new(), round: 0 };
    let mut memo = None;
    let mut times = Vec::with_capacity(runs);
    for k in 0..=runs {
        prompt.clicks.push(bench_click(k, s));
        let start = Instant::now();
        let (out, _, next) = preview_after(&model, Some(&cache), &image, None, &prompt, memo.as_ref())?;
        pollster::block_on(read_f32(at_slice_size(out.low_res_masks, s, s)))?;
        if k > 0 {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        memo = Some(next);
    }
    Ok(Timing::new(who, times))
}

/// Times corrections as the page makes them after a run (`session::Correctable`): a propagation over
/// `slices` synthetic slices from the middle one's mask, kept for corrections, then `runs` clicks on the last
/// slice (tracked forward), each added to the ones before. Every click is timed, the first included (it runs
/// the memory attention; the next ones reuse it). Weights are random.
pub fn correction(config: &Sam2Config, device: &Device, who: &str, slices: usize, runs: usize) -> Result<Timing, String> {
    use crate::session::slice_prompt::{SlicePrompt, at_slice_size};
    use crate::session::{MemoryOptions, Mode, Placement, read_f32};
    let model = Sam2Base::new(config, device);
    let s = config.image_size;
    let mut session = synthetic_session(slices, s)?;
    session.keep_memories(true);
    let mut run = pollster::block_on(session.start(&model, Mode::Propagate(Placement::Middle), MemoryOptions::default()))?;
    while let Some(out) = pollster::block_on(run.step()) {
        out?;
    }
    let mut correctable = run.into_correctable(&[1], 0).ok_or("the run kept no memories")?;
    let mut prompt = SlicePrompt { slice: slices - 1, class: 1, bbox: None, clicks: Vec::new(), round: 1 };
    let mut times = Vec::with_capacity(runs);
    for k in 0..runs {
        prompt.clicks.push(bench_click(k, s));
        let start = Instant::now();
        let out = correctable.correct(&prompt)?;
        pollster::block_on(read_f32(at_slice_size(out.low_res_masks, s, s)))?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(Timing::new(who, times))
}

/// VmHWM of this process (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Which part `bench/peer_sam2.py` times.
pub enum PeerPart {
    Encoder,
    MemoryAttention { memories: usize },
    Propagate { slices: usize },
    Click { after_run: Option<usize> },
}

/// Runs `bench/peer_sam2.py` with `python` (a venv with Meta's `sam2`), on the same size and threads.
pub fn pytorch_peer(python: &str, part: PeerPart, device: &str, image_size: usize, threads: usize, warmup: usize, runs: usize) -> Result<Timing, String> {
    pytorch_peer_json(python, part, device, image_size, threads, warmup, runs).map(|(t, _)| t)
}

/// [`pytorch_peer`] with the peer's whole JSON answer (totals, peak memory).
pub fn pytorch_peer_json(
    python: &str,
    part: PeerPart,
    device: &str,
    image_size: usize,
    threads: usize,
    warmup: usize,
    runs: usize,
) -> Result<(Timing, serde_json::Value), String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/peer_sam2.py");
    let part_args = match part {
        PeerPart::Encoder => vec!["--part".to_string(), "encoder".to_string()],
        PeerPart::MemoryAttention { memories } => {
            vec!["--part".into(), "memory-attention".into(), "--memories".into(), memories.to_string()]
        }
        PeerPart::Propagate { slices } => vec!["--part".into(), "propagate".into(), "--slices".into(), slices.to_string()],
        PeerPart::Click { after_run: None } => vec!["--part".into(), "click".into()],
        PeerPart::Click { after_run: Some(n) } => vec!["--part".into(), "click".into(), "--slices".into(), n.to_string(), "--after-run".into()],
    };
    let out = Command::new(python)
        .args([script, "--image-size", &image_size.to_string(), "--threads", &threads.to_string()])
        .args(part_args)
        .args(["--device", device])
        .args(["--warmup", &warmup.to_string(), "--runs", &runs.to_string()])
        .output()
        .map_err(|e| format!("cannot run the peer with {python}: {e}"))?;
    if !out.status.success() {
        return Err(format!("the PyTorch peer failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("peer output: {e}"))?;
    let runs_ms: Vec<f64> = json["runs_ms"].as_array().ok_or("peer output has no runs_ms")?.iter().filter_map(|v| v.as_f64()).collect();
    if runs_ms.is_empty() {
        return Err("the peer timed nothing".into());
    }
    Ok((Timing::new(json["peer"].as_str().unwrap_or("PyTorch"), runs_ms), json))
}
