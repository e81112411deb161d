//! `pv-demo-server`: a small server built on pv-transport, with pvserver-like flags.
//!
//! It receives its one-time token on the launch channel (the secrets line on stdin, or
//! `PV_LAUNCH_TOKEN` in its environment, or a 0600 `--token-file` for manual starts; never
//! argv), prints one ready line on stdout, and echoes every byte a client sends. Human
//! messages go to stderr, so stdout stays machine-readable.
//!
//! `PV_LAUNCH_TOKEN` is read and removed from the environment before anything else runs,
//! so no process the server starts inherits the token: what a server author should do.
//!
//! ```text
//! pv-demo-server [--server-port P] [--bind-address A] [--multi-clients]
//!                [--reverse-connection --client-host H] [--connect-id N]
//!                [--timeout S] [--tls] [--handshake native|none]
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use pv_transport::handshake::NoHandshake;
use pv_transport::handshake::native::{NativeHandshake, PROTOCOL_VERSION};
use pv_transport::launch::{ReadyLine, Secrets, TOKEN_ENV, read_private_file};
use pv_transport::{
    ConnectTimeout, Connection, ConnectionConfig, ConnectionManager, ConnectionMode, Listener,
    RetryPolicy, ServerIdentity, TlsConfig, Token,
};
use zeroize::Zeroizing;

#[path = "../demo_server_args.rs"]
mod args;
#[path = "../stdin_secrets.rs"]
mod stdin_secrets;
use args::{Args, HandshakeArg};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args = Args::parse();
    let env_token = take_env_token();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pv-demo-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, env_token)) {
        Ok(()) => {
            eprintln!("Exiting...");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pv-demo-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Takes `PV_LAUNCH_TOKEN` out of the environment, so that no descendant (helpers, MPI
/// launchers that forward the environment, a shell) inherits the token.
///
/// Must run before any thread exists: `main` calls it first, before the tokio runtime.
// The workspace denies unsafe code; this is its one exception (removing a variable is
// unsafe in edition 2024 because another thread might read the environment meanwhile).
#[allow(unsafe_code)]
fn take_env_token() -> Option<std::ffi::OsString> {
    let value = std::env::var_os(TOKEN_ENV)?;
    // SAFETY: `remove_var` is unsound only while another thread may read or write the
    // environment (through libc's getenv/setenv, which take no lock). This runs from the
    // synchronous `main` right after argument parsing, before the tokio runtime or any
    // other thread is created, and nothing in this program starts a thread before `main`;
    // so this thread is the only one in the process.
    unsafe { std::env::remove_var(TOKEN_ENV) };
    Some(value)
}

/// Where the secrets come from, in order: --token-file, PV_LAUNCH_TOKEN (already taken
/// out of the environment by `main`), the stdin line.
async fn read_secrets(
    args: &Args,
    env_token: Option<std::ffi::OsString>,
) -> Result<Secrets, Error> {
    let env_token = env_token.map(|t| Zeroizing::new(t.into_encoded_bytes()));
    if let Some(path) = &args.token_file {
        let text = read_private_file(path, "--token-file")?;
        let token = Token::from_hex(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(Secrets {
            token,
            client_cert: None,
        });
    }
    if let Some(bytes) = env_token {
        let hex = std::str::from_utf8(&bytes).map_err(|_| format!("{TOKEN_ENV}: not hex"))?;
        let token = Token::from_hex(hex).map_err(|e| format!("{TOKEN_ENV}: {e}"))?;
        return Ok(Secrets {
            token,
            client_cert: None,
        });
    }
    let eof = format!(
        "stdin closed before a secrets line arrived (set {TOKEN_ENV} or use --token-file when starting by hand)"
    );
    Ok(stdin_secrets::read(Duration::from_secs(args.secrets_timeout), &eof).await?)
}

async fn run(args: Args, env_token: Option<std::ffi::OsString>) -> Result<(), Error> {
    let (handshake, client_cert): (ConnectionConfig, _) = match args.handshake {
        HandshakeArg::Native => {
            let secrets = read_secrets(&args, env_token).await?;
            let hs = NativeHandshake::new(secrets.token.clone()).with_connect_id(args.connect_id);
            (ConnectionConfig::new(hs), secrets.client_cert)
        }
        HandshakeArg::None => (ConnectionConfig::new(NoHandshake), None),
    };
    if let Some(command) = &args.run_after_start {
        let status = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .status()
            .await
            .map_err(|e| format!("--run-after-start: {e}"))?;
        eprintln!("--run-after-start: {status}");
    }
    let mut config = handshake;
    let mut fingerprint = None;
    if args.tls {
        let identity = ServerIdentity::generate()?;
        fingerprint = Some(identity.fingerprint());
        config = config.with_tls(TlsConfig::server(&identity, client_cert)?);
    }
    let mode = if args.multi_clients {
        ConnectionMode::Multiple
    } else {
        ConnectionMode::Single
    };
    let manager = ConnectionManager::install_global(mode, config)?;
    let ready = |port| ReadyLine {
        port,
        handshake: match args.handshake {
            HandshakeArg::Native => "native".into(),
            HandshakeArg::None => "none".into(),
        },
        protocol: u32::from(PROTOCOL_VERSION),
        tls: fingerprint,
    };

    if args.reverse_connection {
        println!("{}", ready(args.server_port));
        eprintln!(
            "Connecting to client (reverse connection requested) at {}:{}...",
            args.client_host, args.server_port
        );
        let policy = if args.timeout == 0 {
            RetryPolicy::default()
        } else {
            RetryPolicy::new(ConnectTimeout::Within(Duration::from_secs(args.timeout)))
        };
        let conn = manager
            .dial_client(&args.client_host, args.server_port, policy, |n, e, _| {
                eprintln!("Connect attempt {n} failed ({e}); retrying.")
            })
            .await?;
        eprintln!("Client connected.");
        echo(conn).await;
        return Ok(());
    }

    let addr = SocketAddr::new(args.bind_address, args.server_port);
    let listener = Listener::bind(addr, manager.config().heartbeat).await?;
    let local = listener.local_addr()?;
    println!("{}", ready(local.port()));
    eprintln!("Waiting for client...");
    eprintln!("Accepting connection(s): {local}");
    let deadline = (args.timeout > 0).then(|| Duration::from_secs(args.timeout));
    if mode == ConnectionMode::Single {
        let conn = manager.accept_client(listener, deadline).await?;
        eprintln!("Client connected.");
        echo(conn).await;
        return Ok(());
    }
    let mut incoming = manager.accept_clients(listener);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            next = incoming.next() => match next {
                Some(Ok(conn)) => {
                    eprintln!("Client connected from {:?}.", conn.peer_addr());
                    tokio::spawn(echo(conn));
                }
                Some(Err(rejected)) => eprintln!("Refused {}: {}", rejected.addr, rejected.error),
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
        }
    }
}

/// Echo until the client closes its side, then close ours properly (over TLS a
/// `close_notify`, so the client can tell the end from a truncation).
async fn echo(conn: Connection) {
    use tokio::io::AsyncWriteExt;
    let (mut r, mut w) = tokio::io::split(conn);
    let _ = tokio::io::copy(&mut r, &mut w).await;
    let _ = w.shutdown().await;
}
