//! Every backend primitive on CUDA against the CPU reference (docs/model.md §9):
//! seeded random inputs, run through the Tensor ops and autograd on both
//! devices (so the real code path is tested, backward included), relative
//! error ||cuda - cpu|| / ||cpu|| <= 1e-4 for f32, 2e-2 for bf16 paths.
//! Output buffers on the GPU are poisoned with NaN before each kernel writes
//! them, so an unwritten element fails. Without a GPU every test prints
//! `SKIPPED (no CUDA GPU): <reason>` and returns.

mod common;

use anyhow::Result;
use common::{assert_rel, cuda_alone_or_skip, cuda_or_skip, Input, BF16_TOL};
use mlrpl_engine::backend::{AttentionSpec, CpuStorage, CudaStorage, Storage};
use mlrpl_engine::optim::{AdamW, Optimizer, ParamGroup, Sgd};
use mlrpl_engine::rng::Rng;
use mlrpl_engine::{DType, Device, Tensor};

const TOL: f64 = 1e-4;

/// Output and input gradients of `f` on `device`, the inputs being
/// parameters and the loss `sum(out * R)` with R a fixed seeded tensor.
fn run_on(
    device: &Device,
    inputs: &[Input],
    f: &dyn Fn(&Device, &[Tensor]) -> Result<Tensor>,
) -> (Vec<f32>, Vec<Option<Vec<f32>>>) {
    let params: Vec<Tensor> = inputs
        .iter()
        .map(|i| Tensor::from_vec(i.values.clone(), i.shape.clone(), device).unwrap().into_parameter().unwrap())
        .collect();
    let out = f(device, &params).unwrap();
    // In the output's dtype: a bf16 output takes bf16 weights (ops refuse mixed dtypes).
    let values = Rng::new(0x5EED).normal_vec(out.elem_count(), 1.0);
    let weights = Tensor::from_vec_dtype(values, out.shape().clone(), out.dtype(), device).unwrap();
    out.mul(&weights).unwrap().sum_all().unwrap().backward().unwrap();
    let grads = params.iter().map(|p| p.grad().map(|g| g.to_vec().unwrap())).collect();
    (out.to_vec().unwrap(), grads)
}

/// Runs `f` on the CPU and on the GPU and compares the output and every
/// input gradient (f32: 1e-4).
fn check(gpu: &Device, name: &str, inputs: &[Input], f: impl Fn(&Device, &[Tensor]) -> Result<Tensor>) {
    check_at(gpu, name, inputs, TOL, f)
}

/// [`check`] at tolerance `tol` (bf16 paths: `BF16_TOL`).
fn check_at(gpu: &Device, name: &str, inputs: &[Input], tol: f64, f: impl Fn(&Device, &[Tensor]) -> Result<Tensor>) {
    let (want, want_grads) = run_on(&Device::Cpu, inputs, &f);
    let (got, got_grads) = run_on(gpu, inputs, &f);
    assert_rel(&format!("{name}: forward"), &got, &want, tol);
    for (i, (g, w)) in got_grads.iter().zip(&want_grads).enumerate() {
        match (g, w) {
            (Some(g), Some(w)) => assert_rel(&format!("{name}: gradient of input {i}"), g, w, tol),
            (None, None) => {}
            _ => panic!("{name}: input {i} has a gradient on one device only"),
        }
    }
}

fn randn(rng: &mut Rng, shape: &[usize]) -> Input {
    Input::randn(rng, shape, 1.0)
}

/// `t` stored as bf16 (differentiable: the gradient comes back as f32).
fn bf16(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(DType::BF16)
}

#[test]
fn unary_ops_and_their_gradients() {
    let Some(gpu) = cuda_or_skip("unary_ops_and_their_gradients") else { return };
    let mut rng = Rng::new(1);
    // 1031 elements: not a multiple of 4, so the float4 tails run too.
    let x = randn(&mut rng, &[1031]);
    let positive = Input::uniform(&mut rng, &[1031], 0.5, 3.0);
    check(&gpu, "neg", std::slice::from_ref(&x), |_, t| t[0].neg());
    check(&gpu, "exp", std::slice::from_ref(&x), |_, t| t[0].exp());
    check(&gpu, "log", std::slice::from_ref(&positive), |_, t| t[0].log());
    check(&gpu, "sqrt", std::slice::from_ref(&positive), |_, t| t[0].sqrt());
    check(&gpu, "tanh", std::slice::from_ref(&x), |_, t| t[0].tanh());
    check(&gpu, "sigmoid", std::slice::from_ref(&x), |_, t| t[0].sigmoid());
    check(&gpu, "quick_gelu", std::slice::from_ref(&x), |_, t| t[0].quick_gelu());
    check(&gpu, "affine", std::slice::from_ref(&x), |_, t| t[0].affine(-1.5, 0.25));
    check(&gpu, "clamp", std::slice::from_ref(&x), |_, t| t[0].clamp(-0.5, 0.75));
}

#[test]
fn broadcasting_binaries_and_reductions() {
    let Some(gpu) = cuda_or_skip("broadcasting_binaries_and_reductions") else { return };
    let mut rng = Rng::new(2);
    let a = randn(&mut rng, &[2, 3, 4]);
    let row = randn(&mut rng, &[4]);
    let col = randn(&mut rng, &[3, 1]);
    let other = randn(&mut rng, &[2, 1, 4]);
    let positive = Input::uniform(&mut rng, &[3, 1], 0.5, 2.0);
    check(&gpu, "add row", &[a.clone(), row.clone()], |_, t| t[0].add(&t[1]));
    check(&gpu, "sub column", &[a.clone(), col.clone()], |_, t| t[0].sub(&t[1]));
    check(&gpu, "mul both broadcast", &[other.clone(), col.clone()], |_, t| t[0].mul(&t[1]));
    check(&gpu, "div", &[a.clone(), positive], |_, t| t[0].div(&t[1]));
    check(&gpu, "sum over axes", std::slice::from_ref(&a), |_, t| t[0].sum(&[0, 2], true));
    check(&gpu, "sum_all", std::slice::from_ref(&a), |_, t| t[0].sum_all());
    check(&gpu, "mean keepdim=false", std::slice::from_ref(&a), |_, t| t[0].mean(&[1], false));
    check(&gpu, "broadcast_to", std::slice::from_ref(&other), |_, t| {
        t[0].broadcast_to(&mlrpl_engine::Shape::new(vec![2, 3, 4]))
    });
    let big = randn(&mut rng, &[300, 70]);
    check(&gpu, "sum of many rows", std::slice::from_ref(&big), |_, t| t[0].sum(&[0], false));
}

