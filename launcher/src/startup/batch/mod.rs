//! Batch starts: the server runs as a scheduler job (Slurm now), submitted on this host or on
//! a login node through a [`Runner`], and followed from queue to end.
//!
//! # The flow
//!
//! 1. **Plan** (pure, what `--dry-run` prints): [`BatchPlan::new`] checks the [`BatchSpec`]
//!    and renders the exact job script ([`job_script`]) and `sbatch` argv ([`sbatch_argv`]).
//! 2. **Submit**: [`BatchPlan::submit`] creates the job's private directory, writes the
//!    launch channel's secrets line into its 0600 `secrets` file (through the runner's stdin),
//!    and runs `sbatch --parsable` with the script on stdin; the job id comes back. The job is
//!    tagged `pvl-<launch id>` (name) and `pv-launch:<launch id>` (comment) so that
//!    [`Slurm::own_jobs`] finds it after a crash.
//! 3. **Track**: a [`Tracker`] polls (adaptively, one `squeue` per poll) and yields
//!    [`TrackEvent`]s: status changes (state, reason, estimated start, nodes), the server's
//!    ready line once it is in the job's stdout file, the walltime warning, and the end (final
//!    state, exit code, last lines of the job's output). An unanswering controller is
//!    [`JobState::Unknown`] and is retried, never taken as the job's death.
//! 4. **Connect**: the ready line gives the port; the node is the status's `batch_host`
//!    (it runs the script and task 0, which prints the ready line). A server that prints no
//!    ready line (pvserver: ParaView's handshake, or none) listens on the port the plan
//!    fixed, and is ready when a line of its output (the stdout file, or the job's output
//!    file) matches the ready pattern — or, without a pattern (a reverse connection), once
//!    the job runs. pv-launch never connects to such a server itself: its one connection is
//!    the client's. Forwarding (`-L` to node:port) or a reverse dial is the session's
//!    business.
//! 5. **Cancel / clean up**: [`Slurm::cancel`] (`scancel`, then polls until the job is in a
//!    final state), and [`JobFiles::remove`].
//!
//! # Threat model: why no secret is in the job
//!
//! Who sees what on a Slurm cluster:
//! - **Administrators** (root, SlurmUser, operators) see everything: job scripts
//!   (`scontrol write batch_script`, `sacct -B`, the controller's state directory), job
//!   environments (`scontrol show job -d`, `/proc` on the nodes), every file. They could also
//!   attach to the server. We do not defend against them; we only avoid *storing* the token in
//!   the scheduler's long-lived records (state save files, accounting database, backups),
//!   where it would outlive the launch and reach people who never had live root.
//! - **Other users** see, unless the site sets `PrivateData`: every job's id, name, user,
//!   state, reason, nodes, times, and with `scontrol show job` also its command, working
//!   directory, output paths, comment and submit line. So nothing secret goes into the name,
//!   the comment, the argv or any path (the launch id in them is not a secret).
//! - **Other users on the compute node** see processes' argv (`ps`), not their stdin or
//!   environment.
//!
//! The token therefore travels in a file: a 0600 `secrets` file in a freshly created 0700
//! directory owned by the user on the shared file system (home), written through the ssh
//! channel's stdin (never argv), **read once and deleted by the job** as it starts, and given
//! to the server on its stdin. The server's ready line comes back in a 0600 file in the same
//! directory: it is not secret, but the TLS fingerprint in it must not be forgeable. Exposure:
//! root and the user themselves, from submission until the job starts (and pv-launch removes
//! the directory when the session ends, also for a job that never started).
//!
//! The alternative considered was the server dialling a listener pv-launch holds to fetch the
//! token. It needs a network path from compute nodes back to the submitting host (often
//! firewalled: that is why reverse connections need relays), and that listener would itself
//! need authenticating. The file needs nothing but the shared home every batch site has, and
//! mirrors what Open OnDemand (`connection.yml` under umask 077) and HyperQueue (access file)
//! do.
//!
//! # Other schedulers
//!
//! [`Scheduler`] names the operations a batch start needs. How they map:
//!
//! | operation | Slurm | PBS Pro | LSF | Flux |
//! | --- | --- | --- | --- | --- |
//! | submit (script on stdin, id back) | `sbatch --parsable` | `qsub` (prints `id.server`) | `bsub` (`Job <id> is submitted`) | `flux batch` / `flux submit` (prints the id) |
//! | status, reason | `squeue -h -o` | `qstat -f -F json -x id` (`job_state`, `comment`) | `bjobs -o "stat pend_reason" -json id` | `flux jobs -o` / `flux jobs --json` |
//! | time left | `squeue %L` | `Resource_List.walltime` − `resources_used.walltime` | `bjobs -o time_left` | `flux jobs -o {t_remaining}` |
//! | estimated start | `squeue %S` (`--start`) | `qstat -T` (`estimated.start_time`) | `bjobs -o estimated_start_time` (with a plan) | none (schedulers may set `t_estimate`) |
//! | cancel | `scancel` | `qdel` | `bkill` | `flux cancel` |
//! | final state after the queue forgets | `sacct` / `scontrol show job` | `qstat -x` | `bjobs -a` / `bhist` | `flux jobs -a` |
//! | own tagged jobs | `squeue --me -o` + name prefix | `qselect -u $USER -N pvl-…` | `bjobs -J "pvl-*"` | `flux jobs --name` |

