//! What pv-launch adds between a real `pvserver` being ready and its client being connected,
//! against ParaView's own launcher behaviour.
//!
//! `cargo build --workspace --bins && ROUNDS=10 target/debug/handoff-latency`
//!
//! pvserver runs behind a filter that passes its output on unchanged and writes each line,
//! with the time it was read, to a side file: that time is "pvserver printed its ready line"
//! (`Accepting connection(s)`), on the same clock (the wall clock) as everything else.
//!
//! - `pv-launch + minimal client`: `pv-launch --json --profile <local pvserver .pvsc> --exec
//!   '<this program> connect-once'`. pv-launch waits for the ready line, then starts the
//!   client, which notes the time it starts and dials `PV_LAUNCH_HOST:PV_LAUNCH_PORT` once.
//!   Ready line → client started is pv-launch's part (seeing the line, the hand-off, fork and
//!   exec); client started → connected is the dial. This is what pv-launch adds.
//! - `pv-launch + pvpython`: the same with `pvpython client.py` as the client: its start
//!   (Python and ParaView's modules) comes on top, and is pvpython's.
//! - `paraview-like`: the client is already running with its modules imported (the GUI, or
//!   a pvpython session), pvserver is started and the client calls `Connect` at once
//!   (`delay="0"`), which fails while pvserver starts and is retried every second by
//!   ParaView's `vtkTCPNetworkAccessManager`, as the GUI's launcher does: ready line →
//!   connected is the wait for the next retry tick.
//!
//! Each round prints the figures in milliseconds, with the client's successful `Connect` call
//! alone (connection and ParaView's session set-up: paraview-like's ready → connected is the
//! wait for the retry tick plus that call); then the medians over `ROUNDS` (default 10)
//! rounds, interleaved so all see the same machine load.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CLIENT: &str = r#"import os, sys, time
print("started", time.time(), flush=True)
from paraview.simple import *
print("imported", time.time(), flush=True)
if os.environ.get("WAIT_GO"):
    sys.stdin.readline()
print("connect", time.time(), flush=True)
Connect(os.environ["PV_LAUNCH_HOST"], int(os.environ["PV_LAUNCH_PORT"]))
print("connected", time.time(), flush=True)
"#;

/// The output filter: each line passed on as it is, and written with its time to the file
/// named by its argument.
const STAMP: &str = r#"import sys, time
with open(sys.argv[1], "a") as side:
    for line in sys.stdin:
        t = time.time()
        sys.stdout.write(line)
        sys.stdout.flush()
        side.write("%.6f %s" % (t, line))
        side.flush()
"#;

const READY: &str = "Accepting connection(s)";

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

