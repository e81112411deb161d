//! Throughput of a connection handed to a client program through a loopback endpoint,
//! against the same connection used directly.
//!
//! `cargo bench -p pv-transport --bench handoff`
//!
//! Server to client, as a ParaView server sends geometry and images: 16 MiB per iteration
//! in 64 KiB writes from the server's end, acknowledged by the receiver with one byte (the
//! `throughput` bench's sender and receiver).
//!
//! - `handoff/raw_tcp/direct`: two plain sockets, no handshake, for scale.
//! - `handoff/{plain,tls}/direct`: the receiver holds the launcher's end of the handshaken
//!   connection itself (what an embedding application gets).
//! - `handoff/{plain,tls}/endpoint`: the launcher's end is relayed by
//!   [`LoopbackEndpoint`] to a plain TCP client on `127.0.0.1` (what `--exec` gives a
//!   client program): one more loopback hop and one copy, with [`RELAY_BUFFER`].
//! - `handoff/plain/endpoint_{8k,64k,1m}`: the same with other relay buffer sizes (tokio's
//!   default is 8 KiB), to show why [`RELAY_BUFFER`] is what it is.
//! - then, outside criterion, `handoff/paired/{plain,tls}`: direct and endpoint in
//!   alternating rounds (`ROUNDS=n`, default 20), printing the median ratio and the CPU
//!   seconds per GiB of each. On a shared machine criterion's runs, one after the other,
//!   see different loads; the paired ratio and the CPU cost do not depend on that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use pv_transport::handoff::{LoopbackEndpoint, RELAY_BUFFER, relay_with_buffers};
use pv_transport::handshake::Stream;
use pv_transport::{Listener, loopback};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

mod common;
use common::{CHUNK, Kind, PER_ITER, ack_receiver, configs, connect_pair};

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// How the receiver reaches the server's connection.
#[derive(Clone, Copy)]
enum Via {
    Direct,
    Endpoint { buffer: usize },
}

/// A handshaken connection of `kind` and its receiver reached `via`: returns the server's
/// end, which sends.
async fn setup(kind: Kind, via: Via) -> Box<dyn Stream> {
    let cfg = configs(kind);
    let listener = Listener::bind(loopback(0), None).await.unwrap();
    let (launcher, server) = connect_pair(&listener, &cfg).await;
    match via {
        Via::Direct => {
            tokio::spawn(ack_receiver(launcher));
        }
        Via::Endpoint { buffer } => {
            let endpoint = LoopbackEndpoint::bind(0).await.unwrap();
            let addr = endpoint.local_addr();
            let wait = Duration::from_secs(10);
            let (program, accepted) = tokio::join!(
                TcpStream::connect(addr),
                endpoint.accept_own(wait, |r| panic!("{r}"))
            );
            let (program, mut accepted) = (program.unwrap(), accepted.unwrap());
            program.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut launcher = launcher;
                // Ends with an error when the sender drops (TLS without close_notify).
                let _ = relay_with_buffers(&mut accepted, &mut launcher, buffer).await;
            });
            tokio::spawn(ack_receiver(Box::new(program)));
        }
    }
    server
}

/// Send `iters` times [`PER_ITER`] bytes and wait for each acknowledgement.
async fn send(tx: &mut Box<dyn Stream>, data: &[u8], iters: u64) {
    for _ in 0..iters {
        for _ in 0..PER_ITER / CHUNK {
            tx.write_all(data).await.unwrap();
        }
        tx.flush().await.unwrap();
        let mut ack = [0u8; 1];
        tx.read_exact(&mut ack).await.unwrap();
    }
}

fn bench_handoff(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("handoff");
    group.throughput(Throughput::Bytes(PER_ITER as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(6));
    let relayed = |buffer| Via::Endpoint { buffer };
    for (name, kind, via) in [
        ("raw_tcp/direct", Kind::Raw, Via::Direct),
        ("plain/direct", Kind::Native, Via::Direct),
        ("plain/endpoint", Kind::Native, relayed(RELAY_BUFFER)),
        ("plain/endpoint_8k", Kind::Native, relayed(8 << 10)),
        ("plain/endpoint_64k", Kind::Native, relayed(64 << 10)),
        ("plain/endpoint_1m", Kind::Native, relayed(1 << 20)),
        ("tls/direct", Kind::Tls, Via::Direct),
        ("tls/endpoint", Kind::Tls, relayed(RELAY_BUFFER)),
    ] {
        let mut tx = rt.block_on(setup(kind, via));
        let data = Arc::new(vec![0x5au8; CHUNK]);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    send(&mut tx, &data, iters).await;
                    start.elapsed()
                })
            })
        });
        drop(tx);
    }
    group.finish();
}

/// CPU time (s) of every thread of this process, from their `schedstat`.
fn process_cpu() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Direct and relayed connections measured in alternation, so both see the same load:
/// per round, [`PAIRED_ITERS`] x 16 MiB over each; prints the median throughput, the median
/// of the per-round ratio relayed/direct, and the CPU seconds per GiB (all threads: sender,
/// relay, receiver), which does not depend on how busy the machine is.
fn paired() {
    const PAIRED_ITERS: u64 = 4;
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let rt = runtime();
    let data = vec![0x5au8; CHUNK];
    let gib = (PAIRED_ITERS as usize * PER_ITER) as f64 / (1u64 << 30) as f64;
    for (name, kind) in [("plain", Kind::Native), ("tls", Kind::Tls)] {
        let mut direct = rt.block_on(setup(kind, Via::Direct));
        let mut relayed = rt.block_on(setup(
            kind,
            Via::Endpoint {
                buffer: RELAY_BUFFER,
            },
        ));
        let (mut speeds, mut cpus) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        let mut ratios = Vec::new();
        for _ in 0..rounds {
            let mut round = [0.0; 2];
            for (i, tx) in [&mut direct, &mut relayed].into_iter().enumerate() {
                let (cpu, start) = (process_cpu(), Instant::now());
                rt.block_on(send(tx, &data, PAIRED_ITERS));
                let secs = start.elapsed().as_secs_f64();
                round[i] = gib * 1024.0 / secs;
                speeds[i].push(round[i]);
                cpus[i].push((process_cpu() - cpu) / gib);
            }
            ratios.push(round[1] / round[0]);
        }
        let [sd, sr] = speeds.map(median);
        let [cd, cr] = cpus.map(median);
        println!(
            "handoff/paired/{name}: direct {sd:.0} MiB/s, endpoint {sr:.0} MiB/s, \
             endpoint/direct {:.0} % (median of {rounds} rounds); CPU s/GiB: direct {cd:.2}, \
             endpoint {cr:.2}",
            median(ratios) * 100.0
        );
    }
}

criterion_group!(benches, bench_handoff);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo bench` passes `--bench`; `--list` only lists; a name filter picks `paired` or not.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let chosen = filters.is_empty()
        || filters
            .iter()
            .any(|f| "handoff/paired".contains(f.as_str()));
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list") && chosen {
        paired();
    }
}
