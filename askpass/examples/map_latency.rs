//! Measures how long the pv-askpass dialog takes to appear: from exec to the X server's
//! MapNotify for its window, on a private Xvfb. Prints the median, p90 and max.
//!
//! ```text
//! cargo build --release -p pv-askpass
//! cargo run --release -p pv-askpass --example map_latency -- [RUNS] [HELPER]
//! ```
//!
//! RUNS defaults to 30, HELPER to the pv-askpass next to this example's binary (the same
//! profile). Needs Xvfb and xev (x11-utils). The X server has no window manager, so a
//! window is on screen as soon as it is mapped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map_or(30, |a| a.parse().expect("RUNS"));
    let helper = args.next().map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("current exe");
        exe.parent()
            .and_then(|examples| examples.parent())
            .expect("target dir")
            .join("pv-askpass")
    });
    assert!(helper.exists(), "{} not built", helper.display());

    // A private X server; `-displayfd 1` reports the display once it accepts clients.
    let mut xvfb = Command::new("Xvfb")
        .args(["-displayfd", "1", "-screen", "0", "1280x1024x24"])
        .args(["-nolisten", "tcp", "-noreset"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("Xvfb");
    let mut line = String::new();
    BufReader::new(xvfb.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("Xvfb display");
    let _xvfb = Killed(xvfb);
    let display = format!(":{}", line.trim());

    // xev reports every window mapped on the root window, one flushed line per event.
    let mut xev = Command::new("xev")
        .args(["-root", "-event", "substructure"])
        .env("DISPLAY", &display)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("xev (x11-utils)");
    let xev_out = xev.stdout.take().unwrap();
    let _xev = Killed(xev);
    let (tx, rx) = mpsc::channel::<Instant>();
    std::thread::spawn(move || {
        for line in BufReader::new(xev_out).lines().map_while(Result::ok) {
            if line.starts_with("MapNotify event") && tx.send(Instant::now()).is_err() {
                break;
            }
        }
    });
    let spawn_helper = || {
        Killed(
            Command::new(&helper)
                .arg("alice@example.org's password: ")
                .env("DISPLAY", &display)
                .env_remove("PV_ASKPASS_SOCKET")
                .env_remove("SSH_ASKPASS_PROMPT")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("helper"),
        )
    };
    // Warm-up: xev may not have selected its events yet, so retry until one dialog's
    // map is seen (this also warms the page cache, as a second use would be).
    let warm = (0..10).any(|_| {
        let _child = spawn_helper();
        rx.recv_timeout(Duration::from_secs(3)).is_ok()
    });
    assert!(warm, "xev never reported a mapped dialog");
    while rx.try_recv().is_ok() {}

    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let child = spawn_helper();
        let mapped = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the dialog did not map within 20 s");
        drop(child);
        samples.push(mapped.saturating_duration_since(start));
        // Drain anything late (there is one mapped window per dialog).
        while rx.try_recv().is_ok() {}
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "pv-askpass dialog mapped after exec, {runs} runs on Xvfb: median {:.1} ms, p90 {:.1} ms, min {:.1} ms, max {:.1} ms",
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(samples[0]),
        ms(*samples.last().unwrap())
    );
}
