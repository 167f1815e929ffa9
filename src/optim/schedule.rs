//! Cosine learning-rate decay after a warm-up, per optimizer step.

use anyhow::{anyhow, Result};
use std::f64::consts::PI;

/// The optimizer steps of `epochs` epochs (given by `flag`) of
/// `steps_per_epoch` steps; an error naming the flag when the count does not
/// fit in a step counter.
pub fn epoch_steps(flag: &str, epochs: usize, steps_per_epoch: usize) -> Result<usize> {
    epochs.checked_mul(steps_per_epoch).ok_or_else(|| {
        anyhow!("{flag} {epochs}: {epochs} epochs of {steps_per_epoch} steps are more steps than a run can count")
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Warmup {
    /// A fixed learning rate during warm-up (DualCoOp's one epoch at 1e-5).
    Constant(f32),
    /// Linear ramp from base_lr / warmup_steps up to base_lr.
    Linear,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineSchedule {
    pub base_lr: f32,
    pub min_lr: f32,
    pub warmup: Warmup,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl CosineSchedule {
    /// The learning rate for 0-based `step`: warm-up for `warmup_steps`, then
    /// a half cosine from `base_lr` to `min_lr` at `total_steps`.
    pub fn lr(&self, step: usize) -> f32 {
        if step < self.warmup_steps {
            return match self.warmup {
                Warmup::Constant(lr) => lr,
                Warmup::Linear => self.base_lr * (step + 1) as f32 / self.warmup_steps as f32,
            };
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (PI * progress).cos());
        (self.min_lr as f64 + (self.base_lr - self.min_lr) as f64 * cosine) as f32
    }
}
