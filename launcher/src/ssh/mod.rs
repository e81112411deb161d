//! Starting a server on a remote host over ssh, with the system's OpenSSH client.
//!
//! The launcher owns one ssh *ControlMaster* per host per launch ([`Master`]): it is
//! started with `pv-askpass` as `SSH_ASKPASS` (`SSH_ASKPASS_REQUIRE=force`,
//! `NumberOfPasswordPrompts=1`, stdin `/dev/null`), so the user authenticates once, through
//! the embedding application's [`Prompter`](crate::prompt::Prompter) when one is given
//! ([`AskpassBridge`]). Everything afterwards reuses that connection through its control
//! socket (`ssh -S <ctl>`): the remote command, the tunnels, and the cleanup.
//!
//! 1. [`SshTarget`]: the destination and the ssh options, validated (no control
//!    characters, no leading `-`; `--` always precedes the destination).
//! 2. [`Master::connect`]: the control master, authenticated (prompts through the bridge).
//! 3. [`Master::forward_remote`]: for reverse connections, `-R 127.0.0.1:0:127.0.0.1:<port>`
//!    with the port the remote side allocated read back.
//! 4. [`RemoteServer::start`]: the remote command, wrapped so that it runs in its own
//!    process group which is killed when the ssh channel's stdin ends; the launch channel's
//!    secrets line goes in on that stdin, the ready line comes back on stdout.
//! 5. [`Master::forward_local`]: for forward connections,
//!    `-L 127.0.0.1:<free port>:<server host>:<server port>`: the client dials the local end.
//!
//! [`SshLaunch`] runs these steps in order and gives back an [`SshSession`]; dropping the
//! session (or [`SshSession::close`]) ends the remote process group, the forwards and the
//! master. Authentication is never retried by pv-launch (2FA lockouts).
//!
//! The pure-Rust backend, `russh_backend` (cargo feature `russh`, off by default since
//! russh 0.65 needs rustc 1.89), offers the same steps on one in-process connection;
//! [`russh_plan`] runs a plan with it (`backend = "russh"`) and says which ssh options it
//! honours. Without the feature a profile asking for it is refused with a clear error
//! before anything starts ([`SshTarget::require_backend`], [`SshError::BackendUnavailable`]).
//!
//! Known limit: a remote command containing a newline is passed inside single quotes,
//! which POSIX shells accept but a tcsh login shell does not.

mod askpass_bridge;
mod master;
mod plan_launch;
mod remote;
#[cfg(feature = "russh")]
pub mod russh_backend;
pub mod russh_plan;
mod session;
mod target;

pub use askpass_bridge::{AskpassBridge, prompt_option};
pub(crate) use master::describe as describe_status;
pub use master::{AskpassProgram, DEFAULT_SERVER_ALIVE, Master, MasterOptions, find_askpass};
pub use plan_launch::{DEFAULT_READY_TIMEOUT, is_ssh_plan, launch_plan, ssh_launch};
pub use remote::{RemoteOutput, RemoteServer, STOP_GRACE, wrap_remote_command};
pub use russh_plan::RusshSettings;
#[cfg(feature = "russh")]
pub use russh_plan::{RusshLaunch, RusshSession, russh_launch};
pub use session::{SshLaunch, SshSession, TunnelMode};
pub use target::SshTarget;

pub use crate::plan::ssh::{check_ssh_name, remote_command, sh_quote};

use std::time::Duration;

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

impl SshError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SshError {
        let what = what.into();
        move |source| SshError::Io { what, source }
    }
}
