//! Slurm through its command-line clients: `sbatch`, `squeue`, `scancel`, `sacct`, `scontrol`.
//!
//! Why the CLI and not libslurm or slurmrestd: the C API changes between releases, slurmrestd
//! is often not deployed, and the clients are what every user's login node has. We ask for
//! machine-friendly output and parse it strictly:
//!
//! - `sbatch --parsable` prints `jobid[;cluster]`; the script goes on stdin (no file).
//! - status is **one** `squeue -h --states=all -j ID[,ID…] -o <fields>` call per poll, fields
//!   separated by the ASCII unit separator (it cannot occur in names or reasons), with
//!   `SLURM_TIME_FORMAT=%s` so start times are epoch seconds, not the controller's local
//!   time. Not `squeue --json`: on 22.05 it ignores `-j`/`-u` and dumps every job.
//!   `%S` is the expected start of a pending job, the same value `squeue --start` shows.
//! - a job missing from `squeue` (purged `MinJobAge` seconds after its end) is looked up with
//!   `sacct` (needs accounting, often disabled) and then `scontrol show job -o`.
//! - a controller that does not answer makes the job [`JobState::Unknown`], never dead.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::runner::{CommandOutput, RunError, Runner};
use super::script::JobFiles;
use super::spec::{BatchSpec, LaunchId, WallTime};
use super::status::{ExitCode, JobId, JobState, JobStatus};
use super::track::PollSchedule;
use super::{BatchError, Scheduler};

/// Field separator of the `squeue` format: ASCII unit separator.
const SEP: char = '\u{1f}';

/// The `squeue -o` format: id, state, reason, start (epoch), time left, nodes, batch host,
/// name.
pub const SQUEUE_FORMAT: &str = "%i\u{1f}%T\u{1f}%r\u{1f}%S\u{1f}%L\u{1f}%N\u{1f}%B\u{1f}%j";

/// What the `--comment` of a pv-launch job starts with (then the launch id).
pub const COMMENT_PREFIX: &str = "pv-launch:";

/// The `sbatch` argv for a job of launch `id` (the script goes on its stdin).
///
/// Tags: `--job-name=pvl-<id>[-<name>]` (what [`Slurm::own_jobs`] filters on) and
/// `--comment=pv-launch:<id>`. `--no-requeue`: the secrets file is read once, so a requeued
/// job could not start the server anyway.
pub fn sbatch_argv(spec: &BatchSpec, id: &LaunchId, files: &JobFiles) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "sbatch".into(),
        "--parsable".into(),
        format!("--job-name={}", spec.job_name_for(id)),
        format!("--comment={COMMENT_PREFIX}{id}"),
        format!("--output={}", files.output_pattern(spec)),
        "--no-requeue".into(),
    ];
    let mut opt = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            argv.push(format!("--{name}={v}"));
        }
    };
    opt("nodes", spec.nodes.map(|n| n.to_string()));
    opt("ntasks", spec.ntasks.map(|n| n.to_string()));
    opt("cpus-per-task", spec.cpus_per_task.map(|n| n.to_string()));
    opt("partition", spec.partition.clone());
    opt("account", spec.account.clone());
    opt("time", spec.time.map(|t| t.to_string()));
    opt("qos", spec.qos.clone());
    opt("constraint", spec.constraint.clone());
    opt("gres", spec.gres.clone());
    argv.extend(spec.extra_options.iter().cloned());
    argv
}

