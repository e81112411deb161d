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
//!   [`LoopbackEndpoint`] and [`relay`] to a plain TCP client on `127.0.0.1` (what `--exec`
//!   gives a client program): one more loopback hop. Plain, the relay moves the bytes in the
//!   kernel (`splice`); TLS, it copies the decrypted bytes with [`RELAY_BUFFER`].
//! - `handoff/plain/endpoint_copy{,_8k,_64k,_1m}`: the plain connection relayed by the copy
//!   in user space instead ([`relay_with_buffers`]), with [`RELAY_BUFFER`] and other buffer
//!   sizes (tokio's default is 8 KiB), to show what the kernel relay gains and why
//!   [`RELAY_BUFFER`] is what it is for the copy.
//! - then, outside criterion, `handoff/paired/{plain,tls}`: direct and relayed connections
//!   in alternating rounds (`ROUNDS=n`, default 20), printing the median ratio and the CPU
//!   seconds per GiB of each. On a shared machine criterion's runs, one after the other,
//!   see different loads; the paired ratio and the CPU cost do not depend on that.
//!
//! Each party (the server's sender, the launcher and its relay, the client program) runs on
//! its own thread with its own single-threaded runtime, as the three processes would. On a
//! machine others keep busy the figures follow the CPU share each thread gets; run as
//! `chrt -f 1 cargo bench …` (root) for what a quiet machine gives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use pv_transport::handoff::{LoopbackEndpoint, RELAY_BUFFER, relay, relay_with_buffers};
use pv_transport::handshake::{Role, Side, Stream};
use pv_transport::{Connection, Listener, loopback};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

// `connect_pair` is the other benches'.
#[allow(dead_code)]
mod common;
use common::{CHUNK, Kind, PER_ITER, ack_receiver, configs};

/// A single-threaded runtime: each party (sender, launcher, client program) has its own
/// thread, as separate processes would.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Run `party` on a thread of its own, with its own runtime; the thread ends with it.
fn on_own_thread<F: Future<Output = ()>>(party: impl FnOnce() -> F + Send + 'static) {
    std::thread::spawn(move || runtime().block_on(party()));
}

/// How the receiver reaches the server's connection.
#[derive(Clone, Copy)]
enum Via {
    Direct,
    /// Through a loopback endpoint, relayed by [`relay`] (in the kernel when plain).
    Endpoint,
    /// Through a loopback endpoint, copied in user space with buffers of this size.
    Copied(usize),
}

