//! The `mlrpl-engine` command line.

use clap::{Parser, Subcommand};
use mlrpl_engine::device::{self, DeviceRequest};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "mlrpl-engine", version, about = "Multi-label recognition with partial labels on a frozen CLIP: a Rust engine with its own autograd and CUDA kernels")]
struct Cli {
    /// Where to compute: `auto` uses a CUDA GPU when one is usable and falls back to the CPU.
    #[arg(long, value_enum, default_value_t = DeviceRequest::Auto, global = true)]
    device: DeviceRequest,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the MLR-PL model (semantic decoupling + category-specific prompts) on a dataset with partial labels.
    Train,
    /// Evaluate a checkpoint on a split: mAP, CP, CR, CF1, OP, OR, OF1.
    Eval,
    /// Predict the categories of images with a trained checkpoint.
    Predict,
    /// Encode images and texts with a CLIP checkpoint.
    Encode,
    /// Run the kernel and end-to-end benchmarks.
    Bench,
}

impl Command {
    /// The project issue that implements the command.
    fn planned_in(&self) -> (&'static str, u32) {
        match self {
            Command::Train => ("train", 4),
            Command::Eval => ("eval", 4),
            Command::Predict => ("predict", 4),
            Command::Encode => ("encode", 3),
            Command::Bench => ("bench", 6),
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let selection = device::select(cli.device, device::probe_cuda)?;
    if let Some(notice) = &selection.notice {
        eprintln!("{notice}");
    }
    let (name, issue) = cli.command.planned_in();
    anyhow::bail!("`{name}` is not implemented in this build yet (planned in issue {issue}); the engine core is in place")
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
