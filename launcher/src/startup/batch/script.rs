//! The job script and the job's private directory.
//!
//! The script is plain bash, the same for every resource request, and holds **no secret**
//! (schedulers store scripts and show them to administrators: `scontrol write batch_script`,
//! `sacct -B`). The one-time token reaches the server through a file instead:
//!
//! 1. Before submitting, pv-launch creates the job directory (mode 0700, freshly made, so
//!    nobody else can have planted anything in it) and writes the launch channel's secrets
//!    line into `secrets` (mode 0600), through the [`Runner`]'s *stdin*, never its argv.
//! 2. When the job starts, the script opens `secrets` on a file descriptor, **deletes it**,
//!    and gives that descriptor to the server as its stdin (with `srun --input=0` only task 0
//!    reads it). A second start of the same job (requeue) finds no file and fails loudly,
//!    so the token is used at most once.
//! 3. The server's stdout (its ready line: port, TLS fingerprint) goes to `stdout` in the same
//!    directory (umask 077: mode 0600), which pv-launch polls. The ready line is not secret,
//!    but it must not be forgeable: a writable-by-others file would let someone swap the
//!    fingerprint the client pins.
//! 4. The job's own output (script messages, the server's stderr) goes to `job.out` there too
//!    unless the profile names another file; its last lines explain a failure.
//!
//! The directory must be on a file system the compute nodes share with the submitting host
//! (the home directory on clusters). pv-launch removes it when the session ends; a job that
//! never started leaves its `secrets` file only until then.

use pv_transport::launch::{ReadyLine, TOKEN_ENV};

use super::runner::{RunError, Runner};
use super::spec::{BatchSpec, InJob, LaunchId, SpecError, expand_output};

/// The files of one batch launch, in its private directory `<base>/<launch id>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobFiles {
    /// The 0700 directory.
    pub dir: String,
    /// The 0600 secrets file the job reads once and deletes.
    pub secrets: String,
    /// The server's stdout, where its ready line appears.
    pub stdout: String,
    /// The default job output file (`--output`).
    pub output: String,
}

/// Why the job directory could not be prepared or read.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A path that cannot be used.
    #[error("job directory: {0}")]
    Path(String),
    /// The command that creates the directory or writes the secrets failed.
    #[error("cannot prepare the job directory {dir}: {reason}")]
    Stage {
        /// The directory.
        dir: String,
        /// What the command said.
        reason: String,
    },
    /// Running the command failed.
    #[error(transparent)]
    Run(#[from] RunError),
}

impl JobFiles {
    /// The files of launch `id` under `base` (an absolute directory on a file system the
    /// compute nodes share, e.g. `$HOME/.pv-launch/jobs`).
    pub fn new(base: &str, id: &LaunchId) -> Result<JobFiles, FilesError> {
        if !base.starts_with('/') {
            return Err(FilesError::Path(format!(
                "{base:?} is not an absolute path"
            )));
        }
        if base.chars().any(|c| c.is_control()) {
            return Err(FilesError::Path(format!(
                "{base:?} has a control character"
            )));
        }
        let dir = format!("{}/{}", base.trim_end_matches('/'), id.as_str());
        Ok(JobFiles {
            secrets: format!("{dir}/secrets"),
            stdout: format!("{dir}/stdout"),
            output: format!("{dir}/job.out"),
            dir,
        })
    }

    /// The output file of job `job_id` for `spec` (the profile's pattern, or `job.out`).
    pub fn output_for(&self, spec: &BatchSpec, job_id: &str) -> String {
        match &spec.output {
            Some(pattern) => expand_output(pattern, job_id),
            None => self.output.clone(),
        }
    }

    /// The `--output` value for `sbatch`.
    pub fn output_pattern(&self, spec: &BatchSpec) -> String {
        spec.output.clone().unwrap_or_else(|| self.output.clone())
    }

    /// Create the directory (0700, must not exist yet) and write `secrets_line` into the 0600
    /// secrets file, on the host `runner` reaches. The line travels on the command's stdin.
    pub async fn stage<R: Runner>(
        &self,
        runner: &R,
        secrets_line: &[u8],
    ) -> Result<(), FilesError> {
        // mkdir without -p for the last component: it fails when the directory exists, so the
        // directory is ours and new (nothing planted, no symlink); parents get umask 077.
        const STAGE: &str = "set -eu; umask 077; d=$1; mkdir -p -- \"${d%/*}\"; \
                             mkdir -m 700 -- \"$d\"; cat > \"$d/secrets\"";
        let argv = ["sh", "-c", STAGE, "pv-launch-stage", &self.dir].map(String::from);
        let out = runner.run(&argv, Some(secrets_line)).await?;
        if !out.success() {
            return Err(FilesError::Stage {
                dir: self.dir.clone(),
                reason: out.stderr_text(),
            });
        }
        Ok(())
    }

    /// Remove the directory and everything in it (the session is over).
    pub async fn remove<R: Runner>(&self, runner: &R) -> Result<(), FilesError> {
        let argv = ["rm", "-rf", "--", &self.dir].map(String::from);
        let out = runner.run(&argv, None).await?;
        if !out.success() {
            return Err(FilesError::Stage {
                dir: self.dir.clone(),
                reason: out.stderr_text(),
            });
        }
        Ok(())
    }

