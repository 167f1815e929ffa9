//! CLIP's symmetric contrastive loss of an [n, n] logit matrix whose
//! diagonal holds the matching pairs (docs/model.md §8, `pretrain`): the mean
//! of the row-wise and the column-wise cross-entropy. CUDA:
//! `kernels/contrastive_loss.cu`, a block per row and per column for the
//! log-sum-exps, then one block sums in a fixed order.

use crate::autograd;
use crate::backend::cuda::common::{grid_for, int, launch, rows_config, single_block, BLOCK};
use crate::backend::cuda::CudaDevice;
use crate::backend::custom::{exact_inputs, CustomOp};
use crate::backend::Storage;
use crate::ops::{check_float_operands, grads_like, single};
use crate::{Shape, Tensor};
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

/// The forward: input the logits [n, n]; output the loss [1].
pub struct ContrastiveLoss {
    pub n: usize,
}

/// The backward: inputs the logits and the loss gradient [1]; output
/// d loss / d logits.
pub struct ContrastiveLossBackward {
    pub n: usize,
}

impl Tensor {
    /// CLIP's symmetric contrastive loss of a square logit matrix [n, n]
    /// (row i: image i against every text; the matching pairs on the
    /// diagonal): the mean of the image-to-text and text-to-image
    /// cross-entropies. Returns a scalar.
    pub fn contrastive_loss(&self) -> Result<Tensor> {
        check_float_operands("contrastive_loss", &[self])?;
        let &[n, m] = self.dims() else { bail!("contrastive_loss: logits must be [n, n], got shape {}", self.shape()) };
        if n != m || n == 0 {
            bail!("contrastive_loss: logits must be a non-empty square matrix, got shape {}", self.shape());
        }
        let loss = single(Storage::apply_custom(&ContrastiveLoss { n }, &[&self.storage()])?)?;
        let out = Tensor::op_output(loss, Shape::scalar(), &[self]);
        let logits = self.clone();
        autograd::record(&out, &[self], move |g, _| {
            grads_like(
                Storage::apply_custom(&ContrastiveLossBackward { n }, &[&logits.storage(), &g.storage()])?,
                &[&logits],
            )
        });
        Ok(out)
    }
}

impl CustomOp for ContrastiveLoss {
    fn name(&self) -> &'static str {
        "contrastive_loss"
    }

    fn cpu(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let [logits] = exact_inputs(self, inputs)?;
        Ok(vec![vec![cpu_forward(logits, self.n)]])
    }

    fn cuda(&self, dev: &CudaDevice, inputs: &[&CudaSlice<f32>]) -> Result<Vec<CudaSlice<f32>>> {
        let [logits] = exact_inputs(self, inputs)?;
        Ok(vec![cuda_forward(dev, logits, self.n)?])
    }
}

impl CustomOp for ContrastiveLossBackward {
    fn name(&self) -> &'static str {
        "contrastive_loss backward"
    }

    fn cpu(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let [logits, grad] = exact_inputs(self, inputs)?;
        Ok(vec![cpu_backward(logits, self.n, grad[0])])
    }

    fn cuda(&self, dev: &CudaDevice, inputs: &[&CudaSlice<f32>]) -> Result<Vec<CudaSlice<f32>>> {
        let [logits, grad] = exact_inputs(self, inputs)?;
        Ok(vec![cuda_backward(dev, logits, grad, self.n)?])
    }
}

/// Log-sum-exp of each row (`by_rows`) or each column of the row-major
/// [n, n] matrix `logits`, in f64.
fn log_sum_exps(logits: &[f32], n: usize, by_rows: bool) -> Vec<f64> {
    let at = |line: usize, k: usize| if by_rows { logits[line * n + k] } else { logits[k * n + line] } as f64;
    (0..n)
        .map(|line| {
            let max = (0..n).map(|k| at(line, k)).fold(f64::NEG_INFINITY, f64::max);
            max + (0..n).map(|k| (at(line, k) - max).exp()).sum::<f64>().ln()
        })
        .collect()
}

/// CLIP's symmetric contrastive loss (docs/model.md §8): image i's
/// caption is text i, so both cross-entropies target the diagonal:
/// `(sum_i (lse_row_i - l_ii) + sum_i (lse_col_i - l_ii)) / (2 n)`.
fn cpu_forward(logits: &[f32], n: usize) -> f32 {
    let rows = log_sum_exps(logits, n, true);
    let cols = log_sum_exps(logits, n, false);
    let total: f64 = (0..n).map(|i| rows[i] + cols[i] - 2.0 * logits[i * n + i] as f64).sum();
    (total / (2 * n) as f64) as f32
}

/// `scale * (softmax_row + softmax_col - 2 I) / (2 n)`.
fn cpu_backward(logits: &[f32], n: usize, scale: f32) -> Vec<f32> {
    let rows = log_sum_exps(logits, n, true);
    let cols = log_sum_exps(logits, n, false);
    let factor = scale as f64 / (2 * n) as f64;
    (0..n * n)
        .map(|idx| {
            let (i, j) = (idx / n, idx % n);
            let l = logits[idx] as f64;
            let diagonal = if i == j { 2.0 } else { 0.0 };
            (((l - rows[i]).exp() + (l - cols[j]).exp() - diagonal) * factor) as f32
        })
        .collect()
}

/// Row and column log-sum-exps of the [n, n] logits.
fn line_lses(dev: &CudaDevice, logits: &CudaSlice<f32>, n: usize) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    let mut row_lse = dev.alloc::<f32>(n)?;
    let mut col_lse = dev.alloc::<f32>(n)?;
    let n_i = int(n, "n")?;
    let kernel = dev.kernel("contrastive_loss", "contrastive_lse")?;
    // SAFETY: logits hold n * n f32 (checked by the op), row_lse and col_lse
    // n; one block per line (2n lines).
    unsafe { launch!(kernel, rows_config(2 * n, BLOCK, 0); logits, &mut row_lse, &mut col_lse, &n_i) }?;
    Ok((row_lse, col_lse))
}

fn cuda_forward(dev: &CudaDevice, logits: &CudaSlice<f32>, n: usize) -> Result<CudaSlice<f32>> {
    if n == 0 {
        return dev.alloc_zeros::<f32>(1);
    }
    let (row_lse, col_lse) = line_lses(dev, logits, n)?;
    let mut loss = dev.alloc::<f32>(1)?;
    let n_i = int(n, "n")?;
    let finalize = dev.kernel("contrastive_loss", "contrastive_forward_finalize")?;
    // SAFETY: logits n * n f32, the lse buffers n, loss one; a single block.
    unsafe { launch!(finalize, single_block(); logits, &row_lse, &col_lse, &mut loss, &n_i) }?;
    Ok(loss)
}

fn cuda_backward(dev: &CudaDevice, logits: &CudaSlice<f32>, grad: &CudaSlice<f32>, n: usize) -> Result<CudaSlice<f32>> {
    let mut dlogits = dev.alloc::<f32>(n * n)?;
    if n == 0 {
        return Ok(dlogits);
    }
    let (row_lse, col_lse) = line_lses(dev, logits, n)?;
    let n_i = int(n, "n")?;
    let kernel = dev.kernel("contrastive_loss", "contrastive_backward")?;
    // SAFETY: logits and dlogits n * n f32, lse buffers n, grad one element;
    // a thread per element, grid-stride.
    unsafe { launch!(kernel, grid_for(n * n, BLOCK); logits, &row_lse, &col_lse, grad, &mut dlogits, &n_i) }?;
    Ok(dlogits)
}
