//! The native handshake over real loopback sockets: success, every distinct failure (an
//! acceptor with no room left among them), and hostile peers (garbage, oversized messages,
//! half-open, one byte a second, closing midway).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use pv_transport::handshake::native::{NativeHandshake, PROTOCOL_VERSION};
use pv_transport::handshake::{
    Admission, HandshakeContext, HandshakeError, PeerInfo, Role, Side, perform,
};
use pv_transport::{Listener, Token, loopback};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(5);

async fn socket_pair() -> (TcpStream, TcpStream) {
    let listener = Listener::bind(loopback(0), None).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (d, a) = tokio::join!(TcpStream::connect(loopback(port)), listener.accept());
    (d.unwrap(), a.unwrap().0)
}

/// Run dialler and acceptor handshakes against each other over TCP.
async fn run(
    dialler: NativeHandshake,
    d_role: Role,
    acceptor: NativeHandshake,
    a_role: Role,
) -> (
    Result<PeerInfo, HandshakeError>,
    Result<PeerInfo, HandshakeError>,
) {
    let (mut d, mut a) = socket_pair().await;
    let dctx = HandshakeContext {
        side: Side::Dialler,
        role: d_role,
        tls_binding: None,
        admission: None,
    };
    let actx = HandshakeContext {
        side: Side::Acceptor,
        role: a_role,
        tls_binding: None,
        admission: None,
    };
    tokio::join!(
        perform(&dialler, &mut d, dctx, DEADLINE),
        perform(&acceptor, &mut a, actx, DEADLINE)
    )
}

/// Run only our acceptor against a hand-written peer.
async fn accept_against<F, Fut>(deadline: Duration, peer: F) -> Result<PeerInfo, HandshakeError>
where
    F: FnOnce(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (d, mut a) = socket_pair().await;
    let peer_task = tokio::spawn(peer(d));
    let hs = NativeHandshake::new(Token::generate());
    let ctx = HandshakeContext {
        side: Side::Acceptor,
        role: Role::Server,
        tls_binding: None,
        admission: None,
    };
    let result = perform(&hs, &mut a, ctx, deadline).await;
    peer_task.abort();
    result
}

#[tokio::test]
async fn forward_and_reverse_succeed_with_matching_token() {
    let token = Token::generate();
    // Forward: the client dials the server.
    let (d, a) = run(
        NativeHandshake::new(token.clone()),
        Role::Client,
        NativeHandshake::new(token.clone()),
        Role::Server,
    )
    .await;
    assert_eq!(d.unwrap().role, Role::Server);
    assert_eq!(a.unwrap().role, Role::Client);
    // Reverse: the server dials the client.
    let (d, a) = run(
        NativeHandshake::new(token.clone()).with_connect_id(42),
        Role::Server,
        NativeHandshake::new(token).with_connect_id(42),
        Role::Client,
    )
    .await;
    let (d, a) = (d.unwrap(), a.unwrap());
    assert_eq!((d.role, a.role), (Role::Client, Role::Server));
    assert_eq!(
        (d.connect_id, a.connect_id, d.protocol),
        (42, 42, u32::from(PROTOCOL_VERSION))
    );
}

/// An acceptor's place for one connection, counting how often it was asked for.
#[derive(Debug, Default)]
struct OnePlace {
    asked: AtomicUsize,
    taken: AtomicBool,
}

impl Admission for OnePlace {
    fn admit(&self) -> bool {
        self.asked.fetch_add(1, Ordering::SeqCst);
        !self.taken.swap(true, Ordering::SeqCst)
    }
}

