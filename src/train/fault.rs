//! Fault injection for the kill tests: `MLRPL_FAULT=<point>[:<n>]` makes the
//! process SIGKILL itself the n-th time (1 by default) it reaches the named
//! point of a checkpoint or metrics write, so that a test can stop a run at
//! exactly the moments a random kill would rarely hit. Without the variable
//! every point is one relaxed load.
//!
//! Points: `tensors-tmp` (a tensors file written under its temporary name,
//! not yet renamed), `tensors-renamed` (the tensors file in place, the JSON
//! not yet written), `json-tmp` (the JSON written under its temporary name),
//! `json-renamed` (the JSON in place, the previous tensors file not yet
//! removed), `metrics-line` (half of a metrics line written).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

fn target() -> &'static Option<(String, usize)> {
    static TARGET: OnceLock<Option<(String, usize)>> = OnceLock::new();
    TARGET.get_or_init(|| {
        let spec = std::env::var("MLRPL_FAULT").ok()?;
        match spec.split_once(':') {
            Some((name, n)) => Some((name.to_string(), n.parse().unwrap_or(1))),
            None => Some((spec, 1)),
        }
    })
}

/// Kills the process here if `MLRPL_FAULT` names this point and this is
/// its n-th visit.
pub fn point(name: &str) {
    static VISITS: AtomicUsize = AtomicUsize::new(0);
    if let Some((target, n)) = target() {
        if target == name && VISITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            // SAFETY: raising a signal has no memory-safety preconditions.
            unsafe {
                libc::raise(libc::SIGKILL);
            }
        }
    }
}
