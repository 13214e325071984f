//! The `memseg` command line: the same core as the browser, for batch work, evaluation and benchmarks.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use memseg::backend::{self, Compute, Preference};
use memseg::bench::{self, Timing};
use memseg::sam2::Sam2Config;

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
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The image encoder (`forward_image`: Hiera trunk, FPN neck, high-res projections) on one image.
    Encoder(EncoderBench),
    /// The memory attention of one tracked frame against 1..7 memory frames (spatial memories + pointers).
    MemoryAttention(MemoryAttentionBench),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("memseg: error: {message}");
            ExitCode::FAILURE
        }
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
    };
    println!("{}", json.map_err(|e| e.to_string())?);
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
