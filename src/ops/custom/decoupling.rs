//! Semantic-decoupling scores without the [B, C, N, d] tensor (docs/model.md
//! §4, fc3 and fc4 collapsed): `s[b,c,n] = sum_k u[k] tanh(x[b,n,k] t[c,k])`,
//! forward and backward, the tanh recomputed in the backward instead of
//! stored. CUDA: `kernels/decoupling.cu`, the forward one warp per score, the
//! backward without atomics (per-batch partials summed in order); the CPU
//! sums its per-batch partials in batch order too, so neither result depends
//! on the thread count.

use crate::autograd;
use crate::backend::cuda::common::{grid_for, int, launch, BLOCK};
use crate::backend::cuda::CudaDevice;
use crate::backend::custom::{exact_inputs, CustomOp};
use crate::backend::Storage;
use crate::ops::{check_float_operands, grads_like};
use crate::{Shape, Tensor};
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;
use rayon::prelude::*;

/// Sizes of a score computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecouplingDims {
    pub batch: usize,
    pub classes: usize,
    pub positions: usize,
    pub width: usize,
}

/// The forward: inputs x [B, N, d], t [C, d], u [d]; output s [B, C, N].
pub struct Scores(pub DecouplingDims);

/// The backward: inputs x, t, u and ds [B, C, N]; outputs dx, dt, du.
pub struct ScoresBackward(pub DecouplingDims);

impl Tensor {
    /// `s[b,c,n] = sum_k u[k] tanh(x[b,n,k] t[c,k])` with `self` = x [B, N, d],
    /// t [C, d], u [d]: the decoupling module's attention scores once fc3
    /// and fc4 are collapsed into `u = W3^T w4` (the constant `w4 . b3 + b4`
    /// is the caller's to add). Never builds the [B, C, N, d] tensor.
    pub fn decoupling_scores(&self, t: &Tensor, u: &Tensor) -> Result<Tensor> {
        let x = self;
        check_float_operands("decoupling_scores", &[x, t, u])?;
        let (&[batch, positions, width], &[classes, t_width], &[u_width]) = (x.dims(), t.dims(), u.dims()) else {
            bail!(
                "decoupling_scores: expected x [B, N, d], t [C, d], u [d]; got {}, {}, {}",
                x.shape(),
                t.shape(),
                u.shape()
            );
        };
        if t_width != width || u_width != width {
            bail!("decoupling_scores: widths of x {}, t {} and u {} differ", x.shape(), t.shape(), u.shape());
        }
        let dims = DecouplingDims { batch, classes, positions, width };
        let [scores] = Storage::apply_custom(&Scores(dims), &[&x.storage(), &t.storage(), &u.storage()])?
            .try_into()
            .map_err(|_| anyhow::anyhow!("decoupling_scores returns one tensor"))?;
        let out = Tensor::op_output(scores, Shape::new(vec![batch, classes, positions]), &[x, t, u]);
        let (xs, ts, us) = (x.clone(), t.clone(), u.clone());
        autograd::record(&out, &[x, t, u], move |g, _| {
            grads_like(
                Storage::apply_custom(
                    &ScoresBackward(dims),
                    &[&xs.storage(), &ts.storage(), &us.storage(), &g.storage()],
                )?,
                &[&xs, &ts, &us],
            )
        });
        Ok(out)
    }
}

impl CustomOp for Scores {
    fn name(&self) -> &'static str {
        "decoupling_scores"
    }

    fn cpu(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let [x, t, u] = exact_inputs(self, inputs)?;
        Ok(vec![cpu_scores(x, t, u, &self.0)])
    }

    fn cuda(&self, dev: &CudaDevice, inputs: &[&CudaSlice<f32>]) -> Result<Vec<CudaSlice<f32>>> {
        let [x, t, u] = exact_inputs(self, inputs)?;
        Ok(vec![cuda_scores(dev, x, t, u, &self.0)?])
    }
}

