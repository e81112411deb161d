//! The one room that starts every server, wherever it runs, and supervises it.
//!
//! [`start`] takes the plan's [`ProcessPlan`] — how (the server's command or a script) ×
//! where (this host, or an ssh target) — and gives back the supervised [`Server`] and its
//! launch-channel ready line:
//!
//! - [`channel`]: the launch channel's exchange, written once for every start: the
//!   secrets line in, the ready line and a stderr tail out, the ready timeout and
//!   ParaView's delay/detach rule;
//! - [`local`]: a process group on this host;
//! - [`ssh`]: a command on a remote host through pv-launch's own OpenSSH control master
//!   (`ssh/openssh/`) or the in-process russh client (`ssh/russh/`, cargo feature
//!   `russh`), behind one [`ssh::SshSession`];
//! - [`batch`]: a server in a Slurm batch job (submitted here or over ssh), tracked from
//!   the queue to its end or its cancel.
//!
//! The session ([`crate::session`]) only connects to what was started.

pub mod batch;
pub mod channel;
pub mod local;
pub mod ssh;
#[cfg(test)]
mod tests;
pub mod watcher;

pub use channel::{OutputLine, STDERR_TAIL_LINES, UNLIMITED_READY_WAIT};
pub use local::{ServerHandle, TERMINATE_GRACE, spawn_group, start_local, wait_for_group_stops};

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use pv_transport::launch::{ReadyLine, Secrets};

use crate::events::{Event, EventSender};
use crate::plan::{How, Place, ProcessPlan, ReadyPattern};
use crate::profile::Delay;
use ssh::{SshError, SshOptions, SshSession};

/// What a local start produced ([`start_local`]).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per launch
pub enum Started {
    /// The process runs; the ready line, if it was awaited and came.
    Running {
        /// The running process.
        handle: ServerHandle,
        /// The launch channel's ready line.
        ready: Option<ReadyLine>,
    },
    /// The command exited 0 during the wait (`delay = -1`, or a script that returned):
    /// the server detached, as ParaView treats it.
    Detached,
}

/// A start that failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The program could not be started.
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The command exited with a failure.
    #[error("{program:?} exited with {status}{}", tail_text(stderr_tail))]
    Exited {
        /// The program.
        program: String,
        /// Its exit status, in words.
        status: String,
        /// The last lines of its stderr.
        stderr_tail: Vec<String>,
    },
    /// No ready line within the time allowed.
    #[error(
        "{program:?} printed no ready line within {}{}",
        crate::plan::render::seconds(waited),
        tail_text(stderr_tail)
    )]
    NoReadyLine {
        /// The program.
        program: String,
        /// How long pv-launch waited.
        waited: Duration,
        /// The last lines of its stderr.
        stderr_tail: Vec<String>,
    },
    /// The ready pattern did not match within the time allowed.
    #[error(
        "{program:?} printed no line matching the ready pattern {pattern:?} within {}{}",
        crate::plan::render::seconds(waited),
        tail_text(stderr_tail)
    )]
    NoReadyPattern {
        /// The program.
        program: String,
        /// The pattern.
        pattern: String,
        /// How long pv-launch waited.
        waited: Duration,
        /// The last lines of its stderr.
        stderr_tail: Vec<String>,
    },
    /// The ready line was malformed.
    #[error("bad ready line from {program:?}: {message}")]
    BadReadyLine {
        /// The program.
        program: String,
        /// What is wrong.
        message: String,
    },
    /// Starting the server over ssh failed, or the ssh connection was lost.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// A batch job could not be submitted, followed or cancelled.
    #[error("batch job: {0}")]
    Batch(#[from] batch::BatchError),
    /// The batch job ended (before its ready line, or while the session ran).
    #[error(
        "batch job {id} ended {state}{}{}{}",
        reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default(),
        exit_code.as_ref().map(|c| format!(", exit code {c}")).unwrap_or_default(),
        output_text(output_tail)
    )]
    JobEnded {
        /// The job id.
        id: String,
        /// Its final state (`FAILED`, `CANCELLED`, `TIMEOUT`, `COMPLETED`, …).
        state: String,
        /// The scheduler's reason, if any.
        reason: Option<String>,
        /// Its exit code (`status:signal`), when known.
        exit_code: Option<String>,
        /// The last lines of the job's output file.
        output_tail: Vec<String>,
    },
    /// A stage of a batch start took too long; the job was cancelled.
    #[error(
        "batch job {id}: waited {} for {what}; the job was cancelled{}{}",
        crate::plan::render::seconds(waited),
        last.as_ref().map(|l| format!(" (last seen: {l})")).unwrap_or_default(),
        output_text(output_tail)
    )]
    JobTimeout {
        /// The job id.
        id: String,
        /// What was awaited.
        what: &'static str,
        /// How long.
        waited: Duration,
        /// The last status seen, in words.
        last: Option<String>,
        /// The last lines of the job's output file (when it ran).
        output_tail: Vec<String>,
    },
}