mod relay;
mod runner;
mod script;
mod slurm;
mod spec;
mod start;
mod status;
#[cfg(test)]
mod tests;
mod track;

use std::future::Future;
use std::time::Duration;

pub use relay::{RELAY_PROBE, describe as describe_reverse, relay_argv};
pub use runner::{
    CommandOutput, CountingRunner, DEFAULT_COMMAND_TIMEOUT, LocalRunner, RunError, Runner,
};
pub use script::{
    EXIT_NO_SECRETS, FilesError, JobFiles, ReadFileError, find_ready_line, job_script, sh_quote,
    tail_lines,
};
pub use slurm::{
    COMMENT_PREFIX, ParseError, SQUEUE_FORMAT, Slurm, parse_sacct, parse_sbatch,
    parse_scontrol_job, parse_squeue_line, parse_time_left, sbatch_argv,
};
pub use spec::{
    BatchSpec, InJob, JOB_NAME_PREFIX, LaunchId, ReverseVia, SchedulerKind, SpecError, TimeError,
    WallTime, expand_output,
};
pub use start::{BatchServer, HostRunner, SshRunner, finish_pending_cancels, job_event, start};
pub use status::{ExitCode, JobId, JobState, JobStatus, OTHER_FINAL_STATES};
pub use track::{
    DEFAULT_FIRST_POLL, DEFAULT_POLL_CAP, DEFAULT_WALLTIME_LEAD, OUTPUT_TAIL_LINES, PollSchedule,
    READY_POLL_CAP, TrackEvent, Tracker, WalltimeWarning, find_matching_line,
};

/// How long [`BatchPlan::cancel`] waits for the scheduler to confirm, by default.
pub const DEFAULT_CANCEL_CONFIRM: Duration = Duration::from_secs(30);

/// A batch start that failed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The batch specification is not acceptable.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The job directory could not be prepared.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// A scheduler command could not be run.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The scheduler refused the job.
    #[error("the job was not submitted: {reason} (command: {argv})")]
    Submit {
        /// The submit command, as words joined by spaces (no secret is on it).
        argv: String,
        /// What the scheduler said.
        reason: String,
    },
    /// A scheduler command's output does not read as expected.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The controller does not answer a query that has no "unknown" answer (a job list).
    #[error("the batch controller does not answer: {0}")]
    Controller(String),
    /// `scancel` failed.
    #[error("cannot cancel job {id}: {reason}")]
    Cancel {
        /// The job.
        id: JobId,
        /// What the scheduler said.
        reason: String,
    },
    /// The job was cancelled but did not reach a final state in time.
    #[error("job {} was cancelled but still shows {} after {within:?}", last.id, last.state)]
    CancelNotConfirmed {
        /// The last status seen.
        last: Box<JobStatus>,
        /// How long we waited.
        within: Duration,
    },
    /// The job's stdout file holds a ready line that does not parse.
    #[error(transparent)]
    Ready(ReadFileError),
}

