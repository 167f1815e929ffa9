//! Every differentiable op's backward against central finite differences
//! in f64 (docs/model.md §9), on fresh seeded random inputs, one seed per test.
//! The method, the step and the tolerances are explained in
//! `tests/common/mod.rs`.

mod common;

use anyhow::Result;
use common::*;
use mlrpl_engine::rng::Rng;
use mlrpl_engine::{DType, Shape, Tensor};

/// |x| in [0.5, 2] with a random sign: safe denominators.
fn away_from_zero(rng: &mut Rng, shape: &[usize]) -> Input {
    let values =
        rng.uniform_vec(numel(shape), 0.5, 2.0).into_iter().map(|v| if rng.uniform() < 0.5 { -v } else { v }).collect();
    Input::new(values, shape)
}

// ---------------------------------------------------------------------------
// The checker itself must fail on wrong gradients.

#[test]
fn gradcheck_catches_wrong_gradients() {
    let mut rng = Rng::new(200);
    let x = Input::randn(&mut rng, &[3, 4], 1.0);
    let inputs = [x];
    // Sanity: the right gradient passes.
    try_gradcheck(1, &inputs, GRAD_TOL, |p| p[0].mul(&p[0])).expect("x*x must pass");

    // Same forward value (x^2), half the gradient: x * detach(x) gives x, not 2x.
    let err = try_gradcheck(1, &inputs, GRAD_TOL, |p| p[0].mul(&p[0].detach())).unwrap_err();
    assert!(err.to_string().contains("finite difference"), "{err}");

    // Same forward value (x), flipped sign: 2 detach(x) - x has gradient -1.
    let err = try_gradcheck(2, &inputs, GRAD_TOL, |p| p[0].detach().scale(2.0)?.sub(&p[0])).unwrap_err();
    assert!(err.to_string().contains("finite difference"), "{err}");

    // A gradient that never arrives: the all-zeros check fires.
    let y = Input::randn(&mut rng, &[3, 4], 1.0);
    let two = [inputs[0].clone(), y];
    let err = try_gradcheck(3, &two, GRAD_TOL, |p| p[0].detach().mul(&p[1])).unwrap_err();
    assert!(err.to_string().contains("all zeros"), "{err}");

    // A transposed gradient: forward x, backward routed through the
    // transpose of a different tensor of the same values is still caught
    // when the analytic graph differs from the evaluated function. Here the
    // forward is x but the gradient flows as if it were x^T (square input).
    let sq = [Input::randn(&mut rng, &[4, 4], 1.0)];
    let err = try_gradcheck(4, &sq, GRAD_TOL, |p| {
        let t = p[0].transpose(0, 1)?;
        // value: t + (x - t) = x; gradient: only through t, i.e. transposed.
        t.add(&p[0].detach().sub(&t.detach())?)
    })
    .unwrap_err();
    assert!(err.to_string().contains("finite difference"), "{err}");

    // A small gradient that is wrong by a factor of 2 everywhere: every
    // element is inside atol, the norm-wise check still fails.
    let err = try_gradcheck(6, &inputs, GRAD_TOL, |p| p[0].scale(5e-4)?.add(&p[0].detach().scale(5e-4)?)).unwrap_err();
    assert!(err.to_string().contains("||analytic - fd||") && !err.to_string().contains("element"), "{err}");

    // An input the output does not depend on: the check would prove
    // nothing about it, so it fails unless zero gradients are expected.
    let err = try_gradcheck(7, &two, GRAD_TOL, |p| p[0].add(&p[1].scale(0.0)?)).unwrap_err();
    assert!(err.to_string().contains("vacuous"), "{err}");
    try_gradcheck(7, &two, Tol { allow_zero: true, ..GRAD_TOL }, |p| p[0].add(&p[1].scale(0.0)?))
        .expect("allowed zero");

    // NaN never passes: a function whose output is NaN.
    let err = try_gradcheck(5, &inputs, GRAD_TOL, |p| p[0].sub(&p[0])?.div(&p[0].sub(&p[0])?)).unwrap_err();
    assert!(err.to_string().contains("non-finite"), "{err}");
}

// ---------------------------------------------------------------------------
// Broadcasting binaries: both operands, several shape pairs.

fn check_binary(name: &str, seed: u64, op: fn(&Tensor, &Tensor) -> Result<Tensor>, denominator_rhs: bool) {
    let mut rng = Rng::new(seed);
    let pairs: &[(&[usize], &[usize])] = &[
        (&[4, 1, 3], &[5, 1]),
        (&[5, 1], &[4, 1, 3]),
        (&[2, 3], &[1]),
        (&[1], &[2, 3]),
        (&[3, 4], &[3, 4]),
        (&[3, 1], &[1, 4]),
    ];
    for (i, &(sa, sb)) in pairs.iter().enumerate() {
        let a = Input::randn(&mut rng, sa, 1.0);
        let b = if denominator_rhs { away_from_zero(&mut rng, sb) } else { Input::randn(&mut rng, sb, 1.0) };
        gradcheck(&format!("{name} {sa:?} {sb:?}"), seed * 100 + i as u64, &[a, b], |p| op(&p[0], &p[1]));
    }
}

