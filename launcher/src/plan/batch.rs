//! A batch start, typed: the checked [`BatchSpec`], the launch id the job is tagged with,
//! where the job's private directory goes, and the server's command inside the job. The
//! job script and the `sbatch` argv are rendered from it by [`BatchStart::batch_plan`] —
//! the same function for `--dry-run` and for the submission.

use std::time::Duration;

use crate::startup::batch::{BatchError, BatchPlan, BatchSpec, LaunchId};

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

    /// The plan as the dry run shows it: the login node's home is a placeholder.
    pub fn dry_run_plan(&self) -> Result<BatchPlan, BatchError> {
        self.batch_plan(REMOTE_HOME_PLACEHOLDER)
    }
}
