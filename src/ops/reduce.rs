//! Sums and means over axes, and the broadcast/sum-to pair that is their
//! adjoint.

use super::check_float_operands;
use crate::autograd;
use crate::tensor::Tensor;
use crate::Shape;
use anyhow::{bail, Result};

impl Tensor {
    /// Sums down to `shape`, which must broadcast to this tensor's shape
    /// (the adjoint of [`Tensor::broadcast_to`]).
    pub fn sum_to(&self, shape: &Shape) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        check_float_operands("sum_to", &[self])?;
        if shape.rank() > self.rank() || shape.broadcast(self.shape()).ok().as_ref() != Some(self.shape()) {
            bail!("sum_to: shape {} cannot be summed down to {shape}", self.shape());
        }
        let storage = self.storage().sum_to(self.shape(), shape)?;
        let out = Tensor::op_output(storage, shape.clone(), &[self]);
        let from = self.shape().clone();
        autograd::record(&out, &[self], move |g, _| Ok(vec![Some(g.broadcast_to(&from)?)]));
        Ok(out)
    }

    /// Repeats this tensor along broadcast dimensions (numpy rules).
    pub fn broadcast_to(&self, shape: &Shape) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        check_float_operands("broadcast_to", &[self])?;
        if self.shape().broadcast(shape).ok().as_ref() != Some(shape) {
            bail!("broadcast_to: shape {} cannot be broadcast to {shape}", self.shape());
        }
        let storage = self.storage().broadcast_to(self.shape(), shape)?;
        let out = Tensor::op_output(storage, shape.clone(), &[self]);
        let from = self.shape().clone();
        autograd::record(&out, &[self], move |g, _| Ok(vec![Some(g.sum_to(&from)?)]));
        Ok(out)
    }

    /// Sums over `axes` (negative counts from the end), dropping them unless
    /// `keepdim`.
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let reduced = self.reduced_axes(axes)?;
        let kept: Vec<usize> =
            self.dims().iter().enumerate().map(|(i, &d)| if reduced.contains(&i) { 1 } else { d }).collect();
        let summed = self.sum_to(&Shape::new(kept))?;
        if keepdim {
            return Ok(summed);
        }
        let dropped: Vec<usize> =
            self.dims().iter().enumerate().filter(|(i, _)| !reduced.contains(i)).map(|(_, &d)| d).collect();
        summed.reshape(dropped)
    }

    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let count: usize = self.reduced_axes(axes)?.iter().map(|&a| self.dims()[a]).product();
        self.sum(axes, keepdim)?.scale(1.0 / count as f32)
    }

    /// Sum of every element, as a scalar (shape []).
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum_to(&Shape::new(vec![1; self.rank()]))?.reshape(Shape::scalar())
    }

    pub fn mean_all(&self) -> Result<Tensor> {
        self.sum_all()?.scale(1.0 / self.elem_count() as f32)
    }

    fn reduced_axes(&self, axes: &[isize]) -> Result<Vec<usize>> {
        let mut resolved = axes.iter().map(|&a| self.shape().axis(a)).collect::<Result<Vec<_>>>()?;
        resolved.sort_unstable();
        if resolved.windows(2).any(|w| w[0] == w[1]) {
            bail!("reduction axes {axes:?} repeat an axis of shape {}", self.shape());
        }
        Ok(resolved)
    }
}
