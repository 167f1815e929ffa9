//! A broken weight file is one clear error naming the file and, where it
//! applies, the tensor.

use mlrpl_engine::clip::Clip;
use mlrpl_engine::nn::WeightMap;
use mlrpl_engine::Device;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip_openai.safetensors")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlrpl-weight-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn load_error(path: &Path) -> String {
    format!("{:#}", Clip::load(path, &Device::Cpu).unwrap_err())
}

/// Rewrites the fixture through `edit` (tensors in OpenAI naming).
fn edited(name: &str, edit: impl FnOnce(&mut WeightMap)) -> PathBuf {
    let mut w = WeightMap::load(&fixture(), &Device::Cpu).unwrap();
    edit(&mut w);
    let tensors: Vec<_> = w.names().map(|n| (n.to_string(), w.get(n).unwrap())).collect();
    let path = scratch(name);
    WeightMap::save(&path, &tensors, w.metadata().clone()).unwrap();
    path
}

#[test]
fn truncated_and_foreign_files_name_the_file() {
    let bytes = std::fs::read(fixture()).unwrap();
    let truncated = scratch("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let msg = load_error(&truncated);
    assert!(msg.contains("truncated.safetensors") && msg.contains("not a valid safetensors"), "{msg}");

    let foreign = scratch("model.pt");
    std::fs::write(&foreign, b"PK\x03\x04 a zip archive, as torch.save writes").unwrap();
    let msg = load_error(&foreign);
    assert!(msg.contains("model.pt") && msg.contains("not a valid safetensors"), "{msg}");

    let msg = load_error(&scratch("does-not-exist.safetensors"));
    assert!(msg.contains("does-not-exist.safetensors") && msg.contains("cannot read"), "{msg}");
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let missing = edited("missing.safetensors", |w| {
        w.remove("visual.transformer.resblocks.1.mlp.c_fc.bias");
    });
    let msg = load_error(&missing);
    assert!(
        msg.contains("missing.safetensors") && msg.contains("visual.transformer.resblocks.1.mlp.c_fc.bias"),
        "{msg}"
    );

    let misshapen = edited("misshapen.safetensors", |w| {
        let t = w.get("ln_final.bias").unwrap();
        w.insert("ln_final.bias", t.narrow(0, 0, 10).unwrap());
    });
    let msg = load_error(&misshapen);
    assert!(msg.contains("misshapen.safetensors") && msg.contains("ln_final.bias") && msg.contains("[10]"), "{msg}");

    let not_clip = edited("not-clip.safetensors", |w| {
        w.remove("visual.class_embedding");
    });
    let msg = load_error(&not_clip);
    assert!(msg.contains("not-clip.safetensors") && msg.contains("not a CLIP checkpoint"), "{msg}");
}

#[test]
fn save_is_atomic_and_round_trips() {
    let path = edited("roundtrip.safetensors", |_| {});
    assert!(!path.with_extension("safetensors.tmp").exists());
    let a = WeightMap::load(&fixture(), &Device::Cpu).unwrap();
    let b = WeightMap::load(&path, &Device::Cpu).unwrap();
    for name in a.names() {
        assert_eq!(a.get(name).unwrap().to_vec().unwrap(), b.get(name).unwrap().to_vec().unwrap(), "{name}");
    }
}
