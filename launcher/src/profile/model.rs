//! The profile model: what a loaded profile says, before anything is resolved.
//!
//! A [`Profile`] is a list of named [`ServerEntry`]s, each saying where the server is (a
//! resource), how it is started ([`Startup`]: manual, or a command through a [`Mechanism`]),
//! which options the user is asked for ([`super::options`]), and the [`Timeouts`] and
//! [`Handshake`] of the connection. Both loaders ([`super::toml`], [`super::pvsc`]) build
//! these values; nothing here knows either file format.

use std::path::PathBuf;
use std::time::Duration;

use pv_transport::Resource;

use super::error::ProfileError;
use super::options::OptionSpec;
use crate::source::{Located, SourcePos, Warning};
use crate::template::{Template, Text};

/// A loaded profile file.
#[derive(Clone, Debug)]
pub struct Profile {
    /// The file it came from.
    pub path: PathBuf,
    /// Which syntax the file used.
    pub format: ProfileFormat,
    /// The server entries, in file order.
    pub servers: Vec<ServerEntry>,
    /// Things that loaded but look wrong.
    pub warnings: Vec<Warning>,
}

/// The syntax a profile was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileFormat {
    /// pv-launch's TOML format.
    Toml,
    /// ParaView's `.pvsc` XML.
    Pvsc,
}

impl Profile {
    /// The server named `name`.
    pub fn server(&self, name: &str) -> Option<&ServerEntry> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// The entry to use: the one named `name`, or the only one when `name` is `None`.
    pub fn select(&self, name: Option<&str>) -> Result<&ServerEntry, ProfileError> {
        let names = || self.servers.iter().map(|s| s.name.clone()).collect();
        match name {
            Some(n) => self.server(n).ok_or_else(|| ProfileError::NoSuchServer {
                path: self.path.clone(),
                name: n.to_string(),
                available: names(),
            }),
            None if self.servers.len() == 1 => Ok(&self.servers[0]),
            None => Err(ProfileError::ServerNeeded {
                path: self.path.clone(),
                available: names(),
            }),
        }
    }
}

/// Default ParaView version pv-launch announces (`PV_VERSION*`, the ParaView handshake).
pub const DEFAULT_PARAVIEW_VERSION: &str = "5.11.0";

/// The names of the predefined variables (their values are worked out by
/// [`crate::variables::predefined`]). An option of the same name overrides one.
pub const PREDEFINED: &[&str] = &[
    "PV_CLIENT_HOST",
    "PV_CLIENT_PLATFORM",
    "PV_CONNECTION_URI",
    "PV_CONNECTION_SCHEME",
    "PV_SERVER_HOST",
    "PV_SERVER_PORT",
    "PV_DATA_SERVER_HOST",
    "PV_DATA_SERVER_PORT",
    "PV_RENDER_SERVER_HOST",
    "PV_RENDER_SERVER_PORT",
    "PV_SSH_PF_SERVER_PORT",
    "PV_VERSION_MAJOR",
    "PV_VERSION_MINOR",
    "PV_VERSION_PATCH",
    "PV_VERSION",
    "PV_VERSION_FULL",
    "PV_APPLICATION_NAME",
    "PV_APPLICATION_DIR",
];

/// One named server: where it is, how it starts, what the user is asked.
#[derive(Clone, Debug)]
pub struct ServerEntry {
    /// The name (unique in its profile).
    pub name: String,
    /// Where the entry was written.
    pub at: SourcePos,
    /// Where the server is and who dials whom; ports may still change through options
    /// named `PV_SERVER_PORT`, `PV_DATA_SERVER_PORT`, `PV_RENDER_SERVER_PORT`.
    pub resource: Located<Resource>,
    /// How the server is started.
    pub startup: Startup,
    /// The options the user is asked for, in order.
    pub options: Vec<OptionSpec>,
    /// Fixed assignments and platform switches, in order.
    pub assignments: Vec<Assignment>,
    /// Extra environment variables for the started process.
    pub environment: Vec<(String, Located<Template>)>,
    /// Timeouts of each stage.
    pub timeouts: Timeouts,
    /// The handshake on the connection.
    pub handshake: Handshake,
    /// The ParaView version announced in `PV_VERSION*` and the ParaView handshake.
    pub paraview_version: ParaViewVersion,
    /// A regular expression on the server's output that says it is ready (when it prints
    /// no launch-channel ready line).
    pub ready_pattern: Option<Located<String>>,
    /// The client program run once the server is ready (`client = [...]`, the server's or
    /// the profile's), its arguments templates that may use the `PV_LAUNCH_*` variables.
    pub client: Option<Vec<Located<Template>>>,
}

