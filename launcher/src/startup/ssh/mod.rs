//! Starting a server on a remote host over ssh, with either backend behind one face.
//!
//! The launcher owns one authenticated connection per host per launch ([`SshHost`]):
//! - `openssh/`: pv-launch's own OpenSSH *ControlMaster* ([`Master`]), started with
//!   `pv-askpass` as `SSH_ASKPASS` (`SSH_ASKPASS_REQUIRE=force`,
//!   `NumberOfPasswordPrompts=1`, stdin `/dev/null`), so the user authenticates once,
//!   through the embedding application's [`Prompter`] when one
//!   is given ([`AskpassBridge`]); the remote command, the tunnels and the cleanup are
//!   mux clients of it (`ssh -S <ctl>`), rendered from the plan's typed target
//!   ([`crate::plan::ssh::OpenSshCommands`]);
//! - `russh/` (cargo feature `russh`): one in-process connection, prompts through the
//!   same prompter (or the askpass program, as ssh would run it).
//!
//! Whichever backend, one launch runs the same steps ([`SshLaunch::start_on`]):
//! 1. for a reverse connection, the `-R` tunnel (the remote side may choose its port);
//! 2. the remote command, wrapped ([`crate::plan::ssh::wrap_remote_command`]) in a small
//!    POSIX sh script that prints its process group, reads the launch channel's secrets
//!    line from stdin (a `read` builtin: the secret is never on an argv nor in an
//!    environment), runs the server, and — when the channel's stdin ends because
//!    pv-launch closed it, was killed, or the connection was lost — sends SIGTERM to its
//!    whole group, then SIGKILL after [`STOP_GRACE`]. One mechanism covers cancel,
//!    Ctrl-C, a crash of pv-launch and a lost connection. The exchange itself (secrets
//!    in, ready line and stderr tail out) is the launch channel's ([`super::channel`]);
//! 3. for a forward connection, the `-L` tunnel to the port of the ready line (else the
//!    plan's): the client dials its local end.
//!
//! The result is one [`SshSession`]; dropping it (or [`SshSession::close`]) ends the
//! remote process group, the tunnels and the connection. Authentication is never retried
//! by pv-launch (2FA lockouts). A build without the `russh` feature refuses a plan asking
//! for it before anything starts ([`require_backend`]).
//!
//! Known limit: a remote command containing a newline is passed inside single quotes,
//! which POSIX shells accept but a tcsh login shell does not.

mod askpass_bridge;
mod openssh;
#[cfg(feature = "russh")]
pub mod russh;
mod session;

pub use askpass_bridge::{AskpassBridge, prompt_option};
pub use openssh::{AskpassProgram, Master, RemoteServer, find_askpass};
pub(crate) use session::{RemoteHelper, RemoteIo};
pub use session::{SshHost, SshLaunch, SshSession};

pub use crate::plan::ssh::{
    DEFAULT_SERVER_ALIVE, check_ssh_name, remote_command, sh_quote, wrap_remote_command,
};
pub use crate::plan::{SshTarget, Tunnel};
pub use crate::startup::channel::{OutputLine, OutputSink};

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Expect;
use super::channel::{self, AfterDelay, Awaited, Matched};
use crate::events::{Event, EventSender, Stage};
use crate::plan::SshPlan;
use crate::profile::SshBackend;
use crate::prompt::Prompter;

/// How long the remote watcher waits after SIGTERM before SIGKILL, and roughly how long
/// a stop gives the remote side before killing the group itself.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// How ssh connections are made, whichever backend: who answers prompts, timeouts,
/// keepalive.
#[derive(Clone)]
pub struct SshOptions {
    /// The askpass helper (OpenSSH runs it; the russh backend runs it too when there is
    /// no prompter).
    pub askpass: AskpassProgram,
    /// Who answers ssh's prompts. `None`: the helper asks on its own (dialog or
    /// terminal); `Some`: every prompt comes to this prompter (over the bridge socket for
    /// OpenSSH).
    pub prompter: Option<Arc<dyn Prompter + Send + Sync>>,
    /// How long connecting and authenticating may take, prompts included.
    pub auth_timeout: Duration,
    /// ssh's `ConnectTimeout` (TCP connect and banner exchange), whole seconds.
    pub connect_timeout: Duration,
    /// `ServerAliveInterval` (seconds) and `ServerAliveCountMax`.
    pub server_alive: (u32, u32),
    /// How long each control command (`-O check`, `-O forward`, `-O exit`) may take.
    pub control_timeout: Duration,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            askpass: AskpassProgram::Auto,
            prompter: None,
            auth_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(20),
            server_alive: DEFAULT_SERVER_ALIVE,
            control_timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for SshOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshOptions")
            .field("askpass", &self.askpass)
            .field("prompter", &self.prompter.is_some())
            .field("auth_timeout", &self.auth_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("server_alive", &self.server_alive)
            .field("control_timeout", &self.control_timeout)
            .finish()
    }
}

