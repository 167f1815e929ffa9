//! The check that comes before any timing: a device's results against the
//! CPU backend's on the same inputs, relative error ||got - want|| / ||want||
//! per tensor (docs/model.md §9). A NaN or a length mismatch never passes.

use anyhow::{bail, Result};

/// Relative tolerance of an f32 primitive against the CPU reference.
pub const F32_TOLERANCE: f64 = 1e-4;
/// Relative tolerance of a bf16 path (docs/model.md §9): bf16 inputs, f32
/// accumulation in a different order, one bf16 rounding of the output.
pub const BF16_TOLERANCE: f64 = 2e-2;

/// The tolerance of a computation whose inputs are stored as `dtype`.
pub fn tolerance_for(dtype: crate::DType) -> f64 {
    if dtype == crate::DType::BF16 {
        BF16_TOLERANCE
    } else {
        F32_TOLERANCE
    }
}

/// `||got - want|| / ||want||` in f64 (the absolute norm when `want` is all
/// zeros); infinite for a NaN or a length mismatch.
pub fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        let (g, w) = (f64::from(g), f64::from(w));
        diff += (g - w) * (g - w);
        norm += w * w;
    }
    let err = if norm > 0.0 { (diff / norm).sqrt() } else { diff.sqrt() };
    if err.is_nan() {
        f64::INFINITY
    } else {
        err
    }
}

/// The largest relative error over the tensors of one case, or an error
/// naming the case (`what`: op, setup and shape), the tensor and both sizes
/// when any tensor is over `tolerance`.
pub fn compare(what: &str, got: &[Vec<f32>], want: &[Vec<f32>], tolerance: f64) -> Result<f64> {
    if got.len() != want.len() {
        bail!("check failed for {what}: the device returned {} tensors, the CPU backend {}", got.len(), want.len());
    }
    let mut worst = 0.0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g.len() != w.len() {
            bail!("check failed for {what}: tensor {i} has {} elements on the device, {} on the CPU", g.len(), w.len());
        }
        let err = relative_error(g, w);
        if err > tolerance {
            bail!(
                "check failed for {what}: tensor {i} differs from the CPU backend, relative error {err:.3e} > {tolerance:e}; \
                 nothing was timed"
            );
        }
        worst = worst.max(err);
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_outputs_pass_with_their_error() {
        let want = vec![vec![1.0, 2.0, 3.0], vec![0.5]];
        let got = vec![vec![1.0, 2.0, 3.0 + 1e-6], vec![0.5]];
        let err = compare("layernorm_fwd/mini-clip rows=2 cols=3", &got, &want, F32_TOLERANCE).unwrap();
        assert!(err > 0.0 && err < 1e-6, "{err}");
    }

    #[test]
    fn a_mismatch_fails_naming_the_op_and_shape() {
        let want = vec![vec![1.0, 2.0, 3.0]];
        let got = vec![vec![1.0, 2.0, 3.5]];
        let err = compare("softmax_fwd/vit-b32 rows=2560 cols=49", &got, &want, F32_TOLERANCE).unwrap_err().to_string();
        assert!(err.contains("softmax_fwd/vit-b32 rows=2560 cols=49"), "{err}");
        assert!(err.contains("tensor 0") && err.contains("relative error"), "{err}");
    }

    #[test]
    fn nan_and_shape_mismatches_never_pass() {
        assert_eq!(relative_error(&[f32::NAN], &[1.0]), f64::INFINITY);
        assert!(compare("op", &[vec![f32::NAN]], &[vec![1.0]], 1.0).is_err());
        let err = compare("op", &[vec![1.0, 2.0]], &[vec![1.0]], 1.0).unwrap_err().to_string();
        assert!(err.contains("2 elements on the device, 1 on the CPU"), "{err}");
        assert!(compare("op", &[], &[vec![1.0]], 1.0).is_err());
    }
}