/// Output of a Slurm command that does not read as expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{command} output, line {line}, field `{field}` ({text:?}): {reason}")]
pub struct ParseError {
    /// The command (`squeue`, `sbatch`, `scontrol`, `sacct`).
    pub command: &'static str,
    /// 1-based line number.
    pub line: usize,
    /// The field.
    pub field: &'static str,
    /// The text of the field.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

/// `none`-like words Slurm prints for an empty field.
fn absent(s: &str) -> bool {
    matches!(s.trim(), "" | "None" | "(null)" | "N/A" | "n/a" | "Unknown")
}

/// Read `sbatch --parsable` output: `jobid[;cluster]`.
pub fn parse_sbatch(stdout: &str) -> Result<JobId, ParseError> {
    // sbatch may print warnings on stdout before the id (e.g. from job_submit plugins):
    // the id is the last non-empty line.
    let (line_no, line) = stdout
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .last()
        .unwrap_or((0, ""));
    let id = line.trim().split(';').next().unwrap_or("");
    JobId::new(id).ok_or_else(|| ParseError {
        command: "sbatch",
        line: line_no + 1,
        field: "job id",
        text: line.to_string(),
        reason: "not a job id (expected `jobid[;cluster]` from --parsable)".into(),
    })
}

/// Read one line of `squeue -h -o` [`SQUEUE_FORMAT`] output (`line` is its 1-based number).
pub fn parse_squeue_line(text: &str, line: usize) -> Result<JobStatus, ParseError> {
    let err = |field: &'static str, text: &str, reason: &str| ParseError {
        command: "squeue",
        line,
        field,
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let fields: Vec<&str> = text.split(SEP).collect();
    let [id, state, reason, start, left, nodes, host, name] = fields.as_slice() else {
        return Err(err(
            "line",
            text,
            &format!(
                "{} fields, expected 8 (id, state, reason, start, time left, nodes, batch host, name)",
                fields.len()
            ),
        ));
    };
    let id = JobId::new(id.trim()).ok_or_else(|| err("id", id, "not a job id"))?;
    if state.trim().is_empty() {
        return Err(err("state", state, "empty"));
    }
    let state = JobState::from_slurm(state.trim());
    let estimated_start = if state == JobState::Pending {
        parse_epoch(start).map_err(|r| err("start", start, &r))?
    } else {
        None
    };
    let time_left = if state.is_running() {
        parse_time_left(left).map_err(|r| err("time left", left, &r))?
    } else {
        None
    };
    Ok(JobStatus {
        id,
        state,
        reason: (!absent(reason)).then(|| reason.trim().to_string()),
        estimated_start,
        nodes: (!absent(nodes)).then(|| nodes.trim().to_string()),
        batch_host: (!absent(host)).then(|| host.trim().to_string()),
        time_left,
        exit_code: None,
        name: (!absent(name)).then(|| name.to_string()),
    })
}

/// An epoch-seconds time (`SLURM_TIME_FORMAT=%s`), or `None` for `N/A`/`Unknown`.
fn parse_epoch(s: &str) -> Result<Option<SystemTime>, String> {
    if absent(s) {
        return Ok(None);
    }
    let secs: u64 = s
        .trim()
        .parse()
        .map_err(|_| "not epoch seconds (is SLURM_TIME_FORMAT=%s honoured?)".to_string())?;
    Ok(Some(UNIX_EPOCH + Duration::from_secs(secs)))
}

/// `squeue`'s `%L`: `[days-][hours:]minutes:seconds`, or `UNLIMITED`/`NOT_SET`/`INVALID`.
pub fn parse_time_left(s: &str) -> Result<Option<Duration>, String> {
    let s = s.trim();
    if absent(s) || s == "NOT_SET" || s == "INVALID" {
        return Ok(None);
    }
    match s.parse::<WallTime>().map_err(|e| e.reason)? {
        WallTime::Limited(d) => Ok(Some(d)),
        WallTime::Unlimited => Ok(None),
    }
}

/// Read `scontrol show job -o` output (one line of `Key=Value` words).
pub fn parse_scontrol_job(text: &str) -> Result<JobStatus, ParseError> {
    let mut map = HashMap::new();
    for word in text.split_whitespace() {
        if let Some((k, v)) = word.split_once('=') {
            map.entry(k).or_insert(v);
        }
    }
    let err = |field: &'static str, reason: &str| ParseError {
        command: "scontrol",
        line: 1,
        field,
        text: map.get(field).copied().unwrap_or("").to_string(),
        reason: reason.to_string(),
    };
    let id = map
        .get("JobId")
        .and_then(|v| JobId::new(v))
        .ok_or_else(|| err("JobId", "missing or not a job id"))?;
    let state = map
        .get("JobState")
        .map(|s| JobState::from_slurm(s))
        .ok_or_else(|| err("JobState", "missing"))?;
    let get = |k: &str| map.get(k).filter(|v| !absent(v)).map(|v| v.to_string());
    Ok(JobStatus {
        reason: get("Reason"),
        nodes: get("NodeList"),
        batch_host: get("BatchHost"),
        exit_code: map.get("ExitCode").and_then(|v| ExitCode::parse(v)),
        name: get("JobName"),
        ..JobStatus::bare(id, state, None)
    })
}

/// Read `sacct -n -P -X -o JobIDRaw,State,ExitCode` output; the line of `id`, if any.
pub fn parse_sacct(text: &str, id: &JobId) -> Option<JobStatus> {
    text.lines().find_map(|l| {
        let mut f = l.split('|');
        let (jid, state, exit) = (f.next()?, f.next()?, f.next()?);
        (jid.trim() == id.as_str()).then(|| JobStatus {
            exit_code: ExitCode::parse(exit),
            ..JobStatus::bare(id.clone(), JobState::from_slurm(state), None)
        })
    })
}