#[test]
fn layout_ops() {
    let Some(gpu) = cuda_or_skip("layout_ops") else { return };
    let mut rng = Rng::new(3);
    let x = randn(&mut rng, &[2, 3, 4, 5]);
    check(&gpu, "permute", std::slice::from_ref(&x), |_, t| t[0].permute(&[0, 2, 1, 3]));
    check(&gpu, "permute innermost", std::slice::from_ref(&x), |_, t| t[0].permute(&[3, 1, 0, 2]));
    check(&gpu, "transpose", std::slice::from_ref(&x), |_, t| t[0].transpose(-1, -2));
    check(&gpu, "narrow", std::slice::from_ref(&x), |_, t| t[0].narrow(2, 1, 2));
    let parts = [randn(&mut rng, &[2, 1, 5]), randn(&mut rng, &[2, 3, 5]), randn(&mut rng, &[2, 2, 5])];
    check(&gpu, "concat", &parts, |_, t| Tensor::concat(&[&t[0], &t[1], &t[2]], 1));
}

/// Permute, narrow and concat move 2-, 4-, 8- or 16-byte words, the widest
/// that divides the contiguous run: innermost runs of 64, 6 and 5 elements
/// in f32 and bf16 reach every width; the copies are bit-exact.
#[test]
fn layout_ops_copy_every_word_width_exactly() {
    let Some(gpu) = cuda_or_skip("layout_ops_copy_every_word_width_exactly") else { return };
    let mut rng = Rng::new(5);
    for inner in [64, 6, 5] {
        for dtype in [DType::F32, DType::BF16] {
            let values = rng.normal_vec(2 * 3 * 4 * inner, 1.0);
            let cpu =
                Tensor::from_vec(values.clone(), [2, 3, 4, inner], &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
            let cuda = Tensor::from_vec(values, [2, 3, 4, inner], &gpu).unwrap().to_dtype(dtype).unwrap();
            type LayoutOp = fn(&Tensor) -> Result<Tensor>;
            let ops: [(&str, LayoutOp); 4] = [
                ("heads permute", |t| t.permute(&[0, 2, 1, 3])),
                ("qkv permute", |t| t.reshape([2, 3, 2, 2, t.dims()[3]])?.permute(&[2, 0, 3, 1, 4])),
                ("narrow", |t| t.narrow(1, 1, 2)),
                ("concat", |t| Tensor::concat(&[&t.narrow(2, 0, 1)?, t, &t.narrow(2, 1, 3)?], 2)),
            ];
            for (name, op) in ops {
                let (a, b) = (op(&cpu).unwrap(), op(&cuda).unwrap());
                assert_eq!(b.dtype(), dtype, "{name}");
                let bits = |t: &Tensor| t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&b), "{name} of [2, 3, 4, {inner}] in {dtype}");
            }
        }
    }
}

#[test]
fn gather_and_scatter_add_with_repeated_ids() {
    let Some(gpu) = cuda_or_skip("gather_and_scatter_add_with_repeated_ids") else { return };
    let mut rng = Rng::new(4);
    let ids = vec![7u32, 0, 7, 3, 9, 7, 0];
    // 6 columns are copied element by element, 8 and 16 in 16-byte packs.
    for cols in [6, 8, 16] {
        let table = randn(&mut rng, &[10, cols]);
        check(&gpu, &format!("index_select of {cols} columns"), &[table], |dev, t| {
            t[0].index_select(&Tensor::from_ids(ids.clone(), [ids.len()], dev)?)
        });
    }
}

#[test]
fn matrix_products() {
    let Some(gpu) = cuda_or_skip("matrix_products") else { return };
    let mut rng = Rng::new(5);
    check(&gpu, "batched matmul", &[randn(&mut rng, &[3, 4, 5]), randn(&mut rng, &[3, 5, 6])], |_, t| {
        t[0].matmul(&t[1])
    });
    check(&gpu, "shared right operand", &[randn(&mut rng, &[3, 4, 5]), randn(&mut rng, &[5, 6])], |_, t| {
        t[0].matmul(&t[1])
    });
    check(&gpu, "shared left operand", &[randn(&mut rng, &[4, 5]), randn(&mut rng, &[3, 5, 6])], |_, t| {
        t[0].matmul(&t[1])
    });
    check(
        &gpu,
        "linear",
        &[randn(&mut rng, &[2, 7, 65]), randn(&mut rng, &[70, 65]), randn(&mut rng, &[70])],
        |_, t| t[0].linear(&t[1], Some(&t[2])),
    );
    check(&gpu, "4-D batch", &[randn(&mut rng, &[2, 3, 9, 8]), randn(&mut rng, &[2, 3, 8, 11])], |_, t| {
        t[0].matmul(&t[1])
    });
}

