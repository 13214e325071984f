//! The `memseg` command line: the same core as the browser, for batch work, evaluation and benchmarks.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use memseg::backend::{self, Preference};

#[derive(Parser)]
#[command(name = "memseg", version, about = "SAM2 segmentation of medical images on your own device")]
struct Cli {
    /// Compute backend: auto (wgpu, else Flex CPU), wgpu, or flex.
    #[arg(long, global = true, default_value = "auto")]
    backend: Preference,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show which device the core computes on.
    Device,
    /// Run the fixed conv + GELU + matmul check and print its result as JSON.
    Selftest,
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

fn run(cli: Cli) -> Result<(), String> {
    let compute = backend::init_native(cli.backend)?;
    eprintln!("memseg: computing with {}", compute.describe());
    let json = match cli.command {
        Command::Device => serde_json::to_string_pretty(&compute),
        Command::Selftest => {
            let result = pollster::block_on(memseg::selftest::run(&compute.device))?;
            serde_json::to_string(&result)
        }
    };
    println!("{}", json.map_err(|e| e.to_string())?);
    Ok(())
}