/// Whether a failed Slurm client says the job id is not known (purged or never existed).
fn invalid_job_id(out: &CommandOutput) -> bool {
    out.stderr_text().contains("Invalid job id")
}

/// Slurm, driven through a [`Runner`].
#[derive(Debug)]
pub struct Slurm<R> {
    runner: R,
}

impl<R: Runner> Slurm<R> {
    /// Slurm whose commands run through `runner`.
    pub fn new(runner: R) -> Slurm<R> {
        Slurm { runner }
    }

    /// The runner.
    pub fn runner(&self) -> &R {
        &self.runner
    }

    /// The runner, to change it (open a tunnel on its ssh connection).
    pub fn runner_mut(&mut self) -> &mut R {
        &mut self.runner
    }

    /// The runner, taken back (to close the ssh connection it runs on).
    pub fn into_runner(self) -> R {
        self.runner
    }

    /// The argv of the one status query for `ids`.
    pub fn squeue_argv(ids: &[JobId]) -> Vec<String> {
        let list: Vec<&str> = ids.iter().map(JobId::as_str).collect();
        [
            "env",
            "SLURM_TIME_FORMAT=%s",
            "squeue",
            "-h",
            "--states=all",
            "-o",
            SQUEUE_FORMAT,
            "-j",
            &list.join(","),
        ]
        .map(String::from)
        .to_vec()
    }

    /// Submit `script` with `sbatch_argv` (from [`sbatch_argv`]); the job id.
    ///
    /// When `sbatch` times out, the job may exist anyway (the controller was slow, not
    /// dead): the job is looked up by its name before giving up, so it is not orphaned.
    pub async fn submit(&self, sbatch_argv: &[String], script: &str) -> Result<JobId, BatchError> {
        match self.runner.run(sbatch_argv, Some(script.as_bytes())).await {
            Ok(out) if out.success() => Ok(parse_sbatch(&out.stdout_text())?),
            Ok(out) => Err(BatchError::Submit {
                argv: sbatch_argv.join(" "),
                reason: out.stderr_text(),
            }),
            Err(e @ RunError::TimedOut { .. }) => {
                let name = sbatch_argv
                    .iter()
                    .find_map(|a| a.strip_prefix("--job-name="))
                    .unwrap_or("");
                if !name.is_empty() {
                    if let Ok(jobs) = self.own_jobs(name).await {
                        if let [job] = jobs.as_slice() {
                            if job.name.as_deref() == Some(name) {
                                return Ok(job.id.clone());
                            }
                        }
                    }
                }
                Err(BatchError::Run(e))
            }
            Err(e) => Err(BatchError::Run(e)),
        }
    }

