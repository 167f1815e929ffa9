//! Matrix products: `matmul` (batched, broadcasting a 2-D operand over the
//! other's batch) and `linear` (x W^T + b, PyTorch's weight layout, the bias
//! fused into the product: one backend call, a cuBLASLt epilogue on CUDA).

use super::{check_float_operands, grad_if};
use crate::autograd;
use crate::backend::GemmSpec;
use crate::tensor::Tensor;
use crate::Shape;
use anyhow::{bail, Result};

impl Tensor {
    /// `self` [..., m, k] @ `rhs` [..., k, n]. Batch dims must match, or one
    /// side must be 2-D (it is reused for every batch entry).
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        gemm(self, rhs, None, false, false)
    }

    /// `self` [..., in] @ `weight`^T + `bias`, with weight [out, in] and bias [out].
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        if weight.rank() != 2 {
            bail!("linear: weight must be 2-D [out, in], got shape {}", weight.shape());
        }
        if let Some(b) = bias.filter(|b| b.dims() != [weight.dims()[0]]) {
            bail!("linear: bias shape {} does not match weight shape {}", b.shape(), weight.shape());
        }
        gemm(self, weight, bias, false, true)
    }

    /// [`Tensor::linear`] of a frozen layer that also keeps `weight_t` =
    /// W^T [in, out]: the forward product reads W^T as stored and the input
    /// gradient `g W` reads W as stored, so neither product transposes an
    /// operand (the CPU GEMM packs a transposed right operand at about half
    /// its rate, docs/benchmarks/clip-cpu.md). The weights get no gradient.
    pub fn linear_frozen(&self, weight: &Tensor, weight_t: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (&[out_w, in_w], &[in_t, out_t]) = (weight.dims(), weight_t.dims()) else {
            bail!("linear_frozen: weights must be 2-D, got shapes {} and {}", weight.shape(), weight_t.shape());
        };
        if (out_w, in_w) != (out_t, in_t) || weight.requires_grad() || weight_t.requires_grad() {
            bail!("linear_frozen: {} must be the transpose of {}, both frozen", weight_t.shape(), weight.shape());
        }
        if let Some(b) = bias.filter(|b| b.dims() != [out_w] || b.requires_grad()) {
            bail!(
                "linear_frozen: bias shape {} does not match weight shape {} (or it is trainable)",
                b.shape(),
                weight.shape()
            );
        }
        let out = {
            let _no_grad = autograd::no_grad();
            gemm(self, weight_t, bias, false, false)?
        };
        if !(autograd::is_grad_enabled() && self.requires_grad()) {
            return Ok(out);
        }
        let out = out.with_shape(out.shape().clone(), true);
        let weight = weight.clone();
        autograd::record(&out, &[self], move |g, _| Ok(vec![Some(gemm(g, &weight, None, false, false)?)]));
        Ok(out)
    }
}

/// `op(a) @ op(b) (+ bias)` where `op` transposes the last two dims when
/// asked; `bias` has one element per output column.
fn gemm(a: &Tensor, b: &Tensor, bias: Option<&Tensor>, trans_a: bool, trans_b: bool) -> Result<Tensor> {
    let mut operands = vec![a, b];
    operands.extend(bias);
    check_float_operands("matmul", &operands)?;
    let shape_error = || {
        anyhow::anyhow!(
            "matmul: shapes {} and {} do not multiply{}",
            a.shape(),
            b.shape(),
            if trans_b { " (second operand transposed)" } else { "" }
        )
    };
    if a.rank() < 2 || b.rank() < 2 {
        return Err(shape_error());
    }
    let last_two = |t: &Tensor, trans: bool| {
        let d = t.dims();
        let (r, c) = (d[d.len() - 2], d[d.len() - 1]);
        if trans {
            (c, r)
        } else {
            (r, c)
        }
    };
    let ((m, k), (k2, n)) = (last_two(a, trans_a), last_two(b, trans_b));
    if k != k2 {
        return Err(shape_error());
    }
    let a_batch = &a.dims()[..a.rank() - 2];
    let b_batch = &b.dims()[..b.rank() - 2];
    // A shared 2-D right operand: fold a's batch into its rows, one big GEMM.
    if b_batch.is_empty() && !a_batch.is_empty() && !trans_a {
        let rows: usize = a_batch.iter().product::<usize>() * m;
        let flat = gemm(&a.reshape([rows, k])?, b, bias, false, trans_b)?;
        let mut dims = a_batch.to_vec();
        dims.extend([m, n]);
        return flat.reshape(dims);
    }
    let batch_dims = if a_batch == b_batch || b_batch.is_empty() {
        a_batch
    } else if a_batch.is_empty() {
        b_batch
    } else {
        return Err(shape_error());
    };
    let spec = GemmSpec {
        batch: batch_dims.iter().product(),
        m,
        n,
        k,
        trans_a,
        trans_b,
        a_batch_stride: if a_batch.is_empty() { 0 } else { m * k },
        b_batch_stride: if b_batch.is_empty() { 0 } else { k * n },
    };
    let bias_storage = bias.map(|t| t.storage());
    let storage = a.storage().gemm(&b.storage(), bias_storage.as_deref(), &spec)?;
    drop(bias_storage);
    let mut dims = batch_dims.to_vec();
    dims.extend([m, n]);
    let out = Tensor::op_output(storage, Shape::new(dims), &operands);
    let (lhs, rhs, bias_shape) = (a.clone(), b.clone(), bias.map(|t| t.shape().clone()));
    autograd::record(&out, &operands, move |g, needs| {
        let (a, b) = (&lhs, &rhs);
        // C = op(A) op(B) + bias: dA and dB are GEMMs of g with the other
        // operand, summed over the batch where that operand was shared; the
        // bias gets g summed over every row.
        let da = grad_if(needs[0], || {
            if trans_a { gemm(b, g, None, trans_b, true) } else { gemm(g, b, None, false, !trans_b) }?.sum_to(a.shape())
        })?;
        let db = grad_if(needs[1], || {
            if trans_b { gemm(g, a, None, true, trans_a) } else { gemm(a, g, None, !trans_a, false) }?.sum_to(b.shape())
        })?;
        let mut grads = vec![da, db];
        if let Some(shape) = &bias_shape {
            grads.push(grad_if(needs[2], || g.sum_to(shape))?);
        }
        Ok(grads)
    });
    Ok(out)
}
