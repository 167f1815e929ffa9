//! How the CPU backend's buffers come from the system allocator.
//!
//! Every op returns a fresh `Vec`, and a training step frees and reallocates
//! the same multi-megabyte activations over and over. glibc serves blocks
//! above its mmap threshold with `mmap` and returns freed heap tops to the
//! kernel, so each step pays page faults and page zeroing for memory it had a
//! moment ago: on the 2-core CI machine half of a pre-training step's wall
//! time was system time (`docs/benchmarks/cpu-heap.md`). Keeping those
//! blocks in the heap removes that cost; peak resident memory is unchanged.

/// Largest block glibc will keep in its heap instead of mapping it (the
/// maximum `M_MMAP_THRESHOLD` accepts on 64-bit: 32 MiB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
/// Free memory at the heap's top that glibc keeps rather than trims.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1 << 30;

/// Tells glibc to reuse freed tensor buffers instead of unmapping them.
/// Called once at start by the binary and the benchmarks; a no-op on other
/// C libraries. Returns whether both settings were taken.
pub fn keep_freed_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator tunables, under glibc's
        // own arena lock, and both values are within the ranges glibc
        // documents; no pointer is passed.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