impl CustomOp for ScoresBackward {
    fn name(&self) -> &'static str {
        "decoupling_scores backward"
    }

    fn cpu(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let [x, t, u, grad] = exact_inputs(self, inputs)?;
        let (dx, dt, du) = cpu_scores_backward(x, t, u, grad, &self.0);
        Ok(vec![dx, dt, du])
    }

    fn cuda(&self, dev: &CudaDevice, inputs: &[&CudaSlice<f32>]) -> Result<Vec<CudaSlice<f32>>> {
        let [x, t, u, grad] = exact_inputs(self, inputs)?;
        let (dx, dt, du) = cuda_scores_backward(dev, x, t, u, grad, &self.0)?;
        Ok(vec![dx, dt, du])
    }
}

fn cpu_scores(x: &[f32], t: &[f32], u: &[f32], dims: &DecouplingDims) -> Vec<f32> {
    let DecouplingDims { batch: _, classes, positions, width } = *dims;
    let mut s = vec![0.0; dims.batch * classes * positions];
    s.par_chunks_mut(positions).enumerate().for_each(|(bc, row)| {
        let (b, c) = (bc / classes, bc % classes);
        let tc = &t[c * width..(c + 1) * width];
        for (n, out) in row.iter_mut().enumerate() {
            let xn = &x[(b * positions + n) * width..][..width];
            *out = (0..width).map(|k| u[k] * (xn[k] * tc[k]).tanh()).sum();
        }
    });
    s
}

/// Returns (dx [B, N, d], dt [C, d], du [d]); each batch entry accumulates its
/// own partial dt and du, summed in batch order.
fn cpu_scores_backward(
    x: &[f32],
    t: &[f32],
    u: &[f32],
    grad: &[f32],
    dims: &DecouplingDims,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let DecouplingDims { batch, classes, positions, width } = *dims;
    let mut dx = vec![0.0; batch * positions * width];
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(positions * width)
        .enumerate()
        .map(|(b, dx_b)| {
            let mut dt = vec![0.0; classes * width];
            let mut du = vec![0.0; width];
            let mut z = vec![0.0; width];
            for c in 0..classes {
                let tc = &t[c * width..(c + 1) * width];
                let dt_c = &mut dt[c * width..(c + 1) * width];
                for n in 0..positions {
                    let g = grad[(b * classes + c) * positions + n];
                    if g == 0.0 {
                        continue;
                    }
                    let xn = &x[(b * positions + n) * width..][..width];
                    z.iter_mut().zip(xn.iter().zip(tc)).for_each(|(z, (x, t))| *z = (x * t).tanh());
                    add_term_gradients(g, &z, xn, tc, u, &mut dx_b[n * width..(n + 1) * width], dt_c, &mut du);
                }
            }
            (dt, du)
        })
        .collect();
    let mut dt = vec![0.0; classes * width];
    let mut du = vec![0.0; width];
    for (pt, pu) in partials {
        dt.iter_mut().zip(pt).for_each(|(a, b)| *a += b);
        du.iter_mut().zip(pu).for_each(|(a, b)| *a += b);
    }
    (dx, dt, du)
}

/// Adds one score's gradient `g` to the gradients of its terms: with
/// `z = tanh(x t)` (one position's x row, one category's t row), `du += g z`,
/// and with `dpre = g u (1 - z^2)`, `dx += dpre t` and `dt += dpre x`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_term_gradients(
    g: f32,
    z: &[f32],
    x: &[f32],
    t: &[f32],
    u: &[f32],
    dx: &mut [f32],
    dt: &mut [f32],
    du: &mut [f32],
) {
    for k in 0..z.len() {
        du[k] += g * z[k];
        let dpre = g * u[k] * (1.0 - z[k] * z[k]);
        dx[k] += dpre * t[k];
        dt[k] += dpre * x[k];
    }
}

