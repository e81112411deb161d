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
    let err = refused_token_file(&path).await;
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

/// Reads the server's stdout until a line starting with `prefix` (within [`WAIT`]).
async fn line_starting(
    stdout: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    prefix: &str,
) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            let line = stdout
                .next_line()
                .await
                .unwrap()
                .expect("stdout closed early");
            if line.starts_with(prefix) {
                return line;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no line starting {prefix:?} within {WAIT:?}"))
}

/// Starts the demo server with `env`, the given arguments and a command run after start
/// that reports whether `PV_LAUNCH_TOKEN` reached it; returns (server, child's report,
/// ready line) once both arrived.
async fn start_reporting(
    args: &[&str],
    env: Option<&str>,
) -> (
    tokio::process::Child,
    String,
    pv_transport::launch::ReadyLine,
) {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = tokio::process::Command::new(workspace_bin("pv-demo-server"));
    cmd.args(args)
        .args([
            "--run-after-start",
            "echo \"child-sees-token=${PV_LAUNCH_TOKEN-unset}\"",
        ])
        .env_remove("PV_LAUNCH_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(hex) = env {
        cmd.env("PV_LAUNCH_TOKEN", hex);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let report = line_starting(&mut stdout, "child-sees-token=").await;
    let ready = line_starting(&mut stdout, "pv-launch-ready").await;
    let ready = pv_transport::launch::ReadyLine::parse(&ready)
        .unwrap()
        .unwrap();
    (child, report, ready)
}

/// The token in `PV_LAUNCH_TOKEN` is used and then gone from the environment: a process the
/// server starts afterwards does not inherit it. (`/proc/PID/environ` cannot show this: it
/// keeps the environment the process started with.)
#[tokio::test]
async fn the_environment_token_is_used_and_not_inherited_by_the_servers_children() {
    let token = Token::generate();
    let (mut child, report, ready) =
        start_reporting(&["--server-port", "0"], Some(&token.to_hex())).await;
    assert_eq!(report, "child-sees-token=unset");
    // The server did take the token it removed: a client holding it gets in.
    echo_once_and_see_it_exit(&token, ready.port, &mut child).await;
}

/// A client with `token` gets in on `port`, bytes echo, and once it leaves the
/// (single-client) server exits 0.
async fn echo_once_and_see_it_exit(token: &Token, port: u16, server: &mut tokio::process::Child) {
    let m = ConnectionManager::new(
        ConnectionMode::Single,
        ConnectionConfig::new(NativeHandshake::new(token.clone())),
    );
    let mut conn = connect(&m, port).await;
    echo(&mut conn, b"the token got it in", WAIT).await;
    drop(conn);
    let status = tokio::time::timeout(WAIT, server.wait()).await.unwrap();
    assert_eq!(status.unwrap().code(), Some(0));
}

/// A 0600 token file is accepted (the ready line comes and its token lets a client in),
/// and a symbolic link to a file others can read is refused by what the link reaches.
#[tokio::test]
async fn a_private_token_file_is_accepted_and_a_link_to_an_open_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token = Token::generate();
    let private = dir.path().join("private");
    std::fs::write(&private, token.to_hex()).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = private.to_str().unwrap();
    // An environment token beside the file is still removed (the file wins).
    let other = Token::generate().to_hex();
    let (mut child, report, ready) =
        start_reporting(&["--server-port", "0", "--token-file", path], Some(&other)).await;
    assert_eq!(report, "child-sees-token=unset");
    echo_once_and_see_it_exit(&token, ready.port, &mut child).await;

    let open = dir.path().join("open");
    std::fs::write(&open, token.to_hex()).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&open, &link).unwrap();
    let err = refused_token_file(&link).await;
    assert!(
        err.contains("--token-file") && err.contains("mode 644"),
        "{err}"
    );
}

/// Starts the demo server with `--token-file path`, expects it to fail (exit 1); its stderr.
async fn refused_token_file(path: &std::path::Path) -> String {
    let out = tokio::process::Command::new(workspace_bin("pv-demo-server"))
        .args(["--server-port", "0", "--token-file"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}
