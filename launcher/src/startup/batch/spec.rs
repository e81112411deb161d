//! What a batch start asks the scheduler for: [`BatchSpec`], checked before anything runs.
//!
//! Values land on `sbatch`'s argv (never in the script's `#SBATCH` lines, so the script stays
//! the same whatever resources are asked for), one `--option=value` word each. They are
//! checked here so that a bad profile fails with a message naming the field, not with an
//! `sbatch` error after a connection to a login node has been set up.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// A batch specification that is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("batch field `{field}`: {reason}")]
pub struct SpecError {
    /// The field (its TOML name).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn spec_error(field: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError {
        field,
        reason: reason.into(),
    }
}

/// Which batch scheduler runs the job. Only Slurm is implemented; see the module doc of
/// `batch` for how PBS Pro, LSF and Flux map onto the same operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// Slurm (`sbatch`, `squeue`, `scancel`, `sacct`, `scontrol`).
    #[default]
    Slurm,
}

/// How the job script starts the server inside the allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InJob {
    /// `srun --input=0 <server argv>`: one task per `ntasks` (MPI); only task 0 gets the
    /// secrets line on its stdin.
    #[default]
    Srun,
    /// The server runs directly in the batch script (one process on the first node): for
    /// servers that start their own ranks, or are not parallel.
    Direct,
}

/// How a job submitted over ssh reaches a client that waits for a reverse connection: the
/// compute node dials the login node, and from there an ssh `-R` tunnel leads to this host.
/// A `-R` port is bound to the login node's loopback unless its sshd allows otherwise, so
/// something must listen where compute nodes can reach it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReverseVia {
    /// pv-launch's relay: a short `python3` script started on the login node through the
    /// same ssh connection (in the cleanup wrapper: it ends with the connection) listens on
    /// a free port of the login node's address and copies each connection to the
    /// loopback-bound `-R` port. Needs nothing configured; needs `python3` there.
    #[default]
    Relay,
    /// The `-R` tunnel itself is bound to all of the login node's interfaces
    /// (`-R 0.0.0.0:0:…`): needs `GatewayPorts clientspecified` (or `yes`) in the login
    /// node's sshd configuration; with `no` (OpenSSH's default) sshd binds loopback only and
    /// the job's dial is refused.
    GatewayPorts,
}

impl ReverseVia {
    /// Its name in profiles.
    pub fn as_str(self) -> &'static str {
        match self {
            ReverseVia::Relay => "relay",
            ReverseVia::GatewayPorts => "gateway-ports",
        }
    }
}

/// A Slurm duration: `minutes`, `minutes:seconds`, `hours:minutes:seconds`, `days-hours`,
/// `days-hours:minutes`, `days-hours:minutes:seconds`, or `UNLIMITED`/`INFINITE`.
///
/// The same grammar reads `squeue`'s time-left column (`%L`), which prints
/// `[days-][hours:]minutes:seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WallTime {
    /// A finite limit.
    Limited(Duration),
    /// No limit (the partition's maximum applies).
    Unlimited,
}

/// A duration string that is not one of Slurm's forms.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "time {input:?}: {reason} (expected minutes, minutes:seconds, hours:minutes:seconds, days-hours, days-hours:minutes, days-hours:minutes:seconds or UNLIMITED)"
)]
pub struct TimeError {
    /// The text that was read.
    pub input: String,
    /// What is wrong, and where.
    pub reason: String,
}

impl FromStr for WallTime {
    type Err = TimeError;