#[test]
fn grad_add_broadcast() {
    check_binary("add", 201, Tensor::add, false);
}

#[test]
fn grad_sub_broadcast() {
    check_binary("sub", 202, Tensor::sub, false);
}

#[test]
fn grad_mul_broadcast() {
    check_binary("mul", 203, Tensor::mul, false);
}

#[test]
fn grad_div_broadcast() {
    check_binary("div", 204, Tensor::div, true);
}

// ---------------------------------------------------------------------------
// Elementwise maps.

fn check_unary(name: &str, seed: u64, input: Input, op: impl Fn(&Tensor) -> Result<Tensor>) {
    gradcheck(name, seed, &[input], |p| op(&p[0]));
}

#[test]
fn grad_neg() {
    check_unary("neg", 210, Input::randn(&mut Rng::new(210), &[3, 5], 1.0), |x| x.neg());
}

#[test]
fn grad_exp() {
    check_unary("exp", 211, Input::randn(&mut Rng::new(211), &[3, 5], 1.0), |x| x.exp());
}

#[test]
fn grad_log() {
    check_unary("log", 212, Input::uniform(&mut Rng::new(212), &[3, 5], 0.5, 3.0), |x| x.log());
}

#[test]
fn grad_sqrt() {
    check_unary("sqrt", 213, Input::uniform(&mut Rng::new(213), &[3, 5], 0.5, 3.0), |x| x.sqrt());
}

#[test]
fn grad_tanh() {
    check_unary("tanh", 214, Input::randn(&mut Rng::new(214), &[3, 5], 1.5), |x| x.tanh());
}

#[test]
fn grad_sigmoid() {
    check_unary("sigmoid", 215, Input::randn(&mut Rng::new(215), &[3, 5], 2.0), |x| x.sigmoid());
}

#[test]
fn grad_quick_gelu() {
    check_unary("quick_gelu", 216, Input::randn(&mut Rng::new(216), &[4, 9], 2.0), |x| x.quick_gelu());
}

#[test]
fn grad_affine_and_scale() {
    check_unary("affine", 217, Input::randn(&mut Rng::new(217), &[3, 5], 1.0), |x| x.affine(-1.7, 0.4));
    check_unary("scale", 218, Input::randn(&mut Rng::new(218), &[3, 5], 1.0), |x| x.scale(0.35));
}

#[test]
fn grad_clamp() {
    // Both ends cut some of these 15 values; none lies within eps of an end.
    check_unary("clamp", 219, Input::randn(&mut Rng::new(219), &[3, 5], 1.0), |x| x.clamp(-0.6, 0.8));
}

// ---------------------------------------------------------------------------
// Reductions and their broadcast adjoint.

#[test]
fn grad_sum_and_mean_over_axes() {
    let mut rng = Rng::new(220);
    let x = Input::randn(&mut rng, &[3, 4, 2, 5], 1.0);
    let axes_cases: &[&[isize]] = &[&[0], &[-1], &[1, 3], &[0, 2, 3], &[0, 1, 2, 3]];
    for (i, &axes) in axes_cases.iter().enumerate() {
        for keepdim in [false, true] {
            let seed = 2200 + 10 * i as u64 + keepdim as u64;
            gradcheck(&format!("sum {axes:?} keepdim {keepdim}"), seed, std::slice::from_ref(&x), |p| {
                p[0].sum(axes, keepdim)
            });
            gradcheck(&format!("mean {axes:?} keepdim {keepdim}"), seed + 5, std::slice::from_ref(&x), |p| {
                p[0].mean(axes, keepdim)
            });
        }
    }
}

#[test]
fn grad_sum_all_and_mean_all() {
    let mut rng = Rng::new(221);
    let x = Input::randn(&mut rng, &[3, 7], 1.0);
    gradcheck("sum_all", 2210, std::slice::from_ref(&x), |p| p[0].sum_all());
    gradcheck("mean_all", 2211, &[x], |p| p[0].mean_all());
}

#[test]
fn grad_sum_to_and_broadcast_to() {
    let mut rng = Rng::new(222);
    let x = Input::randn(&mut rng, &[3, 4, 5], 1.0);
    for (i, target) in [vec![4, 1], vec![3, 1, 5], vec![5], vec![1, 1, 1]].into_iter().enumerate() {
        let shape = Shape::new(target.clone());
        gradcheck(&format!("sum_to {target:?}"), 2220 + i as u64, std::slice::from_ref(&x), |p| p[0].sum_to(&shape));
    }
    let small = Input::randn(&mut rng, &[4, 1], 1.0);
    for (i, target) in [vec![3, 4, 5], vec![4, 6]].into_iter().enumerate() {
        let shape = Shape::new(target.clone());
        gradcheck(&format!("broadcast_to {target:?}"), 2225 + i as u64, std::slice::from_ref(&small), |p| {
            p[0].broadcast_to(&shape)
        });
    }
}

// ---------------------------------------------------------------------------
// Layout ops.

