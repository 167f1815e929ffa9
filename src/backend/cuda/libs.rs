//! The CUDA libraries the engine loads at run time (cudarc's dynamic
//! loading), and the check made before any of them is used.
//!
//! cudarc opens a library on the first call into it and panics when it
//! finds none, inside whatever lock the caller holds (the device list of
//! `CudaDevice::open`), so a missing cuBLAS would poison that lock and make
//! `--device auto` panic instead of falling back. Hence every library the
//! device will need is looked for first with cudarc's own
//! `is_culib_present` (the same file names it loads later), and a missing
//! one is one line naming it.

use crate::kernels;
use std::fmt;

/// A CUDA library the engine loads at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CudaLibrary {
    /// `libcuda`, the driver API (installed with the NVIDIA driver).
    Driver,
    /// `libcublas`, for batches that reuse one operand and the sgemm fallback.
    Cublas,
    /// `libcublasLt`, for every other matrix product.
    CublasLt,
    /// `libnvrtc`, needed only when the kernels are embedded as sources.
    Nvrtc,
}

impl CudaLibrary {
    /// The file cudarc looks for first (it also tries versioned names).
    pub fn file(self) -> &'static str {
        match self {
            CudaLibrary::Driver => "libcuda.so",
            CudaLibrary::Cublas => "libcublas.so",
            CudaLibrary::CublasLt => "libcublasLt.so",
            CudaLibrary::Nvrtc => "libnvrtc.so",
        }
    }

    /// Whether cudarc can open the library (no symbol is resolved).
    pub fn is_present(self) -> bool {
        // SAFETY: each is_culib_present only tries to dlopen its library
        // under cudarc's candidate names and reports whether one opened; it
        // has no preconditions.
        unsafe {
            match self {
                CudaLibrary::Driver => cudarc::driver::sys::is_culib_present(),
                CudaLibrary::Cublas => cudarc::cublas::sys::is_culib_present(),
                CudaLibrary::CublasLt => cudarc::cublaslt::sys::is_culib_present(),
                CudaLibrary::Nvrtc => cudarc::nvrtc::sys::is_culib_present(),
            }
        }
    }
}

impl fmt::Display for CudaLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            CudaLibrary::Driver => "the CUDA driver",
            CudaLibrary::Cublas => "cuBLAS",
            CudaLibrary::CublasLt => "cuBLASLt",
            CudaLibrary::Nvrtc => "NVRTC, needed because this build embeds the kernels as sources (it had no nvcc)",
        };
        write!(f, "{} ({what})", self.file())
    }
}

/// The libraries a CUDA device of a build with kernels in `form`
/// (`kernels::FORM`: "fatbin" or "source") loads besides the driver.
pub fn needed_libraries(form: &str) -> Vec<CudaLibrary> {
    let mut libs = vec![CudaLibrary::Cublas, CudaLibrary::CublasLt];
    if form == "source" {
        libs.push(CudaLibrary::Nvrtc);
    }
    libs
}

/// The libraries of `needed` that `present` says cannot be opened.
pub fn missing_libraries(needed: &[CudaLibrary], present: impl Fn(CudaLibrary) -> bool) -> Vec<CudaLibrary> {
    needed.iter().copied().filter(|&lib| !present(lib)).collect()
}

/// One line for libraries that cannot be opened.
pub fn missing_message(missing: &[CudaLibrary]) -> String {
    let names: Vec<String> = missing.iter().map(ToString::to_string).collect();
    format!(
        "the CUDA librar{} {} could not be loaded (not on the library path: add its folder, e.g. a CUDA \
         toolkit's lib64 or the lib folder of the nvidia-* pip wheels, to LD_LIBRARY_PATH)",
        if missing.len() == 1 { "y" } else { "ies" },
        names.join(", ")
    )
}

/// Fails with [`missing_message`] unless every library this build's CUDA
/// device needs besides the driver can be opened.
pub fn check_libraries() -> anyhow::Result<()> {
    let missing = missing_libraries(&needed_libraries(kernels::FORM), CudaLibrary::is_present);
    if missing.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", missing_message(&missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvrtc_is_needed_only_for_source_kernels() {
        assert_eq!(needed_libraries("fatbin"), vec![CudaLibrary::Cublas, CudaLibrary::CublasLt]);
        assert_eq!(needed_libraries("source"), vec![CudaLibrary::Cublas, CudaLibrary::CublasLt, CudaLibrary::Nvrtc]);
        assert_eq!(needed_libraries(kernels::FORM).contains(&CudaLibrary::Nvrtc), kernels::FORM == "source");
    }

    #[test]
    fn the_message_names_each_missing_library() {
        let needed = needed_libraries("source");
        let missing = missing_libraries(&needed, |lib| lib == CudaLibrary::Cublas);
        assert_eq!(missing, vec![CudaLibrary::CublasLt, CudaLibrary::Nvrtc]);
        let line = missing_message(&missing);
        assert!(line.contains("libcublasLt.so (cuBLASLt)") && line.contains("libnvrtc.so (NVRTC"), "{line}");
        assert!(!line.contains("libcublas.so "), "cuBLAS is present but named: {line}");
        assert!(line.starts_with("the CUDA libraries ") && !line.contains('\n'), "{line}");
        let one = missing_message(&[CudaLibrary::Cublas]);
        assert!(one.starts_with("the CUDA library libcublas.so (cuBLAS) could not be loaded"), "{one}");
        assert!(missing_libraries(&needed, |_| true).is_empty());
    }

    #[test]
    fn looking_for_the_libraries_does_not_panic() {
        for lib in [CudaLibrary::Driver, CudaLibrary::Cublas, CudaLibrary::CublasLt, CudaLibrary::Nvrtc] {
            let _ = lib.is_present();
        }
        let _ = check_libraries();
    }
}
