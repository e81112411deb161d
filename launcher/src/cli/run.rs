//! Running a plan from the command line: start the server, hand it to the client program
//! (`--exec`, or the profile's `client`), supervise both, report progress, and clean up on
//! Ctrl-C, SIGTERM, the client's exit or the server's end.
//!
//! Two ways to hand a server over, chosen by its handshake:
//!
//! - **Hand-off** (ParaView's handshake, or none: a real pvserver): pv-launch never
//!   connects. It readies the path — start, tunnels, readiness from a ready line or the
//!   server's own output — and the client runs its own handshake end to end. Forward:
//!   the client gets `cs://HOST:PORT` to dial. Reverse: the client gets
//!   `csrc://127.0.0.1:PORT`, is started first, and the server is started only once the
//!   client's port listens (read from the kernel's socket table, without connecting).
//! - **Relay** (pv-launch's native handshake, maybe TLS): pv-launch authenticates and
//!   decrypts, and serves the plaintext stream on a loopback port that admits only this
//!   user's sockets (`cs://127.0.0.1:PORT`), and on a 0700 Unix socket
//!   (`PV_LAUNCH_SOCKET`); one client per server connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pv_launch::events::{Event, EventSender, Stage};
use pv_launch::plan::{ExpectedConnection, Plan};
use pv_launch::profile::ConnectTimeout;
use pv_launch::session::{
    Handoff, LaunchOptions, Session, client_url, launch_with, loopback_endpoints, needs_token,
    prepare,
};
use pv_launch::startup::watcher::Watcher;
use pv_launch::startup::{ServerHandle, TERMINATE_GRACE, spawn_group};
use pv_transport::handoff::{LoopbackEndpoint, Refused, relay};
use pv_transport::{Direction, Resource};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc::UnboundedSender;

use crate::cli::progress::Renderer;
use crate::cli::{EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, LaunchArgs};

/// How long an interrupted launch waits for its batch job's cancel to be confirmed.
const BATCH_CANCEL_WAIT: Duration = Duration::from_secs(45);

/// Exit status when the `--json` reader went away (as a shell reports SIGPIPE).
const EXIT_BROKEN_PIPE: i32 = 141;

/// The client program to run once the server is ready.
pub enum ClientCommand {
    /// `--exec CMD`: run by `/bin/sh -c`.
    Shell(String),
    /// The profile's `client = [...]`, rendered with the `PV_LAUNCH_*` variables.
    Argv(pv_launch::plan::ClientPlan),
}

/// Run `plan` as the CLI does and return the exit status.
pub fn run(plan: Plan, args: &LaunchArgs, options: LaunchOptions) -> i32 {
    let Some(runtime) = crate::cli::runtime() else {
        return EXIT_FAILURE;
    };
    let code = runtime.block_on(run_async(plan, args, options));
    drop(runtime);
    // A launch dropped by Ctrl-C or SIGTERM stops its process groups in the background:
    // let a server that ignores SIGTERM get its SIGKILL before we exit.
    pv_launch::startup::wait_for_group_stops();
    code
}

/// Where a session's events go.
struct Watch {
    tx: UnboundedSender<Event>,
    begun: Instant,
}

/// What ends a session besides the two programs: a signal, or the display's reader going
/// away.
struct Interrupts {
    sigint: Signal,
    sigterm: Signal,
    /// Fires when the `--json` reader went away.
    display_gone: tokio::sync::watch::Receiver<bool>,
}

/// Why the session is ending.
enum End {
    /// With this exit status.
    Code(i32),
    /// SIGINT or SIGTERM.
    Signal(&'static str),
    /// The `--json` reader went away.
    DisplayGone,
}

impl Interrupts {
    /// The next SIGINT or SIGTERM, or the display's end.
    async fn next(&mut self) -> End {
        let gone = async {
            while !*self.display_gone.borrow() {
                if self.display_gone.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        };
        tokio::select! {
            _ = self.sigint.recv() => End::Signal("SIGINT"),
            _ = self.sigterm.recv() => End::Signal("SIGTERM"),
            () = gone => End::DisplayGone,
        }
    }
}

impl Watch {
    fn send(&self, event: Event) {
        let _ = self.tx.send(event);
    }