/// The variables a client command (`--exec`, a profile's `client`) gets, beside the
/// plan's own: what to dial or where to listen.
pub const CLIENT_VARIABLES: &[&str] = &[
    "PV_LAUNCH_URL",
    "PV_LAUNCH_HOST",
    "PV_LAUNCH_PORT",
    "PV_LAUNCH_DATA_HOST",
    "PV_LAUNCH_DATA_PORT",
    "PV_LAUNCH_RENDER_HOST",
    "PV_LAUNCH_RENDER_PORT",
    "PV_LAUNCH_SOCKET",
];

/// Fixed assignments: ParaView's `<Set>` and `<Switch>`.
#[derive(Clone, Debug, PartialEq)]
pub enum Assignment {
    /// `NAME = value`, applied before options are asked.
    Set {
        /// The variable.
        name: String,
        /// Its value (literal text).
        value: String,
        /// Where it was written.
        at: SourcePos,
    },
    /// Applied after options are answered: the first case whose value equals the
    /// variable's final value sets its variables.
    Switch {
        /// The variable looked at (an option, a set variable or a predefined one).
        variable: String,
        /// The cases in order.
        cases: Vec<SwitchCase>,
        /// Where it was written.
        at: SourcePos,
    },
}

/// One case of a switch.
#[derive(Clone, Debug, PartialEq)]
pub struct SwitchCase {
    /// The value matched.
    pub value: String,
    /// The assignments made when it matches.
    pub sets: Vec<(String, String)>,
}

/// How the server is started.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // one per server entry: size does not matter
pub enum Startup {
    /// Nothing is started: the client only dials (forward) or listens (reverse).
    Manual,
    /// A command is run.
    Command(Mechanism),
}

/// Where and how a start command runs. Later mechanisms (batch schedulers) are added as
/// variants, which is why the enum is not exhaustive.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Mechanism {
    /// A program run directly on this host.
    LocalDirect {
        /// The command line.
        command: CommandLine,
    },
    /// A user script run on this host, with every variable also in its environment.
    LocalScript {
        /// The script.
        script: Located<Template>,
        /// Its arguments.
        args: Vec<Located<Template>>,
    },
    /// A program run directly on a remote host over ssh.
    SshDirect {
        /// How ssh reaches the host.
        ssh: SshSettings,
        /// The remote command line.
        command: CommandLine,
    },
    /// A user script on a remote host, run over ssh with every variable exported.
    SshScript {
        /// How ssh reaches the host.
        ssh: SshSettings,
        /// The remote script.
        script: Located<Template>,
        /// Its arguments.
        args: Vec<Located<Template>>,
    },
    /// The server runs in a batch job (Slurm), submitted on this host or, with `ssh`, on a
    /// login node over ssh.
    Batch {
        /// How ssh reaches the login node; `None`: the scheduler's commands run here.
        ssh: Option<SshSettings>,
        /// The server's command line inside the job.
        command: CommandLine,
        /// The `[server.startup.batch]` table.
        batch: Box<BatchSettings>,
    },
}

impl Mechanism {
    /// A short name: `local`, `local-script`, `ssh`, `ssh-script`, `batch`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Mechanism::LocalDirect { .. } => "local",
            Mechanism::LocalScript { .. } => "local-script",
            Mechanism::SshDirect { .. } => "ssh",
            Mechanism::SshScript { .. } => "ssh-script",
            Mechanism::Batch { .. } => "batch",
        }
    }
}