#[test]
fn grad_reshape() {
    let x = Input::randn(&mut Rng::new(230), &[2, 3, 4], 1.0);
    gradcheck("reshape", 230, &[x], |p| p[0].reshape([4, 6])?.mul(&p[0].reshape([4, 6])?.tanh()?));
}

#[test]
fn grad_permute_4d() {
    let x = Input::randn(&mut Rng::new(231), &[2, 3, 4, 5], 1.0);
    for (i, perm) in [[0, 2, 1, 3], [3, 1, 0, 2], [1, 2, 3, 0]].into_iter().enumerate() {
        gradcheck(&format!("permute {perm:?}"), 2310 + i as u64, std::slice::from_ref(&x), |p| p[0].permute(&perm));
    }
}

#[test]
fn grad_transpose() {
    let x = Input::randn(&mut Rng::new(232), &[2, 3, 5], 1.0);
    gradcheck("transpose(-2, -1)", 2320, std::slice::from_ref(&x), |p| p[0].transpose(-2, -1));
    gradcheck("transpose(0, 2)", 2321, &[x], |p| p[0].transpose(0, 2));
}

#[test]
fn grad_narrow() {
    let x = Input::randn(&mut Rng::new(233), &[3, 4, 6], 1.0);
    for (i, (dim, start, len)) in [(2isize, 1usize, 3usize), (-1, 4, 2), (1, 1, 2), (0, 0, 2)].into_iter().enumerate() {
        gradcheck(&format!("narrow {dim} {start}+{len}"), 2330 + i as u64, std::slice::from_ref(&x), |p| {
            p[0].narrow(dim, start, len)
        });
    }
}

#[test]
fn grad_concat_three_parts() {
    let mut rng = Rng::new(234);
    for dim in 0..3usize {
        let inputs: Vec<Input> = (0..3)
            .map(|i| {
                let mut s = vec![2, 3, 4];
                s[dim] = i + 1;
                Input::randn(&mut rng, &s, 1.0)
            })
            .collect();
        gradcheck(&format!("concat dim {dim}"), 2340 + dim as u64, &inputs, |p| {
            Tensor::concat(&[&p[0], &p[1], &p[2]], dim as isize)
        });
    }
    // A constant middle part (no grad) between two parameters.
    let constant = tensor(rng.normal_vec(2 * 2 * 4, 1.0), &[2, 2, 4]);
    let inputs = [Input::randn(&mut rng, &[2, 1, 4], 1.0), Input::randn(&mut rng, &[2, 3, 4], 1.0)];
    gradcheck("concat with a constant part", 2343, &inputs, |p| Tensor::concat(&[&p[0], &constant, &p[1]], 1));
}

#[test]
fn grad_index_select_with_repeated_ids() {
    let mut rng = Rng::new(235);
    let table = Input::randn(&mut rng, &[7, 5], 1.0);
    let id_tensor = ids(vec![3, 0, 3, 6, 3, 1, 0], &[7]);
    let report = gradcheck("index_select", 235, &[table], |p| p[0].index_select(&id_tensor));
    // Rows never selected (2, 4, 5) get exactly zero gradient.
    for row in [2, 4, 5] {
        assert!(report.analytic[0][row * 5..row * 5 + 5].iter().all(|&g| g == 0.0), "row {row}");
    }
    let id2 = ids(vec![1, 1, 2, 1, 0, 2], &[2, 3]);
    let table = Input::randn(&mut rng, &[3, 4], 1.0);
    gradcheck("index_select 2-D ids", 2351, &[table], |p| p[0].index_select(&id2));
}

// ---------------------------------------------------------------------------
// Matrix products: every batch/broadcast configuration of matmul and linear.

fn check_matmul(seed: u64, sa: &[usize], sb: &[usize]) {
    let mut rng = Rng::new(seed);
    let (a, b) = (Input::randn(&mut rng, sa, 1.0), Input::randn(&mut rng, sb, 1.0));
    gradcheck(&format!("matmul {sa:?} @ {sb:?}"), seed, &[a, b], |p| p[0].matmul(&p[1]));
}

#[test]
fn grad_matmul_2d_2d() {
    check_matmul(240, &[3, 4], &[4, 5]);
}

#[test]
fn grad_matmul_3d_2d_shared_rhs() {
    check_matmul(241, &[2, 3, 4], &[4, 5]);
}

#[test]
fn grad_matmul_2d_3d_shared_lhs() {
    check_matmul(242, &[3, 4], &[2, 4, 5]);
}

#[test]
fn grad_matmul_3d_3d() {
    check_matmul(243, &[2, 3, 4], &[2, 4, 5]);
}

#[test]
fn grad_matmul_4d_4d() {
    check_matmul(244, &[2, 2, 3, 4], &[2, 2, 4, 3]);
}

#[test]
fn grad_matmul_4d_2d_and_2d_4d() {
    check_matmul(245, &[2, 2, 3, 4], &[4, 3]);
    check_matmul(246, &[3, 4], &[2, 2, 4, 3]);
}

