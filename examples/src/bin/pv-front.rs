//! `pv-front`: pv-transport's TLS and native handshake in front of a plain local TCP server,
//! such as Debian's `pvserver`.
//!
//! pv-launch starts it as the server of a `cs+tls://` profile. It reads the one-time token
//! from the secrets line on stdin, optionally starts the backend (the command after `--`,
//! stdin closed, stdout sent to stderr, `PV_LAUNCH_TOKEN` removed from its environment),
//! waits until the backend's port listens (from the socket tables, without a probe
//! connection: that would use up `pvserver`'s one client), listens itself and prints the
//! ready line. The first client that passes the handshake is relayed byte for byte to a new
//! connection to the backend; a client that fails it never reaches the backend. When the
//! relay ends, a backend it started is given a few seconds to exit and is then killed.
//!
//! ```text
//! pv-front --backend 127.0.0.1:PORT [--server-port P] [--bind-address A]
//!          [--backend-timeout S] [--timeout S] [-- BACKEND ARGV...]
//! ```
//!
//! With `--backend 127.0.0.1:0` and a backend command, pv-front picks a free loopback port
//! and writes it where the command says `{backend-port}`.

use std::net::{IpAddr, SocketAddr};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use clap::Parser;
use pv_transport::handoff::relay;
use pv_transport::handshake::native::{NativeHandshake, PROTOCOL_VERSION};
use pv_transport::launch::{ReadyLine, TOKEN_ENV};
use pv_transport::socket_table::wait_listening;
use pv_transport::{
    ConnectionConfig, ConnectionManager, ConnectionMode, Listener, ServerIdentity, TlsConfig,
};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

#[path = "../stdin_secrets.rs"]
mod stdin_secrets;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Where the backend's port goes in its command when pv-front picks it.
const PORT_PLACEHOLDER: &str = "{backend-port}";

/// How long a backend pv-front started may take to exit by itself after the relay ended.
const BACKEND_EXIT_GRACE: Duration = Duration::from_secs(5);

/// Fronts a plain local TCP server with pv-transport's TLS and native handshake.
#[derive(Parser, Debug)]
#[command(
    name = "pv-front",
    version,
    after_help = "The token comes from the `pv-launch-secrets v1 token=<hex>` line pv-launch writes \
on stdin; it is never accepted on the command line."
)]
struct Args {
    /// The plain TCP server to relay to (a loopback address); port 0 with a backend command
    /// picks a free port, written where the command says {backend-port}.
    #[arg(long)]
    backend: SocketAddr,
    /// Port to listen on for the authenticated client; 0 picks a free port.
    #[arg(short = 'p', long = "server-port", default_value_t = 0)]
    server_port: u16,
    /// Address to listen on. Loopback unless you ask for more (e.g. 0.0.0.0).
    #[arg(long = "bind-address", default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// Seconds to wait for the backend's port to listen.
    #[arg(long = "backend-timeout", default_value_t = 60)]
    backend_timeout: u64,
    /// Seconds to wait for an authenticated client; 0 = forever.
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    /// Seconds to wait for the secrets line on stdin.
    #[arg(long = "secrets-timeout", default_value_t = 30)]
    secrets_timeout: u64,
    /// The backend to start (e.g. `pvserver --server-port={backend-port}`); stopped when the
    /// relay ends. Without it, the backend must already be started by someone else.
    #[arg(last = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pv-front: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pv-front: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--backend` with its port settled: a free loopback port when it is 0.
fn backend_addr(args: &Args) -> Result<SocketAddr, Error> {
    if !args.backend.ip().is_loopback() {
        return Err(format!(
            "--backend {}: not a loopback address (the backend's side of the relay is plain TCP)",
            args.backend
        )
        .into());
    }
    if args.backend.port() != 0 {
        return Ok(args.backend);
    }
    if args.command.is_empty() {
        return Err("--backend with port 0 needs a backend command after `--`".into());
    }
    // Bound and closed at once: the backend binds it next (a small window, loopback only).
    let probe = std::net::TcpListener::bind(SocketAddr::new(args.backend.ip(), 0))
        .map_err(|e| format!("picking a free port for the backend: {e}"))?;
    Ok(probe.local_addr()?)
}

/// Start the backend command, its `{backend-port}` replaced.
fn start_backend(command: &[String], port: u16) -> Result<Child, Error> {
    let argv: Vec<String> = command
        .iter()
        .map(|a| a.replace(PORT_PLACEHOLDER, &port.to_string()))
        .collect();
    // The backend's stdout goes to our stderr: our stdout carries the ready line only.
    let stderr = std::io::stderr().lock();
    let out = std::os::fd::AsFd::as_fd(&stderr).try_clone_to_owned()?;
    drop(stderr);
    Command::new(&argv[0])
        .args(&argv[1..])
        .env_remove(TOKEN_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting the backend {:?}: {e}", argv[0]).into())
}

/// Wait for `addr` to listen, or fail if `child` exits first.
async fn backend_ready(
    addr: SocketAddr,
    wait: Duration,
    child: Option<&mut Child>,
) -> Result<(), Error> {
    let listening = wait_listening(addr, wait);
    match child {
        None => Ok(listening.await?),
        Some(child) => tokio::select! {
            r = listening => Ok(r?),
            status = child.wait() => Err(format!("the backend exited before listening on {addr}: {}",
                status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())).into()),
        },
    }
}

async fn run(args: Args) -> Result<(), Error> {
    let secrets = stdin_secrets::read(
        Duration::from_secs(args.secrets_timeout),
        "stdin closed before a secrets line arrived",
    )
    .await?;
    let backend = backend_addr(&args)?;
    let mut child = if args.command.is_empty() {
        None
    } else {
        Some(start_backend(&args.command, backend.port())?)
    };
    backend_ready(
        backend,
        Duration::from_secs(args.backend_timeout),
        child.as_mut(),
    )
    .await?;
    match child.as_ref().and_then(Child::id) {
        Some(pid) => eprintln!("pv-front: backend pid {pid} listens on {backend}"),
        None => eprintln!("pv-front: backend listens on {backend}"),
    }

    let identity = ServerIdentity::generate()?;
    let fingerprint = identity.fingerprint();
    let config = ConnectionConfig::new(NativeHandshake::new(secrets.token.clone()))
        .with_tls(TlsConfig::server(&identity, secrets.client_cert)?);
    let manager = ConnectionManager::new(ConnectionMode::Single, config);
    let listener = Listener::bind(
        SocketAddr::new(args.bind_address, args.server_port),
        manager.config().heartbeat,
    )
    .await?;
    let local = listener.local_addr()?;
    let ready = ReadyLine {
        port: local.port(),
        handshake: "native".into(),
        protocol: u32::from(PROTOCOL_VERSION),
        tls: Some(fingerprint),
    };
    println!("{ready}");
    eprintln!("pv-front: accepting an authenticated client on {local} for {backend}");

    let deadline = (args.timeout > 0).then(|| Duration::from_secs(args.timeout));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let relayed = async {
        let mut conn = manager.accept_client(listener, deadline).await?;
        let mut server = TcpStream::connect(backend)
            .await
            .map_err(|e| format!("connecting to the backend {backend}: {e}"))?;
        let moved = relay(&mut conn, &mut server)
            .await
            .map_err(|e| format!("relaying to {backend}: {e}"))?;
        eprintln!("pv-front: relay ended: {moved:?}");
        Ok::<(), Error>(())
    };
    let result = tokio::select! {
        r = relayed => r,
        _ = term.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    if let Some(mut child) = child.take() {
        if tokio::time::timeout(BACKEND_EXIT_GRACE, child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
    result
}