/// The kernels with bf16 instances (`_bf16`: bf16 loads and stores, f32
/// compute): unary maps (8-wide 16-byte packs and a tail), broadcasting
/// binaries, the row gather, layernorm and attention, forward and backward
/// (bf16 gradients through the bf16 backward kernels), against the CPU's
/// bf16 storage.
#[test]
fn bf16_storage_kernels_match_the_cpu() {
    let Some(gpu) = cuda_or_skip("bf16_storage_kernels_match_the_cpu") else { return };
    let mut rng = Rng::new(7);
    // 1035 elements: not a multiple of 8, so the 16-byte packs leave a tail.
    let x = randn(&mut rng, &[1035]);
    type TensorOp = fn(&Tensor) -> Result<Tensor>;
    let unary: [(&str, TensorOp); 4] = [
        ("bf16 quick_gelu", |t| t.quick_gelu()),
        ("bf16 exp", |t| t.exp()),
        ("bf16 tanh", |t| t.tanh()),
        ("bf16 affine", |t| t.affine(-1.5, 0.25)),
    ];
    for (name, op) in unary {
        check_at(&gpu, name, std::slice::from_ref(&x), BF16_TOL, |_, t| op(&bf16(&t[0])?));
    }
    let a = randn(&mut rng, &[2, 3, 40]);
    check_at(&gpu, "bf16 add row", &[a.clone(), randn(&mut rng, &[40])], BF16_TOL, |_, t| {
        bf16(&t[0])?.add(&bf16(&t[1])?)
    });
    check_at(&gpu, "bf16 mul column", &[a.clone(), randn(&mut rng, &[3, 1])], BF16_TOL, |_, t| {
        bf16(&t[0])?.mul(&bf16(&t[1])?)
    });
    let positive = Input::uniform(&mut rng, &[2, 1, 40], 0.5, 2.0);
    check_at(&gpu, "bf16 div", &[a, positive], BF16_TOL, |_, t| bf16(&t[0])?.div(&bf16(&t[1])?));
    // Rows wider than the block (300 > 256) and a width CLIP uses.
    for cols in [300, 64] {
        let inputs = [randn(&mut rng, &[2, 7, cols]), randn(&mut rng, &[cols]), randn(&mut rng, &[cols])];
        check_at(&gpu, &format!("bf16 layer_norm over {cols}"), &inputs, BF16_TOL, |_, t| {
            bf16(&t[0])?.layer_norm(&bf16(&t[1])?, &bf16(&t[2])?, 1e-5)
        });
    }
    // A gather from a bf16 table (the token embedding), ids repeated; its
    // scatter-add backward widens to f32.
    let ids: Vec<u32> = vec![3, 0, 3, 7, 1];
    check_at(&gpu, "bf16 index_select", &[randn(&mut rng, &[8, 40])], BF16_TOL, |dev, t| {
        bf16(&t[0])?.index_select(&Tensor::from_ids(ids.clone(), [ids.len()], dev)?)
    });
    // Attention: more keys than threads per block (197, ViT-B/16), and causal.
    for (len, causal) in [(197, false), (9, true)] {
        let qkv =
            [randn(&mut rng, &[1, 2, len, 64]), randn(&mut rng, &[1, 2, len, 64]), randn(&mut rng, &[1, 2, len, 64])];
        check_at(&gpu, &format!("bf16 attention over {len} (causal {causal})"), &qkv, BF16_TOL, |_, t| {
            bf16(&t[0])?.scaled_dot_product_attention(&bf16(&t[1])?, &bf16(&t[2])?, causal)
        });
    }
}

/// bf16 operands (the frozen towers of `--precision bf16`): cuBLASLt on the
/// GPU, the bias in its epilogue, against the CPU's bf16 storage. The
/// backward's products are bf16 too (dX = g W; dW = g^T X batched with a
/// transposed operand), reaching the f32 inputs through the casts.
#[test]
fn bf16_matrix_products_through_cublaslt() {
    let Some(gpu) = cuda_or_skip("bf16_matrix_products_through_cublaslt") else { return };
    let mut rng = Rng::new(6);
    check_at(
        &gpu,
        "bf16 linear with bias",
        &[randn(&mut rng, &[2, 7, 64]), randn(&mut rng, &[96, 64]), randn(&mut rng, &[96])],
        BF16_TOL,
        |_, t| bf16(&t[0])?.linear(&bf16(&t[1])?, Some(&bf16(&t[2])?)),
    );
    check_at(
        &gpu,
        "bf16 linear, odd sizes, no bias",
        &[randn(&mut rng, &[5, 33]), randn(&mut rng, &[19, 33])],
        BF16_TOL,
        |_, t| bf16(&t[0])?.linear(&bf16(&t[1])?, None),
    );
    check_at(
        &gpu,
        "bf16 batched matmul",
        &[randn(&mut rng, &[3, 4, 16]), randn(&mut rng, &[3, 16, 8])],
        BF16_TOL,
        |_, t| bf16(&t[0])?.matmul(&bf16(&t[1])?),
    );
    check_at(
        &gpu,
        "bf16 shared left operand (f32 fallback)",
        &[randn(&mut rng, &[4, 5]), randn(&mut rng, &[3, 5, 6])],
        BF16_TOL,
        |_, t| bf16(&t[0])?.matmul(&bf16(&t[1])?),
    );
}

/// cuBLASLt plans are cached per product shape: products of one shape
/// with fresh operands and biases each use their own (the cached
/// descriptor's bias pointer is set on every call), and repeating a shape
/// makes no new plan.
#[test]
fn cached_gemm_plans_take_each_calls_operands() {
    let Some(gpu) = cuda_alone_or_skip("cached_gemm_plans_take_each_calls_operands") else { return };
    let Device::Cuda(cuda) = &*gpu else { unreachable!("cuda_or_skip returns a CUDA device") };
    let mut rng = Rng::new(21);
    for (dtype, tol) in [(DType::F32, TOL), (DType::BF16, BF16_TOL)] {
        let mut plans = None;
        for round in 0..3 {
            let inputs = [randn(&mut rng, &[37, 24]), randn(&mut rng, &[19, 24]), randn(&mut rng, &[19])];
            check_at(&gpu, &format!("{dtype} linear, round {round}"), &inputs, tol, |_, t| {
                let [x, w, b] = [&t[0], &t[1], &t[2]].map(|v| v.to_dtype(dtype));
                x?.linear(&w?, Some(&b?))
            });
            let now = cuda.gemm_plans();
            assert!(now > 0, "no product went through cuBLASLt");
            assert!(plans.is_none_or(|p| p == now), "round {round} of {dtype} made a new plan ({plans:?} -> {now})");
            plans = Some(now);
        }
    }
}

