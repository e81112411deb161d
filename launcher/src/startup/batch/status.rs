//! What a scheduler says about a job: [`JobStatus`] and its [`JobState`].
//!
//! The states are Slurm's (the most detailed vocabulary among the schedulers we target), plus
//! two of ours: [`JobState::Unknown`] when the controller does not answer (retried, never
//! taken as the job's death: batchspawner's users lost servers to exactly that mistake) and
//! [`JobState::Gone`] when the controller answers but no longer knows the job and no
//! accounting record says how it ended.

use std::fmt;
use std::time::{Duration, SystemTime};

/// A scheduler's job id (Slurm: digits, `123_4` for an array element).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// Check and wrap an id: 1-32 characters of `[0-9A-Za-z_.+]`, starting with a digit.
    pub fn new(id: &str) -> Option<JobId> {
        let ok = !id.is_empty()
            && id.len() <= 32
            && id.starts_with(|c: char| c.is_ascii_digit())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.+".contains(&b));
        ok.then(|| JobId(id.to_string()))
    }

    /// The id as the scheduler prints it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a job is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Queued, waiting for resources or priority (see the reason).
    Pending,
    /// Allocated; nodes are booting or being set up.
    Configuring,
    /// Running.
    Running,
    /// Finishing: some processes are still being cleaned up.
    Completing,
    /// Suspended (by an administrator or by preemption).
    Suspended,
    /// Ended with exit code 0.
    Completed,
    /// Ended with a non-zero exit code or failed to launch.
    Failed,
    /// Killed at its walltime limit.
    Timeout,
    /// Cancelled (by the user, an administrator, or pv-launch).
    Cancelled,
    /// Ended because a node failed.
    NodeFail,
    /// Killed for exceeding its memory.
    OutOfMemory,
    /// Its nodes failed to boot.
    BootFail,
    /// Missed its `--deadline`.
    Deadline,
    /// Preempted (and not requeued: pv-launch submits with `--no-requeue`).
    Preempted,
    /// A state this code has no name for, as the scheduler spelt it; final when listed in
    /// [`OTHER_FINAL_STATES`].
    Other(String),
    /// The controller did not answer; the job may well be fine. Retried.
    Unknown,
    /// The controller answers but no longer knows the job (purged after `MinJobAge`), and no
    /// accounting record says how it ended.
    Gone,
}

/// Slurm states without a variant of their own that end a job.
pub const OTHER_FINAL_STATES: &[&str] = &["SPECIAL_EXIT", "REVOKED"];

impl JobState {
    /// Read Slurm's long state name (`%T`, `JobState=`, sacct's `State`, which may add
    /// ` by <uid>` to CANCELLED).
    pub fn from_slurm(s: &str) -> JobState {
        let word = s
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches('+');
        match word {
            "PENDING" => JobState::Pending,
            "CONFIGURING" => JobState::Configuring,
            "RUNNING" => JobState::Running,
            "COMPLETING" => JobState::Completing,
            "SUSPENDED" => JobState::Suspended,
            "COMPLETED" => JobState::Completed,
            "FAILED" => JobState::Failed,
            "TIMEOUT" => JobState::Timeout,
            "CANCELLED" => JobState::Cancelled,
            "NODE_FAIL" => JobState::NodeFail,
            "OUT_OF_MEMORY" => JobState::OutOfMemory,
            "BOOT_FAIL" => JobState::BootFail,
            "DEADLINE" => JobState::Deadline,
            "PREEMPTED" => JobState::Preempted,
            other => JobState::Other(other.to_string()),
        }
    }

    /// Whether the job has ended (it will not change state again).
    pub fn is_final(&self) -> bool {
        match self {
            JobState::Completed
            | JobState::Failed
            | JobState::Timeout
            | JobState::Cancelled
            | JobState::NodeFail
            | JobState::OutOfMemory
            | JobState::BootFail
            | JobState::Deadline
            | JobState::Preempted
            | JobState::Gone => true,
            JobState::Other(s) => OTHER_FINAL_STATES.contains(&s.as_str()),
            _ => false,
        }
    }

    /// Whether the job holds its allocation (running, or starting, or finishing).
    pub fn is_running(&self) -> bool {
        matches!(
            self,
            JobState::Configuring | JobState::Running | JobState::Completing
        )
    }

