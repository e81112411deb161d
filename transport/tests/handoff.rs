//! Handing connections to client programs, over real loopback sockets and real processes:
//! the socket table seen live (listeners, peer owners, waiting without connecting), bytes
//! both ways through a loopback endpoint to a handshaken server connection (plain and TLS)
//! and through a Unix socket, half-close in both directions, a client's reset ending the
//! relay with an error, a client of another uid refused while ours is served, the
//! data + render pair, and dialling a reverse client only when its port is ours.
//!
//! The other uid is `nobody` (65534), reached with `setpriv` (util-linux) from root; these
//! tests need root and `/usr/bin/python3`. Without them they say so and skip, except under
//! `CI=true`, where a missing tool fails.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use pv_transport::handoff::{self, HandoffError, LoopbackEndpoint, Refused, Transferred};
use pv_transport::handshake::native::NativeHandshake;
use pv_transport::handshake::{Role, Side};
use pv_transport::socket_table::{
    self, WaitListeningError, effective_uid, is_listening, listener_uids, peer_uid, wait_listening,
};
use pv_transport::{Connection, ConnectionConfig, Listener, ServerIdentity, TlsConfig, Token};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::process::Command;
use tokio::sync::mpsc;

/// Bound on every wait for something that should happen.
const WAIT: Duration = Duration::from_secs(10);
const NOBODY: u32 = 65534;

fn lo(port: u16) -> SocketAddr {
    pv_transport::loopback(port)
}

/// Whether the programs and privileges for the other-uid tests are here; under `CI=true`
/// their absence is a failure, never a skip.
fn other_uid_possible() -> bool {
    let mut missing = Vec::new();
    for tool in ["/usr/bin/setpriv", "/usr/bin/python3", "/bin/bash"] {
        if !Path::new(tool).exists() {
            missing.push(tool.to_owned());
        }
    }
    if effective_uid().unwrap() != 0 {
        missing.push("root (to run a client as uid 65534)".to_owned());
    }
    if missing.is_empty() {
        return true;
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "missing under CI: {missing:?}"
    );
    eprintln!("skipped: missing {missing:?}");
    false
}

/// A command run as uid/gid 65534 with no supplementary groups, from `/`.
fn as_nobody(program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("/usr/bin/setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        program,
    ])
    .args(args)
    .current_dir("/")
    .env("LC_ALL", "C")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    cmd
}

