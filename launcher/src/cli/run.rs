//! Running a plan from the command line: start, supervise, report progress, wait for
//! Ctrl-C, SIGTERM, the server's exit or `--exec`'s command, then clean up.

use std::time::Instant;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc::UnboundedSender;

use crate::cli::progress::Renderer;
use crate::cli::{EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, LaunchArgs};
use pv_launch::events::{Event, Stage};
use pv_launch::plan::Plan;
use pv_launch::session::launch;

/// How long an interrupted launch waits for its batch job's cancel to be confirmed.
const BATCH_CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(45);

/// Run `plan` as the CLI does and return the exit status.
pub fn run(plan: Plan, args: &LaunchArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pv-launch: cannot start the runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    let code = runtime.block_on(run_async(plan, args));
    drop(runtime);
    // A launch dropped by Ctrl-C or SIGTERM stops its process groups in the background:
    // let a server that ignores SIGTERM get its SIGKILL before we exit.
    pv_launch::startup::wait_for_group_stops();
    code
}

async fn run_async(plan: Plan, args: &LaunchArgs) -> i32 {
    let begun = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let mut display = Renderer::for_cli(args.json);
    let printer = tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            display.show(&e);
        }
        display.finish();
    });
    let (Ok(mut sigint), Ok(mut sigterm)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("pv-launch: cannot install signal handlers");
        return EXIT_FAILURE;
    };
    // Start and connect. An interrupt here drops the launch, which stops what it started:
    // SIGTERM to its process groups at once and SIGKILL after the grace from a background
    // thread, an ssh master told to exit. The cleanup stage reports that stop as it
    // reports the one after connecting.
    let mut launching = Box::pin(launch(&plan, &tx));
    let launched = tokio::select! {
        r = &mut launching => r,
        signal = interrupt(&mut sigint, &mut sigterm) => {
            report_interrupt(&tx, signal, begun);
            let cleanup = CleanupReport::begin(&tx, begun);
            // Let the display start the cleanup stage before the drop, which may block
            // this thread (an ssh master's exit is awaited in its destructor).
            tokio::task::yield_now().await;
            drop(launching);
            // The groups' grace is watched by threads: wait for them off the runtime, so
            // the display keeps running.
            let _ = tokio::task::spawn_blocking(pv_launch::startup::wait_for_group_stops).await;
            // A batch job is cancelled (and confirmed gone) from a background task.
            pv_launch::startup::batch::finish_pending_cancels(BATCH_CANCEL_WAIT).await;
            cleanup.done(&tx, begun);
            return finish(printer, tx, EXIT_INTERRUPTED).await;
        }
    };
    drop(launching);
    let mut session = match launched {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Event::Failed {
                message: e.to_string(),
            });
            return finish(printer, tx, EXIT_FAILURE).await;
        }
    };
    let url = session.url().to_string();
    // Local programs reach the authenticated connection through a private relay socket.
    let relay = match Relay::open(session.take_connections()) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Event::Failed {
                message: format!("cannot create the local relay socket: {e}"),
            });
            session.cleanup().await;
            return finish(printer, tx, EXIT_FAILURE).await;
        }
    };
    let _ = tx.send(Event::Relay {
        socket: relay.path().display().to_string(),
    });
    let relay_path = relay.path().to_path_buf();
    let mut relaying = tokio::spawn(relay.serve());
    let mut relay_ended = false;
    let mut interrupted = None;
    let code = match &args.exec {
        Some(cmd) => {
            let child = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(cmd)
                .env("PV_LAUNCH_URL", &url)
                .env("PV_LAUNCH_SOCKET", &relay_path)
                .kill_on_drop(true)
                .status();
            tokio::select! {
                s = child => s.map(|s| s.code().unwrap_or(EXIT_FAILURE)).unwrap_or(EXIT_FAILURE),
                signal = interrupt(&mut sigint, &mut sigterm) => {
                    interrupted = Some(signal);
                    EXIT_INTERRUPTED
                }
            }
        }
        None => {
            tokio::select! {
                s = session.wait_server() => match s {
                    Ok(s) => {
                        let _ = tx.send(Event::Exited { code: s.code() });
                        if s.success() { EXIT_OK } else { EXIT_FAILURE }
                    }
                    // The ssh connection (and with it the tunnels) is gone.
                    Err(e) => {
                        let _ = tx.send(Event::Failed { message: e.to_string() });
                        EXIT_FAILURE
                    }
                },
                _ = &mut relaying => {
                    relay_ended = true;
                    EXIT_OK
                }
                signal = interrupt(&mut sigint, &mut sigterm) => {
                    interrupted = Some(signal);
                    EXIT_INTERRUPTED
                }
            }
        }
    };
    if let Some(signal) = interrupted {
        report_interrupt(&tx, signal, begun);
    }
    let cleanup = CleanupReport::begin(&tx, begun);
    session.cleanup().await;
    // The relay task owns the socket's directory: stop it and wait, so the directory is gone.
    if !relay_ended {
        relaying.abort();
        let _ = relaying.await;
    }
    cleanup.done(&tx, begun);
    finish(printer, tx, code).await
}

