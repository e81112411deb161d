//! TLS over real loopback sockets: pinning in both directions, CA verification, mutual TLS,
//! the relay that channel binding catches, every bad-input case, and interoperability with
//! Debian's `openssl` in both roles.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use pv_transport::handshake::native::NativeHandshake;
use pv_transport::handshake::{HandshakeError, NoHandshake, Role, Side};
use pv_transport::{
    ConnectTimeout, Connection, ConnectionConfig, EstablishError, Fingerprint, Listener,
    RetryPolicy, ServerIdentity, TlsConfig, TlsError, Token, dial, loopback,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(5);

fn native(token: &Token) -> ConnectionConfig {
    ConnectionConfig::new(NativeHandshake::new(token.clone()))
}

async fn pair() -> (TcpStream, TcpStream) {
    let l = Listener::bind(loopback(0), None).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (d, a) = tokio::join!(TcpStream::connect(loopback(port)), l.accept());
    (d.unwrap(), a.unwrap().0)
}

/// Establish both ends over one socket pair: `server` on the side given, `client` on the other.
async fn establish(
    server: &ConnectionConfig,
    client: &ConnectionConfig,
    server_side: Side,
) -> (
    Result<Connection, EstablishError>,
    Result<Connection, EstablishError>,
) {
    let (d, a) = pair().await;
    let (s_stream, c_stream, c_side) = match server_side {
        Side::Acceptor => (a, d, Side::Dialler),
        Side::Dialler => (d, a, Side::Acceptor),
    };
    tokio::join!(
        Connection::establish(s_stream, server_side, Role::Server, server, None),
        Connection::establish(c_stream, c_side, Role::Client, client, None)
    )
}

fn identity_with(params: rcgen::CertificateParams) -> ServerIdentity {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    ServerIdentity::from_der(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

async fn echo_round_trip(s: Connection, mut c: Connection) {
    let echo = tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(s);
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    c.write_all(b"through tls").await.unwrap();
    let mut back = [0u8; 11];
    c.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"through tls");
    drop(c);
    echo.await.unwrap();
}

#[tokio::test]
async fn pinned_tls_works_forward_and_reverse() {
    let token = Token::generate();
    let id = ServerIdentity::generate().unwrap();
    let server = native(&token).with_tls(TlsConfig::server(&id, None).unwrap());
    let client = native(&token).with_tls(TlsConfig::client_pinned(id.fingerprint(), None).unwrap());
    // Forward: the client dials; reverse: the server dials but is still the TLS server.
    for server_side in [Side::Acceptor, Side::Dialler] {
        let (s, c) = establish(&server, &client, server_side).await;
        let (s, c) = (s.unwrap(), c.unwrap());
        let info = c.tls().unwrap();
        assert_eq!(info.version, "TLSv1_3");
        assert_eq!(info.peer_certificate, Some(id.fingerprint()));
        assert_eq!(
            s.tls().unwrap().peer_certificate,
            None,
            "no client cert asked"
        );
        echo_round_trip(s, c).await;
    }
}

#[tokio::test]
async fn a_different_certificate_is_refused_showing_both_fingerprints() {
    let token = Token::generate();
    let real = ServerIdentity::generate().unwrap();
    let other = ServerIdentity::generate().unwrap();
    let server = native(&token).with_tls(TlsConfig::server(&other, None).unwrap());
    let client =
        native(&token).with_tls(TlsConfig::client_pinned(real.fingerprint(), None).unwrap());
    let (s, c) = establish(&server, &client, Side::Acceptor).await;
    match c {
        Err(EstablishError::Tls(TlsError::PinMismatch { expected, received })) => {
            assert_eq!(expected, real.fingerprint());
            assert_eq!(received, other.fingerprint());
        }
        other => panic!("client: {other:?}"),
    }
    let msg = format!(
        "{}",
        establish(&server, &client, Side::Acceptor)
            .await
            .1
            .unwrap_err()
    );
    assert!(msg.contains(&real.fingerprint().to_string()), "{msg}");
    assert!(msg.contains(&other.fingerprint().to_string()), "{msg}");
    assert!(s.is_err(), "the server sees the refusal too");
}

#[tokio::test]
async fn an_expired_pinned_certificate_is_refused() {
    let token = Token::generate();
    let mut params = rcgen::CertificateParams::new(vec!["pv-launch-server".into()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let id = identity_with(params);
    let server = native(&token).with_tls(TlsConfig::server(&id, None).unwrap());
    let client = native(&token).with_tls(TlsConfig::client_pinned(id.fingerprint(), None).unwrap());
    let (_, c) = establish(&server, &client, Side::Acceptor).await;
    let e = c.unwrap_err().to_string();
    assert!(e.contains("expired"), "{e}");
}

/// A small CA, a server certificate it signed for `good.example`, and the CA's PEM.
fn ca_and_server() -> (String, ServerIdentity) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(vec![]).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pv-launch test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["good.example".into()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let id = ServerIdentity::from_der(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    );
    (ca.pem(), id)
}

#[tokio::test]
async fn ca_verification_checks_the_server_name() {
    let token = Token::generate();
    let (ca_pem, id) = ca_and_server();
    let server = native(&token).with_tls(TlsConfig::server(&id, None).unwrap());
    let good = native(&token)
        .with_tls(TlsConfig::client_with_ca(ca_pem.as_bytes(), "good.example", None).unwrap());
    let (s, c) = establish(&server, &good, Side::Acceptor).await;
    echo_round_trip(s.unwrap(), c.unwrap()).await;

    let wrong = native(&token)
        .with_tls(TlsConfig::client_with_ca(ca_pem.as_bytes(), "evil.example", None).unwrap());
    let (_, c) = establish(&server, &wrong, Side::Acceptor).await;
    let e = c.unwrap_err().to_string();
    assert!(
        e.contains("not valid for name") || e.contains("NotValidForName"),
        "{e}"
    );

    // A certificate from no trusted CA at all.
    let stranger = ServerIdentity::generate().unwrap();
    let server = native(&token).with_tls(TlsConfig::server(&stranger, None).unwrap());
    let (_, c) = establish(&server, &good, Side::Acceptor).await;
    let e = c.unwrap_err().to_string();
    assert!(
        e.contains("UnknownIssuer") || e.contains("unknown issuer"),
        "{e}"
    );

    let e = TlsConfig::client_with_ca(b"not pem", "x", None).unwrap_err();
    assert!(e.to_string().contains("no certificate"), "{e}");
}

#[tokio::test]
async fn mutual_tls_pins_the_client_certificate() {
    let token = Token::generate();
    let server_id = ServerIdentity::generate().unwrap();
    let client_id = ServerIdentity::generate().unwrap();
    let server = native(&token)
        .with_tls(TlsConfig::server(&server_id, Some(client_id.fingerprint())).unwrap());
    let client = native(&token)
        .with_tls(TlsConfig::client_pinned(server_id.fingerprint(), Some(&client_id)).unwrap());
    let (s, c) = establish(&server, &client, Side::Dialler).await;
    let s = s.unwrap();
    assert_eq!(
        s.tls().unwrap().peer_certificate,
        Some(client_id.fingerprint())
    );
    echo_round_trip(s, c.unwrap()).await;

    // Another client certificate, or none, is refused by the server.
    let impostor = ServerIdentity::generate().unwrap();
    for id in [Some(&impostor), None] {
        let client =
            native(&token).with_tls(TlsConfig::client_pinned(server_id.fingerprint(), id).unwrap());
        let (s, _) = establish(&server, &client, Side::Acceptor).await;
        assert!(
            s.is_err(),
            "server accepted client cert {:?}",
            id.map(|i| i.fingerprint())
        );
    }
}

#[tokio::test]
async fn a_relay_with_the_right_certificate_is_caught_by_channel_binding() {
    // The worst case for TLS alone: the relay holds the server's own key (say it leaked), so
    // the client's pin is satisfied. It terminates TLS towards each end and relays plaintext.
    let token = Token::generate();
    let id = ServerIdentity::generate().unwrap();
    let server_tls = TlsConfig::server(&id, None).unwrap();
    let client_tls = TlsConfig::client_pinned(id.fingerprint(), None).unwrap();

    let server_l = Listener::bind(loopback(0), None).await.unwrap();
    let relay_l = Listener::bind(loopback(0), None).await.unwrap();
    let server_port = server_l.local_addr().unwrap().port();
    let relay_port = relay_l.local_addr().unwrap().port();
    let (relay_server_tls, relay_client_tls) = (server_tls.clone(), client_tls.clone());
    let relay = tokio::spawn(async move {
        let (from_client, _) = relay_l.accept().await.unwrap();
        let to_server = TcpStream::connect(loopback(server_port)).await.unwrap();
        let a = relay_server_tls
            .secure(from_client, Role::Server)
            .await
            .unwrap();
        let b = relay_client_tls
            .secure(to_server, Role::Client)
            .await
            .unwrap();
        let (mut a, mut b) = (a.stream, b.stream);
        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
    });
    let server_cfg = native(&token).with_tls(server_tls);
    let client_cfg = native(&token).with_tls(client_tls);
    let server = async {
        let (s, addr) = server_l.accept().await.unwrap();
        Connection::establish(s, Side::Acceptor, Role::Server, &server_cfg, Some(addr)).await
    };
    let client = async {
        let s = TcpStream::connect(loopback(relay_port)).await.unwrap();
        Connection::establish(s, Side::Dialler, Role::Client, &client_cfg, None).await
    };
    let (s, c) = tokio::join!(server, client);
    assert!(
        matches!(
            s,
            Err(EstablishError::Handshake(HandshakeError::WrongToken(_)))
        ),
        "server: {s:?}"
    );
    assert!(
        matches!(
            c,
            Err(EstablishError::Handshake(HandshakeError::WrongToken(_)))
        ),
        "client: {c:?}"
    );
    relay.abort();
}

#[tokio::test]
async fn plaintext_peer_on_a_tls_port_and_tls_peer_on_a_plaintext_port() {
    let token = Token::generate();
    let id = ServerIdentity::generate().unwrap();
    let tls_server = native(&token).with_tls(TlsConfig::server(&id, None).unwrap());
    let plain_client = native(&token);
    let (s, c) = establish(&tls_server, &plain_client, Side::Acceptor).await;
    assert!(
        matches!(s, Err(EstablishError::Tls(TlsError::NotTls))),
        "{s:?}"
    );
    assert!(c.is_err());

    let plain_server = native(&token);
    let tls_client =
        native(&token).with_tls(TlsConfig::client_pinned(id.fingerprint(), None).unwrap());
    let (s, c) = establish(&plain_server, &tls_client, Side::Acceptor).await;
    let e = s.unwrap_err().to_string();
    assert!(e.contains("TLS"), "the plaintext server names TLS: {e}");
    assert!(c.is_err());
}

#[tokio::test]
async fn a_peer_that_stops_mid_handshake_hits_the_deadline() {
    let id = ServerIdentity::generate().unwrap();
    let client = ConnectionConfig::new(NoHandshake)
        .with_tls(TlsConfig::client_pinned(id.fingerprint(), None).unwrap())
        .with_deadline(Duration::from_millis(500));
    let (d, mut a) = pair().await;
    // The "server" reads the ClientHello and then says nothing, keeping the socket open.
    let stall = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        let _ = a.read(&mut buf).await;
        let _ = a.read(&mut buf).await;
    });
    let r = Connection::establish(d, Side::Dialler, Role::Client, &client, None).await;
    assert!(
        matches!(r, Err(EstablishError::Tls(TlsError::DeadlinePassed(_)))),
        "{r:?}"
    );
    stall.abort();
}

/// A process killed when the test ends, however it ends.
struct Reaped(tokio::process::Child);
impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

#[tokio::test]
async fn openssl_s_client_talks_to_our_tls_listener() {
    let id = ServerIdentity::generate().unwrap();
    let server_cfg =
        ConnectionConfig::new(NoHandshake).with_tls(TlsConfig::server(&id, None).unwrap());
    let l = Listener::bind(loopback(0), None).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (s, addr) = l.accept().await.unwrap();
        let conn = Connection::establish(s, Side::Acceptor, Role::Server, &server_cfg, Some(addr))
            .await
            .unwrap();
        let (mut r, mut w) = tokio::io::split(conn);
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let mut child = Reaped(
        tokio::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-tls1_3",
                "-quiet",
            ])
            .args(["-servername", "pv-launch-server"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("openssl is installed (ci/install-deps)"),
    );
    // About 300 KB each way: many records, in writes and reads of every size.
    let sent: Vec<String> = (0..300)
        .map(|i| format!("{i:04} {}", "openssl".repeat(1 + i % 200)))
        .collect();
    let mut stdin = child.0.stdin.take().unwrap();
    let writer = tokio::spawn({
        let text = sent.join("\n") + "\n";
        async move {
            stdin.write_all(text.as_bytes()).await.unwrap();
            stdin
        }
    });
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    for want in &sent {
        let line = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("s_client echoes within the deadline")
            .unwrap();
        assert_eq!(line.as_deref(), Some(want.as_str()));
    }
    drop(writer.await.unwrap());
    drop(child);
    server.abort();
}

#[tokio::test]
async fn our_pinned_client_talks_to_openssl_s_server() {
    let (_dir, cert_path, key_path, pin) = openssl_identity();
    // `-rev` answers each line reversed.
    let (_server, _commands, _out, port) = openssl_s_server(&cert_path, &key_path, &["-rev"]).await;
    let config =
        ConnectionConfig::new(NoHandshake).with_tls(TlsConfig::client_pinned(pin, None).unwrap());
    let stream = dial(
        "127.0.0.1",
        port,
        RetryPolicy::new(ConnectTimeout::Once),
        None,
        |_, _, _| {},
    )
    .await
    .unwrap();
    let mut conn = Connection::establish(stream, Side::Dialler, Role::Client, &config, None)
        .await
        .unwrap();
    assert_eq!(conn.tls().unwrap().peer_certificate, Some(pin));
    conn.write_all(b"pv-launch\n").await.unwrap();
    // `-rev` answers each line reversed.
    let mut reply = BufReader::new(conn);
    let mut line = String::new();
    tokio::time::timeout(DEADLINE, reply.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line.trim_end(), "hcnual-vp");
}

/// A self-signed certificate for `pv-launch-server` in a fresh directory: (dir, cert, key,
/// fingerprint).
fn openssl_identity() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    Fingerprint,
) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["pv-launch-server".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (dir, cert_path, key_path, Fingerprint::of_der(cert.der()))
}

/// Read `lines` until one satisfies `want`, within the deadline; everything read is returned.
async fn wait_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    what: &str,
    want: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let hit = want(&line);
            seen.push(line);
            if hit {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "no line with {what}; saw {seen:?}"
    );
    seen
}

