//! `tools/gpu-check.sh` runs where no GPU is, so that it cannot rot between
//! GPU sessions: a fake bundle (the script, a MANIFEST, kernel-names.txt,
//! packed as `bundle.tar.xz` beside the entry script `run.sh`, as
//! `tools/gpu-bundle.sh` lays it out) is unpacked and run with
//! `GPU_CHECK_DRY_RUN=1`, which replaces every GPU step by its SKIP row but
//! keeps the control flow, the library search, results.md, the log tarball
//! and the at-most-three-file output. Needs bash, tar, xz (or Python) and
//! gzip; takes about a second.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Every check of the script, in its order.
const CHECKS: &[&str] = &[
    "probe",
    "ops_smoke",
    "step_smoke",
    "device_select",
    "cuda_ops",
    "cuda_training",
    "train_bf16",
    "train_f32",
    "bench",
    "bench_torch",
    "bench_report",
    "kernels_nvrtc",
    "memcheck",
    "racecheck",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlrpl-gpu-check-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// A bundle folder as tools/gpu-bundle.sh leaves it, with no binaries.
fn fake_bundle(root: &Path) -> PathBuf {
    let stage = root.join("stage");
    fs::create_dir_all(&stage).unwrap();
    fs::copy(repo().join("tools/gpu-check.sh"), stage.join("gpu-check.sh")).unwrap();
    fs::write(stage.join("MANIFEST"), "commit: 0123abcd (dry-run test)\n").unwrap();
    fs::write(stage.join("kernel-names.txt"), "adamw_step\nlayernorm_forward\n").unwrap();
    let bundle = root.join("gpu-bundle");
    fs::create_dir_all(&bundle).unwrap();
    let tar = run(Command::new("tar").arg("-cJf").arg(bundle.join("bundle.tar.xz")).arg("-C").arg(&stage).arg("."));
    assert!(tar.status.success(), "tar: {}", String::from_utf8_lossy(&tar.stderr));
    fs::copy(repo().join("tools/gpu-bundle-run.sh"), bundle.join("run.sh")).unwrap();
    bundle
}

/// A fake `nvidia` namespace package whose `cublas/lib` holds (empty)
/// libcublas and libcublasLt files, as the nvidia-* pip wheels do.
fn fake_pip_wheels(root: &Path) -> PathBuf {
    let site = root.join("site");
    let lib = site.join("nvidia/cublas/lib");
    fs::create_dir_all(&lib).unwrap();
    fs::write(lib.join("libcublas.so.13"), "").unwrap();
    fs::write(lib.join("libcublasLt.so.13"), "").unwrap();
    site
}

fn dry_run(root: &Path, total_s: &str) -> (Output, PathBuf, PathBuf) {
    let bundle = fake_bundle(root);
    let site = fake_pip_wheels(root);
    let out = root.join("out");
    let work = root.join("work");
    let output = run(Command::new("bash")
        .arg(bundle.join("run.sh"))
        .arg(&out)
        .env("GPU_CHECK_DRY_RUN", "1")
        .env("GPU_CHECK_WORK", &work)
        .env("TOTAL_S", total_s)
        .env("PYTHONPATH", &site)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("CUDA_HOME"));
    (output, out, work)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// The rows of results.md's table: (check, result).
fn rows(results: &str) -> Vec<(String, String)> {
    results
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| check ") && !l.starts_with("| ---"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            (cells[0].to_owned(), cells[2].to_owned())
        })
        .collect()
}

