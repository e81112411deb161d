//! A started process and its process group.

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::{Child, ChildStdin};

use super::TERMINATE_GRACE;
use super::group::GroupStop;
use crate::startup::channel::StderrTail;
use crate::startup::{StartError, describe_status};

/// A running process started by pv-launch, leader of its own process group. Dropping the
/// handle without [`cleanup`](Self::cleanup) stops the whole group all the same (SIGTERM,
/// then SIGKILL after `TERMINATE_GRACE`, watched by a background thread: see
/// [`wait_for_group_stops`](super::wait_for_group_stops)).
#[derive(Debug)]
pub struct ServerHandle {
    child: Child,
    pid: u32,
    /// Stops the group if the handle is dropped before `cleanup` did.
    group: GroupStop,
    stdin: Option<ChildStdin>,
    stderr_tail: StderrTail,
    program: String,
    status: Option<ExitStatus>,
    stderr_reader: Option<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    pub(super) fn new(
        child: Child,
        group: GroupStop,
        stdin: Option<ChildStdin>,
        stderr_tail: StderrTail,
        stderr_reader: Option<tokio::task::JoinHandle<()>>,
        program: String,
    ) -> Self {
        ServerHandle {
            pid: child.id().unwrap_or(0),
            child,
            group,
            stdin,
            stderr_tail,
            program,
            status: None,
            stderr_reader,
        }
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status if the process has ended, without waiting.
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
            if self.status.is_some() {
                self.group.leader_reaped();
            }
        }
        self.status
    }

    /// Wait for the process to end.
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let s = match self.child.wait().await {
            Ok(s) => s,
            Err(_) => std::os::unix::process::ExitStatusExt::from_raw(1 << 8),
        };
        self.status = Some(s);
        self.group.leader_reaped();
        s
    }

    /// Send `signal` to the whole process group, while it is known to be ours.
    ///
    /// `ESRCH` once it is not: after [`cleanup`](Self::cleanup), or once the process has
    /// been waited for and no live member of its group is left — from then on the group
    /// id is free for the system to give to an unrelated process group, so it is never
    /// signalled again. Also `ESRCH` when the id is found taken by another process.
    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        self.group.signal(signal)
    }

    /// Ask the group to stop (SIGTERM).
    pub fn terminate(&self) -> nix::Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Stop every process of the group: SIGTERM, then SIGKILL after `TERMINATE_GRACE` (2 s);
    /// the leader is reaped. Signals go out only while the group is ours (see
    /// [`signal`](Self::signal)).
    pub async fn cleanup(&mut self) {
        self.group.stopping();
        self.stdin = None;
        let _ = self.terminate();
        // The grace is the group's, not only the leader's: a helper of the server that
        // takes a moment to shut down gets it even when the leader exits at once.
        let group_gone = async {
            self.wait().await;
            let mut pause = Duration::from_millis(5);
            while self.group.alive() {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        };
        if tokio::time::timeout(TERMINATE_GRACE, group_gone)
            .await
            .is_err()
        {
            let _ = self.signal(Signal::SIGKILL);
            self.wait().await;
        }
        // Members that outlived the grace (or ignored SIGTERM) go too.
        let _ = self.signal(Signal::SIGKILL);
        // Stopped: dropping the handle later must not signal the group id again (it may
        // belong to someone else by then).
        self.group.disarm();
    }

    /// The last lines of the process's stderr.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr_tail.lines()
    }

    pub(crate) async fn exit_error(&mut self, status: ExitStatus) -> StartError {
        // Stop what is left of the group, then let the stderr reader reach end of file so
        // the tail holds everything the process wrote.
        let _ = self.signal(Signal::SIGKILL);
        self.group.disarm();
        if let Some(reader) = self.stderr_reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
        StartError::Exited {
            program: self.program.clone(),
            status: describe_status(status),
            stderr_tail: self.stderr_tail(),
        }
    }
}
