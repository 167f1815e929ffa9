//! The semantic-decoupling cross-attention in one op (docs/model.md §4, fc3
//! and fc4 collapsed into `u = W3^T w4`): per image b and category c the
//! scores `s[n] = sum_k u[k] tanh(x[b,n,k] t[c,k])`, their softmax over the
//! positions and the softmax-weighted sum of the patch features,
//! `out[b,c,:] = sum_n P[b,c,n] X[b,n,:]`, without the [B, C, N, d] tanh
//! terms or the [B, C, N] scores: the CUDA forward
//! (`kernels/decoupling_attention.cu`) runs an online softmax over position
//! tiles and saves only the log-sum-exp per (b, c); the backward recomputes
//! the scores from it, flash-style (`delta = dOut . Out`,
//! `ds = P (dOut . X - delta)`), then takes dx, dt, du through the scores'
//! backward of [`super::decoupling`] with `ds` as its gradient.
//!
//! The CPU implementation (the reference, and the CPU training path) runs
//! the forward in parallel over (b, c) and the backward over b, with one
//! category's [N, d] tanh terms as each task's only scratch; its per-image
//! partial dt and du are summed in image order, so nothing depends on the
//! thread count.

use super::decoupling::{add_term_gradients, cuda_scores_backward, DecouplingDims};
use crate::autograd;
use crate::backend::cpu::vmath;
use crate::backend::cuda::common::{grid_for, int, launch, BLOCK};
use crate::backend::cuda::CudaDevice;
use crate::backend::custom::{exact_inputs, CustomOp};
use crate::backend::Storage;
use crate::{DType, Shape, Tensor};
use anyhow::{bail, Context, Result};
use cudarc::driver::{CudaSlice, LaunchConfig};
use rayon::prelude::*;

/// Sizes of a decoupling attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    pub batch: usize,
    pub classes: usize,
    pub positions: usize,
    /// d: the width of x, t and u.
    pub width: usize,
    /// D: the width of the patch features and of the output.
    pub embed: usize,
}

impl AttentionDims {
    fn scores(&self) -> DecouplingDims {
        DecouplingDims { batch: self.batch, classes: self.classes, positions: self.positions, width: self.width }
    }
}

/// The forward: inputs x [B, N, d], t [C, d], u [d], patches [B, N, D];
/// outputs out [B, C, D] and lse [B, C].
pub struct DecouplingAttention(pub AttentionDims);

/// The backward: inputs x, t, u, patches, out, lse and dout [B, C, D];
/// outputs dx, dt, du, and dpatches when `patch_grad`.
pub struct DecouplingAttentionBackward {
    pub dims: AttentionDims,
    pub patch_grad: bool,
}

/// Largest D of the CUDA forward (`DA_THREADS * DA_MAX_COLS` in its kernel file).
const MAX_EMBED: usize = 1024;
/// Categories per block of the CUDA kernels (`DA_CATS`).
const CATEGORIES_PER_BLOCK: usize = 8;