/// Debian's `openssl s_server` on a free loopback port with `cert` and `key`, TLS 1.3 and
/// `options`, once it says it accepts: (the process, its stdin, its stdout's lines, the port).
/// Its stdout is line-buffered (`stdbuf`), so traces arrive as they are printed.
async fn openssl_s_server(
    cert: &std::path::Path,
    key: &std::path::Path,
    options: &[&str],
) -> (
    Reaped,
    tokio::process::ChildStdin,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    u16,
) {
    let port = {
        let l = Listener::bind(loopback(0), None).await.unwrap();
        l.local_addr().unwrap().port()
    };
    let mut server = Reaped(
        tokio::process::Command::new("stdbuf")
            .args(["-oL", "openssl", "s_server", "-tls1_3"])
            .args(options)
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("openssl is installed (ci/install-deps)"),
    );
    let commands = server.0.stdin.take().unwrap();
    let mut out = BufReader::new(server.0.stdout.take().unwrap()).lines();
    // Wait for s_server to say it accepts, not for a fixed time.
    wait_line(&mut out, "ACCEPT", |l| l.contains("ACCEPT")).await;
    (server, commands, out, port)
}

/// openssl's server asks for a key update (`K` on its stdin): our client switches its
/// receiving key, answers with a key update of its own, and both directions go on.
#[tokio::test]
async fn a_key_update_from_openssl_s_server_is_followed_and_answered() {
    let (_dir, cert_path, key_path, pin) = openssl_identity();
    // `-msg` traces each TLS message, so the test sees the KeyUpdates go and come.
    let (_server, mut commands, mut out, port) =
        openssl_s_server(&cert_path, &key_path, &["-msg"]).await;

    let config =
        ConnectionConfig::new(NoHandshake).with_tls(TlsConfig::client_pinned(pin, None).unwrap());
    let stream = TcpStream::connect(loopback(port)).await.unwrap();
    let conn = Connection::establish(stream, Side::Dialler, Role::Client, &config, None)
        .await
        .unwrap();
    let (r, mut w) = tokio::io::split(conn);
    let mut from_server = BufReader::new(r).lines();

    w.write_all(b"before the update\n").await.unwrap();
    w.flush().await.unwrap();
    wait_line(&mut out, "our first line", |l| l == "before the update").await;

    // s_server takes a command only when it arrives alone in one read.
    commands.write_all(b"K\n").await.unwrap();
    // openssl sends the KeyUpdate with its next write.
    let trace = wait_line(&mut out, "the command taken", |l| {
        l.starts_with("SSL_do_handshake")
    })
    .await;
    assert!(
        trace
            .iter()
            .any(|l| l.starts_with(">>> TLS 1.3") && l.ends_with("KeyUpdate")),
        "openssl sent a KeyUpdate: {trace:?}"
    );
    commands
        .write_all(b"sent under the new key\n")
        .await
        .unwrap();
    let got = tokio::time::timeout(DEADLINE, async {
        loop {
            match from_server.next_line().await.unwrap() {
                Some(l) if l == "sent under the new key" => return,
                Some(_) => {}
                None => panic!("the connection ended"),
            }
        }
    })
    .await;
    assert!(
        got.is_ok(),
        "our client read the server's line after its key update"
    );
    // Ours goes out as soon as the client reads theirs, before any data of ours.
    wait_line(&mut out, "our KeyUpdate arriving", |l| {
        l.starts_with("<<< TLS 1.3") && l.ends_with("KeyUpdate")
    })
    .await;

    w.write_all(b"answered under ours\n").await.unwrap();
    w.flush().await.unwrap();
    wait_line(&mut out, "our line after the update", |l| {
        l == "answered under ours"
    })
    .await;
}

