//! Bicubic resize of 2-D grids (positional-embedding interpolation).

use super::check_float_operands;
use crate::tensor::{Shape, Tensor};
use anyhow::{bail, Result};

impl Tensor {
    /// [C, H, W] -> [C, out_h, out_w], as PyTorch's bicubic interpolation
    /// with `align_corners=False`. Forward only: the input must not require
    /// grad (positional embeddings are resized once, frozen).
    pub fn bicubic_resize(&self, out_h: usize, out_w: usize) -> Result<Tensor> {
        check_float_operands("bicubic_resize", &[self])?;
        let &[c, h, w] = self.dims() else {
            bail!("bicubic_resize: expected a [C, H, W] tensor, got shape {}", self.shape());
        };
        if self.requires_grad() && crate::autograd::is_grad_enabled() {
            bail!("bicubic_resize has no backward; call it under no_grad or on a tensor that needs no grad");
        }
        if out_h == 0 || out_w == 0 || h == 0 || w == 0 {
            bail!("bicubic_resize: cannot resize shape {} to {out_h} x {out_w}", self.shape());
        }
        let storage = self.storage().bicubic_resize(c, h, w, out_h, out_w)?;
        Tensor::from_storage(storage, Shape::new(vec![c, out_h, out_w]), self.device().clone())
    }
}
