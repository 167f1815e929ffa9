//! Masked binary cross-entropy with logits (docs/model.md §5): labels are +1
//! (positive), -1 (negative) or 0 (unknown: contributes nothing); the loss is
//! the mean over known entries, exactly 0 with a zero gradient when no entry
//! is known. Forward and backward make one pass over the logits and labels:
//! the forward also saves the unscaled gradient `sigmoid(x) - t` (0 where
//! unknown) and the count of known entries, and the backward scales the
//! saved gradient by `grad / count`. CUDA: `kernels/masked_bce.cu`, one
//! forward kernel whose last block sums the per-block partials in block
//! order (an integer ticket picks it), so the loss is bit-identical across
//! runs.

use crate::autograd;
use crate::backend::cuda::common::{int, launch, max_grid, BLOCK};
use crate::backend::cuda::CudaDevice;
use crate::backend::custom::{exact_inputs, CustomOp};
use crate::backend::Storage;
use crate::ops::{check_float_operands, grads_like, single};
use crate::{DType, Shape, Tensor};
use anyhow::{bail, Result};
use cudarc::driver::{CudaSlice, LaunchConfig};

/// The forward: inputs logits and labels (same shape); outputs the loss [1]
/// and the saved state [n + 1]: `sigmoid(x) - t` per entry (0 where the
/// label is unknown), then the count of known labels.
pub struct MaskedBce;

/// The backward: inputs the forward's saved state and the loss gradient
/// [1]; output d loss / d logits.
pub struct MaskedBceBackward;

/// Most entries: the count is stored as an f32, exact up to 2^24.
const MAX_ENTRIES: usize = 1 << 24;

impl Tensor {
    /// Mean binary cross-entropy of these logits over the entries whose
    /// label is +1 or -1; label 0 (unknown) entries are ignored. Returns a
    /// scalar; 0 with a zero gradient when no label is known (never NaN).
    /// Computed in f32 (bf16 logits are widened on the tape); the loss comes
    /// back in the logits' dtype, like every op on bf16 storage.
    pub fn masked_bce_with_logits(&self, labels: &Tensor) -> Result<Tensor> {
        check_float_operands("masked_bce_with_logits", &[self])?;
        if labels.shape() != self.shape() {
            bail!("masked_bce_with_logits: logits shape {} and labels shape {} differ", self.shape(), labels.shape());
        }
        if labels.requires_grad() {
            bail!("masked_bce_with_logits: labels must not require grad");
        }
        if self.elem_count() > MAX_ENTRIES {
            bail!(
                "masked_bce_with_logits: {} entries, more than the {MAX_ENTRIES} it counts exactly",
                self.elem_count()
            );
        }
        let logits = self.to_dtype(DType::F32)?;
        let labels = labels.to_dtype(DType::F32)?;
        let [loss, saved] = Storage::apply_custom(&MaskedBce, &[&logits.storage(), &labels.storage()])?
            .try_into()
            .map_err(|_| anyhow::anyhow!("masked_bce returns the loss and its saved state"))?;
        let out = Tensor::op_output(loss, Shape::scalar(), &[&logits]);
        let inputs = logits.clone();
        autograd::record(&out, &[&logits], move |g, _| {
            grads_like(vec![single(Storage::apply_custom(&MaskedBceBackward, &[&saved, &g.storage()])?)?], &[&inputs])
        });
        out.to_dtype(self.dtype())
    }
}

impl CustomOp for MaskedBce {
    fn name(&self) -> &'static str {
        "masked_bce"
    }

    fn cpu(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let [logits, labels] = exact_inputs(self, inputs)?;
        let (loss, saved) = cpu_forward(logits, labels);
        Ok(vec![vec![loss], saved])
    }

    fn cuda(&self, dev: &CudaDevice, inputs: &[&CudaSlice<f32>]) -> Result<Vec<CudaSlice<f32>>> {
        let [logits, labels] = exact_inputs(self, inputs)?;
        let (loss, saved) = cuda_forward(dev, logits, labels)?;
        Ok(vec![loss, saved])
    }
}

impl CustomOp for MaskedBceBackward {
    fn name(&self) -> &'static str {
        "masked_bce backward"
    }

    fn cpu(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let [saved, grad] = exact_inputs(self, inputs)?;
        Ok(vec![cpu_backward(saved, grad[0])?])
    }

    fn cuda(&self, dev: &CudaDevice, inputs: &[&CudaSlice<f32>]) -> Result<Vec<CudaSlice<f32>>> {
        let [saved, grad] = exact_inputs(self, inputs)?;
        Ok(vec![cuda_backward(dev, saved, grad)?])
    }
}