/// Refuse a backend this build cannot run: [`SshBackend::Russh`] needs the cargo
/// feature `russh`; without it a profile with `backend = "russh"` fails before anything
/// starts.
pub fn require_backend(backend: SshBackend) -> Result<(), SshError> {
    match backend {
        SshBackend::Openssh => Ok(()),
        SshBackend::Russh if cfg!(feature = "russh") => Ok(()),
        SshBackend::Russh => Err(SshError::BackendUnavailable("russh")),
    }
}

fn stage(events: &EventSender, stage: Stage, begun: Instant) {
    let _ = events.send(Event::Stage {
        stage,
        elapsed: begun.elapsed(),
    });
}

/// Start `plan`'s server over ssh: authenticate (the `ssh-connect` stage), run the remote
/// command with `secrets` on its stdin and open the plan's tunnel (a reverse one leads to
/// the first port in `listening`), then, when no ready line is awaited, follow `delay`.
/// The session, and whether the remote command detached its server (it exited 0).
pub async fn start(
    plan: &SshPlan,
    expect: &Expect<'_>,
    options: &SshOptions,
    listening: &[u16],
    events: &EventSender,
    begun: Instant,
) -> Result<(SshSession, bool), SshError> {
    // Before anything starts: a build without the plan's backend refuses it.
    require_backend(plan.backend_kind())?;
    let mut tunnel = plan.tunnels.first().cloned();
    if let (Some(Tunnel::Remote { local_port, .. }), Some(port)) = (&mut tunnel, listening.first())
    {
        *local_port = *port;
    }
    if let Some(Tunnel::Remote { remote_port: 0, .. }) = tunnel {
        return Err(SshError::Invalid(
            "a reverse ssh tunnel from a profile needs a fixed server port (the resource's port)"
                .to_string(),
        ));
    }
    let secrets = expect.secrets;
    let launch = SshLaunch {
        target: plan.target.clone(),
        options: options.clone(),
        tunnel,
        ready_timeout: secrets.is_some().then_some(expect.ready_timeout),
        pattern: expect.pattern.map(|p| p.regex.clone()),
    };
    stage(events, Stage::SshConnect, begun);
    let host = SshHost::connect(&plan.target, &plan.backend, options).await?;
    stage(events, Stage::Start, begun);
    if secrets.is_some() {
        stage(events, Stage::WaitReady, begun);
    }
    let output = Some(channel::events_sink(events));
    let command = plan.command();
    let mut session = launch
        .start_on(host, move |_| command, secrets, output)
        .await?;
    if session.ready().is_some() {
        return Ok((session, false));
    }
    // The ready line was awaited and the command exited 0 without one: detached.
    if secrets.is_some() {
        return Ok((session, true));
    }
    if let Some(pattern) = expect.pattern {
        stage(events, Stage::WaitPattern, begun);
        return match session.await_pattern(expect.ready_timeout).await? {
            Matched::Line(_) => Ok((session, false)),
            Matched::Detached => Ok((session, true)),
            Matched::Failed(status) => Err(session.exit_error(status)),
            Matched::NotSeen(waited) if pattern.required => Err(SshError::Timeout {
                host: session.host().display_name(),
                what: format!(
                    "waiting for a line matching the ready pattern {:?}",
                    pattern.regex.as_str()
                ),
                waited,
                log_tail: session.stderr_tail(),
            }),
            Matched::NotSeen(waited) => {
                let _ = events.send(channel::pattern_not_seen(pattern, waited));
                Ok((session, false))
            }
        };
    }
    match channel::follow_delay(expect.delay, session.wait(), events, begun).await? {
        AfterDelay::Running => Ok((session, false)),
        AfterDelay::Detached => Ok((session, true)),
        AfterDelay::Failed(status) => Err(session.exit_error(status)),
    }
}

