//! `mlrpl-engine bench`: a quick filtered CPU run writes bench.json and
//! bench.md with positive times; bad input is one clear line. On a GPU the
//! same command checks every case against the CPU first; without one those
//! tests print `SKIPPED (no CUDA GPU)` (`MLRPL_REQUIRE_GPU=1` fails them).

mod common;

use common::{cuda_or_skip, engine, one_line_failure, stderr};
use mlrpl_engine::bench::check::tolerance_for;
use mlrpl_engine::bench::{check_case, kernels};
use mlrpl_engine::DType;
use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlrpl-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs `bench --quick --filter FILTER` on `device` into a scratch folder
/// and returns bench.json.
fn bench_json(name: &str, device: &str, filter: &str) -> serde_json::Value {
    let out = scratch(name);
    let all =
        ["--device", device, "bench", "--quick", "--runs", "3", "--filter", filter, "--out", out.to_str().unwrap()];
    let run = engine(&all);
    assert!(run.status.success(), "bench failed: {}", stderr(&run));
    let md = std::fs::read_to_string(out.join("bench.md")).expect("bench.md");
    assert!(md.contains("| benchmark | shape |"), "{md}");
    let json = serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).expect("bench.json")).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    json
}

#[test]
fn a_quick_filtered_cpu_run_writes_every_field_with_positive_times() {
    // Matches the layer-norm (f32 and bf16) and L2-normalisation cases of
    // both models.
    let json = bench_json("cpu", "cpu", "norm");
    assert_eq!(json["format_version"], 1);
    assert_eq!(json["device_kind"], "cpu");
    for key in ["device", "date", "commit", "command", "reference"] {
        assert!(json[key].as_str().is_some_and(|s| !s.is_empty()), "{key} missing: {json}");
    }
    let figures = json["figures"].as_array().unwrap();
    let ids: Vec<&str> = figures.iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"layernorm_fwd/vit-b32") && ids.contains(&"l2_normalize_bwd/mini-clip"), "{ids:?}");
    assert!(ids.contains(&"layernorm_fwd_bf16/mini-clip"), "{ids:?}");
    assert!(ids.iter().all(|id| id.contains("norm")), "{ids:?}");
    for f in figures {
        assert!(f["ms"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["throughput"].as_f64().unwrap() > 0.0, "{f}");
        assert_eq!(f["unit"], "GB/s");
        let id = f["id"].as_str().unwrap();
        assert_eq!(f["dtype"], if id.contains("_bf16/") { "bf16" } else { "f32" }, "{f}");
        assert_eq!(f["runs"], 3);
        assert!(f["check_error"].is_null(), "the CPU is the reference: {f}");
        assert!(f["params"]["rows"].as_u64().unwrap() > 0 && f["params"]["cols"].as_u64().unwrap() > 0, "{f}");
    }
}

#[test]
fn the_end_to_end_figures_are_images_per_second() {
    let json = bench_json("end-to-end", "cpu", "clip_image_forward");
    let figures = json["figures"].as_array().unwrap();
    assert_eq!(figures.len(), 1, "{json}");
    let f = &figures[0];
    assert_eq!(f["kind"], "end_to_end");
    assert_eq!(f["unit"], "images/s");
    assert_eq!(f["params"]["batch"], 32);
    assert_eq!(f["params"]["image"], 64);
    assert!(f["throughput"].as_f64().unwrap() > 0.0, "{f}");
}

/// `bench --e2e --json` on the bundled CLIP, a tiny batch, `extra` flags
/// added: the report's `figures`.
fn e2e_figures(extra: &[&str]) -> serde_json::Value {
    let mut all = vec!["--device", "cpu", "bench", "--e2e", "--batch", "2", "--classes", "3", "--json"];
    all.extend(extra);
    let run = engine(&all);
    assert!(run.status.success(), "bench --e2e failed: {}", stderr(&run));
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).expect("bench --e2e --json prints JSON");
    assert_eq!(json["device_kind"], "cpu");
    json["figures"].clone()
}