    fn from_str(input: &str) -> Result<WallTime, TimeError> {
        let err = |reason: String| TimeError {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        if s.eq_ignore_ascii_case("UNLIMITED") || s.eq_ignore_ascii_case("INFINITE") {
            return Ok(WallTime::Unlimited);
        }
        if s.is_empty() {
            return Err(err("empty".into()));
        }
        let number = |part: &str, name: &str| -> Result<u64, TimeError> {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || part.len() > 9 {
                return Err(err(format!("{name} {part:?} is not a number")));
            }
            part.parse::<u64>()
                .map_err(|_| err(format!("{name} {part:?} is not a number")))
        };
        let below = |v: u64, max: u64, name: &str| -> Result<u64, TimeError> {
            if v >= max {
                Err(err(format!("{name} {v} is out of range 0-{}", max - 1)))
            } else {
                Ok(v)
            }
        };
        // A '-' after a ':' is not the days separator (and then a bad number below).
        let (days, rest) = match s.split_once('-') {
            Some((d, rest)) if !d.contains(':') => (Some(number(d, "days")?), rest),
            _ => (None, s),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let secs = match (days, parts.as_slice()) {
            (None, [m]) => number(m, "minutes")? * 60,
            (None, [m, s]) => {
                number(m, "minutes")? * 60 + below(number(s, "seconds")?, 60, "seconds")?
            }
            (None, [h, m, s]) => {
                number(h, "hours")? * 3600
                    + below(number(m, "minutes")?, 60, "minutes")? * 60
                    + below(number(s, "seconds")?, 60, "seconds")?
            }
            (Some(d), [h]) => d * 86400 + below(number(h, "hours")?, 24, "hours")? * 3600,
            (Some(d), [h, m]) => {
                d * 86400
                    + below(number(h, "hours")?, 24, "hours")? * 3600
                    + below(number(m, "minutes")?, 60, "minutes")? * 60
            }
            (Some(d), [h, m, s]) => {
                d * 86400
                    + below(number(h, "hours")?, 24, "hours")? * 3600
                    + below(number(m, "minutes")?, 60, "minutes")? * 60
                    + below(number(s, "seconds")?, 60, "seconds")?
            }
            (_, parts) => {
                return Err(err(format!(
                    "{} colon-separated fields{}",
                    parts.len(),
                    if days.is_some() {
                        " after the days"
                    } else {
                        ""
                    }
                )));
            }
        };
        Ok(WallTime::Limited(Duration::from_secs(secs)))
    }
}

impl fmt::Display for WallTime {
    /// `days-hours:minutes:seconds` (days only when non-zero), or `UNLIMITED`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WallTime::Unlimited => f.write_str("UNLIMITED"),
            WallTime::Limited(d) => {
                let s = d.as_secs();
                let (days, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
                if days > 0 {
                    write!(f, "{days}-{h:02}:{m:02}:{sec:02}")
                } else {
                    write!(f, "{h:02}:{m:02}:{sec:02}")
                }
            }
        }
    }
}

impl<'de> Deserialize<'de> for WallTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WallTime, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The launch id a job is tagged with: 1-64 of `[A-Za-z0-9_-]`, so it is safe in a job name,
/// a comment, a file name and a shell word.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LaunchId(String);

/// Prefix of every job name pv-launch gives: `pvl-<launch id>`.
pub const JOB_NAME_PREFIX: &str = "pvl-";

impl LaunchId {
    /// Check and wrap a launch id.
    pub fn new(id: impl Into<String>) -> Result<LaunchId, SpecError> {
        let id = id.into();
        if id.is_empty() || id.len() > 64 {
            return Err(spec_error(
                "launch id",
                format!("{id:?} must be 1-64 characters"),
            ));
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(spec_error(
                "launch id",
                format!("{id:?} has {c:?}; only letters, digits, '-' and '_' are allowed"),
            ));
        }
        Ok(LaunchId(id))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The job name Slurm shows: `pvl-<id>`.
    pub fn job_name(&self) -> String {
        format!("{JOB_NAME_PREFIX}{}", self.0)
    }
}

impl fmt::Display for LaunchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A batch start's request to the scheduler (the profile's `[server.startup.batch]` table).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSpec {
    /// The scheduler (only `slurm` for now).
    pub scheduler: SchedulerKind,
    /// `--nodes`.
    pub nodes: Option<u32>,
    /// `--ntasks` (MPI ranks with `srun`).
    pub ntasks: Option<u32>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--time`, the walltime limit.
    pub time: Option<WallTime>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--constraint`.
    pub constraint: Option<String>,
    /// `--gres`.
    pub gres: Option<String>,
    /// Further `sbatch` options, one argv word each (`--mem=4G`, `--reservation=viz`).
    pub extra_options: Vec<String>,
    /// How the server starts inside the job.
    pub in_job: InJob,
    /// The job name; default `pvl-<launch id>`. A name given here is still prefixed with
    /// `pvl-<launch id>-` so the job can be found again.
    pub job_name: Option<String>,
    /// The job's output file (`--output`; stderr goes there too); `%j` is the job id.
    /// Default: `job.out` in the job's private directory.
    pub output: Option<String>,
}

/// `sbatch` options a profile may not pass in `extra_options`: pv-launch sets them itself
/// (tagging, output, parsable id, the script on stdin) or they would break tracking.
const RESERVED_OPTIONS: &[&str] = &[
    "--parsable",
    "-J",
    "--job-name",
    "--comment",
    "-o",
    "--output",
    "-e",
    "--error",
    "--wrap",
    "-W",
    "--wait",
    "-a",
    "--array",
    "--requeue",
    "-i",
    "--input",
];

impl BatchSpec {
    /// Check every field; the first problem is the error.
    pub fn validate(&self) -> Result<(), SpecError> {
        for (field, v) in [
            ("nodes", self.nodes),
            ("ntasks", self.ntasks),
            ("cpus_per_task", self.cpus_per_task),
        ] {
            if v == Some(0) {
                return Err(spec_error(field, "must be at least 1"));
            }
        }
        for (field, v) in [
            ("partition", &self.partition),
            ("account", &self.account),
            ("qos", &self.qos),
            ("constraint", &self.constraint),
            ("gres", &self.gres),
            ("job_name", &self.job_name),
            ("output", &self.output),
        ] {
            if let Some(v) = v {
                check_word(field, v)?;
            }
        }
        if let Some(out) = &self.output {
            check_output_pattern(out)?;
        }
        for opt in &self.extra_options {
            check_word("extra_options", opt)?;
            if !opt.starts_with('-') {
                return Err(spec_error(
                    "extra_options",
                    format!("{opt:?} is not an option (options start with '-')"),
                ));
            }
            let name = opt.split_once('=').map_or(opt.as_str(), |(n, _)| n);
            // Short options may carry their value glued on (`-ofile`).
            let reserved = RESERVED_OPTIONS.iter().any(|r| {
                name == *r || (r.len() == 2 && !name.starts_with("--") && name.starts_with(r))
            });
            if reserved {
                return Err(spec_error(
                    "extra_options",
                    format!("{opt:?} is set by pv-launch itself (or would break job tracking)"),
                ));
            }
        }
        Ok(())
    }