#[test]
fn normalisations() {
    let Some(gpu) = cuda_or_skip("normalisations") else { return };
    let mut rng = Rng::new(6);
    let x = randn(&mut rng, &[150, 33]);
    let gamma = Input::uniform(&mut rng, &[33], 0.5, 1.5);
    let beta = randn(&mut rng, &[33]);
    check(&gpu, "layer_norm", &[x.clone(), gamma, beta], |_, t| t[0].layer_norm(&t[1], &t[2], 1e-5));
    // Widths that are multiples of 4 take the kernels' 16-byte groups (33
    // above takes single elements): mini-clip's 128 and ViT-B's 768.
    for cols in [128, 768] {
        let inputs =
            [randn(&mut rng, &[150, cols]), Input::uniform(&mut rng, &[cols], 0.5, 1.5), randn(&mut rng, &[cols])];
        check(&gpu, &format!("layer_norm over {cols}"), &inputs, |_, t| t[0].layer_norm(&t[1], &t[2], 1e-5));
    }
    check(&gpu, "softmax", std::slice::from_ref(&x), |_, t| t[0].softmax());
    check(&gpu, "l2_normalize", std::slice::from_ref(&x), |_, t| t[0].l2_normalize());
    let wide = randn(&mut rng, &[3, 1000]);
    check(&gpu, "softmax of wide rows", std::slice::from_ref(&wide), |_, t| t[0].softmax());
    check(&gpu, "cosine_similarity", &[randn(&mut rng, &[5, 16]), randn(&mut rng, &[5, 16])], |_, t| {
        t[0].cosine_similarity(&t[1])
    });
}

#[test]
fn attention_forward_and_backward() {
    let Some(gpu) = cuda_or_skip("attention_forward_and_backward") else { return };
    let mut rng = Rng::new(7);
    let cross = [randn(&mut rng, &[2, 3, 5, 16]), randn(&mut rng, &[2, 3, 7, 16]), randn(&mut rng, &[2, 3, 7, 16])];
    check(&gpu, "attention", &cross, |_, t| t[0].scaled_dot_product_attention(&t[1], &t[2], false));
    let selfs = [randn(&mut rng, &[1, 2, 9, 64]), randn(&mut rng, &[1, 2, 9, 64]), randn(&mut rng, &[1, 2, 9, 64])];
    check(&gpu, "causal attention", &selfs, |_, t| t[0].scaled_dot_product_attention(&t[1], &t[2], true));
    // More keys than threads per block, and the ViT-B/16 sequence length.
    let long =
        [randn(&mut rng, &[1, 1, 197, 64]), randn(&mut rng, &[1, 1, 197, 64]), randn(&mut rng, &[1, 1, 197, 64])];
    check(&gpu, "long attention", &long, |_, t| t[0].scaled_dot_product_attention(&t[1], &t[2], false));
}

#[test]
fn decoupling_scores_forward_and_backward() {
    let Some(gpu) = cuda_or_skip("decoupling_scores_forward_and_backward") else { return };
    let mut rng = Rng::new(8);
    let inputs = [randn(&mut rng, &[2, 13, 40]), randn(&mut rng, &[3, 40]), randn(&mut rng, &[40])];
    check(&gpu, "decoupling_scores", &inputs, |_, t| t[0].decoupling_scores(&t[1], &t[2]));
}

fn labels(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.below(3) as f32 - 1.0).collect()
}

#[test]
fn losses_forward_and_backward() {
    let Some(gpu) = cuda_or_skip("losses_forward_and_backward") else { return };
    let mut rng = Rng::new(9);
    let logits = Input::randn(&mut rng, &[7, 11], 3.0);
    let y = labels(&mut rng, 77);
    check(&gpu, "masked_bce", std::slice::from_ref(&logits), |dev, t| {
        t[0].masked_bce_with_logits(&Tensor::from_vec(y.clone(), [7, 11], dev)?)
    });
    // Large enough for several partial blocks and the float4 path.
    let many = Input::randn(&mut rng, &[64, 80], 3.0);
    let many_y = labels(&mut rng, 64 * 80);
    check(&gpu, "masked_bce, many entries", std::slice::from_ref(&many), |dev, t| {
        t[0].masked_bce_with_logits(&Tensor::from_vec(many_y.clone(), [64, 80], dev)?)
    });
    check(&gpu, "contrastive_loss", &[Input::randn(&mut rng, &[6, 6], 2.0)], |_, t| t[0].contrastive_loss());
    check(&gpu, "contrastive_loss, more than a block", &[Input::randn(&mut rng, &[300, 300], 2.0)], |_, t| {
        t[0].contrastive_loss()
    });
}

#[test]
fn masked_bce_with_no_known_label_is_zero_without_nan() {
    let Some(gpu) = cuda_or_skip("masked_bce_with_no_known_label_is_zero_without_nan") else { return };
    let logits =
        Tensor::from_vec(vec![1.0, f32::INFINITY, -3.0, f32::NAN], [2, 2], &gpu).unwrap().into_parameter().unwrap();
    let loss = logits.masked_bce_with_logits(&Tensor::zeros([2, 2], DType::F32, &gpu).unwrap()).unwrap();
    assert_eq!(loss.to_vec().unwrap(), vec![0.0]);
    loss.backward().unwrap();
    assert_eq!(logits.grad().unwrap().to_vec().unwrap(), vec![0.0; 4]);
}

#[test]
fn bicubic_resize_matches() {
    let Some(gpu) = cuda_or_skip("bicubic_resize_matches") else { return };
    let x = Rng::new(10).normal_vec(3 * 7 * 7, 1.0);
    for (oh, ow) in [(14, 14), (5, 9), (7, 7)] {
        let want = Tensor::from_vec(x.clone(), [3, 7, 7], &Device::Cpu).unwrap().bicubic_resize(oh, ow).unwrap();
        let got = Tensor::from_vec(x.clone(), [3, 7, 7], &gpu).unwrap().bicubic_resize(oh, ow).unwrap();
        assert_rel(&format!("bicubic to {oh} x {ow}"), &got.to_vec().unwrap(), &want.to_vec().unwrap(), TOL);
    }
}

