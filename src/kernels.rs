//! The CUDA kernels of `kernels/*.cu`, embedded in the binary by `build.rs`.
//!
//! One [`KernelModule`] per `.cu` file, named by its file stem
//! (`kernels/masked_bce.cu` is module `"masked_bce"`). Its image is either
//!
//! * [`KernelImage::Fatbin`]: built by nvcc at build time, with sm_90 and
//!   sm_80 SASS plus compute_90 PTX (load it with `cuModuleLoadData`), or
//! * [`KernelImage::Source`]: the `.cu` text, when the build found no nvcc;
//!   compile it at run time with NVRTC using [`NVRTC_OPTIONS`] plus the
//!   device's `--gpu-architecture`, with [`HEADERS`] as its include files.
//!
//! Every module of one build has the same form, [`FORM`]; other code can also
//! test `cfg(mlrpl_kernels = "fatbin")` / `cfg(mlrpl_kernels = "source")`.
//! Nothing here talks to CUDA. How the images are made: `docs/kernels.md`.

/// What `build.rs` embedded for one kernel file.
#[derive(Clone, Copy, Debug)]
pub enum KernelImage {
    /// An nvcc fatbin, 16-byte aligned.
    Fatbin(&'static [u8]),
    /// CUDA C++ source for NVRTC.
    Source(&'static str),
}

/// One `kernels/<name>.cu` file.
#[derive(Clone, Copy, Debug)]
pub struct KernelModule {
    /// The file stem, e.g. `"masked_bce"`.
    pub name: &'static str,
    pub image: KernelImage,
}

/// `"fatbin"` or `"source"`: the form of every image in [`MODULES`].
pub const FORM: &str = env!("MLRPL_KERNELS_FORM");

/// NVRTC options matching the nvcc flags of the fatbin build (`-O3` is
/// NVRTC's default; no fast math, so `expf` and division stay IEEE).
pub const NVRTC_OPTIONS: &[&str] = &["--std=c++17", "--generate-line-info"];

/// Keeps an embedded fatbin 16-byte aligned, as the driver expects.
#[cfg_attr(mlrpl_kernels = "source", allow(dead_code))]
#[repr(C, align(16))]
struct Aligned<T: ?Sized>(T);

// Defines `MODULES: &[KernelModule]` (sorted by name) and
// `HEADERS: &[(&str, &str)]` (`kernels/*.cuh`: file name, text).
include!(concat!(env!("OUT_DIR"), "/kernels_embed.rs"));

/// The module built from `kernels/<name>.cu`.
pub fn module(name: &str) -> Option<&'static KernelModule> {
    MODULES.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `kernels/*.cu` file is embedded, and nothing else is.
    #[test]
    fn every_kernel_file_is_embedded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/kernels");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cu"))
            .map(|p| p.file_stem().unwrap().to_str().unwrap().to_owned())
            .collect();
        on_disk.sort();
        assert!(!on_disk.is_empty(), "no kernels/*.cu files");
        let embedded: Vec<&str> = MODULES.iter().map(|m| m.name).collect();
        assert_eq!(embedded, on_disk, "embedded modules differ from kernels/*.cu (stale build?)");

        let cfg_form = if cfg!(mlrpl_kernels = "fatbin") {
            "fatbin"
        } else if cfg!(mlrpl_kernels = "source") {
            "source"
        } else {
            "unset"
        };
        assert_eq!(cfg_form, FORM, "cfg(mlrpl_kernels) disagrees with FORM");

        for name in &on_disk {
            let m = module(name).unwrap();
            match m.image {
                KernelImage::Fatbin(bytes) => {
                    assert_eq!(FORM, "fatbin");
                    assert_eq!(bytes.as_ptr() as usize % 16, 0, "{name}: fatbin not 16-byte aligned");
                    // fatbin header magic 0xBA55ED50, little-endian
                    assert_eq!(bytes.get(..4), Some(&[0x50, 0xed, 0x55, 0xba][..]), "{name}: not a fatbin");
                }
                KernelImage::Source(text) => {
                    assert_eq!(FORM, "source");
                    let file = std::fs::read_to_string(format!("{dir}/{name}.cu")).unwrap();
                    assert_eq!(text, file, "{name}: embedded source is stale");
                }
            }
        }
        assert!(module("no_such_kernel").is_none());
    }
}
