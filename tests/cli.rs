//! The command line: help and device selection, `encode` against PyTorch's
//! CLIP on an image at the model's resolution, `zero-shot`, and one clear
//! line (never a panic) for bad input.

mod common;
mod parity;

use common::{engine, one_line_failure, stderr};
use mlrpl_engine::autograd::no_grad;
use mlrpl_engine::clip::init::init_weights;
use mlrpl_engine::clip::tokenizer::Tokenizer;
use mlrpl_engine::clip::{Clip, ClipConfig, TextConfig, VisionConfig};
use mlrpl_engine::nn::WeightMap;
use mlrpl_engine::{Device, Tensor};
use parity::assert_close;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlrpl-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A random CLIP with the full BPE vocabulary (for text through the real
/// tokenizer), saved to a scratch file.
fn full_vocab_clip() -> PathBuf {
    let path = scratch("full-vocab.safetensors");
    let config = ClipConfig {
        vision: VisionConfig { width: 64, layers: 1, heads: 1, patch: 8, grid: 4, embed_dim: 16 },
        text: TextConfig { width: 64, layers: 1, heads: 1, context_length: 77, vocab_size: 49408, embed_dim: 16 },
    };
    let w = init_weights(&config, 1, &Device::Cpu).unwrap();
    let tensors: Vec<_> = w.names().map(|n| (n.to_string(), w.get(n).unwrap())).collect();
    WeightMap::save(&path, &tensors, Default::default()).unwrap();
    path
}

#[test]
fn help_lists_the_commands_and_device_cuda_fails_in_one_line() {
    let help = String::from_utf8(engine(&["--help"]).stdout).unwrap();
    for command in ["train", "pretrain", "eval", "predict", "encode", "zero-shot", "bench", "--device"] {
        assert!(help.contains(command), "--help lacks {command}");
    }
    assert!(engine(&["--version"]).status.success());
    if !matches!(mlrpl_engine::device::probe_cuda(), mlrpl_engine::device::CudaProbe::Found { .. }) {
        let out = engine(&["--device", "cuda", "train"]);
        let err = one_line_failure(&out);
        assert!(err.starts_with("error: --device cuda"), "{err}");
    }
}

#[test]
fn encode_matches_pytorch_clip_on_an_image_at_model_resolution() {
    let out_path = scratch("encode.safetensors");
    let clip = fixture("clip_openai.safetensors");
    let image = fixture("clip_input.png");
    let out = engine(&[
        "--device",
        "cpu",
        "encode",
        "--clip",
        clip.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--dense",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = WeightMap::load(&out_path, &Device::Cpu).unwrap();
    let want = WeightMap::load(&fixture("clip_io.safetensors"), &Device::Cpu).unwrap();
    let twice = |name: &str| {
        let t = want.get(name).unwrap();
        Tensor::concat(&[&t, &t], 0).unwrap()
    };
    assert_close(&got.get("image_embeds").unwrap(), &twice("png_image_embeds"), "image_embeds");
    assert_close(&got.get("dense_tokens").unwrap(), &twice("png_dense_tokens"), "dense_tokens");
    assert!(!got.contains("text_embeds"));
}

#[test]
fn encode_text_is_the_tokenizer_then_the_text_tower() {
    let clip_path = full_vocab_clip();
    let out_path = scratch("encode-text.safetensors");
    let texts = ["a photo of a hair drier.", "Two dogs & a CAT!"];
    let out = engine(&[
        "encode",
        "--clip",
        clip_path.to_str().unwrap(),
        "--text",
        texts[0],
        "--text",
        texts[1],
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = WeightMap::load(&out_path, &Device::Cpu).unwrap().get("text_embeds").unwrap();
    let _no_grad = no_grad();
    let clip = Clip::load(&clip_path, &Device::Cpu).unwrap();
    let tokenizer = Tokenizer::embedded().unwrap();
    let tokens: Vec<Vec<u32>> = texts.iter().map(|t| tokenizer.tokenize(t, 77).unwrap()).collect();
    assert_close(&got, &clip.text.encode(&tokens).unwrap(), "text_embeds");
}

#[test]
fn zero_shot_prints_ranked_probabilities_per_image() {
    let clip_path = full_vocab_clip();
    let image = fixture("clip_input.png");
    let out = engine(&[
        "zero-shot",
        "--clip",
        clip_path.to_str().unwrap(),
        "--classes",
        "cat,dog,hair drier",
        "--image",
        image.to_str().unwrap(),
        "--top-k",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let top = line["top"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    let (p0, p1) = (top[0]["probability"].as_f64().unwrap(), top[1]["probability"].as_f64().unwrap());
    assert!(p0 >= p1 && p0 + p1 <= 1.0 + 1e-6 && p1 > 0.0, "{line}");
}

#[test]
fn a_broken_image_or_weight_file_is_one_line_naming_the_file() {
    let clip = fixture("clip_openai.safetensors");
    let broken = scratch("broken.jpg");
    std::fs::write(&broken, b"\xFF\xD8\xFF\xE0 truncated").unwrap();
    let missing_weights = scratch("no-such-weights.safetensors");
    let cases: [(&[&str], &Path); 2] = [
        (
            &["encode", "--clip", clip.to_str().unwrap(), "--image", broken.to_str().unwrap(), "--out", "/dev/null"],
            &broken,
        ),
        (
            &["encode", "--clip", missing_weights.to_str().unwrap(), "--text", "x", "--out", "/dev/null"],
            &missing_weights,
        ),
    ];
    for (args, named) in cases {
        let out = engine(args);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(error_lines.len(), 1, "{err}");
        assert!(error_lines[0].contains(named.to_str().unwrap()), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn commands_reject_bad_flags_in_one_line_before_any_work() {
    for (args, flag) in [
        (vec!["train", "--known-ratio", "0"], "--known-ratio"),
        (vec!["train", "--known-ratio", "1.5"], "--known-ratio"),
        (vec!["train", "--resume"], "--run-dir"),
        (vec!["train", "--dataset", "coco"], "--data-root"),
        (vec!["--precision", "bf16", "pretrain"], "--precision bf16"),
    ] {
        let out = engine(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(error_lines.len(), 1, "{err}");
        assert!(error_lines[0].contains(flag), "{args:?}: {err}");
    }
}

#[test]
fn a_bad_rand_augment_is_one_line_naming_the_flag() {
    for (value, problem) in [
        ("2", "expected N,M"),
        ("2,31", "0..=30, got 31"),
        ("0,9", "at least 1"),
        ("two,9", "N is not a whole number"),
        ("2,9.5", "M is not a whole number"),
    ] {
        let out = engine(&["train", "--rand-augment", value]);
        assert_eq!(out.status.code(), Some(2), "{value}: a usage error");
        let err = stderr(&out);
        let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(error_lines.len(), 1, "{err}");
        assert!(error_lines[0].contains("--rand-augment") && error_lines[0].contains(problem), "{value}: {err}");
    }
}

#[test]
fn train_eval_predict_on_a_tiny_embedded_run() {
    let run_dir = scratch("tiny-run");
    let _ = std::fs::remove_dir_all(&run_dir);
    let run = run_dir.to_str().unwrap();
    let out = engine(&[
        "train",
        "--epochs",
        "1",
        "--warmup-epochs",
        "0",
        "--n-ctx",
        "2",
        "--rand-augment",
        "2,9",
        "--run-dir",
        run,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("untrained model: mAP") && report.contains("trained model"), "{report}");
    for file in ["checkpoint-best.json", "checkpoint-last.json", "label-mask.json", "metrics.jsonl"] {
        assert!(run_dir.join(file).exists(), "{file} missing");
    }
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("checkpoint-last.json")).unwrap()).unwrap();
    assert_eq!(state["config"]["rand_augment"], serde_json::json!({ "ops": 2, "magnitude": 9 }), "{state}");
    assert_eq!(state["config"]["precision"], "f32", "--precision auto is f32 on the CPU: {state}");
    let again = engine(&["train", "--epochs", "1", "--run-dir", run]);
    assert!(stderr(&again).contains("already holds a run"), "{}", stderr(&again));
    let other_clip = full_vocab_clip();
    let mixed = engine(&[
        "--device",
        "cpu",
        "train",
        "--epochs",
        "2",
        "--resume",
        "--run-dir",
        run,
        "--clip",
        other_clip.to_str().unwrap(),
    ]);
    let err = one_line_failure(&mixed);
    assert!(err.contains("--resume") && err.contains("trained on the CLIP \"bundled:mini-clip\""), "{err}");

    let best = run_dir.join("checkpoint-best.json");
    // The checkpoint's tensors are f32; evaluating with bf16 towers must give
    // nearly the same mAP (bf16 changes only the frozen towers' rounding).
    let test_map = |precision: &str| -> f64 {
        let out = engine(&["--precision", precision, "eval", "--checkpoint", best.to_str().unwrap()]);
        assert!(out.status.success(), "{precision}: {}", stderr(&out));
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        let value = report.split("mAP ").nth(1).and_then(|rest| rest.split_whitespace().next());
        value.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{precision}: no mAP in {report}"))
    };
    let (f32_map, bf16_map) = (test_map("f32"), test_map("bf16"));
    assert!((f32_map - bf16_map).abs() < 1.0, "test mAP {f32_map} with f32 towers, {bf16_map} with bf16");

    let image = fixture("clip_input.png");
    let out = engine(&[
        "predict",
        "--checkpoint",
        best.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--top-k",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["top"].as_array().unwrap().len(), 2);
}

#[test]
fn pretrain_writes_a_loadable_clip_with_its_card() {
    let run_dir = scratch("pretrain-run");
    let _ = std::fs::remove_dir_all(&run_dir);
    let out_path = run_dir.join("tiny-clip.safetensors");
    let out = engine(&[
        "pretrain",
        "--pairs",
        "16",
        "--batch-size",
        "8",
        "--epochs",
        "2",
        "--warmup-steps",
        "1",
        "--image-size",
        "16",
        "--vision-width",
        "64",
        "--vision-layers",
        "1",
        "--text-width",
        "64",
        "--text-layers",
        "1",
        "--embed-dim",
        "32",
        "--run-dir",
        run_dir.to_str().unwrap(),
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_path.with_extension("json")).unwrap()).unwrap();
    assert!(card["command"].as_str().unwrap().contains("--pairs 16"), "{card}");
    assert_eq!(card["seed"], 0);
    assert_eq!(card["stored_dtype"], "f16");
    let test_map = card["zero_shot_test_map"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&test_map), "{card}");
    for field in ["engine_commit", "device", "training_seconds", "zero_shot_prompt"] {
        assert!(!card[field].is_null(), "card lacks {field}: {card}");
    }

    // Loadable like any CLIP: stored f16, in OpenAI's naming.
    let weights = WeightMap::load(&out_path, &Device::Cpu).unwrap();
    assert!(weights.contains("visual.conv1.weight") && weights.contains("logit_scale"));
    let clip = out_path.to_str().unwrap();
    let out = engine(&["eval", "--zero-shot", "--clip", clip, "--dataset", "embedded"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    let reported: f64 =
        report.lines().find_map(|l| l.strip_prefix("mAP ")).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!((reported - 100.0 * test_map).abs() < 0.01, "eval --zero-shot says {reported}, the card {test_map}");

    let out = engine(&["pretrain", "--pairs", "4", "--batch-size", "8", "--run-dir", run_dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already holds a run"), "{}", stderr(&out));
}