/// The remote half of the launch channel's start, the same for both backends: the
/// wrapper's process-group line first (it comes at once; without it the command never
/// ran), then, when one is awaited, the ready line.
pub(crate) struct RemoteStart {
    /// The remote process group, when the wrapper printed it.
    pub pgid: Option<u32>,
    /// How the wait for the ready line ended (`None`: none was awaited).
    pub awaited: Option<Awaited>,
}

/// What a backend makes of a [`RemoteStart`].
pub(crate) enum RemoteOutcome {
    /// The server runs (with its ready line when one was awaited and came), or it
    /// detached (exit 0 before a ready line).
    Started(Option<pv_transport::launch::ReadyLine>),
    /// The command ended, or never ran: the backend says why.
    EndedEarly,
    /// A malformed ready line.
    BadLine(String),
    /// No ready line in time.
    TimedOut(Duration),
}

impl RemoteStart {
    pub(crate) fn outcome(self) -> RemoteOutcome {
        if self.pgid.is_none() {
            return RemoteOutcome::EndedEarly;
        }
        match self.awaited {
            None | Some(Awaited::Detached) => RemoteOutcome::Started(None),
            Some(Awaited::Ready(r)) => RemoteOutcome::Started(Some(r)),
            Some(Awaited::BadLine(m)) => RemoteOutcome::BadLine(m),
            Some(Awaited::Failed(_)) => RemoteOutcome::EndedEarly,
            Some(Awaited::TimedOut(d)) => RemoteOutcome::TimedOut(d),
        }
    }
}

/// Wait for the wrapper's process-group line (up to the ready timeout, else 10 s), then
/// for the ready line while `exit` may come first.
pub(crate) async fn remote_start(
    readers: channel::Readers,
    exit: impl std::future::Future<Output = std::process::ExitStatus>,
    ready_timeout: Option<Duration>,
) -> RemoteStart {
    let first = tokio::time::timeout(ready_timeout.unwrap_or(STOP_GRACE * 5), readers.pgid).await;
    let pgid = match first {
        Ok(Ok(p)) => Some(p),
        _ => None,
    };
    let awaited = match (pgid, ready_timeout) {
        (Some(_), Some(wait)) => Some(channel::await_ready(readers.ready, exit, wait).await),
        _ => None,
    };
    RemoteStart { pgid, awaited }
}

