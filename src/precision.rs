//! `--precision auto|f32|bf16`: the storage dtype of the frozen CLIP towers
//! (docs/mixed-precision.md). With bf16 the towers' weights are converted
//! once at load, their activations are bf16 (every primitive still
//! accumulates in f32), and the towers hand f32 features to the trainable
//! head; trainable parameters, their gradients and the optimizer state stay
//! f32 in every mode.

use crate::device::Device;
use crate::DType;
use anyhow::{bail, Result};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Everything in f32: the reference, and the CPU default.
    F32,
    /// Frozen towers in bf16: the CUDA default (tensor-core GEMMs, half the
    /// weight and activation memory).
    Bf16,
}

impl Precision {
    /// The dtype the frozen towers' weights and activations are stored in.
    pub fn frozen_dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16 frozen towers, f32 head and parameters",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionRequest {
    /// bf16 frozen towers on a GPU, f32 on the CPU.
    Auto,
    /// f32 everywhere.
    F32,
    /// bf16 frozen towers (on the CPU too: slower there, but it shows what a
    /// GPU run computes).
    Bf16,
}

impl PrecisionRequest {
    /// The precision a run on `device` uses.
    pub fn resolve(self, device: &Device) -> Precision {
        match self {
            PrecisionRequest::Auto if device.is_cuda() => Precision::Bf16,
            PrecisionRequest::Auto | PrecisionRequest::F32 => Precision::F32,
            PrecisionRequest::Bf16 => Precision::Bf16,
        }
    }

    /// For commands that train the towers themselves (`pretrain`): f32 only,
    /// since bf16 towers would need f32 master copies of every tower weight.
    pub fn require_f32(self, command: &str) -> Result<Precision> {
        match self {
            PrecisionRequest::Bf16 => {
                bail!("--precision bf16 is not supported by `{command}`, which trains the CLIP towers in f32")
            }
            PrecisionRequest::Auto | PrecisionRequest::F32 => Ok(Precision::F32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_f32_on_the_cpu_and_an_explicit_request_is_kept() {
        assert_eq!(PrecisionRequest::Auto.resolve(&Device::Cpu), Precision::F32);
        assert_eq!(PrecisionRequest::Bf16.resolve(&Device::Cpu), Precision::Bf16);
        assert_eq!(PrecisionRequest::F32.resolve(&Device::Cpu), Precision::F32);
        assert_eq!(Precision::Bf16.frozen_dtype(), DType::BF16);
        let err = PrecisionRequest::Bf16.require_f32("pretrain").unwrap_err().to_string();
        assert!(err.contains("pretrain"), "{err}");
        assert_eq!(PrecisionRequest::Auto.require_f32("pretrain").unwrap(), Precision::F32);
    }
}
