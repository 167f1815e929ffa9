//! The NVRTC fallback (a build without nvcc compiles `kernels/*.cu` at run
//! time): every kernel file, with its `kernels/*.cuh` headers pasted in as
//! the CUDA backend does, must compile with NVRTC for sm_80 and sm_90 using
//! `kernels::NVRTC_OPTIONS`. NVRTC needs no GPU, only libnvrtc (the project
//! toolchain has it: `. .cuda-toolchain/env.sh` puts it on
//! LD_LIBRARY_PATH). Without libnvrtc the test prints `SKIPPED: ...` and
//! passes, unless MLRPL_REQUIRE_NVRTC=1. `MLRPL_KERNELS_DIR` points it at a
//! copy of `kernels/` (the GPU bundle carries one; the default is this
//! checkout's).

use mlrpl_engine::backend::cuda::device::inline_headers;
use mlrpl_engine::kernels::{HEADERS, NVRTC_OPTIONS};
use std::io::Write;

#[test]
fn every_kernel_compiles_with_nvrtc() {
    // SAFETY: only tries to dlopen libnvrtc and reports whether that worked.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        let required = std::env::var_os("MLRPL_REQUIRE_NVRTC").is_some_and(|v| !v.is_empty() && v != "0");
        assert!(!required, "MLRPL_REQUIRE_NVRTC is set but libnvrtc could not be loaded");
        std::io::stderr()
            .write_all(b"every_kernel_compiles_with_nvrtc: SKIPPED: libnvrtc not found (. .cuda-toolchain/env.sh)\n")
            .unwrap();
        return;
    }
    let dir =
        std::env::var("MLRPL_KERNELS_DIR").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/kernels").into());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in &files {
        let source = inline_headers(&std::fs::read_to_string(file).unwrap(), HEADERS).unwrap();
        for arch in ["sm_80", "sm_90"] {
            let mut options: Vec<String> = NVRTC_OPTIONS.iter().map(|s| s.to_string()).collect();
            options.push(format!("--gpu-architecture={arch}"));
            let opts = cudarc::nvrtc::CompileOptions { options, ..Default::default() };
            if let Err(e) = cudarc::nvrtc::compile_ptx_with_opts(&source, opts) {
                panic!("NVRTC could not compile {} for {arch}: {e}", file.display());
            }
        }
    }
}