impl Tensor {
    /// Per-category visual features `[B, C, D]` of the decoupling module
    /// with `self` = x [B, N, d] (fc1 of the patches), t [C, d] (fc2 of the
    /// text features), u [d] (`W3^T w4`), `shift` [1] (`w4 . b3 + b4`) and
    /// the patch features [B, N, D]: `softmax_n(s + shift) @ patches` with
    /// `s[b,c,n] = sum_k u[k] tanh(x[b,n,k] t[c,k])`.
    ///
    /// `shift` adds the same constant to every score of a softmax row, so it
    /// cancels: the output does not depend on it and its gradient is exactly
    /// zero. It is an input so that fc3's and fc4's biases stay parameters
    /// of the graph with that zero gradient, as in the literal module.
    /// f32 only: the towers hand f32 features to the head (docs/model.md).
    pub fn decoupling_attention(&self, t: &Tensor, u: &Tensor, shift: &Tensor, patches: &Tensor) -> Result<Tensor> {
        let x = self;
        let shapes = || {
            format!(
                "x {}, t {}, u {}, shift {}, patches {}",
                x.shape(),
                t.shape(),
                u.shape(),
                shift.shape(),
                patches.shape()
            )
        };
        if [x, t, u, shift, patches].iter().any(|a| a.dtype() != DType::F32) {
            bail!("decoupling_attention: expected f32 tensors (the head computes in f32); got {}", shapes());
        }
        let (&[batch, positions, width], &[classes, t_width], &[u_width], &[1], &[p_batch, p_positions, embed]) =
            (x.dims(), t.dims(), u.dims(), shift.dims(), patches.dims())
        else {
            bail!(
                "decoupling_attention: expected x [B, N, d], t [C, d], u [d], shift [1], patches [B, N, D]; got {}",
                shapes()
            );
        };
        if t_width != width || u_width != width || p_batch != batch || p_positions != positions {
            bail!("decoupling_attention: sizes disagree: {}", shapes());
        }
        if positions == 0 || width == 0 || embed == 0 {
            bail!("decoupling_attention: a softmax over no position or an empty width: {}", shapes());
        }
        let dims = AttentionDims { batch, classes, positions, width, embed };
        let [out, lse] = Storage::apply_custom(
            &DecouplingAttention(dims),
            &[&x.storage(), &t.storage(), &u.storage(), &patches.storage()],
        )?
        .try_into()
        .map_err(|_| anyhow::anyhow!("decoupling_attention returns out and lse"))?;
        let out = Tensor::op_output(out, Shape::new(vec![batch, classes, embed]), &[x, t, u, shift, patches]);
        let lse = Tensor::from_storage(lse, [batch, classes], x.device().clone())?;
        let (xs, ts, us, shifts, ps, outs) =
            (x.clone(), t.clone(), u.clone(), shift.clone(), patches.clone(), out.clone());
        autograd::record(&out, &[x, t, u, shift, patches], move |g, needs| {
            let patch_grad = needs.get(4).copied().unwrap_or(false);
            let op = DecouplingAttentionBackward { dims, patch_grad };
            let grads = Storage::apply_custom(
                &op,
                &[
                    &xs.storage(),
                    &ts.storage(),
                    &us.storage(),
                    &ps.storage(),
                    &outs.storage(),
                    &lse.storage(),
                    &g.storage(),
                ],
            )?;
            let mut grads = grads.into_iter();
            let mut next = |like: &Tensor| -> Result<Tensor> {
                let g = grads.next().context("decoupling_attention backward: too few gradients")?;
                Tensor::from_storage(g, like.shape().clone(), like.device().clone())
            };
            let (dx, dt, du) = (next(&xs)?, next(&ts)?, next(&us)?);
            let dpatches = if patch_grad { Some(next(&ps)?) } else { None };
            Ok(vec![Some(dx), Some(dt), Some(du), Some(shifts.zeros_like()?), dpatches])
        });
        Ok(out)
    }
}

impl CustomOp for DecouplingAttention {
    fn name(&self) -> &'static str {
        "decoupling_attention"
    }

    fn cpu(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let [x, t, u, patches] = exact_inputs(self, inputs)?;
        let (out, lse) = cpu_forward(x, t, u, patches, &self.0);
        Ok(vec![out, lse])
    }

    fn cuda(&self, dev: &CudaDevice, inputs: &[&CudaSlice<f32>]) -> Result<Vec<CudaSlice<f32>>> {
        let [x, t, u, patches] = exact_inputs(self, inputs)?;
        let (out, lse) = cuda_forward(dev, x, t, u, patches, &self.0)?;
        Ok(vec![out, lse])
    }
}

impl CustomOp for DecouplingAttentionBackward {
    fn name(&self) -> &'static str {
        "decoupling_attention backward"
    }

    fn cpu(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let [x, t, u, patches, _out, lse, dout] = exact_inputs(self, inputs)?;
        let grads = cpu_backward(x, t, u, patches, lse, dout, &self.dims, self.patch_grad);
        let mut outputs = vec![grads.dx, grads.dt, grads.du];
        outputs.extend(grads.dpatches);
        Ok(outputs)
    }

    fn cuda(&self, dev: &CudaDevice, inputs: &[&CudaSlice<f32>]) -> Result<Vec<CudaSlice<f32>>> {
        let [x, t, u, patches, out, lse, dout] = exact_inputs(self, inputs)?;
        cuda_backward(dev, [x, t, u, patches, out, lse, dout], self)
    }
}

/// `s[n] = sum_k u[k] z[n,k]` with `z[n,k] = tanh(x[n,k] t[k])` written into
/// `z` ([N, d]), for one image's x and one category's t.
fn scores_of_category(x_b: &[f32], t_c: &[f32], u: &[f32], z: &mut [f32], s: &mut [f32]) {
    let width = t_c.len();
    for ((x_n, z_n), s_n) in x_b.chunks_exact(width).zip(z.chunks_exact_mut(width)).zip(s.iter_mut()) {
        vmath::zip_map(z_n, x_n, t_c, |x, t| vmath::tanh(x * t));
        *s_n = vmath::dot(u, z_n);
    }
}

