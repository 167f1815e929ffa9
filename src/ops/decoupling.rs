//! The semantic-decoupling score op (DESIGN.md §2.3).

use super::check_float_operands;
use crate::autograd;
use crate::backend::{DecouplingDims, Storage};
use crate::tensor::{Shape, Tensor};
use anyhow::{bail, Result};

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
        let scores = Storage::decoupling_scores(&x.storage(), &t.storage(), &u.storage(), &dims)?;
        let out = Tensor::op_output(scores, Shape::new(vec![batch, classes, positions]), &[x, t, u]);
        let (xs, ts, us) = (x.clone(), t.clone(), u.clone());
        autograd::record(&out, &[x, t, u], move |g, _| {
            let (dx, dt, du) =
                Storage::decoupling_scores_backward(&xs.storage(), &ts.storage(), &us.storage(), &g.storage(), &dims)?;
            let device = xs.device().clone();
            Ok(vec![
                Some(Tensor::from_storage(dx, xs.shape().clone(), device.clone())?),
                Some(Tensor::from_storage(dt, ts.shape().clone(), device.clone())?),
                Some(Tensor::from_storage(du, us.shape().clone(), device)?),
            ])
        });
        Ok(out)
    }
}
