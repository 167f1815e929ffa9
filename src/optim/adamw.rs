//! AdamW with decoupled weight decay, as `torch.optim.AdamW`.

use super::{check_groups, Optimizer, ParamGroup, StateBuffers};
use crate::backend::AdamWStep;
use crate::tensor::{DType, Tensor};
use anyhow::{Context, Result};
use std::collections::HashMap;

#[derive(Debug)]
pub struct AdamW {
    groups: Vec<ParamGroup>,
    lr: f32,
    betas: (f32, f32),
    eps: f32,
    weight_decay: f32,
    step_count: u64,
    first_moments: StateBuffers,
    second_moments: StateBuffers,
}

impl AdamW {
    pub fn new(groups: Vec<ParamGroup>, lr: f32, betas: (f32, f32), eps: f32, weight_decay: f32) -> Result<Self> {
        check_groups(&groups)?;
        Ok(AdamW {
            groups,
            lr,
            betas,
            eps,
            weight_decay,
            step_count: 0,
            first_moments: StateBuffers::default(),
            second_moments: StateBuffers::default(),
        })
    }
}

impl Optimizer for AdamW {
    fn step(&mut self) -> Result<()> {
        self.step_count += 1;
        for group in &self.groups {
            let step = AdamWStep {
                lr: self.lr,
                beta1: self.betas.0,
                beta2: self.betas.1,
                eps: self.eps,
                weight_decay: group.weight_decay.unwrap_or(self.weight_decay),
                step: self.step_count,
            };
            for p in &group.params {
                let Some(grad) = p.grad() else { continue };
                let m = self.first_moments.get(p)?;
                let v = self.second_moments.get(p)?;
                p.storage_mut().adamw_step(&grad.storage(), &mut m.storage_mut(), &mut v.storage_mut(), &step)?;
            }
        }
        Ok(())
    }

    fn lr(&self) -> f32 {
        self.lr
    }

    fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }

    fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut state = self.first_moments.export(&self.groups, "m");
        state.extend(self.second_moments.export(&self.groups, "v"));
        let device = self.groups.iter().flat_map(|g| &g.params).next().map(|p| p.device().clone());
        if let Some(device) = device {
            // f32 holds step counts exactly up to 2^24.
            state.push(("step".to_string(), Tensor::full(self.step_count as f32, [1], DType::F32, &device)?));
        }
        Ok(state)
    }

    fn load_state_tensors(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.first_moments.import(&self.groups, "m", state)?;
        self.second_moments.import(&self.groups, "v", state)?;
        self.step_count = match state.get("step") {
            Some(step) => step.scalar().context("optimizer state `step`")? as u64,
            None => 0,
        };
        Ok(())
    }
}