#[test]
fn the_e2e_step_reports_its_phases_and_they_add_up_to_the_step() {
    let f = e2e_figures(&["--runs", "3", "--warmup", "1"]);
    assert_eq!(f["config"]["batch"], 2);
    assert_eq!(f["config"]["image_size"], 64, "the bundled CLIP's resolution");
    // SOT, 16 context vectors, the class name's tokens, ".", EOT.
    assert!(f["text_length"].as_u64().unwrap() >= 20, "{f}");
    let loss = f["first_loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{f}");
    for kind in ["train", "inference"] {
        let step = &f[kind];
        let ms = step["median_ms"].as_f64().unwrap();
        assert!(ms > 0.0 && step["min_ms"].as_f64().unwrap() <= ms, "{kind}: {step}");
        let rate = step["images_per_s"].as_f64().unwrap();
        assert!((rate - 2.0 / ms * 1e3).abs() < 1e-6 * rate, "{kind}: {step}");
        let mfu = step["mfu"].as_f64().unwrap();
        assert!(mfu > 0.0 && mfu.is_finite() && step["model_gflop"].as_f64().unwrap() > 0.0, "{kind}: {step}");
    }
    assert!(
        f["train"]["model_gflop"].as_f64().unwrap() > f["inference"]["model_gflop"].as_f64().unwrap(),
        "a training step also runs the backward: {f}"
    );
    let phases = f["phases_ms"].as_object().unwrap();
    let names: Vec<&str> = phases.keys().map(String::as_str).collect();
    for phase in ["vision", "text", "decoupling", "loss", "backward", "optimizer"] {
        assert!(names.contains(&phase), "{phase} missing: {names:?}");
    }
    let sum: f64 = phases.values().map(|v| v.as_f64().unwrap()).sum();
    assert!(phases.values().all(|v| v.as_f64().unwrap() >= 0.0), "{phases:?}");
    // The step's own clock also sees the glue between phases, a few
    // microseconds; the phases must account for nearly all of it.
    let step = f["train"]["mean_ms"].as_f64().unwrap();
    assert!(sum <= step * 1.000_001 && sum >= 0.95 * step, "phases {sum} ms against the step's {step} ms: {phases:?}");
    assert!(f["peak_memory_mib"].as_f64().unwrap() > 1.0, "{f}");
    assert!(f["matrix_rate"]["gflops"].as_f64().unwrap() > 0.0, "{f}");
}

#[test]
fn exported_inputs_give_the_first_loss_of_the_run_that_wrote_them() {
    let dir = scratch("e2e-export");
    let export = engine(&[
        "--device",
        "cpu",
        "bench",
        "--e2e",
        "--batch",
        "2",
        "--classes",
        "3",
        "--seed",
        "5",
        "--export",
        dir.to_str().unwrap(),
    ]);
    assert!(export.status.success(), "--export failed: {}", stderr(&export));
    assert!(!dir.join("clip.safetensors").exists(), "a CLIP file is written for --model only");
    let inputs = dir.join("inputs.safetensors");
    let seeded = e2e_figures(&["--seed", "5", "--runs", "1", "--warmup", "1"])["first_loss"].as_f64().unwrap();
    let loaded = e2e_figures(&["--inputs", inputs.to_str().unwrap(), "--runs", "1", "--warmup", "1"])["first_loss"]
        .as_f64()
        .unwrap();
    let other = e2e_figures(&["--seed", "6", "--runs", "1", "--warmup", "1"])["first_loss"].as_f64().unwrap();
    assert_eq!(seeded, loaded, "the same batch and parameters from the file");
    assert_ne!(seeded, other, "another seed draws another batch");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_filter_that_matches_nothing_is_an_error_naming_it() {
    let out = engine(&[
        "--device",
        "cpu",
        "bench",
        "--quick",
        "--filter",
        "no-such-kernel",
        "--out",
        scratch("none").to_str().unwrap(),
    ]);
    let err = one_line_failure(&out);
    assert!(err.contains("--filter \"no-such-kernel\" matches no benchmark"), "{err}");
}

#[test]
fn bench_on_cuda_without_a_gpu_is_one_line() {
    if matches!(mlrpl_engine::device::probe_cuda(), mlrpl_engine::device::CudaProbe::Found { .. }) {
        return;
    }
    let out = engine(&["--device", "cuda", "bench", "--quick", "--out", scratch("no-gpu").to_str().unwrap()]);
    let err = one_line_failure(&out);
    assert!(err.starts_with("error: --device cuda"), "{err}");
}

#[test]
fn every_kernel_case_passes_its_check_on_the_gpu() {
    let Some(gpu) = cuda_or_skip("every_kernel_case_passes_its_check_on_the_gpu") else { return };
    // The simulated GPU runs the small setup's cases only: the CLIP-sized
    // ones would take minutes there (its GEMMs are a reference loop).
    let filter = common::sim::active().then_some("mini-clip");
    for case in kernels::cases(filter).unwrap() {
        let err = check_case(&case, &gpu).unwrap_or_else(|e| panic!("{e:#}"));
        // bf16 cases at 2e-2: the flash attention kernel rounds P to bf16.
        assert!(err <= tolerance_for(case.compute_dtype()), "{}: {err}", case.id());
    }
}

#[test]
fn a_quick_gpu_run_checks_and_times_every_figure() {
    let Some(_gpu) = cuda_or_skip("a_quick_gpu_run_checks_and_times_every_figure") else { return };
    if common::sim::active() {
        // Straight to stderr, past the harness's capture, as every skip.
        let line = "a_quick_gpu_run_checks_and_times_every_figure: SKIPPED (on the simulated GPU: the engine binary it runs loads NVIDIA's driver, not the simulator)\n";
        std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes()).expect("stderr");
        return;
    }
    let json = bench_json("cuda", "cuda", "mini-clip");
    assert_eq!(json["device_kind"], "cuda");
    for f in json["figures"].as_array().unwrap() {
        let err = f["check_error"].as_f64().unwrap_or_else(|| panic!("no check error: {f}"));
        let bf16 = f["dtype"].as_str().is_some_and(|d| d.starts_with("bf16"));
        assert!(err <= tolerance_for(if bf16 { DType::BF16 } else { DType::F32 }), "{f}");
        assert!(f["ms"].as_f64().unwrap() > 0.0, "{f}");
    }
}
