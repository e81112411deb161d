//! Starting a process on this host (the server, or a script that starts it).
//!
//! The process gets its own process group, so stopping it stops everything it started,
//! and a watcher in that group ([`super::watcher`]) stops it if pv-launch dies first.
//! When the launch uses the native handshake, the one-time token goes to the child on its
//! stdin as the launch channel's secrets line (and in its environment, private to its
//! owner, for scripts that start several servers) — never on argv. The exchange and the
//! delay rules are the launch channel's ([`super::channel`]).

mod group;
mod handle;

pub use group::wait_for_group_stops;
pub use handle::ServerHandle;

use std::process::Stdio;
use std::time::{Duration, Instant};

use pv_transport::launch::Secrets;
use tokio::io::AsyncWriteExt;

use super::channel::{self, AfterDelay, Awaited, Matched, OutputSink};
use super::{Expect, StartError, Started};
use crate::events::{Event, EventSender, Stage};
use crate::plan::LocalCommand;

/// How long a server's process group gets after SIGTERM before SIGKILL.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(2);

/// Spawn `command` as the leader of a new process group, its stdio piped, the token in
/// its environment when there are secrets.
fn spawn(
    command: &LocalCommand,
    secrets: Option<&Secrets>,
) -> Result<tokio::process::Child, StartError> {
    let program = &command.argv[0];
    let mut c = tokio::process::Command::new(program);
    c.args(&command.argv[1..])
        .envs(command.env.iter().map(|(k, v)| (k, v.expose())))
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Not tokio's kill_on_drop: it would SIGKILL the leader alone, at once. The
        // GroupStop below stops the whole group, with SIGTERM's grace for the leader too.
        .kill_on_drop(false);
    if let Some(dir) = &command.workdir {
        c.current_dir(dir);
    }
    // A local child also finds its token in its environment (private to its owner, like
    // the stdin pipe): a script that starts several servers, such as a data server and a
    // render server, can hand it to each.
    if let Some(secrets) = secrets {
        c.env(pv_transport::launch::TOKEN_ENV, secrets.token.to_hex());
    }
    c.spawn().map_err(|source| StartError::Spawn {
        program: program.clone(),
        source,
    })
}

/// The stop guard of `child`'s group, with its watcher: the group is stopped if pv-launch
/// dies (even by SIGKILL) before it stopped the group itself. If the watcher cannot
/// start, the group is stopped now and that is a spawn error of `/bin/sh`: a server that
/// could outlive pv-launch is not started.
fn watched_group(child: &tokio::process::Child) -> Result<group::GroupStop, StartError> {
    let (group, watcher) = group::GroupStop::new(child.id().unwrap_or(0));
    watcher.map_err(|source| StartError::Spawn {
        program: "/bin/sh (the watcher that stops the server if pv-launch dies)".to_string(),
        source,
    })?;
    Ok(group)
}

/// Spawn `command` (its stdio as the caller set it) as the leader of a new process
/// group, supervised like a server: [`ServerHandle::cleanup`] (and a drop) stops the
/// whole group, SIGTERM first and SIGKILL after [`TERMINATE_GRACE`]. For a client
/// program the session runs.
pub fn spawn_group(
    mut command: tokio::process::Command,
    program: &str,
) -> Result<ServerHandle, StartError> {
    let child = command
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|source| StartError::Spawn {
            program: program.to_string(),
            source,
        })?;
    let group = watched_group(&child)?;
    Ok(ServerHandle::new(
        child,
        group,
        None,
        channel::StderrTail::default(),
        None,
        program.to_string(),
    ))
}