/// The next SIGINT or SIGTERM: its name.
async fn interrupt(sigint: &mut Signal, sigterm: &mut Signal) -> &'static str {
    tokio::select! {
        _ = sigint.recv() => "SIGINT",
        _ = sigterm.recv() => "SIGTERM",
    }
}

fn report_interrupt(tx: &UnboundedSender<Event>, signal: &str, begun: Instant) {
    let _ = tx.send(Event::Interrupted {
        signal: signal.to_string(),
        elapsed: begun.elapsed(),
    });
}

/// The cleanup stage's two events: its start, and its end with how long stopping took.
struct CleanupReport {
    began: Instant,
}

impl CleanupReport {
    fn begin(tx: &UnboundedSender<Event>, begun: Instant) -> CleanupReport {
        let _ = tx.send(Event::Stage {
            stage: Stage::Cleanup,
            elapsed: begun.elapsed(),
        });
        CleanupReport {
            began: Instant::now(),
        }
    }

    fn done(self, tx: &UnboundedSender<Event>, begun: Instant) {
        let _ = tx.send(Event::CleanedUp {
            took: self.began.elapsed(),
            elapsed: begun.elapsed(),
        });
    }
}

/// A Unix socket in a fresh 0700 directory through which one local program at a time uses
/// the session's authenticated connection (the first connection of a data/render pair).
/// Only the user can reach it, unlike a loopback TCP port on a shared login node.
struct Relay {
    listener: tokio::net::UnixListener,
    path: std::path::PathBuf,
    connections: Vec<pv_transport::Connection>,
    /// Removed (with the socket) when the relay is dropped.
    _dir: tempfile::TempDir,
}

impl Relay {
    fn open(connections: Vec<pv_transport::Connection>) -> std::io::Result<Relay> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(std::path::PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        // tempfile makes the directory 0700 with an unguessable name.
        let dir = tempfile::Builder::new()
            .prefix("pv-launch-")
            .tempdir_in(base)?;
        let path = dir.path().join("connection.sock");
        let listener = tokio::net::UnixListener::bind(&path)?;
        Ok(Relay {
            listener,
            path,
            connections,
            _dir: dir,
        })
    }

    fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Relay the first connection to the first local client; ends when either side closes.
    async fn serve(mut self) {
        let Some(mut conn) = self.connections.drain(..).next() else {
            return std::future::pending().await;
        };
        if let Ok((mut local, _)) = self.listener.accept().await {
            let _ = tokio::io::copy_bidirectional(&mut local, &mut conn).await;
        }
    }
}

async fn finish(
    printer: tokio::task::JoinHandle<()>,
    tx: UnboundedSender<Event>,
    code: i32,
) -> i32 {
    drop(tx);
    let _ = printer.await;
    code
}
