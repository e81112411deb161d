//! Launch overhead: `pv-launch`'s local forward-with-startup, from "go" to a handshaken
//! connection, minus the demo server's own start-to-listening time.
//!
//! ```text
//! cargo build --release -p pv-examples
//! cargo bench -p pv-launch --bench launch_overhead
//! ```
//!
//! (a) `session::launch` on a local profile that starts `pv-demo-server --server-port 0`:
//!     spawn, token on stdin, ready line, connect, native handshake;
//! (b) the same server spawned by hand, token on stdin, until its ready line is read.
//!
//! Overhead = median(a) − median(b). 200 rounds of each, interleaved.

use std::process::Stdio;
use std::time::{Duration, Instant};

use pv_launch::plan::Plan;
use pv_launch::{LaunchContext, NonInteractive, Profile};
use pv_transport::Token;
use pv_transport::launch::{ReadyLine, Secrets};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const ROUNDS: usize = 200;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("pv-demo-server"))
        .unwrap();
    if !bin.exists() {
        eprintln!(
            "{} not found: run `cargo build --release -p pv-examples` first",
            bin.display()
        );
        std::process::exit(2);
    }
    let dir = std::env::temp_dir().join(format!("pv-launch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let profile_path = dir.join("local.toml");
    std::fs::write(
        &profile_path,
        format!(
            "[[server]]\nname = \"local\"\nresource = \"cs://127.0.0.1:0\"\nconnect_timeout = 10\n\
             [server.startup]\nmechanism = \"local\"\nargv = [\"{}\", \"--server-port\", \"${{PV_SERVER_PORT}}\"]\n",
            bin.display()
        ),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let profile = Profile::load(&profile_path).unwrap();
    let entry = profile.select(None).unwrap();
    let plan = Plan::resolve(entry, &LaunchContext::from_host(), &NonInteractive).unwrap();
    let (mut full, mut bare) = (Vec::new(), Vec::new());
    rt.block_on(async {
        let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let session = pv_launch::session::launch(&plan, &events).await.unwrap();
            full.push(t.elapsed());
            session.cleanup().await;

            let t = Instant::now();
            let mut child = tokio::process::Command::new(&bin)
                .args(["--server-port", "0"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let line = Secrets {
                token: Token::generate(),
                client_cert: None,
            }
            .to_line();
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(line.as_bytes()).await.unwrap();
            let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
            while let Some(l) = out.next_line().await.unwrap() {
                if ReadyLine::parse(&l).is_some() {
                    break;
                }
            }
            bare.push(t.elapsed());
            let _ = child.kill().await;
        }
    });
    let (f, b) = (median(full), median(bare));
    println!(
        "launch_overhead: {ROUNDS} rounds; launch to handshaken connection median {:.2} ms; \
         server start to ready line median {:.2} ms; pv-launch overhead {:.2} ms",
        f.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3,
        f.saturating_sub(b).as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
}