    fn failed(&self, message: impl std::fmt::Display) -> End {
        self.send(Event::Failed {
            message: message.to_string(),
        });
        End::Code(EXIT_FAILURE)
    }
}

async fn run_async(plan: Plan, args: &LaunchArgs, options: LaunchOptions) -> i32 {
    let begun = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let (gone_tx, display_gone) = tokio::sync::watch::channel(false);
    if args.json {
        watch_stdout_reader(gone_tx.clone());
    }
    let mut display = Renderer::for_cli(args.json);
    let printer = tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            if display.show(&e).is_err() {
                let _ = gone_tx.send(true);
                break;
            }
        }
        display.finish();
    });
    let (Ok(sigint), Ok(sigterm)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("pv-launch: cannot install signal handlers");
        return EXIT_FAILURE;
    };
    let watch = Watch {
        tx: tx.clone(),
        begun,
    };
    let mut stop = Interrupts {
        sigint,
        sigterm,
        display_gone,
    };
    let client = match (&args.exec, plan.client(), args.no_client) {
        (Some(cmd), _, _) => Some(ClientCommand::Shell(cmd.clone())),
        (None, Some(c), false) => Some(ClientCommand::Argv(c.clone())),
        _ => None,
    };
    let expected = plan.connection();
    let mut parts = Parts::default();
    let run = Run {
        plan: &plan,
        options: &options,
        client,
        json: args.json,
        watch: &watch,
    };
    let end = if expected.resource != Resource::Builtin && !needs_token(expected) {
        hand_off(run, &mut stop, &mut parts).await
    } else {
        connect_and_relay(run, &mut stop, &mut parts).await
    };
    let code = match end {
        End::Code(c) => c,
        End::Signal(signal) => {
            watch.send(Event::Interrupted {
                signal: signal.to_string(),
                elapsed: begun.elapsed(),
            });
            EXIT_INTERRUPTED
        }
        End::DisplayGone => EXIT_BROKEN_PIPE,
    };
    parts.cleanup(&watch).await;
    drop(watch);
    drop(tx);
    let _ = printer.await;
    code
}

/// With `--json`: notice the reader of stdout going away even while nothing is written
/// (the write end of a pipe reports `POLLERR` once its reader closed), so that
/// `pv-launch --json … | head -1` ends, and cleans up, while a quiet client runs. A
/// detached thread: it blocks in `poll` until then, or until the process exits.
fn watch_stdout_reader(gone: tokio::sync::watch::Sender<bool>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("stdout-reader".into())
        .spawn(move || {
            loop {
                // No events asked: only an error or a hang-up wakes it (never a regular
                // file, /dev/null or a live pipe).
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::empty())];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {
                        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                        if revents.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
                            let _ = gone.send(true);
                        }
                        if !revents.is_empty() {
                            return;
                        }
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => return,
                }
            }
        });
}

/// One run's inputs: the plan, how to start it, the client program, the display.
struct Run<'a> {
    plan: &'a Plan,
    options: &'a LaunchOptions,
    client: Option<ClientCommand>,
    json: bool,
    watch: &'a Watch,
}

/// What a session started, stopped at its end.
#[derive(Default)]
struct Parts {
    client: Option<ServerHandle>,
    handoff: Option<Handoff>,
    session: Option<Session>,
    relays: Vec<tokio::task::JoinHandle<()>>,
    /// Something was started (a server, a client, a launch that was interrupted).
    started: bool,
}

impl Parts {
    /// Stop everything, reporting the cleanup stage when something was started (a relay
    /// alone is closed quietly).
    async fn cleanup(self, watch: &Watch) {
        let (tx, begun) = (&watch.tx, watch.begun);
        let report = self.started || self.client.is_some();
        if report {
            let _ = tx.send(Event::Stage {
                stage: Stage::Cleanup,
                elapsed: begun.elapsed(),
            });
        }
        let began = Instant::now();
        if let Some(mut client) = self.client {
            client.cleanup().await;
        }
        for r in &self.relays {
            r.abort();
        }
        for r in self.relays {
            let _ = r.await;
        }
        if let Some(session) = self.session {
            session.cleanup().await;
        }
        if let Some(handoff) = self.handoff {
            handoff.cleanup().await;
        }
        if !report {
            return;
        }
        // The groups' grace is watched by threads: wait for them off the runtime, so the
        // display keeps running.
        let _ = tokio::task::spawn_blocking(pv_launch::startup::wait_for_group_stops).await;
        // A batch job of a dropped launch is cancelled (and confirmed gone) from a
        // background task.
        pv_launch::startup::batch::finish_pending_cancels(BATCH_CANCEL_WAIT).await;
        let _ = tx.send(Event::CleanedUp {
            took: began.elapsed(),
            elapsed: begun.elapsed(),
        });
    }
}