/// Something went wrong with ssh. Messages never contain a secret; where it helps they
/// say how to reproduce by hand (the ssh command) and end with the last lines of ssh's log.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// A host, user or option that ssh could misread.
    #[error("invalid ssh setting: {0}")]
    Invalid(String),
    /// The profile asks for an ssh backend this build does not have.
    #[error(
        "the {0} ssh backend is not available in this build (pv-launch's cargo feature `{0}`); use backend = \"openssh\""
    )]
    BackendUnavailable(&'static str),
    /// The askpass helper could not be found.
    #[error(
        "cannot find pv-askpass (looked beside {beside} and on PATH): install it next to pv-launch or put it on PATH"
    )]
    AskpassMissing {
        /// The directory looked in first.
        beside: String,
    },
    /// A local resource (temporary directory, socket, process) could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The user cancelled a prompt (password, passphrase, host key question).
    #[error("ssh to {host}: cancelled by the user at the prompt {prompt:?}")]
    Cancelled {
        /// The destination.
        host: String,
        /// The prompt that was cancelled (never the answer).
        prompt: String,
    },
    /// The user refused an unknown or changed host key.
    #[error("ssh to {host}: host key not accepted ({prompt})")]
    HostKeyRefused {
        /// The destination.
        host: String,
        /// The first line of ssh's question.
        prompt: String,
    },
    /// ssh could not connect or authenticate.
    #[error(
        "ssh to {host} failed ({status}); reproduce with: {command}{}",
        tail(log_tail)
    )]
    Connect {
        /// The destination.
        host: String,
        /// How the master ended.
        status: String,
        /// The command line that was run (no secret is ever on it).
        command: String,
        /// The last lines of ssh's log.
        log_tail: Vec<String>,
    },
    /// A step took longer than allowed.
    #[error("ssh to {host}: {what} did not finish within {}s{}", waited.as_secs_f64(), tail(log_tail))]
    Timeout {
        /// The destination.
        host: String,
        /// The step.
        what: String,
        /// How long pv-launch waited.
        waited: Duration,
        /// The last lines of ssh's log or of the remote stderr.
        log_tail: Vec<String>,
    },
    /// A port forward could not be set up.
    #[error("ssh to {host}: port forward {spec} failed: {message}")]
    Forward {
        /// The destination.
        host: String,
        /// The forward (`-L …` or `-R …`).
        spec: String,
        /// ssh's message.
        message: String,
    },
    /// The remote command ended before its ready line.
    #[error(
        "ssh to {host}: the remote command ended ({status}) before its ready line{}",
        tail(stderr_tail)
    )]
    RemoteExited {
        /// The destination.
        host: String,
        /// How it ended.
        status: String,
        /// The last lines of its stderr.
        stderr_tail: Vec<String>,
    },
    /// The remote command printed a malformed ready line.
    #[error("ssh to {host}: bad ready line: {message}")]
    BadReadyLine {
        /// The destination.
        host: String,
        /// What is wrong.
        message: String,
    },
    /// The master connection ended while the session ran: the forwards are gone.
    #[error(
        "ssh to {host}: the ssh connection ended (control master gone, forwards closed){}",
        tail(log_tail)
    )]
    ConnectionLost {
        /// The destination.
        host: String,
        /// The last lines of ssh's log.
        log_tail: Vec<String>,
    },
}

fn tail(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; last lines of ssh's output:\n  {}", lines.join("\n  "))
    }
}

impl From<crate::plan::InvalidSsh> for SshError {
    fn from(e: crate::plan::InvalidSsh) -> Self {
        SshError::Invalid(e.0)
    }
}

impl SshError {
    /// No ready line from the remote server within `waited`.
    pub(crate) fn ready_timeout(host: String, waited: Duration, log_tail: Vec<String>) -> SshError {
        SshError::Timeout {
            host,
            what: "waiting for the server's ready line".to_string(),
            waited,
            log_tail,
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SshError {
        let what = what.into();
        move |source| SshError::Io { what, source }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_backend_a_build_has() {
        assert!(super::require_backend(crate::profile::SshBackend::Openssh).is_ok());
        assert_eq!(
            super::require_backend(crate::profile::SshBackend::Russh).is_ok(),
            cfg!(feature = "russh")
        );
    }

    /// A build without the backend refuses a russh plan before anything starts (no
    /// connection is tried: the host does not exist).
    #[cfg(not(feature = "russh"))]
    #[tokio::test]
    async fn a_build_without_russh_refuses_the_launch() {
        let text = "[[server]]\nname = \"r\"\nresource = \"cs://127.0.0.1:0\"\n\
                    [server.startup]\nmechanism = \"ssh\"\nargv = [\"pvserver\"]\n\
                    [server.startup.ssh]\nhost = \"nowhere.invalid\"\nbackend = \"russh\"\n";
        let profile = crate::profile::toml::load_str(std::path::Path::new("p.toml"), text).unwrap();
        let plan = crate::plan::Plan::resolve(
            &profile.servers[0],
            &crate::LaunchContext::fixed(),
            &crate::prompt::NonInteractive,
        )
        .unwrap();
        let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let e = crate::session::launch(&plan, &events).await.unwrap_err();
        assert!(
            matches!(
                e,
                crate::session::LaunchError::Ssh(
                    crate::startup::ssh::SshError::BackendUnavailable("russh")
                )
            ),
            "{e}"
        );
        drop(events);
        // Not even the ssh-connect stage began.
        assert!(rx.recv().await.is_none());
    }
}
