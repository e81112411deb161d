//! The terminal fallback through a real pseudo-terminal (tmux on a private socket), and
//! the "no display, no terminal" path (setsid: no controlling terminal).

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{BIN, DEADLINE, spawn, wait_for};

/// A tmux server on a private socket running one script in one pane; killed on drop.
struct Tmux {
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Tmux {
    /// Runs `sh run.sh` in a detached 120x30 session. The script runs the helper with
    /// stdout and stderr sent to files and records the exit status in `rc`.
    fn run(helper_env: &str, prompt: &str) -> Tmux {
        let dir = tempfile::Builder::new()
            .prefix("pvat")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let script = dir.path().join("run.sh");
        // The prompt goes through a file so no shell quoting is involved.
        std::fs::write(dir.path().join("prompt"), prompt).expect("prompt");
        std::fs::write(
            &script,
            format!(
                "unset DISPLAY WAYLAND_DISPLAY PV_ASKPASS_SOCKET SSH_ASKPASS_PROMPT PV_ASKPASS_TIMEOUT\n\
                 {helper_env}\n\
                 '{BIN}' \"$(cat '{dir}/prompt')\" > '{dir}/out' 2> '{dir}/err'\n\
                 echo $? > '{dir}/rc.tmp' && mv '{dir}/rc.tmp' '{dir}/rc'\n\
                 sleep 60\n",
                dir = dir.path().display()
            ),
        )
        .expect("script");
        let socket = dir.path().join("tmux.sock");
        let status = Command::new("tmux")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("TERM", "xterm")
            .arg("-S")
            .arg(&socket)
            .args(["new-session", "-d", "-x", "120", "-y", "30", "-s", "t"])
            .arg(format!("sh '{}'", script.display()))
            .stdin(Stdio::null())
            .status()
            .expect("tmux (apt-get install tmux)");
        assert!(status.success());
        Tmux { socket, dir }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "t"])
    }

    fn wait_for_screen(&self, needle: &str) {
        wait_for(&format!("{needle:?} on the terminal"), DEADLINE, || {
            self.screen().contains(needle).then_some(())
        });
    }

    /// Waits until the pane's terminal has echo switched off (rpassword prints the prompt
    /// first and then turns echo off, so keys sent in between would be echoed).
    fn wait_for_echo_off(&self) {
        let tty = self.tmux(&["display-message", "-p", "-t", "t", "#{pane_tty}"]);
        let tty = tty.trim().to_owned();
        wait_for("echo off on the terminal", DEADLINE, || {
            let out = Command::new("stty")
                .args(["-F", &tty, "-a"])
                .stdin(Stdio::null())
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .any(|w| w == "-echo")
                .then_some(())
        });
    }

    fn type_line(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "t", "-l", text]);
        self.tmux(&["send-keys", "-t", "t", "Enter"]);
    }

    /// Waits for the helper to finish; returns (exit code, stdout, stderr).
    fn result(&self) -> (i32, String, String) {
        let rc_path = self.dir.path().join("rc");
        let rc = wait_for("the helper to finish", DEADLINE, || {
            std::fs::read_to_string(&rc_path).ok()
        });
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap();
        (rc.trim().parse().unwrap(), read("out"), read("err"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn password_on_the_terminal_is_hidden_and_printed_on_stdout() {
    let t = Tmux::run("", "alice@example.org's password: ");
    t.wait_for_screen("alice@example.org's password:");
    t.wait_for_echo_off();
    t.type_line("tty s3cr3t");
    let (rc, out, err) = t.result();
    assert_eq!(rc, 0, "stderr: {err}");
    assert_eq!(out, "tty s3cr3t\n");
    assert!(!t.screen().contains("s3cr3t"), "the password was echoed");
    assert!(!err.contains("s3cr3t"));
}

#[test]
fn unusable_display_falls_back_to_the_terminal() {
    let t = Tmux::run("export DISPLAY=:54321", "Enter passphrase for /tmp/k: ");
    t.wait_for_screen("Enter passphrase for /tmp/k:");
    t.wait_for_echo_off();
    t.type_line("pp");
    let (rc, out, err) = t.result();
    assert_eq!(rc, 0);
    assert_eq!(out, "pp\n");
    assert!(err.contains("asking on the terminal"), "{err}");
}

#[test]
fn one_time_code_and_host_key_answers_are_visible() {
    let t = Tmux::run("", "(alice@example.org) Verification code: ");
    t.wait_for_screen("Verification code:");
    t.type_line("424242");
    let (rc, out, _) = t.result();
    assert_eq!((rc, out.as_str()), (0, "424242\n"));
    assert!(t.screen().contains("424242"), "the code should be visible");

    let t = Tmux::run(
        "",
        "The authenticity of host 'h (10.0.0.1)' can't be established.\n\
         ED25519 key fingerprint is SHA256:abc.\n\
         Are you sure you want to continue connecting (yes/no/[fingerprint])? ",
    );
    t.wait_for_screen("(yes/no/[fingerprint])?");
    t.type_line("yes");
    let (rc, out, _) = t.result();
    assert_eq!((rc, out.as_str()), (0, "yes\n"));
}

#[test]
fn confirm_on_the_terminal() {
    for (typed, rc_wanted) in [("yes", 0), ("no", 1)] {
        let t = Tmux::run(
            "export SSH_ASKPASS_PROMPT=confirm",
            "Allow use of key alice@laptop?",
        );
        t.wait_for_screen("Allow? (yes/no)");
        t.type_line(typed);
        let (rc, out, _) = t.result();
        assert_eq!(rc, rc_wanted, "typed {typed}");
        assert_eq!(out, "");
    }
}

#[test]
fn help_from_a_terminal_but_not_from_a_pipe() {
    // From a terminal, `--help` alone prints the usage.
    let t = Tmux::run("", "--help");
    let (rc, out, _) = t.result();
    assert_eq!(rc, 0);
    // stdout went to a file, but stdin was the terminal: a person asked for help.
    assert!(out.contains("PV_ASKPASS_SOCKET"), "{out}");

    // Run by a program (stdin /dev/null, stdout a pipe), `--help` is just a prompt.
    let mut setsid = Command::new("setsid");
    setsid
        .arg("-w")
        .arg(BIN)
        .arg("--help")
        .env_remove("DISPLAY")
        .env_remove("PV_ASKPASS_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (status, out, err) = spawn("setsid pv-askpass --help", &mut setsid).finish(DEADLINE);
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(out, "");
    assert!(err.contains("unknown prompt"), "{err}");
}

#[test]
fn no_display_and_no_terminal_exits_1_with_one_line() {
    // setsid: a new session without a controlling terminal, so /dev/tty cannot open.
    let mut setsid = Command::new("setsid");
    setsid
        .arg("-w")
        .arg(BIN)
        .arg("alice@example.org's password: ");
    for var in [
        "DISPLAY",
        "WAYLAND_DISPLAY",
        "PV_ASKPASS_SOCKET",
        "SSH_ASKPASS_PROMPT",
        "PV_ASKPASS_TIMEOUT",
    ] {
        setsid.env_remove(var);
    }
    setsid
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (status, out, err) = spawn("setsid pv-askpass", &mut setsid).finish(DEADLINE);
    assert_eq!(status.code(), Some(1));
    assert_eq!(out, "");
    assert_eq!(err.lines().count(), 1, "one line expected: {err:?}");
    assert!(err.contains("DISPLAY is not set"), "{err}");
    assert!(err.contains("no terminal"), "{err}");
}

/// A prompt from a remote host reaches the terminal without its control sequences: one
/// that would erase the real question (carriage return, erase line) and draw a fake one
/// shows both, as plain text.
#[test]
fn a_prompt_s_control_sequences_do_not_reach_the_terminal() {
    let t = Tmux::run(
        "",
        "(bob@example.org) Verification code for bob:\r\u{1b}[K\u{1b}]0;t\u{7}Fake code: ",
    );
    t.wait_for_screen("Fake code:");
    let screen = t.screen();
    assert!(
        screen.contains("Verification code for bob:"),
        "the real question was erased: {screen}"
    );
    t.type_line("1234");
    let (rc, out, _) = t.result();
    assert_eq!((rc, out.as_str()), (0, "1234\n"));
}
