//! Optimizer updates in place on f32 buffers (`kernels/optimizer.cu`).

use super::device::{grid_for, int, launch, CudaDevice, BLOCK};
use crate::backend::{AdamWStep, SgdStep};
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

fn check_lengths(what: &str, p: usize, others: &[usize]) -> Result<()> {
    if others.iter().any(|&l| l != p) {
        bail!("{what}: parameter of {p} elements with state/gradient of {others:?} elements");
    }
    Ok(())
}

/// PyTorch's SGD with momentum and (coupled) weight decay.
pub fn sgd(dev: &CudaDevice, p: &mut CudaSlice<f32>, grad: &CudaSlice<f32>, m: &mut CudaSlice<f32>, step: &SgdStep) -> Result<()> {
    check_lengths("sgd_step", p.len(), &[grad.len(), m.len()])?;
    if p.is_empty() {
        return Ok(());
    }
    let n = int(p.len(), "elements")?;
    let kernel = dev.kernel("optimizer", "sgd_step")?;
    let cfg = grid_for(p.len(), BLOCK);
    // SAFETY: p, grad and m hold n f32 each (checked above) and p and m are
    // distinct, uniquely owned buffers; each thread updates its own element.
    unsafe { launch!(kernel, cfg; p, grad, m, &n, &step.lr, &step.momentum, &step.weight_decay) }?;
    Ok(())
}

/// PyTorch's AdamW (decoupled weight decay, bias-corrected moments).
pub fn adamw(dev: &CudaDevice, p: &mut CudaSlice<f32>, grad: &CudaSlice<f32>, m: &mut CudaSlice<f32>, v: &mut CudaSlice<f32>, step: &AdamWStep) -> Result<()> {
    check_lengths("adamw_step", p.len(), &[grad.len(), m.len(), v.len()])?;
    if p.is_empty() {
        return Ok(());
    }
    let n = int(p.len(), "elements")?;
    let bias_correction1 = 1.0 - step.beta1.powi(step.step as i32);
    let bias_correction2 = 1.0 - step.beta2.powi(step.step as i32);
    let kernel = dev.kernel("optimizer", "adamw_step")?;
    let cfg = grid_for(p.len(), BLOCK);
    // SAFETY: p, grad, m and v hold n f32 each (checked above); p, m and v
    // are distinct, uniquely owned buffers; each thread updates its own element.
    unsafe {
        launch!(kernel, cfg; p, grad, m, v, &n, &step.lr, &step.beta1, &step.beta2, &step.eps, &step.weight_decay, &bias_correction1, &bias_correction2)
    }?;
    Ok(())
}