#[test]
fn grad_matmul_of_transposed_operands() {
    // a^T b and a b^T through transpose: the permute backward composed with
    // the GEMM backward.
    let mut rng = Rng::new(247);
    let (a, b) = (Input::randn(&mut rng, &[2, 4, 3], 1.0), Input::randn(&mut rng, &[2, 5, 4], 1.0));
    gradcheck("matmul a^T b^T", 247, &[a, b], |p| p[0].transpose(-2, -1)?.matmul(&p[1].transpose(-2, -1)?));
}

#[test]
fn grad_linear_with_bias() {
    let mut rng = Rng::new(248);
    for (i, x_shape) in [vec![4, 6], vec![2, 3, 6], vec![2, 2, 2, 6]].into_iter().enumerate() {
        let x = Input::randn(&mut rng, &x_shape, 1.0);
        let w = Input::randn(&mut rng, &[5, 6], 0.5);
        let b = Input::randn(&mut rng, &[5], 1.0);
        gradcheck(&format!("linear+bias {x_shape:?}"), 2480 + i as u64, &[x, w, b], |p| {
            p[0].linear(&p[1], Some(&p[2]))
        });
    }
}

#[test]
fn grad_linear_without_bias() {
    let mut rng = Rng::new(249);
    let x = Input::randn(&mut rng, &[2, 3, 6], 1.0);
    let w = Input::randn(&mut rng, &[4, 6], 0.5);
    gradcheck("linear", 249, &[x, w], |p| p[0].linear(&p[1], None));
}

#[test]
fn grad_linear_frozen_through_the_input_only() {
    // W and b frozen (plain tensors), W^T stored beside W: the input
    // gradient must still be g W, and the output must equal `linear`'s.
    let mut rng = Rng::new(250);
    let x = Input::randn(&mut rng, &[2, 3, 6], 1.0);
    let (w, b) = (rng.normal_vec(4 * 6, 0.5), rng.normal_vec(4, 1.0));
    gradcheck("linear_frozen", 250, &[x], |p| {
        let weight = Tensor::from_vec(w.clone(), [4, 6], p[0].device())?;
        let bias = Tensor::from_vec(b.clone(), [4], p[0].device())?;
        let weight_t = weight.transpose(0, 1)?;
        let frozen = p[0].linear_frozen(&weight, &weight_t, Some(&bias))?;
        let plain = p[0].linear(&weight, Some(&bias))?;
        let (got, want) = (frozen.to_vec()?, plain.to_vec()?);
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        anyhow::ensure!(worst <= 1e-5, "linear_frozen differs from linear by {worst}");
        Ok(frozen)
    });
}

// ---------------------------------------------------------------------------
// Normalisations, softmax, attention.

#[test]
fn grad_layer_norm() {
    let mut rng = Rng::new(250);
    for (i, shape) in [vec![3, 13], vec![2, 2, 7]].into_iter().enumerate() {
        let cols = *shape.last().unwrap();
        let x = Input::randn(&mut rng, &shape, 1.0);
        let gamma = Input::new(rng.normal_vec(cols, 0.3).iter().map(|v| v + 1.0).collect(), &[cols]);
        let beta = Input::randn(&mut rng, &[cols], 0.5);
        gradcheck(&format!("layer_norm {shape:?}"), 2500 + i as u64, &[x, gamma, beta], |p| {
            p[0].layer_norm(&p[1], &p[2], 1e-5)
        });
    }
}

#[test]
fn grad_softmax() {
    let mut rng = Rng::new(251);
    let x = Input::randn(&mut rng, &[3, 7], 1.5);
    gradcheck("softmax", 251, &[x], |p| p[0].softmax());
    let x = Input::randn(&mut rng, &[2, 2, 5], 1.0);
    gradcheck("softmax 3-D", 2511, &[x], |p| p[0].softmax());
}

#[test]
fn grad_l2_normalize() {
    let mut rng = Rng::new(252);
    let x = Input::randn(&mut rng, &[4, 6], 1.0);
    gradcheck("l2_normalize", 252, &[x], |p| p[0].l2_normalize());
}

#[test]
fn grad_cosine_similarity() {
    let mut rng = Rng::new(253);
    let (a, b) = (Input::randn(&mut rng, &[3, 6], 1.0), Input::randn(&mut rng, &[3, 6], 1.0));
    gradcheck("cosine_similarity", 253, &[a, b], |p| p[0].cosine_similarity(&p[1]));
    // Broadcast: per-sample features [B, C, D] against class features [C, D].
    let (a, b) = (Input::randn(&mut rng, &[2, 3, 5], 1.0), Input::randn(&mut rng, &[3, 5], 1.0));
    gradcheck("cosine_similarity broadcast", 2531, &[a, b], |p| p[0].cosine_similarity(&p[1]));
}