#[test]
fn dtype_casts_round_like_the_cpu() {
    let Some(gpu) = cuda_or_skip("dtype_casts_round_like_the_cpu") else { return };
    let mut values = Rng::new(11).normal_vec(1001, 10.0);
    values.extend([0.0, -0.0, 65504.0, 1e-8, 3.0e38, f32::INFINITY]);
    let n = values.len();
    for dtype in [DType::BF16, DType::F16] {
        let cpu = Tensor::from_vec(values.clone(), [n], &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
        let cuda = Tensor::from_vec(values.clone(), [n], &gpu).unwrap().to_dtype(dtype).unwrap();
        assert_eq!(cuda.dtype(), dtype);
        let (c, g) = (cpu.to_vec().unwrap(), cuda.to_vec().unwrap());
        for (i, (a, b)) in c.iter().zip(&g).enumerate() {
            assert!(a.to_bits() == b.to_bits(), "{dtype} cast of {}: cpu {a} vs cuda {b}", values[i]);
        }
        // bf16/f16 storage computes in f32 and narrows the result.
        let cpu_out = cpu.tanh().unwrap().to_vec().unwrap();
        let cuda_out = cuda.tanh().unwrap().to_vec().unwrap();
        assert_rel(&format!("tanh in {dtype}"), &cuda_out, &cpu_out, 1e-2);
        let back = cuda.to_dtype(DType::F32).unwrap();
        assert_eq!(back.to_vec().unwrap(), c);
    }
}

#[test]
fn index_tensors_move_and_reshape_exactly() {
    let Some(gpu) = cuda_or_skip("index_tensors_move_and_reshape_exactly") else { return };
    let ids: Vec<u32> = (0..60).map(|i| i * 7919 % 49408).collect();
    let cpu = Tensor::from_ids(ids.clone(), [3, 4, 5], &Device::Cpu).unwrap();
    let cuda = Tensor::from_ids(ids, [3, 4, 5], &gpu).unwrap();
    for (a, b) in [
        (cpu.permute(&[2, 0, 1]).unwrap(), cuda.permute(&[2, 0, 1]).unwrap()),
        (cpu.narrow(1, 1, 2).unwrap(), cuda.narrow(1, 1, 2).unwrap()),
        (Tensor::concat(&[&cpu, &cpu], 2).unwrap(), Tensor::concat(&[&cuda, &cuda], 2).unwrap()),
    ] {
        assert_eq!(a.to_ids().unwrap(), b.to_ids().unwrap());
    }
    let moved = cpu.to_device(&gpu).unwrap();
    assert_eq!(moved.device(), &*gpu);
    assert_eq!(moved.to_ids().unwrap(), cpu.to_ids().unwrap());
}

/// Large uploads go through the staging ring (4 slots, 64 KiB and up:
/// pinned host buffer, landing buffer written on the copy stream, copied
/// into a compute-stream buffer): more uploads than slots, growing sizes (a
/// slot is reallocated), small ones in between, all queued before any is
/// read back; then uploads each consumed at once by a kernel, so every slot
/// is rewritten while the compute stream may still be reading it.
#[test]
fn staged_uploads_arrive_exactly() {
    let Some(gpu) = cuda_or_skip("staged_uploads_arrive_exactly") else { return };
    let mut rng = Rng::new(31);
    let sizes = [20_000usize, 3, 70_000, 16_384, 250_000, 10, 90_000, 400_000, 17_000, 130_000];
    let host: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.normal_vec(n, 1.0)).collect();
    let uploaded: Vec<Tensor> = host.iter().map(|v| Tensor::from_vec(v.clone(), [v.len()], &gpu).unwrap()).collect();
    for (i, (t, v)) in uploaded.iter().zip(&host).enumerate() {
        assert_eq!(&t.to_vec().unwrap(), v, "upload {i} of {} floats", v.len());
    }
    let ids: Vec<u32> = (0..100_000).map(|i| (i * 7919) % 49408).collect();
    assert_eq!(Tensor::from_ids(ids.clone(), [ids.len()], &gpu).unwrap().to_ids().unwrap(), ids);
    let batches: Vec<Vec<f32>> = (0..12).map(|_| rng.normal_vec(70_000, 1.0)).collect();
    let doubled: Vec<Tensor> = batches
        .iter()
        .map(|v| Tensor::from_vec(v.clone(), [v.len()], &gpu).unwrap().affine(2.0, 1.0).unwrap())
        .collect();
    for (i, (t, v)) in doubled.iter().zip(&batches).enumerate() {
        let want: Vec<f32> = v.iter().map(|x| 2.0 * x + 1.0).collect();
        assert_eq!(t.to_vec().unwrap(), want, "upload {i} consumed by a kernel");
    }
}

#[test]
fn bad_ids_and_mixed_devices_are_errors() {
    let Some(gpu) = cuda_alone_or_skip("bad_ids_and_mixed_devices_are_errors") else { return };
    // The launch does not wait; the next read from the GPU reports the id,
    // once, and the device stays usable. Rows of 3 are gathered element by
    // element, rows of 8 in 16-byte packs.
    for cols in [3, 8] {
        let table = Tensor::zeros([4, cols], DType::F32, &gpu).unwrap();
        let gathered = table.index_select(&Tensor::from_ids(vec![1, 9, 2], [3], &gpu).unwrap()).unwrap();
        let err = gathered.to_vec().unwrap_err();
        assert!(format!("{err:#}").contains("index 9 was out of range for the table of an index_select"), "{err:#}");
        assert_eq!(table.to_vec().unwrap().len(), table.elem_count(), "the fault is reported once");
    }
    let table = Tensor::zeros([4, 3], DType::F32, &gpu).unwrap();
    let cpu = Tensor::zeros([4, 3], DType::F32, &Device::Cpu).unwrap();
    let err = table.add(&cpu).unwrap_err();
    assert!(format!("{err:#}").contains("different devices"), "{err:#}");
}

/// AdamW or SGD with momentum, both with weight decay in the default group.
fn optimizer(groups: Vec<ParamGroup>, adamw: bool) -> Box<dyn Optimizer> {
    if adamw {
        Box::new(AdamW::new(groups, 0.01, (0.9, 0.999), 1e-8, 0.01).unwrap())
    } else {
        Box::new(Sgd::new(groups, 0.05, 0.9, 5e-4).unwrap())
    }
}

/// Gradients accumulated over two backward passes (add_assign), then one
/// optimizer step; parameters and state compared after each of 3 steps.
fn optimizer_run(device: &Device, adamw: bool) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(12);
    let w = Tensor::from_vec(rng.normal_vec(40, 1.0), [8, 5], device).unwrap().into_parameter().unwrap();
    let b = Tensor::from_vec(rng.normal_vec(5, 1.0), [5], device).unwrap().into_parameter().unwrap();
    let x = Tensor::from_vec(rng.normal_vec(24, 1.0), [3, 8], device).unwrap();
    let groups = vec![ParamGroup::new(vec![w.clone()]), ParamGroup::no_decay(vec![b.clone()])];
    let mut opt = optimizer(groups, adamw);
    let mut history = Vec::new();
    for _ in 0..3 {
        opt.zero_grad();
        for _ in 0..2 {
            x.matmul(&w).unwrap().add(&b).unwrap().tanh().unwrap().sum_all().unwrap().backward().unwrap();
        }
        history.push(w.grad().unwrap().to_vec().unwrap());
        opt.step().unwrap();
        history.push(w.to_vec().unwrap());
        history.push(b.to_vec().unwrap());
    }
    history
}

