//! Running a plan from the command line: start, supervise, report progress, wait for
//! Ctrl-C, SIGTERM, the server's exit or `--exec`'s command, then clean up.

use std::io::IsTerminal;
use std::time::Duration;

use pv_transport::Token;
use pv_transport::launch::Secrets;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, LaunchArgs};
use crate::events::{Event, Stage};
use crate::plan::{Launch, Plan};
use crate::session::{connection_target, needs_token};
use crate::startup::{DEFAULT_READY_TIMEOUT, Started, start_local};

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
    runtime.block_on(run_async(plan, args))
}

fn show(event: &Event, json: bool, fancy: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(event) {
            println!("{line}");
        }
        return;
    }
    let text = match event {
        Event::Stage { stage, elapsed } => format!(
            "[{:>6.2}s] {}",
            elapsed.as_secs_f64(),
            match stage {
                Stage::Start => "starting the server",
                Stage::WaitReady => "waiting for the server's ready line",
                Stage::Delay => "waiting the configured delay",
                Stage::WaitExit => "waiting for the command to exit",
                Stage::Connect => "connecting",
                Stage::Cleanup => "stopping processes",
            }
        ),
        Event::Ready { port, elapsed } => format!(
            "[{:>6.2}s] server ready on port {port}",
            elapsed.as_secs_f64()
        ),
        Event::Stdout { line } => format!("server: {line}"),
        Event::Stderr { line } => format!("server stderr: {line}"),
        Event::Exited { code } => format!(
            "server exited ({})",
            code.map_or("signal".to_string(), |c| format!("code {c}"))
        ),
        Event::Connected { url } => format!("ready: {url}"),
        Event::Failed { message } => format!("failed: {message}"),
    };
    if fancy {
        eprintln!("\u{1b}[2m{text}\u{1b}[0m");
    } else {
        eprintln!("{text}");
    }
}

async fn run_async(plan: Plan, args: &LaunchArgs) -> i32 {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let json = args.json;
    let fancy = std::io::stderr().is_terminal();
    let printer = tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            show(&e, json, fancy);
        }
    });
    let (Ok(mut sigint), Ok(mut sigterm)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("pv-launch: cannot install signal handlers");
        return EXIT_FAILURE;
    };
    let expected = plan.connection().clone();
    let token = needs_token(&expected).then(Token::generate);
    let secrets = token.map(|token| Secrets {
        token,
        client_cert: None,
    });
    let mut handle = None;
    let mut ready = None;
    if let Launch::Process(p) = plan.launch() {
        let timeout = plan
            .timeouts()
            .process_start
            .unwrap_or(DEFAULT_READY_TIMEOUT)
            .max(Duration::from_secs(1));
        let start = start_local(p, secrets.as_ref(), timeout, &tx);
        let outcome = tokio::select! {
            r = start => r,
            _ = sigint.recv() => return finish(printer, tx, EXIT_INTERRUPTED).await,
            _ = sigterm.recv() => return finish(printer, tx, EXIT_INTERRUPTED).await,
        };
        match outcome {
            Ok(Started::Running {
                handle: h,
                ready: r,
            }) => {
                handle = Some(h);
                ready = r;
            }
            Ok(Started::Detached) => {}
            Err(e) => {
                let _ = tx.send(Event::Failed {
                    message: e.to_string(),
                });
                return finish(printer, tx, EXIT_FAILURE).await;
            }
        }
    }
    let url = connection_target(&expected, ready.as_ref()).to_string();
    let _ = tx.send(Event::Connected { url: url.clone() });
    // The connect step (pv-transport) is not wired yet: see `crate::session`.
    let code = match &args.exec {
        Some(cmd) => {
            let child = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(cmd)
                .env("PV_LAUNCH_URL", &url)
                .status();
            tokio::select! {
                s = child => s.map(|s| s.code().unwrap_or(EXIT_FAILURE)).unwrap_or(EXIT_FAILURE),
                _ = sigint.recv() => EXIT_INTERRUPTED,
                _ = sigterm.recv() => EXIT_INTERRUPTED,
            }
        }
        None => match handle.as_mut() {
            Some(h) => tokio::select! {
                s = h.wait() => {
                    let _ = tx.send(Event::Exited { code: s.code() });
                    if s.success() { EXIT_OK } else { EXIT_FAILURE }
                }
                _ = sigint.recv() => EXIT_INTERRUPTED,
                _ = sigterm.recv() => EXIT_INTERRUPTED,
            },
            None => EXIT_OK,
        },
    };
    if let Some(mut h) = handle {
        let _ = tx.send(Event::Stage {
            stage: Stage::Cleanup,
            elapsed: Duration::ZERO,
        });
        h.cleanup().await;
    }
    finish(printer, tx, code).await
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
