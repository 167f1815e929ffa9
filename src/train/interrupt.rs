//! Ctrl-C during training: the first SIGINT asks the loop to save a
//! checkpoint of its current state at the next step boundary and stop; a
//! second one exits at once (status 130), as an untrapped SIGINT would.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The exit status of a run stopped by Ctrl-C (128 + SIGINT).
pub const EXIT_STATUS: u8 = 130;

extern "C" fn on_sigint(_: libc::c_int) {
    if REQUESTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(EXIT_STATUS as libc::c_int) };
    }
}

/// Installs the SIGINT handler (the `train` command does; library users and
/// tests keep the default unless they call it).
pub fn install() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only touches an atomic and calls _exit, both
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

/// Whether a Ctrl-C has arrived.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// The error a run stopped by Ctrl-C returns: where its state was saved.
#[derive(Debug)]
pub struct Interrupted {
    pub checkpoint: std::path::PathBuf,
    pub step: usize,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = self.checkpoint.parent().map(|d| d.display().to_string()).unwrap_or_default();
        write!(
            f,
            "interrupted (Ctrl-C): the state after step {} is saved in {}; continue with --resume --run-dir {dir}",
            self.step,
            self.checkpoint.display()
        )
    }
}

impl std::error::Error for Interrupted {}