fn check_attention(seed: u64, lq: usize, lk: usize, causal: bool) {
    let mut rng = Rng::new(seed);
    let (b, h, d) = (2, 2, 4);
    let q = Input::randn(&mut rng, &[b, h, lq, d], 1.0);
    let k = Input::randn(&mut rng, &[b, h, lk, d], 1.0);
    let v = Input::randn(&mut rng, &[b, h, lk, d], 1.0);
    gradcheck(&format!("attention causal={causal} Lq={lq} Lk={lk}"), seed, &[q, k, v], |p| {
        p[0].scaled_dot_product_attention(&p[1], &p[2], causal)
    });
}

#[test]
fn grad_attention_non_causal() {
    check_attention(254, 3, 5, false);
    check_attention(255, 4, 4, false);
    check_attention(257, 6, 3, false);
}

#[test]
fn grad_attention_causal() {
    check_attention(256, 5, 5, true);
}

// ---------------------------------------------------------------------------
// Masked BCE.

#[test]
fn grad_masked_bce_mixed_labels() {
    let mut rng = Rng::new(260);
    let logits = Input::randn(&mut rng, &[4, 5], 2.0);
    let label_values: Vec<f32> = (0..20).map(|i| [1.0, -1.0, 0.0][(i + rng.below(2)) % 3]).collect();
    assert!([1.0, -1.0, 0.0].iter().all(|l| label_values.contains(l)));
    let labels = tensor(label_values.clone(), &[4, 5]);
    let report = gradcheck("masked_bce", 260, &[logits], |p| p[0].masked_bce_with_logits(&labels));
    for (g, y) in report.analytic[0].iter().zip(&label_values) {
        if *y == 0.0 {
            assert_eq!(*g, 0.0, "unknown labels must get exactly zero gradient");
        }
    }
}

#[test]
fn grad_masked_bce_all_unknown_is_zero() {
    let mut rng = Rng::new(261);
    let logits = Input::randn(&mut rng, &[3, 4], 2.0);
    let labels = tensor(vec![0.0; 12], &[3, 4]);
    let tol = Tol { allow_zero: true, ..GRAD_TOL };
    let report =
        gradcheck_with("masked_bce all unknown", 261, &[logits], tol, |p| p[0].masked_bce_with_logits(&labels));
    assert_eq!(report.loss, 0.0, "loss must be exactly 0");
    assert!(report.analytic[0].iter().all(|&g| g == 0.0), "gradient must be exactly 0: {:?}", report.analytic[0]);
    assert!(report.fd[0].iter().all(|&(_, fd)| fd == 0.0));
}

#[test]
fn grad_masked_bce_extreme_logits() {
    let values = vec![80.0, -80.0, 80.0, -80.0, 79.5, -79.5];
    let labels = tensor(vec![1.0, -1.0, -1.0, 1.0, 0.0, 1.0], &[2, 3]);
    let report = gradcheck("masked_bce extreme", 262, &[Input::new(values.clone(), &[2, 3])], |p| {
        p[0].masked_bce_with_logits(&labels)
    });
    assert!(report.loss.is_finite());
    // The loss itself, backpropagated directly: saturated right answers get
    // ~0, saturated wrong answers +-1/known, the unknown entry exactly 0.
    let x = tensor(values, &[2, 3]).into_parameter().unwrap();
    let loss = x.masked_bce_with_logits(&labels).unwrap();
    let l = loss.scalar().unwrap() as f64;
    // Two wrong answers at |x| = 80 and one at 79.5, two right ones: (80 + 80 + 79.5) / 5.
    assert!((l - 239.5 / 5.0).abs() < 1e-4, "loss {l}");
    loss.backward().unwrap();
    let g = x.grad().unwrap().to_vec().unwrap();
    let known = 5.0;
    assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    assert!(g[0].abs() < 1e-6 && g[1].abs() < 1e-6, "{g:?}");
    assert!((g[2] - 1.0 / known).abs() < 1e-6 && (g[3] + 1.0 / known).abs() < 1e-6, "{g:?}");
    assert!(g[4] == 0.0 && (g[5] + 1.0 / known).abs() < 1e-6, "{g:?}");
}

#[test]
fn grad_contrastive_loss() {
    let mut rng = Rng::new(263);
    gradcheck("contrastive_loss", 263, &[Input::randn(&mut rng, &[6, 6], 3.0)], |p| p[0].contrastive_loss());
}

#[test]
fn grad_clip_loss_reaches_features_and_temperature() {
    let mut rng = Rng::new(264);
    let image = Input::randn(&mut rng, &[5, 8], 1.0);
    let text = Input::randn(&mut rng, &[5, 8], 1.0);
    let log_scale = Input::new(vec![1.2], &[]);
    gradcheck("clip_loss", 264, &[image, text, log_scale], |p| {
        mlrpl_engine::train::pretrain::clip_loss(&p[0], &p[1], &p[2])
    });
}

// ---------------------------------------------------------------------------
// Graph structure: reuse, chains, dtype casts.

