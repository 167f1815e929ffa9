//! Masked binary cross-entropy with logits (docs/model.md §5): labels are +1
//! (positive), -1 (negative) or 0 (unknown: contributes nothing); the loss is
//! the mean over known entries, exactly 0 with a zero gradient when no entry
//! is known. CUDA: `kernels/masked_bce.cu`, reduced in a fixed two-stage
//! order, so the loss is bit-identical across runs.

use crate::autograd;
use crate::backend::cuda::common::{int, launch, max_grid, single_block, BLOCK};
use crate::backend::cuda::CudaDevice;
use crate::backend::custom::{exact_inputs, CustomOp};
use crate::backend::Storage;
use crate::ops::{check_float_operands, grads_like, single};
use crate::{Shape, Tensor};
use anyhow::{bail, Result};
use cudarc::driver::{CudaSlice, LaunchConfig};

/// The forward: inputs logits and labels (same shape); output the loss [1].
pub struct MaskedBce;

/// The backward: inputs logits, labels and the loss gradient [1]; output
/// d loss / d logits.
pub struct MaskedBceBackward;

impl Tensor {
    /// Mean binary cross-entropy of these logits over the entries whose
    /// label is +1 or -1; label 0 (unknown) entries are ignored. Returns a
    /// scalar; 0 with a zero gradient when no label is known (never NaN).
    pub fn masked_bce_with_logits(&self, labels: &Tensor) -> Result<Tensor> {
        check_float_operands("masked_bce_with_logits", &[self])?;
        if labels.shape() != self.shape() {
            bail!("masked_bce_with_logits: logits shape {} and labels shape {} differ", self.shape(), labels.shape());
        }
        if labels.requires_grad() {
            bail!("masked_bce_with_logits: labels must not require grad");
        }
        let labels = labels.to_dtype(self.dtype())?;
        let loss = single(Storage::apply_custom(&MaskedBce, &[&self.storage(), &labels.storage()])?)?;
        let out = Tensor::op_output(loss, Shape::scalar(), &[self]);
        let logits = self.clone();
        autograd::record(&out, &[self], move |g, _| {
            grads_like(
                Storage::apply_custom(&MaskedBceBackward, &[&logits.storage(), &labels.storage(), &g.storage()])?,
                &[&logits],
            )
        });
        Ok(out)
    }
}

impl CustomOp for MaskedBce {
    fn name(&self) -> &'static str {
        "masked_bce"
    }

    fn cpu(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let [logits, labels] = exact_inputs(self, inputs)?;
        Ok(vec![vec![cpu_forward(logits, labels)]])
    }

    fn cuda(&self, dev: &CudaDevice, inputs: &[&CudaSlice<f32>]) -> Result<Vec<CudaSlice<f32>>> {
        let [logits, labels] = exact_inputs(self, inputs)?;
        Ok(vec![cuda_forward(dev, logits, labels)?.0])
    }
}

impl CustomOp for MaskedBceBackward {
    fn name(&self) -> &'static str {
        "masked_bce backward"
    }

    fn cpu(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let [logits, labels, grad] = exact_inputs(self, inputs)?;
        Ok(vec![cpu_backward(logits, labels, grad[0])])
    }

    fn cuda(&self, dev: &CudaDevice, inputs: &[&CudaSlice<f32>]) -> Result<Vec<CudaSlice<f32>>> {
        let [logits, labels, grad] = exact_inputs(self, inputs)?;
        Ok(vec![cuda_backward(dev, logits, labels, grad)?])
    }
}

/// Stable `-[t log s(x) + (1 - t) log(1 - s(x))] = max(x, 0) - x t + log1p(e^-|x|)`.
fn bce(x: f32, target: f32) -> f64 {
    let x = x as f64;
    x.max(0.0) - x * target as f64 + (-x.abs()).exp().ln_1p()
}

fn known_count(labels: &[f32]) -> usize {
    labels.iter().filter(|&&y| y != 0.0).count()
}