    /// The status of each of `ids`, in that order, from one `squeue` call (plus one lookup
    /// per job that has ended). A controller that does not answer gives
    /// [`JobState::Unknown`] with what the query said as the reason.
    pub async fn status(&self, ids: &[JobId]) -> Result<Vec<JobStatus>, BatchError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let unknown = |why: String| {
            ids.iter()
                .map(|id| JobStatus::bare(id.clone(), JobState::Unknown, Some(why.clone())))
                .collect()
        };
        let out = match self.runner.run(&Self::squeue_argv(ids), None).await {
            Ok(out) => out,
            Err(e @ RunError::Spawn { .. }) => return Err(BatchError::Run(e)),
            Err(e) => return Ok(unknown(e.to_string())),
        };
        let mut found: HashMap<JobId, JobStatus> = HashMap::new();
        if out.success() {
            for (i, line) in out.stdout_text().lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let st = parse_squeue_line(line, i + 1)?;
                found.insert(st.id.clone(), st);
            }
        } else if !invalid_job_id(&out) {
            // squeue -j with a single unknown id fails with "Invalid job id"; anything else
            // (no controller, timeouts, ...) says nothing about the job.
            return Ok(unknown(format!("squeue: {}", out.stderr_text())));
        }
        let mut result = Vec::with_capacity(ids.len());
        for id in ids {
            let st = match found.remove(id) {
                Some(st) if st.state.is_final() => self.with_exit_code(st).await,
                Some(st) => st,
                None => self.ended(id).await?,
            };
            result.push(st);
        }
        Ok(result)
    }

    /// The status of one job (see [`Slurm::status`]).
    pub async fn status_one(&self, id: &JobId) -> Result<JobStatus, BatchError> {
        let mut v = self.status(std::slice::from_ref(id)).await?;
        Ok(v.pop()
            .unwrap_or_else(|| JobStatus::bare(id.clone(), JobState::Unknown, None)))
    }

    /// Add the exit code of an ended job (`squeue` does not print it).
    async fn with_exit_code(&self, mut st: JobStatus) -> JobStatus {
        let argv = ["scontrol", "show", "job", "-o", st.id.as_str()].map(String::from);
        if let Ok(out) = self.runner.run(&argv, None).await {
            if out.success() {
                if let Ok(full) = parse_scontrol_job(&out.stdout_text()) {
                    st.exit_code = full.exit_code;
                }
            }
        }
        st
    }

    /// How a job that `squeue` no longer lists ended: `sacct`, then `scontrol show job`.
    async fn ended(&self, id: &JobId) -> Result<JobStatus, BatchError> {
        let sacct = [
            "sacct",
            "-n",
            "-P",
            "-X",
            "-j",
            id.as_str(),
            "-o",
            "JobIDRaw,State,ExitCode",
        ]
        .map(String::from);
        // sacct is optional (no accounting storage on many small clusters): any failure
        // just moves on to scontrol.
        if let Ok(out) = self.runner.run(&sacct, None).await {
            if out.success() {
                if let Some(st) = parse_sacct(&out.stdout_text(), id) {
                    return Ok(st);
                }
            }
        }
        let argv = ["scontrol", "show", "job", "-o", id.as_str()].map(String::from);
        match self.runner.run(&argv, None).await {
            Ok(out) if out.success() => Ok(parse_scontrol_job(&out.stdout_text())?),
            Ok(out) if invalid_job_id(&out) => Ok(JobStatus::bare(
                id.clone(),
                JobState::Gone,
                Some("no longer known to the controller, and no accounting record".into()),
            )),
            Ok(out) => Ok(JobStatus::bare(
                id.clone(),
                JobState::Unknown,
                Some(format!("scontrol: {}", out.stderr_text())),
            )),
            Err(e @ RunError::Spawn { .. }) => Err(BatchError::Run(e)),
            Err(e) => Ok(JobStatus::bare(
                id.clone(),
                JobState::Unknown,
                Some(e.to_string()),
            )),
        }
    }

    /// Cancel `id` and confirm it has ended (polling, at most `within`); its final status.
    pub async fn cancel(&self, id: &JobId, within: Duration) -> Result<JobStatus, BatchError> {
        let argv = ["scancel", id.as_str()].map(String::from);
        let out = self.runner.run(&argv, None).await?;
        // "already completing or completed" is fine: the confirmation below says how it ended.
        if !out.success() && !out.stderr_text().contains("already") {
            if invalid_job_id(&out) {
                return self.status_one(id).await;
            }
            return Err(BatchError::Cancel {
                id: id.clone(),
                reason: out.stderr_text(),
            });
        }
        let deadline = tokio::time::Instant::now() + within;
        let mut schedule = PollSchedule::default();
        loop {
            let st = self.status_one(id).await?;
            if st.state.is_final() {
                return Ok(st);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(BatchError::CancelNotConfirmed {
                    last: Box::new(st),
                    within,
                });
            }
            tokio::time::sleep(schedule.next_delay().min(deadline - now)).await;
        }
    }

    /// This user's active jobs whose name starts with `name_prefix` (all pv-launch jobs:
    /// [`super::JOB_NAME_PREFIX`]). A controller that does not answer is an error here.
    pub async fn own_jobs(&self, name_prefix: &str) -> Result<Vec<JobStatus>, BatchError> {
        let argv = [
            "env",
            "SLURM_TIME_FORMAT=%s",
            "squeue",
            "-h",
            "--me",
            "-o",
            SQUEUE_FORMAT,
        ]
        .map(String::from);
        let out = self.runner.run(&argv, None).await?;
        if !out.success() {
            return Err(BatchError::Controller(format!(
                "squeue: {}",
                out.stderr_text()
            )));
        }
        let mut jobs = Vec::new();
        for (i, line) in out.stdout_text().lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let st = parse_squeue_line(line, i + 1)?;
            if st
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(name_prefix))
            {
                jobs.push(st);
            }
        }
        Ok(jobs)
    }
}

impl<R: Runner> Scheduler for Slurm<R> {
    async fn submit(&self, argv: &[String], script: &str) -> Result<JobId, BatchError> {
        Slurm::submit(self, argv, script).await
    }

    async fn status(&self, ids: &[JobId]) -> Result<Vec<JobStatus>, BatchError> {
        Slurm::status(self, ids).await
    }

    async fn cancel(&self, id: &JobId, within: Duration) -> Result<JobStatus, BatchError> {
        Slurm::cancel(self, id, within).await
    }

    async fn own_jobs(&self, name_prefix: &str) -> Result<Vec<JobStatus>, BatchError> {
        Slurm::own_jobs(self, name_prefix).await
    }
}