/// Returns (out [B, C, D], lse [B, C]).
fn cpu_forward(x: &[f32], t: &[f32], u: &[f32], patches: &[f32], dims: &AttentionDims) -> (Vec<f32>, Vec<f32>) {
    let AttentionDims { batch, classes, positions, width, embed } = *dims;
    let mut out = vec![0.0; batch * classes * embed];
    let mut lse = vec![0.0; batch * classes];
    // Scratch per worker thread: one category's tanh terms and scores.
    let scratch = || (vec![0.0; positions * width], vec![0.0; positions]);
    out.par_chunks_mut(embed).zip(lse.par_iter_mut()).enumerate().for_each_init(
        scratch,
        |(z, s), (bc, (out_bc, lse_bc))| {
            let (b, c) = (bc / classes, bc % classes);
            let x_b = &x[b * positions * width..][..positions * width];
            scores_of_category(x_b, &t[c * width..][..width], u, z, s);
            let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for (s_n, patch) in s.iter().zip(patches[b * positions * embed..].chunks_exact(embed)) {
                let p = vmath::exp(s_n - max);
                sum += p;
                out_bc.iter_mut().zip(patch).for_each(|(o, &v)| *o += p * v);
            }
            out_bc.iter_mut().for_each(|o| *o /= sum);
            *lse_bc = max + sum.ln();
        },
    );
    (out, lse)
}

struct Gradients {
    dx: Vec<f32>,
    dt: Vec<f32>,
    du: Vec<f32>,
    /// When asked for.
    dpatches: Option<Vec<f32>>,
}

/// The backward on the host, one task per image: for each category the
/// scores and tanh terms are recomputed once, `P = exp(s - lse)` and
/// `ds = P (dout . X - dout . out)`, where `dout . out = sum_n P dout . X`
/// is formed from the same dot products.
#[allow(clippy::too_many_arguments)]
fn cpu_backward(
    x: &[f32],
    t: &[f32],
    u: &[f32],
    patches: &[f32],
    lse: &[f32],
    dout: &[f32],
    dims: &AttentionDims,
    patch_grad: bool,
) -> Gradients {
    let AttentionDims { batch, classes, positions, width, embed } = *dims;
    let mut dx = vec![0.0; batch * positions * width];
    let partials: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(positions * width)
        .enumerate()
        .map(|(b, dx_b)| {
            // This image's patch gradient, empty when not asked for.
            let mut dpatches_b = vec![0.0; if patch_grad { positions * embed } else { 0 }];
            let x_b = &x[b * positions * width..][..positions * width];
            let patches_b = &patches[b * positions * embed..][..positions * embed];
            let mut dt = vec![0.0; classes * width];
            let mut du = vec![0.0; width];
            let mut z = vec![0.0; positions * width];
            let (mut s, mut dp) = (vec![0.0; positions], vec![0.0; positions]);
            for c in 0..classes {
                let t_c = &t[c * width..][..width];
                let dout_bc = &dout[(b * classes + c) * embed..][..embed];
                scores_of_category(x_b, t_c, u, &mut z, &mut s);
                let lse_bc = lse[b * classes + c];
                let mut delta = 0.0;
                for ((s_n, dp_n), patch) in s.iter_mut().zip(dp.iter_mut()).zip(patches_b.chunks_exact(embed)) {
                    *s_n = vmath::exp(*s_n - lse_bc);
                    *dp_n = vmath::dot(dout_bc, patch);
                    delta += *s_n * *dp_n;
                }
                let dt_c = &mut dt[c * width..][..width];
                for n in 0..positions {
                    let p = s[n];
                    if patch_grad {
                        dpatches_b[n * embed..][..embed].iter_mut().zip(dout_bc).for_each(|(d, &g)| *d += p * g);
                    }
                    let ds = p * (dp[n] - delta);
                    let row = n * width..(n + 1) * width;
                    add_term_gradients(ds, &z[row.clone()], &x_b[row.clone()], t_c, u, &mut dx_b[row], dt_c, &mut du);
                }
            }
            (dt, du, dpatches_b)
        })
        .collect();
    let mut dt = vec![0.0; classes * width];
    let mut du = vec![0.0; width];
    let mut dpatches = Vec::with_capacity(if patch_grad { batch * positions * embed } else { 0 });
    for (pt, pu, pp) in partials {
        dt.iter_mut().zip(pt).for_each(|(a, b)| *a += b);
        du.iter_mut().zip(pu).for_each(|(a, b)| *a += b);
        dpatches.extend(pp);
    }
    Gradients { dx, dt, du, dpatches: patch_grad.then_some(dpatches) }
}