/// The exporter value our server binds the native handshake to is the one openssl computes
/// for the same session (RFC 8446 §7.5).
#[tokio::test]
async fn our_exporter_matches_openssl_s_client() {
    let id = ServerIdentity::generate().unwrap();
    let tls = TlsConfig::server(&id, None).unwrap();
    let l = Listener::bind(loopback(0), None).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let label = std::str::from_utf8(pv_transport::tls::EXPORTER_LABEL).unwrap();
    let mut child = Reaped(
        tokio::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-tls1_3",
            ])
            .args(["-servername", "pv-launch-server"])
            .args(["-keymatexport", label, "-keymatexportlen", "32"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("openssl is installed"),
    );
    let (s, _) = tokio::time::timeout(DEADLINE, l.accept())
        .await
        .unwrap()
        .unwrap();
    let secured = tokio::time::timeout(DEADLINE, tls.secure(s, Role::Server))
        .await
        .unwrap()
        .unwrap();
    let mut out = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let seen = wait_line(&mut out, "Keying material", |l| {
        l.trim_start().starts_with("Keying material:")
    })
    .await;
    let theirs = seen
        .last()
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .trim()
        .to_lowercase();
    let ours: String = secured.binding.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(ours, theirs);
}

#[tokio::test]
async fn data_server_and_render_server_pair_over_tls_forward_and_reverse() {
    use pv_transport::{ConnectionManager, ConnectionMode};
    let token = Token::generate();
    let ids = [
        ServerIdentity::generate().unwrap(),
        ServerIdentity::generate().unwrap(),
    ];
    let pins = [ids[0].fingerprint(), ids[1].fingerprint()];
    let client_cfg = native(&token).with_tls(TlsConfig::client_pinned_any(&pins, None).unwrap());
    let server_cfgs: Vec<_> = ids
        .iter()
        .map(|id| native(&token).with_tls(TlsConfig::server(id, None).unwrap()))
        .collect();
    async fn serve(conn: Connection) {
        let (mut r, mut w) = tokio::io::split(conn);
        let _ = tokio::io::copy(&mut r, &mut w).await;
    }
    // Forward: both servers listen, the client dials both.
    let client = ConnectionManager::new(ConnectionMode::Single, client_cfg.clone());
    let mut ports = Vec::new();
    for cfg in &server_cfgs {
        let l = Listener::bind(loopback(0), None).await.unwrap();
        ports.push(l.local_addr().unwrap().port());
        let server = ConnectionManager::new(ConnectionMode::Single, cfg.clone());
        tokio::spawn(
            async move { serve(server.accept_client(l, Some(DEADLINE)).await.unwrap()).await },
        );
    }
    let (d, r) = client
        .connect_data_render(
            ("127.0.0.1", ports[0]),
            ("127.0.0.1", ports[1]),
            RetryPolicy::new(ConnectTimeout::Once),
        )
        .await
        .unwrap();
    assert_eq!(d.tls().unwrap().peer_certificate, Some(pins[0]));
    assert_eq!(r.tls().unwrap().peer_certificate, Some(pins[1]));
    drop((d, r));
    // Reverse: the client listens on two ports, each server dials its own.
    let client = ConnectionManager::new(ConnectionMode::Single, client_cfg);
    let dl = Listener::bind(loopback(0), None).await.unwrap();
    let rl = Listener::bind(loopback(0), None).await.unwrap();
    let lports = [
        dl.local_addr().unwrap().port(),
        rl.local_addr().unwrap().port(),
    ];
    for (cfg, port) in server_cfgs.iter().zip(lports) {
        let server = ConnectionManager::new(ConnectionMode::Single, cfg.clone());
        tokio::spawn(async move {
            let conn = server
                .dial_client(
                    "127.0.0.1",
                    port,
                    RetryPolicy::new(ConnectTimeout::Once),
                    |_, _, _| {},
                )
                .await
                .unwrap();
            serve(conn).await
        });
    }
    let (mut d, r) = client
        .wait_for_data_render(dl, rl, Some(DEADLINE))
        .await
        .unwrap();
    assert_eq!(d.tls().unwrap().peer_certificate, Some(pins[0]));
    assert_eq!(r.tls().unwrap().peer_certificate, Some(pins[1]));
    d.write_all(b"pair").await.unwrap();
    let mut back = [0u8; 4];
    d.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"pair");
}

