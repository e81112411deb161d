//! The plan: one server entry with every option answered and every variable substituted,
//! ready to start, as typed values only. A [`Plan`] can only be made by
//! [`Plan::resolve`], so a plan always has resolved options. Where the server runs
//! ([`Place`]: this host, or an ssh target with typed options, tunnels and backend) and
//! how it starts ([`How`]) are types, not strings; command lines (the OpenSSH argv, the
//! remote shell text) are rendered from them for spawning and for `--dry-run`
//! ([`render`]), never parsed back. The ParaView handshake is the transport's own
//! configured type.

mod batch;
mod process;
pub mod render;
pub mod resolve;
pub mod russh_options;
pub mod ssh;
pub mod ssh_target;

use std::fmt;
use std::path::PathBuf;

use pv_transport::Resource;
use pv_transport::handshake::paraview::ParaViewHandshake;
use zeroize::Zeroizing;

use crate::profile::{ConnectTimeout, Delay, Timeouts};
use crate::source::{SourcePos, Warning};
pub use batch::{
    BatchStart, JobsDir, REMOTE_HOME_PLACEHOLDER, REVERSE_HOST_PLACEHOLDER,
    REVERSE_PORT_PLACEHOLDER, ReverseBatch,
};
pub use process::BATCH_HOST_PLACEHOLDER;
pub use russh_options::RusshSettings;
pub use ssh::{BackendPlan, RemoteCommand, SshPlan, Tunnel};
pub use ssh_target::{InvalidSsh, SshTarget};

/// A fully resolved launch of one server entry.
#[derive(Debug)]
pub struct Plan {
    server: String,
    at: SourcePos,
    variables: Vec<Variable>,
    launch: Launch,
    connection: ExpectedConnection,
    timeouts: Timeouts,
    warnings: Vec<Warning>,
    client: Option<ClientPlan>,
}

impl Plan {
    /// The server entry's name.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Where the entry was written.
    pub fn source(&self) -> &SourcePos {
        &self.at
    }

    /// Every resolved variable (predefined, sets, options), sorted by name.
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// What is started.
    pub fn launch(&self) -> &Launch {
        &self.launch
    }

    /// The connection the client makes or waits for once the server is started.
    pub fn connection(&self) -> &ExpectedConnection {
        &self.connection
    }

    /// Timeouts of each stage.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Things that look wrong but do not stop the launch.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// The profile's client program, if it names one.
    pub fn client(&self) -> Option<&ClientPlan> {
        self.client.as_ref()
    }
}

/// A resolved variable.
#[derive(Clone, Debug)]
pub struct Variable {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: Value,
    /// Where the value came from.
    pub origin: Origin,
}

/// Where a variable's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Predefined (`PV_*`).
    Predefined,
    /// A fixed assignment (`set`, or a switch case).
    Set,
    /// An option.
    Option,
    /// `--set NAME=VALUE`.
    Command,
}

/// A value that may be a secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// Ordinary text, printed in dry runs.
    Plain(String),
    /// A secret (a password option): never printed, never on a command line, wiped on drop.
    Secret(Zeroizing<String>),
}

impl Value {
    /// The text, for use (not for printing).
    pub fn expose(&self) -> &str {
        match self {
            Value::Plain(s) => s,
            Value::Secret(s) => s,
        }
    }

    /// Whether this is a secret.
    pub fn is_secret(&self) -> bool {
        matches!(self, Value::Secret(_))
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Plain(s) => write!(f, "{s:?}"),
            Value::Secret(_) => f.write_str("<secret>"),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Plain(s) => write!(f, "{s:?}"),
            Value::Secret(_) => f.write_str("<secret>"),
        }
    }
}

/// What is started.
#[derive(Debug)]
pub enum Launch {
    /// Nothing (manual startup): the client only dials or listens.
    Nothing,
    /// A process: the server, or a script that starts it, here or over ssh.
    Process(Box<ProcessPlan>),
}

/// A start: how (the server's own command, or a script) × where (this host, or a remote
/// host over ssh), and how its start is awaited.
#[derive(Debug)]
pub struct ProcessPlan {
    /// The server's command, or a script.
    pub how: How,
    /// This host, or a remote host over ssh.
    pub place: Place,
    /// How the start is awaited.
    pub delay: Delay,
    /// What in the server's output says it is ready, when it prints no launch-channel
    /// ready line (a real pvserver).
    pub ready_pattern: Option<ReadyPattern>,
}

/// A regular expression on the server's output (stdout or stderr) that says it is ready:
/// readiness without an application connection, which would use up a server that
/// accepts one client (pvserver).
#[derive(Clone, Debug)]
pub struct ReadyPattern {
    /// The expression.
    pub regex: regex_lite::Regex,
    /// Written in the profile: no match in time is an error. ParaView's default (what
    /// pvserver prints when it listens): no match in time is a note, and the client's own
    /// retry takes over, as ParaView's does.
    pub required: bool,
}

/// What Debian's pvserver 5.11 prints once it listens for a client (forward).
pub const PVSERVER_LISTENING: &str = r"^Accepting connection\(s\): ";

