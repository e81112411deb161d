//! Shared fixtures for pv-launch's end-to-end tests: locating the workspace's built
//! binaries and starting real helper processes (sshd, Xvfb) with deadlines.
//!
//! The tests themselves live in `tests/tests/*.rs`; each starts the real parts it needs.
#![forbid(unsafe_code)]

use std::path::PathBuf;

/// The directory cargo puts the workspace's binaries in for this test build
/// (`target/debug` or the `CARGO_TARGET_DIR` equivalent).
pub fn target_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // tests run from target/<profile>/deps/<name>-<hash>
    exe.parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .expect("test binary lives in target/<profile>/deps")
}

/// Path of a binary built by this workspace (e.g. `pv-demo-server`).
pub fn workspace_bin(name: &str) -> PathBuf {
    target_bin_dir().join(name)
}