    /// The job name: `pvl-<id>`, or `pvl-<id>-<name>` with a configured name.
    pub fn job_name_for(&self, id: &LaunchId) -> String {
        match &self.job_name {
            Some(name) => format!("{}-{name}", id.job_name()),
            None => id.job_name(),
        }
    }
}

/// A value that becomes one argv word: non-empty, no control characters.
fn check_word(field: &'static str, v: &str) -> Result<(), SpecError> {
    if v.is_empty() {
        return Err(spec_error(field, "is empty"));
    }
    if let Some((i, c)) = v.char_indices().find(|(_, c)| c.is_control()) {
        return Err(spec_error(
            field,
            format!("{v:?} has a control character {c:?} at byte {i}"),
        ));
    }
    Ok(())
}

/// An output path: absolute, and `%` only in `%j` (job id) or `%%`.
fn check_output_pattern(out: &str) -> Result<(), SpecError> {
    if !out.starts_with('/') {
        return Err(spec_error(
            "output",
            format!(
                "{out:?} must be an absolute path (sbatch would resolve it in the job's working directory)"
            ),
        ));
    }
    let mut chars = out.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some((_, 'j')) | Some((_, '%')) => {}
                other => {
                    return Err(spec_error(
                        "output",
                        format!(
                            "{out:?}: pattern {:?} at byte {i} is not supported (only %j and %%)",
                            format!("%{}", other.map_or(String::new(), |(_, c)| c.to_string()))
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The path Slurm writes for an output pattern of job `job_id` (`%j` → id, `%%` → `%`).
pub fn expand_output(pattern: &str, job_id: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('j') => out.push_str(job_id),
                Some('%') => out.push('%'),
                Some(o) => {
                    out.push('%');
                    out.push(o);
                }
                None => out.push('%'),
            }
        } else {
            out.push(c);
        }
    }
    out
}