/// Scores per block of the forward (one warp each).
const WARPS_PER_BLOCK: usize = BLOCK as usize / 32;

fn sizes(dims: &DecouplingDims) -> Result<[i32; 4]> {
    Ok([
        int(dims.batch, "batch")?,
        int(dims.classes, "classes")?,
        int(dims.positions, "positions")?,
        int(dims.width, "width")?,
    ])
}

/// Returns s [B, C, N].
fn cuda_scores(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    t: &CudaSlice<f32>,
    u: &CudaSlice<f32>,
    dims: &DecouplingDims,
) -> Result<CudaSlice<f32>> {
    let len = dims.batch * dims.classes * dims.positions;
    let mut s = dev.alloc::<f32>(len)?;
    if len == 0 {
        return Ok(s);
    }
    let [b, c, n, d] = sizes(dims)?;
    let kernel = dev.kernel("decoupling", "decoupling_forward")?;
    // SAFETY: x holds B N d f32, t C d, u d, s B C N (checked by
    // Tensor::decoupling_scores); one warp per score writes it once.
    unsafe {
        launch!(kernel, grid_for(len.div_ceil(WARPS_PER_BLOCK) * BLOCK as usize, BLOCK); x, t, u, &mut s, &b, &c, &n, &d)
    }?;
    Ok(s)
}

/// Returns (dx [B, N, d], dt [C, d], du [d]); also the last step of
/// [`super::decoupling_attention`]'s backward, with its score gradients.
pub(crate) fn cuda_scores_backward(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    t: &CudaSlice<f32>,
    u: &CudaSlice<f32>,
    grad: &CudaSlice<f32>,
    dims: &DecouplingDims,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>, CudaSlice<f32>)> {
    let DecouplingDims { batch, classes, positions, width } = *dims;
    if batch * classes * positions * width == 0 {
        return Ok((
            dev.alloc_zeros::<f32>(batch * positions * width)?,
            dev.alloc_zeros::<f32>(classes * width)?,
            dev.alloc_zeros::<f32>(width)?,
        ));
    }
    let [b, c, n, d] = sizes(dims)?;
    let mut dx = dev.alloc::<f32>(batch * positions * width)?;
    let dx_kernel = dev.kernel("decoupling", "decoupling_backward_dx")?;
    // SAFETY: x and dx hold B N d f32, t C d, u d, grad B C N; a thread per
    // dx element.
    unsafe { launch!(dx_kernel, grid_for(dx.len(), BLOCK); x, t, u, grad, &mut dx, &b, &c, &n, &d) }?;

    let partial_len = batch * classes * width;
    let mut partial_dt = dev.alloc::<f32>(partial_len)?;
    let mut partial_du = dev.alloc::<f32>(partial_len)?;
    let partials = dev.kernel("decoupling", "decoupling_backward_partials")?;
    // SAFETY: both partial buffers hold B C d f32; a thread per (b, c, k).
    unsafe {
        launch!(partials, grid_for(partial_len, BLOCK); x, t, u, grad, &mut partial_dt, &mut partial_du, &b, &c, &n, &d)
    }?;

    let mut dt = dev.alloc::<f32>(classes * width)?;
    let reduce_dt = dev.kernel("decoupling", "decoupling_reduce_dt")?;
    // SAFETY: partial_dt holds B C d f32, dt C d; a thread per (c, k).
    unsafe { launch!(reduce_dt, grid_for(dt.len(), BLOCK); &partial_dt, &mut dt, &b, &c, &d) }?;
    let mut du = dev.alloc::<f32>(width)?;
    let reduce_du = dev.kernel("decoupling", "decoupling_reduce_du")?;
    // SAFETY: partial_du holds B C d f32, du d; a thread per k.
    unsafe { launch!(reduce_du, grid_for(width, BLOCK); &partial_du, &mut du, &b, &c, &d) }?;
    Ok((dx, dt, du))
}