/// A handshaken connection over loopback: (the server's end, the launcher's end), plain or
/// inside pinned TLS, native handshake.
async fn server_connection(tls: bool) -> (Connection, Connection) {
    let token = Token::generate();
    let base = || ConnectionConfig::new(NativeHandshake::new(token.clone()));
    let (server, launcher) = if tls {
        let id = ServerIdentity::generate().unwrap();
        (
            base().with_tls(TlsConfig::server(&id, None).unwrap()),
            base().with_tls(TlsConfig::client_pinned(id.fingerprint(), None).unwrap()),
        )
    } else {
        (base(), base())
    };
    let listener = Listener::bind(lo(0), None).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (d, a) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (d, (a, peer)) = (d.unwrap(), a.unwrap());
    let (s, l) = tokio::join!(
        Connection::establish(a, Side::Acceptor, Role::Server, &server, Some(peer)),
        Connection::establish(d, Side::Dialler, Role::Client, &launcher, None),
    );
    let (s, l) = (s.unwrap(), l.unwrap());
    assert_eq!(s.tls().is_some(), tls);
    (s, l)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn no_refusal(r: &Refused) {
    panic!("nobody else connects in this test: {r}");
}

// ---- the socket table, live ----

#[tokio::test]
async fn a_listener_is_seen_after_listen_and_not_after_bind_only() {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(lo(0)).unwrap();
    let addr = socket.local_addr().unwrap();
    assert!(!is_listening(addr).unwrap(), "bound only");
    let listener = socket.listen(1).unwrap();
    assert!(is_listening(addr).unwrap());
    assert_eq!(listener_uids(addr).unwrap(), [effective_uid().unwrap()]);
    // A connection to 127.0.0.1 also reaches [::ffff:127.0.0.1]; another port nothing.
    assert!(
        is_listening(
            format!("[::ffff:127.0.0.1]:{}", addr.port())
                .parse()
                .unwrap()
        )
        .unwrap()
    );
    drop(listener);
    assert!(!is_listening(addr).unwrap(), "closed");
}

#[tokio::test]
async fn a_dual_stack_wildcard_listener_counts_for_ipv4_loopback() {
    let listener = TcpListener::bind("[::]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    assert!(is_listening(lo(port)).unwrap());
    assert!(is_listening(format!("[::1]:{port}").parse().unwrap()).unwrap());
    // And the table's answer is right: a connection to 127.0.0.1 does reach it.
    let (c, a) = tokio::join!(TcpStream::connect(lo(port)), listener.accept());
    let (c, (a, peer)) = (c.unwrap(), a.unwrap());
    // The accepted socket is IPv6 and sees the mapped form; the table answers both views.
    assert_eq!(
        peer_uid(a.local_addr().unwrap(), peer).unwrap(),
        Some(effective_uid().unwrap())
    );
    drop(c);
}

#[tokio::test]
async fn the_peer_of_a_connection_from_this_process_is_our_uid() {
    let me = effective_uid().unwrap();
    let listener = TcpListener::bind(lo(0)).await.unwrap();
    let (c, a) = tokio::join!(
        TcpStream::connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    let (c, (a, peer)) = (c.unwrap(), a.unwrap());
    assert_eq!(peer, c.local_addr().unwrap());
    // From the acceptor's view and from the dialler's.
    assert_eq!(peer_uid(a.local_addr().unwrap(), peer).unwrap(), Some(me));
    assert_eq!(
        peer_uid(c.local_addr().unwrap(), c.peer_addr().unwrap()).unwrap(),
        Some(me)
    );
    // A made-up peer has no entry.
    assert_eq!(peer_uid(a.local_addr().unwrap(), lo(1)).unwrap(), None);
}

#[tokio::test]
async fn wait_listening_returns_once_a_listener_exists_and_never_connects() {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(lo(0)).unwrap();
    let addr = socket.local_addr().unwrap();
    let waiting = tokio::spawn(wait_listening(addr, WAIT));
    tokio::task::yield_now().await;
    let listener = socket.listen(1).unwrap();
    let started = tokio::time::Instant::now();
    waiting.await.unwrap().unwrap();
    assert!(started.elapsed() < WAIT);
    // No connection is pending: a probe would have left one in the accept queue.
    let listener = listener.into_std().unwrap();
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("wait_listening connected: {other:?}"),
    }
}

#[tokio::test]
async fn wait_listening_times_out_with_a_clear_error() {
    // Bound but not listening: the port is ours, nobody can listen on it meanwhile.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(lo(0)).unwrap();
    let addr = socket.local_addr().unwrap();
    let timeout = Duration::from_millis(300);
    let err = wait_listening(addr, timeout).await.unwrap_err();
    match &err {
        WaitListeningError::TimedOut {
            addr: a,
            waited,
            polls,
        } => {
            assert_eq!(*a, addr);
            assert!(*waited >= timeout, "{waited:?}");
            assert!(*waited < WAIT, "{waited:?}");
            // 5, 10, 20, 40, 80, 100 ms... : several looks, not a busy loop.
            assert!((2..=9).contains(polls), "{polls}");
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&addr.to_string()), "{msg}");
    assert!(msg.contains("nothing is listening"), "{msg}");
    assert!(msg.contains(socket_table::TCP4_TABLE), "{msg}");
}

// ---- the loopback endpoint ----

/// An echo server on the server's end: everything read is written back; at end of file its
/// writing is shut down too.
fn echo(server: Connection) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(server);
        let n = tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
        n
    })
}