/// A connection of `kind` whose launcher end (on a thread of its own) receives, itself or
/// through a client program reached `via`: returns the server's end, on `rt`, which sends.
fn setup(rt: &Runtime, kind: Kind, via: Via) -> Box<dyn Stream> {
    let cfg = configs(kind);
    let listener = rt.block_on(Listener::bind(loopback(0), None)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let launcher_cfg = cfg.as_ref().map(|c| c.client.clone());
    on_own_thread(move || async move {
        let tcp = TcpStream::connect(loopback(port)).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let Some(cfg) = launcher_cfg else {
            return ack_receiver(Box::new(tcp)).await;
        };
        let launcher = Connection::establish(tcp, Side::Dialler, Role::Client, &cfg, None)
            .await
            .unwrap();
        match via {
            Via::Direct => ack_receiver(Box::new(launcher)).await,
            _ => hand_off(launcher, via).await,
        }
    });
    let (tcp, addr) = rt.block_on(listener.accept()).unwrap();
    match cfg {
        None => Box::new(tcp),
        Some(cfg) => Box::new(
            rt.block_on(Connection::establish(
                tcp,
                Side::Acceptor,
                Role::Server,
                &cfg.server,
                Some(addr),
            ))
            .unwrap(),
        ),
    }
}

/// Relay `launcher` through a loopback endpoint to a client program on a thread of its own,
/// until the connection ends.
async fn hand_off(mut launcher: Connection, via: Via) {
    let endpoint = LoopbackEndpoint::bind(0).await.unwrap();
    let addr = endpoint.local_addr();
    on_own_thread(move || async move {
        let program = TcpStream::connect(addr).await.unwrap();
        program.set_nodelay(true).unwrap();
        ack_receiver(Box::new(program)).await
    });
    let wait = Duration::from_secs(10);
    let mut client = endpoint.accept_own(wait, |r| panic!("{r}")).await.unwrap();
    // Ends with an error when the sender drops (TLS without close_notify).
    let _ = match via {
        Via::Copied(buffer) => relay_with_buffers(&mut client, &mut launcher, buffer).await,
        _ => relay(&mut client, &mut launcher).await,
    };
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
    for (name, kind, via) in [
        ("raw_tcp/direct", Kind::Raw, Via::Direct),
        ("plain/direct", Kind::Native, Via::Direct),
        ("plain/endpoint", Kind::Native, Via::Endpoint),
        (
            "plain/endpoint_copy",
            Kind::Native,
            Via::Copied(RELAY_BUFFER),
        ),
        ("plain/endpoint_copy_8k", Kind::Native, Via::Copied(8 << 10)),
        (
            "plain/endpoint_copy_64k",
            Kind::Native,
            Via::Copied(64 << 10),
        ),
        ("plain/endpoint_copy_1m", Kind::Native, Via::Copied(1 << 20)),
        ("tls/direct", Kind::Tls, Via::Direct),
        ("tls/endpoint", Kind::Tls, Via::Endpoint),
    ] {
        let mut tx = setup(&rt, kind, via);
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

/// Direct and relayed connections measured in alternation, so all see the same load: per
/// round, [`PAIRED_ITERS`] x 16 MiB over each; prints the median throughput, the median of
/// the per-round ratio relayed/direct, and the CPU seconds per GiB (all threads: sender,
/// relay, receiver), which does not depend on how busy the machine is. Plain connections
/// are relayed both ways: in the kernel (`endpoint`) and by the copy (`endpoint_copy`).
fn paired() {
    const PAIRED_ITERS: u64 = 4;
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let rt = runtime();
    let data = vec![0x5au8; CHUNK];
    let gib = (PAIRED_ITERS as usize * PER_ITER) as f64 / (1u64 << 30) as f64;
    let plain: &[(&str, Via)] = &[
        ("direct", Via::Direct),
        ("endpoint", Via::Endpoint),
        ("endpoint_copy", Via::Copied(RELAY_BUFFER)),
    ];
    let tls: &[(&str, Via)] = &[("direct", Via::Direct), ("endpoint", Via::Endpoint)];
    for (name, kind, vias) in [("plain", Kind::Native, plain), ("tls", Kind::Tls, tls)] {
        let mut senders: Vec<_> = vias.iter().map(|&(_, via)| setup(&rt, kind, via)).collect();
        let mut speeds = vec![Vec::new(); vias.len()];
        let mut cpus = vec![Vec::new(); vias.len()];
        let mut ratios = vec![Vec::new(); vias.len()];
        for _ in 0..rounds {
            let mut round = vec![0.0; vias.len()];
            for (i, tx) in senders.iter_mut().enumerate() {
                let (cpu, start) = (process_cpu(), Instant::now());
                rt.block_on(send(tx, &data, PAIRED_ITERS));
                let secs = start.elapsed().as_secs_f64();
                round[i] = gib * 1024.0 / secs;
                speeds[i].push(round[i]);
                cpus[i].push((process_cpu() - cpu) / gib);
            }
            for (i, r) in round.iter().enumerate() {
                ratios[i].push(r / round[0]);
            }
        }
        let mut line = format!("handoff/paired/{name} (median of {rounds} rounds):");
        for (i, (via, _)) in vias.iter().enumerate() {
            let speed = median(speeds[i].clone());
            let cpu = median(cpus[i].clone());
            line += &format!(" {via} {speed:.0} MiB/s");
            if i > 0 {
                line += &format!(" = {:.0} % of direct", median(ratios[i].clone()) * 100.0);
            }
            line += &format!(" ({cpu:.2} CPU s/GiB);");
        }
        println!("{}", line.trim_end_matches(';'));
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
