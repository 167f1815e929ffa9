//! Hostile inputs (issue 18): every one is refused before work starts, or
//! stops the run, with one clear line that names the flag, file or tensor
//! at fault; never a panic, an abort, or a run that "succeeds" on garbage.
//! Each test runs the binary on the tiny run of `tests/tiny_run`.

mod tiny_run;

use mlrpl_engine::data::partial::LabelMask;
use mlrpl_engine::nn::WeightMap;
use mlrpl_engine::{Device, Tensor};
use std::path::{Path, PathBuf};
use std::process::Output;
use tiny_run::{run, scratch, stderr, tiny};

/// Asserts that the run failed cleanly (exit status 1, no panic, no
/// abort) with a last line `error: ...` containing every one of `needles`;
/// returns that line.
#[track_caller]
fn refused(out: &Output, needles: &[&str]) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "expected exit status 1: {err}");
    assert!(!err.contains("panicked"), "a panic: {err}");
    let last = err.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("error: "), "the last line is not the error: {err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error")).count(), 1, "{err}");
    for needle in needles {
        assert!(last.contains(needle), "{needle:?} not in {last:?}");
    }
    last
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn train(run_dir: &Path, extra: &[&str]) -> Output {
    let args = tiny().train_args(run_dir, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args)
}

/// A copy of the tiny CLIP with `edit` applied to its tensors.
fn edited_clip(name: &str, edit: impl FnOnce(&mut WeightMap)) -> PathBuf {
    let mut w = WeightMap::load(&tiny().clip, &Device::Cpu).unwrap();
    edit(&mut w);
    let path = scratch(name).join("clip.safetensors");
    tiny_run::save(&w, &path);
    path
}

/// `t` with element `i` set to `value`.
fn poke(t: &Tensor, i: usize, value: f32) -> Tensor {
    let mut v = t.to_vec().unwrap();
    v[i] = value;
    Tensor::from_vec(v, t.shape().clone(), &Device::Cpu).unwrap()
}

/// A copy of the trained tiny run whose checkpoint tensors `edit` changes.
fn edited_run(name: &str, edit: impl FnOnce(&mut WeightMap)) -> PathBuf {
    let dir = scratch(name);
    for entry in std::fs::read_dir(tiny().trained()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("checkpoint-last.json")).unwrap()).unwrap();
    let tensors = dir.join(state["tensors"].as_str().unwrap());
    let mut w = WeightMap::load(&tensors, &Device::Cpu).unwrap();
    edit(&mut w);
    tiny_run::save(&w, &tensors);
    dir
}

fn image() -> PathBuf {
    tiny().dir.join("test0.png")
}

#[test]
fn sizes_whose_buffers_cannot_be_allocated_are_refused() {
    let dir = scratch("image-size");
    refused(&train(&dir, &["--image-size", "100000"]), &["--image-size 100000", "GiB"]);
    refused(&train(&dir, &["--image-size", "20"]), &["--image-size 20", "multiple of the CLIP's patch size 8"]);
    refused(&train(&dir, &["--batch-size", "1000000000000"]), &["a batch of 1000000000000 images", "batch size"]);
    let out = dir.join("emb.safetensors");
    let enc = |res: &str| {
        run(&[
            "--device",
            "cpu",
            "encode",
            "--clip",
            s(&tiny().clip),
            "--image",
            s(&image()),
            "--resolution",
            res,
            "--out",
            s(&out),
        ])
    };
    refused(&enc("100000"), &["--resolution 100000"]);
    refused(&enc("0"), &["--resolution 0"]);
    assert!(!out.exists());
}

#[test]
fn epoch_counts_whose_steps_overflow_are_refused_before_any_step() {
    let max = usize::MAX.to_string();
    let run_dir = scratch("epochs-overflow").join("run");
    refused(&train(&run_dir, &["--epochs", &max]), &[&format!("--epochs {max}")]);
    refused(&train(&run_dir, &["--epochs", &max, "--warmup-epochs", &max]), &[&format!("--warmup-epochs {max}")]);
    assert!(!run_dir.join("metrics.jsonl").exists() && !run_dir.join("checkpoint-last.json").exists());
    let out = run(&["--device", "cpu", "pretrain", "--run-dir", s(&run_dir), "--epochs", &max]);
    refused(&out, &[&format!("--epochs {max}")]);
}

#[test]
fn zero_widths_are_refused_not_panics() {
    let dir = scratch("zero-widths");
    refused(&train(&dir, &["--decoupling-width", "0"]), &["--decoupling-width"]);
    refused(&train(&dir, &["--n-ctx", "0"]), &["--n-ctx"]);
    let run_dir = dir.join("pretrain");
    for flag in ["--embed-dim", "--vision-layers", "--batch-size", "--pairs"] {
        let out = run(&["--device", "cpu", "pretrain", "--run-dir", s(&run_dir), flag, "0"]);
        refused(&out, &[flag]);
    }
}

