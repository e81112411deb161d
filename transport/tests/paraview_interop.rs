//! The ParaView-compatible handshake against a real `pvserver` (Debian 12's `paraview`
//! package, 5.11.0): we dial a listening pvserver, and we accept a reverse-connecting one.
//!
//! pvserver needs no display for the handshake. Debian's 5.11 has no `--bind-address` (that
//! came in 5.13), so the forward pvserver listens on all interfaces for the few seconds the
//! test runs; we only ever connect to 127.0.0.1.
//!
//! Skipped, loudly, when pvserver is not installed (`apt-get install --no-install-recommends
//! paraview`; `ci/install-deps` does it). Set `PVSERVER` to use another binary, and
//! `PVSERVER_HASH` to its VTK hash when it is not Debian 12's.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pv_transport::handshake::paraview::{ErrorCode, ParaViewError, ParaViewHandshake, VtkHash};
use pv_transport::handshake::{HandshakeContext, HandshakeError, PeerInfo, Role, Side, perform};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdout, Command};

/// How long pvserver may take to start (it loads ~200 shared libraries; ~2 s here).
const STARTUP: Duration = Duration::from_secs(60);
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(20);

/// The pvserver binary, or `None` (after saying so) when it is not installed.
fn pvserver() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PVSERVER") {
        return Some(PathBuf::from(path));
    }
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("pvserver"))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but pvserver is not installed (ci/apt-packages.txt: paraview)"
        );
        eprintln!(
            "SKIPPED: pvserver not installed (apt-get install --no-install-recommends paraview)"
        );
    }
    found
}

/// The hash of the pvserver under test: Debian 12's unless `PVSERVER_HASH` says otherwise.
fn server_hash() -> VtkHash {
    match std::env::var("PVSERVER_HASH") {
        Ok(hash) => hash
            .parse()
            .expect("PVSERVER_HASH is 32 lowercase hex digits"),
        Err(_) => VtkHash::DEBIAN_12_PARAVIEW_5_11,
    }
}

fn handshake(connect_id: i32, hash: VtkHash) -> ParaViewHandshake {
    ParaViewHandshake::builder()
        .version(5, 11)
        .connect_id(connect_id)
        .vtk_hash(hash)
        .build()
        .unwrap()
}

/// A running pvserver, killed when the test ends however it ends.
struct PvServer {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Everything it printed on stderr so far, for failure messages.
    stderr: Arc<Mutex<String>>,
}

impl PvServer {
    fn start(binary: &PathBuf, args: &[String]) -> PvServer {
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        tokio::spawn(collect(child.stderr.take().unwrap(), Arc::clone(&stderr)));
        PvServer {
            child,
            stdout,
            stderr,
        }
    }

