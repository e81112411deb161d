//! A started process and its process group.

use std::collections::VecDeque;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStdin};

use super::StartError;

/// How long [`ServerHandle::cleanup`] waits after SIGTERM before SIGKILL.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(2);

/// A running process started by pv-launch, leader of its own process group. Dropping the
/// handle kills the whole group.
#[derive(Debug)]
pub struct ServerHandle {
    child: Child,
    pgid: Pid,
    stdin: Option<ChildStdin>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    program: String,
    status: Option<ExitStatus>,
    stderr_reader: Option<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    pub(super) fn new(
        child: Child,
        stdin: Option<ChildStdin>,
        stderr_tail: Arc<Mutex<VecDeque<String>>>,
        stderr_reader: Option<tokio::task::JoinHandle<()>>,
        program: String,
    ) -> Self {
        let pid = child.id().map_or(0, |p| p as i32);
        ServerHandle {
            child,
            pgid: Pid::from_raw(pid),
            stdin,
            stderr_tail,
            program,
            status: None,
            stderr_reader,
        }
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pgid.as_raw() as u32
    }

    /// The exit status if the process has ended, without waiting.
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
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
        s
    }

    /// Send `signal` to the whole process group.
    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        killpg(self.pgid, signal)
    }

    /// Ask the group to stop (SIGTERM).
    pub fn terminate(&self) -> nix::Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Stop every process of the group: SIGTERM, then SIGKILL after `TERMINATE_GRACE` (2 s);
    /// the leader is reaped.
    pub async fn cleanup(&mut self) {
        self.stdin = None;
        let _ = self.terminate();
        if tokio::time::timeout(TERMINATE_GRACE, self.wait())
            .await
            .is_err()
        {
            let _ = self.signal(Signal::SIGKILL);
            self.wait().await;
        }
        // Members that outlived the leader (or ignored SIGTERM) go too.
        let _ = self.signal(Signal::SIGKILL);
    }

    /// The last lines of the process's stderr.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr_tail
            .lock()
            .expect("stderr tail lock")
            .iter()
            .cloned()
            .collect()
    }

    pub(super) async fn exit_error(&mut self, status: ExitStatus) -> StartError {
        // Stop what is left of the group, then let the stderr reader reach end of file so
        // the tail holds everything the process wrote.
        let _ = self.signal(Signal::SIGKILL);
        if let Some(reader) = self.stderr_reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
        StartError::Exited {
            program: self.program.clone(),
            status: describe(status),
            stderr_tail: self.stderr_tail(),
        }
    }
}

/// An exit status in words.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "an unknown status".to_string(),
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.signal(Signal::SIGKILL);
    }
}