/// The minimal client: note the start, dial once, note the connection.
fn connect_once() {
    let started = now();
    println!("started {started:.6}");
    let host = std::env::var("PV_LAUNCH_HOST").expect("PV_LAUNCH_HOST");
    let port: u16 = std::env::var("PV_LAUNCH_PORT")
        .expect("PV_LAUNCH_PORT")
        .parse()
        .expect("a port number");
    println!("connect {:.6}", now());
    let stream = std::net::TcpStream::connect((host.as_str(), port));
    let connected = now();
    match stream {
        Ok(_) => println!("connected {connected:.6}"),
        Err(e) => {
            eprintln!("connect-once: cannot connect to {host}:{port}: {e}");
            std::process::exit(1);
        }
    }
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

/// A client's time stamps (from its own output) and when pvserver was ready.
#[derive(Default)]
struct Times {
    started: Option<f64>,
    connect: Option<f64>,
    connected: Option<f64>,
}

impl Times {
    fn see(&mut self, line: &str) {
        // The line may be inside pv-launch's JSON event (the client's output is forwarded).
        for (key, slot) in [
            ("started ", &mut self.started),
            ("connect ", &mut self.connect),
            ("connected ", &mut self.connected),
        ] {
            if let Some(at) = line.find(key) {
                let rest = &line[at + key.len()..];
                let num: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.')
                    .collect();
                if let Ok(t) = num.parse() {
                    *slot = Some(t);
                }
            }
        }
    }
}

/// Read both streams until the client says it is connected (at most 120 s).
fn collect(a: &Receiver<(f64, String)>, b: &Receiver<(f64, String)>) -> Times {
    let mut t = Times::default();
    let end = now() + 120.0;
    while t.connected.is_none() {
        assert!(now() < end, "no connection within 120 s");
        for rx in [a, b] {
            if let Ok((_, line)) = rx.recv_timeout(Duration::from_millis(10)) {
                t.see(&line);
            }
        }
    }
    t
}

/// When the filter saw pvserver's ready line (waits up to 10 s for the side file).
fn ready_at(side: &Path) -> f64 {
    let end = now() + 10.0;
    loop {
        let text = std::fs::read_to_string(side).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(READY)) {
            return line.split(' ').next().unwrap().parse().unwrap();
        }
        assert!(now() < end, "no ready line in {}", side.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The shell command that starts pvserver behind the filter.
fn filtered_pvserver(dir: &Path, port: &str, side: &Path) -> String {
    format!(
        "exec pvserver --server-port={port} 2>&1 | exec python3 -u {} {}",
        dir.join("stamp.py").display(),
        side.display()
    )
}

/// One round's figures, in seconds: (ready → client started, client started → connected,
/// ready → connected, the successful `Connect` call alone).
type Round = (f64, f64, f64, f64);

fn through_pv_launch(dir: &Path, pv_launch: &Path, client: &str, round: usize) -> Round {
    let port = free_port();
    let side = dir.join(format!("pv-launch-{round}-{}.stamps", client.len()));
    let pvsc = dir.join("local.pvsc");
    let command = filtered_pvserver(dir, "$PV_SERVER_PORT$", &side)
        .replace('&', "&amp;")
        .replace('>', "&gt;")
        .replace('<', "&lt;")
        .replace('"', "&quot;");
    std::fs::write(
        &pvsc,
        format!(
            "<Servers><Server name=\"pv\" resource=\"cs://127.0.0.1:{port}\" timeout=\"60\">\
             <CommandStartup><Command exec=\"sh\" process_wait=\"0\" delay=\"0\"><Arguments>\
             <Argument value=\"-c\"/><Argument value=\"{command}\"/></Arguments></Command>\
             </CommandStartup></Server></Servers>\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(pv_launch)
        .args(["--json", "--profile"])
        .arg(&pvsc)
        .arg("--exec")
        .arg(client)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pv-launch");
    let out = timed_lines(child.stdout.take().unwrap());
    let err = timed_lines(child.stderr.take().unwrap());
    let t = collect(&out, &err);
    let status = child.wait().unwrap();
    // The minimal client leaves pvserver without a handshake, and pvserver may end first.
    if !status.success() {
        eprintln!("note: pv-launch with `{client}` ended with {status}");
    }
    let ready = ready_at(&side);
    let (started, connected) = (t.started.unwrap(), t.connected.unwrap());
    let call = connected - t.connect.unwrap();
    (
        started - ready,
        connected - started,
        connected - ready,
        call,
    )
}

fn paraview_like(dir: &Path, round: usize) -> Round {
    let port = free_port();
    let side = dir.join(format!("paraview-like-{round}.stamps"));
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
    let mut server = Command::new("sh")
        .arg("-c")
        .arg(filtered_pvserver(dir, &port.to_string(), &side))
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
    let ready = ready_at(&side);
    let connected = t.connected.unwrap();
    // Its client started long before; its one Connect call spans the retries.
    (f64::NAN, f64::NAN, connected - ready, f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(s: f64) -> String {
    if s.is_nan() {
        "-".to_string()
    } else {
        format!("{:.1} ms", s * 1000.0)
    }
}

fn pv_launch_binary() -> PathBuf {
    let beside = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("pv-launch");
    if beside.exists() {
        beside
    } else {
        pv_e2e::target_bin_dir().join("pv-launch")
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("connect-once") {
        return connect_once();
    }
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let pv_launch = pv_launch_binary();
    let me = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client.py"), CLIENT).unwrap();
    std::fs::write(dir.path().join("stamp.py"), STAMP).unwrap();
    let minimal = format!("{} connect-once", me.display());
    let pvpython = format!("pvpython {}", dir.path().join("client.py").display());
    let mut results: Vec<(&str, Vec<Round>)> = vec![
        ("pv-launch + minimal client", vec![]),
        ("pv-launch + pvpython", vec![]),
        ("paraview-like", vec![]),
    ];
    for round in 0..rounds {
        let figures = [
            through_pv_launch(dir.path(), &pv_launch, &minimal, round),
            through_pv_launch(dir.path(), &pv_launch, &pvpython, round),
            paraview_like(dir.path(), round),
        ];
        for ((name, all), f) in results.iter_mut().zip(figures) {
            println!(
                "round {round} {name}: ready->client started {}, started->connected {}, \
                 ready->connected {} (Connect alone {})",
                ms(f.0),
                ms(f.1),
                ms(f.2),
                ms(f.3)
            );
            all.push(f);
        }
    }
    for (name, r) in results {
        println!(
            "{name}: median ready->client started {}, started->connected {}, \
             ready->connected {}, Connect alone {} ({} rounds)",
            ms(median(r.iter().map(|x| x.0).collect())),
            ms(median(r.iter().map(|x| x.1).collect())),
            ms(median(r.iter().map(|x| x.2).collect())),
            ms(median(r.iter().map(|x| x.3).collect())),
            r.len()
        );
    }
}
