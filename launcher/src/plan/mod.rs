//! The plan: one server entry with every option answered and every variable substituted,
//! ready to start. A [`Plan`] can only be made by [`Plan::resolve`], so a plan always has
//! resolved options; `--dry-run` prints it ([`render`]).

pub mod render;
pub mod resolve;
pub mod ssh;

use std::fmt;
use std::path::PathBuf;

use pv_transport::Resource;
use zeroize::Zeroizing;

use crate::profile::{ConnectTimeout, Delay, SshBackend, Timeouts};
use crate::source::{SourcePos, Warning};
pub use ssh::Tunnel;

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
    /// One local process (the server, a script, or `ssh`).
    Process(Box<ProcessPlan>),
}

/// A local process to start.
#[derive(Debug)]
pub struct ProcessPlan {
    /// The mechanism's name (`local`, `local-script`, `ssh`, `ssh-script`).
    pub mechanism: &'static str,
    /// The argv, program first (never holds a secret).
    pub argv: Vec<String>,
    /// Variables added to pv-launch's own environment for the child.
    pub env: Vec<(String, Value)>,
    /// Working directory (`None`: pv-launch's).
    pub workdir: Option<PathBuf>,
    /// How the start is awaited.
    pub delay: Delay,
    /// For ssh: what runs on the remote host.
    pub remote: Option<RemotePlan>,
}

/// What an ssh mechanism runs on the remote host.
#[derive(Debug, Clone)]
pub struct RemotePlan {
    /// The destination host.
    pub host: String,
    /// The remote user, if given.
    pub user: Option<String>,
    /// The remote argv.
    pub argv: Vec<String>,
    /// The single string ssh hands to the remote login shell.
    pub command: String,
    /// Tunnels through the ssh connection.
    pub tunnels: Vec<Tunnel>,
    /// Which ssh implementation runs the connection. With
    /// [`SshBackend::Russh`] the plan's ssh argv is not run: the in-process client
    /// honours what it can of its options (checked when the plan is made, see
    /// [`crate::ssh::russh_plan`]).
    pub backend: SshBackend,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedHandshake {
    /// pv-transport's native token handshake (the token goes to the server on the launch
    /// channel when pv-launch starts it).
    Native,
    /// ParaView's handshake.
    ParaView {
        /// The layer-2 string, e.g. `paraview-5.11.renderingbackend.opengl2`.
        handshake: String,
        /// The VTK communicator hash.
        vtk_hash: String,
        /// The connect id (0 = none), from the `PV_CONNECT_ID` variable.
        connect_id: u32,
    },
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
