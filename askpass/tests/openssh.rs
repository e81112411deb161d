//! Real OpenSSH flows answered through the dialog under Xvfb: ssh-add of an encrypted
//! key, an ssh-agent confirmation for a key added with `ssh-add -c`, and ssh's host-key
//! question against a loopback sshd (inetd mode through ProxyCommand: no port needed).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{BIN, ChildGuard, DEADLINE, Xvfb, spawn, wait_for};

/// A command for an OpenSSH tool with a clean environment: our helper as SSH_ASKPASS
/// (forced), the test's display, HOME in the temp dir so no user config is read.
fn ssh_tool(program: &str, dir: &Path, display: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("DISPLAY", display)
        .env("SSH_ASKPASS", BIN)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("PV_ASKPASS_DEBUG", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn keygen(path: &Path, passphrase: &str, comment: &str) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
}

fn tempdir() -> tempfile::TempDir {
    // Short paths: unix socket paths are limited to 108 bytes.
    tempfile::Builder::new()
        .prefix("pvap")
        .tempdir_in("/tmp")
        .expect("tempdir")
}

/// A private ssh-agent in the foreground (`-D`), its socket in `dir`.
fn start_agent(dir: &Path, display: &str) -> (ChildGuard, std::path::PathBuf) {
    let sock = dir.join("agent.sock");
    let agent = spawn(
        "ssh-agent",
        ssh_tool("ssh-agent", dir, display)
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for("the agent socket", DEADLINE, || sock.exists().then_some(()));
    (agent, sock)
}

#[test]
fn ssh_add_encrypted_key_answered_in_the_dialog() {
    let x = Xvfb::start();
    let dir = tempdir();
    let key = dir.path().join("k");
    let passphrase = "pass phrase@1";
    keygen(&key, passphrase, "e2e-key");
    let (_agent, sock) = start_agent(dir.path(), &x.display);

    let mut add = spawn(
        "ssh-add",
        ssh_tool("ssh-add", dir.path(), &x.display)
            .env("SSH_AUTH_SOCK", &sock)
            .arg(&key),
    );
    x.wait_for_dialog(&mut add);
    x.screenshot("ssh-add-passphrase");
    x.type_text(passphrase);
    x.key("Return");
    let (status, out, err) = add.finish(DEADLINE);
    assert!(status.success(), "ssh-add failed: {out} {err}");
    assert!(err.contains("kind=passphrase"), "{err}");
    assert!(
        !err.contains(passphrase),
        "passphrase leaked to stderr: {err}"
    );

    let list = ssh_tool("ssh-add", dir.path(), &x.display)
        .env("SSH_AUTH_SOCK", &sock)
        .arg("-l")
        .output()
        .expect("ssh-add -l");
    assert!(String::from_utf8_lossy(&list.stdout).contains("e2e-key"));
}

#[test]
fn ssh_agent_confirmation_allow_and_deny() {
    let x = Xvfb::start();
    let dir = tempdir();
    let key = dir.path().join("c");
    keygen(&key, "", "confirm-key");
    let (_agent, sock) = start_agent(dir.path(), &x.display);

    let added = ssh_tool("ssh-add", dir.path(), &x.display)
        .env("SSH_AUTH_SOCK", &sock)
        .arg("-c")
        .arg(&key)
        .output()
        .expect("ssh-add -c");
    assert!(added.status.success(), "{added:?}");

    // `ssh-add -T` asks the agent to sign: the agent runs the helper with
    // SSH_ASKPASS_PROMPT=confirm and the key's comment and fingerprint.
    let test_key = |answer: &str, shot: Option<&str>| {
        let mut t = spawn(
            "ssh-add -T",
            ssh_tool("ssh-add", dir.path(), &x.display)
                .env("SSH_AUTH_SOCK", &sock)
                .arg("-T")
                .arg(key.with_extension("pub")),
        );
        x.wait_for_dialog(&mut t);
        if let Some(name) = shot {
            x.screenshot(name);
        }
        x.key(answer);
        t.finish(DEADLINE)
    };
    let (status, out, err) = test_key("Return", Some("agent-confirm"));
    assert!(
        status.success(),
        "Enter (Allow) should let the agent sign: {out} {err}"
    );
    let (status, _, err) = test_key("Escape", None);
    assert!(!status.success(), "Escape (Deny) should refuse: {err}");
}

/// The loopback sshd in inetd mode, run by ssh itself through ProxyCommand.
struct Sshd {
    config: std::path::PathBuf,
    client_key: std::path::PathBuf,
    user: String,
}

fn sshd_fixture(dir: &Path) -> Sshd {
    // sshd needs its privilege-separation directory even in inetd mode.
    let _ = std::fs::create_dir_all("/run/sshd");
    let host_key = dir.join("host_ed25519");
    keygen(&host_key, "", "host");
    let client_key = dir.join("id");
    keygen(&client_key, "", "client");
    let authorized = dir.join("authorized_keys");
    std::fs::copy(client_key.with_extension("pub"), &authorized).expect("authorized_keys");
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "HostKey {}\nAuthorizedKeysFile {}\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             StrictModes no\nPermitRootLogin prohibit-password\nPidFile none\nLogLevel ERROR\n",
            host_key.display(),
            authorized.display()
        ),
    )
    .expect("sshd_config");
    let user = String::from_utf8(
        Command::new("id")
            .arg("-un")
            .output()
            .expect("id -un")
            .stdout,
    )
    .expect("user name")
    .trim()
    .to_owned();
    Sshd {
        config,
        client_key,
        user,
    }
}

