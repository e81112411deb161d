//! The bridge: the helper run with `PV_ASKPASS_SOCKET`, served by this test through the
//! crate's own server-side helpers, the way the launcher serves it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{BIN, DEADLINE, helper, spawn, wait_for};
use pv_askpass::PromptKind;
use pv_askpass::bridge::{self, Reply, Request};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pvab")
        .tempdir_in("/tmp")
        .expect("tempdir")
}

/// Serves one request on a private socket in a background thread.
fn serve(
    dir: &Path,
    reply: impl FnOnce(&Request) -> Reply + Send + 'static,
) -> (PathBuf, JoinHandle<Request>) {
    let (listener, path) = bridge::bind_private(&dir.join("bridge"), "askpass.sock").expect("bind");
    let handle = std::thread::spawn(move || bridge::serve_one(&listener, reply).expect("serve"));
    (path, handle)
}

fn run_helper(socket: &Path, prompt: &str, extra_env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = helper(None);
    cmd.env(bridge::SOCKET_ENV, socket).arg(prompt);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let (status, out, err) = spawn("pv-askpass", &mut cmd).finish(DEADLINE);
    (status.code().unwrap_or(-1), out, err)
}

#[test]
fn answer_comes_back_on_stdout() {
    let dir = tempdir();
    let (socket, server) = serve(dir.path(), |_| Reply::answer("bridge s3cret@"));
    let (rc, out, err) = run_helper(&socket, "alice@example.org's password: ", &[]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out, "bridge s3cret@\n");
    assert!(!err.contains("s3cret"));
    let request = server.join().unwrap();
    assert_eq!(request.v, bridge::PROTOCOL_VERSION);
    assert_eq!(request.kind, PromptKind::Password);
    assert!(!request.echo);
    assert_eq!(request.prompt, "alice@example.org's password: ");
    assert_eq!(request.host.as_deref(), Some("alice@example.org"));
}

#[test]
fn cancel_exits_1() {
    let dir = tempdir();
    let (socket, server) = serve(dir.path(), |_| Reply::Cancel);
    let (rc, out, _) = run_helper(&socket, "Enter passphrase for /k: ", &[]);
    assert_eq!(rc, 1);
    assert_eq!(out, "");
    assert_eq!(server.join().unwrap().kind, PromptKind::Passphrase);
}

#[test]
fn host_key_and_confirm_through_the_bridge() {
    let dir = tempdir();
    let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
    let (socket, server) = serve(dir.path(), |_| Reply::answer("yes"));
    let prompt = format!(
        "The authenticity of host 'h.example (192.0.2.1)' can't be established.\n\
         ED25519 key fingerprint is: {fp}\n\
         Are you sure you want to continue connecting (yes/no/[fingerprint])? "
    );
    let (rc, out, _) = run_helper(&socket, &prompt, &[]);
    assert_eq!((rc, out.as_str()), (0, "yes\n"));
    let request = server.join().unwrap();
    assert_eq!(request.kind, PromptKind::HostKey);
    assert_eq!(request.host.as_deref(), Some("h.example (192.0.2.1)"));
    assert_eq!(request.fingerprint.as_deref(), Some(fp));

    let dir = tempdir();
    let (socket, server) = serve(dir.path(), |_| Reply::answer(""));
    let (rc, out, _) = run_helper(
        &socket,
        "Allow use of key k?",
        &[("SSH_ASKPASS_PROMPT", "confirm")],
    );
    assert_eq!((rc, out.as_str()), (0, ""), "an empty answer allows");
    assert_eq!(server.join().unwrap().kind, PromptKind::Confirm);

    let dir = tempdir();
    let (socket, _server) = serve(dir.path(), |_| Reply::answer("no"));
    let (rc, out, _) = run_helper(
        &socket,
        "Allow use of key k?",
        &[("SSH_ASKPASS_PROMPT", "confirm")],
    );
    assert_eq!((rc, out.as_str()), (1, ""), "'no' denies");
}

