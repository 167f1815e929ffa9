//! Devices and `--device auto|cpu|cuda` selection. Probing never panics: the
//! CUDA driver library is loaded dynamically, and its absence is an answer,
//! not an error.

use anyhow::{bail, Result};
use std::fmt;

/// Where a tensor's storage lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Device {
    /// The CPU backend (the reference).
    Cpu,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceRequest {
    /// The GPU when one is usable, else the CPU.
    Auto,
    /// The CPU backend (the reference).
    Cpu,
    /// A CUDA GPU, or a clear error when none is usable.
    Cuda,
}

/// What a look for a CUDA GPU found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CudaProbe {
    NoDriver,
    NoDevice(String),
    Found { devices: usize },
}

impl fmt::Display for CudaProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CudaProbe::NoDriver => f.write_str("no CUDA driver library (libcuda) was found"),
            CudaProbe::NoDevice(why) => write!(f, "the CUDA driver reports no usable GPU ({why})"),
            CudaProbe::Found { devices } => write!(f, "{devices} CUDA GPU(s) found"),
        }
    }
}

/// Looks for the CUDA driver and a GPU without creating a context.
pub fn probe_cuda() -> CudaProbe {
    // SAFETY: is_culib_present only tries to dlopen the driver library and
    // reports whether that worked; it has no preconditions.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return CudaProbe::NoDriver;
    }
    let count = cudarc::driver::result::init().and_then(|_| cudarc::driver::result::device::get_count());
    match count {
        Ok(n) if n > 0 => CudaProbe::Found { devices: n as usize },
        Ok(_) => CudaProbe::NoDevice("device count is 0".into()),
        Err(e) => CudaProbe::NoDevice(e.to_string()),
    }
}

/// A chosen device, with the one line to tell the user when the choice was
/// not the one asked for.
#[derive(Debug)]
pub struct Selection {
    pub device: Device,
    pub notice: Option<String>,
}

/// Resolves `--device`. The engine's CUDA backend is not part of this build
/// yet, so a GPU is reported but not used: `auto` says so and runs on the
/// CPU, `cuda` fails with the reason.
pub fn select(request: DeviceRequest, probe: impl FnOnce() -> CudaProbe) -> Result<Selection> {
    match request {
        DeviceRequest::Cpu => Ok(Selection { device: Device::Cpu, notice: None }),
        DeviceRequest::Auto => {
            let why = match probe() {
                found @ CudaProbe::Found { .. } => format!("{found}, but this build has no CUDA backend yet"),
                other => other.to_string(),
            };
            Ok(Selection { device: Device::Cpu, notice: Some(format!("device auto: {why}; running on the CPU")) })
        }
        DeviceRequest::Cuda => match probe() {
            found @ CudaProbe::Found { .. } => {
                bail!("--device cuda: {found}, but this build has no CUDA backend yet; use --device cpu")
            }
            other => bail!("--device cuda: {other}; use --device cpu or --device auto"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_with_a_notice_and_cuda_fails_with_the_reason() {
        let auto = select(DeviceRequest::Auto, || CudaProbe::NoDriver).unwrap();
        assert_eq!(auto.device, Device::Cpu);
        assert!(auto.notice.unwrap().contains("no CUDA driver"));
        let err = select(DeviceRequest::Cuda, || CudaProbe::NoDevice("device count is 0".into())).unwrap_err();
        assert!(err.to_string().contains("device count is 0"), "{err}");
        assert!(select(DeviceRequest::Cpu, || unreachable!()).unwrap().notice.is_none());
    }

    #[test]
    fn probing_this_machine_does_not_panic() {
        let _ = probe_cuda();
    }
}
