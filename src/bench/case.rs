//! One kernel microbenchmark: a backend primitive, the seeded host inputs it
//! runs on, and the work one call does (bytes moved or floating-point
//! operations), from which the throughput is computed.

use crate::backend::{CpuStorage, CudaStorage, Storage};
use crate::device::Device;
use crate::DType;
use anyhow::Result;

/// What one call of a primitive costs, for its throughput figure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Work {
    /// Bytes read plus bytes written, each tensor counted once (the least
    /// traffic any implementation needs): reported as GB/s.
    Bytes(f64),
    /// Floating-point operations (a multiply-add counts 2): GFLOP/s.
    Flops(f64),
    /// Images processed (end-to-end figures): images/s.
    Images(usize),
}

impl Work {
    /// Bytes of f32 tensors of these element counts.
    pub fn f32_bytes(counts: &[usize]) -> Work {
        Work::Bytes(4.0 * counts.iter().sum::<usize>() as f64)
    }

    /// (throughput, unit) of one call taking `ms` milliseconds.
    pub fn throughput(self, ms: f64) -> (f64, &'static str) {
        match self {
            Work::Bytes(b) => (b / (ms * 1e-3) / 1e9, "GB/s"),
            Work::Flops(f) => (f / (ms * 1e-3) / 1e9, "GFLOP/s"),
            Work::Images(n) => (n as f64 / (ms * 1e-3), "images/s"),
        }
    }
}

/// Host values of one input and the dtype they are stored in on the device
/// (u32 for indices: the values are exact small integers).
#[derive(Clone, Debug)]
pub struct HostInput {
    pub values: Vec<f32>,
    pub dtype: DType,
}

impl HostInput {
    pub fn f32(values: Vec<f32>) -> HostInput {
        HostInput { values, dtype: DType::F32 }
    }

    /// Values stored as bf16 (rounded to nearest on upload).
    pub fn bf16(values: Vec<f32>) -> HostInput {
        HostInput { values, dtype: DType::BF16 }
    }

    pub fn ids(ids: &[u32]) -> HostInput {
        HostInput { values: ids.iter().map(|&i| i as f32).collect(), dtype: DType::U32 }
    }

    /// A fresh buffer holding these values on `device`.
    pub fn upload(&self, device: &Device) -> Result<Storage> {
        Ok(match device {
            Device::Cpu => Storage::Cpu(CpuStorage::from_f32(self.values.clone(), self.dtype)),
            Device::Cuda(gpu) => Storage::Cuda(CudaStorage::from_f32(gpu, &self.values, self.dtype)?),
        })
    }
}

/// Calls one primitive on the inputs (which it may update in place, as the
/// optimizer steps do) and returns its outputs.
pub type Primitive = Box<dyn Fn(&mut [Storage]) -> Result<Vec<Storage>>>;

pub struct Case {
    /// The primitive and direction, e.g. `layernorm_bwd`.
    pub op: &'static str,
    /// Which model's shapes (`mini-clip`, `vit-b32`, `vit-b16-448`), or
    /// the sizes of a case that is not a model's (`b64-c80`).
    pub setup: &'static str,
    /// Named sizes, in the order they are printed; the PyTorch script
    /// rebuilds the same op from these.
    pub params: Vec<(&'static str, usize)>,
    pub work: Work,
    pub inputs: Vec<HostInput>,
    pub run: Primitive,
}

impl Case {
    /// The dtype of the first float input: what the primitive computes on.
    pub fn compute_dtype(&self) -> DType {
        self.inputs.iter().map(|i| i.dtype).find(|&d| d != DType::U32).unwrap_or(DType::F32)
    }

    /// `op/setup`, what `--filter` matches.
    pub fn id(&self) -> String {
        case_id(self.op, self.setup)
    }

    /// The sizes as `name=value` pairs, e.g. `rows=1600 cols=768`.
    pub fn shape(&self) -> String {
        self.params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }
}

pub fn case_id(op: &str, setup: &str) -> String {
    format!("{op}/{setup}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_units_follow_the_work_kind() {
        let (gbs, unit) = Work::f32_bytes(&[1_000_000, 1_000_000]).throughput(1.0);
        assert_eq!(unit, "GB/s");
        assert!((gbs - 8.0).abs() < 1e-9, "{gbs}");
        let (gflops, unit) = Work::Flops(2e9).throughput(1000.0);
        assert_eq!(unit, "GFLOP/s");
        assert!((gflops - 2.0).abs() < 1e-9, "{gflops}");
        assert_eq!(Work::Images(32).throughput(100.0), (320.0, "images/s"));
    }
}