/// The client program run once the server is ready (`client = [...]`): its templates and
/// the plan's variables, rendered when the `PV_LAUNCH_*` variables are known.
#[derive(Clone, Debug)]
pub struct ClientPlan {
    argv: Vec<crate::source::Located<crate::template::Template>>,
    vars: std::collections::BTreeMap<String, String>,
    process_env: std::collections::BTreeMap<String, String>,
}

impl ClientPlan {
    pub(crate) fn new(
        argv: Vec<crate::source::Located<crate::template::Template>>,
        vars: std::collections::BTreeMap<String, String>,
        process_env: std::collections::BTreeMap<String, String>,
    ) -> ClientPlan {
        ClientPlan {
            argv,
            vars,
            process_env,
        }
    }

    /// The argv, with `launch` (the `PV_LAUNCH_*` variables) beside the plan's own.
    pub fn render(
        &self,
        launch: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<String>, PlanError> {
        self.argv
            .iter()
            .map(|t| {
                t.value
                    .render(
                        &|n| launch.get(n).or_else(|| self.vars.get(n)).cloned(),
                        &|n| self.process_env.get(n).cloned(),
                    )
                    .map_err(|e| PlanError::at(&t.at, e.message))
            })
            .collect()
    }

    /// The templates as written, for the dry run.
    pub fn written(&self) -> Vec<String> {
        self.argv
            .iter()
            .map(|t| t.value.source().to_string())
            .collect()
    }
}

impl ProcessPlan {
    /// The mechanism's name as profiles spell it: `local`, `local-script`, `ssh`,
    /// `ssh-script`, `batch`.
    pub fn mechanism(&self) -> &'static str {
        match (&self.place, &self.how) {
            (Place::Local(_), How::Direct) => "local",
            (Place::Local(_), How::Script) => "local-script",
            (Place::Ssh(_), How::Direct) => "ssh",
            (Place::Ssh(_), How::Script) => "ssh-script",
            (_, How::Batch(_)) => "batch",
        }
    }

    /// The batch job, when the server starts in one.
    pub fn batch(&self) -> Option<&BatchStart> {
        match &self.how {
            How::Batch(b) => Some(b),
            _ => None,
        }
    }

    /// The ssh part, when the start runs over ssh.
    pub fn ssh(&self) -> Option<&SshPlan> {
        match &self.place {
            Place::Ssh(ssh) => Some(ssh),
            Place::Local(_) => None,
        }
    }
}

/// How the server starts.
#[derive(Clone, Debug)]
pub enum How {
    /// The server's own command line.
    Direct,
    /// A user's script, which gets every variable in its environment.
    Script,
    /// In a batch job: submitted where [`Place`] says (this host, or a login node over
    /// ssh), the server's command in the job script.
    Batch(Box<BatchStart>),
}

/// Where the start runs.
#[derive(Debug)]
pub enum Place {
    /// A process on this host (for a batch start: the submission, `sbatch`).
    Local(LocalCommand),
    /// A command on a remote host, through ssh (for a batch start: the login node where
    /// the scheduler's commands run, with the `-L` tunnel to the job's node).
    Ssh(Box<SshPlan>),
}

/// A process on this host.
#[derive(Debug)]
pub struct LocalCommand {
    /// The argv, program first (never holds a secret).
    pub argv: Vec<String>,
    /// Variables added to pv-launch's own environment for the child.
    pub env: Vec<(String, Value)>,
    /// Working directory (`None`: pv-launch's).
    pub workdir: Option<PathBuf>,
}

/// The connection expected once the server runs.
#[derive(Debug, Clone)]
pub struct ExpectedConnection {
    /// The resource as the client uses it: final ports, and `localhost` and the tunnel's
    /// port when the connection goes through an ssh tunnel.
    pub resource: Resource,
    /// The handshake with its final settings.
    pub handshake: ResolvedHandshake,
    /// How long to keep trying.
    pub timeout: ConnectTimeout,
}

/// The handshake on the connection, with its final settings.
#[derive(Debug, Clone)]
pub enum ResolvedHandshake {
    /// pv-transport's native token handshake (the token goes to the server on the launch
    /// channel when pv-launch starts it).
    Native,
    /// ParaView's handshake, configured (version, connect id, VTK hash) as transport
    /// runs it.
    ParaView(ParaViewHandshake),
    /// No handshake.
    None,
}

/// A plan that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Something in the profile (or `--set`) makes it impossible, at a known place.
    #[error("{}{message}", at.as_ref().map(|a| format!("{a}: ")).unwrap_or_default())]
    Invalid {
        /// Where the cause was written.
        at: Option<SourcePos>,
        /// What is wrong.
        message: String,
    },
    /// The user cancelled a prompt.
    #[error("cancelled at option {0}")]
    Cancelled(String),
}

impl PlanError {
    pub(crate) fn at(at: &SourcePos, message: impl Into<String>) -> Self {
        PlanError::Invalid {
            at: Some(at.clone()),
            message: message.into(),
        }
    }

    pub(crate) fn nowhere(message: impl Into<String>) -> Self {
        PlanError::Invalid {
            at: None,
            message: message.into(),
        }
    }
}
