//! The server process on the remote host, run through the master, and how it is ended.
//!
//! **Cleanup design.** sshd starts each command in a new session (`setsid`), so the
//! remote shell is the leader of its own process group and everything the server starts
//! stays in that group unless it leaves on purpose. The remote command is wrapped
//! ([`wrap_remote_command`]) in a small POSIX sh script that:
//!
//! 1. prints `pv-launch-pgid <pid>` (its process group) as the first stdout line, and
//!    exports `PV_CLIENT_HOST` from `SSH_CLIENT` (the address the ssh connection came
//!    from) unless it is set — the command's own environment, from the profile, wins;
//! 2. reads the launch channel's secrets line from stdin (a `read` builtin: the secret is
//!    never on an argv nor in an environment) and hands it to the server on a pipe;
//! 3. starts the server (`/bin/sh -c "$1"`) in the background and waits for it;
//! 4. runs a watcher that reads the rest of the channel's stdin: when it ends — pv-launch
//!    closed it, was killed, or the ssh connection was lost, since sshd then closes the
//!    channel — it sends SIGTERM to the whole group, waits up to 2 s for the server, and
//!    sends SIGKILL to the group (itself included).
//!
//! So one mechanism covers cancel, Ctrl-C, a crash of pv-launch and a lost connection:
//! the channel's stdin ends and the remote group goes. When the server exits by itself
//! the wrapper exits with its status; sshd then closes the channel's stdin too, and the
//! watcher ends whatever the server left behind in its group. [`RemoteServer::stop`] closes stdin
//! and waits for the channel to close; if it does not in time, it kills the group
//! explicitly through the master (`kill -KILL -- -<pgid>`).

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pv_transport::launch::{ReadyLine, Secrets};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use super::master::describe;
use super::{Master, SshError, sh_quote};

/// How long the remote watcher waits after SIGTERM before SIGKILL, and roughly how long
/// [`RemoteServer::stop`] gives the remote side before killing the group itself.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// The first stdout line of the wrapper.
const PGID_PREFIX: &str = "pv-launch-pgid ";

/// Sorts the remote wrapper's stdout, whichever backend carries it: the wrapper's process
/// group line, the launch channel's ready line (first of each), and everything else.
pub(super) struct StdoutRouter {
    pgid: Option<oneshot::Sender<u32>>,
    ready: Option<oneshot::Sender<Result<ReadyLine, String>>>,
    output: Option<mpsc::UnboundedSender<RemoteOutput>>,
}

impl StdoutRouter {
    pub(super) fn new(
        pgid: oneshot::Sender<u32>,
        ready: oneshot::Sender<Result<ReadyLine, String>>,
        output: Option<mpsc::UnboundedSender<RemoteOutput>>,
    ) -> StdoutRouter {
        StdoutRouter {
            pgid: Some(pgid),
            ready: Some(ready),
            output,
        }
    }

    /// Handle one line (without its newline).
    pub(super) fn route(&mut self, line: String) {
        if let Some(n) = line.strip_prefix(PGID_PREFIX) {
            if let (Some(tx), Ok(n)) = (self.pgid.take(), n.trim().parse()) {
                let _ = tx.send(n);
                return;
            }
        }
        if let Some(parsed) = ReadyLine::parse(&line) {
            if let Some(tx) = self.ready.take() {
                let _ = tx.send(parsed.map_err(|e| e.to_string()));
                return;
            }
        }
        if let Some(o) = &self.output {
            let _ = o.send(RemoteOutput::Stdout(line));
        }
    }
}

/// How many stderr lines are kept for error messages.
const TAIL_LINES: usize = 20;

/// The wrapper script. One line, only `"` and `$` inside, so that it survives any login
/// shell's parsing once single-quoted (tcsh and fish included).
const WRAPPER: &str = concat!(
    "printf \"pv-launch-pgid %s\\n\" \"$$\"; ",
    "if [ -z \"${PV_CLIENT_HOST:-}\" ] && [ -n \"${SSH_CLIENT:-}\" ]; then ",
    "PV_CLIENT_HOST=${SSH_CLIENT%% *}; export PV_CLIENT_HOST; fi; ",
    "IFS= read -r pv_l || pv_l=; ",
    "exec 3<&0 0</dev/null; ",
    "if [ -n \"$pv_l\" ]; then printf \"%s\\n\" \"$pv_l\" | /bin/sh -c \"$1\" 3<&- & ",
    "else /bin/sh -c \"$1\" 3<&- & fi; ",
    "pv_s=$!; pv_l=; ",
    "( trap \"\" TERM; while read -r pv_x <&3; do :; done; kill -TERM 0; n=0; ",
    "while [ $n -lt 20 ] && kill -0 \"$pv_s\" 2>/dev/null; do sleep 0.1; n=$((n+1)); done; ",
    "kill -KILL 0 ) >/dev/null 2>&1 & ",
    "exec 3<&-; ",
    "wait \"$pv_s\"; exit \"$?\"",
);