#[test]
fn grad_op_used_twice_sums_contributions() {
    let x = Input::randn(&mut Rng::new(270), &[3, 4], 1.0);
    let report = gradcheck("x*x + x", 270, std::slice::from_ref(&x), |p| p[0].mul(&p[0])?.add(&p[0]));
    // Also through a non-parameter intermediate used twice: y = tanh(x); y*y + y.
    gradcheck("y*y + y, y = tanh(x)", 271, std::slice::from_ref(&x), |p| {
        let y = p[0].tanh()?;
        y.mul(&y)?.add(&y)
    });
    assert!(report.analytic[0].iter().any(|&g| g != 0.0));
    // Both operands of one op are the same parameter (add passes the same
    // gradient tensor to both).
    gradcheck("x + x", 272, std::slice::from_ref(&x), |p| p[0].add(&p[0]));
    gradcheck("x / (x*x)", 273, &[away_from_zero(&mut Rng::new(273), &[2, 3])], |p| p[0].div(&p[0].mul(&p[0])?));
}

#[test]
fn grad_parameter_gradients_accumulate_across_backward_passes() {
    let mut rng = Rng::new(274);
    let x = tensor(rng.normal_vec(6, 1.0), &[2, 3]).into_parameter().unwrap();
    let r = tensor(rng.normal_vec(6, 1.0), &[2, 3]);
    for _ in 0..2 {
        x.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    }
    let want: Vec<f64> = r.to_vec().unwrap().iter().map(|&v| 2.0 * v as f64).collect();
    assert_close("two backward passes", &x.grad().unwrap().to_vec().unwrap(), &want, F32_TOL);
    x.zero_grad();
    assert!(x.grad().is_none());
}

#[test]
fn grad_chain_linear_quick_gelu_layer_norm_sum() {
    let mut rng = Rng::new(280);
    let (din, dout) = (6, 9);
    let x = Input::randn(&mut rng, &[2, 3, din], 1.0);
    let w = Input::randn(&mut rng, &[dout, din], 0.5);
    let b = Input::randn(&mut rng, &[dout], 0.5);
    let gamma = Input::new(rng.normal_vec(dout, 0.4).iter().map(|v| v + 1.0).collect(), &[dout]);
    let beta = Input::randn(&mut rng, &[dout], 0.5);
    gradcheck("linear -> quick_gelu -> layer_norm -> sum", 280, &[x, w, b, gamma, beta], |p| {
        p[0].linear(&p[1], Some(&p[2]))?.quick_gelu()?.layer_norm(&p[3], &p[4], 1e-5)?.sum(&[-1], false)
    });
}

/// A small version of the model's head (docs/model.md §4-§5): decoupling
/// attention over patches, cosine classifier with a learnable scale, masked
/// BCE. Exercises broadcasting, softmax over a non-last axis via transpose,
/// and many ops feeding each other.
#[test]
fn grad_chain_decoupling_head() {
    let mut rng = Rng::new(281);
    let (b, n, c, d) = (2, 4, 3, 5);
    let x = Input::randn(&mut rng, &[b, n, d], 1.0); // patch features
    let t = Input::randn(&mut rng, &[c, d], 1.0); // text features
    let w1 = Input::randn(&mut rng, &[d, d], 0.5);
    let w2 = Input::randn(&mut rng, &[d, d], 0.5);
    let w4 = Input::randn(&mut rng, &[d], 0.7);
    let log_kappa = Input::new(vec![1.2], &[1]);
    let beta = Input::randn(&mut rng, &[c], 0.5);
    let labels = tensor(vec![1.0, -1.0, 0.0, -1.0, 1.0, 1.0], &[b, c]);
    gradcheck("decoupling head", 281, &[x, t, w1, w2, w4, log_kappa, beta], |p| {
        let (x, t) = (&p[0], &p[1]);
        let xt = x.matmul(&p[2])?; // [b, n, d]
        let tt = t.matmul(&p[3])?; // [c, d]
        let z = xt.reshape([b, 1, n, d])?.mul(&tt.reshape([c, 1, d])?)?.tanh()?; // [b, c, n, d]
        let s = z.mul(&p[4])?.sum(&[-1], false)?; // [b, c, n]
        let a = s.softmax()?; // over n
        let f = a.matmul(x)?; // [b, c, n] @ [b, n, d] -> [b, c, d]
        let cos = f.cosine_similarity(t)?; // [b, c]
        let logits = cos.mul(&p[5].exp()?)?.add(&p[6])?;
        logits.masked_bce_with_logits(&labels)
    });
}

#[test]
fn grad_through_to_dtype_bf16() {
    // The cast's gradient is the incoming gradient cast back: for
    // sum(bf16(x) * c) it is bf16(c), in x's dtype.
    let mut rng = Rng::new(290);
    let x = tensor(rng.normal_vec(12, 1.0), &[3, 4]).into_parameter().unwrap();
    let c_values = rng.normal_vec(12, 1.0);
    let c = tensor_dtype(c_values.clone(), &[3, 4], DType::BF16);
    x.to_dtype(DType::BF16).unwrap().mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
    let g = x.grad().unwrap();
    assert_eq!(g.dtype(), DType::F32);
    let want: Vec<f64> = c_values.iter().map(|&v| half::bf16::from_f32(v).to_f32() as f64).collect();
    assert_close("to_dtype backward", &g.to_vec().unwrap(), &want, 0.0);
}

