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
    "bench_e2e",
    "prompt_memory",
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

/// A bundle folder as tools/gpu-bundle.sh leaves it, with no binaries
/// unless `engine` gives the text of a bin/mlrpl-engine script.
fn fake_bundle(root: &Path, engine: Option<&str>) -> PathBuf {
    let stage = root.join("stage");
    fs::create_dir_all(&stage).unwrap();
    if let Some(script) = engine {
        fs::create_dir_all(stage.join("bin")).unwrap();
        fs::write(stage.join("bin/mlrpl-engine"), script).unwrap();
        run(Command::new("chmod").arg("+x").arg(stage.join("bin/mlrpl-engine")));
    }
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
    let (mut cmd, out, work) = check_command(root, None);
    (run(cmd.env("GPU_CHECK_DRY_RUN", "1").env("TOTAL_S", total_s)), out, work)
}

/// `bash run.sh OUT` on a fresh fake bundle, with the fake pip wheels.
fn check_command(root: &Path, engine: Option<&str>) -> (Command, PathBuf, PathBuf) {
    let bundle = fake_bundle(root, engine);
    let site = fake_pip_wheels(root);
    let out = root.join("out");
    let work = root.join("work");
    let mut cmd = Command::new("bash");
    cmd.arg(bundle.join("run.sh"))
        .arg(&out)
        .env("GPU_CHECK_WORK", &work)
        .env("PYTHONPATH", &site)
        .env_remove("GPU_CHECK_DRY_RUN")
        .env_remove("GPU_CHECK_SANITIZE_ALL")
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("CUDA_HOME");
    (cmd, out, work)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// The rows of results.md's table: (check, result).
fn rows(results: &str) -> Vec<(String, String)> {
    // The checks' table only (the prompt_memory and bench tables follow it).
    results
        .lines()
        .skip_while(|l| !l.starts_with("| check "))
        .skip(2)
        .take_while(|l| l.starts_with("| "))
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
    assert!(!results.contains("### "), "a check that did not run has no log tail to show:\n{results}");
    assert!(files_in(&out).len() <= 3);
    let _ = fs::remove_dir_all(&root);
}

/// Not a dry run, on a bundle without binaries: every check runs and fails
/// at once, which exercises the real path (timeouts, exit codes, failure
/// tails). A fake compute-sanitizer that refuses `--kernel-name` makes each
/// sanitizer run once more without the kernel filter.
#[test]
fn failing_checks_are_rows_with_their_log_tails_and_a_refused_filter_is_retried() {
    let root = scratch("fail");
    let fake_bin = root.join("bin");
    fs::create_dir_all(&fake_bin).unwrap();
    fs::write(
        fake_bin.join("compute-sanitizer"),
        "#!/usr/bin/env bash\nfor a; do [[ $a == --kernel-name ]] && { echo \"unrecognised option $a\"; exit 1; }; done\n\
         echo 'running 2 tests'; echo '========= ERROR SUMMARY: 0 errors'\n",
    )
    .unwrap();
    run(Command::new("chmod").arg("+x").arg(fake_bin.join("compute-sanitizer")));
    let path = format!("{}:{}", fake_bin.display(), std::env::var("PATH").unwrap_or_default());
    let (mut cmd, out, _) = check_command(&root, None);
    let output = run(cmd.env("PATH", path).env("TOTAL_S", "120"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    let results = fs::read_to_string(out.join("results.md")).unwrap();
    let rows = rows(&results);
    let mut want: Vec<String> = CHECKS.iter().map(|c| c.to_string()).collect();
    want.insert(CHECKS.len() - 1, "memcheck_all_kernels".into());
    want.push("racecheck_all_kernels".into());
    let names: Vec<String> = rows.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, want, "{results}");
    for (name, result) in &rows {
        if name.ends_with("_all_kernels") {
            assert_eq!(result, "PASS", "{name}");
        } else {
            assert!(result.starts_with("FAIL (exit "), "{name}: {result}");
        }
    }
    assert!(results.contains(&format!("{} check(s) did not pass", CHECKS.len())), "{results}");
    assert!(results.contains("### memcheck: last lines of logs/memcheck.log"), "{results}");
    assert!(results.contains("unrecognised option --kernel-name"), "the tail shows why:\n{results}");
    assert!(files_in(&out).len() <= 3);
    let _ = fs::remove_dir_all(&root);
}

/// When the engine cannot open the GPU, nothing after the probe runs.
#[test]
fn an_engine_that_cannot_open_the_gpu_stops_the_run_after_the_probe() {
    let root = scratch("gate");
    let engine =
        "#!/usr/bin/env bash\necho 'error: --device cuda: the CUDA library libcublasLt.so (cuBLASLt) could not be \
                  loaded' >&2\nexit 1\n";
    let (mut cmd, out, _) = check_command(&root, Some(engine));
    let output = run(cmd.env("TOTAL_S", "60"));
    assert_eq!(output.status.code(), Some(1));
    let results = fs::read_to_string(out.join("results.md")).unwrap();
    let rows = rows(&results);
    assert_eq!(rows.len(), CHECKS.len(), "{results}");
    assert_eq!(rows[0], ("probe".to_string(), "FAIL (exit 1)".to_string()));
    for (name, result) in &rows[1..] {
        assert!(result.starts_with("NOT RUN (the engine could not open the GPU"), "{name}: {result}");
    }
    assert!(results.contains("libcublasLt.so (cuBLASLt) could not be loaded"), "the probe's tail:\n{results}");
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
