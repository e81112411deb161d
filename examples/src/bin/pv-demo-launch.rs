//! `pv-demo-launch`: the whole connection flow by hand, in one small program.
//!
//! It starts `pv-demo-server` (found beside this executable) as a child, hands it a fresh
//! one-time token on its stdin, reads the ready line from its stdout, connects (forward, or
//! reverse with `--reverse`), pins the server's per-launch certificate with `--tls`, sends a
//! few messages through the echo, and checks that the server exits once the client leaves.
//! `pv-launch` does the same driven by a profile; this shows the transport API underneath.

use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use pv_transport::handshake::native::NativeHandshake;
use pv_transport::launch::{ReadyLine, Secrets};
use pv_transport::{
    ConnectTimeout, ConnectionConfig, ConnectionManager, ConnectionMode, Fingerprint, Listener,
    RetryPolicy, TlsConfig, Token, loopback,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Start pv-demo-server locally, connect to it with a one-time token, and echo a message.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Let the server dial back to us instead of us dialling it.
    #[arg(long)]
    reverse: bool,
    /// Run the connection inside TLS, pinning the server's per-launch certificate.
    #[arg(long)]
    tls: bool,
    /// The message to send through the echo.
    #[arg(long, default_value = "hello from pv-demo-launch")]
    message: String,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pv-demo-launch: {e}");
            ExitCode::FAILURE
        }
    }
}

fn client_config(token: &Token, pin: Option<Fingerprint>) -> Result<ConnectionConfig, Error> {
    let mut config = ConnectionConfig::new(NativeHandshake::new(token.clone()));
    if let Some(pin) = pin {
        config = config.with_tls(TlsConfig::client_pinned(pin, None)?);
    }
    Ok(config)
}

// Long on purpose: the example reads top to bottom, one step of a launch after another.
async fn run(args: Args) -> Result<(), Error> {
    let started = Instant::now();
    let server_bin = std::env::current_exe()?.with_file_name("pv-demo-server");
    if !server_bin.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build -p pv-examples --bins`",
            server_bin.display()
        )
        .into());
    }
    let token = Token::generate();

    // Reverse: listen before the server starts, so its first dial finds us.
    let reverse_listener = if args.reverse {
        Some(Listener::bind(loopback(0), None).await?)
    } else {
        None
    };
    let mut cmd = Command::new(&server_bin);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    match &reverse_listener {
        Some(l) => cmd.args([
            "--reverse-connection",
            "--client-host",
            "127.0.0.1",
            "--server-port",
            &l.local_addr()?.port().to_string(),
        ]),
        None => cmd.args(["--server-port", "0"]),
    };
    if args.tls {
        cmd.arg("--tls");
    }
    let mut child = cmd.spawn()?;
    println!(
        "started {} (pid {})",
        server_bin.display(),
        child.id().unwrap_or(0)
    );

    // The launch channel: the token goes in on stdin, the ready line comes back on stdout.
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin
        .write_all(
            Secrets {
                token: token.clone(),
                client_cert: None,
            }
            .to_line()
            .as_bytes(),
        )
        .await?;
    drop(stdin);
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let ready = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = stdout.next_line().await? {
            if let Some(ready) = ReadyLine::parse(&line) {
                return Ok::<_, Error>(ready?);
            }
        }
        Err("the server closed stdout without a ready line".into())
    })
    .await
    .map_err(|_| "no ready line within 10 s")??;
    println!(
        "ready: port {}{}",
        ready.port,
        ready
            .tls
            .map(|f| format!(", certificate {f}"))
            .unwrap_or_default()
    );

    let config = client_config(&token, ready.tls)?;
    let manager = ConnectionManager::new(ConnectionMode::Single, config);
    let mut conn = match reverse_listener {
        Some(l) => {
            let url = format!(
                "csrc{}://:{}",
                if args.tls { "+tls" } else { "" },
                l.local_addr()?.port()
            );
            println!("waiting for the server to dial back: {url}");
            manager
                .wait_for_server(l, Some(Duration::from_secs(30)))
                .await?
        }
        None => {
            let url = format!(
                "cs{}://127.0.0.1:{}",
                if args.tls { "+tls" } else { "" },
                ready.port
            );
            println!("connecting: {url}");
            manager
                .connect_to_remote(
                    "127.0.0.1",
                    ready.port,
                    RetryPolicy::new(ConnectTimeout::Within(Duration::from_secs(10))),
                    |n, e, _| eprintln!("attempt {n}: {e}"),
                )
                .await?
        }
    };
    println!(
        "connected in {:.1?}: handshake {} v{}, peer is the {}{}",
        started.elapsed(),
        conn.peer().handshake,
        conn.peer().protocol,
        conn.peer().role,
        conn.tls()
            .map(|t| format!(", {} {}", t.version, t.cipher_suite))
            .unwrap_or_default()
    );

    conn.write_all(args.message.as_bytes()).await?;
    let mut back = vec![0u8; args.message.len()];
    conn.read_exact(&mut back).await?;
    println!("echoed: {}", String::from_utf8_lossy(&back));
    if back != args.message.as_bytes() {
        return Err("the echo differs from what was sent".into());
    }
    drop(conn);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .map_err(|_| "the server did not exit after its client left")??;
    println!(
        "server exited ({status}) after its client left; total {:.1?}",
        started.elapsed()
    );
    Ok(())
}
