//! The CLIP towers against OpenAI's own model code and Hugging Face's
//! CLIPModel (fixtures from tools/make_clip_dumps.py): relative error <= 1e-4
//! in f32 for both weight namings, at the native and at an interpolated
//! resolution, for every block's activations and the outputs.

mod parity;

use mlrpl_engine::autograd::no_grad;
use mlrpl_engine::clip::{Clip, Naming, TextTower};
use mlrpl_engine::nn::WeightMap;
use mlrpl_engine::Device;
use parity::assert_close;
use std::path::PathBuf;

/// The fixture folder: tests/fixtures, or `MLRPL_CLIP_FIXTURES` for a manual
/// check against full-size dumps (`tools/make_clip_dumps.py --full-size`).
fn fixture(name: &str) -> PathBuf {
    match std::env::var_os("MLRPL_CLIP_FIXTURES") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name),
    }
}

fn io() -> WeightMap {
    WeightMap::load(&fixture("clip_io.safetensors"), &Device::Cpu).unwrap()
}

fn tokens(io: &WeightMap) -> Vec<Vec<u32>> {
    let t = io.get("tokens").unwrap();
    let cols = t.dims()[1];
    t.to_vec().unwrap().chunks(cols).map(|row| row.iter().map(|&x| x as u32).collect()).collect()
}

fn check_model(file: &str, naming: Naming) {
    let _no_grad = no_grad();
    let io = io();
    let clip = Clip::load(&fixture(file), &Device::Cpu).unwrap();
    assert_eq!(clip.naming, naming);
    // The sizes inferred from the shapes are the ones the dump was built with.
    let built: serde_json::Value = serde_json::from_str(&io.metadata()["config"]).unwrap();
    let size = |key: &str| built[key].as_u64().unwrap() as usize;
    let v = &clip.config.vision;
    assert_eq!(
        (v.width, v.layers, v.heads, v.patch, v.grid * v.patch, v.embed_dim),
        (
            size("vision_width"),
            size("vision_layers"),
            size("vision_width") / 64,
            size("vision_patch_size"),
            size("image_resolution"),
            size("embed_dim")
        )
    );
    let t = &clip.config.text;
    assert_eq!(
        (t.width, t.layers, t.heads, t.context_length, t.vocab_size),
        (
            size("transformer_width"),
            size("transformer_layers"),
            size("transformer_heads"),
            size("context_length"),
            size("vocab_size")
        )
    );

    let images = io.get("images").unwrap();
    let mut blocks = Vec::new();
    clip.vision.forward_tokens(&images, |_, x| blocks.push(x.clone())).unwrap();
    for (i, b) in blocks.iter().enumerate() {
        assert_close(b, &io.get(&format!("vision_block_{i}")).unwrap(), &format!("{file} vision block {i}"));
    }
    assert_close(&clip.vision.encode(&images).unwrap(), &io.get("image_embeds").unwrap(), "image_embeds");
    assert_close(&clip.vision.encode_dense(&images).unwrap(), &io.get("dense_tokens").unwrap(), "dense_tokens");
    let big = io.get("images_big").unwrap();
    assert_close(&clip.vision.encode_dense(&big).unwrap(), &io.get("dense_tokens_big").unwrap(), "interpolated");

    let toks = tokens(&io);
    let eot = TextTower::eot_positions(&toks);
    let len = eot.iter().max().unwrap() + 1;
    let mut text_blocks = Vec::new();
    clip.text
        .encode_embeddings(&clip.text.embed(&toks, len).unwrap(), &eot, |_, x| text_blocks.push(x.clone()))
        .unwrap();
    for (i, b) in text_blocks.iter().enumerate() {
        assert_close(b, &io.get(&format!("text_block_{i}")).unwrap(), &format!("{file} text block {i}"));
    }
    assert_close(&clip.text.encode(&toks).unwrap(), &io.get("text_embeds").unwrap(), "text_embeds");
}

#[test]
fn openai_naming_f16_weights_match_openai_clip() {
    check_model("clip_openai.safetensors", Naming::OpenAi);
}

#[test]
fn hugging_face_naming_bf16_weights_match_transformers() {
    check_model("clip_hf.safetensors", Naming::HuggingFace);
}

#[test]
fn truncating_text_to_the_longest_eot_changes_nothing() {
    let _no_grad = no_grad();
    let clip = Clip::load(&fixture("clip_openai.safetensors"), &Device::Cpu).unwrap();
    let toks = tokens(&io());
    let short: Vec<Vec<u32>> = toks[..3].to_vec();
    let eot = TextTower::eot_positions(&short);
    let full = clip.text.encode_embeddings(&clip.text.embed(&short, 77).unwrap(), &eot, |_, _| {}).unwrap();
    let truncated = clip.text.encode(&short).unwrap();
    assert_close(&truncated, &full, "truncated vs full context");
}

#[test]
fn initialised_weights_build_a_clip_whose_sizes_are_inferred_back() {
    use mlrpl_engine::clip::{init::init_weights, ClipConfig, TextConfig, VisionConfig};
    let config = ClipConfig {
        vision: VisionConfig { width: 64, layers: 1, heads: 1, patch: 8, grid: 2, embed_dim: 16 },
        text: TextConfig { width: 64, layers: 1, heads: 1, context_length: 8, vocab_size: 50, embed_dim: 16 },
    };
    let a = init_weights(&config, 3, &Device::Cpu).unwrap();
    let clip = Clip::from_weights(a.clone()).unwrap();
    assert_eq!(clip.config, config);
    let b = init_weights(&config, 3, &Device::Cpu).unwrap();
    let w = "visual.transformer.resblocks.0.attn.in_proj_weight";
    assert_eq!(a.get(w).unwrap().to_vec().unwrap(), b.get(w).unwrap().to_vec().unwrap(), "seeded");
}