/// The label is a private one (RFC 5705 §4: not the reserved `EXPORTER-` prefix), and our
/// *client's* binding is what `openssl s_server -keymatexport` computes for the session too.
#[tokio::test]
async fn our_client_binding_matches_openssl_s_server_under_the_private_label() {
    let label = pv_transport::tls::EXPORTER_LABEL;
    assert_eq!(label, b"EXPERIMENTAL pv-launch channel binding v2");
    assert!(!label.starts_with(b"EXPORTER"));
    let label = std::str::from_utf8(label).unwrap();
    let (_dir, cert_path, key_path, pin) = openssl_identity();
    let (_server, _commands, mut out, port) = openssl_s_server(
        &cert_path,
        &key_path,
        &["-keymatexport", label, "-keymatexportlen", "32"],
    )
    .await;
    let stream = TcpStream::connect(loopback(port)).await.unwrap();
    let secured = tokio::time::timeout(
        DEADLINE,
        TlsConfig::client_pinned(pin, None)
            .unwrap()
            .secure(stream, Role::Client),
    )
    .await
    .unwrap()
    .unwrap();
    let seen = wait_line(&mut out, "Keying material", |l| {
        l.trim_start().starts_with("Keying material:")
    })
    .await;
    let theirs = seen.last().unwrap().split(':').nth(1).unwrap().trim();
    let ours: String = secured.binding.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(ours, theirs.to_uppercase());
}