/// A batch start's request as the profile writes it: every text field a `${NAME}`
/// template, substituted when the plan is made and then checked as a
/// [`crate::startup::batch::BatchSpec`].
#[derive(Clone, Debug)]
pub struct BatchSettings {
    /// Where the table was written.
    pub at: SourcePos,
    /// The scheduler.
    pub scheduler: crate::startup::batch::SchedulerKind,
    /// `nodes`, `ntasks`, `cpus_per_task`: a number, or a template that renders to one.
    pub nodes: Option<Located<Template>>,
    /// See `nodes`.
    pub ntasks: Option<Located<Template>>,
    /// See `nodes`.
    pub cpus_per_task: Option<Located<Template>>,
    /// `partition`.
    pub partition: Option<Located<Template>>,
    /// `account`.
    pub account: Option<Located<Template>>,
    /// `time` (a Slurm duration after substitution).
    pub time: Option<Located<Template>>,
    /// `qos`.
    pub qos: Option<Located<Template>>,
    /// `constraint`.
    pub constraint: Option<Located<Template>>,
    /// `gres`.
    pub gres: Option<Located<Template>>,
    /// `job_name`.
    pub job_name: Option<Located<Template>>,
    /// `output`.
    pub output: Option<Located<Template>>,
    /// `extra_options`, one `sbatch` argv word each.
    pub extra_options: Vec<Located<Template>>,
    /// How the server starts inside the job.
    pub in_job: crate::startup::batch::InJob,
    /// How long the job may wait in the queue; `None`: as long as it stays pending.
    pub queue_timeout: Option<Duration>,
    /// The directory of the jobs' private directories (on a file system the compute nodes
    /// share); `None`: `$HOME/.pv-launch/jobs` of the host that submits.
    pub jobs_dir: Option<Located<Template>>,
    /// How a reverse connection from a job submitted over ssh reaches the client.
    pub reverse_via: crate::startup::batch::ReverseVia,
    /// The login node's address as the compute nodes reach it (the relay listens there, the
    /// job dials it); `None`: the relay listens on all interfaces and the job dials the login
    /// node's `uname -n`.
    pub reverse_host: Option<Located<Template>>,
}

impl BatchSettings {
    /// Every template of the table with its field's name, in table order.
    pub fn templates(&self) -> impl Iterator<Item = (&'static str, &Located<Template>)> {
        let single = [
            ("nodes", &self.nodes),
            ("ntasks", &self.ntasks),
            ("cpus_per_task", &self.cpus_per_task),
            ("partition", &self.partition),
            ("account", &self.account),
            ("time", &self.time),
            ("qos", &self.qos),
            ("constraint", &self.constraint),
            ("gres", &self.gres),
            ("job_name", &self.job_name),
            ("output", &self.output),
            ("jobs_dir", &self.jobs_dir),
            ("reverse_host", &self.reverse_host),
        ];
        single
            .into_iter()
            .filter_map(|(n, t)| t.as_ref().map(|t| (n, t)))
            .chain(self.extra_options.iter().map(|t| ("extra_options", t)))
    }
}

/// A command line in one of the two variable syntaxes.
#[derive(Clone, Debug)]
pub enum CommandLine {
    /// pv-launch's: one `${NAME}` template per argv element, never re-split.
    Argv(Vec<Located<Template>>),
    /// ParaView's (`.pvsc`): `exec` and arguments joined into one line (arguments with
    /// whitespace wrapped in double quotes), `$NAME$` substituted over the whole line,
    /// then re-split into argv. See [`crate::template::paraview_line`].
    ParaViewLine {
        /// The `exec` attribute.
        exec: Located<String>,
        /// Each `Argument@value`.
        arguments: Vec<Located<String>>,
    },
}

/// How ssh reaches a remote host. Every field is resolved when the plan is made.
#[derive(Clone, Debug)]
pub struct SshSettings {
    /// The host; `None` means the resource's host (ParaView's rule).
    pub host: Option<Located<Text>>,
    /// The remote user; `None` leaves it to ssh.
    pub user: Option<Located<Text>>,
    /// The ssh port.
    pub port: Option<u16>,
    /// Jump hosts (`ssh -J`), in order.
    pub jump_hosts: Vec<String>,
    /// Identity file (`ssh -i`).
    pub identity_file: Option<PathBuf>,
    /// Extra ssh options, each one argv element, placed before `--`.
    pub extra_options: Vec<String>,
    /// The ssh program (`ssh` from `PATH` by default).
    pub program: Option<String>,
    /// Which ssh implementation runs the connection.
    pub backend: SshBackend,
    /// Remote working directory.
    pub remote_workdir: Option<Located<Template>>,
    /// Remote environment variables (exported by the remote command).
    pub remote_env: Vec<(String, Located<Template>)>,
    /// Port forwarding of the server connection through ssh.
    pub port_forwarding: Option<PortForwarding>,
    /// How ssh prompts (passwords, one-time codes) are answered.
    pub prompts: SshPrompts,
}

