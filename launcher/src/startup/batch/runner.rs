//! Where scheduler commands run: the [`Runner`] seam.
//!
//! Every scheduler command (`sbatch`, `squeue`, `scancel`, …) and every file the batch start
//! reads (the ready file, the job's output) goes through a [`Runner`], so the same code drives
//! a scheduler on this host ([`LocalRunner`]) or on a login node over ssh (an implementation
//! over the ssh master, added beside this one). Commands are argv vectors, never shell
//! strings: the ssh implementation quotes them for the remote shell; the local one spawns
//! them directly.
//!
//! Secrets may travel on a command's **stdin** (that is how the secrets file is written), never
//! on its argv. The local runner also removes the launch channel's token variable from every
//! child's environment, so a scheduler command cannot copy it into a job by accident
//! (`sbatch` exports the submitter's environment into the job by default).

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a finished command produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit status; `None` when a signal ended the command.
    pub status: Option<i32>,
    /// Everything it wrote on stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote on stderr.
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// Stdout as text (lossy UTF-8).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text (lossy UTF-8), trimmed.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

/// A command that could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program could not be started (not installed, not on `PATH`, …).
    #[error("cannot run {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// It did not finish in time and was killed.
    #[error("{program:?} did not finish within {after:?} and was killed")]
    TimedOut {
        /// The program.
        program: String,
        /// The time it was given.
        after: Duration,
    },
    /// Reading or writing its pipes (or a file) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
}

/// Runs scheduler commands and reads files where the scheduler is: this host, or a login node.
///
/// Implementations must keep argv as separate words (quote them for a remote shell) and must
/// not log stdin (it may hold the secrets line).
pub trait Runner: Send + Sync {
    /// Run `argv` (program first) with `stdin` written to its standard input (then closed;
    /// empty input when `None`) and collect its status and output.
    fn run(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
    ) -> impl Future<Output = Result<CommandOutput, RunError>> + Send;

    /// Read a whole file; `Ok(None)` when it does not exist (yet).
    fn read_file(
        &self,
        path: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, RunError>> + Send;
}

/// Runs commands on this host with `tokio::process`, each bounded by a timeout.
#[derive(Clone, Debug)]
pub struct LocalRunner {
    timeout: Duration,
    env: Vec<(String, String)>,
}

/// How long a local command may take by default. Slurm's clients give up on an unreachable
/// controller after about 18 s (Debian 12, 22.05), so this leaves them room to say so.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for LocalRunner {
    fn default() -> Self {
        LocalRunner::new(DEFAULT_COMMAND_TIMEOUT)
    }
}

impl LocalRunner {
    /// A runner whose commands are killed after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        LocalRunner {
            timeout,
            env: Vec::new(),
        }
    }

    /// Also set `name=value` in every command's environment (for example `SLURM_CONF` for a
    /// private test cluster). Not for secrets: the scheduler copies the environment into jobs.
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// The per-command timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl Runner for LocalRunner {
    async fn run(&self, argv: &[String], stdin: Option<&[u8]>) -> Result<CommandOutput, RunError> {
        let mut cmd = tokio::process::Command::new(argv.first().map_or("", String::as_str));
        // Errors name the program that matters (`squeue`, not the `env` in front of it).
        let program = program_of(argv).to_string();
        cmd.args(&argv[1.min(argv.len())..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove(pv_transport::launch::TOKEN_ENV)
            .kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
            program: program.clone(),
            source,
        })?;
        let mut child_in = child.stdin.take();
        let mut child_out = child.stdout.take();
        let mut child_err = child.stderr.take();
        let input = stdin.unwrap_or_default();
        // Feed stdin and drain both outputs at once: a large script and a chatty command
        // would otherwise fill a pipe and wait on each other.
        let io = async {
            let write = async {
                if let Some(mut w) = child_in.take() {
                    // A command that exits without reading its input closes the pipe:
                    // that is its business, not an error of ours.
                    let _ = w.write_all(input).await;
                    let _ = w.shutdown().await;
                }
                Ok::<_, io::Error>(())
            };
            let read_out = async {
                let mut buf = Vec::new();
                if let Some(r) = child_out.as_mut() {
                    r.read_to_end(&mut buf).await?;
                }
                Ok::<_, io::Error>(buf)
            };
            let read_err = async {
                let mut buf = Vec::new();
                if let Some(r) = child_err.as_mut() {
                    r.read_to_end(&mut buf).await?;
                }
                Ok::<_, io::Error>(buf)
            };
            let (w, o, e) = tokio::join!(write, read_out, read_err);
            w?;
            let status = child.wait().await?;
            Ok::<_, io::Error>(CommandOutput {
                status: status.code(),
                stdout: o?,
                stderr: e?,
            })
        };
        match tokio::time::timeout(self.timeout, io).await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(source)) => Err(RunError::Io {
                what: format!("running {program:?}"),
                source,
            }),
            // Dropping the future drops the child: kill_on_drop ends it.
            Err(_) => Err(RunError::TimedOut {
                program,
                after: self.timeout,
            }),
        }
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, RunError> {
        // std::fs on the blocking pool (tokio's `fs` feature is not enabled for this crate).
        let owned = path.to_string();
        let read = tokio::task::spawn_blocking(move || std::fs::read(owned))
            .await
            .map_err(|e| RunError::Io {
                what: format!("reading {path}"),
                source: io::Error::other(e),
            })?;
        match read {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RunError::Io {
                what: format!("reading {path}"),
                source,
            }),
        }
    }
}