/// One block per (8 categories, image); the kernels need exactly `BLOCK` threads.
fn tile_grid(dims: &AttentionDims) -> Result<LaunchConfig> {
    let tiles = dims.classes.div_ceil(CATEGORIES_PER_BLOCK);
    if dims.batch > 65535 || tiles > 65535 {
        bail!("decoupling_attention: batch {} or {} category tiles exceed the grid's 65535", dims.batch, tiles);
    }
    Ok(LaunchConfig { grid_dim: (tiles as u32, dims.batch as u32, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 })
}

fn sizes(dims: &AttentionDims) -> Result<[i32; 5]> {
    Ok([
        int(dims.batch, "batch")?,
        int(dims.classes, "classes")?,
        int(dims.positions, "positions")?,
        int(dims.width, "width")?,
        int(dims.embed, "embed")?,
    ])
}

/// Returns (out [B, C, D], lse [B, C]).
fn cuda_forward(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    t: &CudaSlice<f32>,
    u: &CudaSlice<f32>,
    patches: &CudaSlice<f32>,
    dims: &AttentionDims,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    if dims.embed > MAX_EMBED {
        bail!("decoupling_attention on CUDA: patch width {} > {MAX_EMBED}", dims.embed);
    }
    let mut out = dev.alloc::<f32>(dims.batch * dims.classes * dims.embed)?;
    let mut lse = dev.alloc::<f32>(dims.batch * dims.classes)?;
    if dims.batch * dims.classes == 0 {
        return Ok((out, lse));
    }
    let [b, c, n, d, e] = sizes(dims)?;
    let kernel = dev.kernel("decoupling_attention", "decoupling_attention_forward")?;
    // SAFETY: x holds B N d f32, t C d, u d, patches B N D, out B C D and
    // lse B C (checked by Tensor::decoupling_attention); D <= 1024 as the
    // kernel needs; each (b, c) is written by one block.
    unsafe { launch!(kernel, tile_grid(dims)?; x, t, u, patches, &mut out, &mut lse, &b, &c, &n, &d, &e) }?;
    Ok((out, lse))
}

/// Returns dx, dt, du and, when asked, dpatches.
fn cuda_backward(
    dev: &CudaDevice,
    [x, t, u, patches, out, lse, dout]: [&CudaSlice<f32>; 7],
    op: &DecouplingAttentionBackward,
) -> Result<Vec<CudaSlice<f32>>> {
    let dims = &op.dims;
    let scores_len = dims.batch * dims.classes * dims.positions;
    let mut prob = dev.alloc::<f32>(scores_len)?;
    let mut dscore = dev.alloc::<f32>(scores_len)?;
    let [b, c, n, d, e] = sizes(dims)?;
    if scores_len > 0 {
        let kernel = dev.kernel("decoupling_attention", "decoupling_attention_backward_scores")?;
        // SAFETY: as the forward, plus out and dout B C D, lse B C, prob
        // and dscore B C N f32; each (b, c, n) is written by one thread.
        unsafe {
            launch!(kernel, tile_grid(dims)?; x, t, u, patches, out, lse, dout, &mut prob, &mut dscore, &b, &c, &n, &d, &e)
        }?;
    }
    let (dx, dt, du) = cuda_scores_backward(dev, x, t, u, &dscore, &dims.scores())?;
    let mut grads = vec![dx, dt, du];
    if op.patch_grad {
        let mut dpatches = dev.alloc::<f32>(dims.batch * dims.positions * dims.embed)?;
        if !dpatches.is_empty() {
            let kernel = dev.kernel("decoupling_attention", "decoupling_attention_backward_patches")?;
            // SAFETY: prob holds B C N f32, dout B C D, dpatches B N D; a
            // thread per dpatches element (grid-stride).
            unsafe { launch!(kernel, grid_for(dpatches.len(), BLOCK); &prob, dout, &mut dpatches, &b, &c, &n, &e) }?;
        }
        grads.push(dpatches);
    }
    Ok(grads)
}
