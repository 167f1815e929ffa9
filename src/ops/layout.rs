//! Reshape (free), permute, transpose, narrow and concat (dense copies).

use super::grad_if;
use crate::autograd;
use crate::backend::Storage;
use crate::tensor::Tensor;
use crate::Shape;
use anyhow::{bail, Result};

impl Tensor {
    /// Same data, new dims (same element count); no copy.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.elem_count() != self.elem_count() {
            bail!("reshape: cannot view shape {} ({} elements) as {shape}", self.shape(), self.elem_count());
        }
        let requires_grad = autograd::is_grad_enabled() && self.requires_grad();
        let out = self.with_shape(shape, requires_grad);
        let from = self.shape().clone();
        autograd::record(&out, &[self], move |g, _| Ok(vec![Some(g.reshape(from)?)]));
        Ok(out)
    }

    /// Output dim i is input dim `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let mut sorted = perm.to_vec();
        sorted.sort_unstable();
        if sorted != (0..self.rank()).collect::<Vec<_>>() {
            bail!("permute: {perm:?} is not a permutation of the dims of shape {}", self.shape());
        }
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(self.clone());
        }
        let dims: Vec<usize> = perm.iter().map(|&p| self.dims()[p]).collect();
        let storage = self.storage().permute(self.shape(), perm)?;
        let out = Tensor::op_output(storage, Shape::new(dims), &[self]);
        let mut inverse = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        autograd::record(&out, &[self], move |g, _| Ok(vec![Some(g.permute(&inverse)?)]));
        Ok(out)
    }

    /// Swaps two dims (negative counts from the end).
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let (a, b) = (self.shape().axis(a)?, self.shape().axis(b)?);
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Elements `start..start + len` along `dim`.
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        let dim = self.shape().axis(dim)?;
        let size = self.dims()[dim];
        if start + len > size {
            bail!("narrow: range {start}..{} is out of bounds for dim {dim} of shape {}", start + len, self.shape());
        }
        if start == 0 && len == size {
            return Ok(self.clone());
        }
        let mut dims = self.dims().to_vec();
        dims[dim] = len;
        let storage = self.storage().narrow(self.shape(), dim, start, len)?;
        let out = Tensor::op_output(storage, Shape::new(dims), &[self]);
        let in_dims = self.dims().to_vec();
        autograd::record(&out, &[self], move |g, _| {
            // Zero-pad the gradient back to the input's extent.
            let zeros = |n: usize| -> Result<Tensor> {
                let mut dims = in_dims.clone();
                dims[dim] = n;
                Tensor::zeros(dims, g.dtype(), g.device())
            };
            let mut parts = Vec::new();
            if start > 0 {
                parts.push(zeros(start)?);
            }
            parts.push(g.clone());
            if size > start + len {
                parts.push(zeros(size - start - len)?);
            }
            let refs: Vec<&Tensor> = parts.iter().collect();
            Ok(vec![Some(Tensor::concat(&refs, dim as isize)?)])
        });
        Ok(out)
    }

    /// Joins tensors along `dim`; all other dims must agree.
    pub fn concat(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
        let Some(first) = tensors.first() else { bail!("concat needs at least one tensor") };
        let dim = first.shape().axis(dim)?;
        for t in tensors {
            let compatible = t.rank() == first.rank()
                && t.dims().iter().zip(first.dims()).enumerate().all(|(i, (a, b))| i == dim || a == b);
            if !compatible || t.dtype() != first.dtype() {
                bail!(
                    "concat along dim {dim}: shape {} ({}) does not fit shape {} ({})",
                    t.shape(),
                    t.dtype(),
                    first.shape(),
                    first.dtype()
                );
            }
        }
        let sizes: Vec<usize> = tensors.iter().map(|t| t.dims()[dim]).collect();
        let mut dims = first.dims().to_vec();
        dims[dim] = sizes.iter().sum();
        let guards: Vec<_> = tensors.iter().map(|t| t.storage()).collect();
        let parts: Vec<&Storage> = guards.iter().map(|g| &**g).collect();
        let shapes: Vec<&Shape> = tensors.iter().map(|t| t.shape()).collect();
        let storage = Storage::concat(&parts, &shapes, dim)?;
        drop(guards);
        let out = Tensor::op_output(storage, Shape::new(dims), tensors);
        autograd::record(&out, tensors, move |g, needs| {
            let mut start = 0;
            let mut grads = Vec::with_capacity(sizes.len());
            for (&len, &needed) in sizes.iter().zip(needs) {
                grads.push(grad_if(needed, || g.narrow(dim as isize, start, len))?);
                start += len;
            }
            Ok(grads)
        });
        Ok(out)
    }
}
