//! `mlrpl-engine report RUN_DIR... [--out DIR]`: the loss, learning-rate and
//! validation-mAP curves of several runs on the same axes, and test mAP
//! against the known-label proportion, one line per method (docs/report.md).

use anyhow::{Context, Result};
use clap::Args;
use mlrpl_engine::train::checkpoint;
use mlrpl_engine::viz::plots::{draw_curves, draw_known_labels, KnownLabelPoint, RunCurves, KNOWN_LABELS_PLOT};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Run folders of `train` (or `pretrain`), each with its metrics.jsonl;
    /// a run is named by its folder in the legends.
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
    /// Folder for the plots.
    #[arg(long, default_value = "runs/report")]
    out: PathBuf,
}

pub fn run(args: &ReportArgs) -> Result<()> {
    let mut curves = args.runs.iter().map(|dir| RunCurves::read(dir)).collect::<Result<Vec<_>>>()?;
    // Two folders of one name (runs/a/full, runs/b/full) are told apart by their paths.
    let names: Vec<String> = curves.iter().map(|c| c.name.clone()).collect();
    for (run, dir) in curves.iter_mut().zip(&args.runs) {
        if names.iter().filter(|&n| *n == run.name).count() > 1 {
            run.name = dir.display().to_string();
        }
    }
    let mut points = Vec::new();
    for dir in &args.runs {
        match known_label_point(dir)? {
            Some(point) => points.push(point),
            None => eprintln!(
                "{}: no test-metrics.json (not a finished `train` run), so it is left out of {KNOWN_LABELS_PLOT}",
                dir.display()
            ),
        }
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create --out {}", args.out.display()))?;
    let mut written = draw_curves(&curves, &args.out)?;
    if !points.is_empty() {
        let path = args.out.join(KNOWN_LABELS_PLOT);
        draw_known_labels(&points, "Test mAP against the known-label proportion", &path)?;
        written.push(path);
    }
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

/// A finished `train` run's point (None when it has no test-metrics.json):
/// its test mAP, and from the configuration its checkpoint records the
/// method (full, or prompts only with `--no-sdm`) and the known-label
/// proportion (the `--known-ratio` it sampled its mask at, or for a
/// `--label-mask` run the proportion that mask keeps).
fn known_label_point(dir: &Path) -> Result<Option<KnownLabelPoint>> {
    let summary_path = dir.join("test-metrics.json");
    if !summary_path.exists() {
        return Ok(None);
    }
    let summary = read_json(&summary_path)?;
    let test_map = summary["trained"]["map"]
        .as_f64()
        .with_context(|| format!("{}: no test mAP (trained.map)", summary_path.display()))?;
    let state_path = checkpoint::state_path(dir, "last");
    let state = read_json(&state_path)?;
    let config = &state["config"];
    let known = if config["label_mask"].is_null() {
        config["known_ratio"]
            .as_f64()
            .with_context(|| format!("{}: the configuration has no known_ratio", state_path.display()))?
    } else {
        summary["known_label_proportion"]
            .as_f64()
            .with_context(|| format!("{}: a --label-mask run without known_label_proportion", summary_path.display()))?
    };
    let no_sdm = config["model"]["no_sdm"]
        .as_bool()
        .with_context(|| format!("{}: the configuration has no model.no_sdm", state_path.display()))?;
    let mut method = if no_sdm { "prompts only (--no-sdm)" } else { "full method (prompts + decoupling)" }.to_string();
    if config["model"]["shared_ctx"].as_bool() == Some(true) {
        method.push_str(", shared context");
    }
    Ok(Some(KnownLabelPoint { method, known, test_map }))
}