    /// Whether the secrets file is still there (the job has not started yet).
    pub async fn secrets_pending<R: Runner>(&self, runner: &R) -> Result<bool, FilesError> {
        let argv = ["test", "-e", &self.secrets].map(String::from);
        Ok(runner.run(&argv, None).await?.success())
    }

    /// The server's ready line, once it is in the stdout file (complete lines only).
    pub async fn ready_line<R: Runner>(
        &self,
        runner: &R,
    ) -> Result<Option<ReadyLine>, ReadFileError> {
        let Some(bytes) = runner.read_file(&self.stdout).await? else {
            return Ok(None);
        };
        find_ready_line(&bytes, &self.stdout)
    }
}

/// The stdout file holds a ready line that does not parse, or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadFileError {
    /// Reading failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A ready line that does not parse.
    #[error("{path}, line {line}: {source}")]
    BadReadyLine {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// The parse error.
        source: pv_transport::launch::LaunchLineError,
    },
}

/// The first complete ready line in `bytes` (a line still being written is ignored).
pub fn find_ready_line(bytes: &[u8], path: &str) -> Result<Option<ReadyLine>, ReadFileError> {
    let text = String::from_utf8_lossy(bytes);
    // Only lines that end in '\n': the server may be halfway through writing one.
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => return Ok(None),
    };
    for (i, line) in complete.lines().enumerate() {
        match ReadyLine::parse(line) {
            Some(Ok(ready)) => return Ok(Some(ready)),
            Some(Err(source)) => {
                return Err(ReadFileError::BadReadyLine {
                    path: path.to_string(),
                    line: i + 1,
                    source,
                });
            }
            None => {}
        }
    }
    Ok(None)
}

/// The last `n` lines of a file (empty when it does not exist).
pub async fn tail_lines<R: Runner>(
    runner: &R,
    path: &str,
    n: usize,
) -> Result<Vec<String>, RunError> {
    let Some(bytes) = runner.read_file(path).await? else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    Ok(lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect())
}

/// Exit status of the script when the secrets file is gone (already read: a requeue or a
/// second start of the job). Chosen to stand out from a server's own exit codes.
pub const EXIT_NO_SECRETS: i32 = 97;

/// Quote `s` as one word for bash/POSIX sh.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The job script that starts `server_argv` with `env` inside the job of launch `id`.
///
/// `env` is for non-secret settings only (it is visible in the script); a variable named like
/// the launch channel's token variable is refused. The server reads its secrets line on stdin
/// and writes its ready line on stdout (see [`pv_transport::launch`]).
pub fn job_script(
    spec: &BatchSpec,
    files: &JobFiles,
    server_argv: &[String],
    env: &[(String, String)],
    id: &LaunchId,
) -> Result<String, SpecError> {
    let err = |field: &'static str, reason: String| SpecError { field, reason };
    let Some(program) = server_argv.first() else {
        return Err(err("server argv", "is empty".into()));
    };
    if program.starts_with('-') {
        return Err(err(
            "server argv",
            format!("the program {program:?} starts with '-' (srun would read it as an option)"),
        ));
    }
    for (name, value) in env {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(err("env", format!("{name:?} is not a variable name")));
        }
        if name == TOKEN_ENV {
            return Err(err(
                "env",
                format!(
                    "{TOKEN_ENV} would put the token into the job script; it goes through the secrets file"
                ),
            ));
        }
        if value.contains('\0') {
            return Err(err("env", format!("the value of {name} has a NUL byte")));
        }
    }
    let command: Vec<String> = server_argv.iter().map(|a| sh_quote(a)).collect();
    let launcher = match spec.in_job {
        InJob::Srun => "srun --input=0 ",
        InJob::Direct => "",
    };
    let mut s = String::new();
    s.push_str("#!/bin/bash\n");
    s.push_str(&format!(
        "# pv-launch batch job for launch {id}. Written by pv-launch; it holds no secret.\n"
    ));
    s.push_str(
        "# The one-time token (an empty line for a server without one) waits in a 0600 file in\n\
         # the 0700 directory below; this script opens it, deletes it, and hands it to the\n\
         # server on stdin. The server's stdout (its ready line) goes to a 0600 file beside it.\n",
    );
    s.push_str("set -u\numask 077\n");
    s.push_str(&format!("job_dir={}\n", sh_quote(&files.dir)));
    s.push_str("if ! exec 3<\"$job_dir/secrets\"; then\n");
    s.push_str(&format!(
        "    echo \"pv-launch: $job_dir/secrets is gone: it is read once, so this job cannot start the server again\" >&2\n    exit {EXIT_NO_SECRETS}\nfi\n"
    ));
    s.push_str("rm -f -- \"$job_dir/secrets\"\n");
    s.push_str(
        "echo \"pv-launch: job ${SLURM_JOB_ID:-?} starting the server on $(hostname)\" >&2\n",
    );
    for (name, value) in env {
        s.push_str(&format!("export {name}={}\n", sh_quote(value)));
    }
    s.push_str(&format!(
        "{launcher}{} <&3 3<&- >\"$job_dir/stdout\"\n",
        command.join(" ")
    ));
    s.push_str("status=$?\n");
    s.push_str("echo \"pv-launch: the server exited with status $status\" >&2\n");
    s.push_str("exit \"$status\"\n");
    Ok(s)
}
