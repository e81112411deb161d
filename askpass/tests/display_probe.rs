//! The display probe against real X servers: one that demands a cookie (`Xvfb -auth`) —
//! with the right Xauthority the dialog opens; without it the helper must not let FLTK
//! try (FLTK would exit the process) and falls back, here to "no terminal either"
//! (setsid) — and one that resets whenever its last client leaves.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{BIN, DEADLINE, Xvfb, helper, spawn};

/// Writes an Xauthority file with one wildcard MIT-MAGIC-COOKIE-1 entry (any host, any
/// display): family u16 BE, then address, number, name, data, each u16-BE-length-prefixed.
fn write_xauthority(path: &Path, cookie: &[u8]) {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&0xffffu16.to_be_bytes());
    for field in [&b""[..], b"", b"MIT-MAGIC-COOKIE-1", cookie] {
        bytes.extend_from_slice(&(field.len() as u16).to_be_bytes());
        bytes.extend_from_slice(field);
    }
    std::fs::write(path, bytes).expect("write Xauthority");
}

#[test]
fn cookie_protected_display() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = dir.path().join("Xauthority");
    let cookie: Vec<u8> = (0u8..16)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    write_xauthority(&auth, &cookie);
    let mut x = Xvfb::start_with_args("1024x768x24", &["-auth", auth.to_str().unwrap()]);
    x.xauthority = Some(auth.clone());

    // With the cookie: the dialog opens and works.
    let mut child = spawn(
        "pv-askpass",
        helper(Some(&x.display))
            .env("XAUTHORITY", &auth)
            .arg("Password: "),
    );
    x.wait_for_dialog(&mut child);
    x.key("Escape");
    let (status, out, _) = child.finish(DEADLINE);
    assert_eq!((status.code(), out.as_str()), (Some(1), ""));

    // Without it: refused by the server, caught by the probe, one line, exit 1.
    let mut setsid = Command::new("setsid");
    setsid
        .arg("-w")
        .arg(BIN)
        .arg("Password: ")
        .env("DISPLAY", &x.display)
        .env("XAUTHORITY", dir.path().join("missing"))
        .env_remove("PV_ASKPASS_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (status, out, err) = spawn("setsid pv-askpass", &mut setsid).finish(DEADLINE);
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(out, "");
    assert!(err.contains("refused us"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err:?}");
    assert!(
        !err.contains("Can't open display"),
        "FLTK was reached: {err}"
    );
}

#[test]
fn a_server_that_resets_between_clients_still_gets_the_dialog() {
    // A bare X server with no other client resets when the probe disconnects; a client
    // connecting during the reset is refused and FLTK would exit ("Can't open display").
    // The probe therefore holds its connection until FLTK has its own. Each run here
    // maps the dialog and cancels by the timeout, with no other client on the server.
    let x = Xvfb::start_resetting();
    for run in 0..5 {
        let (status, out, err) = spawn(
            "pv-askpass",
            helper(Some(&x.display))
                .env("PV_ASKPASS_TIMEOUT", "1")
                .env("PV_ASKPASS_DEBUG", "1")
                .arg("Password: "),
        )
        .finish(DEADLINE);
        assert!(!err.contains("open display"), "run {run}: {err}");
        assert!(err.contains("pv-askpass: dialog"), "run {run}: {err}");
        assert_eq!(
            (status.code(), out.as_str()),
            (Some(1), ""),
            "run {run}: {err}"
        );
    }
}
