//! Starting and supervising a local process (the server, a script, or `ssh`).
//!
//! The process gets its own process group, so stopping it stops everything it started.
//! Its stdout and stderr are read line by line and sent as [`Event`]s; the launch
//! channel's ready line is recognised on stdout. When the launch uses the native
//! handshake, the one-time token is written to the child's stdin as the launch channel's
//! secrets line (never on argv). The delay rules are ParaView's: wait the delay, or with
//! `-1` wait for the command to exit, exit 0 meaning the server detached and anything else
//! a failure whose error carries the last lines of stderr.

pub mod batch;
mod group;
mod handle;
#[cfg(test)]
mod tests;

pub use group::wait_for_group_stops;
pub use handle::{ServerHandle, TERMINATE_GRACE};

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pv_transport::launch::{ReadyLine, Secrets};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;

use crate::events::{Event, EventSender, Stage};
use crate::plan::ProcessPlan;
use crate::profile::Delay;

/// How many stderr lines a failure report keeps.
pub const STDERR_TAIL_LINES: usize = 20;

/// What the start produced.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per launch
pub enum Started {
    /// The process runs; the ready line, if it was awaited and came.
    Running {
        /// The running process.
        handle: ServerHandle,
        /// The launch channel's ready line.
        ready: Option<ReadyLine>,
    },
    /// The command exited 0 during the wait (`delay = -1`, or a script that returned):
    /// the server detached, as ParaView treats it.
    Detached,
}

/// A start that failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The program could not be started.
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The command exited with a failure.
    #[error("{program:?} exited with {status}{}", tail_text(stderr_tail))]
    Exited {
        /// The program.
        program: String,
        /// Its exit status, in words.
        status: String,
        /// The last lines of its stderr.
        stderr_tail: Vec<String>,
    },
    /// No ready line within the time allowed.
    #[error(
        "{program:?} printed no ready line within {}{}",
        crate::plan::render::seconds(waited),
        tail_text(stderr_tail)
    )]
    NoReadyLine {
        /// The program.
        program: String,
        /// How long pv-launch waited.
        waited: Duration,
        /// The last lines of its stderr.
        stderr_tail: Vec<String>,
    },
    /// The ready line was malformed.
    #[error("bad ready line from {program:?}: {message}")]
    BadReadyLine {
        /// The program.
        program: String,
        /// What is wrong.
        message: String,
    },
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; last lines of its stderr:\n  {}", tail.join("\n  "))
    }
}

/// How long to wait for a ready line when the plan gives no process start timeout.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Start `plan`'s process. With `secrets`, write the secrets line to its stdin and wait
/// (up to `ready_timeout`) for its ready line; without, follow the plan's delay.
pub async fn start_local(
    plan: &ProcessPlan,
    secrets: Option<&Secrets>,
    ready_timeout: Duration,
    events: &EventSender,
) -> Result<Started, StartError> {
    let begun = Instant::now();
    let program = plan.argv[0].clone();
    let _ = events.send(Event::Stage {
        stage: Stage::Start,
        elapsed: begun.elapsed(),
    });
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&plan.argv[1..])
        .envs(plan.env.iter().map(|(k, v)| (k, v.expose())))
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Not tokio's kill_on_drop: it would SIGKILL the leader alone, at once. The
        // GroupStop below stops the whole group, with SIGTERM's grace for the leader too.
        .kill_on_drop(false);
    if let Some(dir) = &plan.workdir {
        command.current_dir(dir);
    }
    // A local child also finds its token in its environment (private to its owner, like
    // the stdin pipe): a script that starts several servers, such as a data server and a
    // render server, can hand it to each. Never for ssh, whose remote side reads stdin.
    if let (Some(secrets), None) = (secrets, &plan.remote) {
        command.env(pv_transport::launch::TOKEN_ENV, secrets.token.to_hex());
    }
    let mut child = command.spawn().map_err(|source| StartError::Spawn {
        program: program.clone(),
        source,
    })?;
    // Armed before the first await: if this future is dropped from here on (Ctrl-C during
    // the start), the whole group is stopped, not only the leader. `id()` is `Some` until
    // the child has been waited for, which nothing has done yet.
    let group = group::GroupStop::new(child.id().unwrap_or(0));
    let mut stdin = child.stdin.take();
    if let (Some(secrets), Some(pipe)) = (secrets, stdin.as_mut()) {
        let line = zeroize::Zeroizing::new(secrets.to_line());
        // A server that does not read stdin may close it: that is not an error here.
        let _ = pipe.write_all(line.as_bytes()).await;
        let _ = pipe.flush().await;
    }
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let (ready_tx, ready_rx) = oneshot::channel();
    if let Some(out) = child.stdout.take() {
        let events = events.clone();
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(parsed) = ReadyLine::parse(&line) {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(parsed.map_err(|e| e.to_string()));
                    }
                }
                let _ = events.send(Event::Stdout { line });
            }
        });
    }
    let mut stderr_reader = None;
    if let Some(err) = child.stderr.take() {
        let events = events.clone();
        let tail = Arc::clone(&tail);
        stderr_reader = Some(tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                {
                    let mut t = tail.lock().expect("stderr tail lock");
                    if t.len() == STDERR_TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line.clone());
                }
                let _ = events.send(Event::Stderr { line });
            }
        }));
    }
    let mut handle = ServerHandle::new(
        child,
        group,
        stdin,
        Arc::clone(&tail),
        stderr_reader,
        program.clone(),
    );

    if secrets.is_some() {
        let _ = events.send(Event::Stage {
            stage: Stage::WaitReady,
            elapsed: begun.elapsed(),
        });
        tokio::select! {
            ready = ready_rx => match ready {
                Ok(Ok(ready)) => {
                    let _ = events.send(Event::Ready { port: ready.port, elapsed: begun.elapsed() });
                    return Ok(Started::Running { handle, ready: Some(ready) });
                }
                Ok(Err(message)) => return Err(StartError::BadReadyLine { program, message }),
                // stdout closed without a ready line: report how the process ended.
                Err(_) => {
                    let status = handle.wait().await;
                    return Err(handle.exit_error(status).await);
                }
            },
            status = handle.wait() => {
                if status.success() {
                    return Ok(Started::Detached);
                }
                return Err(handle.exit_error(status).await);
            }
            _ = tokio::time::sleep(ready_timeout) => {
                let stderr_tail = handle.stderr_tail();
                handle.cleanup().await;
                return Err(StartError::NoReadyLine { program, waited: ready_timeout, stderr_tail });
            }
        }
    }

    match &plan.delay {
        Delay::None => Ok(Started::Running {
            handle,
            ready: None,
        }),
        Delay::Wait(d) => {
            let _ = events.send(Event::Stage {
                stage: Stage::Delay,
                elapsed: begun.elapsed(),
            });
            tokio::select! {
                status = handle.wait() => {
                    if status.success() { Ok(Started::Detached) } else { Err(handle.exit_error(status).await) }
                }
                _ = tokio::time::sleep(*d) => Ok(Started::Running { handle, ready: None }),
            }
        }
        Delay::UntilExit => {
            let _ = events.send(Event::Stage {
                stage: Stage::WaitExit,
                elapsed: begun.elapsed(),
            });
            let status = handle.wait().await;
            if status.success() {
                Ok(Started::Detached)
            } else {
                Err(handle.exit_error(status).await)
            }
        }
    }
}
