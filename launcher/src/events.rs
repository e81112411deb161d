//! Progress events: what the launcher tells the application, the human display and
//! `--json` while a launch runs.

use std::time::Duration;

/// One thing that happened during a launch.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A stage began.
    Stage {
        /// Which stage.
        stage: Stage,
        /// Time since the launch began.
        #[serde(serialize_with = "seconds")]
        elapsed: Duration,
    },
    /// A line the server (or its script, or ssh) wrote on stdout.
    Stdout {
        /// The line, without its newline.
        line: String,
    },
    /// A line written on stderr.
    Stderr {
        /// The line, without its newline.
        line: String,
    },
    /// The server's launch-channel ready line arrived.
    Ready {
        /// The port it reported.
        port: u16,
        /// Time since the launch began.
        #[serde(serialize_with = "seconds")]
        elapsed: Duration,
    },
    /// The started process exited.
    Exited {
        /// Its exit code, or `None` when a signal ended it.
        code: Option<i32>,
    },
    /// The launch is connected: the handshake (and TLS) succeeded at this URL.
    Connected {
        /// The connection URL.
        url: String,
    },
    /// The CLI relays the connection to local programs through this Unix socket.
    Relay {
        /// The socket's path (`PV_LAUNCH_SOCKET` for `--exec`).
        socket: String,
    },
    /// The CLI was interrupted (Ctrl-C, SIGTERM): the running stage, if any, is abandoned
    /// and [`Stage::Cleanup`] follows.
    Interrupted {
        /// The signal's name: `SIGINT` or `SIGTERM`.
        signal: String,
        /// Time since the launch began.
        #[serde(serialize_with = "seconds")]
        elapsed: Duration,
    },
    /// Every process the launch started is stopped (the end of [`Stage::Cleanup`]).
    CleanedUp {
        /// How long stopping took.
        #[serde(serialize_with = "seconds")]
        took: Duration,
        /// Time since the launch began.
        #[serde(serialize_with = "seconds")]
        elapsed: Duration,
    },
    /// A message of pv-launch's own (a connect attempt retried, a readiness note): not
    /// the server's output.
    Note {
        /// The message.
        message: String,
    },
    /// The path to the server is ready and handed to the client, which runs its own
    /// handshake: `url` says what it does (`cs://…` dial, `csrc://…` listen).
    Handoff {
        /// The URL in ParaView's forms, as the client gets it in `PV_LAUNCH_URL`.
        url: String,
    },
    /// The client program started (in its own process group).
    Client {
        /// Its process id.
        pid: u32,
        /// Its command line, as shown to the user.
        command: String,
    },
    /// The client program ended.
    ClientExited {
        /// Its exit code (`None`: killed by a signal).
        code: Option<i32>,
    },
    /// A batch job's status changed (state, reason, estimated start, nodes), from the
    /// scheduler's view.
    Job {
        /// The job id.
        id: String,
        /// Slurm's state name: `PENDING`, `RUNNING`, `COMPLETED`, …, or `UNKNOWN` while the
        /// controller does not answer.
        state: String,
        /// Why it is in that state (`Priority`, `Resources`, …), when the scheduler says.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// A pending job's expected start, in seconds since the Unix epoch.
        #[serde(skip_serializing_if = "Option::is_none")]
        estimated_start: Option<u64>,
        /// The nodes it holds, once allocated.
        #[serde(skip_serializing_if = "Option::is_none")]
        nodes: Option<String>,
        /// A running job's time before its walltime limit.
        #[serde(
            skip_serializing_if = "Option::is_none",
            serialize_with = "optional_seconds"
        )]
        time_left: Option<Duration>,
    },
    /// A batch job's walltime limit is near: the server will be killed then.
    WalltimeWarning {
        /// The job id.
        id: String,
        /// Time left when this was noticed.
        #[serde(serialize_with = "seconds")]
        time_left: Duration,
    },
    /// Something failed.
    Failed {
        /// What, in one line.
        message: String,
    },
}

/// The stages of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Connecting to the remote host over ssh and authenticating (prompts happen here).
    SshConnect,
    /// Starting the command.
    Start,
    /// Waiting for the server's ready line.
    WaitReady,
    /// Waiting the configured delay.
    Delay,
    /// Waiting for the command to exit (`delay = -1`).
    WaitExit,
    /// Submitting a batch job.
    Submit,
    /// Waiting for the batch job to leave the queue (its state changes are [`Event::Job`]s).
    WaitJob,
    /// Connecting (or listening for the server).
    Connect,
    /// Waiting until the client listens for the server's reverse connection.
    WaitClient,
    /// Waiting for the server's output to match its ready pattern.
    WaitPattern,
    /// Stopping processes.
    Cleanup,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

fn optional_seconds<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => seconds(d, s),
        None => s.serialize_none(),
    }
}

/// Where events go.
pub type EventSender = tokio::sync::mpsc::UnboundedSender<Event>;