#[test]
fn non_finite_or_out_of_range_training_flags_are_refused() {
    let dir = scratch("flags");
    for (flag, value) in [
        ("--lr", "nan"),
        ("--lr", "0"),
        ("--momentum", "nan"),
        ("--momentum", "1"),
        ("--weight-decay", "-1e9"),
        ("--weight-decay", "inf"),
        ("--warmup-lr", "nan"),
        ("--val-fraction", "0"),
        ("--val-fraction", "1"),
        ("--known-ratio", "nan"),
        ("--epochs", "0"),
        ("--batch-size", "0"),
    ] {
        let arg = format!("{flag}={value}");
        refused(&train(&dir, &[&arg]), &[flag]);
    }
    assert!(!dir.join("checkpoint-last.json").exists(), "a refused run must not start");
}

#[test]
fn predict_and_zero_shot_refuse_bad_thresholds_and_top_k() {
    let run_dir = tiny().trained();
    let image = image();
    let predict = |extra: &[&str]| {
        let mut args = vec!["--device", "cpu", "predict", "--checkpoint", s(run_dir), "--image", s(&image)];
        args.extend_from_slice(extra);
        run(&args)
    };
    refused(&predict(&["--threshold", "2"]), &["--threshold", "2"]);
    refused(&predict(&["--threshold", "nan"]), &["--threshold", "NaN"]);
    refused(&predict(&["--top-k", "0"]), &["--top-k"]);
    let good = predict(&["--top-k", "2"]);
    assert!(good.status.success(), "{}", stderr(&good));
    let zs = run(&[
        "--device",
        "cpu",
        "zero-shot",
        "--clip",
        s(&tiny().clip),
        "--classes",
        "a,b",
        "--image",
        s(&image),
        "--top-k",
        "0",
    ]);
    refused(&zs, &["--top-k"]);
}

#[test]
fn predict_on_a_folder_without_images_names_the_folder() {
    let empty = scratch("empty-folder");
    std::fs::write(empty.join("notes.txt"), "no images here").unwrap();
    let out = run(&["--device", "cpu", "predict", "--checkpoint", s(tiny().trained()), "--folder", s(&empty)]);
    refused(&out, &["--folder", s(&empty), "no .jpg, .jpeg or .png"]);
}

#[test]
fn a_clip_with_a_hole_in_its_layers_names_the_missing_layer() {
    // Two text layers, then layer 0's tensors removed: the count must not
    // silently become 0 or 1.
    let mut config = tiny_run::config();
    config.text.layers = 2;
    config.vision.layers = 3;
    let full = mlrpl_engine::clip::init::init_weights(&config, 2, &Device::Cpu).unwrap();
    for (prefix, missing) in [("transformer.resblocks.0.", "layer 0"), ("visual.transformer.resblocks.1.", "layer 1")] {
        let mut w = full.clone();
        let names: Vec<String> = w.names().filter(|n| n.starts_with(prefix)).map(String::from).collect();
        for n in names {
            w.remove(&n);
        }
        let path = scratch(&format!("hole-{missing}")).join("clip.safetensors");
        tiny_run::save(&w, &path);
        let out = run(&[
            "--device",
            "cpu",
            "encode",
            "--clip",
            s(&path),
            "--image",
            s(&image()),
            "--out",
            s(&path.with_extension("out")),
        ]);
        refused(&out, &[s(&path), missing, "is missing"]);
    }
}

#[test]
fn a_hugging_face_clip_with_a_hole_in_its_layers_names_the_missing_layer() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip_hf.safetensors");
    let mut w = WeightMap::load(&fixture, &Device::Cpu).unwrap();
    let layers = mlrpl_engine::clip::Clip::load(&fixture, &Device::Cpu).unwrap().config.text.layers;
    assert!(layers >= 2, "the fixture needs two text layers");
    let names: Vec<String> =
        w.names().filter(|n| n.starts_with("text_model.encoder.layers.0.")).map(String::from).collect();
    for n in names {
        w.remove(&n);
    }
    let path = scratch("hf-hole").join("clip.safetensors");
    tiny_run::save(&w, &path);
    let Err(err) = mlrpl_engine::clip::Clip::load(&path, &Device::Cpu) else { panic!("a hole must be an error") };
    let err = format!("{err:#}");
    assert!(err.contains("layer 0 is missing") && err.contains("text_model.encoder.layers.0."), "{err}");
}

#[test]
fn nan_in_clip_weights_is_refused_naming_the_tensor() {
    let name = "visual.transformer.resblocks.0.mlp.c_fc.weight";
    let path = edited_clip("nan-clip", |w| {
        let t = w.get(name).unwrap();
        w.insert(name, poke(&t, 3, f32::NAN));
    });
    let out_file = path.with_extension("out.safetensors");
    let out = run(&["--device", "cpu", "encode", "--clip", s(&path), "--image", s(&image()), "--out", s(&out_file)]);
    refused(&out, &[s(&path), name, "NaN"]);
    assert!(!out_file.exists(), "no NaN embeddings are written");
}