/// The one string ssh sends for `command` (itself a POSIX sh command line, e.g. from
/// [`remote_command`](super::remote_command)): `exec /bin/sh -c '<wrapper>' pv-launch
/// '<command>'`. See the module documentation for what the wrapper does.
pub fn wrap_remote_command(command: &str) -> String {
    format!(
        "exec /bin/sh -c {} pv-launch {}",
        sh_quote(WRAPPER),
        sh_quote(command)
    )
}

/// A line the remote command wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteOutput {
    /// On stdout (the ready line and the wrapper's own line excluded).
    Stdout(String),
    /// On stderr.
    Stderr(String),
}

/// The remote server: a mux client of the master running the wrapped command. Dropping
/// it kills the client, which closes the channel, which ends the remote group.
#[derive(Debug)]
pub struct RemoteServer {
    child: Child,
    stdin: Option<ChildStdin>,
    pgid: Option<u32>,
    host: String,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    status: Option<ExitStatus>,
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
        secrets: Option<&Secrets>,
        ready_timeout: Option<Duration>,
        output: Option<mpsc::UnboundedSender<RemoteOutput>>,
    ) -> Result<(RemoteServer, Option<ReadyLine>), SshError> {
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
            let line = Zeroizing::new(secrets.map(Secrets::to_line).unwrap_or_default());
            let line = if line.ends_with('\n') {
                line
            } else {
                Zeroizing::new(format!("{}\n", line.as_str()))
            };
            pipe.write_all(line.as_bytes())
                .await
                .map_err(SshError::io("write the secrets line to ssh"))?;
            pipe.flush()
                .await
                .map_err(SshError::io("write the secrets line to ssh"))?;
        }
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let (pgid_tx, pgid_rx) = oneshot::channel::<u32>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<ReadyLine, String>>();
        if let Some(out) = child.stdout.take() {
            let output = output.clone();
            tokio::spawn(async move {
                let mut router = StdoutRouter::new(pgid_tx, ready_tx, output);
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    router.route(line);
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            let tail = Arc::clone(&stderr_tail);
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    {
                        let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                        if t.len() == TAIL_LINES {
                            t.pop_front();
                        }
                        t.push_back(line.clone());
                    }
                    if let Some(o) = &output {
                        let _ = o.send(RemoteOutput::Stderr(line));
                    }
                }
            });
        }
        let mut server = RemoteServer {
            child,
            stdin,
            pgid: None,
            host: host.clone(),
            stderr_tail,
            status: None,
        };
        // The wrapper's first line comes at once; without it the command never ran
        // (the master is gone, or /bin/sh is missing).
        let first = tokio::select! {
            p = pgid_rx => p.ok(),
            _ = tokio::time::sleep(ready_timeout.unwrap_or(STOP_GRACE * 5)) => None,
        };
        match first {
            Some(p) => server.pgid = Some(p),
            None => return Err(server.ended_early(master).await),
        }
        let Some(wait) = ready_timeout else {
            return Ok((server, None));
        };
        tokio::select! {
            ready = ready_rx => match ready {
                Ok(Ok(ready)) => Ok((server, Some(ready))),
                Ok(Err(message)) => Err(SshError::BadReadyLine { host, message }),
                // Exit 0 before a ready line: the command detached its server (e.g. a
                // script that submitted a batch job), as with local starts.
                Err(_) => match tokio::time::timeout(STOP_GRACE, server.wait()).await {
                    Ok(s) if s.success() => Ok((server, None)),
                    _ => Err(server.ended_early(master).await),
                },
            },
            _ = tokio::time::sleep(wait) => {
                let log_tail = server.stderr_tail();
                server.stop(Some(master)).await;
                Err(SshError::Timeout { host, what: "waiting for the server's ready line".to_string(), waited: wait, log_tail })
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

    /// The remote process group (the wrapper's pid), once known.
    pub fn remote_pgid(&self) -> Option<u32> {
        self.pgid
    }

    /// The last lines of the remote stderr (and of the mux client's own messages).
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr_tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
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
        if let (Some(m), Some(pgid)) = (master, self.pgid) {
            let _ = m.run(&format!("kill -KILL -- -{pgid}"), STOP_GRACE).await;
        }
        let _ = self.child.start_kill();
        self.wait().await;
    }
}
