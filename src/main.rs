//! The `memseg` command line: the same core as the browser, for batch work, evaluation and benchmarks.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use memseg::backend::{self, Compute, Preference};
use memseg::bench::{self, Timing};
use memseg::eval::EvalRequest;
use memseg::imaging::{Modality, ReadOptions};
use memseg::sam2::Sam2Config;
use memseg::segment::{PromptFreeRequest, SegmentRequest, VolumeArgs};
use memseg::session::slice_prompt::SlicePrompt;
use memseg::session::{MemoryOptions, Mode, Placement};

#[derive(Parser)]
#[command(name = "memseg", version, about = "SAM2 segmentation of medical images on your own device")]
struct Cli {
    /// Compute backend: auto (a GPU through wgpu, else Flex CPU), wgpu, or flex.
    #[arg(long, global = true, default_value = "auto")]
    backend: Preference,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show which device the core computes on.
    Device,
    /// Write compact weights (safetensors, f32 or f16, config inside) from an official .pt checkpoint.
    Convert(memseg::convert::ConvertArgs),
    /// Describe a weights file (.pt or compact) as JSON: generation, dtype, config, parameter count, size.
    Info(memseg::convert::InfoArgs),
    /// Run the fixed conv + GELU + matmul check and print its result as JSON.
    Selftest,
    /// Time parts of the model next to Meta's PyTorch code (a peer run side by side).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Segment a volume from masks drawn on some slices and/or external supports (SAM2's memory bank).
    Segment(SegmentArgs),
    /// FS-MedSAM2's evaluation protocol on a dataset of volumes with label volumes: Dice per class.
    Eval(EvalArgs),
    /// Train prompt-free adapters (LW-Adapter, PEG, class tokens) on DIR/images/*.png + DIR/labels/*.png.
    Train(TrainArgs),
}

