//! `mlrpl-engine bench`: the kernel microbenchmarks and end-to-end figures
//! of `mlrpl_engine::bench`, printed as a table and written to
//! `OUT/bench.json` and `OUT/bench.md` (`docs/benchmarks/kernels.md`); with
//! `--e2e`, the MLR-PL training and inference steps of one configuration,
//! phase by phase (`docs/benchmarks.md`).

use super::data::load_clip;
use anyhow::{bail, Context, Result};
use clap::Args;
use mlrpl_engine::bench;
use mlrpl_engine::bench::report::{utc_now, BenchReport, RunInfo, FORMAT_VERSION};
use mlrpl_engine::bench::timing::Plan;
use mlrpl_engine::bench::train_step::{self, random_clip_weights, Scenario, StepConfig};
use mlrpl_engine::clip::Clip;
use mlrpl_engine::nn::WeightMap;
use mlrpl_engine::train::progress::Progress;
use mlrpl_engine::{Device, Precision, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Folder for bench.json and bench.md.
    #[arg(long, default_value = "runs/bench")]
    out: PathBuf,
    /// Fewer warm-up calls and samples, shorter samples: seconds on a CPU.
    #[arg(long)]
    quick: bool,
    /// Only benchmarks whose id (op/setup, e.g. layernorm_bwd/vit-b32) contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Timed samples per benchmark (default 20, 5 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Commit to record when the binary runs outside its git checkout (a GPU bundle).
    #[arg(long)]
    commit: Option<String>,
    /// Time the MLR-PL training step (phase by phase) and the inference step
    /// of the configuration below instead of the kernel benchmarks; --runs
    /// timed steps each (default 10, 3 with --quick).
    #[arg(long)]
    e2e: bool,
    /// --e2e: CLIP weights (safetensors); default: --model, else the bundled CLIP.
    #[arg(long, requires = "e2e", conflicts_with = "model")]
    clip: Option<PathBuf>,
    /// --e2e: a random-weight CLIP of this size (vit-b32, vit-b16, vit-l14), OpenAI's initialisation.
    #[arg(long, requires = "e2e")]
    model: Option<String>,
    /// --e2e: input resolution (default: the CLIP's own).
    #[arg(long, requires = "e2e")]
    image_size: Option<usize>,
    /// --e2e: images per step.
    #[arg(long, requires = "e2e", default_value_t = 8)]
    batch: usize,
    /// --e2e: categories (named after VOC's, then COCO's).
    #[arg(long, requires = "e2e", default_value_t = 20)]
    classes: usize,
    /// --e2e: learned context vectors per prompt.
    #[arg(long, requires = "e2e", default_value_t = 16)]
    n_ctx: usize,
    /// --e2e: untimed steps first (at least 1; the first one's loss is reported).
    #[arg(long, requires = "e2e")]
    warmup: Option<usize>,
    /// --e2e: seed of the random weights, images, labels and parameters.
    #[arg(long, requires = "e2e", default_value_t = 0)]
    seed: u64,
    /// --e2e: images, labels, class names and initial parameters from this
    /// file (as --export writes it) instead of drawing them.
    #[arg(long, requires = "e2e", conflicts_with = "export")]
    inputs: Option<PathBuf>,
    /// --e2e: write DIR/inputs.safetensors (and DIR/clip.safetensors for a
    /// --model) for tools/torch_reference.py, then stop.
    #[arg(long, requires = "e2e", value_name = "DIR")]
    export: Option<PathBuf>,
    /// --e2e: print the figures as one JSON object on stdout.
    #[arg(long, requires = "e2e")]
    json: bool,
}

impl BenchArgs {
    fn plan(&self) -> Plan {
        let (warmup, runs, min_sample_ms) = if self.quick { (1, 5, 0.2) } else { (3, 20, 2.0) };
        Plan { warmup, runs: self.runs.unwrap_or(runs).max(1), min_sample_ms }
    }
}

