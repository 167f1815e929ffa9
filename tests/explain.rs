//! `explain` (issue 19): the decoupling attention it draws is a softmax over
//! the patches from the same pass as the probabilities, the same on the
//! (simulated) GPU as on the CPU; the binary writes valid PNGs of the
//! expected sizes, one per chosen category and one row per image, and
//! refuses a `--no-sdm` checkpoint, an unknown `--class` and two images of
//! one name in one line.

mod common;
mod tiny_run;

use common::{assert_rel, cuda_or_skip, one_line_failure};
use mlrpl_engine::clip::init::init_weights;
use mlrpl_engine::clip::{Clip, ClipConfig, TextConfig, VisionConfig};
use mlrpl_engine::mlrpl::{MlrplConfig, MlrplModel, PromptConfig};
use mlrpl_engine::rng::Rng;
use mlrpl_engine::viz::heatmap::row_size;
use mlrpl_engine::{Device, Tensor};
use std::path::Path;
use tiny_run::{run, scratch, stderr, tiny, CLASSES};

const IMAGES: usize = 2;
const GRID: usize = 4;
const SIZE: usize = 32;

/// A random model (16 patches, three categories) on `device`, the same
/// values on every device.
fn model(device: &Device, use_sdm: bool) -> MlrplModel {
    let config = ClipConfig {
        vision: VisionConfig { width: 64, layers: 1, heads: 1, patch: SIZE / GRID, grid: GRID, embed_dim: 32 },
        text: TextConfig { width: 64, layers: 1, heads: 1, context_length: 77, vocab_size: 49408, embed_dim: 32 },
    };
    let clip = Clip::from_weights(init_weights(&config, 7, device).unwrap()).unwrap();
    let config =
        MlrplConfig { prompt: PromptConfig { n_ctx: 2, ..Default::default() }, decoupling_width: Some(16), use_sdm };
    let classes = CLASSES.iter().map(|c| c.to_string()).collect();
    MlrplModel::new(clip, classes, &config, &mut Rng::new(3)).unwrap()
}

fn images(device: &Device) -> Tensor {
    let values = Rng::new(11).normal_vec(IMAGES * 3 * SIZE * SIZE, 1.0);
    Tensor::from_vec(values, [IMAGES, 3, SIZE, SIZE], device).unwrap()
}

/// Probabilities and attention of the test images on `device`, on the host.
fn explained(device: &Device) -> (Vec<f32>, Vec<f32>) {
    let _no_grad = mlrpl_engine::autograd::no_grad();
    let (probabilities, attention) = model(device, true).probabilities_and_attention(&images(device)).unwrap();
    assert_eq!(probabilities.dims(), [IMAGES, CLASSES.len()]);
    assert_eq!(attention.dims(), [IMAGES, CLASSES.len(), GRID * GRID]);
    (probabilities.to_vec().unwrap(), attention.to_vec().unwrap())
}

#[test]
fn attention_sums_to_one_over_patches_and_comes_with_the_models_probabilities() {
    let (probabilities, attention) = explained(&Device::Cpu);
    for (row, map) in attention.chunks(GRID * GRID).enumerate() {
        let sum: f64 = map.iter().map(|&a| a as f64).sum();
        assert!((sum - 1.0).abs() < 1e-5, "image {} category {}: sum {sum}", row / CLASSES.len(), row % CLASSES.len());
        assert!(map.iter().all(|&a| a > 0.0), "{map:?}");
    }
    // Not uniform: the maps depend on the image and the category.
    let spread = attention.iter().fold(0.0f32, |m, &a| m.max((a - 1.0 / (GRID * GRID) as f32).abs()));
    assert!(spread > 1e-3, "every map is uniform");
    // The probabilities are those of the model's own forward pass.
    let _no_grad = mlrpl_engine::autograd::no_grad();
    let model = model(&Device::Cpu, true);
    let want = model.logits(&images(&Device::Cpu)).unwrap().sigmoid().unwrap().to_vec().unwrap();
    assert_rel("probabilities", &probabilities, &want, 1e-6);
}

#[test]
fn a_model_without_the_decoupling_module_has_no_attention() {
    let model = model(&Device::Cpu, false);
    let err = model.probabilities_and_attention(&images(&Device::Cpu)).unwrap_err().to_string();
    assert!(err.contains("--no-sdm"), "{err}");
}

