//! Losses. Masked binary cross-entropy with logits (DESIGN.md §2.4): labels are +1
//! (positive), -1 (negative) or 0 (unknown: contributes nothing). The loss is
//! the mean over known entries, and exactly 0 with a zero gradient when no
//! entry is known. CLIP's symmetric contrastive loss, for `pretrain`.

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

pub fn masked_bce(logits: &[f32], labels: &[f32]) -> f32 {
    let known = known_count(labels);
    if known == 0 {
        return 0.0;
    }
    let sum: f64 = logits.iter().zip(labels).filter(|(_, &y)| y != 0.0).map(|(&x, &y)| bce(x, target(y))).sum();
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

/// CLIP's symmetric contrastive loss (DESIGN.md: `pretrain`): image i's
/// caption is text i, so both cross-entropies target the diagonal:
/// `(sum_i (lse_row_i - l_ii) + sum_i (lse_col_i - l_ii)) / (2 n)`.
pub fn contrastive(logits: &[f32], n: usize) -> f32 {
    let rows = log_sum_exps(logits, n, true);
    let cols = log_sum_exps(logits, n, false);
    let total: f64 = (0..n).map(|i| rows[i] + cols[i] - 2.0 * logits[i * n + i] as f64).sum();
    (total / (2 * n) as f64) as f32
}

/// `scale * (softmax_row + softmax_col - 2 I) / (2 n)`.
pub fn contrastive_backward(logits: &[f32], n: usize, scale: f32) -> Vec<f32> {
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
