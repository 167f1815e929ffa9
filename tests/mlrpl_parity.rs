//! The MLR-PL model against docs/model.md written literally in PyTorch
//! (tools/make_mlrpl_dumps.py, which materialises the [B, C, N, d] tensor):
//! logits, loss, every trainable gradient after one step, the prompts-only
//! variant, and the losses of 10 SGD steps; relative error <= 1e-4.

mod parity;

use mlrpl_engine::clip::Clip;
use mlrpl_engine::mlrpl::{MlrplConfig, MlrplModel, PromptConfig};
use mlrpl_engine::nn::WeightMap;
use mlrpl_engine::optim::{Optimizer, Sgd};
use mlrpl_engine::rng::Rng;
use mlrpl_engine::{Device, Tensor};
use parity::assert_close;
use std::path::PathBuf;

fn fixture(name: &str) -> WeightMap {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    WeightMap::load(&path, &Device::Cpu).unwrap()
}

/// The fixture CLIP, its sparse token embedding expanded to the full table.
fn clip(step: &WeightMap) -> Clip {
    let mut weights = fixture("mlrpl_clip.safetensors");
    let rows = step.get("token_rows").unwrap();
    let width = rows.dims()[1];
    let vocab = 49408;
    let mut table = vec![0.0f32; vocab * width];
    for (row, id) in rows.to_vec().unwrap().chunks(width).zip(step.get("token_ids").unwrap().to_vec().unwrap()) {
        table[id as usize * width..(id as usize + 1) * width].copy_from_slice(row);
    }
    weights.insert("token_embedding.weight", Tensor::from_vec(table, [vocab, width], &Device::Cpu).unwrap());
    Clip::from_weights(weights).unwrap()
}

fn model(step: &WeightMap, use_sdm: bool) -> MlrplModel {
    let meta = step.metadata();
    let classes: Vec<String> = serde_json::from_str(&meta["classes"]).unwrap();
    let config = MlrplConfig {
        prompt: PromptConfig { n_ctx: meta["n_ctx"].parse().unwrap(), shared_ctx: false, ctx_init: None },
        decoupling_width: Some(meta["decoupling_width"].parse().unwrap()),
        use_sdm,
    };
    let model = MlrplModel::new(clip(step), classes, &config, &mut Rng::new(0)).unwrap();
    model.prompts.ctx.copy_from(&step.get("init.ctx").unwrap()).unwrap();
    if let Some(sdm) = &model.sdm {
        for (name, param) in ["w1", "w2", "w3", "b3", "w4", "b4"].iter().zip(sdm.parameters()) {
            param.copy_from(&step.get(&format!("init.{name}")).unwrap()).unwrap();
        }
    }
    assert_close(&model.classifier.log_kappa, &step.get("init.log_kappa").unwrap(), "initial log_kappa");
    assert_close(&model.classifier.beta, &step.get("init.beta").unwrap(), "initial beta");
    model
}

#[test]
fn logits_loss_and_every_gradient_match_the_literal_pytorch_model() {
    let step = fixture("mlrpl_step.safetensors");
    let model = model(&step, true);
    let logits = model.logits(&step.get("images").unwrap()).unwrap();
    assert_close(&logits, &step.get("logits").unwrap(), "logits");
    let loss = logits.masked_bce_with_logits(&step.get("labels").unwrap()).unwrap();
    assert_close(&loss.reshape([1]).unwrap(), &step.get("loss").unwrap(), "loss");
    loss.backward().unwrap();
    let sdm = model.sdm.as_ref().unwrap();
    let params = [
        ("ctx", &model.prompts.ctx),
        ("w1", &sdm.w1),
        ("w2", &sdm.w2),
        ("w3", &sdm.w3),
        ("b3", &sdm.b3),
        ("w4", &sdm.w4),
        ("b4", &sdm.b4),
        ("log_kappa", &model.classifier.log_kappa),
        ("beta", &model.classifier.beta),
    ];
    for (name, param) in params {
        let grad = param.grad().unwrap_or_else(|| panic!("{name} got no gradient"));
        let want = step.get(&format!("grad.{name}")).unwrap();
        if name == "b3" || name == "b4" {
            // fc3's and fc4's biases shift every score of a softmax row by
            // the same amount, so their gradient is exactly 0; both sides
            // hold rounding noise only.
            for g in grad.to_vec().unwrap().into_iter().chain(want.to_vec().unwrap()) {
                assert!(g.abs() <= 1e-6, "grad of {name}: {g} should be 0 up to rounding");
            }
            continue;
        }
        assert_close(&grad, &want, &format!("grad of {name}"));
    }
}

#[test]
fn prompts_only_variant_matches() {
    let step = fixture("mlrpl_step.safetensors");
    let model = model(&step, false);
    let logits = model.logits(&step.get("images").unwrap()).unwrap();
    assert_close(&logits, &step.get("logits_no_sdm").unwrap(), "logits without decoupling");
    mlrpl_engine::autograd::clear_tape();
}

#[test]
fn ten_sgd_steps_follow_pytorch() {
    let step = fixture("mlrpl_step.safetensors");
    let meta = step.metadata();
    let model = model(&step, true);
    let (images, labels) = (step.get("images").unwrap(), step.get("labels").unwrap());
    let mut opt = Sgd::new(
        model.parameter_groups(),
        meta["lr"].parse().unwrap(),
        meta["momentum"].parse().unwrap(),
        meta["weight_decay"].parse().unwrap(),
    )
    .unwrap();
    let tokens = model.image_tokens(&images).unwrap();
    let mut losses = Vec::new();
    for _ in 0..10 {
        opt.zero_grad();
        let loss = model.logits_from_tokens(&tokens).unwrap().masked_bce_with_logits(&labels).unwrap();
        loss.backward().unwrap();
        opt.step().unwrap();
        losses.push(loss.scalar().unwrap());
    }
    let want = step.get("step_losses").unwrap().to_vec().unwrap();
    for (i, (g, w)) in losses.iter().zip(&want).enumerate() {
        assert!(((g - w) / w).abs() <= 1e-4, "step {i}: loss {g} vs PyTorch {w}\nall: {losses:?}\nwant: {want:?}");
    }
}

#[test]
fn ctx_init_copies_the_phrase_embeddings_and_shared_ctx_is_one_set() {
    use mlrpl_engine::clip::tokenizer::Tokenizer;
    let step = fixture("mlrpl_step.safetensors");
    let clip = clip(&step);
    let classes = vec!["cat".to_string(), "dog".to_string()];
    let ids = Tokenizer::shared().unwrap().encode("X X");
    let config = MlrplConfig {
        prompt: PromptConfig { n_ctx: 7, shared_ctx: true, ctx_init: Some("X X".into()) },
        decoupling_width: None,
        use_sdm: true,
    };
    let model = MlrplModel::new(clip, classes, &config, &mut Rng::new(1)).unwrap();
    assert_eq!(model.prompts.ctx.dims(), &[1, 2, 64], "M is the phrase's token count, one shared set");
    let table = model.clip.text.token_embedding();
    let want = table.index_select(&Tensor::from_ids(ids, [2], &Device::Cpu).unwrap()).unwrap();
    assert_close(&model.prompts.ctx.reshape([2, 64]).unwrap(), &want, "ctx from --ctx-init");
    let logits = model.logits(&step.get("images").unwrap()).unwrap();
    assert_eq!(logits.dims(), &[3, 2]);
    logits.sum_all().unwrap().backward().unwrap();
    assert!(model.prompts.ctx.grad().is_some());
}
