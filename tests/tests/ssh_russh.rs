//! The russh (pure Rust) ssh backend against a real loopback sshd: host keys against a
//! fresh known_hosts with the question put to the prompter, public keys (plain and
//! encrypted), password and keyboard-interactive (PAM, with its empty second round)
//! answered by a scripted prompter, forward and reverse tunnels carrying the native
//! handshake, and no orphans on the remote side.
#![cfg(feature = "russh")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pv_e2e::prompts::Scripted;
use pv_e2e::sshd::{KEY_PASSPHRASE, Sshd, TEST_PASSWORD, TEST_USER, wait_group_gone};
use pv_e2e::{echo, workspace_bin};
use pv_launch::prompt::PromptError;
use pv_launch::startup::ssh::russh::{RusshConnection, RusshOptions};
use pv_launch::startup::ssh::{OutputLine, SshError, SshTarget, remote_command};
use pv_transport::handshake::native::NativeHandshake;
use pv_transport::launch::Secrets;
use pv_transport::{
    ConnectTimeout, ConnectionConfig, ConnectionManager, ConnectionMode, Listener, RetryPolicy,
    Token, loopback,
};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

fn target(sshd: &Sshd) -> SshTarget {
    SshTarget::new("127.0.0.1")
        .unwrap()
        .with_user(TEST_USER)
        .unwrap()
        .with_port(sshd.port())
}

fn options(known_hosts: &Path, keys: &[PathBuf], prompter: &Arc<Scripted>) -> RusshOptions {
    RusshOptions {
        known_hosts: known_hosts.to_path_buf(),
        identity_files: keys.to_vec(),
        prompter: Some(prompter.clone()),
        ..RusshOptions::new()
    }
}

fn demo_server() -> String {
    workspace_bin("pv-demo-server").display().to_string()
}