#[test]
fn grad_bf16_parameters_match_f32_gradients() {
    // bf16 storage end to end (forward and backward) against the f32
    // engine's gradients: within bf16 tolerance.
    let mut rng = Rng::new(291);
    let (din, dout) = (16, 12);
    let xv = rng.normal_vec(2 * 5 * din, 1.0);
    let wv = rng.normal_vec(dout * din, 0.3);
    let gv: Vec<f32> = rng.normal_vec(dout, 0.2).iter().map(|v| v + 1.0).collect();
    let bv = rng.normal_vec(dout, 0.2);
    let rv = rng.normal_vec(2 * 5 * dout, 1.0);
    let grads = |dtype: DType| -> Vec<Vec<f32>> {
        let mk = |v: &[f32], s: &[usize]| tensor_dtype(v.to_vec(), s, dtype).into_parameter().unwrap();
        let (x, w, g, b) = (mk(&xv, &[2, 5, din]), mk(&wv, &[dout, din]), mk(&gv, &[dout]), mk(&bv, &[dout]));
        let r = tensor_dtype(rv.clone(), &[2, 5, dout], dtype);
        let y = x.linear(&w, None).unwrap().quick_gelu().unwrap().layer_norm(&g, &b, 1e-5).unwrap().softmax().unwrap();
        y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        [x, w, g, b].iter().map(|p| p.grad().unwrap().to_vec().unwrap()).collect()
    };
    let (f32_grads, bf16_grads) = (grads(DType::F32), grads(DType::BF16));
    for (i, (a, b)) in bf16_grads.iter().zip(&f32_grads).enumerate() {
        assert_close(&format!("bf16 gradient of input {i}"), a, &to_f64(b), BF16_TOL);
    }
}

#[test]
fn grad_decoupling_scores() {
    let mut rng = Rng::new(270);
    let (b, c, n, d) = (2, 3, 4, 5);
    let x = Input::randn(&mut rng, &[b, n, d], 1.0);
    let t = Input::randn(&mut rng, &[c, d], 1.0);
    let u = Input::randn(&mut rng, &[d], 0.5);
    gradcheck("decoupling_scores", 270, &[x, t, u], |p| p[0].decoupling_scores(&p[1], &p[2]));
}

/// The whole module head: scores, softmax over positions, pooling, through
/// the collapsed fc3/fc4 parameters.
#[test]
fn grad_decoupling_through_fc3_fc4_and_pooling() {
    let mut rng = Rng::new(271);
    let (b, c, n, d) = (2, 3, 4, 5);
    let x = Input::randn(&mut rng, &[b, n, d], 1.0);
    let t = Input::randn(&mut rng, &[c, d], 1.0);
    let w3 = Input::randn(&mut rng, &[d, d], 0.4);
    let w4 = Input::randn(&mut rng, &[1, d], 0.4);
    gradcheck("decoupling head", 271, &[x, t, w3, w4], |p| {
        let u = p[3].matmul(&p[2])?.reshape([d])?;
        let a = p[0].decoupling_scores(&p[1], &u)?.softmax()?;
        a.matmul(&p[0])
    });
}

// ---------------------------------------------------------------------------
// Fused decoupling cross-attention (issue 16, part 2).

/// Every input of the fused op but the shift, patches included; D unlike d.
#[test]
fn grad_decoupling_attention() {
    let mut rng = Rng::new(290);
    let (b, c, n, d, e) = (2, 3, 5, 4, 3);
    let inputs = [
        Input::randn(&mut rng, &[b, n, d], 1.0),
        Input::randn(&mut rng, &[c, d], 1.0),
        Input::randn(&mut rng, &[d], 0.5),
        Input::randn(&mut rng, &[b, n, e], 1.0),
    ];
    gradcheck("decoupling_attention", 290, &inputs, |p| {
        let shift = Tensor::from_vec(vec![0.7], [1], p[0].device())?;
        p[0].decoupling_attention(&p[1], &p[2], &shift, &p[3])
    });
}

/// The shift cancels in the softmax: the output does not move with it and
/// its gradient is exactly 0 (finite differences would only say "about").
#[test]
fn decoupling_attention_shift_changes_nothing_and_gets_a_zero_gradient() {
    let mut rng = Rng::new(292);
    let (b, c, n, d) = (2, 3, 5, 4);
    let x = Tensor::from_vec(rng.normal_vec(b * n * d, 1.0), [b, n, d], &dev()).unwrap();
    let t = Tensor::from_vec(rng.normal_vec(c * d, 1.0), [c, d], &dev()).unwrap();
    let u = Tensor::from_vec(rng.normal_vec(d, 0.5), [d], &dev()).unwrap();
    let patches =
        Tensor::from_vec(rng.normal_vec(b * n * d, 1.0), [b, n, d], &dev()).unwrap().into_parameter().unwrap();
    let out = |shift: f32| {
        let shift = Tensor::from_vec(vec![shift], [1], &dev()).unwrap().into_parameter().unwrap();
        let out = x.decoupling_attention(&t, &u, &shift, &patches).unwrap();
        (out, shift)
    };
    let (base, shift) = out(0.0);
    let (moved, _) = out(3.5);
    assert_eq!(base.to_vec().unwrap(), moved.to_vec().unwrap());
    base.sum_all().unwrap().backward().unwrap();
    assert_eq!(shift.grad().unwrap().to_vec().unwrap(), vec![0.0]);
    assert!(patches.grad().unwrap().to_vec().unwrap().iter().any(|&g| g != 0.0));
}

