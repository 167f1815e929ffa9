//! Bicubic resize of 2-D grids, matching PyTorch's
//! `F.interpolate(mode="bicubic", align_corners=False)`: half-pixel centres,
//! Keys' cubic with a = -0.75, source taps clamped to the border. Resamples
//! positional-embedding grids (docs/model.md §2); forward only. CUDA:
//! `kernels/bicubic.cu`, a thread per output element.

use crate::backend::cuda::common::{grid_for, int, launch, BLOCK};
use crate::backend::cuda::CudaDevice;
use crate::backend::custom::{exact_inputs, CustomOp};
use crate::backend::Storage;
use crate::ops::{check_float_operands, single};
use crate::{Shape, Tensor};
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;
use rayon::prelude::*;

/// Input `channels` grids of h x w; output `channels` grids of out_h x out_w.
pub struct BicubicResize {
    pub channels: usize,
    pub h: usize,
    pub w: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl Tensor {
    /// [C, H, W] -> [C, out_h, out_w], as PyTorch's bicubic interpolation
    /// with `align_corners=False`. Forward only: the input must not require
    /// grad (positional embeddings are resized once, frozen).
    pub fn bicubic_resize(&self, out_h: usize, out_w: usize) -> Result<Tensor> {
        check_float_operands("bicubic_resize", &[self])?;
        let &[channels, h, w] = self.dims() else {
            bail!("bicubic_resize: expected a [C, H, W] tensor, got shape {}", self.shape());
        };
        if self.requires_grad() && crate::autograd::is_grad_enabled() {
            bail!("bicubic_resize has no backward; call it under no_grad or on a tensor that needs no grad");
        }
        if out_h == 0 || out_w == 0 || h == 0 || w == 0 {
            bail!("bicubic_resize: cannot resize shape {} to {out_h} x {out_w}", self.shape());
        }
        let op = BicubicResize { channels, h, w, out_h, out_w };
        let storage = single(Storage::apply_custom(&op, &[&self.storage()])?)?;
        Tensor::from_storage(storage, Shape::new(vec![channels, out_h, out_w]), self.device().clone())
    }
}

impl CustomOp for BicubicResize {
    fn name(&self) -> &'static str {
        "bicubic_resize"
    }

    fn cpu(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let [x] = exact_inputs(self, inputs)?;
        Ok(vec![cpu_resize(x, self.channels, self.h, self.w, self.out_h, self.out_w)])
    }

    fn cuda(&self, dev: &CudaDevice, inputs: &[&CudaSlice<f32>]) -> Result<Vec<CudaSlice<f32>>> {
        let [x] = exact_inputs(self, inputs)?;
        Ok(vec![cuda_resize(dev, x, self.channels, self.h, self.w, self.out_h, self.out_w)?])
    }
}

const A: f32 = -0.75;

/// The four tap weights for fractional offset `t` in [0, 1).
fn cubic_weights(t: f32) -> [f32; 4] {
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// For each output coordinate: the four clamped source indices and weights.
fn taps(in_len: usize, out_len: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = in_len as f32 / out_len as f32;
    (0..out_len)
        .map(|o| {
            let src = (o as f32 + 0.5) * scale - 0.5;
            let base = src.floor();
            let idx = |k: isize| (base as isize + k).clamp(0, in_len as isize - 1) as usize;
            ([idx(-1), idx(0), idx(1), idx(2)], cubic_weights(src - base))
        })
        .collect()
}

/// `x` holds `channels` grids of h x w; returns `channels` grids of out_h x out_w.
fn cpu_resize(x: &[f32], channels: usize, h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    let rows = taps(h, out_h);
    let cols = taps(w, out_w);
    let mut out = vec![0.0; channels * out_h * out_w];
    out.par_chunks_mut(out_h * out_w).enumerate().for_each(|(c, dst)| {
        let grid = &x[c * h * w..(c + 1) * h * w];
        for (oy, (ry, wy)) in rows.iter().enumerate() {
            for (ox, (rx, wx)) in cols.iter().enumerate() {
                let mut acc = 0.0;
                for i in 0..4 {
                    let row = &grid[ry[i] * w..];
                    let horizontal: f32 = (0..4).map(|j| wx[j] * row[rx[j]]).sum();
                    acc += wy[i] * horizontal;
                }
                dst[oy * out_w + ox] = acc;
            }
        }
    });
    out
}

fn cuda_resize(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    channels: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Result<CudaSlice<f32>> {
    let len = channels * out_h * out_w;
    let mut out = dev.alloc::<f32>(len)?;
    if len == 0 || h * w == 0 {
        return Ok(out);
    }
    let sizes = [int(channels, "channels")?, int(h, "h")?, int(w, "w")?, int(out_h, "out_h")?, int(out_w, "out_w")?];
    let kernel = dev.kernel("bicubic", "bicubic_resize")?;
    // SAFETY: x holds channels * h * w f32 (checked by the op), out channels
    // * out_h * out_w; source taps are clamped into [0, h) x [0, w).
    unsafe {
        launch!(kernel, grid_for(len, BLOCK); x, &mut out, &sizes[0], &sizes[1], &sizes[2], &sizes[3], &sizes[4])
    }?;
    Ok(out)
}
