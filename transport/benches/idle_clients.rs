//! Memory per idle client on one multiple-connections server.
//!
//! `cargo bench -p pv-transport --bench idle_clients` (optionally `-- 10000` for the count).
//!
//! The server (this process) accepts handshaken native connections and runs an echo task
//! for each, as `pv-demo-server --multi-clients` does. The clients live in a child process
//! (this same binary, re-executed), so the server's resident set size grows only by what
//! each *server-side* connection costs. We report (RSS with N clients − RSS before) / N.
//! Bounded: the whole run stops after 180 s.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pv_transport::handshake::native::NativeHandshake;
use pv_transport::launch::TOKEN_ENV;
use pv_transport::{
    ConnectTimeout, Connection, ConnectionConfig, ConnectionManager, ConnectionMode, Listener,
    RetryPolicy, Token, loopback,
};
use tokio::io::AsyncReadExt;

const ROLE_ENV: &str = "PV_IDLE_CLIENTS_ROLE";
const LIMIT: Duration = Duration::from_secs(180);

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn main() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("clients") {
        return clients();
    }
    // `cargo bench` passes `--bench`; a bare number is the client count.
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    server(count);
}

async fn echo(mut conn: Connection) {
    let mut buf = [0u8; 512];
    while let Ok(n) = conn.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

fn server(count: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let token = Token::generate();
    let started = Instant::now();
    rt.block_on(async {
        // The clients handshake 128 at a time from one address, over the default limits on
        // unauthenticated handshakes; what is measured here is handshaken idle clients.
        let manager = ConnectionManager::new(
            ConnectionMode::Multiple,
            ConnectionConfig::new(NativeHandshake::new(token.clone())),
        )
        .with_handshake_limits(pv_transport::HandshakeLimits {
            total: 1024,
            per_peer: 1024,
        });
        let listener = Listener::bind(loopback(0), manager.config().heartbeat)
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut incoming = manager.accept_clients(listener);
        let before = rss_kib();

        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE_ENV, "clients")
            .env(TOKEN_ENV, token.to_hex())
            .env("PV_IDLE_CLIENTS_PORT", port.to_string())
            .env("PV_IDLE_CLIENTS_COUNT", count.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut accepted = 0;
        while accepted < count {
            let next =
                tokio::time::timeout(LIMIT.saturating_sub(started.elapsed()), incoming.next())
                    .await
                    .expect("all clients connected within the time limit")
                    .expect("listener open");
            match next {
                Ok(conn) => {
                    tokio::spawn(echo(conn));
                    accepted += 1;
                }
                Err(r) => panic!("refused a client: {}", r.error),
            }
        }
        let with = rss_kib();
        let per = (with.saturating_sub(before)) as f64 / count as f64;
        println!(
            "idle_clients: {count} handshaken idle clients on one multiple-connections server; \
             server RSS {before} KiB -> {with} KiB = {per:.1} KiB per client; connected in {:.1?}",
            started.elapsed()
        );
        // Let the clients go and wait for the child.
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        drop(child.stdin.take());
        let _ = child.wait();
    });
}

fn clients() {
    let port: u16 = std::env::var("PV_IDLE_CLIENTS_PORT")
        .unwrap()
        .parse()
        .unwrap();
    let count: usize = std::env::var("PV_IDLE_CLIENTS_COUNT")
        .unwrap()
        .parse()
        .unwrap();
    let token = Token::from_hex(&std::env::var(TOKEN_ENV).unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let manager = std::sync::Arc::new(ConnectionManager::new(
            ConnectionMode::Multiple,
            ConnectionConfig::new(NativeHandshake::new(token)),
        ));
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(128));
        let mut tasks = Vec::with_capacity(count);
        for _ in 0..count {
            let (m, sem) = (manager.clone(), sem.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire().await.unwrap();
                m.connect_to_remote(
                    "127.0.0.1",
                    port,
                    RetryPolicy::new(ConnectTimeout::Within(Duration::from_secs(30))),
                    |_, _, _| {},
                )
                .await
                .unwrap()
            }));
        }
        let mut conns = Vec::with_capacity(count);
        for t in tasks {
            conns.push(t.await.unwrap());
        }
        println!("connected {}", conns.len());
        std::io::stdout().flush().unwrap();
        // Stay idle until the server closes our stdin.
        let mut stdin = tokio::io::stdin();
        let mut b = [0u8; 1];
        let _ = tokio::time::timeout(LIMIT, stdin.read(&mut b)).await;
    });
}
