//! Devices and `--device auto|cpu|cuda` selection. Probing never panics: the
//! CUDA driver library is loaded dynamically, and its absence is an answer,
//! not an error.

use crate::backend::cuda::libs;
pub use crate::backend::cuda::libs::CudaLibrary;
pub use crate::backend::cuda::CudaDevice;
use crate::kernels;
use anyhow::{bail, Result};
use std::fmt;

/// Where a tensor's storage lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Device {
    /// The CPU backend (the reference).
    Cpu,
    /// One GPU: its context, stream, cuBLAS handle and kernels.
    Cuda(CudaDevice),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(d) => write!(f, "cuda:{}", d.ordinal()),
        }
    }
}

impl Device {
    /// GPU 0, when a driver and a GPU are there and a context can be made;
    /// the error is one line saying which of the three failed.
    pub fn cuda() -> Result<Device> {
        match probe_cuda() {
            CudaProbe::Found { .. } => Ok(Device::Cuda(CudaDevice::open(0)?)),
            other => bail!("{other}"),
        }
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
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
    /// A GPU is there, but libraries the CUDA device needs (cuBLAS,
    /// cuBLASLt, and NVRTC for a build with source kernels) cannot be opened.
    MissingLibraries(Vec<CudaLibrary>),
    Found {
        devices: usize,
    },
}

impl fmt::Display for CudaProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CudaProbe::NoDriver => f.write_str("no CUDA driver library (libcuda) was found"),
            CudaProbe::NoDevice(why) => write!(f, "the CUDA driver reports no usable GPU ({why})"),
            CudaProbe::MissingLibraries(missing) => f.write_str(&libs::missing_message(missing)),
            CudaProbe::Found { devices } => write!(f, "{devices} CUDA GPU(s) found"),
        }
    }
}

/// Looks for the CUDA driver, a GPU and the libraries this build's CUDA
/// device loads (cudarc's `is_culib_present` for each), without creating a
/// context.
pub fn probe_cuda() -> CudaProbe {
    probe_with(CudaLibrary::is_present, kernels::FORM, || {
        cudarc::driver::result::init()
            .and_then(|_| cudarc::driver::result::device::get_count())
            .map(|n| n.max(0) as usize)
            .map_err(|e| e.to_string())
    })
}

/// [`probe_cuda`] with the library look-up, the kernel form
/// (`kernels::FORM`) and the device count given (tests pass fakes). The
/// driver is looked for first (nothing can be asked without it), then a
/// GPU, then the other libraries.
pub fn probe_with(
    present: impl Fn(CudaLibrary) -> bool,
    kernel_form: &str,
    count: impl FnOnce() -> Result<usize, String>,
) -> CudaProbe {
    if !present(CudaLibrary::Driver) {
        return CudaProbe::NoDriver;
    }
    let devices = match count() {
        Ok(0) => return CudaProbe::NoDevice("device count is 0".into()),
        Ok(n) => n,
        Err(e) => return CudaProbe::NoDevice(e),
    };
    let missing = libs::missing_libraries(&libs::needed_libraries(kernel_form), present);
    if missing.is_empty() {
        CudaProbe::Found { devices }
    } else {
        CudaProbe::MissingLibraries(missing)
    }
}

/// A chosen device, with the one line to tell the user when the choice was
/// not the one asked for.
#[derive(Debug)]
pub struct Selection {
    pub device: Device,
    pub notice: Option<String>,
}

/// Resolves `--device`: `cpu` is the CPU; `cuda` is GPU 0 or a one-line
/// error (no driver, no GPU, or the context could not be made); `auto` is
/// GPU 0 when `cuda` would work, else the CPU with a one-line notice.
pub fn select(request: DeviceRequest, probe: impl FnOnce() -> CudaProbe) -> Result<Selection> {
    select_with(request, probe, |ordinal| Ok(Device::Cuda(CudaDevice::open(ordinal)?)))
}