pub fn run(args: BenchArgs, device: &Device, precision: Precision) -> Result<()> {
    if args.e2e {
        return run_e2e(&args, device, precision);
    }
    let selection = bench::select(args.filter.as_deref())?;
    let plan = args.plan();
    let reference = match device {
        Device::Cpu => "none: the CPU backend is the reference the GPU is checked against".to_string(),
        Device::Cuda(_) => format!(
            "before timing, every output (and every buffer an in-place update changes) against the CPU backend on the same seeded inputs, relative error <= {:e} (bf16 cases and a {precision} end-to-end run: <= {:e})",
            bench::check::F32_TOLERANCE,
            bench::check::tolerance_for(precision.frozen_dtype())
        ),
    };
    let info = RunInfo {
        engine_version: env!("CARGO_PKG_VERSION"),
        device_kind: if device.is_cuda() { "cuda" } else { "cpu" },
        device: super::device_description(device),
        date: utc_now(),
        commit: args.commit.clone().unwrap_or_else(super::engine_commit),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        reference,
        warmup: plan.warmup,
        runs: plan.runs,
        min_sample_ms: plan.min_sample_ms,
    };
    eprintln!("bench on {}; check: {}", info.device, info.reference);
    let clip = |d: &Device| -> Result<Clip> { Ok(load_clip(None, d, precision)?.0) };
    let total = selection.cases.len() + selection.end_to_end.len();
    let progress = Progress::new("bench", total, 0, "benchmarks");
    let mut done = 0;
    let figures = bench::run(&selection, &plan, device, precision, &clip, |f| {
        let check = f.check_error.map_or_else(String::new, |e| format!(", check error {e:.1e}"));
        progress.println(&format!(
            "  {:<36} {:<42} {:>10.4} ms {:>10.2} {}{check}",
            f.id, f.shape, f.ms, f.throughput, f.unit
        ));
        done += 1;
        progress.set(done, Some(format!("last: {}", f.id)));
    })?;
    progress.finish();
    let report = BenchReport { format_version: FORMAT_VERSION, info, figures };
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let json_path = args.out.join("bench.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let markdown = report.markdown();
    let md_path = args.out.join("bench.md");
    std::fs::write(&md_path, &markdown).with_context(|| format!("writing {}", md_path.display()))?;
    println!("{markdown}");
    eprintln!("wrote {} and {}", json_path.display(), md_path.display());
    Ok(())
}

/// `bench --e2e`: builds the CLIP and the batch, then exports them or times
/// the steps.
fn run_e2e(args: &BenchArgs, device: &Device, precision: Precision) -> Result<()> {
    let dtype = precision.frozen_dtype();
    let (clip, clip_name, random_weights) = match (&args.model, &args.clip) {
        (Some(name), _) => {
            let weights = random_clip_weights(name, args.seed, device, dtype).context("--model")?;
            let clip = Clip::from_weights(weights.clone())?;
            (clip, format!("random {name} (seed {})", args.seed), Some(weights))
        }
        (None, path) => {
            let (clip, name) = load_clip(path.as_ref(), device, precision)?;
            (clip, name, None)
        }
    };
    let (warmup, runs) = if args.quick { (1, 3) } else { (2, 10) };
    let config = StepConfig {
        batch: args.batch,
        image_size: args.image_size.unwrap_or_else(|| clip.config.vision.resolution()),
        classes: args.classes,
        n_ctx: args.n_ctx,
        seed: args.seed,
        warmup: args.warmup.unwrap_or(warmup),
        steps: args.runs.unwrap_or(runs).max(1),
    };
    if config.batch == 0 || config.classes == 0 {
        bail!("--batch and --classes must be at least 1");
    }
    let scenario = match &args.inputs {
        Some(path) => Scenario::load(clip, &config, path, device).context("--inputs")?,
        None => Scenario::random(clip, &config, device)?,
    };
    if let Some(dir) = &args.export {
        std::fs::create_dir_all(dir).with_context(|| format!("--export: creating {}", dir.display()))?;
        scenario.export(&dir.join("inputs.safetensors"))?;
        if let Some(weights) = &random_weights {
            let tensors: Vec<(String, Tensor)> =
                weights.names().map(|n| Ok((n.to_string(), weights.get(n)?))).collect::<Result<_>>()?;
            let path = dir.join("clip.safetensors");
            let metadata = HashMap::from([("generator".to_string(), clip_name.clone())]);
            WeightMap::save(&path, &tensors, metadata)
                .with_context(|| format!("--export: writing {}", path.display()))?;
        }
        eprintln!("wrote the inputs of {clip_name} to {}", dir.display());
        return Ok(());
    }
    eprintln!("bench --e2e on {} with {clip_name}, {precision}", super::device_description(device));
    let figures = train_step::run(&scenario, &config, device)?;
    if args.json {
        let report = serde_json::json!({
            "format_version": FORMAT_VERSION,
            "engine_version": env!("CARGO_PKG_VERSION"),
            "device_kind": if device.is_cuda() { "cuda" } else { "cpu" },
            "device": super::device_description(device),
            "date": utc_now(),
            "commit": args.commit.clone().unwrap_or_else(super::engine_commit),
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "clip": clip_name,
            "precision": precision.frozen_dtype().to_string(),
            "figures": figures,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", figures.text());
    }
    Ok(())
}
