//! A batch start, typed: the checked [`BatchSpec`], the launch id the job is tagged with,
//! where the job's private directory goes, and the server's command inside the job. The
//! job script and the `sbatch` argv are rendered from it by [`BatchStart::batch_plan`] —
//! the same function for `--dry-run` and for the submission.

use std::time::Duration;

use crate::startup::batch::{BatchError, BatchPlan, BatchSpec, LaunchId, ReverseVia};

/// Where the jobs' private directories are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobsDir {
    /// This absolute directory (known when the plan is made: a local submission, or a
    /// `jobs_dir` written in the profile).
    Path(String),
    /// `$HOME/.pv-launch/jobs` on the login node, read there when the launch runs.
    RemoteHome,
}

/// What the dry run shows for the login node's home directory, read at run time.
pub const REMOTE_HOME_PLACEHOLDER: &str = "/<login node $HOME>";

impl JobsDir {
    /// The directory under `home` (the submitting host's `$HOME`) for [`JobsDir::RemoteHome`].
    pub fn under(&self, home: &str) -> String {
        match self {
            JobsDir::Path(p) => p.clone(),
            JobsDir::RemoteHome => format!("{}/.pv-launch/jobs", home.trim_end_matches('/')),
        }
    }
}

/// What the server's argv and environment hold for the host it dials back to, in a reverse
/// connection from a job submitted over ssh: replaced when the launch runs by the login
/// node's address ([`ReverseBatch::host`], else its `uname -n`).
pub const REVERSE_HOST_PLACEHOLDER: &str = "<login node host>";

/// What they hold for the port the job dials: the relay's port (chosen by the login node when
/// the relay starts), or the `-R` tunnel's port with [`ReverseVia::GatewayPorts`].
pub const REVERSE_PORT_PLACEHOLDER: &str = "<login node port>";

/// The way back from a job submitted over ssh to a client that waits for a reverse
/// connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReverseBatch {
    /// Through pv-launch's relay, or an `-R` port sshd binds on all interfaces.
    pub via: ReverseVia,
    /// The login node's address as compute nodes reach it (`reverse_host`); the relay
    /// listens on it. `None`: the relay listens on all interfaces, the job dials `uname -n`.
    pub host: Option<String>,
}

/// A server started in a batch job.
#[derive(Clone, Debug)]
pub struct BatchStart {
    /// The request to the scheduler, checked.
    pub spec: BatchSpec,
    /// The id the job is tagged with (`pvl-<id>`), fresh for every launch.
    pub launch_id: LaunchId,
    /// Where the job's private directory goes.
    pub jobs_dir: JobsDir,
    /// The server's argv inside the job (never holds a secret).
    pub server_argv: Vec<String>,
    /// Non-secret variables the job script exports for the server.
    pub server_env: Vec<(String, String)>,
    /// How long the job may stay queued; `None`: as long as it is pending.
    pub queue_timeout: Option<Duration>,
    /// The server entry's name (shown by `pv-launch jobs`, carried in the job name).
    pub server: String,
    /// For a reverse connection from a job submitted over ssh: the way back. The server's
    /// argv and environment then hold [`REVERSE_HOST_PLACEHOLDER`] and
    /// [`REVERSE_PORT_PLACEHOLDER`] where the profile says `${PV_CLIENT_HOST}` and
    /// `${PV_SERVER_PORT}` ([`BatchStart::dialling`] fills them in).
    pub reverse: Option<ReverseBatch>,
    /// The port the server listens on, fixed by the plan (the resource's port,
    /// `PV_SERVER_PORT`), for a server that prints no ready line to report the one it chose
    /// (ParaView's handshake, or none). `None`: the ready line says; or a reverse
    /// connection from a job submitted over ssh, which dials a port chosen at run time.
    pub port: Option<u16>,
}

impl BatchStart {
    /// The script and `sbatch` argv, with the jobs directory resolved under `home` (the
    /// submitting host's `$HOME`).
    pub fn batch_plan(&self, home: &str) -> Result<BatchPlan, BatchError> {
        BatchPlan::new(
            self.spec.clone(),
            self.launch_id.clone(),
            &self.jobs_dir.under(home),
            &self.server_argv,
            &self.server_env,
        )
    }

    /// This start with the job dialling `host:port` (the reverse placeholders replaced).
    pub fn dialling(&self, host: &str, port: u16) -> BatchStart {
        let port = port.to_string();
        let fill = |s: &String| {
            s.replace(REVERSE_HOST_PLACEHOLDER, host)
                .replace(REVERSE_PORT_PLACEHOLDER, &port)
        };
        BatchStart {
            server_argv: self.server_argv.iter().map(fill).collect(),
            server_env: self
                .server_env
                .iter()
                .map(|(k, v)| (k.clone(), fill(v)))
                .collect(),
            ..self.clone()
        }
    }

    /// The plan as the dry run shows it: the login node's home is a placeholder.
    pub fn dry_run_plan(&self) -> Result<BatchPlan, BatchError> {
        self.batch_plan(REMOTE_HOME_PLACEHOLDER)
    }
}