/// Two ends secured over one loopback connection that passes through a relay in this test:
/// (server end, client end, the relay's switch). Once the switch is on, the relay flips one
/// bit of the 11th byte it forwards from the client to the server after that.
async fn secured_through_tampering_relay() -> (
    pv_transport::tls::Secured,
    pv_transport::tls::Secured,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let id = ServerIdentity::generate().unwrap();
    let server_tls = TlsConfig::server(&id, None).unwrap();
    let client_tls = TlsConfig::client_pinned(id.fingerprint(), None).unwrap();
    let (server_l, relay_l) = (
        Listener::bind(loopback(0), None).await.unwrap(),
        Listener::bind(loopback(0), None).await.unwrap(),
    );
    let server_port = server_l.local_addr().unwrap().port();
    let relay_port = relay_l.local_addr().unwrap().port();
    let armed = Arc::new(AtomicBool::new(false));
    let switch = armed.clone();
    tokio::spawn(async move {
        let (from_client, _) = relay_l.accept().await.unwrap();
        let to_server = TcpStream::connect(loopback(server_port)).await.unwrap();
        let (mut cr, mut cw) = from_client.into_split();
        let (mut sr, mut sw) = to_server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
        });
        let mut buf = vec![0u8; 64 * 1024];
        let mut since_armed: Option<usize> = None;
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if armed.load(Ordering::SeqCst) {
                let at = since_armed.unwrap_or(0);
                if (at..at + n).contains(&10) {
                    buf[10 - at] ^= 0x01;
                }
                since_armed = Some(at + n);
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let server = async {
        let (s, _) = server_l.accept().await.unwrap();
        server_tls.secure(s, Role::Server).await.unwrap()
    };
    let client = async {
        let s = TcpStream::connect(loopback(relay_port)).await.unwrap();
        client_tls.secure(s, Role::Client).await.unwrap()
    };
    let (s, c) = tokio::time::timeout(DEADLINE, async { tokio::join!(server, client) })
        .await
        .expect("both handshakes finish");
    (s, c, switch)
}

/// One changed bit in a record is refused (the AEAD tag does not match) and no byte of it
/// is delivered (RFC 8446 §5.2).
#[tokio::test]
async fn a_changed_byte_is_refused() {
    use std::sync::atomic::Ordering;
    let (mut s, mut c, armed) = secured_through_tampering_relay().await;
    // Untouched first: the relay itself carries bytes faithfully.
    c.stream.write_all(b"pay 10 euros").await.unwrap();
    c.stream.flush().await.unwrap();
    let mut buf = [0u8; 12];
    tokio::time::timeout(DEADLINE, s.stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"pay 10 euros");
    // Both handshakes are over and nothing else is in flight: the next record is ours alone.
    armed.store(true, Ordering::SeqCst);
    c.stream.write_all(b"pay 99 euros").await.unwrap();
    c.stream.flush().await.unwrap();
    let mut buf = [0u8; 64];
    let e = tokio::time::timeout(DEADLINE, s.stream.read(&mut buf))
        .await
        .expect("an answer, not a hang")
        .expect_err("a changed record is not delivered");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("decrypt"), "{e}");
}