/// [`select`] with the GPU opener given (tests pass a fake one).
pub fn select_with(
    request: DeviceRequest,
    probe: impl FnOnce() -> CudaProbe,
    open: impl FnOnce(usize) -> Result<Device>,
) -> Result<Selection> {
    match request {
        DeviceRequest::Cpu => Ok(Selection { device: Device::Cpu, notice: None }),
        DeviceRequest::Auto => {
            let why = match probe() {
                CudaProbe::Found { .. } => match open(0) {
                    Ok(device) => return Ok(Selection { device, notice: None }),
                    Err(e) => format!("{e:#}"),
                },
                other => other.to_string(),
            };
            Ok(Selection { device: Device::Cpu, notice: Some(format!("device auto: {why}; running on the CPU")) })
        }
        DeviceRequest::Cuda => match probe() {
            CudaProbe::Found { .. } => open(0)
                .map(|device| Selection { device, notice: None })
                .map_err(|e| anyhow::anyhow!("--device cuda: {e:#}")),
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
    fn a_gpu_whose_context_fails_is_one_line_for_cuda_and_a_fallback_for_auto() {
        let found = || CudaProbe::Found { devices: 1 };
        let failing = |_| -> Result<Device> { bail!("could not create a CUDA context on GPU 0: CUDA_ERROR_UNKNOWN") };
        let err = select_with(DeviceRequest::Cuda, found, failing).unwrap_err().to_string();
        assert_eq!(err, "--device cuda: could not create a CUDA context on GPU 0: CUDA_ERROR_UNKNOWN");
        let auto = select_with(DeviceRequest::Auto, found, failing).unwrap();
        assert_eq!(auto.device, Device::Cpu);
        assert!(auto.notice.unwrap().contains("could not create a CUDA context"));
        let picked = select_with(DeviceRequest::Auto, found, |_| Ok(Device::Cpu)).unwrap();
        assert!(picked.notice.is_none(), "auto takes the GPU without a notice");
    }

    #[test]
    fn a_missing_library_is_named_and_auto_falls_back() {
        let count = || Ok(1);
        let no_lt = |lib| lib != CudaLibrary::CublasLt;
        let probe = probe_with(no_lt, "fatbin", count);
        assert_eq!(probe, CudaProbe::MissingLibraries(vec![CudaLibrary::CublasLt]));
        let auto =
            select_with(DeviceRequest::Auto, || probe.clone(), |_| unreachable!("opened without cuBLASLt")).unwrap();
        assert_eq!(auto.device, Device::Cpu);
        let notice = auto.notice.unwrap();
        assert!(notice.starts_with("device auto: the CUDA library libcublasLt.so (cuBLASLt)"), "{notice}");
        assert!(notice.ends_with("; running on the CPU") && !notice.contains('\n'), "{notice}");
        let err = select_with(DeviceRequest::Cuda, || probe.clone(), |_| unreachable!()).unwrap_err().to_string();
        assert!(err.starts_with("--device cuda: the CUDA library libcublasLt.so"), "{err}");
        // NVRTC matters only when the kernels are embedded as sources.
        let no_nvrtc = |lib| lib != CudaLibrary::Nvrtc;
        assert_eq!(probe_with(no_nvrtc, "fatbin", count), CudaProbe::Found { devices: 1 });
        let probe = probe_with(no_nvrtc, "source", count);
        assert_eq!(probe, CudaProbe::MissingLibraries(vec![CudaLibrary::Nvrtc]));
        assert!(probe.to_string().contains("libnvrtc.so (NVRTC"), "{probe}");
        // The driver and the GPU are reported before the other libraries.
        assert_eq!(probe_with(|_| false, "source", count), CudaProbe::NoDriver);
        let none = probe_with(|lib| lib == CudaLibrary::Driver, "fatbin", || Ok(0));
        assert_eq!(none, CudaProbe::NoDevice("device count is 0".into()));
        let failed = probe_with(|_| true, "fatbin", || Err("CUDA_ERROR_NO_DEVICE".into()));
        assert_eq!(failed, CudaProbe::NoDevice("CUDA_ERROR_NO_DEVICE".into()));
    }

    #[test]
    fn probing_this_machine_does_not_panic() {
        let _ = probe_cuda();
    }
}