/// 50 parameters in two groups (weight decay and none), of sizes that
/// leave partial 4-element groups, straddle the 4096-element chunks and
/// need a second launch (48 tensors per launch). After each of 3 steps of
/// one fused update: each parameter's update p_t - p_(t-1) (compared on its
/// own scale, so a missed weight decay, 0.5% of an SGD update here, fails)
/// and the optimizer state.
fn fused_optimizer_run(device: &Device, adamw: bool) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(13);
    let sizes: Vec<usize> = (0..50).map(|i| [1, 3, 4, 5, 4097, 9000, 7, 64][i % 8] + i / 8).collect();
    let params: Vec<Tensor> = sizes
        .iter()
        .map(|&n| Tensor::from_vec(rng.normal_vec(n, 1.0), [n], device).unwrap().into_parameter().unwrap())
        .collect();
    let grads: Vec<Tensor> =
        sizes.iter().map(|&n| Tensor::from_vec(rng.normal_vec(n, 0.1), [n], device).unwrap()).collect();
    let groups = vec![ParamGroup::new(params[..30].to_vec()), ParamGroup::no_decay(params[30..].to_vec())];
    let mut opt = optimizer(groups, adamw);
    let mut before: Vec<Vec<f32>> = params.iter().map(|p| p.to_vec().unwrap()).collect();
    let mut history = Vec::new();
    for _ in 0..3 {
        opt.zero_grad();
        for (p, g) in params.iter().zip(&grads) {
            p.mul(g).unwrap().sum_all().unwrap().backward().unwrap();
        }
        opt.step().unwrap();
        for (p, previous) in params.iter().zip(&mut before) {
            let now = p.to_vec().unwrap();
            history.push(now.iter().zip(previous.iter()).map(|(a, b)| a - b).collect());
            *previous = now;
        }
        history.extend(opt.state_tensors().unwrap().iter().map(|(_, t)| t.to_vec().unwrap()));
    }
    history
}

/// `run` on the CPU and on the GPU, with SGD and with AdamW, compared record
/// by record (`record` names record i).
fn optimizers_match(gpu: &Device, run: fn(&Device, bool) -> Vec<Vec<f32>>, record: impl Fn(usize) -> String) {
    for adamw in [false, true] {
        let want = run(&Device::Cpu, adamw);
        let got = run(gpu, adamw);
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_rel(&format!("{} {}", if adamw { "adamw" } else { "sgd" }, record(i)), g, w, TOL);
        }
    }
}

#[test]
fn fused_optimizer_steps_over_many_tensors() {
    let Some(gpu) = cuda_or_skip("fused_optimizer_steps_over_many_tensors") else { return };
    optimizers_match(&gpu, fused_optimizer_run, |i| format!("record {i} (updates then state, per step)"));
}

/// The CPU half of the comparison runs everywhere, so the records it makes
/// (every update moves its parameter, the state is there) are checked in CI.
#[test]
fn fused_optimizer_reference_runs_on_the_cpu() {
    // Per step: 50 updates, then SGD's 50 momenta or AdamW's 50 + 50
    // moments and its step count.
    for (adamw, per_step) in [(false, 100), (true, 151)] {
        let records = fused_optimizer_run(&Device::Cpu, adamw);
        assert_eq!(records.len(), 3 * per_step);
        for step in records.chunks(per_step) {
            assert!(step[..50].iter().all(|update| update.iter().all(|d| d.is_finite() && *d != 0.0)));
        }
    }
}

#[test]
fn sgd_and_adamw_steps_with_accumulated_gradients() {
    let Some(gpu) = cuda_or_skip("sgd_and_adamw_steps_with_accumulated_gradients") else { return };
    optimizers_match(&gpu, optimizer_run, |i| format!("record {i}"));
}

// ---------------------------------------------------------------------------
// Fused decoupling cross-attention and one-pass masked BCE (issue 16, parts 2
// and 4).

/// x, t, u, shift and patches of a decoupling attention of (B, C, N, d, D).
fn attention_inputs(rng: &mut Rng, (b, c, n, d, e): (usize, usize, usize, usize, usize)) -> [Input; 5] {
    [
        randn(rng, &[b, n, d]),
        randn(rng, &[c, d]),
        Input::randn(rng, &[d], 0.3),
        randn(rng, &[1]),
        randn(rng, &[b, n, e]),
    ]
}

/// Shapes off every tile: N across a 32-position tile boundary or below
/// one, C = 1, C = 9 and C = 81 (partial 8-category tiles), B = 1, d and D
/// not multiples of 4 nor of the 32-element chunk, D > 256 (several output
/// columns a thread).
const AWKWARD_ATTENTION: [(usize, usize, usize, usize, usize); 5] =
    [(2, 3, 13, 40, 24), (1, 1, 33, 7, 5), (2, 9, 70, 33, 300), (1, 81, 5, 6, 3), (3, 8, 32, 32, 64)];

#[test]
fn decoupling_attention_forward_and_backward() {
    let Some(gpu) = cuda_or_skip("decoupling_attention_forward_and_backward") else { return };
    let mut rng = Rng::new(40);
    for shape in AWKWARD_ATTENTION {
        let inputs = attention_inputs(&mut rng, shape);
        check(&gpu, &format!("decoupling_attention {shape:?}"), &inputs, |_, t| {
            t[0].decoupling_attention(&t[1], &t[2], &t[3], &t[4])
        });
    }
}