/// Run a dialler with `d_token` against an acceptor with `a_token` that commits through
/// `place`.
async fn run_admitting(
    d_token: &Token,
    a_token: &Token,
    place: &OnePlace,
) -> (
    Result<PeerInfo, HandshakeError>,
    Result<PeerInfo, HandshakeError>,
) {
    let (mut d, mut a) = socket_pair().await;
    let dctx = HandshakeContext {
        side: Side::Dialler,
        role: Role::Client,
        tls_binding: None,
        admission: None,
    };
    let actx = HandshakeContext {
        side: Side::Acceptor,
        role: Role::Server,
        tls_binding: None,
        admission: Some(place),
    };
    let (dialler, acceptor) = (
        NativeHandshake::new(d_token.clone()),
        NativeHandshake::new(a_token.clone()),
    );
    tokio::join!(
        perform(&dialler, &mut d, dctx, DEADLINE),
        perform(&acceptor, &mut a, actx, DEADLINE)
    )
}

#[tokio::test]
async fn an_acceptor_with_no_room_left_turns_the_dialler_away_and_says_so() {
    let token = Token::generate();
    let place = OnePlace::default();
    let (d, a) = run_admitting(&token, &token, &place).await;
    d.unwrap();
    a.unwrap();
    // The one place is taken: the next dialler, token and all, hears why it is refused.
    let (d, a) = run_admitting(&token, &token, &place).await;
    assert!(matches!(a, Err(HandshakeError::Busy)), "{a:?}");
    assert!(matches!(d, Err(HandshakeError::Busy)), "{d:?}");
    assert!(
        d.unwrap_err()
            .to_string()
            .contains("single-connection mode"),
        "the dialler's error names the cause"
    );
    assert_eq!(place.asked.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_dialler_without_the_token_never_takes_the_place() {
    let place = OnePlace::default();
    let (d, a) = run_admitting(&Token::generate(), &Token::generate(), &place).await;
    assert!(matches!(a, Err(HandshakeError::WrongToken(_))), "{a:?}");
    assert!(matches!(d, Err(HandshakeError::WrongToken(_))), "{d:?}");
    assert_eq!(
        place.asked.load(Ordering::SeqCst),
        0,
        "admission was asked for"
    );
    assert!(!place.taken.load(Ordering::SeqCst));
}

#[tokio::test]
async fn wrong_token_fails_on_both_sides() {
    let (d, a) = run(
        NativeHandshake::new(Token::generate()),
        Role::Client,
        NativeHandshake::new(Token::generate()),
        Role::Server,
    )
    .await;
    assert!(matches!(a, Err(HandshakeError::WrongToken(_))), "{a:?}");
    assert!(matches!(d, Err(HandshakeError::WrongToken(_))), "{d:?}");
    assert!(d.unwrap_err().to_string().contains("authentication failed"));
}

#[tokio::test]
async fn version_mismatch_names_both_ranges() {
    let t = Token::generate();
    let (ours, next) = (PROTOCOL_VERSION, PROTOCOL_VERSION + 1);
    let (d, a) = run(
        NativeHandshake::new(t.clone()).with_versions(next, next + 1),
        Role::Client,
        NativeHandshake::new(t),
        Role::Server,
    )
    .await;
    match a {
        Err(HandshakeError::VersionMismatch {
            ours_min,
            theirs_min,
            theirs_max,
            ..
        }) if (ours_min, theirs_min, theirs_max) == (ours, next, next + 1) => {}
        other => panic!("acceptor: {other:?}"),
    }
    match d {
        Err(HandshakeError::VersionMismatch {
            ours_min,
            theirs_min,
            theirs_max,
            ..
        }) if (ours_min, theirs_min, theirs_max) == (next, ours, ours) => {}
        other => panic!("dialler: {other:?}"),
    }
}

/// A peer of version 1 (whose TLS binding used the retired exporter label) is turned away
/// for its version, before any proof, at either end: never as a bad token.
#[tokio::test]
async fn a_version_1_peer_hears_wrong_version_not_wrong_token() {
    const { assert!(PROTOCOL_VERSION >= 2) };
    let t = Token::generate();
    let old = || NativeHandshake::new(t.clone()).with_versions(1, 1);
    let new = || NativeHandshake::new(t.clone());
    for (dialler, acceptor) in [(old(), new()), (new(), old())] {
        let (d, a) = run(dialler, Role::Client, acceptor, Role::Server).await;
        for r in [&d, &a] {
            assert!(
                matches!(r, Err(HandshakeError::VersionMismatch { .. })),
                "{r:?}"
            );
        }
        let e = d.unwrap_err().to_string();
        assert!(e.contains("version"), "{e}");
    }
}

#[tokio::test]
async fn newest_common_version_is_chosen() {
    let t = Token::generate();
    let (d, a) = run(
        NativeHandshake::new(t.clone()).with_versions(1, 3),
        Role::Client,
        NativeHandshake::new(t).with_versions(1, 2),
        Role::Server,
    )
    .await;
    assert_eq!(d.unwrap().protocol, 2);
    assert_eq!(a.unwrap().protocol, 2);
}

#[tokio::test]
async fn two_clients_cannot_pair_up() {
    let t = Token::generate();
    let (d, a) = run(
        NativeHandshake::new(t.clone()),
        Role::Client,
        NativeHandshake::new(t),
        Role::Client,
    )
    .await;
    assert!(
        matches!(
            a,
            Err(HandshakeError::WrongRole {
                ours: Role::Client,
                theirs: Role::Client
            })
        ),
        "{a:?}"
    );
    assert!(matches!(d, Err(HandshakeError::WrongRole { .. })), "{d:?}");
}

#[tokio::test]
async fn connect_id_mismatch_shows_both_ids() {
    let t = Token::generate();
    let (d, a) = run(
        NativeHandshake::new(t.clone()).with_connect_id(7),
        Role::Client,
        NativeHandshake::new(t).with_connect_id(8),
        Role::Server,
    )
    .await;
    assert!(
        matches!(
            a,
            Err(HandshakeError::ConnectIdMismatch { ours: 8, theirs: 7 })
        ),
        "{a:?}"
    );
    assert!(
        matches!(
            d,
            Err(HandshakeError::ConnectIdMismatch { ours: 7, theirs: 8 })
        ),
        "{d:?}"
    );
}

#[tokio::test]
async fn garbage_is_refused_and_named() {
    let r = accept_against(DEADLINE, |mut s| async move {
        s.write_all(b"\x00\x01\x02\x03\x04\x05\x06\x07")
            .await
            .unwrap();
        let _ = s.read(&mut [0u8; 8]).await;
    })
    .await;
    assert!(matches!(r, Err(HandshakeError::Garbage { .. })), "{r:?}");

    // A TLS ClientHello on a plaintext port is recognised as such.
    let r = accept_against(DEADLINE, |mut s| async move {
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])
            .await
            .unwrap();
        let _ = s.read(&mut [0u8; 8]).await;
    })
    .await;
    let e = r.unwrap_err().to_string();
    assert!(e.contains("TLS"), "{e}");

    // So is ParaView's handshake.
    let r = accept_against(DEADLINE, |mut s| async move {
        s.write_all(&[0x3C, 0x3C, 0x3C, 0x3C, 1, 0, 0, 0, 0])
            .await
            .unwrap();
        let _ = s.read(&mut [0u8; 8]).await;
    })
    .await;
    assert!(r.unwrap_err().to_string().contains("paraview"));
}

