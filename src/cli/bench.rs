//! `mlrpl-engine bench`: the kernel microbenchmarks and end-to-end figures
//! of `mlrpl_engine::bench`, printed as a table and written to
//! `OUT/bench.json` and `OUT/bench.md` (`docs/benchmarks/kernels.md`).

use super::data::load_clip;
use anyhow::{Context, Result};
use clap::Args;
use mlrpl_engine::bench;
use mlrpl_engine::bench::report::{utc_now, BenchReport, RunInfo, FORMAT_VERSION};
use mlrpl_engine::bench::timing::Plan;
use mlrpl_engine::clip::Clip;
use mlrpl_engine::train::progress::Progress;
use mlrpl_engine::{Device, Precision};
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
}

impl BenchArgs {
    fn plan(&self) -> Plan {
        let (warmup, runs, min_sample_ms) = if self.quick { (1, 5, 0.2) } else { (3, 20, 2.0) };
        Plan { warmup, runs: self.runs.unwrap_or(runs).max(1), min_sample_ms }
    }
}

pub fn run(args: BenchArgs, device: &Device, precision: Precision) -> Result<()> {
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