    /// The name to show (Slurm's spelling; `UNKNOWN` and `GONE` for ours).
    pub fn name(&self) -> &str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Configuring => "CONFIGURING",
            JobState::Running => "RUNNING",
            JobState::Completing => "COMPLETING",
            JobState::Suspended => "SUSPENDED",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Timeout => "TIMEOUT",
            JobState::Cancelled => "CANCELLED",
            JobState::NodeFail => "NODE_FAIL",
            JobState::OutOfMemory => "OUT_OF_MEMORY",
            JobState::BootFail => "BOOT_FAIL",
            JobState::Deadline => "DEADLINE",
            JobState::Preempted => "PREEMPTED",
            JobState::Other(s) => s,
            JobState::Unknown => "UNKNOWN",
            JobState::Gone => "GONE",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a job ended: Slurm's `ExitCode=status:signal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitCode {
    /// The batch script's exit status.
    pub status: i32,
    /// The signal that ended it, 0 when none.
    pub signal: i32,
}

impl ExitCode {
    /// Parse `status:signal` (or a bare `status`).
    pub fn parse(s: &str) -> Option<ExitCode> {
        let (a, b) = s.trim().split_once(':').unwrap_or((s.trim(), "0"));
        Some(ExitCode {
            status: a.parse().ok()?,
            signal: b.parse().ok()?,
        })
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.status, self.signal)
    }
}

/// One look at a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobStatus {
    /// The job.
    pub id: JobId,
    /// Its state.
    pub state: JobState,
    /// Why it is in that state (`Resources`, `Priority`, `TimeLimit`, `NonZeroExitCode`, …;
    /// for [`JobState::Unknown`], what the controller query said). `None` when there is none.
    pub reason: Option<String>,
    /// Pending jobs: when the scheduler expects to start it, once its planner has one.
    pub estimated_start: Option<SystemTime>,
    /// The nodes it holds (Slurm's compressed list, `node[01-04]`), once allocated.
    pub nodes: Option<String>,
    /// The node that runs the batch script and the first task (task 0, which prints the
    /// ready line): where a forward connection goes. Once allocated.
    pub batch_host: Option<String>,
    /// Running jobs: time left before the walltime limit (`None` when unlimited).
    pub time_left: Option<Duration>,
    /// Ended jobs: the exit code, when the scheduler still has it.
    pub exit_code: Option<ExitCode>,
    /// The job name (pv-launch's are `pvl-<launch id>…`).
    pub name: Option<String>,
}

impl JobStatus {
    /// A status saying only `state` (with `reason`).
    pub fn bare(id: JobId, state: JobState, reason: Option<String>) -> JobStatus {
        JobStatus {
            id,
            state,
            reason,
            estimated_start: None,
            nodes: None,
            batch_host: None,
            time_left: None,
            exit_code: None,
            name: None,
        }
    }

    /// Whether `other` says something new about the job: state, reason, nodes, estimated
    /// start or exit code changed. Time left alone is not a change (it moves every poll);
    /// two [`JobState::Unknown`]s are the same whatever their error text.
    pub fn differs_from(&self, other: &JobStatus) -> bool {
        if self.state != other.state {
            return true;
        }
        if self.state == JobState::Unknown {
            return false;
        }
        self.reason != other.reason
            || self.nodes != other.nodes
            || self.estimated_start != other.estimated_start
            || self.exit_code != other.exit_code
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {} {}", self.id, self.state)?;
        if let Some(r) = &self.reason {
            write!(f, " ({r})")?;
        }
        if let Some(n) = &self.nodes {
            write!(f, " on {n}")?;
        }
        if let Some(t) = self.time_left {
            write!(f, ", {}s left", t.as_secs())?;
        }
        if let Some(start) = self.estimated_start {
            match start.duration_since(SystemTime::now()) {
                Ok(d) => write!(f, ", expected to start in {}s", d.as_secs())?,
                Err(_) => write!(f, ", expected to start now")?,
            }
        }
        if let Some(e) = self.exit_code {
            write!(f, ", exit code {e}")?;
        }
        Ok(())
    }
}