#[test]
fn a_token_embedding_of_the_wrong_shape_names_the_file_and_tensor() {
    let mut config = tiny_run::config();
    config.text.vocab_size = 100;
    let w = mlrpl_engine::clip::init::init_weights(&config, 3, &Device::Cpu).unwrap();
    let path = scratch("vocab").join("clip.safetensors");
    tiny_run::save(&w, &path);
    let out =
        run(&["--device", "cpu", "zero-shot", "--clip", s(&path), "--classes", "cat,dog", "--image", s(&image())]);
    refused(&out, &[s(&path), "token_embedding.weight", "100 rows"]);
    let out = run(&[
        "--device",
        "cpu",
        "encode",
        "--clip",
        s(&path),
        "--text",
        "a cat",
        "--out",
        s(&path.with_extension("o")),
    ]);
    refused(&out, &[s(&path), "token_embedding.weight"]);
}

#[test]
fn list_datasets_with_different_classes_name_the_lists_and_classes() {
    let dir = scratch("classes-differ");
    let test_list = dir.join("other.csv");
    let first = tiny().dir.join("test0.png");
    std::fs::write(&test_list, format!("{},red;yellow\n", first.display())).unwrap();
    let out = train(&dir.join("run"), &["--test-list", s(&test_list)]);
    refused(
        &out,
        &[
            s(&tiny().train_list),
            s(&test_list),
            "only in the test split: yellow",
            "only in the training split: blue, green",
        ],
    );
}

#[test]
fn a_duplicate_class_in_the_classes_file_names_the_file() {
    let dir = scratch("dup-class");
    let classes = dir.join("classes.txt");
    std::fs::write(&classes, "red\ngreen\nred\nblue\n").unwrap();
    let out = train(&dir.join("run"), &["--classes", s(&classes)]);
    refused(&out, &["--classes", s(&classes), "line 3", "'red' is listed twice"]);
}

#[test]
fn an_all_unknown_label_mask_is_refused_before_training() {
    let dir = scratch("unknown-mask");
    let mask = LabelMask::sample(24, 3, 1e-12, 0).unwrap();
    assert_eq!(mask.num_kept(), 0);
    let path = dir.join("mask.json");
    mask.save(&path).unwrap();
    let out = train(&dir.join("run"), &["--label-mask", s(&path)]);
    refused(&out, &["--label-mask", s(&path), "every label is unknown"]);
    assert!(!dir.join("run").join("metrics.jsonl").exists(), "refused before the first epoch");
}

#[test]
fn a_run_dir_that_is_or_lies_under_a_file_names_the_file() {
    let dir = scratch("run-dir-file");
    let file = dir.join("plain.txt");
    std::fs::write(&file, "not a folder").unwrap();
    refused(&train(&file, &[]), &["--run-dir", s(&file), "is a file, not a folder"]);
    let under = file.join("sub").join("run");
    refused(&train(&under, &[]), &[s(&under), s(&file), "is a file, not a folder"]);
}

#[test]
fn a_checkpoint_without_momentum_is_not_resumed() {
    let dir = edited_run("no-momentum", |w| {
        let names: Vec<String> = w.names().filter(|n| n.starts_with("optim.")).map(String::from).collect();
        assert!(!names.is_empty());
        for n in names {
            w.remove(&n);
        }
    });
    let out = train(&dir, &["--resume", "--epochs", "2"]);
    refused(&out, &["checkpoint-last.json", "lacks the optimizer state", "optim.p0.momentum"]);
}

#[test]
fn a_checkpoint_with_non_finite_tensors_is_refused_by_resume_eval_and_predict() {
    let name = "sdm.fc2.weight";
    let dir = edited_run("inf-params", |w| {
        let t = w.get(name).unwrap();
        w.insert(name, poke(&t, 0, f32::INFINITY));
    });
    refused(&train(&dir, &["--resume", "--epochs", "2"]), &["checkpoint-last-step", name, "inf"]);
    let eval = run(&[
        "--device",
        "cpu",
        "eval",
        "--checkpoint",
        s(&dir),
        "--dataset",
        "list",
        "--train-list",
        s(&tiny().train_list),
        "--test-list",
        s(&tiny().test_list),
    ]);
    refused(&eval, &["checkpoint-last-step", name]);
    let predict = run(&["--device", "cpu", "predict", "--checkpoint", s(&dir), "--image", s(&image())]);
    refused(&predict, &["checkpoint-last-step", name]);

    let momentum = "optim.p0.momentum";
    let dir = edited_run("nan-momentum", |w| {
        let t = w.get(momentum).unwrap();
        w.insert(momentum, poke(&t, 0, f32::NAN));
    });
    refused(&train(&dir, &["--resume", "--epochs", "2"]), &[momentum, "NaN"]);
}

#[test]
fn a_resumed_checkpoint_of_another_shape_is_refused_before_any_work() {
    // The run was trained with --decoupling-width 8; resuming with 4 changes sdm.fc1.weight.
    let dir = edited_run("other-shape", |_| {});
    let out = train(&dir, &["--resume", "--epochs", "2", "--decoupling-width", "4"]);
    refused(&out, &["checkpoint-last.json", "sdm.fc1.weight", "has shape [8, 16], the model's is [4, 16]"]);
    assert!(!stderr(&out).contains("epoch 2/2"), "refused before training");
}
