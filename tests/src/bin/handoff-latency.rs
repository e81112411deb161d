//! How long a real `pvpython` takes to be connected to a real `pvserver` once the server
//! listens, through pv-launch's hand-off versus ParaView's own launcher behaviour.
//!
//! `cargo build --workspace --bins && ROUNDS=5 target/debug/handoff-latency`
//!
//! - `pv-launch`: `pv-launch --json --profile <local pvserver .pvsc> --exec 'pvpython
//!   client.py'`. pv-launch waits for pvserver's `Accepting connection(s)` line, then
//!   starts the client, which dials once: the latency is the client's start (Python and
//!   ParaView's modules imported) plus one `Connect`.
//! - `paraview-like`: the client is already running with its modules imported (the GUI, or
//!   a pvpython session), pvserver is started and the client calls `Connect` at once
//!   (`delay="0"`), which fails while pvserver starts and is retried every second by
//!   ParaView's `vtkTCPNetworkAccessManager`, as the GUI's launcher does.
//!
//! Each round prints, in seconds: from pvserver's `Accepting connection(s)` line to
//! `Connect` returning, and from starting (pv-launch or pvserver) to `Connect` returning;
//! for pv-launch, the successful `Connect` call alone (the rest is the client's start);
//! then the medians. Times are wall-clock (the client prints `time.time()`).
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CLIENT: &str = r#"import os, sys, time
from paraview.simple import *
print("imported", time.time(), flush=True)
if os.environ.get("WAIT_GO"):
    sys.stdin.readline()
print("connect", time.time(), flush=True)
Connect(os.environ["PV_LAUNCH_HOST"], int(os.environ["PV_LAUNCH_PORT"]))
print("connected", time.time(), flush=True)
"#;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Lines of `r`, each with the wall-clock time it was read.
fn timed_lines(r: impl std::io::Read + Send + 'static) -> Receiver<(f64, String)> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send((now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// One round's figures: (accepting → connected, start → connected, the `Connect` call
/// that succeeded alone).
type Round = (f64, f64, f64);

struct Times {
    accepting: Option<f64>,
    connect: Option<f64>,
    connected: Option<f64>,
}

impl Times {
    fn see(&mut self, at: f64, line: &str) {
        if self.accepting.is_none() && line.contains("Accepting connection(s)") {
            self.accepting = Some(at);
        }
        if let Some(t) = line.strip_prefix("connect ") {
            self.connect = t.trim().parse().ok();
        }
        if let Some(t) = line.strip_prefix("connected ") {
            self.connected = t.trim().parse().ok();
        }
    }

    fn done(&self) -> bool {
        self.accepting.is_some() && self.connected.is_some()
    }
}

/// Read both streams until both times are known (at most 120 s).
fn collect(a: &Receiver<(f64, String)>, b: &Receiver<(f64, String)>) -> Times {
    let mut t = Times {
        accepting: None,
        connect: None,
        connected: None,
    };
    let end = now() + 120.0;
    while !t.done() {
        assert!(now() < end, "no connection within 120 s");
        for rx in [a, b] {
            if let Ok((at, line)) = rx.recv_timeout(Duration::from_millis(10)) {
                t.see(at, &line);
            }
        }
    }
    t
}

fn through_pv_launch(dir: &std::path::Path, pv_launch: &std::path::Path) -> Round {
    let port = free_port();
    let pvsc = dir.join("local.pvsc");
    std::fs::write(
        &pvsc,
        format!(
            "<Servers><Server name=\"pv\" resource=\"cs://127.0.0.1:{port}\" timeout=\"60\">\
             <CommandStartup><Command exec=\"pvserver\" process_wait=\"0\" delay=\"0\"><Arguments>\
             <Argument value=\"--server-port=$PV_SERVER_PORT$\"/></Arguments></Command>\
             </CommandStartup></Server></Servers>\n"
        ),
    )
    .unwrap();
    let begun = now();
    let mut child = Command::new(pv_launch)
        .args(["--json", "--profile"])
        .arg(&pvsc)
        .arg("--exec")
        .arg(format!("pvpython {}", dir.join("client.py").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pv-launch");
    let out = timed_lines(child.stdout.take().unwrap());
    let err = timed_lines(child.stderr.take().unwrap());
    let t = collect(&out, &err);
    let status = child.wait().unwrap();
    assert!(status.success(), "pv-launch: {status}");
    let connected = t.connected.unwrap();
    (
        connected - t.accepting.unwrap(),
        connected - begun,
        connected - t.connect.unwrap(),
    )
}

fn paraview_like(dir: &std::path::Path) -> Round {
    let port = free_port();
    let mut client = Command::new("pvpython")
        .arg(dir.join("client.py"))
        .env("WAIT_GO", "1")
        .env("PV_LAUNCH_HOST", "127.0.0.1")
        .env("PV_LAUNCH_PORT", port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pvpython");
    let client_out = timed_lines(client.stdout.take().unwrap());
    // The client is up, its modules imported: as the GUI is when one clicks Connect.
    loop {
        let (_, line) = client_out
            .recv_timeout(Duration::from_secs(120))
            .expect("pvpython imports within 120 s");
        if line.starts_with("imported ") {
            break;
        }
    }
    let begun = now();
    let mut server = Command::new("pvserver")
        .arg(format!("--server-port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pvserver");
    // delay="0": connect right after the start, ParaView retrying every second.
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    stdin.flush().unwrap();
    let server_out = timed_lines(server.stdout.take().unwrap());
    let t = collect(&server_out, &client_out);
    drop(stdin);
    let _ = client.wait();
    // pvserver ends when its client leaves.
    let _ = server.wait();
    let connected = t.connected.unwrap();
    // Its one Connect call spans the retries: not the cost of one dial.
    (
        connected - t.accepting.unwrap(),
        connected - begun,
        f64::NAN,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let pv_launch = pv_e2e::target_bin_dir().join("pv-launch");
    let pv_launch = if pv_launch.exists() {
        pv_launch
    } else {
        // Run from target/<profile>/: the binary beside this one.
        std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .join("pv-launch")
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client.py"), CLIENT).unwrap();
    let mut results: Vec<(&str, Vec<Round>)> =
        vec![("pv-launch", vec![]), ("paraview-like", vec![])];
    for round in 0..rounds {
        // Interleaved, so both see the same machine load.
        let a = through_pv_launch(dir.path(), &pv_launch);
        let b = paraview_like(dir.path());
        println!(
            "round {round}: pv-launch accepting->connected {:.3} s, start->connected {:.3} s \
             (Connect alone {:.3} s); paraview-like {:.3} s, {:.3} s",
            a.0, a.1, a.2, b.0, b.1
        );
        results[0].1.push(a);
        results[1].1.push(b);
    }
    for (name, r) in results {
        println!(
            "{name}: median accepting->connected {:.3} s, start->connected {:.3} s, \
             Connect alone {:.3} s ({} rounds)",
            median(r.iter().map(|x| x.0).collect()),
            median(r.iter().map(|x| x.1).collect()),
            median(r.iter().map(|x| x.2).collect()),
            r.len()
        );
    }
}