/// The module as the model runs it: fc1 and fc2 on the same patch and text
/// features, fc3 and fc4 collapsed, the patches also the pooled values.
#[test]
fn grad_decoupling_attention_through_the_module_parameters() {
    let mut rng = Rng::new(291);
    let (b, c, n, e, d) = (2, 3, 4, 5, 3);
    let inputs = [
        Input::randn(&mut rng, &[b, n, e], 1.0),
        Input::randn(&mut rng, &[c, e], 1.0),
        Input::randn(&mut rng, &[d, e], 0.5),
        Input::randn(&mut rng, &[d, e], 0.5),
        Input::randn(&mut rng, &[d, d], 0.5),
        Input::randn(&mut rng, &[1, d], 0.5),
    ];
    gradcheck("decoupling_attention module", 291, &inputs, |p| {
        let x = p[0].linear(&p[2], None)?;
        let t = p[1].linear(&p[3], None)?;
        let u = p[5].matmul(&p[4])?.reshape([d])?;
        let shift = Tensor::zeros([1], DType::F32, p[0].device())?;
        x.decoupling_attention(&t, &u, &shift, &p[0])
    });
}

// ---------------------------------------------------------------------------
// Prompt assembly (issue 16, part 3).

/// The context's gradient through the one-op prompt assembly, one context
/// per category and one shared by every category (summed over them).
#[test]
fn grad_prompt_embed_per_category_and_shared() {
    let mut rng = Rng::new(300);
    let (c, l, w, m) = (3, 6, 5, 2);
    let frozen = tensor(rng.normal_vec(c * (l - m) * w, 1.0), &[c, l - m, w]);
    let pos = tensor(rng.normal_vec((l + 2) * w, 1.0), &[l + 2, w]);
    for sets in [c, 1] {
        let ctx = Input::randn(&mut rng, &[sets, m, w], 1.0);
        gradcheck(&format!("prompt_embed, {sets} context sets"), 300 + sets as u64, &[ctx], |p| {
            frozen.prompt_embed(&pos, &p[0])
        });
    }
}

/// The op is the literal assembly: `to_dtype(ctx)`, broadcast to every
/// category, concat(SOT, ctx, the rest) plus the first L positional rows,
/// bit for bit in f32 and in bf16; the gradient reaches the context only,
/// and frozen inputs that require a gradient are refused.
#[test]
fn prompt_embed_is_concat_plus_positions() {
    let mut rng = Rng::new(301);
    let (c, l, w, m) = (4, 7, 3, 2);
    let frozen = tensor(rng.normal_vec(c * (l - m) * w, 1.0), &[c, l - m, w]);
    let pos = tensor(rng.normal_vec(9 * w, 1.0), &[9, w]);
    let ctx = tensor(rng.normal_vec(m * w, 1.0), &[1, m, w]).into_parameter().unwrap();
    let unfused = |dtype: DType| -> Vec<f32> {
        let (frozen, pos) = (frozen.to_dtype(dtype).unwrap(), pos.to_dtype(dtype).unwrap());
        let shared = ctx.to_dtype(dtype).unwrap().broadcast_to(&Shape::new(vec![c, m, w])).unwrap();
        let parts = [&frozen.narrow(1, 0, 1).unwrap(), &shared, &frozen.narrow(1, 1, l - 1 - m).unwrap()];
        Tensor::concat(&parts, 1).unwrap().add(&pos.narrow(0, 0, l).unwrap()).unwrap().to_vec().unwrap()
    };
    let got = frozen.prompt_embed(&pos, &ctx).unwrap();
    assert_eq!(got.dims(), &[c, l, w]);
    assert_eq!(got.to_vec().unwrap(), unfused(DType::F32));
    got.sum_all().unwrap().backward().unwrap();
    assert_eq!(ctx.grad().unwrap().to_vec().unwrap(), vec![c as f32; m * w]);
    let bf16 = frozen.to_dtype(DType::BF16).unwrap().prompt_embed(&pos.to_dtype(DType::BF16).unwrap(), &ctx).unwrap();
    assert_eq!(bf16.dtype(), DType::BF16);
    assert_eq!(bf16.to_vec().unwrap(), unfused(DType::BF16));
    let trainable = frozen.clone().into_parameter().unwrap();
    assert!(trainable.prompt_embed(&pos, &ctx).is_err());
    assert!(frozen.prompt_embed(&pos.narrow(0, 0, l - 1).unwrap(), &ctx).is_err(), "fewer positions than L");
    assert!(frozen.prompt_embed(&pos, &ctx.to_dtype(DType::BF16).unwrap()).is_err(), "a bf16 context");
}