/// Run `command` remotely and collect its stdout lines.
async fn run_collecting(conn: &RusshConnection, command: &str) -> Vec<String> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (mut remote, _) = conn
        .start_server(command, None, None, Some(tx))
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, remote.wait()).await.unwrap(),
        Some(0)
    );
    drop(remote);
    let mut lines = Vec::new();
    while let Ok(Some(o)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
        if let OutputLine::Stdout(l) = o {
            lines.push(l);
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_yes_then_key_auth_forward_tunnel_and_no_orphans() {
    let sshd = Sshd::start();
    let known = sshd.fresh_known_hosts("kh_russh");
    let prompter = Scripted::new(vec![Ok("yes")]);
    let mut conn = RusshConnection::connect(
        &target(&sshd),
        &options(&known, &[sshd.plain_key()], &prompter),
    )
    .await
    .unwrap();
    let asked = prompter.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].0, "ssh-host-key");
    assert!(asked[0].1.contains("authenticity"), "{asked:?}");
    // The key was learned: a second connection asks nothing.
    let quiet = Scripted::new(vec![]);
    let again = RusshConnection::connect(
        &target(&sshd),
        &options(&known, &[sshd.plain_key()], &quiet),
    )
    .await
    .unwrap();
    assert!(quiet.asked().is_empty());
    again.close().await;

    let token = Token::generate();
    let secrets = Secrets {
        token: token.clone(),
        client_cert: None,
    };
    let command = remote_command(
        &[demo_server(), "--server-port".into(), "0".into()],
        &[],
        None,
    );
    let (mut remote, ready) = conn
        .start_server(&command, Some(&secrets), Some(WAIT), None)
        .await
        .unwrap();
    let local = conn
        .forward_local_any("127.0.0.1", ready.unwrap().port)
        .await
        .unwrap();
    let m = ConnectionManager::new(
        ConnectionMode::Single,
        ConnectionConfig::new(NativeHandshake::new(token)),
    );
    let mut c = m
        .connect_to_remote(
            "127.0.0.1",
            local,
            RetryPolicy::new(ConnectTimeout::Within(WAIT)),
            |_, _, _| {},
        )
        .await
        .unwrap();
    echo(&mut c, b"through the russh -L tunnel", WAIT).await;
    let pgid = remote.remote_pgid().unwrap();
    remote.stop(Some(&conn)).await;
    assert_eq!(wait_group_gone(pgid, WAIT), Vec::<u32>::new());
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_no_refuses() {
    let sshd = Sshd::start();
    let known = sshd.fresh_known_hosts("kh_russh_no");
    let prompter = Scripted::new(vec![Ok("no")]);
    let err = RusshConnection::connect(
        &target(&sshd),
        &options(&known, &[sshd.plain_key()], &prompter),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SshError::HostKeyRefused { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&known).unwrap(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_then_reverse_tunnel_and_the_group_goes_with_the_connection() {
    let sshd = Sshd::start();
    let prompter = Scripted::new(vec![Ok(TEST_PASSWORD)]);
    let conn = RusshConnection::connect(
        &target(&sshd),
        &options(&sshd.known_hosts(), &[], &prompter),
    )
    .await
    .unwrap();
    assert_eq!(prompter.asked().len(), 1);
    assert_eq!(prompter.asked()[0].0, "ssh-password");
    let listener = Listener::bind(loopback(0), None).await.unwrap();
    let local = listener.local_addr().unwrap().port();
    let remote_port = conn.forward_remote(local).await.unwrap();
    let token = Token::generate();
    let secrets = Secrets {
        token: token.clone(),
        client_cert: None,
    };
    let command = remote_command(
        &[
            demo_server(),
            "--reverse-connection".into(),
            "--client-host".into(),
            "127.0.0.1".into(),
            "--server-port".into(),
            remote_port.to_string(),
        ],
        &[],
        None,
    );
    let (remote, _) = conn
        .start_server(&command, Some(&secrets), Some(WAIT), None)
        .await
        .unwrap();
    let m = ConnectionManager::new(
        ConnectionMode::Single,
        ConnectionConfig::new(NativeHandshake::new(token)),
    );
    let mut c = m.wait_for_server(listener, Some(WAIT)).await.unwrap();
    echo(&mut c, b"through the russh -R tunnel", WAIT).await;
    let pgid = remote.remote_pgid().unwrap();
    // Closing the connection alone ends the remote group (its stdin ends).
    conn.close().await;
    assert_eq!(wait_group_gone(pgid, WAIT), Vec::<u32>::new());
    drop(remote);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_not_retried() {
    let sshd = Sshd::start();
    let prompter = Scripted::new(vec![Ok("wrong"), Ok(TEST_PASSWORD)]);
    let err = RusshConnection::connect(
        &target(&sshd),
        &options(&sshd.known_hosts(), &[], &prompter),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("Permission denied"), "{err}");
    assert_eq!(prompter.asked().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_key_asks_its_passphrase() {
    let sshd = Sshd::start();
    let prompter = Scripted::new(vec![Ok(KEY_PASSPHRASE)]);
    let conn = RusshConnection::connect(
        &target(&sshd),
        &options(&sshd.known_hosts(), &[sshd.encrypted_key()], &prompter),
    )
    .await
    .unwrap();
    assert_eq!(prompter.asked().len(), 1);
    assert_eq!(prompter.asked()[0].0, "ssh-passphrase");
    assert_eq!(run_collecting(&conn, "id -un").await, [TEST_USER]);
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_interactive_through_pam_with_its_empty_round() {
    let sshd = Sshd::start_with(true);
    let prompter = Scripted::new(vec![Ok(TEST_PASSWORD)]);
    let conn = RusshConnection::connect(
        &target(&sshd),
        &options(&sshd.known_hosts(), &[], &prompter),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", sshd.log()));
    let asked = prompter.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0].1.contains("Password"), "{asked:?}");
    assert_eq!(run_collecting(&conn, "echo kbd-ok").await, ["kbd-ok"]);
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_prompt_aborts() {
    let sshd = Sshd::start();
    let prompter = Scripted::new(vec![Err(PromptError::Cancelled)]);
    let err = RusshConnection::connect(
        &target(&sshd),
        &options(&sshd.known_hosts(), &[], &prompter),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SshError::Cancelled { .. }), "{err}");
}

/// A host known by a key of another type (here ECDSA, while the server offers its
/// ed25519 key) is not an unknown host: the backend refuses, says which line knows it,
/// and asks nothing (a "yes" would have accepted a downgrade).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_known_by_another_key_type_is_refused_without_a_question() {
    let text = refused_without_a_question("ecdsa").await;
    assert!(
        text.contains("line 1") && text.contains("ecdsa"),
        "the refusal names the known entry: {text}"
    );
}

/// Connects to a fresh loopback sshd whose known_hosts holds a fresh key of `kind` (not the
/// server's) with a prompter that would say yes: the connection is refused, nobody is
/// asked and known_hosts is unchanged. The refusal's text.
async fn refused_without_a_question(kind: &str) -> String {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-f"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let key: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    let known = dir.path().join("known_hosts");
    let line = format!("[127.0.0.1]:{} {}\n", sshd.port(), key.join(" "));
    std::fs::write(&known, &line).unwrap();
    let prompter = Scripted::new(vec![Ok("yes")]);
    let err = RusshConnection::connect(
        &target(&sshd),
        &options(&known, &[sshd.plain_key()], &prompter),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SshError::HostKeyRefused { .. }), "{err}");
    assert!(prompter.asked().is_empty(), "{:?}", prompter.asked());
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        line,
        "nothing learned"
    );
    err.to_string()
}

/// `StrictHostKeyChecking=yes` (the plan's `-o` maps to `ask_unknown_host: false`): an
/// unknown host is refused and nobody is asked, though the prompter would say yes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_host_key_checking_refuses_an_unknown_host_without_a_question() {
    let sshd = Sshd::start();
    let known = sshd.fresh_known_hosts("kh_russh_strict");
    let prompter = Scripted::new(vec![Ok("yes")]);
    let strict = RusshOptions {
        ask_unknown_host: false,
        ..options(&known, &[sshd.plain_key()], &prompter)
    };
    let err = RusshConnection::connect(&target(&sshd), &strict)
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::HostKeyRefused { .. }), "{err}");
    assert!(
        err.to_string().contains("StrictHostKeyChecking=yes"),
        "the refusal says why: {err}"
    );
    assert!(prompter.asked().is_empty(), "{:?}", prompter.asked());
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        "",
        "nothing learned"
    );
}

/// A host whose known key (of the same type) differs from the one it offers, a possible
/// man in the middle, is refused without a question even when unknown hosts are asked
/// about, and known_hosts keeps the old key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_key_is_refused_without_a_question() {
    let text = refused_without_a_question("ed25519").await;
    assert!(
        text.contains("changed") && text.contains("line 1"),
        "says what and where: {text}"
    );
}
