//! The demo server as a real process: the launch channel, every connection type, the
//! lifetime rules, TLS pinned from the ready line, and secrets kept off argv.

use std::time::Duration;

use pv_e2e::{DemoServer, echo, native_client, workspace_bin};
use pv_transport::handshake::native::NativeHandshake;
use pv_transport::{
    ConnectError, ConnectTimeout, Connection, ConnectionConfig, ConnectionManager, ConnectionMode,
    Listener, RetryPolicy, TlsConfig, Token, loopback,
};

const WAIT: Duration = Duration::from_secs(15);

fn client(token: &Token, server: &DemoServer, mode: ConnectionMode) -> ConnectionManager {
    let mut cfg = ConnectionConfig::new(NativeHandshake::new(token.clone()));
    if let Some(pin) = server.ready.tls {
        cfg = cfg.with_tls(TlsConfig::client_pinned(pin, None).unwrap());
    }
    ConnectionManager::new(mode, cfg)
}

async fn connect(m: &ConnectionManager, port: u16) -> Connection {
    m.connect_to_remote(
        "127.0.0.1",
        port,
        RetryPolicy::new(ConnectTimeout::Within(WAIT)),
        |_, _, _| {},
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn forward_single_serves_one_client_closes_its_port_and_exits_when_it_leaves() {
    for tls in [false, true] {
        let token = Token::generate();
        let args: &[&str] = if tls {
            &["--server-port", "0", "--tls"]
        } else {
            &["--server-port", "0"]
        };
        let mut server = DemoServer::start(args, &token).await;
        assert_eq!(server.ready.tls.is_some(), tls);
        let port = server.ready.port;
        let m = client(&token, &server, ConnectionMode::Single);
        let mut conn = connect(&m, port).await;
        assert_eq!(conn.tls().is_some(), tls);
        echo(&mut conn, b"bytes flow", WAIT).await;
        // The listening socket is gone once the first client is in: a second client is
        // refused by the kernel (not accepted and then failed, nor left hanging).
        let second = native_client(&token, port, Duration::from_secs(2)).await;
        match second {
            Err(ConnectError::Dial(e))
                if e.last.kind() == std::io::ErrorKind::ConnectionRefused => {}
            other => panic!("a second client was not refused: {other:?}"),
        }
        drop(conn);
        assert_eq!(server.exit_within(WAIT).await, Some(0));
    }
}

#[tokio::test]
async fn reverse_single_dials_the_waiting_client_and_exits_when_it_leaves() {
    for tls in [false, true] {
        let token = Token::generate();
        // The client listens before the server starts.
        let listener = Listener::bind(loopback(0), None).await.unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let mut args = vec![
            "--reverse-connection",
            "--client-host",
            "127.0.0.1",
            "--server-port",
            &port,
        ];
        if tls {
            args.push("--tls");
        }
        let mut server = DemoServer::start(&args, &token).await;
        let m = client(&token, &server, ConnectionMode::Single);
        let mut conn = m.wait_for_server(listener, Some(WAIT)).await.unwrap();
        assert_eq!(conn.tls().is_some(), tls);
        echo(&mut conn, b"reverse", WAIT).await;
        drop(conn);
        assert_eq!(server.exit_within(WAIT).await, Some(0));
    }
}

#[tokio::test]
async fn multi_clients_keeps_accepting_and_a_leaving_client_closes_only_its_own() {
    let token = Token::generate();
    let mut server = DemoServer::start(&["--server-port", "0", "--multi-clients"], &token).await;
    let m = client(&token, &server, ConnectionMode::Multiple);
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(connect(&m, server.ready.port).await);
    }
    drop(conns.remove(0));
    for c in &mut conns {
        echo(c, b"still served", WAIT).await;
    }
    let mut late = connect(&m, server.ready.port).await;
    echo(&mut late, b"late", WAIT).await;
    assert!(
        server.is_running(),
        "clients leaving does not end a multi-client server"
    );
    // SIGTERM ends it cleanly.
    let pid = server.child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(server.exit_within(WAIT).await, Some(0));
}

#[tokio::test]
async fn a_client_with_the_wrong_token_is_refused_and_the_server_keeps_waiting() {
    let token = Token::generate();
    let mut server = DemoServer::start(&["--server-port", "0"], &token).await;
    let wrong = client(&Token::generate(), &server, ConnectionMode::Single);
    let e = wrong
        .connect_to_remote(
            "127.0.0.1",
            server.ready.port,
            RetryPolicy::new(ConnectTimeout::Once),
            |_, _, _| {},
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("authentication failed"), "{e}");
    assert!(server.is_running());
    let m = client(&token, &server, ConnectionMode::Single);
    let mut conn = connect(&m, server.ready.port).await;
    echo(&mut conn, b"right token", WAIT).await;
}

#[tokio::test]
async fn the_token_is_not_on_the_server_command_line_or_environment() {
    let token = Token::generate();
    let server = DemoServer::start(&["--server-port", "0"], &token).await;
    let pid = server.child.id().unwrap();
    let hex = token.to_hex();
    for file in ["cmdline", "environ"] {
        let bytes = std::fs::read(format!("/proc/{pid}/{file}")).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&hex), "token found in /proc/{pid}/{file}");
    }
}

#[tokio::test]
async fn missing_or_exposed_tokens_are_clear_errors() {
    // stdin closed with no secrets line.
    let out = tokio::process::Command::new(workspace_bin("pv-demo-server"))
        .args(["--server-port", "0"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stdin closed before a secrets line"), "{err}");

    // A token file others can read is refused.
    let dir = std::env::temp_dir().join(format!("pv-e2e-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token");
    std::fs::write(&path, Token::generate().to_hex()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = tokio::process::Command::new(workspace_bin("pv-demo-server"))
        .args(["--server-port", "0", "--token-file"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);

    // A port out of range is a usage error.
    let out = tokio::process::Command::new(workspace_bin("pv-demo-server"))
        .args(["--server-port", "70000"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("70000"));
}