/// Write `data` on `w` and half-close it (the server sees end of file, echoes the rest and
/// closes) while reading `r` to its end, within [`WAIT`]: what came back.
async fn send_and_read_back(
    mut r: impl AsyncRead + Unpin,
    mut w: impl AsyncWrite + Unpin + Send + 'static,
    data: &[u8],
) -> Vec<u8> {
    let to_send = data.to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&to_send).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, r.read_to_end(&mut back))
        .await
        .expect("echo within the bound")
        .unwrap();
    writer.await.unwrap();
    back
}

#[tokio::test]
async fn bytes_flow_both_ways_to_a_handshaken_server_plain_and_tls() {
    for tls in [false, true] {
        let (server, launcher) = server_connection(tls).await;
        // Plain, the relay moves the bytes in the kernel, from the connection's own socket.
        assert_eq!(launcher.tcp_socket().is_some(), !tls);
        let endpoint = LoopbackEndpoint::bind(0).await.unwrap();
        let addr = endpoint.local_addr();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
        let served = tokio::spawn(endpoint.serve(launcher, WAIT, no_refusal));
        let echoed = echo(server);

        let data = pattern(3 * 1024 * 1024 + 17, tls as u8);
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        let back = send_and_read_back(r, w, &data).await;
        assert!(back == data, "tls={tls}: the echo differs");
        assert_eq!(echoed.await.unwrap(), data.len() as u64);
        let moved = served.await.unwrap().unwrap();
        assert_eq!(
            moved,
            Transferred {
                client_to_server: data.len() as u64,
                server_to_client: data.len() as u64,
            },
            "tls={tls}"
        );
    }
}

