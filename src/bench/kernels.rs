//! The kernel microbenchmarks: every backend primitive that has a CUDA
//! kernel (and the MLP's GEMM, f32 through cuBLAS and bf16 with its bias
//! through cuBLASLt), at the shapes it has in two models:
//!
//! * `mini-clip`: the default `train` run, the bundled CLIP
//!   (`assets/clip/mini-clip.json`: 64 px, patch 8, so 64 patches + the
//!   class token, width 128, 2 heads, embedding 128) and the embedded set
//!   (10 classes), batch 32, 16 context vectors;
//! * `vit-b32`: an MLR-PL run on a ViT-B/32 CLIP (width 768, 12 heads, 50
//!   tokens at 224 px, embedding 512, text width 512) with COCO's 80
//!   classes, batch 32.
//!
//! Inputs are seeded from the case's id, so a case gets the same inputs
//! whatever `--filter` selects. Inputs that a backward reads from its
//! forward (layer-norm statistics, softmax and attention outputs) are
//! computed by the CPU backend on the host, so both devices get them.

use super::case::{case_id, Case, HostInput, Primitive, Work};
use crate::backend::{
    AdamWStep, AttentionSpec, BackendStorage, BinaryOp, CpuStorage, CustomOp, GemmSpec, ParamUpdate, SgdStep, Storage,
    UnaryOp,
};
use crate::nn::LayerNorm;
use crate::ops::custom::bicubic::BicubicResize;
use crate::ops::custom::contrastive_loss::{ContrastiveLoss, ContrastiveLossBackward};
use crate::ops::custom::decoupling::{DecouplingDims, Scores, ScoresBackward};
use crate::ops::custom::decoupling_attention::{AttentionDims, DecouplingAttention, DecouplingAttentionBackward};
use crate::ops::custom::masked_bce::{MaskedBce, MaskedBceBackward};
use crate::ops::custom::prompt_embed::{PromptDims, PromptEmbed, PromptEmbedBackward};
use crate::ops::L2_EPS;
use crate::rng::Rng;
use crate::{DType, Shape};
use anyhow::{bail, Result};

/// CLIP's attention head width.
const HEAD_DIM: usize = 64;
/// CLIP's vocabulary (token-embedding rows).
const VOCAB: usize = 49408;

/// The sizes of one model that the primitives see.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub name: &'static str,
    pub batch: usize,
    /// Image tokens: the class token and the patches.
    pub tokens: usize,
    pub width: usize,
    /// Joint embedding width D (also the decoupling width d).
    pub embed: usize,
    pub classes: usize,
    /// Prompt tokens after truncation to the longest EOT (SOT, context,
    /// class name, ".", EOT).
    pub text_tokens: usize,
    pub text_width: usize,
    pub n_ctx: usize,
    /// Side of the patch grid, and the side it is resized to for an input
    /// twice the native resolution (bicubic positional embedding).
    pub grid: usize,
    /// Batch of CLIP's contrastive pre-training.
    pub contrastive_batch: usize,
}

impl Setup {
    fn patches(&self) -> usize {
        self.tokens - 1
    }

    fn heads(&self) -> usize {
        self.width / HEAD_DIM
    }

    fn text_heads(&self) -> usize {
        self.text_width / HEAD_DIM
    }

    /// Sizes of the MLR-PL trainable tensors (what the optimizer updates):
    /// per-class contexts, W1, W2, W3 (d = D), b3, w4, b4, log_kappa, beta.
    /// `tools/bench_torch_kernels.py` builds the same list.
    fn trainable(&self) -> Vec<usize> {
        let d = self.embed;
        vec![self.classes * self.n_ctx * self.text_width, d * d, d * d, d * d, d, d, 1, 1, self.classes]
    }
}

pub const MINI_CLIP: Setup = Setup {
    name: "mini-clip",
    batch: 32,
    tokens: 65,
    width: 128,
    embed: 128,
    classes: 10,
    // SOT + 16 context + a one- or two-token name + "." + EOT.
    text_tokens: 21,
    text_width: 128,
    n_ctx: 16,
    grid: 8,
    contrastive_batch: 64,
};

pub const VIT_B32: Setup = Setup {
    name: "vit-b32",
    batch: 32,
    tokens: 50,
    width: 768,
    embed: 512,
    classes: 80,
    // COCO's longest class names take 3 tokens.
    text_tokens: 24,
    text_width: 512,
    n_ctx: 16,
    grid: 7,
    contrastive_batch: 256,
};

pub const SETUPS: [Setup; 2] = [MINI_CLIP, VIT_B32];

/// An MLR-PL run on a ViT-B/16 CLIP at 448 px (28 x 28 = 784 patches),
/// COCO's 80 classes, batch 32, embedding D = d = 512: the decoupling
/// attention's target shapes (issue 16). Only the decoupling attention's
/// forward+backward cases run at it (they run at the other setups too);
/// the rest as [`VIT_B32`].
pub const VIT_B16_448: Setup = Setup { name: "vit-b16-448", tokens: 785, grid: 28, ..VIT_B32 };

/// (batch, classes) of the one-pass masked BCE cases: the B = 64,
/// C = 80 (20 KB of logits: launch-bound, no bandwidth to speak of) and
/// larger label matrices, where the pass can approach the copy bandwidth.
const MASKED_BCE_SIZES: [(&str, usize, usize); 3] =
    [("b64-c80", 64, 80), ("b256-c1000", 256, 1000), ("b4096-c1000", 4096, 1000)];