/// How long the client may take to connect (forward) or to listen (reverse).
fn client_deadline(expected: &ExpectedConnection) -> Option<Duration> {
    match expected.timeout {
        ConnectTimeout::OneAttempt => Some(Duration::from_secs(1)),
        ConnectTimeout::Within(d) => Some(d),
        ConnectTimeout::Forever => None,
    }
}

/// The variables a client gets: `PV_LAUNCH_URL`, and each endpoint's host and port so
/// that no client needs to parse the URL.
fn client_variables(url: &str, endpoints: &[(String, u16)]) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert("PV_LAUNCH_URL".to_string(), url.to_string());
    let mut put = |prefix: &str, (host, port): &(String, u16)| {
        v.insert(format!("{prefix}_HOST"), host.clone());
        v.insert(format!("{prefix}_PORT"), port.to_string());
    };
    match endpoints {
        [one] => put("PV_LAUNCH", one),
        [data, render] => {
            put("PV_LAUNCH", data);
            put("PV_LAUNCH_DATA", data);
            put("PV_LAUNCH_RENDER", render);
        }
        _ => {}
    }
    v
}

/// Start the client in its own process group, with `vars` in its environment. With
/// `--json`, its stdout goes to pv-launch's stderr, so stdout carries only JSON lines.
fn spawn_client(
    client: &ClientCommand,
    vars: &BTreeMap<String, String>,
    json: bool,
    watch: &Watch,
) -> Result<ServerHandle, String> {
    let (argv, shown) = match client {
        ClientCommand::Shell(cmd) => (
            vec!["/bin/sh".to_string(), "-c".to_string(), cmd.clone()],
            cmd.clone(),
        ),
        ClientCommand::Argv(plan) => {
            let argv = plan.render(vars).map_err(|e| e.to_string())?;
            let shown = argv
                .iter()
                .map(|a| pv_launch::startup::ssh::sh_quote(a))
                .collect::<Vec<_>>()
                .join(" ");
            (argv, shown)
        }
    };
    let mut command = tokio::process::Command::new(&argv[0]);
    command.args(&argv[1..]).envs(vars).stdin(Stdio::inherit());
    if json {
        let err = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("cannot give the client pv-launch's stderr: {e}"))?;
        command.stdout(Stdio::from(err));
    }
    let handle = spawn_group(command, &argv[0]).map_err(|e| e.to_string())?;
    watch.send(Event::Client {
        pid: handle.pid(),
        command: shown,
    });
    Ok(handle)
}

/// Wait for `client` to end: its exit status as pv-launch's (a signal: failure).
async fn client_exit(client: &mut Option<ServerHandle>, watch: &Watch) -> i32 {
    let Some(c) = client.as_mut() else {
        return std::future::pending().await;
    };
    let status = c.wait().await;
    watch.send(Event::ClientExited {
        code: status.code(),
    });
    status.code().unwrap_or(EXIT_FAILURE)
}

/// Reverse hand-off, client first: the ports it listens on (the resource's, or free
/// ones), the client started with `csrc://` (or told to start, without one), and the wait
/// until its ports listen — read from the kernel's socket table, never by connecting,
/// which would use up a ParaView client's reverse listener.
async fn client_listens_first(
    expected: &ExpectedConnection,
    client: Option<&ClientCommand>,
    json: bool,
    watch: &Watch,
    stop: &mut Interrupts,
    parts: &mut Parts,
) -> Result<Vec<u16>, End> {
    let mut ports = vec![];
    // The client listens first: on the resource's ports (or free ones).
    for (_, port) in expected.resource.endpoints() {
        ports.push(match port {
            0 => match free_port() {
                Ok(p) => p,
                Err(e) => return Err(watch.failed(format!("cannot find a free port: {e}"))),
            },
            p => p,
        });
    }
    let endpoints = loopback_endpoints(&ports);
    let url = client_url(expected.resource.scheme(), &endpoints);
    let vars = client_variables(&url, &endpoints);
    match &client {
        Some(c) => match spawn_client(c, &vars, json, watch) {
            Ok(h) => {
                parts.client = Some(h);
                parts.started = true;
            }
            Err(e) => return Err(watch.failed(format!("cannot start the client: {e}"))),
        },
        None => watch.send(Event::Note {
            message: format!(
                "start your client listening for the server ({url}); the server starts once it listens"
            ),
        }),
    }
    watch.send(Event::Stage {
        stage: Stage::WaitClient,
        elapsed: watch.begun.elapsed(),
    });
    for port in &ports {
        let addr = SocketAddr::from(([127, 0, 0, 1], *port));
        let wait = wait_listening(addr, client_deadline(expected));
        tokio::select! {
            r = wait => if let Err(e) = r {
                return Err(watch.failed(format!("the client did not listen: {e}")));
            },
            code = client_exit(&mut parts.client, watch) => {
                return Err(watch.failed(format!(
                    "the client exited (code {code}) before it listened on {addr}"
                )));
            }
            end = stop.next() => return Err(end),
        }
    }
    Ok(ports)
}

