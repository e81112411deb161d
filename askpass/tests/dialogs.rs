//! Every dialog kind under a private Xvfb, driven with xdotool like a person would:
//! type, Return, Escape, Tab and Space. Each test keeps a screenshot of its dialog in
//! `<target>/askpass-shots/` and checks that it is not blank.

mod common;

use std::time::{Duration, Instant};

use common::{DEADLINE, Xvfb, helper, spawn};

const FP: &str = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";

fn host_key_prompt() -> String {
    format!(
        "The authenticity of host 'example.org (192.0.2.7)' can't be established.\n\
         ED25519 key fingerprint is {FP}.\n\
         This key is not known by any other names.\n\
         Are you sure you want to continue connecting (yes/no/[fingerprint])? "
    )
}

#[test]
fn password_typed_and_returned_on_stdout() {
    let x = Xvfb::start();
    let mut child = spawn(
        "pv-askpass",
        helper(Some(&x.display)).arg("alice@example.org's password: "),
    );
    x.wait_for_dialog(&mut child);
    x.screenshot("password");
    x.type_text("S3cret pw!#%@x");
    x.key("Return");
    let (status, out, err) = child.finish(DEADLINE);
    assert!(status.success(), "exit {status:?}, stderr {err}");
    assert_eq!(out, "S3cret pw!#%@x\n");
    assert!(!err.contains("S3cret"), "secret leaked to stderr: {err}");
}

#[test]
fn stay_on_top_only_when_a_window_manager_supports_it() {
    let x = Xvfb::start();
    // No window manager: FLTK is not asked (it would print an error about the missing
    // _NET_WM_STATE_ABOVE atom).
    let mut child = spawn(
        "pv-askpass",
        helper(Some(&x.display))
            .env("PV_ASKPASS_DEBUG", "1")
            .arg("Password: "),
    );
    x.wait_for_dialog(&mut child);
    x.key("Escape");
    let (_, _, err) = child.finish(DEADLINE);
    assert!(err.contains("stay-on-top=false"), "{err}");
    assert!(!err.contains("_NET_WM_STATE_ABOVE"), "{err}");

    // Once the atom exists (an EWMH window manager interns it; setting a property with
    // it as the value does too, and Xvfb runs with -noreset so it stays), it is.
    let out = x.tool(
        "xprop",
        &[
            "-root",
            "-f",
            "_NET_WM_STATE_ABOVE",
            "32a",
            "-set",
            "_NET_WM_STATE_ABOVE",
            "_NET_WM_STATE_ABOVE",
        ],
    );
    assert!(out.status.success());
    let mut child = spawn(
        "pv-askpass",
        helper(Some(&x.display))
            .env("PV_ASKPASS_DEBUG", "1")
            .arg("Password: "),
    );
    x.wait_for_dialog(&mut child);
    x.key("Escape");
    let (_, _, err) = child.finish(DEADLINE);
    assert!(err.contains("stay-on-top=true"), "{err}");
    assert!(!err.contains("ERROR"), "{err}");
}

#[test]
fn escape_cancels_with_exit_1_and_nothing_on_stdout() {
    let x = Xvfb::start();
    let mut child = spawn(
        "pv-askpass",
        helper(Some(&x.display)).arg("Enter passphrase for key '/home/a/.ssh/id_ed25519': "),
    );
    x.wait_for_dialog(&mut child);
    x.screenshot("passphrase");
    x.type_text("half typed");
    x.key("Escape");
    let (status, out, _) = child.finish(DEADLINE);
    assert_eq!(status.code(), Some(1));
    assert_eq!(out, "");
}

#[test]
fn host_key_enter_means_no() {
    let x = Xvfb::start();
    let mut child = spawn(
        "pv-askpass",
        helper(Some(&x.display)).arg(host_key_prompt()),
    );
    x.wait_for_dialog(&mut child);
    x.screenshot("host-key");
    x.key("Return");
    let (status, out, _) = child.finish(DEADLINE);
    assert!(status.success());
    assert_eq!(out, "no\n", "Enter must answer no");
}

#[test]
fn host_key_space_on_the_focused_default_is_no_too() {
    let x = Xvfb::start();
    let mut child = spawn(
        "pv-askpass",
        helper(Some(&x.display)).arg(host_key_prompt()),
    );
    x.wait_for_dialog(&mut child);
    x.key("space");
    let (status, out, _) = child.finish(DEADLINE);
    assert!(status.success());
    assert_eq!(out, "no\n");
}

#[test]
fn host_key_accepted_deliberately_answers_yes() {
    let x = Xvfb::start();
    let mut child = spawn(
        "pv-askpass",
        helper(Some(&x.display)).arg(host_key_prompt()),
    );
    x.wait_for_dialog(&mut child);
    // Move the keyboard focus from No to Connect, then press it.
    x.key("Tab");
    x.key("space");
    let (status, out, _) = child.finish(DEADLINE);
    assert!(status.success());
    assert_eq!(out, "yes\n");
}

#[test]
fn host_key_escape_cancels() {
    let x = Xvfb::start();
    let mut child = spawn(
        "pv-askpass",
        helper(Some(&x.display)).arg("Please type 'yes', 'no' or the fingerprint: "),
    );
    x.wait_for_dialog(&mut child);
    x.screenshot("host-key-reask");
    x.key("Escape");
    let (status, out, _) = child.finish(DEADLINE);
    assert_eq!(status.code(), Some(1));
    assert_eq!(out, "");
}