/// A peer whose connection ends without `close_notify` gives an error, not a clean end of
/// stream (a truncation attack looks exactly like that); with `close_notify` the end is
/// clean.
#[tokio::test]
async fn an_end_without_close_notify_is_an_error_and_a_clean_close_is_not() {
    let (mut s, c, _) = secured_through_tampering_relay().await;
    drop(c); // closes the socket without close_notify
    let mut buf = [0u8; 16];
    let e = tokio::time::timeout(DEADLINE, s.stream.read(&mut buf))
        .await
        .expect("an answer, not a hang")
        .expect_err("truncation is an error");
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");

    let (mut s, mut c, _) = secured_through_tampering_relay().await;
    c.stream.write_all(b"last words").await.unwrap();
    c.stream.shutdown().await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(DEADLINE, s.stream.read_to_end(&mut all))
        .await
        .expect("an answer, not a hang")
        .expect("close_notify is a clean end");
    assert_eq!(all, b"last words");
}

/// `openssl s_server` asks for key update after key update (`K`), with no application data
/// between them: after 32 in a row our end gives up with an error instead of answering each
/// one for ever (each answer costs key derivations and a record: a cheap flood for the
/// peer, and reachable before the native handshake authenticates anyone).
#[tokio::test]
async fn a_flood_of_key_update_requests_from_openssl_is_cut_off() {
    const FLOOD: usize = 40;
    let (_dir, cert_path, key_path, pin) = openssl_identity();
    let (_server, mut commands, mut out, port) =
        openssl_s_server(&cert_path, &key_path, &["-msg"]).await;
    let stream = TcpStream::connect(loopback(port)).await.unwrap();
    let mut secured = tokio::time::timeout(
        DEADLINE,
        TlsConfig::client_pinned(pin, None)
            .unwrap()
            .secure(stream, Role::Client),
    )
    .await
    .unwrap()
    .unwrap();
    // Our end reads (and answers) whatever comes, until the connection ends.
    let mut reader = tokio::spawn(async move {
        let mut buf = [0u8; 256];
        loop {
            match secured.stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    });
    let mut taken = 0;
    let mut outcome = None;
    for _ in 0..FLOOD {
        // s_server takes a command only when it arrives alone in one read: one at a time.
        commands.write_all(b"K\n").await.unwrap();
        let next_taken = async {
            while let Some(line) = out.next_line().await.unwrap() {
                if line.starts_with("SSL_do_handshake") {
                    return true;
                }
            }
            false
        };
        tokio::select! {
            r = &mut reader => {
                outcome = Some(r.unwrap());
                break;
            }
            t = tokio::time::timeout(DEADLINE, next_taken) => {
                assert!(matches!(t, Ok(true)), "s_server took K number {}", taken + 1);
                taken += 1;
            }
        }
    }
    let outcome = match outcome {
        Some(o) => o,
        None => tokio::time::timeout(DEADLINE, reader)
            .await
            .expect("our end gives up on the flood instead of answering for ever")
            .unwrap(),
    };
    let e = outcome.expect_err("the flood ends in an error, not a clean end");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("KeyUpdate"), "{e}");
    assert!(
        taken >= 32,
        "only {taken} key updates were sent before the error"
    );
}