fn output_text(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; last lines of its output:\n  {}", tail.join("\n  "))
    }
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; last lines of its stderr:\n  {}", tail.join("\n  "))
    }
}

/// An exit status in words.
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "an unknown status".to_string(),
    }
}

/// A server pv-launch started and supervises, wherever it runs.
#[derive(Debug)]
pub enum Server {
    /// A process group on this host (direct or through a script).
    Local(ServerHandle),
    /// A process group on a remote host, reached through ssh (either backend).
    Ssh(SshSession),
    /// A remote command that exited with status 0 after detaching its server (e.g. a
    /// script that submitted a batch job): the ssh connection and its tunnels stay up for
    /// the server, and only their loss ends the session.
    Detached(Box<Server>),
    /// A server in a batch job, submitted here or on a login node over ssh.
    Batch(Box<batch::BatchServer>),
}

impl Server {
    /// What supervises the server, seen through [`Server::Detached`].
    pub fn active(&mut self) -> &mut Server {
        match self {
            Server::Detached(inner) => inner.active(),
            other => other,
        }
    }

    /// The local process, when the server runs on this host and is still attached.
    pub fn local(&mut self) -> Option<&mut ServerHandle> {
        match self.active() {
            Server::Local(h) => Some(h),
            _ => None,
        }
    }

    /// The ssh session, when the server was started over ssh.
    pub fn ssh(&mut self) -> Option<&mut SshSession> {
        match self.active() {
            Server::Ssh(s) => Some(s),
            _ => None,
        }
    }

    /// The batch job, when the server runs in one.
    pub fn batch(&mut self) -> Option<&mut batch::BatchServer> {
        match self.active() {
            Server::Batch(b) => Some(b),
            _ => None,
        }
    }

    /// Where the client dials: the local end of a forward ssh tunnel.
    pub fn tunnel_address(&self) -> Option<std::net::SocketAddr> {
        match self {
            Server::Detached(inner) => inner.tunnel_address(),
            Server::Local(_) => None,
            Server::Ssh(s) => s.local_address(),
            Server::Batch(b) => b.tunnel_address(),
        }
    }

    /// Where the client dials a server that is reached directly on another host (a batch
    /// job's node and port), when that is not where the plan's resource points.
    pub fn dial_target(&self) -> Option<(String, u16)> {
        match self {
            Server::Batch(b) => b.dial_target(),
            _ => None,
        }
    }

    /// Wait until the server ends: its exit status, or an error when the ssh connection
    /// carrying it was lost or its batch job ended otherwise than completed. A detached
    /// server ends only with its connection.
    pub async fn wait(&mut self) -> Result<ExitStatus, StartError> {
        match self {
            Server::Detached(inner) => Err(StartError::Ssh(inner.connection_lost().await)),
            Server::Local(h) => Ok(h.wait().await),
            Server::Ssh(s) => Ok(s.wait().await?),
            Server::Batch(b) => b.wait().await,
        }
    }

    /// Wait until the ssh connection carrying the tunnels is lost (never, locally).
    pub async fn connection_lost(&self) -> SshError {
        match self {
            Server::Ssh(s) => s.connection_lost().await,
            Server::Detached(inner) => Box::pin(inner.connection_lost()).await,
            Server::Local(_) => std::future::pending().await,
            Server::Batch(b) => b.connection_lost().await,
        }
    }