/// The hand-off: ready the path and let the client run its own handshake.
async fn hand_off(run: Run<'_>, stop: &mut Interrupts, parts: &mut Parts) -> End {
    let Run {
        plan,
        options,
        client,
        json,
        watch,
    } = run;
    let expected = plan.connection();
    let reverse = expected.resource.direction() == Some(Direction::Reverse);
    let mut ports = vec![];
    if reverse {
        match client_listens_first(expected, client.as_ref(), json, watch, stop, parts).await {
            Ok(p) => ports = p,
            Err(end) => return end,
        }
    }
    parts.started = true;
    let mut preparing = Box::pin(prepare(plan, &watch.tx, options, &ports));
    let prepared = tokio::select! {
        r = &mut preparing => r,
        end = stop.next() => {
            // Dropping the start stops what it started.
            drop(preparing);
            return end;
        }
    };
    drop(preparing);
    let handoff = match prepared {
        Ok(h) => h,
        Err(e) => return watch.failed(e),
    };
    if !reverse {
        let vars = client_variables(handoff.url(), handoff.endpoints());
        if let Some(c) = &client {
            match spawn_client(c, &vars, json, watch) {
                Ok(h) => parts.client = Some(h),
                Err(e) => {
                    parts.handoff = Some(handoff);
                    return watch.failed(format!("cannot start the client: {e}"));
                }
            }
        }
    }
    let handoff = parts.handoff.insert(handoff);
    // Biased: a client and a server that end together (the server because its client
    // left) end the session with the client's status.
    tokio::select! {
        biased;
        code = client_exit(&mut parts.client, watch) => {
            // A server whose client left ends by itself (pvserver does): let it, before
            // the cleanup signals what is left.
            let _ = tokio::time::timeout(TERMINATE_GRACE, handoff.wait_server()).await;
            End::Code(code)
        }
        s = handoff.wait_server() => {
            let end = server_ended(s, watch);
            let quiet = std::future::pending::<()>();
            client_finishes(end, &mut parts.client, quiet, watch).await
        }
        end = stop.next() => end,
    }
}

/// After the server ended: the client (and a relay still carrying the server's last bytes
/// to it) gets the same grace to finish on its own that a server gets after its client
/// leaves, before the cleanup stops it. A client that ends within it gives its own status
/// when the server ended well; without a client program, the relay (`drained`) gets the
/// grace.
async fn client_finishes(
    end: End,
    client: &mut Option<ServerHandle>,
    drained: impl std::future::Future<Output = ()>,
    watch: &Watch,
) -> End {
    if client.is_some() {
        if let Ok(code) = tokio::time::timeout(TERMINATE_GRACE, client_exit(client, watch)).await {
            if matches!(end, End::Code(EXIT_OK)) {
                return End::Code(code);
            }
        }
    } else {
        let _ = tokio::time::timeout(TERMINATE_GRACE, drained).await;
    }
    end
}

/// The server ended on its own (or its ssh connection did): the session ends.
fn server_ended(
    status: Result<std::process::ExitStatus, pv_launch::session::LaunchError>,
    watch: &Watch,
) -> End {
    match status {
        Ok(s) => {
            watch.send(Event::Exited { code: s.code() });
            End::Code(if s.success() { EXIT_OK } else { EXIT_FAILURE })
        }
        // The ssh connection (and with it the tunnels) is gone.
        Err(e) => watch.failed(e),
    }
}

