//! Stopping a process group from a destructor.
//!
//! A launch can be dropped at any await point (Ctrl-C, SIGTERM, an embedder's timeout),
//! including in the middle of the start, and a destructor cannot await. [`GroupStop`] is
//! armed the moment the child exists and, when dropped armed, stops the child's whole
//! group the way [`ServerHandle::cleanup`](super::ServerHandle::cleanup) does — SIGTERM,
//! then SIGKILL after [`TERMINATE_GRACE`] — without blocking the async runtime:
//!
//! - SIGTERM goes out at once, from the destructor;
//! - the grace is watched by a small detached std thread that polls the group every 20 ms
//!   and sends SIGKILL only if something is still alive when the grace ends. A thread
//!   rather than a tokio task, because the runtime may be shutting down (the CLI drops the
//!   launch on Ctrl-C and then returns from `block_on`), and a blocking wait in the
//!   destructor would stall every other task on that runtime thread for up to the grace;
//! - a process that exits while the thread still waits would lose the escalation, so such
//!   programs call [`wait_for_group_stops`] before they exit (the CLI does).

use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::handle::TERMINATE_GRACE;

/// How often the stopping thread looks whether the group is gone.
const POLL: Duration = Duration::from_millis(20);

/// Threads still watching a group's grace period.
static STOPPING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Stops a process group when dropped, unless [`disarm`](Self::disarm)ed.
#[derive(Debug)]
pub(super) struct GroupStop {
    pgid: Option<Pid>,
}

impl GroupStop {
    /// Guard the group led by `pid` (a child started with `process_group(0)`).
    pub(super) fn new(pid: u32) -> GroupStop {
        // Pid 0 or a negative pid would make killpg address our own group or every
        // process: never arm for those.
        let pgid = i32::try_from(pid)
            .ok()
            .filter(|p| *p > 0)
            .map(Pid::from_raw);
        GroupStop { pgid }
    }

    /// The group's id, when armed.
    pub(super) fn pgid(&self) -> Option<Pid> {
        self.pgid
    }

    /// Forget the group: it was stopped another way (or must outlive us).
    pub(super) fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupStop {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            stop_in_background(pgid);
        }
    }
}

/// SIGTERM now; SIGKILL from a detached thread if anything is left after the grace.
fn stop_in_background(pgid: Pid) {
    if killpg(pgid, Signal::SIGTERM) == Err(Errno::ESRCH) {
        return; // nothing left in the group
    }
    let spawned = std::thread::Builder::new()
        .name("pv-launch-stop".into())
        .spawn(move || {
            let end = Instant::now() + TERMINATE_GRACE;
            while Instant::now() < end {
                if !group_alive(pgid) {
                    // Gone: do not signal again. (A group id is free for reuse only once
                    // every member is gone and reaped; stopping here, at most one poll
                    // interval after that, keeps a late SIGKILL from reaching a new group
                    // that took the id, which would need the pid space to wrap meanwhile.)
                    return;
                }
                std::thread::sleep(POLL);
            }
            let _ = killpg(pgid, Signal::SIGKILL);
        });
    match spawned {
        Ok(thread) => {
            let mut stopping = STOPPING.lock().unwrap_or_else(|e| e.into_inner());
            // Forget threads that are done, so the list does not grow in a long-lived
            // embedder that launches many times.
            stopping.retain(|t| !t.is_finished());
            stopping.push(thread);
        }
        // No thread: no grace either. Stopping now beats leaving the group running.
        Err(_) => {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// Whether any live (not zombie) process is still in group `pgid`.
///
/// `killpg(pgid, 0)` alone also counts a leader that exited but is not reaped yet (tokio
/// reaps dropped children lazily, and not at all once its runtime is gone), which would
/// make every stop wait out the whole grace; so when it says "alive", /proc decides.
fn group_alive(pgid: Pid) -> bool {
    if killpg(pgid, None) == Err(Errno::ESRCH) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true; // no /proc: trust killpg
    };
    let pgid = pgid.as_raw().to_string();
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // After the ")" that closes the command name: state, ppid, pgrp, …
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().take(3).collect())
            .unwrap_or_default();
        fields.len() == 3 && fields[0] != "Z" && fields[2] == pgid
    })
}

/// Block until every process group that a dropped launch or [`ServerHandle`] is still
/// stopping is stopped: gone, or sent SIGKILL at the end of its grace
/// ([`TERMINATE_GRACE`], 2 s, at most).
///
/// Call it before the process exits after dropping a launch, or a server that ignores
/// SIGTERM may outlive it. Not from async code: it blocks the calling thread.
///
/// [`ServerHandle`]: super::ServerHandle
pub fn wait_for_group_stops() {
    let threads = std::mem::take(&mut *STOPPING.lock().unwrap_or_else(|e| e.into_inner()));
    for thread in threads {
        let _ = thread.join();
    }
}