/// Which ssh implementation runs the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SshBackend {
    /// The system's OpenSSH client.
    #[default]
    Openssh,
    /// The in-process russh client.
    Russh,
}

/// Forward the server connection through the ssh connection (ParaView's
/// `<PortForwarding>`): forward `-L local:localhost:server`, reverse
/// `-R server:localhost:local`.
#[derive(Clone, Debug, PartialEq)]
pub struct PortForwarding {
    /// The local port; `None` means the `PV_SSH_PF_SERVER_PORT` variable if set, else the
    /// resource's port.
    pub local_port: Option<u16>,
}

/// How ssh prompts are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SshPrompts {
    /// `pv-askpass` answers (`SSH_ASKPASS`, `SSH_ASKPASS_REQUIRE=force`): the default, and
    /// what ParaView's `<Terminal>` and `<Askpass>` become.
    #[default]
    Askpass,
    /// ssh runs in batch mode (`-o BatchMode=yes`): keys or an agent only.
    BatchMode,
}

/// Timeouts of each stage.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeouts {
    /// How long the process may take to start; `None` waits without limit.
    pub process_start: Option<Duration>,
    /// What happens between starting the command and connecting.
    pub delay: Delay,
    /// How long the client keeps trying to connect (forward) or waits (reverse).
    pub connect: ConnectTimeout,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            process_start: Some(Duration::from_secs(10)),
            delay: Delay::None,
            connect: ConnectTimeout::Within(Duration::from_secs(60)),
        }
    }
}

/// What happens between starting the command and connecting.
#[derive(Clone, Debug, PartialEq)]
pub enum Delay {
    /// Connect right away (or as soon as the server's ready line arrives).
    None,
    /// Wait this long.
    Wait(Duration),
    /// Wait for the command to exit (`-1`): exit 0 means the server detached, anything
    /// else is a failure.
    UntilExit,
}

/// How long the client keeps trying to connect.
#[derive(Clone, Debug, PartialEq)]
pub enum ConnectTimeout {
    /// One attempt, no retry (`0`).
    OneAttempt,
    /// Retry until this much time has passed.
    Within(Duration),
    /// Retry (or wait) without limit (`-1` or `"forever"`).
    Forever,
}

/// The handshake on the connection.
#[derive(Clone, Debug, PartialEq)]
pub enum Handshake {
    /// pv-transport's token challenge-response.
    Native,
    /// ParaView's own (VTK communicator hash, then `paraview-M.m…` string).
    ParaView {
        /// The VTK communicator hash (32 lowercase hex characters).
        vtk_hash: String,
    },
    /// No handshake: raw bytes.
    None,
}

/// A ParaView version, e.g. `5.11.0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParaViewVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
    /// The full text, e.g. `5.11.0` or `5.11.0-RC1`.
    pub full: String,
}

impl ParaViewVersion {
    /// Parse `M.m.p` with an optional `-suffix`.
    pub fn parse(text: &str) -> Option<ParaViewVersion> {
        let core = text.split('-').next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        let (major, minor, patch) = (parts.next()??, parts.next()??, parts.next().flatten()?);
        if parts.next().is_some() {
            return None;
        }
        Some(ParaViewVersion {
            major,
            minor,
            patch,
            full: text.to_string(),
        })
    }
}

impl Default for ParaViewVersion {
    fn default() -> Self {
        ParaViewVersion::parse(DEFAULT_PARAVIEW_VERSION).expect("valid default version")
    }
}

/// The VTK communicator hash of Debian 12's `paraview` 5.11 (`pvserver` from `apt`), the
/// one checked live against a real server (see pv-transport's `handshake::paraview`).
/// Kitware's own 5.11 binaries use `86f3e537c2131aaeb456f77748ab346b`: set `vtk_hash`.
pub const DEFAULT_VTK_HASH: &str = "5e7a24e1e7033d8c49830a3775623523";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let v = ParaViewVersion::parse("5.13.2").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (5, 13, 2));
        assert_eq!(ParaViewVersion::parse("6.0.1-RC2").unwrap().patch, 1);
        assert!(ParaViewVersion::parse("5.11").is_none());
        assert!(ParaViewVersion::parse("5.x.1").is_none());
    }
}