/// A seed from the case id (FNV-1a), so inputs do not depend on which other
/// cases run.
fn seed_of(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn cpu(values: &[f32]) -> CpuStorage {
    CpuStorage::from_f32(values.to_vec(), DType::F32)
}

fn host(storage: &CpuStorage) -> Result<HostInput> {
    Ok(HostInput::f32(storage.to_host_f32()?))
}

/// A primitive call as a boxed closure (names the closure's argument and
/// result types once for every case).
fn primitive(call: impl Fn(&mut [Storage]) -> Result<Vec<Storage>> + 'static) -> Primitive {
    Box::new(call)
}

/// A model op of `src/ops/custom/` on the case's inputs.
fn custom(op: impl CustomOp + 'static) -> Primitive {
    primitive(move |i| Storage::apply_custom(&op, &i.iter().collect::<Vec<_>>()))
}

fn shape(dims: &[usize]) -> Shape {
    Shape::new(dims.to_vec())
}

/// What a case's builder returns: params, work, inputs, the call.
type Built = (Vec<(&'static str, usize)>, Work, Vec<HostInput>, Primitive);

/// Collects the cases whose id contains the filter, building (and drawing
/// the inputs of) only those.
struct Catalogue<'a> {
    filter: Option<&'a str>,
    cases: Vec<Case>,
}

impl Catalogue<'_> {
    fn add(&mut self, op: &'static str, setup: &Setup, build: impl FnOnce(&mut Rng) -> Result<Built>) -> Result<()> {
        self.add_named(op, setup.name, build)
    }

    /// A case whose sizes are not a model's (`setup` names them).
    fn add_named(
        &mut self,
        op: &'static str,
        setup: &'static str,
        build: impl FnOnce(&mut Rng) -> Result<Built>,
    ) -> Result<()> {
        let id = case_id(op, setup);
        if self.filter.is_some_and(|f| !id.contains(f)) {
            return Ok(());
        }
        let (params, work, inputs, run) = build(&mut Rng::new(seed_of(&id)))?;
        self.cases.push(Case { op, setup, params, work, inputs, run });
        Ok(())
    }
}

/// Every kernel case whose id (`op/setup`) contains `filter` (all when None).
pub fn cases(filter: Option<&str>) -> Result<Vec<Case>> {
    let mut cat = Catalogue { filter, cases: Vec::new() };
    for s in &SETUPS {
        matrix_and_attention(&mut cat, s)?;
        flash_attention(&mut cat, s)?;
        normalisations(&mut cat, s)?;
        decoupling(&mut cat, s)?;
        elementwise(&mut cat, s)?;
        layout(&mut cat, s)?;
        losses(&mut cat, s)?;
        prompts(&mut cat, s)?;
        optimizers(&mut cat, s)?;
    }
    decoupling_attention_steps(&mut cat, &VIT_B16_448)?;
    masked_bce_steps(&mut cat)?;
    Ok(cat.cases)
}

fn matrix_and_attention(cat: &mut Catalogue, s: &Setup) -> Result<()> {
    // The MLP's c_fc: [B*L, W] @ [4W, W]^T (cuBLAS on CUDA).
    let (m, n, k) = (s.batch * s.tokens, 4 * s.width, s.width);
    cat.add("gemm_linear", s, |rng| {
        let spec = GemmSpec { batch: 1, m, n, k, trans_a: false, trans_b: true, a_batch_stride: 0, b_batch_stride: 0 };
        let inputs = vec![HostInput::f32(rng.normal_vec(m * k, 1.0)), HostInput::f32(rng.normal_vec(n * k, 1.0))];
        let flops = 2.0 * (m * n * k) as f64;
        Ok((
            vec![("m", m), ("n", n), ("k", k)],
            Work::Flops(flops),
            inputs,
            primitive(move |i| Ok(vec![i[0].gemm(&i[1], None, &spec)?])),
        ))
    })?;
    // The same layer of `--precision bf16` towers, bias included (cuBLASLt
    // with the bias epilogue on CUDA).
    cat.add("gemm_linear_bf16", s, |rng| {
        let spec = GemmSpec { batch: 1, m, n, k, trans_a: false, trans_b: true, a_batch_stride: 0, b_batch_stride: 0 };
        let inputs = vec![
            HostInput::bf16(rng.normal_vec(m * k, 1.0)),
            HostInput::bf16(rng.normal_vec(n * k, 1.0)),
            HostInput::bf16(rng.normal_vec(n, 1.0)),
        ];
        let flops = 2.0 * (m * n * k) as f64;
        let run = primitive(move |i| Ok(vec![i[0].gemm(&i[1], Some(&i[2]), &spec)?]));
        Ok((vec![("m", m), ("n", n), ("k", k)], Work::Flops(flops), inputs, run))
    })?;
    // Vision self-attention over the image tokens; the text tower's causal
    // attention over the truncated prompts.
    // The vision forward also in bf16, as the towers of `--precision bf16` run it.
    attention(
        cat,
        s,
        ("attention_fwd", "attention_bwd", Some("attention_fwd_bf16")),
        (s.batch * s.heads(), s.tokens, false),
        HostInput::f32,
    )?;
    attention(
        cat,
        s,
        ("attention_causal_fwd", "attention_causal_bwd", None),
        (s.classes * s.text_heads(), s.text_tokens, true),
        HostInput::f32,
    )
}

/// The tensor-core flash kernels (bf16, head width 64; `flash_attention.cu`
/// on CUDA) forward and backward at the sequences of issue 16: the vision
/// tower of B/32@224, B/16@224 and B/16@448 (50, 197, 785 tokens; batch 32,
/// 32 and 4) and the text tower's causal prompts (77, the full context, and
/// the 20 left after truncation) over this setup's classes. Listed once,
/// under the ViT-B/32 setup (every shape is a ViT-B one: 12 heads, 8 for text).
fn flash_attention(cat: &mut Catalogue, s: &Setup) -> Result<()> {
    if s.name != VIT_B32.name {
        return Ok(());
    }
    let text_heads = s.classes * s.text_heads();
    let shapes = [
        ("flash_attention_fwd_l50_bf16", "flash_attention_bwd_l50_bf16", (32 * s.heads(), 50, false)),
        ("flash_attention_fwd_l197_bf16", "flash_attention_bwd_l197_bf16", (32 * s.heads(), 197, false)),
        ("flash_attention_fwd_l785_bf16", "flash_attention_bwd_l785_bf16", (4 * s.heads(), 785, false)),
        ("flash_attention_causal_fwd_l77_bf16", "flash_attention_causal_bwd_l77_bf16", (text_heads, 77, true)),
        ("flash_attention_causal_fwd_l20_bf16", "flash_attention_causal_bwd_l20_bf16", (text_heads, 20, true)),
    ];
    for (forward, backward, shape) in shapes {
        attention(cat, s, (forward, backward, None), shape, HostInput::bf16)?;
    }
    Ok(())
}

/// The forward and backward cases `ops.0` and `ops.1` over (heads, len,
/// causal) with inputs stored by `store` (f32 or bf16; lse stays f32), and
/// the forward on bf16 inputs as `ops.2` when given.
fn attention(
    cat: &mut Catalogue,
    s: &Setup,
    ops: (&'static str, &'static str, Option<&'static str>),
    (heads, len, causal): (usize, usize, bool),
    store: fn(Vec<f32>) -> HostInput,
) -> Result<()> {
    let spec = AttentionSpec {
        batch_heads: heads,
        q_len: len,
        kv_len: len,
        head_dim: HEAD_DIM,
        causal,
        scale: (HEAD_DIM as f32).powf(-0.5),
    };
    let params = vec![("batch_heads", heads), ("q_len", len), ("kv_len", len), ("head_dim", HEAD_DIM)];
    // Score pairs computed: all, or the lower triangle with the diagonal.
    let pairs = if causal { heads * len * (len + 1) / 2 } else { heads * len * len } as f64;
    let elems = heads * len * HEAD_DIM;
    let qkv = |rng: &mut Rng| [rng.normal_vec(elems, 1.0), rng.normal_vec(elems, 1.0), rng.normal_vec(elems, 1.0)];
    // Q K^T and P V: two multiply-adds per pair and head-dim element.
    let forward_work = Work::Flops(4.0 * pairs * HEAD_DIM as f64);
    let forward = move |i: &mut [Storage]| {
        let (out, lse) = Storage::attention(&i[0], &i[1], &i[2], &spec)?;
        Ok(vec![out, lse])
    };
    cat.add(ops.0, s, |rng| {
        let inputs = qkv(rng).into_iter().map(store).collect();
        Ok((params.clone(), forward_work, inputs, primitive(forward)))
    })?;
    if let Some(op) = ops.2 {
        cat.add(op, s, |rng| {
            let inputs = qkv(rng).into_iter().map(HostInput::bf16).collect();
            Ok((params.clone(), forward_work, inputs, primitive(forward)))
        })?;
    }
    cat.add(ops.1, s, |rng| {
        let [q, k, v] = qkv(rng).map(store);
        let stored = |x: &HostInput| CpuStorage::from_f32(x.values.clone(), x.dtype);
        let (out, lse) = CpuStorage::attention(&stored(&q), &stored(&k), &stored(&v), &spec)?;
        let grad = rng.normal_vec(elems, 1.0);
        let inputs = vec![q, k, v, store(out.to_host_f32()?), host(&lse)?, store(grad)];
        // Recomputed Q K^T, dV, dP, dQ, dK: five multiply-adds.
        let work = Work::Flops(10.0 * pairs * HEAD_DIM as f64);
        Ok((
            params,
            work,
            inputs,
            primitive(move |i| {
                let (dq, dk, dv) = Storage::attention_backward(&i[0], &i[1], &i[2], &i[3], &i[4], &i[5], &spec)?;
                Ok(vec![dq, dk, dv])
            }),
        ))
    })
}

fn normalisations(cat: &mut Catalogue, s: &Setup) -> Result<()> {
    // Layer norm over the image tokens' width.
    let (rows, cols) = (s.batch * s.tokens, s.width);
    let n = rows * cols;
    let eps = LayerNorm::DEFAULT_EPS;
    let ln_inputs =
        |rng: &mut Rng| (rng.normal_vec(n, 1.0), rng.uniform_vec(cols, 0.5, 1.5), rng.normal_vec(cols, 1.0));
    let layernorm = move |i: &mut [Storage]| {
        let (y, mean, rstd) = i[0].layernorm(&i[1], &i[2], cols, eps)?;
        Ok(vec![y, mean, rstd])
    };
    cat.add("layernorm_fwd", s, |rng| {
        let (x, gamma, beta) = ln_inputs(rng);
        let inputs = vec![HostInput::f32(x), HostInput::f32(gamma), HostInput::f32(beta)];
        let work = Work::f32_bytes(&[n, cols, cols, n, rows, rows]);
        Ok((vec![("rows", rows), ("cols", cols)], work, inputs, primitive(layernorm)))
    })?;
    // The same in the bf16 towers: bf16 rows and affine, f32 statistics.
    cat.add("layernorm_fwd_bf16", s, |rng| {
        let (x, gamma, beta) = ln_inputs(rng);
        let inputs = vec![HostInput::bf16(x), HostInput::bf16(gamma), HostInput::bf16(beta)];
        let work = Work::Bytes((2 * (2 * n + 2 * cols) + 4 * 2 * rows) as f64);
        Ok((vec![("rows", rows), ("cols", cols)], work, inputs, primitive(layernorm)))
    })?;
    cat.add("layernorm_bwd", s, |rng| {
        let (x, gamma, beta) = ln_inputs(rng);
        let (_, mean, rstd) = cpu(&x).layernorm(&cpu(&gamma), &cpu(&beta), cols, eps)?;
        let grad = rng.normal_vec(n, 1.0);
        let inputs = vec![HostInput::f32(x), HostInput::f32(gamma), host(&mean)?, host(&rstd)?, HostInput::f32(grad)];
        let work = Work::f32_bytes(&[n, cols, rows, rows, n, n, cols, cols]);
        Ok((
            vec![("rows", rows), ("cols", cols)],
            work,
            inputs,
            primitive(move |i| {
                let (dx, dgamma, dbeta) = i[0].layernorm_backward(&i[1], &i[2], &i[3], &i[4], cols)?;
                Ok(vec![dx, dgamma, dbeta])
            }),
        ))
    })?;

    // The decoupling module's softmax over positions, one row per (image, class).
    let (rows, cols) = (s.batch * s.classes, s.patches());
    let n = rows * cols;
    cat.add("softmax_fwd", s, |rng| {
        let inputs = vec![HostInput::f32(rng.normal_vec(n, 1.0))];
        Ok((
            vec![("rows", rows), ("cols", cols)],
            Work::f32_bytes(&[n, n]),
            inputs,
            primitive(move |i| Ok(vec![i[0].softmax(cols)?])),
        ))
    })?;
    cat.add("softmax_bwd", s, |rng| {
        let y = cpu(&rng.normal_vec(n, 1.0)).softmax(cols)?;
        let inputs = vec![host(&y)?, HostInput::f32(rng.normal_vec(n, 1.0))];
        let run = primitive(move |i| Ok(vec![i[0].softmax_backward(&i[1], cols)?]));
        Ok((vec![("rows", rows), ("cols", cols)], Work::f32_bytes(&[n, n, n]), inputs, run))
    })?;

    // The cosine classifier: one D-wide feature per (image, class).
    let (rows, cols) = (s.batch * s.classes, s.embed);
    let n = rows * cols;
    cat.add("l2_normalize_fwd", s, |rng| {
        let inputs = vec![HostInput::f32(rng.normal_vec(n, 1.0))];
        Ok((
            vec![("rows", rows), ("cols", cols)],
            Work::f32_bytes(&[n, n, rows]),
            inputs,
            primitive(move |i| {
                let (y, norm) = i[0].l2_normalize(cols, L2_EPS)?;
                Ok(vec![y, norm])
            }),
        ))
    })?;
    cat.add("l2_normalize_bwd", s, |rng| {
        let (y, norm) = cpu(&rng.normal_vec(n, 1.0)).l2_normalize(cols, L2_EPS)?;
        let inputs = vec![host(&y)?, host(&norm)?, HostInput::f32(rng.normal_vec(n, 1.0))];
        let run = primitive(move |i| Ok(vec![i[0].l2_normalize_backward(&i[1], &i[2], cols)?]));
        Ok((vec![("rows", rows), ("cols", cols)], Work::f32_bytes(&[n, rows, n, n]), inputs, run))
    })
}

fn decoupling(cat: &mut Catalogue, s: &Setup) -> Result<()> {
    let dims = DecouplingDims { batch: s.batch, classes: s.classes, positions: s.patches(), width: s.embed };
    let params =
        vec![("batch", dims.batch), ("classes", dims.classes), ("positions", dims.positions), ("width", dims.width)];
    let terms = (dims.batch * dims.classes * dims.positions * dims.width) as f64;
    let xtu = |rng: &mut Rng| {
        let x = rng.normal_vec(dims.batch * dims.positions * dims.width, 1.0);
        let t = rng.normal_vec(dims.classes * dims.width, 1.0);
        [x, t, rng.normal_vec(dims.width, 1.0)]
    };
    // Nominal counts per (b, c, n, k) term, tanh counted as one operation:
    // forward x*t, tanh, a multiply-add with u (4); backward the same
    // recomputation, (1 - z^2) * g * u and three multiply-adds (12).
    cat.add("decoupling_fwd", s, |rng| {
        let inputs = xtu(rng).into_iter().map(HostInput::f32).collect();
        Ok((params.clone(), Work::Flops(4.0 * terms), inputs, custom(Scores(dims))))
    })?;
    cat.add("decoupling_bwd", s, |rng| {
        let mut inputs: Vec<HostInput> = xtu(rng).into_iter().map(HostInput::f32).collect();
        inputs.push(HostInput::f32(rng.normal_vec(dims.batch * dims.classes * dims.positions, 1.0)));
        Ok((params, Work::Flops(12.0 * terms), inputs, custom(ScoresBackward(dims))))
    })?;
    decoupling_attention(cat, s)
}

fn attention_dims(s: &Setup) -> AttentionDims {
    AttentionDims { batch: s.batch, classes: s.classes, positions: s.patches(), width: s.embed, embed: s.embed }
}

fn attention_params(dims: &AttentionDims) -> Vec<(&'static str, usize)> {
    vec![
        ("batch", dims.batch),
        ("classes", dims.classes),
        ("positions", dims.positions),
        ("width", dims.width),
        ("embed", dims.embed),
    ]
}

/// x, t, u and the patches of a decoupling attention; u at the scale of
/// `W3^T w4` under the nn.Linear initialisation, so the scores are O(1).
fn attention_inputs(rng: &mut Rng, dims: &AttentionDims) -> [Vec<f32>; 4] {
    let x = rng.normal_vec(dims.batch * dims.positions * dims.width, 1.0);
    let t = rng.normal_vec(dims.classes * dims.width, 1.0);
    let u = rng.normal_vec(dims.width, 1.0 / (dims.width as f32).sqrt());
    [x, t, u, rng.normal_vec(dims.batch * dims.positions * dims.embed, 1.0)]
}

/// Nominal counts (tanh counted as one operation): per (b, c, n, k) term
/// the forward's 4 (as `decoupling_fwd`) and the backward's 12 (as
/// `decoupling_bwd`); per (b, c, n, j) the pooling's multiply-add and the
/// backward's `dout . X`, 2 each.
fn attention_flops(dims: &AttentionDims, forward: bool, backward: bool) -> f64 {
    let terms = (dims.batch * dims.classes * dims.positions * dims.width) as f64;
    let pooled = (dims.batch * dims.classes * dims.positions * dims.embed) as f64;
    let mut flops = 0.0;
    if forward {
        flops += 4.0 * terms + 2.0 * pooled;
    }
    if backward {
        flops += 12.0 * terms + 2.0 * pooled;
    }
    flops
}

/// The fused decoupling attention (`ops/custom/decoupling_attention.rs`) at
/// the model's shapes: forward, and backward without the patches' gradient
/// (the frozen tower's features need none).
fn decoupling_attention(cat: &mut Catalogue, s: &Setup) -> Result<()> {
    let dims = attention_dims(s);
    let params = attention_params(&dims);
    cat.add("decoupling_attention_fwd", s, |rng| {
        let inputs = attention_inputs(rng, &dims).into_iter().map(HostInput::f32).collect();
        Ok((
            params.clone(),
            Work::Flops(attention_flops(&dims, true, false)),
            inputs,
            custom(DecouplingAttention(dims)),
        ))
    })?;
    cat.add("decoupling_attention_bwd", s, |rng| {
        let [x, t, u, patches] = attention_inputs(rng, &dims);
        let [out, lse] = DecouplingAttention(dims)
            .cpu(&[&x, &t, &u, &patches])?
            .try_into()
            .map_err(|_| anyhow::anyhow!("decoupling_attention returns out and lse"))?;
        let dout = rng.normal_vec(dims.batch * dims.classes * dims.embed, 1.0);
        let inputs = [x, t, u, patches, out, lse, dout].into_iter().map(HostInput::f32).collect();
        let run = custom(DecouplingAttentionBackward { dims, patch_grad: false });
        Ok((params, Work::Flops(attention_flops(&dims, false, true)), inputs, run))
    })?;
    decoupling_attention_steps(cat, s)
}

/// Forward then backward (into x, t and u) of the fused decoupling
/// attention in one call, the target figure. The same engine call
/// is timed twice, once per PyTorch form it is compared with
/// (`tools/bench_torch_kernels.py`): `decoupling_attention_step` against
/// PyTorch with the same fc3/fc4 collapse, `decoupling_attention_step_vs_module`
/// against the literal module (fc1..fc4 on [B, C, N, d]).
fn decoupling_attention_steps(cat: &mut Catalogue, s: &Setup) -> Result<()> {
    let dims = attention_dims(s);
    for op in ["decoupling_attention_step", "decoupling_attention_step_vs_module"] {
        cat.add(op, s, |rng| {
            let [x, t, u, patches] = attention_inputs(rng, &dims);
            let dout = rng.normal_vec(dims.batch * dims.classes * dims.embed, 1.0);
            let inputs = [x, t, u, patches, dout].into_iter().map(HostInput::f32).collect();
            let run = primitive(move |i| {
                let [x, t, u, patches, dout] = &*i else { bail!("{op} takes x, t, u, patches and dout") };
                let mut outputs = Storage::apply_custom(&DecouplingAttention(dims), &[x, t, u, patches])?;
                let backward = DecouplingAttentionBackward { dims, patch_grad: false };
                let grads = Storage::apply_custom(&backward, &[x, t, u, patches, &outputs[0], &outputs[1], dout])?;
                outputs.extend(grads);
                Ok(outputs)
            });
            Ok((attention_params(&dims), Work::Flops(attention_flops(&dims, true, true)), inputs, run))
        })?;
    }
    Ok(())
}

fn elementwise(cat: &mut Catalogue, s: &Setup) -> Result<()> {
    // QuickGELU on the MLP's hidden activations [B*L, 4W].
    let (rows, cols) = (s.batch * s.tokens, 4 * s.width);
    let n = rows * cols;
    let params = vec![("rows", rows), ("cols", cols)];
    cat.add("quick_gelu_fwd", s, |rng| {
        let inputs = vec![HostInput::f32(rng.normal_vec(n, 1.0))];
        Ok((params.clone(), Work::f32_bytes(&[n, n]), inputs, primitive(|i| Ok(vec![i[0].unary(UnaryOp::QuickGelu)?]))))
    })?;
    cat.add("quick_gelu_fwd_bf16", s, |rng| {
        let inputs = vec![HostInput::bf16(rng.normal_vec(n, 1.0))];
        let work = Work::Bytes((2 * 2 * n) as f64);
        Ok((params.clone(), work, inputs, primitive(|i| Ok(vec![i[0].unary(UnaryOp::QuickGelu)?]))))
    })?;
    cat.add("quick_gelu_bwd", s, |rng| {
        let x = rng.normal_vec(n, 1.0);
        let out = cpu(&x).unary(UnaryOp::QuickGelu)?;
        let inputs = vec![HostInput::f32(x), host(&out)?, HostInput::f32(rng.normal_vec(n, 1.0))];
        let run = primitive(|i| Ok(vec![i[0].unary_backward(&i[1], &i[2], UnaryOp::QuickGelu)?]));
        Ok((params.clone(), Work::f32_bytes(&[n, n, n, n]), inputs, run))
    })?;
    // The MLP's bias: [B*L, 4W] + [4W], broadcast.
    cat.add("add_bias", s, |rng| {
        let inputs = vec![HostInput::f32(rng.normal_vec(n, 1.0)), HostInput::f32(rng.normal_vec(cols, 1.0))];
        let (x_shape, bias_shape) = (shape(&[rows, cols]), shape(&[cols]));
        let run = primitive(move |i| Ok(vec![i[0].binary(&i[1], BinaryOp::Add, &x_shape, &bias_shape, &x_shape)?]));
        Ok((params.clone(), Work::f32_bytes(&[n, cols, n]), inputs, run))
    })?;
    // Its gradient: the sum over rows.
    cat.add("sum_rows", s, |rng| {
        let inputs = vec![HostInput::f32(rng.normal_vec(n, 1.0))];
        let (x_shape, out_shape) = (shape(&[rows, cols]), shape(&[cols]));
        let run = primitive(move |i| Ok(vec![i[0].sum_to(&x_shape, &out_shape)?]));
        Ok((params.clone(), Work::f32_bytes(&[n, cols]), inputs, run))
    })?;
    // The residual stream: [B, L, W] + [B, L, W].
    let (rows, cols) = (s.batch * s.tokens, s.width);
    let n = rows * cols;
    cat.add("add_residual", s, |rng| {
        let inputs = vec![HostInput::f32(rng.normal_vec(n, 1.0)), HostInput::f32(rng.normal_vec(n, 1.0))];
        let x_shape = shape(&[rows, cols]);
        let run = primitive(move |i| Ok(vec![i[0].binary(&i[1], BinaryOp::Add, &x_shape, &x_shape, &x_shape)?]));
        Ok((vec![("rows", rows), ("cols", cols)], Work::f32_bytes(&[n, n, n]), inputs, run))
    })?;
    // Storage casts of the same activations (bf16 storage, f32 compute).
    cat.add("cast_f32_to_bf16", s, |rng| {
        let inputs = vec![HostInput::f32(rng.normal_vec(n, 1.0))];
        let run = primitive(|i| Ok(vec![i[0].to_dtype(DType::BF16)?]));
        Ok((vec![("rows", rows), ("cols", cols)], Work::Bytes(6.0 * n as f64), inputs, run))
    })?;
    cat.add("cast_bf16_to_f32", s, |rng| {
        let inputs = vec![HostInput { values: rng.normal_vec(n, 1.0), dtype: DType::BF16 }];
        let run = primitive(|i| Ok(vec![i[0].to_dtype(DType::F32)?]));
        Ok((vec![("rows", rows), ("cols", cols)], Work::Bytes(6.0 * n as f64), inputs, run))
    })?;
    // The positional embedding's patch grid, bicubically resized for an
    // input twice the native resolution.
    let (channels, side, out) = (s.width, s.grid, 2 * s.grid);
    cat.add("bicubic_pos_embed", s, |rng| {
        let inputs = vec![HostInput::f32(rng.normal_vec(channels * side * side, 1.0))];
        let run = custom(BicubicResize { channels, h: side, w: side, out_h: out, out_w: out });
        let params =
            vec![("channels", channels), ("height", side), ("width", side), ("out_height", out), ("out_width", out)];
        Ok((params, Work::f32_bytes(&[channels * side * side, channels * out * out]), inputs, run))
    })
}

fn layout(cat: &mut Catalogue, s: &Setup) -> Result<()> {
    let (b, l, h) = (s.batch, s.tokens, s.heads());
    let params = vec![("batch", b), ("tokens", l), ("heads", h), ("head_dim", HEAD_DIM)];
    let n = b * l * s.width;
    // The packed q/k/v projection split into heads: [B, L, 3, H, hd] -> [3, B, H, L, hd].
    cat.add("permute_qkv", s, |rng| {
        let inputs = vec![HostInput::f32(rng.normal_vec(3 * n, 1.0))];
        let from = shape(&[b, l, 3, h, HEAD_DIM]);
        let run = primitive(move |i| Ok(vec![i[0].permute(&from, &[2, 0, 3, 1, 4])?]));
        Ok((params.clone(), Work::f32_bytes(&[3 * n, 3 * n]), inputs, run))
    })?;
    // The heads merged back: [B, H, L, hd] -> [B, L, H, hd].
    cat.add("permute_heads", s, |rng| {
        let inputs = vec![HostInput::f32(rng.normal_vec(n, 1.0))];
        let from = shape(&[b, h, l, HEAD_DIM]);
        let run = primitive(move |i| Ok(vec![i[0].permute(&from, &[0, 2, 1, 3])?]));
        Ok((params, Work::f32_bytes(&[n, n]), inputs, run))
    })?;
    // The class token prepended to the patch embeddings.
    let w = s.width;
    cat.add("concat_class_token", s, |rng| {
        let inputs =
            vec![HostInput::f32(rng.normal_vec(b * w, 1.0)), HostInput::f32(rng.normal_vec(b * (l - 1) * w, 1.0))];
        let (class, patches) = (shape(&[b, 1, w]), shape(&[b, l - 1, w]));
        let run = primitive(move |i| Ok(vec![Storage::concat(&[&i[0], &i[1]], &[&class, &patches], 1)?]));
        Ok((vec![("batch", b), ("tokens", l), ("width", w)], Work::f32_bytes(&[n, n]), inputs, run))
    })?;
    // The prompts' token embeddings gathered from the vocabulary table.
    let (ids, cols) = (s.classes * s.text_tokens, s.text_width);
    cat.add("index_select_embedding", s, |rng| {
        let chosen: Vec<u32> = (0..ids).map(|_| rng.below(VOCAB) as u32).collect();
        let inputs = vec![HostInput::f32(rng.normal_vec(VOCAB * cols, 0.02)), HostInput::ids(&chosen)];
        let run = primitive(move |i| Ok(vec![i[0].index_select(&i[1], VOCAB, cols)?]));
        Ok((
            vec![("rows", VOCAB), ("cols", cols), ("ids", ids)],
            Work::f32_bytes(&[ids * cols, ids, ids * cols]),
            inputs,
            run,
        ))
    })?;
    // The EOT gather's backward: each class's feature scattered into a zeroed
    // [classes * text_tokens, text_width] gradient.
    let (rows, classes, len) = (s.classes * s.text_tokens, s.classes, s.text_tokens);
    cat.add("index_add_eot", s, |rng| {
        let eot: Vec<u32> = (0..classes).map(|c| (c * len + len - 1) as u32).collect();
        let inputs = vec![HostInput::f32(rng.normal_vec(classes * cols, 1.0)), HostInput::ids(&eot)];
        let run = primitive(move |i| Ok(vec![i[0].index_add(&i[1], rows, cols)?]));
        Ok((
            vec![("rows", rows), ("cols", cols), ("ids", classes)],
            Work::f32_bytes(&[classes * cols, classes, rows * cols]),
            inputs,
            run,
        ))
    })
}

fn losses(cat: &mut Catalogue, s: &Setup) -> Result<()> {
    let n = s.batch * s.classes;
    let params = vec![("batch", s.batch), ("classes", s.classes)];
    // The forward reads logits and labels and writes the loss and the saved
    // gradient and count; the backward reads those and writes the gradient.
    cat.add("masked_bce_fwd", s, |rng| {
        let inputs = bce_inputs(rng, n).into_iter().map(HostInput::f32).collect();
        Ok((params.clone(), Work::f32_bytes(&[n, n, 1, n + 1]), inputs, custom(MaskedBce)))
    })?;
    cat.add("masked_bce_bwd", s, |rng| {
        let [logits, labels] = bce_inputs(rng, n);
        let [_, saved] = MaskedBce
            .cpu(&[&logits, &labels])?
            .try_into()
            .map_err(|_| anyhow::anyhow!("masked_bce returns the loss and its saved state"))?;
        let inputs = vec![HostInput::f32(saved), HostInput::f32(vec![1.0])];
        Ok((params, Work::f32_bytes(&[n + 1, 1, n]), inputs, custom(MaskedBceBackward)))
    })?;
    // CLIP's contrastive loss on a pre-training batch's [n, n] logits.
    let b = s.contrastive_batch;
    cat.add("contrastive_fwd", s, |rng| {
        let inputs = vec![HostInput::f32(rng.normal_vec(b * b, 3.0))];
        Ok((vec![("n", b)], Work::f32_bytes(&[b * b, 1]), inputs, custom(ContrastiveLoss { n: b })))
    })?;
    cat.add("contrastive_bwd", s, |rng| {
        let inputs = vec![HostInput::f32(rng.normal_vec(b * b, 3.0)), HostInput::f32(vec![1.0])];
        let run = custom(ContrastiveLossBackward { n: b });
        Ok((vec![("n", b)], Work::f32_bytes(&[b * b, 1, b * b]), inputs, run))
    })
}

/// CLIP's text context (the positional table's rows).
const TEXT_CONTEXT: usize = 77;

/// The prompt assembly of the text pass (`kernels/prompt_embed.cu`):
/// forward in f32 and bf16 towers (the context f32 either way), backward
/// into per-category contexts and into one shared context (a sum over the
/// categories).
fn prompts(cat: &mut Catalogue, s: &Setup) -> Result<()> {
    let (c, l, w, m) = (s.classes, s.text_tokens, s.text_width, s.n_ctx);
    let dims = |shared: bool, ctx_bf16: bool| PromptDims { classes: c, len: l, width: w, n_ctx: m, shared, ctx_bf16 };
    let params = |sets: usize| {
        vec![("classes", c), ("len", l), ("width", w), ("n_ctx", m), ("sets", sets), ("positions", TEXT_CONTEXT)]
    };
    // Bytes: frozen rows, the positions run and x in the tower's dtype, ctx in f32.
    let forward_bytes =
        |elem: f64| Work::Bytes(elem * ((c * (l - m) + l + c * l) * w) as f64 + 4.0 * (c * m * w) as f64);
    for (op, tower) in
        [("prompt_embed_fwd", HostInput::f32 as fn(Vec<f32>) -> HostInput), ("prompt_embed_fwd_bf16", HostInput::bf16)]
    {
        cat.add(op, s, |rng| {
            let inputs = vec![
                tower(rng.normal_vec(c * (l - m) * w, 0.02)),
                tower(rng.normal_vec(TEXT_CONTEXT * w, 0.01)),
                HostInput::f32(rng.normal_vec(c * m * w, 0.02)),
            ];
            let bf16 = inputs[0].dtype == DType::BF16;
            let elem = if bf16 { 2.0 } else { 4.0 };
            Ok((params(c), forward_bytes(elem), inputs, custom(PromptEmbed(dims(false, bf16)))))
        })?;
    }
    for (op, shared) in [("prompt_embed_bwd", false), ("prompt_embed_bwd_shared", true)] {
        let sets = if shared { 1 } else { c };
        cat.add(op, s, |rng| {
            let inputs = vec![
                HostInput::f32(rng.normal_vec(sets * m * w, 0.02)),
                HostInput::f32(rng.normal_vec(c * l * w, 1.0)),
            ];
            // The context rows of the x-gradient read, dctx written.
            Ok((
                params(sets),
                Work::f32_bytes(&[c * m * w, sets * m * w]),
                inputs,
                custom(PromptEmbedBackward(dims(shared, false))),
            ))
        })?;
    }
    Ok(())
}

/// Logits and labels in {-1, 0, 1} (about a third unknown) of `n` entries.
fn bce_inputs(rng: &mut Rng, n: usize) -> [Vec<f32>; 2] {
    let labels: Vec<f32> = (0..n).map(|_| rng.below(3) as f32 - 1.0).collect();
    [rng.normal_vec(n, 2.0), labels]
}

/// The masked BCE's forward then backward in one call, the issue's
/// bandwidth figure: the logits and labels read once, the saved gradient
/// written and read once, the gradient written (5 n floats of traffic; the
/// report sets the achieved GB/s beside the copy bandwidth PyTorch measures
/// on the same device, bytes read plus written as here).
fn masked_bce_steps(cat: &mut Catalogue) -> Result<()> {
    for (name, batch, classes) in MASKED_BCE_SIZES {
        let n = batch * classes;
        cat.add_named("masked_bce_step", name, |rng| {
            let mut inputs: Vec<HostInput> = bce_inputs(rng, n).into_iter().map(HostInput::f32).collect();
            inputs.push(HostInput::f32(vec![1.0]));
            let run = primitive(|i| {
                let [logits, labels, grad] = &*i else { bail!("masked_bce_step takes logits, labels and dloss") };
                let mut outputs = Storage::apply_custom(&MaskedBce, &[logits, labels])?;
                let dlogits = Storage::apply_custom(&MaskedBceBackward, &[&outputs[1], grad])?;
                outputs.extend(dlogits);
                Ok(outputs)
            });
            Ok((vec![("batch", batch), ("classes", classes)], Work::f32_bytes(&[n, n, n + 1, n + 1, n]), inputs, run))
        })?;
    }
    Ok(())
}

/// The inputs of a fused optimizer update, `k` tensors each of parameters,
/// gradients, then each state buffer in turn, as one update per tensor
/// (every tensor decays by `weight_decay`).
fn param_updates(inputs: &mut [Storage], k: usize, weight_decay: f32) -> Result<Vec<ParamUpdate<'_, Storage>>> {
    if k == 0 || inputs.len() < 2 * k || !inputs.len().is_multiple_of(k) {
        bail!("an optimizer update of {k} tensors got {} inputs", inputs.len());
    }
    let (params, rest) = inputs.split_at_mut(k);
    let (grads, state) = rest.split_at_mut(k);
    let mut state: Vec<_> = state.chunks_mut(k).map(|kind| kind.iter_mut()).collect();
    Ok(params
        .iter_mut()
        .zip(grads.iter())
        .map(|(param, grad)| ParamUpdate {
            param,
            grad,
            state: state.iter_mut().filter_map(Iterator::next).collect(),
            weight_decay,
        })
        .collect())
}

fn optimizers(cat: &mut Catalogue, s: &Setup) -> Result<()> {
    // The trainable tensors of the model, updated by one fused call; the
    // updates are in place, so the check compares the buffers after it.
    let sizes = s.trainable();
    let (k, p) = (sizes.len(), sizes.iter().sum::<usize>());
    let params = vec![
        ("tensors", k),
        ("elements", p),
        ("classes", s.classes),
        ("n_ctx", s.n_ctx),
        ("text_width", s.text_width),
        ("embed", s.embed),
    ];
    // Parameters, gradients, then state buffers, each a list of k tensors.
    let tensors = |rng: &mut Rng, kinds: usize| -> Vec<HostInput> {
        let std = [1.0, 0.1, 0.01, 0.01];
        let mut t: Vec<HostInput> = std[..kinds]
            .iter()
            .flat_map(|&sd| sizes.iter().map(move |&n| (n, sd)))
            .map(|(n, sd)| HostInput::f32(rng.normal_vec(n, sd)))
            .collect();
        // Adam's second moment must be non-negative.
        t.iter_mut().skip(3 * k).for_each(|v| v.values.iter_mut().for_each(|x| *x = x.abs()));
        t
    };
    cat.add("adamw_step", s, |rng| {
        let step = AdamWStep { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 10 };
        let run = primitive(move |i| {
            Storage::adamw_step(&mut param_updates(i, k, 0.01)?, &step)?;
            Ok(vec![])
        });
        // Reads parameter, gradient and both moments; writes three of them.
        Ok((params.clone(), Work::f32_bytes(&[7 * p]), tensors(rng, 4), run))
    })?;
    cat.add("sgd_step", s, |rng| {
        let step = SgdStep { lr: 0.002, momentum: 0.9 };
        let run = primitive(move |i| {
            Storage::sgd_step(&mut param_updates(i, k, 5e-4)?, &step)?;
            Ok(vec![])
        });
        Ok((params, Work::f32_bytes(&[5 * p]), tensors(rng, 3), run))
    })?;
    // Gradient accumulation into a parameter's gradient, all trainable
    // elements as one buffer.
    cat.add("grad_accumulate", s, |rng| {
        let run = primitive(|i| {
            let [acc, grad] = i else { bail!("grad_accumulate takes an accumulator and a gradient") };
            acc.add_assign(grad)?;
            Ok(vec![])
        });
        let inputs = vec![HostInput::f32(rng.normal_vec(p, 0.1)), HostInput::f32(rng.normal_vec(p, 0.1))];
        Ok((vec![("elements", p)], Work::f32_bytes(&[3 * p]), inputs, run))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_the_filter_selects_by_substring() {
        let all = cases(Some("mini-clip")).unwrap();
        let mut ids: Vec<String> = all.iter().map(Case::id).collect();
        ids.sort();
        let before = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), before, "duplicate case ids");
        assert!(ids.iter().all(|id| id.ends_with("/mini-clip")));
        let ln = cases(Some("layernorm_bwd/vit")).unwrap();
        assert_eq!(ln.len(), 1);
        assert_eq!(ln[0].shape(), "rows=1600 cols=768");
        assert!(cases(Some("no-such-op")).unwrap().is_empty());
    }

    #[test]
    fn the_masked_bce_step_runs_on_the_cpu_and_matches_its_two_halves() {
        let [case] = <[Case; 1]>::try_from(cases(Some("masked_bce_step/b64-c80")).unwrap()).ok().unwrap();
        let mut inputs: Vec<Storage> = case.inputs.iter().map(|i| i.upload(&crate::Device::Cpu).unwrap()).collect();
        let outputs = (case.run)(&mut inputs).unwrap();
        let [loss, saved, dlogits] = <[Storage; 3]>::try_from(outputs).ok().unwrap();
        let host = |s: &Storage| s.to_host_f32().unwrap();
        let (loss, saved, dlogits) = (host(&loss), host(&saved), host(&dlogits));
        let known = *saved.last().unwrap();
        assert!(known > 0.0 && loss[0] > 0.0 && loss[0].is_finite());
        for (d, r) in dlogits.iter().zip(&saved) {
            assert_eq!(*d, r * (1.0 / known));
        }
    }

    #[test]
    fn inputs_do_not_depend_on_the_filter() {
        let alone = cases(Some("softmax_fwd/mini-clip")).unwrap();
        let among = cases(Some("mini-clip")).unwrap();
        let same = among.iter().find(|c| c.id() == "softmax_fwd/mini-clip").unwrap();
        assert_eq!(alone[0].inputs[0].values, same.inputs[0].values);
    }

    #[test]
    fn every_mini_case_runs_on_the_cpu() {
        for case in cases(Some("mini-clip")).unwrap() {
            let mut inputs: Vec<Storage> = case.inputs.iter().map(|i| i.upload(&crate::Device::Cpu).unwrap()).collect();
            let outputs = (case.run)(&mut inputs).unwrap_or_else(|e| panic!("{}: {e:#}", case.id()));
            for t in outputs.iter().chain(&inputs) {
                assert!(t.to_host_f32().unwrap().iter().all(|v| v.is_finite()), "{}: non-finite values", case.id());
            }
        }
    }
}