fn ssh_to_fixture(sshd: &Sshd, dir: &Path, display: &str) -> Command {
    let mut cmd = ssh_tool("ssh", dir, display);
    cmd.arg("-F")
        .arg("/dev/null")
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            dir.join("known_hosts").display()
        ))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=ask",
            "-o",
            "HostKeyAlias=pv-askpass-test",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "PreferredAuthentications=publickey",
            "-o",
        ])
        .arg(format!(
            "ProxyCommand=/usr/sbin/sshd -i -f {}",
            sshd.config.display()
        ))
        .arg("-i")
        .arg(&sshd.client_key)
        .arg("-l")
        .arg(&sshd.user)
        .args(["--", "127.0.0.1", "echo accepted-by-askpass"]);
    cmd
}

#[test]
fn ssh_host_key_question_no_aborts_yes_proceeds() {
    if !Path::new("/usr/sbin/sshd").exists() {
        panic!("/usr/sbin/sshd missing: apt-get install openssh-server");
    }
    let x = Xvfb::start();
    let dir = tempdir();
    let sshd = sshd_fixture(dir.path());
    let host_fp = String::from_utf8(
        Command::new("ssh-keygen")
            .arg("-lf")
            .arg(dir.path().join("host_ed25519.pub"))
            .output()
            .expect("ssh-keygen -l")
            .stdout,
    )
    .unwrap();
    let host_fp = host_fp
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_owned();

    // Enter on the dialog = No: ssh must abort before authenticating.
    let mut ssh = spawn("ssh", &mut ssh_to_fixture(&sshd, dir.path(), &x.display));
    x.wait_for_dialog(&mut ssh);
    x.screenshot("ssh-host-key");
    x.key("Return");
    let (status, out, err) = ssh.finish(DEADLINE);
    assert!(!status.success(), "ssh went on after 'no': {out} {err}");
    assert!(!out.contains("accepted-by-askpass"));
    assert!(err.contains("Host key verification failed"), "{err}");
    assert!(err.contains("kind=host_key"), "{err}");
    assert!(
        err.contains(&format!("fingerprint={host_fp:?}")),
        "fingerprint {host_fp} not extracted: {err}"
    );

    // Connect (Tab to it, Space) = yes: ssh records the key and logs in with the key.
    let mut ssh = spawn("ssh", &mut ssh_to_fixture(&sshd, dir.path(), &x.display));
    x.wait_for_dialog(&mut ssh);
    x.key("Tab");
    x.key("space");
    let (status, out, err) = ssh.finish(DEADLINE);
    assert!(status.success(), "ssh failed after 'yes': {out} {err}");
    assert_eq!(out.trim(), "accepted-by-askpass");
    let known = std::fs::read_to_string(dir.path().join("known_hosts")).expect("known_hosts");
    assert!(known.contains("pv-askpass-test"), "{known}");

    // The key is known now: no dialog the third time.
    let third = spawn("ssh", &mut ssh_to_fixture(&sshd, dir.path(), &x.display));
    let (status, out, err) = third.finish(DEADLINE);
    assert!(status.success(), "{out} {err}");
    assert!(!err.contains("kind="), "asked again: {err}");
}