#[tokio::test]
async fn a_half_close_from_the_server_leaves_the_client_sending() {
    for tls in [false, true] {
        let (mut server, launcher) = server_connection(tls).await;
        let endpoint = LoopbackEndpoint::bind(0).await.unwrap();
        let addr = endpoint.local_addr();
        let served = tokio::spawn(endpoint.serve(launcher, WAIT, no_refusal));
        let server_side = tokio::spawn(async move {
            server.write_all(b"hello").await.unwrap();
            server.shutdown().await.unwrap();
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(WAIT, client.read_to_end(&mut got))
            .await
            .expect("the server's end of file reaches the client")
            .unwrap();
        assert_eq!(got, b"hello");
        // Our writing direction is still open.
        client.write_all(b"more data").await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(server_side.await.unwrap(), b"more data", "tls={tls}");
        assert_eq!(
            served.await.unwrap().unwrap(),
            Transferred {
                client_to_server: 9,
                server_to_client: 5
            }
        );
    }
}

#[tokio::test]
async fn a_unix_socket_client_is_relayed_both_ways_to_a_plain_server() {
    // The private relay socket's client: a Unix stream socket, relayed in the kernel too.
    let (server, mut launcher) = server_connection(false).await;
    let echoed = echo(server);
    let (mut to_program, program) = tokio::net::UnixStream::pair().unwrap();
    let relayed = tokio::spawn(async move { handoff::relay(&mut to_program, &mut launcher).await });
    let data = pattern(5 * 1024 * 1024 + 3, 7);
    let (r, w) = program.into_split();
    let back = send_and_read_back(r, w, &data).await;
    assert!(back == data, "the echo differs");
    assert_eq!(echoed.await.unwrap(), data.len() as u64);
    let n = data.len() as u64;
    assert_eq!(
        relayed.await.unwrap().unwrap(),
        Transferred {
            client_to_server: n,
            server_to_client: n
        }
    );
}

#[tokio::test]
async fn a_client_that_resets_ends_the_relay_with_an_error() {
    for tls in [false, true] {
        let (mut server, launcher) = server_connection(tls).await;
        let endpoint = LoopbackEndpoint::bind(0).await.unwrap();
        let addr = endpoint.local_addr();
        let served = tokio::spawn(endpoint.serve(launcher, WAIT, no_refusal));
        // The server streams until its connection fails.
        let streaming = tokio::spawn(async move {
            let chunk = vec![0x42u8; 64 * 1024];
            while server.write_all(&chunk).await.is_ok() {}
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut first = [0u8; 1024];
        client.read_exact(&mut first).await.unwrap();
        // A reset, not an orderly close: the relay's next write to it fails.
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        let ended = tokio::time::timeout(WAIT, served)
            .await
            .expect("the relay ends within the bound")
            .unwrap();
        match ended {
            Err(HandoffError::Io { what, .. }) => assert!(what.contains("relaying"), "{what}"),
            other => panic!("tls={tls}: a reset client ended the relay with {other:?}"),
        }
        tokio::time::timeout(WAIT, streaming)
            .await
            .expect("the server's writing fails once the relay is gone")
            .unwrap();
    }
}

#[tokio::test]
async fn the_endpoint_closes_once_its_client_is_in() {
    let endpoint = LoopbackEndpoint::bind(0).await.unwrap();
    let addr = endpoint.local_addr();
    let (first, accepted) = tokio::join!(
        TcpStream::connect(addr),
        endpoint.accept_own(WAIT, no_refusal)
    );
    let (first, accepted) = (first.unwrap(), accepted.unwrap());
    assert_eq!(accepted.peer_addr().unwrap(), first.local_addr().unwrap());
    let second = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(second.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn no_client_ends_the_wait_with_an_error_at_the_deadline() {
    let endpoint = LoopbackEndpoint::bind(0).await.unwrap();
    let addr = endpoint.local_addr();
    let timeout = Duration::from_millis(200);
    let err = endpoint.accept_own(timeout, no_refusal).await.unwrap_err();
    match &err {
        HandoffError::NoClient {
            endpoint,
            waited,
            refused,
            own_uid,
        } => {
            assert_eq!(*endpoint, addr);
            assert!(*waited >= timeout && *waited < WAIT, "{waited:?}");
            assert_eq!(*refused, 0);
            assert_eq!(*own_uid, effective_uid().unwrap());
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn another_users_client_is_refused_and_ours_is_then_served() {
    if !other_uid_possible() {
        return;
    }
    let (mut server, launcher) = server_connection(true).await;
    // The server speaks first: a wrongly admitted client would read this.
    server.write_all(b"for our user only").await.unwrap();
    let endpoint = LoopbackEndpoint::bind(0).await.unwrap();
    let addr = endpoint.local_addr();
    let (tx, mut refusals) = mpsc::unbounded_channel();
    let served = tokio::spawn(endpoint.serve(launcher, WAIT, move |r: &Refused| {
        eprintln!("{r}");
        tx.send(*r).unwrap();
    }));

    // A client of uid 65534 dials and reads what it gets.
    let script = format!("exec 3<>/dev/tcp/127.0.0.1/{} && cat <&3", addr.port());
    let intruder = as_nobody("/bin/bash", &["-c", &script]).spawn().unwrap();
    let refused = tokio::time::timeout(WAIT, refusals.recv())
        .await
        .expect("the refusal is reported")
        .unwrap();
    assert_eq!(refused.uid, Some(NOBODY));
    assert_eq!(refused.endpoint, addr);
    assert_eq!(refused.own_uid, effective_uid().unwrap());
    assert!(refused.peer.ip().is_loopback());
    let out = tokio::time::timeout(WAIT, intruder.wait_with_output())
        .await
        .expect("the refused client is closed at once")
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "the refused client read {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reset"),
        "a reset, not an orderly close: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!served.is_finished(), "still waiting for our own client");

    // Our own client is then served.
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut greeting = [0u8; 17];
    tokio::time::timeout(WAIT, client.read_exact(&mut greeting))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&greeting, b"for our user only");
    client.write_all(b"bye").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = [0u8; 3];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"bye");
    // An orderly TLS close (close_notify): dropping without it is a truncation, which the
    // relay reports as an error.
    server.shutdown().await.unwrap();
    let moved = served.await.unwrap().unwrap();
    assert_eq!(moved.client_to_server, 3);
    assert_eq!(moved.server_to_client, 17);
    assert!(refusals.try_recv().is_err(), "one refusal only");
}

#[tokio::test]
async fn a_data_and_render_pair_is_served_on_two_endpoints() {
    let (data_server, data_launcher) = server_connection(false).await;
    let (render_server, render_launcher) = server_connection(true).await;
    let data_ep = LoopbackEndpoint::bind(0).await.unwrap();
    let render_ep = LoopbackEndpoint::bind(0).await.unwrap();
    let (data_addr, render_addr) = (data_ep.local_addr(), render_ep.local_addr());
    assert_ne!(data_addr, render_addr);
    let served = tokio::spawn(handoff::serve_all(
        vec![(data_ep, data_launcher), (render_ep, render_launcher)],
        WAIT,
        Arc::new(no_refusal),
    ));
    let (e1, e2) = (echo(data_server), echo(render_server));
    // The render connection first, the data one second: each endpoint has its own client.
    for (addr, len) in [(render_addr, 70_000), (data_addr, 1000)] {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let data = pattern(len, len as u8);
        c.write_all(&data).await.unwrap();
        c.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(WAIT, c.read_to_end(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert!(back == data, "{addr}");
    }
    let results = served.await.unwrap();
    let counts: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(
        counts[0].client_to_server, 1000,
        "results in the order given"
    );
    assert_eq!(counts[1].server_to_client, 70_000);
    assert_eq!((e1.await.unwrap(), e2.await.unwrap()), (1000, 70_000));
}

// ---- reverse: dialling a listening client ----

#[tokio::test]
async fn reverse_waits_for_our_client_then_relays_to_it() {
    // The "client program" listens (csrc://127.0.0.1:P); the launcher waits for it without
    // connecting, then dials it once the server's connection is handshaken.
    let program = TcpListener::bind(lo(0)).await.unwrap();
    let addr = program.local_addr().unwrap();
    wait_listening(addr, WAIT).await.unwrap();
    let (server, mut launcher) = server_connection(true).await;
    let echoed = echo(server);
    let (dialled, accepted) = tokio::join!(handoff::dial_client(addr), program.accept());
    let mut to_program = dialled.unwrap();
    let (mut program_end, _) = accepted.unwrap();
    let relayed = tokio::spawn(async move { handoff::relay(&mut to_program, &mut launcher).await });
    program_end.write_all(b"ping").await.unwrap();
    program_end.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, program_end.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, b"ping");
    assert_eq!(echoed.await.unwrap(), 4);
    assert_eq!(
        relayed.await.unwrap().unwrap(),
        Transferred {
            client_to_server: 4,
            server_to_client: 4
        }
    );
}

#[tokio::test]
async fn reverse_never_dials_a_port_another_user_listens_on() {
    if !other_uid_possible() {
        return;
    }
    // uid 65534 listens; after a line on stdin it tells whether a connection is pending.
    let script = "import socket, sys\n\
                  s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n\
                  print(s.getsockname()[1], flush=True)\n\
                  sys.stdin.readline(); s.setblocking(False)\n\
                  try:\n    s.accept(); print('accepted')\n\
                  except BlockingIOError:\n    print('none')\n";
    let mut squatter = as_nobody("/usr/bin/python3", &["-c", script])
        .spawn()
        .unwrap();
    let mut out = BufReader::new(squatter.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(WAIT, out.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    let addr = lo(line.trim().parse().expect("a port"));
    wait_listening(addr, WAIT).await.unwrap();
    assert_eq!(listener_uids(addr).unwrap(), [NOBODY]);
    match handoff::dial_client(addr).await {
        Err(HandoffError::NotOurs {
            addr: a,
            owners,
            own_uid,
        }) => {
            assert_eq!((a, owners, own_uid), (addr, vec![NOBODY], 0));
        }
        other => panic!("dialled another user's port: {other:?}"),
    }
    let mut stdin = squatter.stdin.take().unwrap();
    stdin.write_all(b"check\n").await.unwrap();
    line.clear();
    tokio::time::timeout(WAIT, out.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line.trim(), "none", "no connection reached the other user");
    squatter.wait().await.unwrap();

    // Nothing listening at all is refused the same way, with no owners.
    drop(squatter);
    match handoff::dial_client(addr).await {
        Err(HandoffError::NotOurs { owners, .. }) => assert!(owners.is_empty()),
        other => panic!("{other:?}"),
    }
}