/// Stable `-[t log s(x) + (1 - t) log(1 - s(x))] = max(x, 0) - x t + log1p(e^-|x|)`.
fn bce(x: f32, target: f32) -> f64 {
    let x = x as f64;
    x.max(0.0) - x * target as f64 + (-x.abs()).exp().ln_1p()
}

fn target(label: f32) -> f32 {
    if label > 0.0 {
        1.0
    } else {
        0.0
    }
}

/// Returns (loss, saved): `sigmoid(x) - t` per entry (0 where unknown),
/// then the count of known labels.
fn cpu_forward(logits: &[f32], labels: &[f32]) -> (f32, Vec<f32>) {
    let mut sum = 0.0f64;
    let mut known = 0usize;
    let mut saved: Vec<f32> = logits
        .iter()
        .zip(labels)
        .map(|(&x, &y)| {
            if y == 0.0 {
                return 0.0;
            }
            sum += bce(x, target(y));
            known += 1;
            1.0 / (1.0 + (-x).exp()) - target(y)
        })
        .collect();
    saved.push(known as f32);
    let loss = if known == 0 { 0.0 } else { (sum / known as f64) as f32 };
    (loss, saved)
}

/// `scale * saved[i] / count` (0 when no label is known).
fn cpu_backward(saved: &[f32], scale: f32) -> Result<Vec<f32>> {
    let Some((&known, residuals)) = saved.split_last() else { bail!("masked_bce backward: empty saved state") };
    let factor = if known > 0.0 { scale / known } else { 0.0 };
    Ok(residuals.iter().map(|&r| r * factor).collect())
}

/// Most partial sums of the masked BCE forward (its header's G).
const BCE_MAX_PARTIALS: usize = 1024;
/// Grid cap of the masked BCE backward.
const BCE_MAX_BACKWARD_GRID: usize = 65535;

fn bce_grid(n: usize, cap: usize) -> LaunchConfig {
    let blocks = n.div_ceil(4).div_ceil(BLOCK as usize).clamp(1, cap.min(max_grid())) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// Returns (loss [1], saved [n + 1]).
fn cuda_forward(
    dev: &CudaDevice,
    logits: &CudaSlice<f32>,
    labels: &CudaSlice<f32>,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    let n = int(logits.len(), "logits")?;
    let cfg = bce_grid(logits.len(), BCE_MAX_PARTIALS);
    let partials = cfg.grid_dim.0 as usize;
    let mut partial_loss = dev.alloc::<f32>(partials)?;
    let mut partial_count = dev.alloc::<u32>(partials)?;
    let mut ticket = dev.alloc_zeros::<u32>(1)?;
    let mut loss = dev.alloc::<f32>(1)?;
    let mut saved = dev.alloc::<f32>(logits.len() + 1)?;
    let forward = dev.kernel("masked_bce", "masked_bce_forward")?;
    // SAFETY: logits and labels hold n f32 (same shape, checked by the op),
    // saved n + 1, loss one; each block writes its own partial_* slot, and
    // the one block that draws the last ticket reads them all and writes
    // loss and saved[n].
    unsafe {
        launch!(forward, cfg; logits, labels, &mut saved, &mut partial_loss, &mut partial_count, &mut ticket, &mut loss, &n)
    }?;
    Ok((loss, saved))
}

/// d loss / d logits from the forward's saved state, scaled by the
/// one-element `grad` (a device scalar).
fn cuda_backward(dev: &CudaDevice, saved: &CudaSlice<f32>, grad: &CudaSlice<f32>) -> Result<CudaSlice<f32>> {
    let len = saved.len().checked_sub(1).ok_or_else(|| anyhow::anyhow!("masked_bce backward: empty saved state"))?;
    let mut dlogits = dev.alloc::<f32>(len)?;
    if len == 0 {
        return Ok(dlogits);
    }
    let n = int(len, "logits")?;
    let backward = dev.kernel("masked_bce", "masked_bce_backward")?;
    // SAFETY: saved holds n + 1 f32, dlogits n, grad one; grid-stride over n.
    unsafe { launch!(backward, bce_grid(len, BCE_MAX_BACKWARD_GRID); saved, grad, &mut dlogits, &n) }?;
    Ok(dlogits)
}