/// The operations a batch start needs from a scheduler (see the module doc for how PBS Pro,
/// LSF and Flux map onto them). Time left and estimated start are fields of [`JobStatus`].
pub trait Scheduler: Send + Sync {
    /// Submit `script` with `argv` (the submit command's words); the job id.
    fn submit(
        &self,
        argv: &[String],
        script: &str,
    ) -> impl Future<Output = Result<JobId, BatchError>> + Send;

    /// The status of each of `ids`, in order (one query to the controller).
    fn status(
        &self,
        ids: &[JobId],
    ) -> impl Future<Output = Result<Vec<JobStatus>, BatchError>> + Send;

    /// Cancel `id` and confirm it ended within `within`; its final status.
    fn cancel(
        &self,
        id: &JobId,
        within: Duration,
    ) -> impl Future<Output = Result<JobStatus, BatchError>> + Send;

    /// This user's active jobs whose name starts with `name_prefix`.
    fn own_jobs(
        &self,
        name_prefix: &str,
    ) -> impl Future<Output = Result<Vec<JobStatus>, BatchError>> + Send;
}

/// Everything a batch start will do, rendered and checked, before anything runs: what
/// `--dry-run` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchPlan {
    /// The request.
    pub spec: BatchSpec,
    /// The launch id the job is tagged with.
    pub launch_id: LaunchId,
    /// The job's private files.
    pub files: JobFiles,
    /// The exact job script (no secret in it).
    pub script: String,
    /// The exact `sbatch` argv (the script goes on its stdin).
    pub sbatch_argv: Vec<String>,
}

/// A submitted job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// Its id.
    pub job_id: JobId,
    /// Its output file (stderr of the server, messages of the script).
    pub output: String,
}

impl BatchPlan {
    /// Check `spec` and render the script and argv for running `server_argv` (with the
    /// non-secret `env`) in a job of launch `launch_id`, with its files under `jobs_dir` (an
    /// absolute directory on a file system the compute nodes share).
    pub fn new(
        spec: BatchSpec,
        launch_id: LaunchId,
        jobs_dir: &str,
        server_argv: &[String],
        env: &[(String, String)],
    ) -> Result<BatchPlan, BatchError> {
        spec.validate()?;
        let files = JobFiles::new(jobs_dir, &launch_id)?;
        let script = job_script(&spec, &files, server_argv, env, &launch_id)?;
        let sbatch_argv = sbatch_argv(&spec, &launch_id, &files);
        Ok(BatchPlan {
            spec,
            launch_id,
            files,
            script,
            sbatch_argv,
        })
    }

    /// Stage the secrets line and submit. On a refused submission the job directory is
    /// removed again (the secrets with it).
    pub async fn submit<R: Runner>(
        &self,
        slurm: &Slurm<R>,
        secrets_line: &[u8],
    ) -> Result<Submitted, BatchError> {
        self.files.stage(slurm.runner(), secrets_line).await?;
        match slurm.submit(&self.sbatch_argv, &self.script).await {
            Ok(job_id) => Ok(Submitted {
                output: self.files.output_for(&self.spec, job_id.as_str()),
                job_id,
            }),
            Err(e) => {
                let _ = self.files.remove(slurm.runner()).await;
                Err(e)
            }
        }
    }

    /// A tracker for the submitted job that also watches its ready line and output.
    pub fn tracker<'a, R: Runner>(&self, slurm: &'a Slurm<R>, job: &Submitted) -> Tracker<'a, R> {
        Tracker::new(slurm, job.job_id.clone()).with_files(self.files.clone(), job.output.clone())
    }

    /// Cancel the job (confirming within [`DEFAULT_CANCEL_CONFIRM`]) and remove its files.
    pub async fn cancel<R: Runner>(
        &self,
        slurm: &Slurm<R>,
        job: &Submitted,
    ) -> Result<JobStatus, BatchError> {
        let st = slurm.cancel(&job.job_id, DEFAULT_CANCEL_CONFIRM).await;
        let removed = self.files.remove(slurm.runner()).await;
        let st = st?;
        removed?;
        Ok(st)
    }
}
