//! Masked binary cross-entropy with logits (DESIGN.md §2.4). Labels are +1
//! (positive), -1 (negative) or 0 (unknown: contributes nothing). The loss is
//! the mean over known entries, and exactly 0 with a zero gradient when no
//! entry is known.

/// Stable `-[t log s(x) + (1 - t) log(1 - s(x))] = max(x, 0) - x t + log1p(e^-|x|)`.
fn bce(x: f32, target: f32) -> f64 {
    let x = x as f64;
    x.max(0.0) - x * target as f64 + (-x.abs()).exp().ln_1p()
}

fn known_count(labels: &[f32]) -> usize {
    labels.iter().filter(|&&y| y != 0.0).count()
}

fn target(label: f32) -> f32 {
    if label > 0.0 { 1.0 } else { 0.0 }
}

pub fn masked_bce(logits: &[f32], labels: &[f32]) -> f32 {
    let known = known_count(labels);
    if known == 0 {
        return 0.0;
    }
    let sum: f64 = logits
        .iter()
        .zip(labels)
        .filter(|(_, &y)| y != 0.0)
        .map(|(&x, &y)| bce(x, target(y)))
        .sum();
    (sum / known as f64) as f32
}

/// `scale * (sigmoid(x) - t) / known` on known entries, 0 elsewhere.
pub fn masked_bce_backward(logits: &[f32], labels: &[f32], scale: f32) -> Vec<f32> {
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