#[test]
fn the_dry_run_writes_every_row_and_returns_three_files_at_most() {
    let root = scratch("dry");
    let (output, out, work) = dry_run(&root, "420");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);

    let files = files_in(&out);
    assert!(files.len() <= 3, "the device returns few files; OUTDIR holds {files:?}");
    assert_eq!(files, ["logs.tar.gz", "results.md"], "no bench ran, so no bench.json");
    let results = fs::read_to_string(out.join("results.md")).unwrap();
    assert!(stdout.trim_end().ends_with(results.trim_end()), "results.md is not printed at the end:\n{stdout}");

    let rows = rows(&results);
    let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, CHECKS, "the rows of results.md");
    for (name, result) in &rows {
        assert_eq!(result, "SKIP (dry run)", "{name}");
    }
    assert!(results.contains("* commit: 0123abcd (dry-run test)"), "{results}");
    assert!(results.contains("0 check(s) did not pass"), "{results}");
    assert!(results.contains("checks the 2 kernels of kernels/*.cu"), "{results}");
    // The pip wheels' lib folder is found (unless the system's linker cache
    // has cuBLAS, which is then used first) and put on LD_LIBRARY_PATH, and
    // cuBLASLt comes from the same folder.
    let line = |lib: &str| results.lines().find(|l| l.starts_with(&format!("* {lib}: "))).unwrap_or_default();
    let (blas, lt) = (line("libcublas"), line("libcublasLt"));
    if !blas.contains("dynamic linker cache") {
        let fake = root.join("site/nvidia/cublas/lib");
        assert!(blas.contains(&format!("`{}/libcublas.so.13`", fake.display())), "{blas}");
        assert!(blas.contains("added to LD_LIBRARY_PATH"), "{blas}");
        // cuBLASLt is then found in the folder just put on the path.
        assert!(lt.contains(&format!("`{}/libcublasLt.so.13` (on LD_LIBRARY_PATH)", fake.display())), "{lt}");
    }
    for lib in ["libcuda", "libcublas", "libcublasLt", "libnvrtc"] {
        assert!(results.lines().any(|l| l.starts_with(&format!("* {lib}: "))), "no {lib} line:\n{results}");
    }

    // The tarball holds every check's log, each naming its command.
    let unpacked = root.join("logs");
    fs::create_dir_all(&unpacked).unwrap();
    let tar = run(Command::new("tar").arg("-xzf").arg(out.join("logs.tar.gz")).arg("-C").arg(&unpacked));
    assert!(tar.status.success(), "tar: {}", String::from_utf8_lossy(&tar.stderr));
    for name in CHECKS {
        let log = fs::read_to_string(unpacked.join(format!("logs/{name}.log")))
            .unwrap_or_else(|e| panic!("logs/{name}.log: {e}"));
        assert!(log.starts_with("$ ") && log.contains("SKIP (dry run)"), "{name}.log:\n{log}");
    }
    let log = |name: &str| fs::read_to_string(unpacked.join(format!("logs/{name}.log"))).unwrap();
    // GPU test binaries: one thread, and the first pass synchronises after
    // every launch.
    for name in ["ops_smoke", "step_smoke", "cuda_ops", "cuda_training"] {
        let log = log(name);
        assert!(log.contains("--test-threads=1") && log.contains("MLRPL_CUDA_SYNC=1"), "{name}.log:\n{log}");
    }
    // The sanitizers check only the bundle's kernels.
    for name in ["memcheck", "racecheck"] {
        let log = log(name);
        for kernel in ["adamw_step", "layernorm_forward"] {
            assert!(log.contains(&format!("--kernel-name kne={kernel}")), "{name}.log:\n{log}");
        }
    }
    assert!(work.join("logs/probe.log").is_file(), "GPU_CHECK_WORK is the scratch folder");
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn a_spent_time_budget_is_not_run_and_fails() {
    let root = scratch("budget");
    let (output, out, _) = dry_run(&root, "0");
    assert_eq!(output.status.code(), Some(1), "stderr:\n{}", String::from_utf8_lossy(&output.stderr));
    let results = fs::read_to_string(out.join("results.md")).unwrap();
    let rows = rows(&results);
    assert_eq!(rows.len(), CHECKS.len());
    for (name, result) in &rows {
        assert_eq!(result, "NOT RUN (time budget spent)", "{name}");
    }
    assert!(results.contains(&format!("{} check(s) did not pass", CHECKS.len())), "{results}");
    assert!(results.contains("### probe: last lines of logs/probe.log"), "failed checks get their log tail");
    assert!(files_in(&out).len() <= 3);
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn the_scripts_refuse_bad_arguments() {
    let usage = run(Command::new("bash").arg(repo().join("tools/gpu-check.sh")));
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("usage:"));
    let root = scratch("no-archive");
    fs::copy(repo().join("tools/gpu-bundle-run.sh"), root.join("run.sh")).unwrap();
    let missing = run(Command::new("bash").arg(root.join("run.sh")).arg(root.join("out")));
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("bundle.tar.xz"));
    let _ = fs::remove_dir_all(&root);
}
