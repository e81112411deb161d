//! The `pv-launch` command line, parsed in one place, and what runs it: [`run`] (start,
//! supervise, clean up) and [`progress`] (the terminal, plain and JSON displays). These
//! live in the binary, not the library, so an application embedding `pv_launch` builds
//! without clap, clap_complete or indicatif.

pub mod args;
pub mod jobs;
pub mod progress;
pub mod run;

pub use args::*;

/// The CLI's async runtime: one thread (the main one), so a process that pv-launch
/// starts is forked from a thread that lives as long as pv-launch. `None` (after saying
/// why on stderr) when it cannot be made.
pub fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("pv-launch: cannot start the runtime: {e}");
            None
        }
    }
}
