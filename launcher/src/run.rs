//! Running a plan from the command line: start, supervise, report progress, wait for
//! Ctrl-C, SIGTERM, the server's exit or `--exec`'s command, then clean up.

use std::time::Instant;

use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, LaunchArgs};
use crate::events::{Event, Stage};
use crate::plan::Plan;
use crate::progress::Renderer;
use crate::session::launch;

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
    crate::startup::wait_for_group_stops();
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
    // Start and connect; an interrupt here drops the launch, which stops what it started.
    let launched = tokio::select! {
        r = launch(&plan, &tx) => r,
        _ = sigint.recv() => return finish(printer, tx, EXIT_INTERRUPTED).await,
        _ = sigterm.recv() => return finish(printer, tx, EXIT_INTERRUPTED).await,
    };
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
                _ = sigint.recv() => EXIT_INTERRUPTED,
                _ = sigterm.recv() => EXIT_INTERRUPTED,
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
                _ = sigint.recv() => EXIT_INTERRUPTED,
                _ = sigterm.recv() => EXIT_INTERRUPTED,
            }
        }
    };
    let cleanup_began = Instant::now();
    let _ = tx.send(Event::Stage {
        stage: Stage::Cleanup,
        elapsed: begun.elapsed(),
    });
    session.cleanup().await;
    // The relay task owns the socket's directory: stop it and wait, so the directory is gone.
    if !relay_ended {
        relaying.abort();
        let _ = relaying.await;
    }
    let _ = tx.send(Event::CleanedUp {
        took: cleanup_began.elapsed(),
        elapsed: begun.elapsed(),
    });
    finish(printer, tx, code).await
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
    tx: tokio::sync::mpsc::UnboundedSender<Event>,
    code: i32,
) -> i32 {
    drop(tx);
    let _ = printer.await;
    code
}
