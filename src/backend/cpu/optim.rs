//! Optimizer updates on f32 views (the caller writes them back in the
//! storage dtype).

use crate::backend::{AdamWStep, SgdStep};

/// PyTorch's SGD: g' = g + wd p; m = momentum m + g'; p -= lr m.
pub fn sgd(p: &mut [f32], grad: &[f32], m: &mut [f32], s: &SgdStep, weight_decay: f32) {
    for i in 0..p.len() {
        let g = grad[i] + weight_decay * p[i];
        m[i] = s.momentum * m[i] + g;
        p[i] -= s.lr * m[i];
    }
}

/// PyTorch's AdamW: decoupled decay p *= 1 - lr wd, then the Adam step with
/// bias-corrected moments.
pub fn adamw(p: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamWStep, weight_decay: f32) {
    let bc1 = 1.0 - s.beta1.powi(s.step as i32);
    let bc2 = 1.0 - s.beta2.powi(s.step as i32);
    for i in 0..p.len() {
        let g = grad[i];
        p[i] *= 1.0 - s.lr * weight_decay;
        m[i] = s.beta1 * m[i] + (1.0 - s.beta1) * g;
        v[i] = s.beta2 * v[i] + (1.0 - s.beta2) * g * g;
        let m_hat = m[i] / bc1;
        let v_hat = v[i] / bc2;
        p[i] -= s.lr * m_hat / (v_hat.sqrt() + s.eps);
    }
}
