//! Kill tests (issue 18): `train` SIGKILLed at seeded random moments and at
//! every step of a checkpoint or metrics write (`MLRPL_FAULT`, see
//! `src/train/fault.rs`), then resumed until it finishes, ends with
//! parameters and optimizer state bit-identical to an uninterrupted run's,
//! a folder with no leftovers, and a metrics file that parses and logs each
//! step once. Ctrl-C saves the state at the next step boundary and exits 130.

mod tiny_run;

use mlrpl_engine::nn::WeightMap;
use mlrpl_engine::rng::Rng;
use mlrpl_engine::viz::plots;
use mlrpl_engine::Device;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tiny_run::{engine_command, scratch, stderr, tiny};

/// The final checkpoint's tensors (parameters and optimizer state) as bits.
fn final_tensors(dir: &Path, tag: &str) -> BTreeMap<String, Vec<u32>> {
    let json = dir.join(format!("checkpoint-{tag}.json"));
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let w = WeightMap::load(&dir.join(state["tensors"].as_str().unwrap()), &Device::Cpu).unwrap();
    w.names()
        .map(|n| (n.to_string(), w.get(n).unwrap().to_vec().unwrap().iter().map(|v| v.to_bits()).collect()))
        .collect()
}

/// The metrics file with the timing field removed, after checking that
/// every line parses and each step (and each epoch) is logged once.
fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert!(text.ends_with('\n'), "torn last line: {text:?}");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            v.as_object_mut().unwrap().remove("images_per_s");
            v
        })
        .collect();
    for kind in ["loss", "val_map"] {
        let steps: Vec<u64> =
            lines.iter().filter(|l| l.get(kind).is_some()).map(|l| l["step"].as_u64().unwrap()).collect();
        assert!(steps.windows(2).all(|w| w[0] < w[1]), "{kind} lines: steps not each once, in order: {steps:?}");
    }
    lines
}

/// Only what a finished run keeps: no temporary file, no stale tensors.
fn assert_no_leftovers(dir: &Path) {
    let named: Vec<String> = ["last", "best"]
        .iter()
        .map(|tag| {
            let json = std::fs::read_to_string(dir.join(format!("checkpoint-{tag}.json"))).unwrap();
            serde_json::from_str::<serde_json::Value>(&json).unwrap()["tensors"].as_str().unwrap().to_string()
        })
        .collect();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let expected =
            ["checkpoint-last.json", "checkpoint-best.json", "metrics.jsonl", "label-mask.json", "test-metrics.json"]
                .contains(&name.as_str())
                || plots::CURVE_PLOTS.contains(&name.as_str())
                || name == plots::TEST_AP_PLOT
                || named.contains(&name);
        assert!(expected, "leftover {name} in {}", dir.display());
    }
}

fn train_command(dir: &Path, resume: bool) -> std::process::Command {
    let extra: &[&str] = if resume { &["--resume"] } else { &[] };
    let mut command = engine_command();
    command.args(tiny().train_args(dir, extra));
    command
}

/// Runs the interrupted run to its end: resumed when a checkpoint exists,
/// fresh otherwise (killed before its first checkpoint).
fn finish(dir: &Path) {
    let resume = dir.join("checkpoint-last.json").exists();
    let out = train_command(dir, resume).output().unwrap();
    assert!(out.status.success(), "the resumed run failed: {}", stderr(&out));
}

struct Reference {
    tensors: BTreeMap<String, Vec<u32>>,
    best: BTreeMap<String, Vec<u32>>,
    metrics: Vec<serde_json::Value>,
    seconds: f64,
}

fn reference() -> &'static Reference {
    static REFERENCE: std::sync::OnceLock<Reference> = std::sync::OnceLock::new();
    REFERENCE.get_or_init(|| {
        let dir = scratch("reference");
        let started = Instant::now();
        let out = train_command(&dir, false).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let seconds = started.elapsed().as_secs_f64();
        assert_no_leftovers(&dir);
        Reference {
            tensors: final_tensors(&dir, "last"),
            best: final_tensors(&dir, "best"),
            metrics: metrics(&dir),
            seconds,
        }
    })
}

#[track_caller]
fn assert_same_as_reference(dir: &Path) {
    let want = reference();
    assert!(final_tensors(dir, "last") == want.tensors, "final tensors differ from the uninterrupted run's");
    assert!(final_tensors(dir, "best") == want.best, "best tensors differ from the uninterrupted run's");
    assert_eq!(metrics(dir), want.metrics);
    assert_no_leftovers(dir);
}

#[test]
fn kills_inside_checkpoint_and_metrics_writes_leave_a_resumable_run() {
    // 3 epochs of 4 steps: 5 checkpoint saves (best and last, or last), 15 metrics lines.
    for fault in [
        "tensors-tmp:1",
        "tensors-tmp:2",
        "tensors-renamed:1",
        "tensors-renamed:4",
        "json-tmp:1",
        "json-tmp:3",
        "json-renamed:1",
        "json-renamed:2",
        "metrics-line:1",
        "metrics-line:5",
        "metrics-line:11",
    ] {
        let dir = scratch(&format!("fault-{}", fault.replace(':', "-")));
        let out = train_command(&dir, false).env("MLRPL_FAULT", fault).output().unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{fault}: not killed: {}", stderr(&out));
        finish(&dir);
        assert_same_as_reference(&dir);
    }
}

#[test]
fn kills_at_seeded_random_moments_leave_a_resumable_run() {
    let span = reference().seconds.max(0.2);
    let mut rng = Rng::new(18);
    for trial in 0..4 {
        let dir = scratch(&format!("random-{trial}"));
        // Up to three kills per trial, each at a random moment of a run.
        for _ in 0..3 {
            let resume = dir.join("checkpoint-last.json").exists();
            let mut child = train_command(&dir, resume)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let wait = Duration::from_secs_f64(span * (rng.below(1000) as f64 / 1000.0));
            std::thread::sleep(wait);
            let _ = child.kill();
            child.wait().unwrap();
        }
        finish(&dir);
        assert_same_as_reference(&dir);
    }
}

#[test]
fn ctrl_c_saves_the_state_at_the_next_step_and_the_run_resumes_exactly() {
    let dir = scratch("ctrl-c");
    let child = train_command(&dir, false)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt inside the second epoch (after step 6's line).
    let metrics_path = dir.join("metrics.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&metrics_path).map_or(0, |t| t.lines().count()) < 6 {
        assert!(Instant::now() < deadline, "the run never reached step 6");
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.contains("interrupted (Ctrl-C)") && last.contains("checkpoint-last.json") && last.contains("--resume"),
        "{last}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("checkpoint-last.json")).unwrap()).unwrap();
    assert!(state["step"].as_u64().unwrap() >= 6, "{state}");
    finish(&dir);
    assert_same_as_reference(&dir);
}
