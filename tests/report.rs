//! Run plots and `mlrpl-engine report` (issue 19): `train` leaves valid
//! PNGs of the expected size in its run folder and, with stderr piped,
//! prints its progress as plain lines; `report` draws two runs in two
//! colours, plots test mAP against the known-label proportion, and names
//! the file of a missing or malformed metrics file in one error line.

mod tiny_run;

use mlrpl_engine::viz::plots::{self, colour, LINE_PLOT_SIZE};
use plotters::style::RGBColor;
use std::path::{Path, PathBuf};
use std::process::Output;
use tiny_run::{engine_command, run, scratch, stderr, tiny};

fn train(dir: &Path, extra: &[&str]) -> Output {
    let out = engine_command().args(tiny().train_args(dir, extra)).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

/// The picture at `path`, decoded, as RGB.
fn picture(path: &Path) -> image::RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

fn pixels_of(image: &image::RgbImage, colour: RGBColor) -> usize {
    image.pixels().filter(|p| p.0 == [colour.0, colour.1, colour.2]).count()
}

/// Two finished tiny runs: the full method at p = 0.5 and prompts only at
/// p = 0.9 (made once per test binary).
fn two_runs() -> &'static (PathBuf, PathBuf, String) {
    static RUNS: std::sync::OnceLock<(PathBuf, PathBuf, String)> = std::sync::OnceLock::new();
    RUNS.get_or_init(|| {
        let dir = scratch("runs");
        let (full, prompts) = (dir.join("full-0.5"), dir.join("prompts-0.9"));
        let out = train(&full, &[]);
        train(&prompts, &["--no-sdm", "--known-ratio", "0.9"]);
        (full, prompts, stderr(&out))
    })
}

#[test]
fn train_leaves_its_plots_and_prints_plain_progress_lines_when_piped() {
    let (full, _, err) = two_runs();
    assert!(!err.contains('\r') && !err.contains('\x1b'), "carriage return or escape in piped stderr: {err:?}");
    let first = err.lines().find(|l| l.starts_with("train: ")).unwrap_or_else(|| panic!("no progress line: {err}"));
    assert!(first.contains(" steps | epoch 1/3, loss ") && first.contains(" img/s"), "{first}");
    let last = err.lines().rfind(|l| l.starts_with("train: ")).unwrap();
    let (done, total) = last["train: ".len()..].split_once(' ').unwrap().0.split_once('/').unwrap();
    assert_eq!(done, total, "the last line is not the finished count: {last}");
    assert!(last.contains(" steps in "), "{last}");
    assert!(err.lines().any(|l| l.starts_with("evaluate: ") && l.contains(" images in ")), "{err}");

    for name in plots::CURVE_PLOTS {
        let image = picture(&full.join(name));
        assert_eq!(image.dimensions(), LINE_PLOT_SIZE, "{name}");
        assert!(pixels_of(&image, colour(0)) > 100, "{name}: the run's curve is not drawn");
        assert_eq!(pixels_of(&image, colour(1)), 0, "{name}: a second colour on a one-run plot");
    }
    let classes = tiny_run::CLASSES.len() as u32;
    let bars = picture(&full.join(plots::TEST_AP_PLOT));
    assert_eq!(bars.dimensions(), (LINE_PLOT_SIZE.0, 150 + 30 * classes));
    assert!(pixels_of(&bars, colour(0)) > 1000, "no AP bars drawn");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("test-metrics.json")).unwrap()).unwrap();
    let kept = summary["known_label_proportion"].as_f64().unwrap();
    assert!(kept > 0.2 && kept < 0.8, "{summary}");
}

#[test]
fn report_draws_two_runs_in_two_colours_and_map_against_known_labels() {
    let (full, prompts, _) = two_runs();
    // A folder with only a metrics file (an interrupted run): its curves
    // are drawn, and it is left out of the known-label plot.
    let unfinished = scratch("unfinished");
    std::fs::copy(full.join("metrics.jsonl"), unfinished.join("metrics.jsonl")).unwrap();
    let out_dir = scratch("report-out");
    let runs = [full.to_str().unwrap(), prompts.to_str().unwrap()];
    let out = run(&["report", runs[0], runs[1], "--out", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    for name in plots::CURVE_PLOTS.iter().chain([&plots::KNOWN_LABELS_PLOT]) {
        let path = out_dir.join(name);
        assert!(listed.contains(path.to_str().unwrap()), "{name} not listed: {listed}");
        let image = picture(&path);
        assert_eq!(image.dimensions(), LINE_PLOT_SIZE, "{name}");
        for (i, run) in ["first", "second"].iter().enumerate() {
            assert!(pixels_of(&image, colour(i)) > 100, "{name}: the {run} run's colour is missing");
        }
        assert_eq!(pixels_of(&image, colour(2)), 0, "{name}: a third colour for two runs");
    }

    let with_unfinished =
        run(&["report", runs[0], unfinished.to_str().unwrap(), "--out", scratch("report-two").to_str().unwrap()]);
    assert!(with_unfinished.status.success(), "{}", stderr(&with_unfinished));
    let note = stderr(&with_unfinished);
    assert!(note.contains("unfinished") && note.contains("left out of map-vs-known-labels.png"), "{note}");
}

#[test]
fn report_names_the_file_of_missing_or_malformed_metrics_in_one_line() {
    let out_dir = scratch("report-errors");
    let report = |dir: &Path| run(&["report", dir.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    let one_line = |out: &Output| {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
        let err = stderr(out);
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };

    let empty = scratch("no-metrics");
    let err = one_line(&report(&empty));
    assert!(err.contains(&format!("cannot read {}", empty.join("metrics.jsonl").display())), "{err}");

    let step = r#"{"epoch": 1, "step": 1, "loss": 0.5, "lr": 0.01, "images_per_s": 9.0}"#;
    for (name, second_line, problem) in [
        ("not-json", "{\"epoch\": 1, \"step\"", "line 2: not a JSON object"),
        ("no-lr", r#"{"epoch": 1, "step": 2, "loss": 0.4}"#, "line 2: a step line needs the numbers step, loss and lr"),
        ("unknown", r#"{"step": 2}"#, "line 2: neither a step line"),
    ] {
        let dir = scratch(name);
        std::fs::write(dir.join("metrics.jsonl"), format!("{step}\n{second_line}\n")).unwrap();
        let err = one_line(&report(&dir));
        assert!(err.contains(&format!("{} {problem}", dir.join("metrics.jsonl").display())), "{name}: {err}");
    }

    // A torn last line (a run killed while writing it) is not an error.
    let torn = scratch("torn");
    std::fs::write(torn.join("metrics.jsonl"), format!("{step}\n{{\"epoch\": 1, \"st")).unwrap();
    let out = report(&torn);
    assert!(out.status.success(), "{}", stderr(&out));
}
