//! TLS against raw TCP throughput, measured *interleaved* so that both see the same load.
//!
//! `cargo bench -p pv-transport --bench tls_paired` (`ROUNDS=n`, default 40)
//!
//! The `throughput` criterion benchmark measures raw TCP, then native, then TLS, each for
//! several seconds; on a shared machine the load changes between them and the ratio moves
//! with it. Here one connection of each kind stays open and the rounds alternate: 64 MiB over
//! raw TCP, 64 MiB over native, 64 MiB over TLS, again and again; same bytes, same 64 KiB
//! writes, same receiver as `throughput`. It prints, per kind, the throughput spread, the
//! ratio to raw TCP paired round by round, and the CPU time per GiB of the sending thread
//! and of the other threads (the receiver), from `/proc/self/task/*/schedstat`. The larger of
//! those two bounds the throughput when each end has a core to itself.

use std::path::Path;
use std::time::Instant;

use pv_transport::handshake::Stream;
use pv_transport::{Listener, loopback};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{CHUNK, PER_ITER, ack_receiver, configs, connect_pair};

const ITERS_PER_ROUND: usize = 4;

/// CPU time (s) of one thread, from its `schedstat`.
fn sched(path: &Path) -> f64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split(' ').next().and_then(|x| x.parse::<f64>().ok()))
        .unwrap_or(0.0)
        / 1e9
}

fn cpu_all_threads() -> f64 {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.map(|e| sched(&e.unwrap().path().join("schedstat"))).sum())
        .unwrap_or(0.0)
}

fn cpu_this_thread() -> f64 {
    sched(Path::new("/proc/thread-self/schedstat"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

struct Kind {
    name: &'static str,
    tx: Box<dyn Stream>,
    seconds: Vec<f64>,
    sender_cpu: Vec<f64>,
    total_cpu: Vec<f64>,
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    (v[n / 10], v[n / 2], v[n * 9 / 10])
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` from tools that enumerate benchmarks
    }
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut kinds = Vec::new();
    for (name, kind) in [
        ("raw_tcp", common::Kind::Raw),
        ("native", common::Kind::Native),
        ("tls", common::Kind::Tls),
    ] {
        let (tx, rx) = rt.block_on(async {
            let l = Listener::bind(loopback(0), None).await.unwrap();
            connect_pair(&l, &configs(kind)).await
        });
        // The receiver reads PER_ITER bytes per request and acknowledges with one byte.
        rt.spawn(ack_receiver(rx));
        kinds.push(Kind {
            name,
            tx,
            seconds: Vec::new(),
            sender_cpu: Vec::new(),
            total_cpu: Vec::new(),
        });
    }
    let gib = (ITERS_PER_ROUND * PER_ITER) as f64 / f64::from(1u32 << 30);
    let data = vec![0x5au8; CHUNK];
    println!("load average before: {}", loadavg());
    for _ in 0..rounds {
        for k in kinds.iter_mut() {
            let (all0, me0) = (cpu_all_threads(), cpu_this_thread());
            let elapsed = rt.block_on(async {
                let start = Instant::now();
                for _ in 0..ITERS_PER_ROUND {
                    for _ in 0..PER_ITER / CHUNK {
                        k.tx.write_all(&data).await.unwrap();
                    }
                    k.tx.flush().await.unwrap();
                    let mut ack = [0u8; 1];
                    k.tx.read_exact(&mut ack).await.unwrap();
                }
                start.elapsed()
            });
            let (all1, me1) = (cpu_all_threads(), cpu_this_thread());
            k.seconds.push(elapsed.as_secs_f64());
            k.sender_cpu.push((me1 - me0) / gib);
            k.total_cpu.push((all1 - all0) / gib);
        }
    }
    println!("load average after:  {}", loadavg());
    println!("{rounds} rounds of {gib} GiB per kind, interleaved; p10 / median / p90");
    let raw = kinds[0].seconds.clone();
    for k in &kinds {
        let (t10, t50, t90) = percentiles(k.seconds.iter().map(|s| gib / s).collect());
        let (r10, r50, r90) = percentiles(
            k.seconds
                .iter()
                .zip(&raw)
                .map(|(s, r)| 100.0 * r / s)
                .collect(),
        );
        let (s10, s50, _) = percentiles(k.sender_cpu.iter().map(|c| 1e3 * c).collect());
        let (o10, o50, _) = percentiles(
            k.total_cpu
                .iter()
                .zip(&k.sender_cpu)
                .map(|(t, s)| 1e3 * (t - s))
                .collect(),
        );
        println!(
            "{:8} {t10:.2} / {t50:.2} / {t90:.2} GiB/s | of raw, paired: {r10:.0} / {r50:.0} / {r90:.0} % \
             | CPU ms per GiB: sender {s10:.0} / {s50:.0}, receiver {o10:.0} / {o50:.0} (p10 / median)",
            k.name
        );
    }
}
