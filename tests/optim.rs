//! Optimizer updates against hand-computed PyTorch formulas, parameter
//! groups, and the learning-rate schedule.

use mlrpl_engine::optim::{AdamW, CosineSchedule, Optimizer, ParamGroup, Sgd, Warmup};
use mlrpl_engine::{Device, Tensor};

fn param(values: Vec<f32>) -> Tensor {
    let n = values.len();
    Tensor::from_vec(values, [n], &Device::Cpu).unwrap().into_parameter().unwrap()
}

/// Sets the gradient of `p` to `g` by backpropagating sum(p * g).
fn set_grad(p: &Tensor, g: &[f32]) {
    p.zero_grad();
    let g = Tensor::from_vec(g.to_vec(), [g.len()], &Device::Cpu).unwrap();
    p.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
}

fn close(a: &[f32], b: &[f64]) {
    for (x, y) in a.iter().zip(b) {
        assert!((*x as f64 - y).abs() < 1e-6 * (1.0 + y.abs()), "{a:?} vs {b:?}");
    }
}

#[test]
fn sgd_momentum_and_weight_decay_match_torch_and_groups_override_decay() {
    let decayed = param(vec![1.0, -2.0]);
    let plain = param(vec![0.5]);
    let mut opt = Sgd::new(
        vec![ParamGroup::new(vec![decayed.clone()]), ParamGroup::no_decay(vec![plain.clone()])],
        0.1,
        0.9,
        0.01,
    )
    .unwrap();
    let (lr, mu, wd) = (0.1f64, 0.9f64, 0.01f64);
    let mut p = [1.0f64, -2.0];
    let mut m = [0.0f64; 2];
    let mut q = 0.5f64;
    let mut mq = 0.0f64;
    for (g, gq) in [([0.3, -0.7], 0.2), ([-0.1, 0.4], -0.5), ([0.2, 0.2], 0.1)] {
        set_grad(&decayed, &[g[0] as f32, g[1] as f32]);
        set_grad(&plain, &[gq as f32]);
        opt.step().unwrap();
        for i in 0..2 {
            m[i] = mu * m[i] + g[i] + wd * p[i];
            p[i] -= lr * m[i];
        }
        mq = mu * mq + gq;
        q -= lr * mq;
        close(&decayed.to_vec().unwrap(), &p);
        close(&plain.to_vec().unwrap(), &[q]);
    }
}

#[test]
fn adamw_matches_torch_formula() {
    let w = param(vec![0.5, -1.5, 2.0]);
    let mut opt = AdamW::new(vec![ParamGroup::new(vec![w.clone()])], 1e-2, (0.9, 0.999), 1e-8, 0.1).unwrap();
    let (lr, b1, b2, eps, wd) = (1e-2f64, 0.9f64, 0.999f64, 1e-8f64, 0.1f64);
    let mut p = [0.5f64, -1.5, 2.0];
    let (mut m, mut v) = ([0.0f64; 3], [0.0f64; 3]);
    for (t, g) in [[0.1, -0.2, 0.3], [0.05, 0.4, -0.1], [-0.3, 0.0, 0.2]].iter().enumerate() {
        set_grad(&w, &g.map(|x| x as f32));
        opt.step().unwrap();
        let t = t as i32 + 1;
        for i in 0..3 {
            p[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            let (mh, vh) = (m[i] / (1.0 - b1.powi(t)), v[i] / (1.0 - b2.powi(t)));
            p[i] -= lr * mh / (vh.sqrt() + eps);
        }
        close(&w.to_vec().unwrap(), &p);
    }
}

#[test]
fn parameters_without_gradient_are_left_alone_and_non_parameters_rejected() {
    let w = param(vec![1.0]);
    let mut opt = Sgd::new(vec![ParamGroup::new(vec![w.clone()])], 0.1, 0.9, 0.1).unwrap();
    opt.step().unwrap();
    assert_eq!(w.to_vec().unwrap(), vec![1.0]);
    let plain = Tensor::from_vec(vec![1.0], [1], &Device::Cpu).unwrap();
    let err = Sgd::new(vec![ParamGroup::new(vec![plain])], 0.1, 0.9, 0.0).unwrap_err();
    assert!(err.to_string().contains("not a parameter"), "{err}");
    // One step locks every parameter at once, so a parameter listed twice
    // is refused up front.
    let groups = vec![ParamGroup::new(vec![w.clone()]), ParamGroup::no_decay(vec![w.clone()])];
    let err = AdamW::new(groups, 0.1, (0.9, 0.999), 1e-8, 0.0).unwrap_err();
    assert!(err.to_string().contains("listed twice"), "{err}");
    // ... and so is a second parameter over the same buffer (tied weights).
    let data = Tensor::from_vec(vec![1.0, 2.0], [2], &Device::Cpu).unwrap();
    let (a, b) = (data.clone().into_parameter().unwrap(), data.into_parameter().unwrap());
    let err = Sgd::new(vec![ParamGroup::new(vec![a, b])], 0.1, 0.9, 0.0).unwrap_err();
    assert!(err.to_string().contains("shares its buffer"), "{err}");
}

#[test]
fn cosine_schedule_with_constant_and_linear_warmup() {
    let s = CosineSchedule {
        base_lr: 2e-3,
        min_lr: 0.0,
        warmup: Warmup::Constant(1e-5),
        warmup_steps: 10,
        total_steps: 110,
    };
    assert_eq!(s.lr(0), 1e-5);
    assert_eq!(s.lr(9), 1e-5);
    assert!((s.lr(10) - 2e-3).abs() < 1e-9);
    assert!((s.lr(60) - 1e-3).abs() < 1e-9, "half way is half the base lr");
    assert!(s.lr(110).abs() < 1e-9 && s.lr(500).abs() < 1e-9);
    let linear = CosineSchedule { warmup: Warmup::Linear, ..s };
    assert!((linear.lr(0) - 2e-4).abs() < 1e-9 && (linear.lr(9) - 2e-3).abs() < 1e-9);
}

/// Saving the optimizer state and loading it into a fresh optimizer gives
/// the same next update as carrying on without the round trip.
#[test]
fn optimizer_state_round_trips_for_resume() {
    use std::collections::HashMap;
    let grads = [[0.3f32, -0.2], [0.1, 0.4], [-0.5, 0.2]];
    for adam in [false, true] {
        let make = |p: &Tensor| -> Box<dyn Optimizer> {
            let groups = vec![ParamGroup::new(vec![p.clone()])];
            if adam {
                Box::new(AdamW::new(groups, 0.1, (0.9, 0.99), 1e-8, 0.01).unwrap())
            } else {
                Box::new(Sgd::new(groups, 0.1, 0.9, 0.01).unwrap())
            }
        };
        let straight = param(vec![1.0, 2.0]);
        let mut opt = make(&straight);
        for g in &grads {
            set_grad(&straight, g);
            opt.step().unwrap();
        }
        let resumed = param(vec![1.0, 2.0]);
        let mut first = make(&resumed);
        for g in &grads[..2] {
            set_grad(&resumed, g);
            first.step().unwrap();
        }
        let saved: HashMap<String, Tensor> = first.state_tensors().unwrap().into_iter().collect();
        assert!(saved.keys().any(|k| k.starts_with("p0.")), "{:?}", saved.keys());
        let mut second = make(&resumed);
        second.load_state_tensors(&saved).unwrap();
        set_grad(&resumed, &grads[2]);
        second.step().unwrap();
        assert_eq!(straight.to_vec().unwrap(), resumed.to_vec().unwrap(), "adam: {adam}");
    }
}