/// Wait until something listens at `addr`, without connecting; `None`: no deadline.
async fn wait_listening(addr: SocketAddr, deadline: Option<Duration>) -> Result<(), String> {
    // Without a deadline, wait a day at a time.
    let timeout = deadline.unwrap_or(Duration::from_secs(86_400));
    loop {
        match pv_transport::socket_table::wait_listening(addr, timeout).await {
            Ok(()) => return Ok(()),
            Err(pv_transport::socket_table::WaitListeningError::TimedOut { .. })
                if deadline.is_none() => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// The relay: connect (native handshake, TLS), then serve the plaintext stream to the
/// client on a loopback endpoint for this user only, and on a private Unix socket.
async fn connect_and_relay(run: Run<'_>, stop: &mut Interrupts, parts: &mut Parts) -> End {
    let Run {
        plan,
        options,
        client,
        json,
        watch,
    } = run;
    parts.started = !matches!(plan.launch(), pv_launch::plan::Launch::Nothing);
    // An interrupt here drops the launch, which stops what it started: SIGTERM to its
    // process groups at once and SIGKILL after the grace from a background thread, an
    // ssh master told to exit.
    let mut launching = Box::pin(launch_with(plan, &watch.tx, options));
    let launched = tokio::select! {
        r = &mut launching => r,
        end = stop.next() => {
            // Let the display show the interrupt before the drop, which may block this
            // thread (an ssh master's exit is awaited in its destructor).
            tokio::task::yield_now().await;
            drop(launching);
            return end;
        }
    };
    drop(launching);
    let session = match launched {
        Ok(s) => parts.session.insert(s),
        Err(e) => return watch.failed(e),
    };
    // A server started by hand: nothing of pv-launch's to stop but the relay.
    parts.started = session.started().is_some();
    let connections = session.take_connections();
    let (endpoints, relay_socket, vars) = match relay_endpoints(connections.len(), watch).await {
        Ok(r) => r,
        Err(end) => return end,
    };
    // With a client program, it must connect within the connect timeout; without one,
    // the session waits for whoever connects until it is ended.
    let deadline = match client {
        Some(_) => client_deadline(plan.connection()),
        None => None,
    }
    .unwrap_or(Duration::from_secs(10 * 365 * 86_400));
    // Each relay's outcome comes with its connection (and Unix relay), closed only once the
    // outcome is acted on: a server that exits when its connection closes must not have
    // its exit taken for why the session ended.
    let (done_tx, mut done) =
        tokio::sync::mpsc::unbounded_channel::<(Result<(), RelayEnd>, RelayParts)>();
    let mut socket = Some(relay_socket);
    for (i, (conn, ep)) in connections.into_iter().zip(endpoints).enumerate() {
        let tx = watch.tx.clone();
        let done_tx = done_tx.clone();
        // The Unix socket serves the first connection too: whichever client comes first.
        let unix = if i == 0 { socket.take() } else { None };
        parts.relays.push(tokio::spawn(async move {
            let mut conn = conn;
            let r = serve_one(&mut conn, ep, unix.as_ref(), deadline, tx).await;
            let _ = done_tx.send((r, (conn, unix)));
        }));
    }
    drop(done_tx);
    if let Some(c) = &client {
        match spawn_client(c, &vars, json, watch) {
            Ok(h) => parts.client = Some(h),
            Err(e) => return watch.failed(format!("cannot start the client: {e}")),
        }
    }
    let session = parts.session.as_mut().expect("set above");
    // Biased: when the client and the server end together (a server that exits once its
    // client is gone), pv-launch's status is the client's.
    tokio::select! {
        biased;
        code = client_exit(&mut parts.client, watch) => End::Code(code),
        s = session.wait_server() => {
            let end = server_ended(s, watch);
            let drained = async {
                let _ = done.recv().await;
            };
            client_finishes(end, &mut parts.client, drained, watch).await
        }
        r = done.recv() => match r.map(|(r, held)| (r, Some(held))).unwrap_or((Ok(()), None)) {
            // Without a client program, the first relayed client ending ends the session.
            (Ok(()), Some(_)) if parts.client.is_none() => End::Code(EXIT_OK),
            // Nobody came within the connect timeout: the session fails.
            (Err(RelayEnd::NoClient(e)), _) => watch.failed(e),
            (Err(RelayEnd::Broken(e)), _) if parts.client.is_none() => watch.failed(e),
            // A served connection that ended badly (its client saw the connection close)
            // is the client program's to judge.
            (Err(RelayEnd::Broken(e)), held) => {
                drop(held);
                watch.send(Event::Note {
                    message: format!("the relayed connection ended badly: {e}"),
                });
                let code = client_exit(&mut parts.client, watch).await;
                End::Code(code)
            }
            (_, held) => {
                drop(held);
                // A relay ended while the client program runs: it decides.
                let code = client_exit(&mut parts.client, watch).await;
                End::Code(code)
            }
        },
        end = stop.next() => end,
    }
}

/// Where local programs reach the authenticated connection(s): a loopback port each that
/// admits only this user's sockets, and a private Unix socket (for the first); the
/// client's variables for them. Announced as events.
async fn relay_endpoints(
    count: usize,
    watch: &Watch,
) -> Result<(Vec<LoopbackEndpoint>, UnixRelay, BTreeMap<String, String>), End> {
    let relay_socket = UnixRelay::open()
        .map_err(|e| watch.failed(format!("cannot create the local relay socket: {e}")))?;
    watch.send(Event::Relay {
        socket: relay_socket.path.display().to_string(),
    });
    let mut endpoints = Vec::new();
    for _ in 0..count {
        let ep = LoopbackEndpoint::bind(0)
            .await
            .map_err(|e| watch.failed(format!("cannot listen on 127.0.0.1: {e}")))?;
        endpoints.push(ep);
    }
    let ports: Vec<u16> = endpoints.iter().map(|e| e.local_addr().port()).collect();
    let addrs = loopback_endpoints(&ports);
    let scheme = if addrs.len() == 2 { "cdsrs" } else { "cs" };
    let url = client_url(scheme, &addrs);
    let mut vars = client_variables(&url, &addrs);
    vars.insert(
        "PV_LAUNCH_SOCKET".to_string(),
        relay_socket.path.display().to_string(),
    );
    watch.send(Event::Handoff { url });
    Ok((endpoints, relay_socket, vars))
}

/// What a relay held: its connection and, for the first, the Unix relay.
type RelayParts = (pv_transport::Connection, Option<UnixRelay>);

/// How a relay ended badly.
enum RelayEnd {
    /// No client came within the deadline.
    NoClient(String),
    /// A client was served, and the connection then failed.
    Broken(String),
}

/// Serve `conn` to the first client on `ep` (this user's sockets only) or on `unix`.
async fn serve_one(
    conn: &mut pv_transport::Connection,
    ep: LoopbackEndpoint,
    unix: Option<&UnixRelay>,
    deadline: Duration,
    tx: EventSender,
) -> Result<(), RelayEnd> {
    // The refusal names the endpoint, the peer and its uid.
    let refused = |r: &Refused| {
        let _ = tx.send(Event::Note {
            message: r.to_string(),
        });
    };
    let unix_accept = async {
        match unix {
            Some(u) => u.listener.accept().await.map(|(s, _)| s),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = ep.accept_own(deadline, refused) => {
            let mut client = r.map_err(|e| RelayEnd::NoClient(format!("no client connected: {e}")))?;
            relay(&mut client, conn).await.map(|_| ()).map_err(|e| RelayEnd::Broken(e.to_string()))
        }
        r = unix_accept => {
            let mut client = r.map_err(|e| RelayEnd::NoClient(e.to_string()))?;
            relay(&mut client, conn).await.map(|_| ()).map_err(|e| RelayEnd::Broken(e.to_string()))
        }
    }
}

/// A Unix socket in a fresh 0700 directory through which one local program uses the
/// session's authenticated connection. Only the user can reach it.
struct UnixRelay {
    listener: tokio::net::UnixListener,
    path: std::path::PathBuf,
    /// Removes the directory if pv-launch dies without dropping the relay (SIGKILL).
    _watcher: Watcher,
    /// Removed (with the socket) when the relay is dropped.
    _dir: tempfile::TempDir,
}

impl UnixRelay {
    fn open() -> std::io::Result<UnixRelay> {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(std::path::PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        // Created 0700 at once, whatever the umask, with an unguessable name.
        let dir = tempfile::Builder::new()
            .prefix("pv-launch-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(base)?;
        let watcher = Watcher::remove_dir(dir.path())?;
        let path = dir.path().join("connection.sock");
        let listener = tokio::net::UnixListener::bind(&path)?;
        Ok(UnixRelay {
            listener,
            path,
            _watcher: watcher,
            _dir: dir,
        })
    }
}