    /// Stop the server's whole process group (and the ssh connection carrying it); for a
    /// batch job: cancel it, confirm it left the queue, remove its directory.
    pub async fn cleanup(self) {
        match self {
            Server::Detached(inner) => Box::pin(inner.cleanup()).await,
            Server::Local(mut h) => h.cleanup().await,
            Server::Ssh(s) => s.close().await,
            Server::Batch(b) => {
                let _ = (*b).cleanup().await;
            }
        }
    }
}

/// What says a start is over: the launch channel's ready line (when secrets go in), else
/// the ready pattern on the server's output, else ParaView's delay rules.
#[derive(Clone, Copy, Debug)]
pub struct Expect<'a> {
    /// The launch channel's secrets; with them a ready line is awaited.
    pub secrets: Option<&'a Secrets>,
    /// How long the ready line (or the ready pattern) may take.
    pub ready_timeout: Duration,
    /// A pattern on the output that says the server is ready.
    pub pattern: Option<&'a ReadyPattern>,
    /// Without either: the delay rule.
    pub delay: &'a Delay,
}

/// How starts are carried out beyond what the plan says.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct StartOptions {
    /// For starts over ssh: the askpass helper, the [`Prompter`](crate::prompt::Prompter)
    /// that answers ssh's prompts (`None`: pv-askpass asks with its own dialog or on the
    /// terminal), timeouts and keepalive — for either backend.
    pub ssh: SshOptions,
    /// The one-time token of a server started by hand (manual startup) that speaks the
    /// native handshake: shared with it out of band (`--token-file`, `PV_LAUNCH_TOKEN`).
    /// pv-launch makes its own token for servers it starts.
    pub token: Option<pv_transport::Token>,
}

impl StartOptions {
    /// ssh's prompts (passwords, passphrases, host keys, one-time codes) go to `prompter`.
    pub fn with_prompter(
        mut self,
        prompter: std::sync::Arc<dyn crate::prompt::Prompter + Send + Sync>,
    ) -> StartOptions {
        self.ssh.prompter = Some(prompter);
        self
    }
}

/// Start `process`: the supervised server (`None` when it detached from a local command)
/// and its ready line. `secrets` go on the launch channel; `listening` are the ports a
/// reverse connection listens on here (a reverse ssh tunnel leads to the first).
pub async fn start(
    process: &ProcessPlan,
    secrets: Option<&Secrets>,
    ready_timeout: Duration,
    options: &StartOptions,
    listening: &[u16],
    events: &EventSender,
) -> Result<(Option<Server>, Option<ReadyLine>), StartError> {
    if let How::Batch(b) = &process.how {
        let (server, ready) = batch::start(
            process,
            b,
            secrets,
            ready_timeout,
            options,
            listening,
            events,
        )
        .await?;
        return Ok((Some(Server::Batch(Box::new(server))), ready));
    }
    // ParaView's default pattern replaces its delay, and waits no longer than the delay.
    let ready_timeout = match (&process.ready_pattern, &process.delay) {
        (Some(p), Delay::Wait(d)) if !p.required && secrets.is_none() => *d,
        _ => ready_timeout,
    };
    let expect = Expect {
        secrets,
        ready_timeout,
        pattern: process.ready_pattern.as_ref(),
        delay: &process.delay,
    };
    match &process.place {
        Place::Local(command) => match start_local(command, &expect, events).await? {
            Started::Running { handle, ready } => Ok((Some(Server::Local(handle)), ready)),
            Started::Detached => Ok((None, None)),
        },
        Place::Ssh(plan) => {
            let begun = Instant::now();
            let (session, detached) =
                ssh::start(plan, &expect, &options.ssh, listening, events, begun).await?;
            let ready = session.ready().cloned();
            if let Some(r) = &ready {
                let _ = events.send(Event::Ready {
                    port: r.port,
                    elapsed: begun.elapsed(),
                });
            }
            let server = Server::Ssh(session);
            Ok(match detached {
                true => (Some(Server::Detached(Box::new(server))), None),
                false => (Some(server), ready),
            })
        }
    }
}