/// Patches without a gradient (the model's frozen tower): dx, dt and du only.
#[test]
fn decoupling_attention_with_constant_patches() {
    let Some(gpu) = cuda_or_skip("decoupling_attention_with_constant_patches") else { return };
    let mut rng = Rng::new(41);
    let [x, t, u, shift, patches] = attention_inputs(&mut rng, (2, 9, 40, 20, 12));
    check(&gpu, "decoupling_attention, constant patches", &[x, t, u, shift], |dev, p| {
        let patches = Tensor::from_vec(patches.values.clone(), patches.shape.clone(), dev)?;
        p[0].decoupling_attention(&p[1], &p[2], &p[3], &patches)
    });
}

/// The fused op equals the scores, softmax and matmul as separate ops on
/// the GPU (the CPU side is in tests/ops_forward.rs).
#[test]
fn decoupling_attention_equals_softmax_of_scores_times_patches_on_cuda() {
    let Some(gpu) = cuda_or_skip("decoupling_attention_equals_softmax_of_scores_times_patches_on_cuda") else {
        return;
    };
    let mut rng = Rng::new(42);
    for shape in AWKWARD_ATTENTION {
        let t: Vec<Tensor> = attention_inputs(&mut rng, shape)
            .iter()
            .map(|i| Tensor::from_vec(i.values.clone(), i.shape.clone(), &gpu).unwrap())
            .collect();
        let fused = t[0].decoupling_attention(&t[1], &t[2], &t[3], &t[4]).unwrap();
        let attention = t[0].decoupling_scores(&t[1], &t[2]).unwrap().add(&t[3]).unwrap().softmax().unwrap();
        let unfused = attention.matmul(&t[4]).unwrap();
        assert_rel(&format!("fused vs unfused {shape:?}"), &fused.to_vec().unwrap(), &unfused.to_vec().unwrap(), TOL);
    }
}

/// The one-pass masked BCE: bf16 logits (widened on the tape), a length
/// with a scalar tail, more blocks than one, and a bit-identical loss from
/// run to run (the last block sums the partials in block order).
#[test]
fn masked_bce_one_pass_bf16_tails_and_determinism() {
    let Some(gpu) = cuda_or_skip("masked_bce_one_pass_bf16_tails_and_determinism") else { return };
    let mut rng = Rng::new(43);
    let logits = Input::randn(&mut rng, &[67, 81], 3.0);
    let y = labels(&mut rng, 67 * 81);
    check_at(&gpu, "masked_bce, bf16 logits", std::slice::from_ref(&logits), BF16_TOL, |dev, t| {
        bf16(&t[0])?.masked_bce_with_logits(&Tensor::from_vec(y.clone(), [67, 81], dev)?)
    });
    let tail = Input::randn(&mut rng, &[4099], 3.0);
    let tail_y = labels(&mut rng, 4099);
    check(&gpu, "masked_bce, 4099 entries", std::slice::from_ref(&tail), |dev, t| {
        t[0].masked_bce_with_logits(&Tensor::from_vec(tail_y.clone(), [4099], dev)?)
    });
    let x = Tensor::from_vec(tail.values.clone(), [4099], &gpu).unwrap();
    let labels = Tensor::from_vec(tail_y, [4099], &gpu).unwrap();
    let first = x.masked_bce_with_logits(&labels).unwrap().scalar().unwrap();
    let again = x.masked_bce_with_logits(&labels).unwrap().scalar().unwrap();
    assert_eq!(first.to_bits(), again.to_bits(), "masked BCE loss differs between runs: {first} vs {again}");
}

/// Prompt assembly sizes (C, L, W, M, context sets, positional rows): a
/// width of 5 and 65 (no 16-byte rows), one category with L = M + 1, shared
/// contexts summed over 4 and 37 categories, more positional rows than L.
const AWKWARD_PROMPTS: [(usize, usize, usize, usize, usize, usize); 5] =
    [(3, 7, 5, 2, 3, 9), (4, 21, 65, 16, 1, 77), (1, 2, 3, 1, 1, 2), (37, 9, 130, 4, 1, 12), (5, 6, 64, 3, 5, 6)];

/// frozen [C, L - M, W], pos [P, W] and ctx [S, M, W] of a prompt assembly.
fn prompt_inputs(rng: &mut Rng, (c, l, w, m, s, p): (usize, usize, usize, usize, usize, usize)) -> [Input; 3] {
    [Input::randn(rng, &[c, l - m, w], 0.5), Input::randn(rng, &[p, w], 0.5), Input::randn(rng, &[s, m, w], 0.5)]
}

/// The prompt assembly's forward and its backward into the context, f32
/// and bf16 (the tower's dtype; the context stays f32), per-category and
/// shared: the frozen embeddings and positions are detached, as the
/// tower's are.
#[test]
fn prompt_embed_forward_and_backward() {
    let Some(gpu) = cuda_or_skip("prompt_embed_forward_and_backward") else { return };
    let mut rng = Rng::new(44);
    for shape in AWKWARD_PROMPTS {
        let inputs = prompt_inputs(&mut rng, shape);
        check(&gpu, &format!("prompt_embed {shape:?}"), &inputs, |_, t| {
            t[0].detach().prompt_embed(&t[1].detach(), &t[2])
        });
        check_at(&gpu, &format!("prompt_embed bf16 {shape:?}"), &inputs, BF16_TOL, |_, t| {
            bf16(&t[0].detach())?.prompt_embed(&bf16(&t[1].detach())?, &t[2])
        });
    }
}