#[test]
fn explain_attention_on_the_gpu_matches_the_cpu() {
    let Some(gpu) = cuda_or_skip("explain_attention_on_the_gpu_matches_the_cpu") else { return };
    let (want_probabilities, want_attention) = explained(&Device::Cpu);
    let (probabilities, attention) = explained(&gpu);
    assert_rel("attention", &attention, &want_attention, 1e-4);
    assert_rel("probabilities", &probabilities, &want_probabilities, 1e-4);
}

/// The PNG's width and height.
fn png_size(path: &Path) -> (usize, usize) {
    let image = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (image.width() as usize, image.height() as usize)
}

/// The `*-class-*.png` files of `stem` in `dir`.
fn class_pictures(dir: &Path, stem: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{stem}-class-")))
        .collect();
    names.sort();
    names
}

#[test]
fn explain_writes_a_picture_per_chosen_category_and_a_row_per_image() {
    let tiny = tiny();
    let best = tiny.trained().join("checkpoint-best.json");
    let out_dir = scratch("explain");
    let image = |name: &str| tiny.dir.join(name).to_str().unwrap().to_string();
    let explain = |extra: &[&str]| {
        let mut args = vec!["--device", "cpu", "explain", "--checkpoint", best.to_str().unwrap()];
        args.extend_from_slice(extra);
        run(&args)
    };
    let (test0, test1) = (image("test0.png"), image("test1.png"));
    let all = out_dir.join("all");
    let out = explain(&["--image", &test0, "--image", &test1, "--threshold", "0", "--out", all.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for stem in ["test0", "test1"] {
        let names = class_pictures(&all, stem);
        let want: Vec<String> = CLASSES.iter().map(|c| format!("{stem}-class-{c}.png")).collect();
        assert_eq!(names, want, "threshold 0 draws every category");
        for name in &names {
            assert_eq!(png_size(&all.join(name)), row_size(1), "{name}");
        }
        assert_eq!(png_size(&all.join(format!("{stem}-grid.png"))), row_size(1 + CLASSES.len()));
    }
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2, "one line per image");
    assert!(String::from_utf8_lossy(&run(&["--help"]).stdout).contains("explain"), "--help lacks explain");

    // Nothing reaches probability 1: the top-1 category, and the asked one.
    let top = out_dir.join("top");
    let out = explain(&["--image", &test0, "--threshold", "1", "--class", "red", "--out", top.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let names = class_pictures(&top, "test0");
    assert!((1..=2).contains(&names.len()) && names.contains(&"test0-class-red.png".to_string()), "{names:?}");
    assert_eq!(png_size(&top.join("test0-grid.png")), row_size(1 + names.len()));
}

#[test]
fn explain_refuses_a_no_sdm_checkpoint_an_unknown_class_and_twin_names_in_one_line() {
    let tiny = tiny();
    let dir = scratch("explain-no-sdm");
    let run_dir = dir.join("run");
    let out =
        tiny_run::engine_command().args(tiny.train_args(&run_dir, &["--epochs", "1", "--no-sdm"])).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let image = tiny.dir.join("test0.png");
    let explain = |checkpoint: &Path, extra: &[&str]| {
        let mut args = vec!["--device", "cpu", "explain", "--checkpoint", checkpoint.to_str().unwrap()];
        args.extend_from_slice(&["--image", image.to_str().unwrap(), "--out", dir.to_str().unwrap()]);
        args.extend_from_slice(extra);
        run(&args)
    };
    let no_sdm = run_dir.join("checkpoint-best.json");
    let err = one_line_failure(&explain(&no_sdm, &[]));
    assert!(err.contains("--no-sdm") && err.contains(no_sdm.to_str().unwrap()), "{err}");
    let err = one_line_failure(&explain(&tiny.trained().join("checkpoint-best.json"), &["--class", "purple"]));
    assert!(err.contains("--class \"purple\"") && err.contains("blue, green, red"), "{err}");
    let twin = dir.join("test0.png");
    std::fs::copy(&image, &twin).unwrap();
    let err =
        one_line_failure(&explain(&tiny.trained().join("checkpoint-best.json"), &["--image", twin.to_str().unwrap()]));
    assert!(err.contains(twin.to_str().unwrap()) && err.contains("rename one"), "{err}");
    assert!(!dir.join("test0-grid.png").exists(), "a refused run wrote pictures");
}