fn target(label: f32) -> f32 {
    if label > 0.0 {
        1.0
    } else {
        0.0
    }
}

fn cpu_forward(logits: &[f32], labels: &[f32]) -> f32 {
    let known = known_count(labels);
    if known == 0 {
        return 0.0;
    }
    let sum: f64 = logits.iter().zip(labels).filter(|(_, &y)| y != 0.0).map(|(&x, &y)| bce(x, target(y))).sum();
    (sum / known as f64) as f32
}

/// `scale * (sigmoid(x) - t) / known` on known entries, 0 elsewhere.
fn cpu_backward(logits: &[f32], labels: &[f32], scale: f32) -> Vec<f32> {
    let known = known_count(labels);
    if known == 0 {
        return vec![0.0; logits.len()];
    }
    let factor = scale / known as f32;
    logits
        .iter()
        .zip(labels)
        .map(|(&x, &y)| if y == 0.0 { 0.0 } else { (1.0 / (1.0 + (-x).exp()) - target(y)) * factor })
        .collect()
}

/// Most partial sums of the masked BCE forward (its header's G).
const BCE_MAX_PARTIALS: usize = 1024;
/// Grid cap of the masked BCE backward.
const BCE_MAX_BACKWARD_GRID: usize = 65535;

fn bce_grid(n: usize, cap: usize) -> u32 {
    n.div_ceil(4).div_ceil(BLOCK as usize).clamp(1, cap.min(max_grid())) as u32
}

/// Returns (loss [1], count [1] of known labels).
fn cuda_forward(
    dev: &CudaDevice,
    logits: &CudaSlice<f32>,
    labels: &CudaSlice<f32>,
) -> Result<(CudaSlice<f32>, CudaSlice<u32>)> {
    let n = int(logits.len(), "logits")?;
    let partials = bce_grid(logits.len(), BCE_MAX_PARTIALS);
    let mut partial_loss = dev.alloc::<f32>(partials as usize)?;
    let mut partial_count = dev.alloc::<u32>(partials as usize)?;
    let forward = dev.kernel("masked_bce", "masked_bce_forward_partials")?;
    let cfg = LaunchConfig { grid_dim: (partials, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: logits and labels hold n f32 (same shape, checked by the op);
    // each of the `partials` blocks writes its own partial_* slot.
    unsafe { launch!(forward, cfg; logits, labels, &mut partial_loss, &mut partial_count, &n) }?;
    let mut loss = dev.alloc::<f32>(1)?;
    let mut count = dev.alloc::<u32>(1)?;
    let num_partials = partials as i32;
    let finalize = dev.kernel("masked_bce", "masked_bce_forward_finalize")?;
    // SAFETY: the partial buffers hold num_partials values; loss and count one.
    unsafe { launch!(finalize, single_block(); &partial_loss, &partial_count, &num_partials, &mut loss, &mut count) }?;
    Ok((loss, count))
}

/// d loss / d logits scaled by the one-element `grad` (a device scalar).
fn cuda_backward(
    dev: &CudaDevice,
    logits: &CudaSlice<f32>,
    labels: &CudaSlice<f32>,
    grad: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    // The known-label count comes from the forward's reduction, recomputed
    // here (cheap next to the model) so the backward needs no saved state.
    let (_, count) = cuda_forward(dev, logits, labels)?;
    let mut dlogits = dev.alloc::<f32>(logits.len())?;
    if logits.is_empty() {
        return Ok(dlogits);
    }
    let n = int(logits.len(), "logits")?;
    let backward = dev.kernel("masked_bce", "masked_bce_backward")?;
    let cfg = LaunchConfig {
        grid_dim: (bce_grid(logits.len(), BCE_MAX_BACKWARD_GRID), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: logits, labels and dlogits hold n f32, grad and count one
    // element each; grid-stride over n.
    unsafe { launch!(backward, cfg; logits, labels, grad, &count, &mut dlogits, &n) }?;
    Ok(dlogits)
}