/// Both devices round the same f32 sum once, and the shared context's
/// gradient is summed in category order: the GPU's x and dctx have the
/// CPU's bits, in f32 and bf16, and again on a second run.
#[test]
fn prompt_embed_is_bit_exact_and_deterministic() {
    let Some(gpu) = cuda_or_skip("prompt_embed_is_bit_exact_and_deterministic") else { return };
    let mut rng = Rng::new(45);
    for dtype in [DType::F32, DType::BF16] {
        for shape in [AWKWARD_PROMPTS[1], AWKWARD_PROMPTS[3]] {
            let [frozen, pos, ctx] = prompt_inputs(&mut rng, shape);
            let grad = Input::randn(&mut rng, &[shape.0, shape.1, shape.2], 1.0);
            let run = |device: &Device| -> Vec<Vec<u32>> {
                let on = |i: &Input, dtype| Tensor::from_vec_dtype(i.values.clone(), i.shape.clone(), dtype, device);
                let ctx = on(&ctx, DType::F32).unwrap().into_parameter().unwrap();
                let x = on(&frozen, dtype).unwrap().prompt_embed(&on(&pos, dtype).unwrap(), &ctx).unwrap();
                x.mul(&on(&grad, dtype).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
                let bits = |t: &Tensor| t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect();
                vec![bits(&x), bits(&ctx.grad().unwrap())]
            };
            let want = run(&Device::Cpu);
            assert_eq!(run(&gpu), want, "prompt_embed {dtype} {shape:?}: GPU bits differ from the CPU's");
            assert_eq!(run(&gpu), want, "prompt_embed {dtype} {shape:?}: a second GPU run differs");
        }
    }
}

// ---------------------------------------------------------------------------
// Flash attention (kernels/flash_attention.cu): bf16 heads of width 64 on
// tensor cores, called through the backend so that lse is compared too.

/// `values` stored as bf16 on `device`.
fn bf16_storage(device: &Device, values: &[f32]) -> Storage {
    match device {
        Device::Cpu => Storage::Cpu(CpuStorage::from_f32(values.to_vec(), DType::BF16)),
        Device::Cuda(gpu) => Storage::Cuda(CudaStorage::from_f32(gpu, values, DType::BF16).unwrap()),
    }
}

/// out, lse, dq, dk, dv of bf16 attention at `spec` on `device`, from
/// inputs seeded by `seed` (the backward takes this device's out and lse).
fn bf16_attention_run(device: &Device, spec: &AttentionSpec, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let q_elems = spec.batch_heads * spec.q_len * spec.head_dim;
    let kv_elems = spec.batch_heads * spec.kv_len * spec.head_dim;
    let [q, k, v, grad] = [q_elems, kv_elems, kv_elems, q_elems].map(|n| bf16_storage(device, &rng.normal_vec(n, 1.0)));
    let (out, lse) = Storage::attention(&q, &k, &v, spec).unwrap();
    let (dq, dk, dv) = Storage::attention_backward(&q, &k, &v, &out, &lse, &grad, spec).unwrap();
    [out, lse, dq, dk, dv].iter().map(|s| s.to_host_f32().unwrap()).collect()
}

/// bf16 attention forward (out, lse) and backward (dq, dk, dv) on the GPU
/// against the CPU's bf16 storage (2e-2), for each (bh, q_len, kv_len,
/// causal) at head width 64 (the flash kernels).
fn check_flash(gpu: &Device, shapes: &[(usize, usize, usize, bool)]) {
    check_bf16_attention(gpu, 64, shapes)
}

/// [`check_flash`] at `head_dim`.
fn check_bf16_attention(gpu: &Device, head_dim: usize, shapes: &[(usize, usize, usize, bool)]) {
    for (i, &(batch_heads, q_len, kv_len, causal)) in shapes.iter().enumerate() {
        let scale = (head_dim as f32).powf(-0.5);
        let spec = AttentionSpec { batch_heads, q_len, kv_len, head_dim, causal, scale };
        let seed = 0xF1A5 + i as u64;
        let (want, got) = (bf16_attention_run(&Device::Cpu, &spec, seed), bf16_attention_run(gpu, &spec, seed));
        for ((&name, g), w) in ["out", "lse", "dq", "dk", "dv"].iter().zip(&got).zip(&want) {
            let what =
                format!("bf16 attention bh {batch_heads}, {q_len} x {kv_len} x {head_dim}, causal {causal}: {name}");
            if kv_len == 1 && (name == "dq" || name == "dk") {
                // One key: p = 1, so dS = dP - delta = 0 and both are rounding
                // noise around zero on either device (no relative error).
                assert!(g.iter().all(|x| x.abs() <= 1e-3), "{what}: {g:?} is not ~0");
                continue;
            }
            assert_rel(&what, g, w, BF16_TOL);
        }
    }
}

/// The vision tower's sequences: B/32@224, B/16@224, B/16@448.
#[test]
fn flash_attention_at_the_vision_lengths() {
    let Some(gpu) = cuda_or_skip("flash_attention_at_the_vision_lengths") else { return };
    check_flash(&gpu, &[(2, 50, 50, false), (1, 197, 197, false), (1, 785, 785, false)]);
}

/// The text tower's causal prompts: the full context and a truncated one.
#[test]
fn flash_attention_at_the_text_lengths() {
    let Some(gpu) = cuda_or_skip("flash_attention_at_the_text_lengths") else { return };
    check_flash(&gpu, &[(2, 77, 77, true), (3, 20, 20, true)]);
}

/// One query or key, lengths one off a tile (63, 65) and odd (15, 17), q_len
/// != kv_len, and 13 heads.
#[test]
fn flash_attention_at_awkward_shapes() {
    let Some(gpu) = cuda_or_skip("flash_attention_at_awkward_shapes") else { return };
    check_flash(
        &gpu,
        &[
            (1, 1, 1, false),
            (1, 1, 1, true),
            (1, 1, 65, false),
            (2, 17, 1, false),
            (13, 15, 17, false),
            (13, 17, 17, true),
            (1, 63, 65, false),
            (1, 65, 63, false),
            (1, 63, 63, true),
            (1, 65, 65, true),
        ],
    );
}

/// bf16 attention at other head widths keeps the row kernels of
/// `attention.cu` (their `_bf16` instances), which the tests above no longer reach.
#[test]
fn bf16_attention_at_other_head_widths() {
    let Some(gpu) = cuda_or_skip("bf16_attention_at_other_head_widths") else { return };
    check_bf16_attention(&gpu, 32, &[(2, 70, 70, false), (3, 9, 9, true)]);
}

/// Two runs give the same bits (no atomics, fixed summation order).
#[test]
fn flash_attention_is_deterministic() {
    let Some(gpu) = cuda_or_skip("flash_attention_is_deterministic") else { return };
    let spec = AttentionSpec { batch_heads: 2, q_len: 70, kv_len: 70, head_dim: 64, causal: true, scale: 0.125 };
    let bits =
        |run: Vec<Vec<f32>>| run.iter().map(|t| t.iter().map(|x| x.to_bits()).collect()).collect::<Vec<Vec<u32>>>();
    assert_eq!(bits(bf16_attention_run(&gpu, &spec, 3)), bits(bf16_attention_run(&gpu, &spec, 3)));
}