/// A [`Runner`] that counts the commands it runs by program name (measurements, tests).
///
/// A leading `env NAME=value …` is skipped, so `env SLURM_TIME_FORMAT=%s squeue` counts as
/// `squeue`. File reads count as `read_file`.
#[derive(Debug, Default)]
pub struct CountingRunner<R> {
    inner: R,
    counts: Mutex<BTreeMap<String, u64>>,
}

impl<R> CountingRunner<R> {
    /// Count the commands `inner` runs.
    pub fn new(inner: R) -> Self {
        CountingRunner {
            inner,
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// How many times `program` ran so far.
    pub fn count(&self, program: &str) -> u64 {
        self.counts
            .lock()
            .map(|c| c.get(program).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// All counts so far, by program.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The wrapped runner.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    fn bump(&self, program: &str) {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry(program.to_string()).or_insert(0) += 1;
        }
    }
}

/// The program an argv runs, past a leading `env NAME=value …`.
fn program_of(argv: &[String]) -> &str {
    let mut words = argv.iter().map(String::as_str);
    match words.next() {
        Some("env") => words.find(|w| !w.contains('=')).unwrap_or("env"),
        Some(p) => p,
        None => "",
    }
}

impl<R: Runner> Runner for CountingRunner<R> {
    async fn run(&self, argv: &[String], stdin: Option<&[u8]>) -> Result<CommandOutput, RunError> {
        self.bump(program_of(argv));
        self.inner.run(argv, stdin).await
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, RunError> {
        self.bump("read_file");
        self.inner.read_file(path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn program_of_skips_env_assignments() {
        assert_eq!(
            program_of(&argv(&["env", "A=1", "B=2", "squeue", "-h"])),
            "squeue"
        );
        assert_eq!(program_of(&argv(&["sbatch", "--parsable"])), "sbatch");
        assert_eq!(program_of(&argv(&[])), "");
    }

    #[tokio::test]
    async fn local_runner_feeds_stdin_and_collects_output() {
        let r = CountingRunner::new(LocalRunner::default());
        let out = r
            .run(
                &argv(&["sh", "-c", "cat; echo err >&2; exit 3"]),
                Some(b"in"),
            )
            .await
            .unwrap();
        assert_eq!(out.status, Some(3));
        assert_eq!(out.stdout, b"in");
        assert_eq!(out.stderr_text(), "err");
        assert_eq!(r.count("sh"), 1);
    }

    #[tokio::test]
    async fn local_runner_times_out_and_reports_missing_programs() {
        let r = LocalRunner::new(Duration::from_millis(200));
        let err = r.run(&argv(&["sleep", "5"]), None).await.unwrap_err();
        assert!(matches!(err, RunError::TimedOut { .. }), "{err}");
        let err = r
            .run(&argv(&["/nonexistent/pv-launch-no-such-program"]), None)
            .await
            .unwrap_err();
        assert!(matches!(err, RunError::Spawn { .. }), "{err}");
        assert_eq!(r.read_file("/nonexistent/pv-launch/x").await.unwrap(), None);
    }
}
