//! git runs the helper as GIT_ASKPASS: `git credential fill` asks for the user name
//! (visible entry) and the password (hidden), both answered in the dialog. No network:
//! `credential fill` only asks and prints what it got.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{BIN, DEADLINE, Xvfb, spawn};

#[test]
fn git_credential_fill_through_the_dialog() {
    let x = Xvfb::start();
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new("git");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_ASKPASS", BIN)
        .env("DISPLAY", &x.display)
        .args(["credential", "fill"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut git = spawn("git credential fill", &mut cmd);
    {
        let mut stdin = git.child.as_mut().unwrap().stdin.take().unwrap();
        stdin
            .write_all(b"protocol=https\nhost=git.example.org\n\n")
            .expect("write to git");
    } // closing stdin ends the request

    x.wait_for_dialog_titled(&mut git, Some("User name"));
    x.screenshot("git-username");
    x.type_text("alice");
    x.key("Return");

    x.wait_for_dialog_titled(&mut git, Some("Password"));
    x.screenshot("git-password");
    x.type_text("t0ken@git");
    x.key("Return");

    let (status, out, err) = git.finish(DEADLINE);
    assert!(status.success(), "git failed: {err}");
    assert!(out.contains("username=alice\n"), "{out}");
    assert!(out.contains("password=t0ken@git\n"), "{out}");
    assert!(!err.contains("t0ken"), "{err}");
}