#[test]
fn confirm_allow_and_deny() {
    let x = Xvfb::start();
    let prompt = format!("Allow use of key alice@laptop?\nKey fingerprint {FP}.");

    let mut child = spawn(
        "pv-askpass",
        helper(Some(&x.display))
            .env("SSH_ASKPASS_PROMPT", "confirm")
            .arg(&prompt),
    );
    x.wait_for_dialog(&mut child);
    x.screenshot("confirm");
    x.key("Return");
    let (status, out, _) = child.finish(DEADLINE);
    assert!(status.success(), "Enter allows");
    assert_eq!(out, "", "allow prints nothing");

    let mut child = spawn(
        "pv-askpass",
        helper(Some(&x.display))
            .env("SSH_ASKPASS_PROMPT", "confirm")
            .arg(&prompt),
    );
    x.wait_for_dialog(&mut child);
    x.key("Escape");
    let (status, out, _) = child.finish(DEADLINE);
    assert_eq!(status.code(), Some(1), "Escape denies");
    assert_eq!(out, "");

    // Deny by its button: Tab moves the focus from Allow to Deny.
    let mut child = spawn(
        "pv-askpass",
        helper(Some(&x.display))
            .env("SSH_ASKPASS_PROMPT", "confirm")
            .arg(&prompt),
    );
    x.wait_for_dialog(&mut child);
    x.key("Tab");
    x.key("space");
    let (status, out, _) = child.finish(DEADLINE);
    assert_eq!(status.code(), Some(1), "Deny denies");
    assert_eq!(out, "");
}

#[test]
fn notification_stays_until_sigterm() {
    let x = Xvfb::start();
    let mut child = spawn(
        "pv-askpass",
        helper(Some(&x.display))
            .env("SSH_ASKPASS_PROMPT", "none")
            .arg(format!("Confirm user presence for key ED25519-SK {FP}")),
    );
    x.wait_for_dialog(&mut child);
    x.screenshot("notify");
    // Still there a moment later: a notification does not go away by itself.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the notification exited by itself"
    );
    child.terminate();
    let (status, out, _) = child.finish(DEADLINE);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(15), "ended by SIGTERM: {status:?}");
    assert_eq!(out, "");
    x.wait_for_no_dialog();
}

#[test]
fn one_time_code_is_visible_and_unknown_prompt_has_a_show_toggle() {
    let x = Xvfb::start();
    let mut child = spawn(
        "pv-askpass",
        helper(Some(&x.display)).arg("(alice@example.org) Verification code: "),
    );
    x.wait_for_dialog(&mut child);
    x.type_text("123456");
    x.screenshot("one-time-code");
    x.key("Return");
    let (status, out, _) = child.finish(DEADLINE);
    assert!(status.success());
    assert_eq!(out, "123456\n");

    let mut child = spawn(
        "pv-askpass",
        helper(Some(&x.display)).arg("What is the magic word? "),
    );
    x.wait_for_dialog(&mut child);
    x.type_text("xyzzy");
    let hidden = x.screenshot("unknown");
    // Alt-S ticks "Show text": the entry now shows the letters instead of dots.
    x.key("alt+s");
    let shown = x.screenshot("unknown-shown");
    assert!(
        common::pixels_differing(&hidden, &shown) > 20,
        "Show text changed nothing on screen"
    );
    x.key("Return");
    let (status, out, _) = child.finish(DEADLINE);
    assert!(status.success());
    assert_eq!(out, "xyzzy\n");
}

#[test]
fn git_username_and_password() {
    let x = Xvfb::start();
    for (prompt, typed) in [
        ("Username for 'https://git.example.org': ", "alice"),
        ("Password for 'https://alice@git.example.org': ", "tok@en"),
    ] {
        let mut child = spawn("pv-askpass", helper(Some(&x.display)).arg(prompt));
        x.wait_for_dialog(&mut child);
        x.type_text(typed);
        x.key("Return");
        let (status, out, _) = child.finish(DEADLINE);
        assert!(status.success());
        assert_eq!(out, format!("{typed}\n"));
    }
}

#[test]
fn timeout_cancels() {
    let x = Xvfb::start();
    let start = Instant::now();
    let mut child = spawn(
        "pv-askpass",
        helper(Some(&x.display))
            .env("PV_ASKPASS_TIMEOUT", "1")
            .arg("Password: "),
    );
    x.wait_for_dialog(&mut child);
    let (status, out, _) = child.finish(DEADLINE);
    assert_eq!(status.code(), Some(1));
    assert_eq!(out, "");
    assert!(start.elapsed() >= Duration::from_secs(1));
}

#[test]
fn readable_at_double_scale() {
    let x = Xvfb::start_with_size("1920x1080x24");
    let mut child = spawn(
        "pv-askpass",
        helper(Some(&x.display))
            .env("FLTK_SCALING_FACTOR", "2")
            .arg(host_key_prompt()),
    );
    let w = x.wait_for_dialog(&mut child);
    x.screenshot("host-key-2x");
    // At 2x the window is about twice as large as the same dialog at 1x (which is
    // at least 380 logical pixels wide).
    assert!(w.width >= 760, "window {w:?} not scaled");
    x.key("Escape");
    let (status, _, _) = child.finish(DEADLINE);
    assert_eq!(status.code(), Some(1));
}