    /// Reads stdout until a line containing `wanted`, within `deadline`; returns that line.
    async fn wait_for_line(&mut self, wanted: &str, deadline: Duration) -> String {
        let found = tokio::time::timeout(deadline, async {
            while let Some(line) = self.stdout.next_line().await.unwrap() {
                if line.contains(wanted) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => panic!(
                "pvserver exited before printing {wanted:?}; stderr:\n{}",
                self.stderr()
            ),
            Err(_) => panic!(
                "pvserver did not print {wanted:?} within {deadline:?}; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// Waits for pvserver to exit by itself.
    async fn wait_for_exit(&mut self, deadline: Duration) {
        if tokio::time::timeout(deadline, self.child.wait())
            .await
            .is_err()
        {
            panic!(
                "pvserver still runs after {deadline:?}; stderr:\n{}",
                self.stderr()
            );
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for PvServer {
    fn drop(&mut self) {
        // SIGKILL; tokio reaps the child. (`kill_on_drop` would too: this says it out loud.)
        let _ = self.child.start_kill();
    }
}

async fn collect(stream: impl AsyncRead + Unpin, into: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut text = into.lock().unwrap();
        text.push_str(&line);
        text.push('\n');
    }
}

async fn dial(port: u16, hs: &ParaViewHandshake) -> Result<PeerInfo, HandshakeError> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let ctx = HandshakeContext {
        side: Side::Dialler,
        role: Role::Client,
        tls_binding: None,
        admission: None,
    };
    perform(hs, &mut socket, ctx, HANDSHAKE_DEADLINE).await
}

/// Forward: pvserver listens, we dial. A wrong hash, connect id, version, backend and an
/// unparsable string are each refused with the expected error (pvserver keeps listening
/// after each), then the right handshake connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paraview_dial_a_listening_pvserver() {
    let Some(binary) = pvserver() else { return };
    let mut server = PvServer::start(
        &binary,
        &["--server-port=0".into(), "--connect-id=4242".into()],
    );
    // "Accepting connection(s): <hostname>:<port>", the port the kernel chose.
    let line = server
        .wait_for_line("Accepting connection(s):", STARTUP)
        .await;
    let port: u16 = line.rsplit(':').next().unwrap().trim().parse().unwrap();

    // 1. Another build's hash: pvserver answers with its own before it hangs up, so the
    //    error names the hash this pvserver needs.
    let other = if server_hash() == VtkHash::UPSTREAM_PARAVIEW_5_11 {
        VtkHash::UPSTREAM_PARAVIEW_6
    } else {
        VtkHash::UPSTREAM_PARAVIEW_5_11
    };
    match dial(port, &handshake(4242, other)).await {
        Err(HandshakeError::ParaView(ParaViewError::HashMismatch { ours, theirs })) => {
            assert_eq!(ours, other);
            assert_eq!(theirs, server_hash().as_str(), "this pvserver's VTK hash");
        }
        other => panic!(
            "expected a hash mismatch, got {other:?}; stderr:\n{}",
            server.stderr()
        ),
    }

    // 2. The right hash, the wrong connect id: code 3.
    match dial(port, &handshake(1, server_hash())).await {
        Err(HandshakeError::ParaView(e)) => {
            assert_eq!(e.code(), Some(ErrorCode::DifferentConnectIds), "{e}");
            assert!(matches!(
                e,
                ParaViewError::ConnectIdMismatch {
                    ours_id: 1,
                    theirs: None,
                    ..
                }
            ));
        }
        other => panic!(
            "expected code 3, got {other:?}; stderr:\n{}",
            server.stderr()
        ),
    }

    // 3. pvserver's own classification of the other differences: another version (2),
    //    another backend (4), a string its pattern cannot parse (5: a negative id).
    let base = || {
        ParaViewHandshake::builder()
            .vtk_hash(server_hash())
            .connect_id(4242)
    };
    for (hs, code) in [
        (base().version(5, 13), ErrorCode::DifferentVersions),
        (
            base().rendering_backend("egl"),
            ErrorCode::DifferentRenderingBackends,
        ),
        (base().connect_id(-4242), ErrorCode::Unknown),
    ] {
        match dial(port, &hs.build().unwrap()).await {
            Err(HandshakeError::ParaView(e)) => assert_eq!(e.code(), Some(code), "{e}"),
            other => panic!(
                "expected {code:?}, got {other:?}; stderr:\n{}",
                server.stderr()
            ),
        }
    }

    // 4. Everything right.
    let peer = dial(port, &handshake(4242, server_hash()))
        .await
        .unwrap_or_else(|e| panic!("{e}; stderr:\n{}", server.stderr()));
    assert_eq!(
        peer,
        PeerInfo {
            handshake: "paraview",
            protocol: 511,
            role: Role::Server,
            connect_id: 4242
        }
    );
    server.wait_for_line("Client connected.", STARTUP).await;
    // Our socket is gone (dropped in `dial`): a single-client pvserver exits.
    server.wait_for_exit(STARTUP).await;
}

/// Reverse: we listen, pvserver dials us. A pvserver with the wrong connect id is refused
/// with code 3 (and gives up); one with the right id is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paraview_accept_a_reverse_connecting_pvserver() {
    let Some(binary) = pvserver() else { return };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let ours = handshake(77, server_hash());
    let ctx = HandshakeContext {
        side: Side::Acceptor,
        role: Role::Client,
        tls_binding: None,
        admission: None,
    };
    let reverse = |connect_id: i32| {
        vec![
            "--reverse-connection".to_owned(),
            "--client-host=127.0.0.1".to_owned(),
            format!("--server-port={port}"),
            format!("--connect-id={connect_id}"),
        ]
    };

    // The wrong connect id: we see its string, answer 3, and the pvserver exits.
    let mut wrong = PvServer::start(&binary, &reverse(78));
    let (mut socket, _) = tokio::time::timeout(STARTUP, listener.accept())
        .await
        .unwrap_or_else(|_| panic!("no reverse connection; stderr:\n{}", wrong.stderr()))
        .unwrap();
    match perform(&ours, &mut socket, ctx, HANDSHAKE_DEADLINE).await {
        Err(HandshakeError::ParaView(ParaViewError::ConnectIdMismatch {
            ours_id, theirs, ..
        })) => {
            assert_eq!(ours_id, 77);
            assert_eq!(
                theirs.as_deref(),
                Some("paraview-5.11.connect_id.78.renderingbackend.opengl2")
            );
        }
        other => panic!(
            "expected code 3, got {other:?}; stderr:\n{}",
            wrong.stderr()
        ),
    }
    drop(socket);
    wrong.wait_for_exit(STARTUP).await;

    // The right one.
    let mut server = PvServer::start(&binary, &reverse(77));
    server
        .wait_for_line(
            "Connecting to client (reverse connection requested)",
            STARTUP,
        )
        .await;
    let (mut socket, _) = tokio::time::timeout(STARTUP, listener.accept())
        .await
        .unwrap_or_else(|_| panic!("no reverse connection; stderr:\n{}", server.stderr()))
        .unwrap();
    let peer = perform(&ours, &mut socket, ctx, HANDSHAKE_DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}; stderr:\n{}", server.stderr()));
    assert_eq!(
        peer,
        PeerInfo {
            handshake: "paraview",
            protocol: 511,
            role: Role::Server,
            connect_id: 77
        }
    );
    server.wait_for_line("Client connected.", STARTUP).await;
    drop(socket);
    server.wait_for_exit(STARTUP).await;
}