/// Start `command`. With secrets, write the secrets line to its stdin and wait (up to the
/// ready timeout) for its ready line; else, with a ready pattern, wait for a matching
/// output line; else follow the delay rule ([`Expect`]).
pub async fn start_local(
    command: &LocalCommand,
    expect: &Expect<'_>,
    events: &EventSender,
) -> Result<Started, StartError> {
    let (secrets, ready_timeout) = (expect.secrets, expect.ready_timeout);
    let begun = Instant::now();
    let program = command.argv[0].clone();
    let _ = events.send(Event::Stage {
        stage: Stage::Start,
        elapsed: begun.elapsed(),
    });
    let mut child = spawn(command, secrets)?;
    // Armed before the first await: if this future is dropped from here on (Ctrl-C during
    // the start), the whole group is stopped, not only the leader. `id()` is `Some` until
    // the child has been waited for, which nothing has done yet.
    let group = watched_group(&child)?;
    let mut stdin = child.stdin.take();
    if let (Some(secrets), Some(pipe)) = (secrets, stdin.as_mut()) {
        let line = channel::secrets_line(Some(secrets));
        // A server that does not read stdin may close it: that is not an error here.
        let _ = pipe.write_all(&line).await;
        let _ = pipe.flush().await;
    }
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        unreachable!("stdout and stderr are piped");
    };
    let sink: OutputSink = Some(channel::events_sink(events));
    let pattern = expect.pattern.map(|p| &p.regex);
    let readers = channel::spawn_readers(out, err, sink, false, pattern);
    let mut handle = ServerHandle::new(
        child,
        group,
        stdin,
        readers.tail.clone(),
        Some(readers.stderr_done),
        program.clone(),
    );

    let stage = |stage| {
        let _ = events.send(Event::Stage {
            stage,
            elapsed: begun.elapsed(),
        });
    };
    if secrets.is_some() {
        stage(Stage::WaitReady);
        let awaited = channel::await_ready(readers.ready, handle.wait(), ready_timeout).await;
        let started = after_ready_line(awaited, handle, program).await;
        if let Ok(Started::Running {
            ready: Some(ready), ..
        }) = &started
        {
            let _ = events.send(Event::Ready {
                port: ready.port,
                elapsed: begun.elapsed(),
            });
        }
        return started;
    }
    if let Some(pattern) = expect.pattern {
        stage(Stage::WaitPattern);
        let matched = channel::await_pattern(readers.matched, handle.wait(), ready_timeout).await;
        if let Matched::NotSeen(waited) = &matched {
            if !pattern.required {
                let _ = events.send(channel::pattern_not_seen(pattern, *waited));
            }
        }
        return after_ready_pattern(matched, pattern, handle, program).await;
    }
    let exit = async { Ok::<_, std::convert::Infallible>(handle.wait().await) };
    let Ok(after) = channel::follow_delay(expect.delay, exit, events, begun).await;
    match after {
        AfterDelay::Running => Ok(Started::Running {
            handle,
            ready: None,
        }),
        AfterDelay::Detached => Ok(Started::Detached),
        AfterDelay::Failed(status) => Err(handle.exit_error(status).await),
    }
}

/// The start's outcome once the wait for the ready line ended.
async fn after_ready_line(
    awaited: Awaited,
    mut handle: ServerHandle,
    program: String,
) -> Result<Started, StartError> {
    match awaited {
        Awaited::Ready(ready) => Ok(Started::Running {
            handle,
            ready: Some(ready),
        }),
        Awaited::BadLine(message) => Err(StartError::BadReadyLine { program, message }),
        Awaited::Detached => Ok(Started::Detached),
        Awaited::Failed(status) => {
            let status = match status {
                Some(s) => s,
                None => handle.wait().await,
            };
            Err(handle.exit_error(status).await)
        }
        Awaited::TimedOut(waited) => {
            let stderr_tail = handle.stderr_tail();
            handle.cleanup().await;
            Err(StartError::NoReadyLine {
                program,
                waited,
                stderr_tail,
            })
        }
    }
}

/// The start's outcome once the wait for the ready pattern ended: a default pattern not
/// seen hands over all the same, a written one is an error.
async fn after_ready_pattern(
    matched: Matched,
    pattern: &crate::plan::ReadyPattern,
    mut handle: ServerHandle,
    program: String,
) -> Result<Started, StartError> {
    match matched {
        Matched::Line(_) => Ok(Started::Running {
            handle,
            ready: None,
        }),
        Matched::Detached => Ok(Started::Detached),
        Matched::Failed(status) => Err(handle.exit_error(status).await),
        Matched::NotSeen(waited) if pattern.required => {
            let stderr_tail = handle.stderr_tail();
            handle.cleanup().await;
            Err(StartError::NoReadyPattern {
                program,
                pattern: pattern.regex.as_str().to_string(),
                waited,
                stderr_tail,
            })
        }
        Matched::NotSeen(_) => Ok(Started::Running {
            handle,
            ready: None,
        }),
    }
}
