//! Throughput and connect latency on loopback, raw TCP beside the same through pv-transport:
//! a handshaken plain connection and a TLS connection.
//!
//! `cargo bench -p pv-transport --bench throughput`
//!
//! - `throughput/*`: 16 MiB per iteration over one long-lived connection, in 64 KiB writes,
//!   counted when the receiver has read the last byte.
//! - `connect/*`: a fresh connection per iteration, timed until the client holds a usable
//!   stream: TCP connect only; TCP + native handshake; TCP + full TLS 1.3 handshake (fresh
//!   session, no resumption) + native handshake bound to it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pv_transport::{Listener, loopback};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

fn bench_throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("throughput");
    group.throughput(Throughput::Bytes(PER_ITER as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(6));
    for (name, kind) in [
        ("raw_tcp", Kind::Raw),
        ("native", Kind::Native),
        ("tls", Kind::Tls),
    ] {
        let cfg = configs(kind);
        let (mut tx, rx) = rt.block_on(async {
            let l = Listener::bind(loopback(0), None).await.unwrap();
            connect_pair(&l, &cfg).await
        });
        // The receiver reads PER_ITER bytes per request and acknowledges with one byte.
        let receiver = rt.spawn(ack_receiver(rx));
        let data = Arc::new(vec![0x5au8; CHUNK]);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        for _ in 0..PER_ITER / CHUNK {
                            tx.write_all(&data).await.unwrap();
                        }
                        tx.flush().await.unwrap();
                        let mut ack = [0u8; 1];
                        tx.read_exact(&mut ack).await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
        drop(tx);
        rt.block_on(receiver).unwrap();
    }
    group.finish();
}

fn bench_connect(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("connect");
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(4));
    for (name, kind) in [
        ("raw_tcp", Kind::Raw),
        ("native", Kind::Native),
        ("tls", Kind::Tls),
    ] {
        let cfg = configs(kind);
        let listener = rt.block_on(Listener::bind(loopback(0), None)).unwrap();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let pair = connect_pair(&listener, &cfg).await;
                        total += start.elapsed();
                        drop(pair);
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_throughput, bench_connect);
criterion_main!(benches);