/// Accepts any server certificate: the flooding client below is the attacker, who has no
/// reason to check whom it floods.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        // Never called: the client speaks TLS 1.3 only.
        self.verify_tls13_signature(message, cert, signature)
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Completes TLS with the listener on `port`, then sends `KeyUpdate(update_requested)`
/// after `KeyUpdate` and nothing else (no native handshake message, no reads), until the
/// server ends the connection or `max` were sent. Returns how many went out and whether the
/// server then ended the connection (end of file, reset or an alert) within the deadline.
fn flood_key_updates(port: u16, max: usize) -> (usize, bool) {
    use std::io::Read;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("pv-launch").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = std::net::TcpStream::connect(loopback(port)).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    let mut sent = 0;
    while sent < max {
        conn.refresh_traffic_keys().unwrap();
        if conn.write_tls(&mut sock).is_err() {
            break;
        }
        sent += 1;
    }
    // The server's answer: whatever it wrote, then the end. A timeout means it is still
    // waiting (or still answering): not ended.
    let mut buf = [0u8; 4096];
    let ended = loop {
        match sock.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (sent, ended)
}

/// A client that completes TLS with the connection manager's listener and then, before
/// authenticating, floods it with key update requests: the server ends that connection
/// after a bounded number (rustls's 32 in a row) instead of answering for ever, reports it
/// as a rejected peer, and keeps serving the next client.
#[tokio::test]
async fn a_key_update_flood_before_authentication_ends_that_connection_only() {
    let token = Token::generate();
    let id = ServerIdentity::generate().unwrap();
    let server = pv_transport::ConnectionManager::new(
        pv_transport::ConnectionMode::Multiple,
        native(&token).with_tls(TlsConfig::server(&id, None).unwrap()),
    );
    let listener = Listener::bind(loopback(0), None).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut incoming = server.accept_clients(listener);

    const FLOOD: usize = 10_000;
    let flood = tokio::task::spawn_blocking(move || flood_key_updates(port, FLOOD));
    let rejected = tokio::time::timeout(DEADLINE, incoming.next())
        .await
        .expect("the flooded connection is given up within the deadline")
        .expect("the listener is still open");
    let rejected = match rejected {
        Err(r) => r,
        Ok(_) => panic!("a client that never authenticated was accepted"),
    };
    let why = rejected.error.to_string();
    assert!(why.contains("TooManyKeyUpdateRequests"), "{why}");
    let (sent, ended) = tokio::time::timeout(DEADLINE * 2, flood)
        .await
        .unwrap()
        .unwrap();
    assert!(ended, "the server did not end the flooded connection");
    assert!(
        sent < FLOOD,
        "all {sent} key updates went out without the server ending it"
    );

    // The listener still serves an honest client.
    let client = pv_transport::ConnectionManager::new(
        pv_transport::ConnectionMode::Single,
        native(&token).with_tls(TlsConfig::client_pinned(id.fingerprint(), None).unwrap()),
    );
    let (accepted, dialled) = tokio::join!(
        tokio::time::timeout(DEADLINE, incoming.next()),
        client.connect_to_remote(
            "127.0.0.1",
            port,
            RetryPolicy::new(ConnectTimeout::Once),
            |_, _, _| {}
        )
    );
    let accepted = accepted.unwrap().unwrap().unwrap();
    echo_round_trip(accepted, dialled.unwrap()).await;
}
