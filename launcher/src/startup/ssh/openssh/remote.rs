//! The server process on the remote host, run through the master, and how it is ended.
//!
//! The remote command runs in the cleanup wrapper that the ssh room describes
//! ([`super::super`]): its process group ends when the channel's stdin does.
//! [`RemoteServer::stop`] closes stdin and waits for the channel to close; if it does not
//! in time, it kills the group explicitly through the master (`kill -KILL -- -<pgid>`).

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use pv_transport::launch::ReadyLine;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin};

use super::super::{
    RemoteIo, RemoteOutcome, STOP_GRACE, SshError, remote_start, wrap_remote_command,
};
use super::Master;
use crate::startup::channel::{self, StderrTail};
use crate::startup::describe_status as describe;

/// The remote server: a mux client of the master running the wrapped command. Dropping
/// it kills the client, which closes the channel, which ends the remote group.
#[derive(Debug)]
pub struct RemoteServer {
    child: Child,
    stdin: Option<ChildStdin>,
    pgid: Option<u32>,
    host: String,
    stderr_tail: StderrTail,
    status: Option<ExitStatus>,
    /// The first output line matching the ready pattern, when one is watched for.
    matched: Option<tokio::sync::oneshot::Receiver<String>>,
}

impl RemoteServer {
    /// Run `command` (a POSIX sh command line) on the master's host, wrapped for cleanup.
    /// The secrets line (or an empty line) goes in on the channel's stdin, which then
    /// stays open for the server's lifetime. With `ready_timeout`, wait that long for the
    /// launch channel's ready line; a command that exits with status 0 before it has
    /// detached its server and gives `None`. Every other output line goes to `output`.
    pub async fn start(
        master: &Master,
        command: &str,
        secrets: Option<&pv_transport::launch::Secrets>,
        ready_timeout: Option<Duration>,
        output: crate::startup::channel::OutputSink,
    ) -> Result<(RemoteServer, Option<ReadyLine>), SshError> {
        let io = RemoteIo {
            secrets,
            ready_timeout,
            output,
            pattern: None,
        };
        RemoteServer::start_with(master, command, io).await
    }

    /// [`RemoteServer::start`] with the whole launch-channel exchange (a ready pattern
    /// too).
    pub(crate) async fn start_with(
        master: &Master,
        command: &str,
        io: RemoteIo<'_>,
    ) -> Result<(RemoteServer, Option<ReadyLine>), SshError> {
        let (secrets, ready_timeout) = (io.secrets, io.ready_timeout);
        let host = master.target().display_name();
        let mut c = master.remote_command(&wrap_remote_command(command));
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = c.spawn().map_err(SshError::io("run ssh"))?;
        let mut stdin = child.stdin.take();
        if let Some(pipe) = stdin.as_mut() {
            let line = channel::secrets_line(secrets);
            let write = SshError::io("write the secrets line to ssh");
            if let Err(e) = async {
                pipe.write_all(&line).await?;
                pipe.flush().await
            }
            .await
            {
                return Err(write(e));
            }
        }
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            unreachable!("stdout and stderr are piped");
        };
        let mut readers = channel::spawn_readers(out, err, io.output, true, io.pattern);
        let matched = std::mem::replace(&mut readers.matched, tokio::sync::oneshot::channel().1);
        let mut server = RemoteServer {
            child,
            stdin,
            pgid: None,
            host: host.clone(),
            stderr_tail: readers.tail.clone(),
            status: None,
            matched: io.pattern.is_some().then_some(matched),
        };
        let started = remote_start(readers, server.wait(), ready_timeout).await;
        server.pgid = started.pgid;
        match started.outcome() {
            RemoteOutcome::Started(ready) => Ok((server, ready)),
            RemoteOutcome::EndedEarly => Err(server.ended_early(master).await),
            RemoteOutcome::BadLine(message) => Err(SshError::BadReadyLine { host, message }),
            RemoteOutcome::TimedOut(waited) => {
                let log_tail = server.stderr_tail();
                server.stop(Some(master)).await;
                Err(SshError::ready_timeout(host, waited, log_tail))
            }
        }
    }

    async fn ended_early(&mut self, master: &Master) -> SshError {
        let status = tokio::time::timeout(STOP_GRACE, self.wait()).await;
        let grace = match &status {
            Ok(s) if s.code() == Some(255) => STOP_GRACE,
            _ => Duration::ZERO,
        };
        if master.gone_within(grace).await {
            return SshError::ConnectionLost {
                host: self.host.clone(),
                log_tail: master.log_tail(),
            };
        }
        // Let the stderr reader catch up with the last lines.
        tokio::time::sleep(Duration::from_millis(20)).await;
        SshError::RemoteExited {
            host: self.host.clone(),
            status: match status {
                Ok(s) => describe(s),
                Err(_) => "still running, stdout closed".to_string(),
            },
            stderr_tail: self.stderr_tail(),
        }
    }

    /// The receiver of the first line matching the ready pattern (once).
    pub(crate) fn take_matched(&mut self) -> Option<tokio::sync::oneshot::Receiver<String>> {
        self.matched.take()
    }

    /// The remote process group (the wrapper's pid), once known.
    pub fn remote_pgid(&self) -> Option<u32> {
        self.pgid
    }

    /// The last lines of the remote stderr (and of the mux client's own messages).
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr_tail.lines()
    }

    /// The exit status of the ssh client if the remote command has ended.
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Wait until the remote command ends (or the connection does): the ssh client's
    /// exit status (255 when the connection was lost).
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let s = self
            .child
            .wait()
            .await
            .unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(255 << 8));
        self.status = Some(s);
        s
    }

    /// End the remote server and its whole process group: close the channel's stdin (the
    /// remote watcher sends SIGTERM, then SIGKILL after [`STOP_GRACE`]) and wait for the
    /// channel to close. If it does not within twice the grace, kill the group through
    /// `master` and the local client.
    pub async fn stop(&mut self, master: Option<&Master>) {
        self.stdin = None;
        if tokio::time::timeout(STOP_GRACE * 2, self.wait())
            .await
            .is_ok()
        {
            return;
        }
        if let (Some(m), Some(pgid)) = (master, self.pgid.filter(|p| *p > 1)) {
            let _ = m.run(&format!("kill -KILL -- -{pgid}"), STOP_GRACE).await;
        }
        let _ = self.child.start_kill();
        self.wait().await;
    }
}
