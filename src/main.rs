//! The `mlrpl-engine` command line.

mod cli;

use clap::{Parser, Subcommand};
use mlrpl_engine::device::{self, DeviceRequest};
use mlrpl_engine::precision::PrecisionRequest;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mlrpl-engine",
    version,
    about = "Multi-label recognition with partial labels on a frozen CLIP: a Rust engine with its own autograd and CUDA kernels"
)]
struct Cli {
    /// Where to compute: `auto` uses a CUDA GPU when one is usable and falls back to the CPU.
    #[arg(long, value_enum, default_value_t = DeviceRequest::Auto, global = true)]
    device: DeviceRequest,

    /// Storage dtype of the frozen CLIP towers: `auto` is bf16 on a GPU and
    /// f32 on the CPU; trainable parameters and optimizer state are f32 always.
    #[arg(long, value_enum, default_value_t = PrecisionRequest::Auto, global = true)]
    precision: PrecisionRequest,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the MLR-PL model (semantic decoupling + category-specific prompts) on a dataset with partial labels.
    Train(Box<cli::train::TrainArgs>),
    /// Pre-train a small CLIP from scratch (contrastive loss) on the embedded set's image-caption pairs.
    Pretrain(Box<cli::pretrain::PretrainArgs>),
    /// Evaluate a checkpoint on a split: mAP, CP, CR, CF1, OP, OR, OF1 and their top-3 versions.
    Eval(cli::evaluate::EvalArgs),
    /// Predict the categories of images with a trained checkpoint (JSON out).
    Predict(cli::evaluate::PredictArgs),
    /// Draw where a checkpoint looks for each predicted category: attention heat maps over images (PNG).
    Explain(cli::explain::ExplainArgs),
    /// Encode images and texts with a CLIP checkpoint (embeddings as safetensors).
    Encode(cli::encode::EncodeArgs),
    /// Zero-shot classification of images with CLIP and the prompt "a photo of a {}.".
    ZeroShot(cli::zero_shot::ZeroShotArgs),
    /// Kernel microbenchmarks (checked against the CPU backend first) and end-to-end figures.
    Bench(cli::bench::BenchArgs),
    /// Plot runs on the same axes (loss, learning rate, validation mAP) and test mAP against the known-label proportion.
    Report(cli::report::ReportArgs),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Report(args) = &cli.command {
        return cli::report::run(args); // reads files only: no device
    }
    let selection = device::select(cli.device, device::probe_cuda)?;
    if let Some(notice) = &selection.notice {
        eprintln!("{notice}");
    }
    let device = &selection.device;
    let precision = cli.precision.resolve(device);
    match cli.command {
        Command::Encode(args) => cli::encode::run(args, device, precision),
        Command::ZeroShot(args) => cli::zero_shot::run(args, device, precision),
        Command::Train(args) => {
            mlrpl_engine::train::interrupt::install();
            cli::train::run(*args, device, precision)
        }
        Command::Pretrain(args) => {
            cli.precision.require_f32("pretrain")?;
            cli::pretrain::run(*args, device)
        }
        Command::Eval(args) => cli::evaluate::run_eval(args, device, precision),
        Command::Predict(args) => cli::evaluate::run_predict(args, device, precision),
        Command::Explain(args) => cli::explain::run(args, device, precision),
        Command::Bench(args) => cli::bench::run(args, device, precision),
        Command::Report(_) => unreachable!("report runs before the device is chosen"),
    }
}

fn main() -> ExitCode {
    mlrpl_engine::backend::cpu::heap::keep_freed_buffers();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<mlrpl_engine::train::interrupt::Interrupted>().is_some() {
                ExitCode::from(mlrpl_engine::train::interrupt::EXIT_STATUS)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
