//! End to end: the autograd and the optimizers fit small problems, and the
//! loss falls by a stated factor.

use mlrpl_engine::optim::{AdamW, CosineSchedule, Optimizer, ParamGroup, Sgd, Warmup};
use mlrpl_engine::rng::Rng;
use mlrpl_engine::{Device, Tensor};

fn param(shape: &[usize], std: f32, rng: &mut Rng) -> Tensor {
    Tensor::randn(shape.to_vec(), std, rng, &Device::Cpu).unwrap().into_parameter().unwrap()
}

/// A one-block attention + MLP classifier over 4 tokens, trained with the
/// masked BCE on labels of which a third are unknown: loss falls 10x.
#[test]
fn attention_mlp_fits_partial_multilabel_data() {
    let dev = Device::Cpu;
    let mut rng = Rng::new(11);
    let (batch, tokens, width, classes) = (32, 4, 8, 5);
    let x = Tensor::randn([batch, tokens, width], 1.0, &mut rng, &dev).unwrap();
    // Labels from a fixed random linear rule on the mean token, a third unknown.
    let rule = rng.normal_vec(width * classes, 1.0);
    let xs = x.to_vec().unwrap();
    let mut labels = vec![0.0f32; batch * classes];
    for b in 0..batch {
        for c in 0..classes {
            let score: f32 = (0..width)
                .map(|d| (0..tokens).map(|t| xs[(b * tokens + t) * width + d]).sum::<f32>() * rule[d * classes + c])
                .sum();
            labels[b * classes + c] = if rng.uniform() < 1.0 / 3.0 {
                0.0
            } else if score > 0.0 {
                1.0
            } else {
                -1.0
            };
        }
    }
    let labels = Tensor::from_vec(labels, [batch, classes], &dev).unwrap();

    let qkv = param(&[3 * width, width], 0.3, &mut rng);
    let ln_g = Tensor::ones([width], mlrpl_engine::DType::F32, &dev).unwrap().into_parameter().unwrap();
    let ln_b = Tensor::zeros([width], mlrpl_engine::DType::F32, &dev).unwrap().into_parameter().unwrap();
    let fc1 = param(&[16, width], 0.3, &mut rng);
    let fc1_b = param(&[16], 0.0, &mut rng);
    let head = param(&[classes, 16], 0.3, &mut rng);
    let forward = || -> anyhow::Result<Tensor> {
        let h = x.layer_norm(&ln_g, &ln_b, 1e-5)?;
        let packed = h.linear(&qkv, None)?.reshape([batch, tokens, 3, 1, width])?.permute(&[2, 0, 3, 1, 4])?;
        let part = |i| packed.narrow(0, i, 1)?.reshape([batch, 1, tokens, width]);
        let attended = part(0)?.scaled_dot_product_attention(&part(1)?, &part(2)?, false)?;
        let pooled = attended.reshape([batch, tokens, width])?.add(&x)?.mean(&[1], false)?;
        pooled.linear(&fc1, Some(&fc1_b))?.quick_gelu()?.linear(&head, None)?.masked_bce_with_logits(&labels)
    };
    let params = vec![qkv.clone(), fc1.clone(), head.clone()];
    let mut opt = AdamW::new(
        vec![ParamGroup::new(params), ParamGroup::no_decay(vec![ln_g.clone(), ln_b.clone(), fc1_b.clone()])],
        2e-2,
        (0.9, 0.999),
        1e-8,
        1e-4,
    )
    .unwrap();
    let first = forward().unwrap();
    let initial = first.scalar().unwrap();
    mlrpl_engine::autograd::clear_tape();
    let mut last = initial;
    for _ in 0..300 {
        opt.zero_grad();
        let loss = forward().unwrap();
        loss.backward().unwrap();
        opt.step().unwrap();
        last = loss.scalar().unwrap();
    }
    assert!(last.is_finite() && last < initial / 10.0, "loss went from {initial} to {last}");
}

/// SGD with momentum and a warm-up + cosine schedule fits a linear
/// regression: the mean squared error falls 100x.
#[test]
fn sgd_with_cosine_schedule_fits_linear_regression() {
    let dev = Device::Cpu;
    let mut rng = Rng::new(5);
    let x = Tensor::randn([64, 6], 1.0, &mut rng, &dev).unwrap();
    let true_w = Tensor::randn([3, 6], 1.0, &mut rng, &dev).unwrap();
    let y = x.linear(&true_w, None).unwrap();
    let w = param(&[3, 6], 0.1, &mut rng);
    let mse = || x.linear(&w, None)?.sub(&y)?.mul(&x.linear(&w, None)?.sub(&y)?)?.mean_all();
    let schedule =
        CosineSchedule { base_lr: 0.05, min_lr: 0.0, warmup: Warmup::Linear, warmup_steps: 5, total_steps: 150 };
    let mut opt = Sgd::new(vec![ParamGroup::new(vec![w.clone()])], schedule.lr(0), 0.9, 0.0).unwrap();
    let initial = {
        let _g = mlrpl_engine::autograd::no_grad();
        mse().unwrap().scalar().unwrap()
    };
    for step in 0..schedule.total_steps {
        opt.set_lr(schedule.lr(step));
        opt.zero_grad();
        mse().unwrap().backward().unwrap();
        opt.step().unwrap();
    }
    let _g = mlrpl_engine::autograd::no_grad();
    let last = mse().unwrap().scalar().unwrap();
    assert!(last < initial / 100.0, "mse went from {initial} to {last}");
}