#[tokio::test]
async fn oversized_message_is_refused_before_reading_it() {
    let r = accept_against(DEADLINE, |mut s| async move {
        let mut msg = b"PVLN\x01".to_vec();
        msg.extend_from_slice(&60000u16.to_be_bytes());
        s.write_all(&msg).await.unwrap();
        let _ = s.read(&mut [0u8; 8]).await;
    })
    .await;
    assert!(
        matches!(
            r,
            Err(HandshakeError::Oversized {
                size: 60000,
                limit: 512
            })
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn half_open_peer_hits_the_deadline() {
    let r = accept_against(Duration::from_millis(300), |mut s| async move {
        // Connect, then say nothing at all; keep the socket open.
        let _ = s.read(&mut [0u8; 1]).await;
    })
    .await;
    assert!(
        matches!(r, Err(HandshakeError::DeadlinePassed { .. })),
        "{r:?}"
    );
}

#[tokio::test]
async fn peer_sending_one_byte_a_second_hits_the_deadline() {
    let r = accept_against(Duration::from_millis(2500), |mut s| async move {
        // A valid beginning, trickled: the magic would complete only after 4 s.
        for b in b"PVLN\x01\x00\x2d" {
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    assert!(
        matches!(r, Err(HandshakeError::DeadlinePassed { .. })),
        "{r:?}"
    );
}

#[tokio::test]
async fn peer_closing_midway_is_reported() {
    let r = accept_against(DEADLINE, |mut s| async move {
        s.write_all(b"PVLN\x01\x00\x2d\x00\x01").await.unwrap();
        drop(s);
    })
    .await;
    assert!(matches!(r, Err(HandshakeError::Closed("native"))), "{r:?}");
}

#[tokio::test]
async fn the_token_never_crosses_the_wire() {
    // Relay both directions through a recording proxy and look for the token in the bytes.
    let token = Token::generate();
    let listener = Listener::bind(loopback(0), None).await.unwrap();
    let proxy = Listener::bind(loopback(0), None).await.unwrap();
    let (server_port, proxy_port) = (
        listener.local_addr().unwrap().port(),
        proxy.local_addr().unwrap().port(),
    );
    let relay = tokio::spawn(async move {
        let (mut from_client, _) = proxy.accept().await.unwrap();
        let mut to_server = TcpStream::connect(loopback(server_port)).await.unwrap();
        let mut seen = Vec::new();
        let (mut cr, mut cw) = from_client.split();
        let (mut sr, mut sw) = to_server.split();
        let mut a = [0u8; 1024];
        let mut b = [0u8; 1024];
        let mut open = (true, true);
        while open.0 || open.1 {
            tokio::select! {
                n = cr.read(&mut a), if open.0 => match n.unwrap_or(0) {
                    0 => { open.0 = false; let _ = sw.shutdown().await; }
                    n => { seen.extend_from_slice(&a[..n]); sw.write_all(&a[..n]).await.unwrap(); }
                },
                n = sr.read(&mut b), if open.1 => match n.unwrap_or(0) {
                    0 => { open.1 = false; let _ = cw.shutdown().await; }
                    n => { seen.extend_from_slice(&b[..n]); cw.write_all(&b[..n]).await.unwrap(); }
                },
            }
        }
        seen
    });
    let server_hs = NativeHandshake::new(token.clone());
    let client_hs = NativeHandshake::new(token.clone());
    let server = async {
        let (mut s, _) = listener.accept().await.unwrap();
        let ctx = HandshakeContext {
            side: Side::Acceptor,
            role: Role::Server,
            tls_binding: None,
            admission: None,
        };
        let r = perform(&server_hs, &mut s, ctx, DEADLINE).await;
        drop(s);
        r
    };
    let client = async {
        let mut s = TcpStream::connect(loopback(proxy_port)).await.unwrap();
        let ctx = HandshakeContext {
            side: Side::Dialler,
            role: Role::Client,
            tls_binding: None,
            admission: None,
        };
        let r = perform(&client_hs, &mut s, ctx, DEADLINE).await;
        drop(s);
        r
    };
    let (s, c) = tokio::join!(server, client);
    s.unwrap();
    c.unwrap();
    let seen = relay.await.unwrap();
    assert!(seen.len() > 100, "the handshake went through the relay");
    let raw = token.as_bytes();
    assert!(
        !seen.windows(raw.len()).any(|w| w == raw),
        "raw token on the wire"
    );
    let hex = token.to_hex().into_bytes();
    assert!(
        !seen.windows(hex.len()).any(|w| w == hex),
        "hex token on the wire"
    );
}