#[derive(Args)]
struct TrainArgs {
    /// Base weights (.pt or compact); frozen.
    #[arg(long)]
    weights: PathBuf,
    /// DATASET with images/<stem>.png and labels/<stem>.png (label maps, 0 = background).
    #[arg(long)]
    dataset: PathBuf,
    /// The adapter file to write (rewritten after every epoch; <out>.state.safetensors holds Adam's state).
    #[arg(long)]
    out: PathBuf,
    /// Label values to learn, comma-separated (default: every value found).
    #[arg(long, value_delimiter = ',')]
    classes: Option<Vec<u8>>,
    /// Training size H,W (multiples of 32; default the first image's size rounded up).
    #[arg(long, value_delimiter = ',')]
    size: Option<Vec<usize>>,
    #[arg(long, default_value_t = 8)]
    rank: usize,
    #[arg(long, default_value_t = 200)]
    epochs: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Fraction of the images (the last by name) kept for validation.
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
    /// Continue from --out and its state file.
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct SegmentArgs {
    /// Weights: an official SAM2/SAM2.1 checkpoint (.pt) or a compact file from `memseg convert`.
    #[arg(long)]
    weights: PathBuf,
    /// A trained adapter file (`memseg train`): prompt-free label maps for every image, no masks needed.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The query: image files in order, folders of images (sorted by name), a DICOM series folder, or a NIfTI file.
    #[arg(long, num_args = 1.., required = true)]
    frames: Vec<PathBuf>,
    /// A mask drawn on a query slice, INDEX=MASK.png (0-based; 0 is background, other values are classes). Repeatable.
    #[arg(long = "mask", value_parser = parse_mask)]
    masks: Vec<(usize, PathBuf)>,
    /// Clicks on a query slice, INDEX[:CLASS][@ROUND]=X,Y,LABEL[;X,Y,LABEL...] in the slice's pixels (LABEL 1:
    /// the object, 0: background; CLASS 1 when left out), applied one after another as a user clicks. ROUND 0
    /// (left out): before the first propagation; ROUND r: a correction after r rounds of propagation, on the
    /// tracked slice, which is then tracked again from that slice outwards (as in Meta's demo). Repeatable.
    #[arg(long = "points", value_parser = SlicePrompt::parse_points)]
    points: Vec<SlicePrompt>,
    /// A box on a query slice, INDEX[:CLASS][@ROUND]=X0,Y0,X1,Y1 in the slice's pixels (one per slice, class
    /// and round; the slice's clicks for that class refine it). Repeatable.
    #[arg(long = "box", value_parser = SlicePrompt::parse_box)]
    boxes: Vec<SlicePrompt>,
    /// An external support, IMAGE=MASK.png (another slice, volume or patient). Repeatable.
    #[arg(long = "support", value_parser = parse_support)]
    supports: Vec<(PathBuf, PathBuf)>,
    /// Where supports enter the query sequence: middle, or a slice index (propagate mode).
    #[arg(long, default_value = "middle")]
    support_at: String,
    /// propagate (S1SFQ/kSFQ: slice-to-slice memory, forward then reverse) or supports-only (1S1Q/kS1Q).
    #[arg(long, default_value = "propagate")]
    mode: String,
    #[command(flatten)]
    memory: MemoryArgs,
    /// Label values to segment, comma-separated (default: every value found in the masks).
    #[arg(long, value_delimiter = ',')]
    classes: Option<Vec<u8>>,
    #[command(flatten)]
    imaging: ImagingArgs,
    /// Ground truth (a NIfTI label volume or a folder of label PNGs): adds Dice and IoU to the report.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Output folder (created; must not exist unless --overwrite).
    #[arg(long)]
    out: PathBuf,
    /// Also write the low-resolution mask logits as <slice stem>.logits.npy (float32).
    #[arg(long)]
    save_logits: bool,
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    model: ModelArgs,
}

/// The model's settings on top of the weights file's config.
#[derive(Args)]
struct ModelArgs {
    /// The model's input side: 1024 (Meta's default) or 512 (MedSAM2's; about 4x less work a slice), or another
    /// multiple of 32. The same as --override ++model.image_size=N, and applied after the overrides.
    #[arg(long)]
    image_size: Option<usize>,
    /// A config override in Meta's Hydra form (e.g. ++model.num_maskmem=7), for .pt files of other configs.
    #[arg(long = "override")]
    overrides: Vec<String>,
}

impl ModelArgs {
    /// The overrides the weights are loaded with: the given ones, then `--image-size`.
    fn overrides(&self) -> Vec<String> {
        let size = self.image_size.map(|n| format!("++model.image_size={n}"));
        self.overrides.iter().cloned().chain(size).collect()
    }
}

#[derive(Args)]
struct MemoryArgs {
    /// At most N conditioning frames (supports, drawn slices) in each slice's memory attention: the closest.
    #[arg(long)]
    max_conditioning: Option<usize>,
    /// SAM2-SGP: use only the K supports most similar to each query slice (cosine of image features).
    #[arg(long)]
    select_supports: Option<usize>,
    /// SAM2-SGP: keep tracked memories by similarity-based eviction instead of the last 6 slices (propagate).
    #[arg(long)]
    similarity_eviction: bool,
}

#[derive(Args)]
struct ImagingArgs {
    /// Intensity mapping: ct-abdomen ([-125, 275] HU, the CT default), ct-soft, ct-lung, ct-bone, ct-brain,
    /// mr (0.5-99.5 percentiles, the MR default), minmax, identity, window:LOW,HIGH or percentile:LOW,HIGH.
    #[arg(long)]
    intensity: Option<String>,
    /// The modality when the files do not say it (NIfTI, images): ct or mr.
    #[arg(long)]
    modality: Option<String>,
    /// For a 4-D NIfTI file (several MR sequences, time points or directions): the volume to read, 0-based.
    #[arg(long)]
    volume: Option<usize>,
}

#[derive(Args)]
struct EvalArgs {
    /// Weights (.pt or compact).
    #[arg(long)]
    weights: PathBuf,
    /// DATASET with images/<case>.nii[.gz] and labels/<case>.nii[.gz].
    #[arg(long)]
    dataset: PathBuf,
    /// Label values to evaluate, comma-separated (default: all in the support case).
    #[arg(long, value_delimiter = ',')]
    classes: Option<Vec<u8>>,
    /// The case whose slices are the supports (default: the first by name).
    #[arg(long)]
    support_case: Option<String>,
    /// Support slices per class (centres of equal parts of the class's z-range).
    #[arg(long, default_value_t = 1)]
    supports_per_class: usize,
    /// propagate (S1SFQ from the middle) or supports-only (1S1Q).
    #[arg(long, default_value = "propagate")]
    mode: String,
    #[command(flatten)]
    memory: MemoryArgs,
    #[command(flatten)]
    imaging: ImagingArgs,
    /// Also write the JSON report here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

fn parse_mask(spec: &str) -> Result<(usize, PathBuf), String> {
    let (index, path) = spec.split_once('=').ok_or("expected INDEX=MASK.png")?;
    let index = index.trim().parse().map_err(|e| format!("slice index '{index}': {e}"))?;
    Ok((index, PathBuf::from(path)))
}

fn parse_support(spec: &str) -> Result<(PathBuf, PathBuf), String> {
    let (image, mask) = spec.split_once('=').ok_or("expected IMAGE=MASK.png")?;
    Ok((PathBuf::from(image), PathBuf::from(mask)))
}

fn parse_mode(mode: &str, support_at: &str) -> Result<Mode, String> {
    let at = match support_at {
        "middle" => Placement::Middle,
        i => Placement::Index(i.parse().map_err(|_| format!("--support-at: expected middle or a slice index, got '{i}'"))?),
    };
    match mode {
        "propagate" => Ok(Mode::Propagate(at)),
        "supports-only" => Ok(Mode::SupportsOnly),
        m => Err(format!("--mode: expected propagate or supports-only, got '{m}'")),
    }
}

fn parse_modality(m: &Option<String>) -> Result<Option<Modality>, String> {
    match m.as_deref() {
        None => Ok(None),
        Some("ct") => Ok(Some(Modality::Ct)),
        Some("mr") => Ok(Some(Modality::Mr)),
        Some(m) => Err(format!("--modality: expected ct or mr, got '{m}'")),
    }
}

impl MemoryArgs {
    fn options(&self) -> MemoryOptions {
        MemoryOptions {
            max_conditioning: self.max_conditioning,
            select_supports: self.select_supports,
            similarity_eviction: self.similarity_eviction,
        }
    }
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The image encoder (`forward_image`: Hiera trunk, FPN neck, high-res projections) on one image.
    Encoder(EncoderBench),
    /// The memory attention of one tracked frame against 1..7 memory frames (spatial memories + pointers).
    MemoryAttention(MemoryAttentionBench),
    /// A whole propagation (session, S1SFQ order) over --slices synthetic slices: time per tracked slice, peak memory.
    Propagate(PropagateBench),
    /// A click's feedback after the first on one slice (prompt encoder, mask decoder, the mask at the slice's
    /// size), as the page's prompt tool computes it; the peer: Meta's video predictor on a one-frame video.
    Click(ClickBench),
}

#[derive(Args)]
struct ClickBench {
    #[command(flatten)]
    common: EncoderBench,
    /// Time corrections instead: clicks on a slice that a propagation over this many slices tracked (each
    /// attends to the memory bank; the first of them runs the memory attention).
    #[arg(long)]
    after_run: Option<usize>,
}

#[derive(Args)]
struct PropagateBench {
    #[command(flatten)]
    common: EncoderBench,
    /// Slices in the synthetic volume (a mask is drawn on the middle one).
    #[arg(long, default_value_t = 10)]
    slices: usize,
    /// Run the propagation a second time through the feature cache the first run filled (a re-run after a
    /// correction) and time that too.
    #[arg(long)]
    rerun: bool,
}

#[derive(Args)]
struct MemoryAttentionBench {
    #[command(flatten)]
    common: EncoderBench,
    /// Numbers of memory frames to time, comma-separated.
    #[arg(long, default_value = "1,2,3,4,5,6,7")]
    memories: String,
}

#[derive(Args)]
struct EncoderBench {
    /// Model size: tiny, small, base_plus, large.
    #[arg(long, default_value = "tiny")]
    model: String,
    #[arg(long, default_value_t = 1024)]
    image_size: usize,
    /// Backends to time, comma-separated (flex, wgpu).
    #[arg(long, default_value = "flex")]
    backends: String,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// CPU threads for Flex and the peer (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Python with Meta's `sam2` installed: also time Meta's code on the same input size and threads.
    #[arg(long)]
    peer: Option<String>,
    /// Where the peer runs: cpu (fp32, same threads) or cuda (PyTorch on the GPU, for GPU comparisons).
    #[arg(long, default_value = "cpu")]
    peer_device: String,
}

/// What both kinds of `memseg segment` read and write.
fn volume_args(args: SegmentArgs) -> Result<VolumeArgs, String> {
    Ok(VolumeArgs {
        modality: parse_modality(&args.imaging.modality)?,
        read: ReadOptions { volume: args.imaging.volume },
        intensity: args.imaging.intensity,
        weights: args.weights,
        frames: args.frames,
        truth: args.truth,
        out: args.out,
        overwrite: args.overwrite,
        overrides: args.model.overrides(),
    })
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("memseg: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Flex allocates a fresh buffer for every op's output. glibc serves large ones with mmap and gives them back
/// on free (or trims the heap), so each op then pays a page fault per 4 KiB to get zeroed pages again: 295,876
/// faults in `memseg bench encoder --image-size 512`, 6-8% of its time. Keeping freed memory in the heap lets
/// the next op reuse it (64,610 faults); the peak is the same, it is just not returned between ops.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called first thing, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

fn init(pref: Preference) -> Result<Compute, String> {
    let compute = backend::init_native(pref)?;
    eprintln!("memseg: computing with {}", compute.describe());
    Ok(compute)
}

fn run(cli: Cli) -> Result<(), String> {
    let json = match cli.command {
        Command::Device => serde_json::to_string_pretty(&init(cli.backend)?),
        Command::Convert(args) => serde_json::to_string_pretty(&memseg::convert::convert(&args)?),
        Command::Info(args) => serde_json::to_string_pretty(&memseg::convert::info(&args)?),
        Command::Selftest => {
            let result = pollster::block_on(memseg::selftest::run(&init(cli.backend)?.device))?;
            serde_json::to_string(&result)
        }
        Command::Bench(BenchCommand::Encoder(args)) => serde_json::to_string_pretty(&bench_encoder(args)?),
        Command::Bench(BenchCommand::MemoryAttention(args)) => serde_json::to_string_pretty(&bench_memory_attention(args)?),
        Command::Bench(BenchCommand::Propagate(args)) => serde_json::to_string_pretty(&bench_propagate(args)?),
        Command::Bench(BenchCommand::Click(args)) => serde_json::to_string_pretty(&bench_click(args)?),
        Command::Segment(args) if args.adapter.is_some() => {
            if !args.masks.is_empty() || !args.supports.is_empty() || !args.points.is_empty() || !args.boxes.is_empty() {
                return Err("--adapter segments prompt-free: give no --mask, --support, --points or --box".into());
            }
            if args.save_logits || args.classes.is_some() {
                return Err("--adapter segments the adapter's own classes: --classes and --save-logits do not apply".into());
            }
            let adapter = args.adapter.clone().expect("checked");
            let request = PromptFreeRequest { volume: volume_args(args)?, adapter };
            let report = memseg::segment::run_prompt_free(&request, &init(cli.backend)?.device)?;
            serde_json::to_string_pretty(&report)
        }
        Command::Segment(args) => {
            let request = SegmentRequest {
                mode: parse_mode(&args.mode, &args.support_at)?,
                memory: args.memory.options(),
                masks: args.masks.clone(),
                prompts: args.boxes.iter().chain(&args.points).cloned().collect(),
                supports: args.supports.clone(),
                classes: args.classes.clone(),
                save_logits: args.save_logits,
                volume: volume_args(args)?,
            };
            let report = memseg::segment::run(&request, &init(cli.backend)?.device)?;
            serde_json::to_string_pretty(&report)
        }
        Command::Train(args) => {
            let size = match args.size.as_deref() {
                None => None,
                Some([h, w]) => Some([*h, *w]),
                Some(_) => return Err("--size: expected H,W".into()),
            };
            let request = memseg::train::TrainRequest {
                weights: args.weights,
                dataset: args.dataset,
                out: args.out,
                classes: args.classes,
                size,
                rank: args.rank,
                epochs: args.epochs,
                learning_rate: args.lr,
                batch: args.batch,
                val_fraction: args.val_fraction,
                resume: args.resume,
                seed: args.seed,
                overrides: args.model.overrides(),
            };
            serde_json::to_string_pretty(&memseg::train::run(&request, &init(cli.backend)?.device)?)
        }
        Command::Eval(args) => {
            let request = EvalRequest {
                mode: parse_mode(&args.mode, "middle")?,
                memory: args.memory.options(),
                modality: parse_modality(&args.imaging.modality)?,
                read: ReadOptions { volume: args.imaging.volume },
                intensity: args.imaging.intensity,
                weights: args.weights,
                dataset: args.dataset,
                classes: args.classes,
                support_case: args.support_case,
                supports_per_class: args.supports_per_class,
                overrides: args.model.overrides(),
            };
            let report = memseg::eval::run(&request, &init(cli.backend)?.device)?;
            eprint!("{}", memseg::eval::table(&report));
            let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
            if let Some(out) = &args.out {
                std::fs::write(out, &json).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            }
            Ok(json)
        }
    };
    // Not println!: a closed pipe (`memseg info W | head -1`) must end the program quietly, not panic.
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{}", json.map_err(|e| e.to_string())?) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(format!("cannot write the result: {e}")),
        _ => {}
    }
    Ok(())
}

/// The config and thread count of a benchmark (Flex's thread pool is set here, once).
fn bench_setup(args: &EncoderBench) -> Result<(Sam2Config, usize), String> {
    let mut config = Sam2Config::preset(&args.model)?;
    config.image_size = args.image_size;
    config.validate()?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().map_err(|e| e.to_string())?;
    Ok((config, threads))
}

fn bench_encoder(args: EncoderBench) -> Result<Vec<Timing>, String> {
    let (config, threads) = bench_setup(&args)?;
    let mut timings = Vec::new();
    for name in args.backends.split(',') {
        let compute = init(name.trim().parse()?)?;
        let who = format!("memseg {}", compute.describe());
        timings.push(bench::encoder(&config, &compute.device, &who, args.warmup, args.runs)?);
    }
    if let Some(python) = &args.peer {
        timings.push(bench::pytorch_peer(python, bench::PeerPart::Encoder, &args.peer_device, args.image_size, threads, args.warmup, args.runs)?);
    }
    let (model, size, runs) = (&args.model, args.image_size, args.runs);
    eprintln!("\nimage encoder, SAM2-{model} at {size}x{size}, {threads} CPU threads, median of {runs} runs:");
    let peer = args.peer.as_ref().and_then(|_| timings.last()).map(|t| t.median_ms);
    for t in &timings {
        let ratio = peer.map(|p| format!("  ({:.2}x the PyTorch peer)", t.median_ms / p)).unwrap_or_default();
        eprintln!("  {:>9.1} ms  {}{ratio}", t.median_ms, t.who);
    }
    Ok(timings)
}

fn bench_click(click: ClickBench) -> Result<Vec<Timing>, String> {
    let args = &click.common;
    let (config, threads) = bench_setup(args)?;
    let mut timings = Vec::new();
    for name in args.backends.split(',') {
        let compute = init(name.trim().parse()?)?;
        let who = format!("memseg {}", compute.describe());
        timings.push(match click.after_run {
            None => bench::click(&config, &compute.device, &who, args.runs)?,
            Some(slices) => bench::correction(&config, &compute.device, &who, slices, args.runs)?,
        });
    }
    if let Some(python) = &args.peer {
        let part = bench::PeerPart::Click { after_run: click.after_run };
        timings.push(bench::pytorch_peer(python, part, &args.peer_device, args.image_size, threads, 0, args.runs)?);
    }
    let (model, size, runs) = (&args.model, args.image_size, args.runs);
    let what = match click.after_run {
        None => "a click after the first".to_string(),
        Some(n) => format!("a correction click after a {n}-slice run (the first one, which runs the memory attention, is timed too)"),
    };
    eprintln!("\n{what}, SAM2-{model} at {size}x{size}, {threads} CPU threads, median of {runs} clicks:");
    let peer = args.peer.as_ref().and_then(|_| timings.last()).map(|t| t.median_ms);
    for t in &timings {
        let ratio = peer.map(|p| format!("  ({:.2}x the PyTorch peer)", t.median_ms / p)).unwrap_or_default();
        eprintln!("  {:>9.1} ms  {}{ratio}", t.median_ms, t.who);
    }
    Ok(timings)
}

fn bench_propagate(args: PropagateBench) -> Result<serde_json::Value, String> {
    let common = &args.common;
    let (config, threads) = bench_setup(common)?;
    let mut ours = Vec::new();
    for name in common.backends.split(',') {
        let compute = init(name.trim().parse()?)?;
        ours.push(bench::propagate(&config, &compute.device, &format!("memseg {}", compute.describe()), args.slices, args.rerun)?);
    }
    let peer = match &common.peer {
        Some(python) => {
            let part = bench::PeerPart::Propagate { slices: args.slices };
            Some(bench::pytorch_peer_json(python, part, &common.peer_device, common.image_size, threads, 0, 1)?)
        }
        None => None,
    };
    let size = common.image_size;
    eprintln!("\npropagation over {} slices, SAM2-{} at {size}x{size}, {threads} CPU threads, median ms per tracked slice:", args.slices, common.model);
    let peer_ms = peer.as_ref().map(|(t, _)| t.median_ms);
    for t in &ours {
        let ratio = peer_ms.map(|p| format!(" ({:.2}x the peer)", t.per_slice.median_ms / p)).unwrap_or_default();
        let rss = t.peak_rss_mib.map(|m| format!(", peak RSS {m:.0} MiB")).unwrap_or_default();
        eprintln!("  {:>9.1} ms{ratio}  {} (total {:.1} s, {} encodings{rss})", t.per_slice.median_ms, t.who, t.total_s, t.frames_encoded);
        if let Some(r) = &t.rerun {
            let ratio = peer_ms.map(|p| format!(" ({:.2}x the peer)", r.per_slice.median_ms / p)).unwrap_or_default();
            eprintln!("  {:>9.1} ms{ratio}  the same, re-run through the feature cache (total {:.1} s, {} encodings)", r.per_slice.median_ms, r.total_s, r.frames_encoded);
        }
    }
    if let Some((t, json)) = &peer {
        eprintln!("  {:>9.1} ms  {} (total {:.1} s, peak {:.0} MiB)", t.median_ms, t.who, json["total_s"].as_f64().unwrap_or(0.0), json["peak_mib"].as_f64().unwrap_or(0.0));
    }
    Ok(serde_json::json!({ "memseg": ours, "peer": peer.map(|(t, json)| serde_json::json!({ "per_slice": t, "raw": json })) }))
}

fn bench_memory_attention(args: MemoryAttentionBench) -> Result<Vec<(usize, Vec<Timing>)>, String> {
    let common = &args.common;
    let (config, threads) = bench_setup(common)?;
    let counts: Vec<usize> = args.memories.split(',').map(|n| n.trim().parse().map_err(|e| format!("--memories: {e}"))).collect::<Result<_, _>>()?;
    let devices: Vec<Compute> = common.backends.split(',').map(|n| init(n.trim().parse()?)).collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    for &n in &counts {
        let mut timings = Vec::new();
        for compute in &devices {
            let who = format!("memseg {}", compute.describe());
            timings.push(bench::memory_attention(&config, &compute.device, &who, n, common.warmup, common.runs)?);
        }
        if let Some(python) = &common.peer {
            let part = bench::PeerPart::MemoryAttention { memories: n };
            timings.push(bench::pytorch_peer(python, part, &common.peer_device, common.image_size, threads, common.warmup, common.runs)?);
        }
        rows.push((n, timings));
    }
    let size = common.image_size;
    eprintln!("\nmemory attention, SAM2-{} at {size}x{size}, {threads} CPU threads, median ms of {} runs:", common.model, common.runs);
    for (n, timings) in &rows {
        let peer = common.peer.as_ref().and_then(|_| timings.last()).map(|t| t.median_ms);
        let cells: Vec<String> = timings
            .iter()
            .map(|t| format!("{:.1}{}", t.median_ms, peer.map(|p| format!(" ({:.2}x)", t.median_ms / p)).unwrap_or_default()))
            .collect();
        eprintln!("  {n} memories: {}", cells.join(" | "));
    }
    let names: Vec<&str> = rows.first().map(|(_, t)| t.iter().map(|t| t.who.as_str()).collect()).unwrap_or_default();
    eprintln!("  columns: {}", names.join(" | "));
    Ok(rows)
}