#[test]
fn notification_holds_the_connection_until_sigterm() {
    let dir = tempdir();
    let (listener, socket) =
        bridge::bind_private(&dir.path().join("bridge"), "askpass.sock").expect("bind");
    let mut cmd = helper(None);
    cmd.env(bridge::SOCKET_ENV, &socket)
        .env("SSH_ASKPASS_PROMPT", "none")
        .arg("Confirm user presence for key ED25519-SK SHA256:abc");
    let child = spawn("pv-askpass", &mut cmd);
    let (stream, _) = listener.accept().expect("accept");
    let request = bridge::read_request(&stream).expect("request");
    assert_eq!(request.kind, PromptKind::Notify);
    // The application shows the notification; ssh later ends the helper with SIGTERM,
    // and the application sees end-of-file.
    child.terminate();
    let (status, out, _) = child.finish(DEADLINE);
    assert!(!status.success());
    assert_eq!(out, "");
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut &stream, &mut buf).expect("read after SIGTERM");
    assert_eq!(n, 0, "expected end-of-file");
}

#[test]
fn no_reply_within_the_timeout_cancels() {
    let dir = tempdir();
    let (listener, socket) =
        bridge::bind_private(&dir.path().join("bridge"), "askpass.sock").expect("bind");
    // Accept and read, but never answer.
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let _ = bridge::read_request(&stream);
        std::thread::sleep(Duration::from_secs(3));
        drop(stream);
    });
    let start = Instant::now();
    let (rc, out, err) = run_helper(&socket, "Password: ", &[("PV_ASKPASS_TIMEOUT", "1")]);
    assert_eq!((rc, out.as_str()), (1, ""));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    assert!(err.contains("askpass socket"), "{err}");
    server.join().unwrap();
}

/// A listener that accepts nothing in these tests: the helper must refuse before
/// connecting, so the listener must see no connection.
fn assert_refused(listener: &UnixListener, socket: &Path, why: &str) {
    let (rc, out, err) = run_helper(socket, "Password: ", &[]);
    assert_eq!(rc, 1, "{why}: {err}");
    assert_eq!(out, "");
    assert!(err.contains("refusing askpass socket"), "{why}: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "{why}: the helper connected to a refused socket"
    );
}

#[test]
fn socket_in_a_world_writable_directory_is_refused() {
    let dir = tempdir();
    let open_dir = dir.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = open_dir.join("askpass.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_refused(&listener, &socket, "world-writable directory");
}

#[test]
fn socket_reachable_by_others_is_refused() {
    let dir = tempdir();
    let (listener, socket) =
        bridge::bind_private(&dir.path().join("bridge"), "askpass.sock").expect("bind");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_refused(&listener, &socket, "socket mode 0666");
}

#[test]
fn socket_owned_by_someone_else_is_refused() {
    if !common::is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but not root: changing a socket's owner needs root"
        );
        eprintln!("skipped: changing a socket's owner needs root");
        return;
    }
    let dir = tempdir();
    let (listener, socket) =
        bridge::bind_private(&dir.path().join("bridge"), "askpass.sock").expect("bind");
    let status = Command::new("chown")
        .arg("65534")
        .arg(&socket)
        .status()
        .expect("chown");
    assert!(status.success());
    assert_refused(&listener, &socket, "socket owned by uid 65534");
}

#[test]
fn ssh_add_answered_through_the_bridge() {
    let dir = tempdir();
    let key = dir.path().join("k");
    let passphrase = "bridge pass@phrase";
    let status = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            passphrase,
            "-C",
            "bridge-key",
            "-f",
        ])
        .arg(&key)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let agent_sock = dir.path().join("agent.sock");
    let _agent = spawn(
        "ssh-agent",
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&agent_sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for("the agent socket", DEADLINE, || {
        agent_sock.exists().then_some(())
    });

    let (socket, server) = serve(dir.path(), move |req| {
        assert_eq!(req.kind, PromptKind::Passphrase);
        Reply::answer(passphrase)
    });
    let mut add = Command::new("ssh-add");
    add.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("SSH_AUTH_SOCK", &agent_sock)
        .env("SSH_ASKPASS", BIN)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env(bridge::SOCKET_ENV, &socket)
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (status, out, err) = spawn("ssh-add", &mut add).finish(DEADLINE);
    assert!(status.success(), "{out} {err}");
    let request = server.join().unwrap();
    assert!(
        request.prompt.contains("Enter passphrase for"),
        "{request:?}"
    );
}
