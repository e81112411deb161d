//! What TLS costs per core, without sockets: the ceiling the `throughput` benchmark's TLS
//! figure is bounded by.
//!
//! `cargo bench -p pv-transport --bench tls_ceiling`
//!
//! - `aead/*`: ring sealing and opening one 16 KiB record (the largest TLS record) in a loop,
//!   for each TLS 1.3 suite: the crypto alone, one core.
//! - `memcpy`: copying 16 KiB, for scale.
//! - `rustls_memory/*`: 16 MiB from a rustls client to a rustls server through memory
//!   (`write_tls` into a buffer, `read_tls` from it), both ends on one thread: everything
//!   rustls does per byte (record framing, the copies in and out, encrypt and decrypt)
//!   but no kernel. Its throughput is what one core can carry through TLS.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{
    AES_128_GCM, AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey,
};

const RECORD: usize = 16 * 1024;
const PER_ITER: usize = 16 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

fn bench_aead(c: &mut Criterion) {
    let mut group = c.benchmark_group("aead");
    group.throughput(Throughput::Bytes(RECORD as u64));
    group.measurement_time(Duration::from_secs(3));
    for (name, alg) in [
        ("aes128gcm", &AES_128_GCM),
        ("aes256gcm", &AES_256_GCM),
        ("chacha20poly1305", &CHACHA20_POLY1305),
    ] {
        let alg: &'static Algorithm = alg;
        let key = LessSafeKey::new(UnboundKey::new(alg, &vec![7u8; alg.key_len()]).unwrap());
        let mut buf = vec![0x5au8; RECORD];
        let nonce = || Nonce::assume_unique_for_key([1u8; 12]);
        group.bench_function(format!("seal/{name}"), |b| {
            b.iter(|| {
                key.seal_in_place_separate_tag(nonce(), Aad::from([23u8; 5]), &mut buf)
                    .unwrap()
            })
        });
        let mut sealed = vec![0x5au8; RECORD];
        key.seal_in_place_append_tag(nonce(), Aad::from([23u8; 5]), &mut sealed)
            .unwrap();
        let mut work = sealed.clone();
        group.bench_function(format!("open/{name}"), |b| {
            b.iter(|| {
                work.copy_from_slice(&sealed);
                key.open_in_place(nonce(), Aad::from([23u8; 5]), &mut work)
                    .map(|p| p.len())
                    .unwrap()
            })
        });
    }
    let src = vec![0x5au8; RECORD];
    let mut dst = vec![0u8; RECORD];
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            dst.copy_from_slice(std::hint::black_box(&src));
        })
    });
    group.finish();
}

fn pair(
    suite: rustls::SupportedCipherSuite,
) -> (rustls::ClientConnection, rustls::ServerConnection) {
    let cert = rcgen::generate_simple_self_signed(vec!["x".to_string()]).unwrap();
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![suite];
    let provider = Arc::new(provider);
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
        )
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut c = rustls::ClientConnection::new(Arc::new(client), "x".try_into().unwrap()).unwrap();
    let mut s = rustls::ServerConnection::new(Arc::new(server)).unwrap();
    let mut wire = Vec::new();
    while c.is_handshaking() || s.is_handshaking() {
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        s.read_tls(&mut wire.as_slice()).unwrap();
        wire.clear();
        s.process_new_packets().unwrap();
        while s.wants_write() {
            s.write_tls(&mut wire).unwrap();
        }
        c.read_tls(&mut wire.as_slice()).unwrap();
        wire.clear();
        c.process_new_packets().unwrap();
    }
    (c, s)
}

fn bench_rustls_memory(c: &mut Criterion) {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut group = c.benchmark_group("rustls_memory");
    group.throughput(Throughput::Bytes(PER_ITER as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    for (name, suite) in [
        ("aes128gcm", cs::TLS13_AES_128_GCM_SHA256),
        ("aes256gcm", cs::TLS13_AES_256_GCM_SHA384),
        ("chacha20poly1305", cs::TLS13_CHACHA20_POLY1305_SHA256),
    ] {
        let (mut client, mut server) = pair(suite);
        client.set_buffer_limit(None);
        let data = vec![0x5au8; CHUNK];
        let mut out = vec![0u8; CHUNK];
        let mut wire = Vec::with_capacity(2 * CHUNK);
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut got = 0;
                for _ in 0..PER_ITER / CHUNK {
                    client.writer().write_all(&data).unwrap();
                    while client.wants_write() {
                        client.write_tls(&mut wire).unwrap();
                    }
                    let mut rd = wire.as_slice();
                    while !rd.is_empty() {
                        server.read_tls(&mut rd).unwrap();
                        server.process_new_packets().unwrap();
                        loop {
                            match server.reader().read(&mut out) {
                                Ok(n) if n > 0 => got += n,
                                _ => break,
                            }
                        }
                    }
                    wire.clear();
                }
                assert_eq!(got, PER_ITER);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_aead, bench_rustls_memory);
criterion_main!(benches);
