//! The `pv-askpass` binary: reads the prompt and the environment, picks the bridge, a
//! dialog or the terminal, and hands the answer to ssh or git on stdout.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use pv_askpass::{Hint, Outcome, bridge, classify, dialog, display, terminal};

const USAGE: &str = "\
pv-askpass: an SSH_ASKPASS / GIT_ASKPASS helper (FLTK dialog, terminal fallback, bridge)

Usage: pv-askpass PROMPT
       pv-askpass --help | --version     (only as the sole argument, from a terminal)

ssh, ssh-add, ssh-agent and git run this program with the prompt as its only argument.
The answer and one newline go to stdout; exit 0 means answered, 1 means cancelled.

Set it up:
  export SSH_ASKPASS=/path/to/pv-askpass   # used by ssh, ssh-add, ssh-agent (and git)
  export SSH_ASKPASS_REQUIRE=prefer        # or force: use it even with a terminal / no DISPLAY
  export GIT_ASKPASS=/path/to/pv-askpass   # git's Username/Password prompts

Environment:
  SSH_ASKPASS_PROMPT   set by ssh: 'confirm' = yes/no question (exit 0 allows),
                       'none' = notification shown until ssh sends SIGTERM
  PV_ASKPASS_SOCKET    a private Unix socket (0600, in a directory only you can write):
                       the prompt is sent there as one JSON line and the reply printed
  PV_ASKPASS_TIMEOUT   seconds after which a dialog or bridge request cancels (exit 1):
                       300 when unset, 0 = no limit
  DISPLAY              the X display for the dialog; without a usable one the prompt is
                       asked on the terminal (/dev/tty), and with neither we exit 1
  FLTK_SCALING_FACTOR  dialog scale, e.g. 2 for HiDPI screens
  PV_ASKPASS_DEBUG     1: print the prompt's classification (kind, host, fingerprint;
                       never the answer) on stderr

Host-key questions: Enter (the default button) answers 'no'; accept with a click on
Connect (or Tab, Space), which answers 'yes'. Confirm questions: Enter allows.
";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let hint_value = std::env::var("SSH_ASKPASS_PROMPT").ok();
    let interactive = std::io::stdin().is_terminal() || std::io::stdout().is_terminal();
    match flag(&args, hint_value.is_some(), interactive) {
        Some(Flag::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(Flag::Version) => {
            println!("pv-askpass {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        None => {}
    }

    // From here on fd 1 is stderr; only `answer_out` reaches ssh's pipe.
    let mut answer_out = claim_stdout();

    // ssh passes one argument; other callers sometimes split the prompt into several.
    let text = args
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let prompt = classify(&text, Hint::from_env_value(hint_value.as_deref()));
    let timeout = timeout_from_env();
    let debug = std::env::var_os("PV_ASKPASS_DEBUG").is_some_and(|v| !v.is_empty() && v != "0");
    if debug {
        // The classification only: never the answer.
        eprintln!(
            "pv-askpass: kind={} host={:?} fingerprint={:?}",
            prompt.kind.as_str(),
            prompt.host.as_deref().unwrap_or(""),
            prompt.fingerprint.as_deref().unwrap_or("")
        );
    }

    let outcome =
        if let Some(socket) = std::env::var_os(bridge::SOCKET_ENV).filter(|s| !s.is_empty()) {
            // Bridge configured: it answers, or we fail closed (no silent fallback to a dialog
            // the embedding application did not expect).
            match bridge::ask(socket.as_ref(), &prompt, timeout) {
                Ok(reply) => bridge_outcome(reply, prompt.kind),
                Err(e) => {
                    eprintln!("pv-askpass: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            let display_var = std::env::var("DISPLAY").ok();
            match display::probe_x11(display_var.as_deref()) {
                Ok(info) => {
                    if debug {
                        eprintln!("pv-askpass: dialog, stay-on-top={}", info.can_stay_on_top);
                    }
                    let outcome = dialog::ask(&prompt, timeout, info.can_stay_on_top);
                    drop(info); // the probe's connection, held until FLTK had its own
                    outcome
                }
                Err(no_display) => match terminal::Terminal::open() {
                    Ok(tty) => {
                        if display_var.as_deref().is_some_and(|d| !d.is_empty()) {
                            eprintln!("pv-askpass: {no_display}; asking on the terminal");
                        }
                        tty.ask(&prompt)
                    }
                    Err(no_tty) => {
                        // One line: why there is no display, and why no terminal.
                        eprintln!(
                            "pv-askpass: cannot ask for the {} prompt: {no_display}, and {no_tty}",
                            prompt.kind.as_str().replace('_', " ")
                        );
                        return ExitCode::FAILURE;
                    }
                },
            }
        };

    let code = match outcome.deliver(&mut answer_out) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pv-askpass: cannot write the answer to stdout: {e}");
            ExitCode::FAILURE
        }
    };
    drop(outcome); // wipes the answer
    code
}

/// The answer's way out. ssh reads everything we write to stdout, but FLTK's C code
/// prints some warnings with `printf` (for example when no window manager supports
/// "always on top"). So the real stdout is kept aside for the answer alone and fd 1 is
/// pointed at stderr, where such noise belongs. If that fails, stdout is used as is.
fn claim_stdout() -> Box<dyn std::io::Write> {
    let claimed = nix::unistd::dup(std::io::stdout()).and_then(|real| {
        nix::unistd::dup2_stdout(std::io::stderr())?;
        Ok(std::fs::File::from(real))
    });
    match claimed {
        Ok(file) => Box::new(file),
        Err(_) => Box::new(std::io::stdout()),
    }
}

/// `--help` / `--version`, recognised only when it is the sole argument, ssh set no
/// `SSH_ASKPASS_PROMPT`, and a person is at a terminal (stdin or stdout is one). ssh runs
/// the helper with stdout on a pipe and, when it uses askpass, usually without a terminal
/// on stdin, so a prompt that happens to read `--help` is still asked as a prompt.
#[derive(Debug, PartialEq, Eq)]
enum Flag {
    Help,
    Version,
}

fn flag(args: &[OsString], hinted: bool, interactive: bool) -> Option<Flag> {
    if args.len() != 1 || hinted || !interactive {
        return None;
    }
    match args[0].to_str()? {
        "--help" | "-h" => Some(Flag::Help),
        "--version" | "-V" => Some(Flag::Version),
        _ => None,
    }
}

/// How long a dialog or a bridge request waits for its answer: `PV_ASKPASS_TIMEOUT` in
/// whole seconds, `0` for no limit; unset, empty or unreadable means
/// [`bridge::DEFAULT_TIMEOUT`] (one default for every way of asking).
fn timeout_from_env() -> Option<Duration> {
    let Ok(value) = std::env::var("PV_ASKPASS_TIMEOUT") else {
        return Some(bridge::DEFAULT_TIMEOUT);
    };
    parse_timeout(&value).unwrap_or_else(|| {
        eprintln!(
            "pv-askpass: ignoring PV_ASKPASS_TIMEOUT={value:?}: not a whole number of seconds"
        );
        Some(bridge::DEFAULT_TIMEOUT)
    })
}

/// `Some(limit)` for a readable value (`Some(None)` = no limit), `None` for garbage.
fn parse_timeout(value: &str) -> Option<Option<Duration>> {
    let value = value.trim();
    if value.is_empty() {
        return Some(Some(bridge::DEFAULT_TIMEOUT));
    }
    let secs: u64 = value.parse().ok()?;
    Some((secs > 0).then(|| Duration::from_secs(secs)))
}

/// What the application's reply means for ssh: for a confirm question an answer of `""`
/// or `yes` allows; a notification ends with exit 0 however it ends.
fn bridge_outcome(reply: bridge::Reply, kind: pv_askpass::PromptKind) -> Outcome {
    use pv_askpass::PromptKind;
    match (reply, kind) {
        (bridge::Reply::Answer(a), PromptKind::Confirm) => {
            let a = a.trim();
            if a.is_empty() || a.eq_ignore_ascii_case("yes") {
                Outcome::Accepted
            } else {
                Outcome::Cancelled
            }
        }
        (_, PromptKind::Notify) => Outcome::Accepted,
        (bridge::Reply::Answer(a), _) => Outcome::Answer(a),
        (bridge::Reply::Cancel, _) => Outcome::Cancelled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn help_only_as_sole_argument_from_a_terminal() {
        assert_eq!(flag(&args(&["--help"]), false, true), Some(Flag::Help));
        assert_eq!(
            flag(&args(&["--version"]), false, true),
            Some(Flag::Version)
        );
        assert_eq!(flag(&args(&["--help"]), false, false), None);
        assert_eq!(flag(&args(&["--help"]), true, true), None);
        assert_eq!(flag(&args(&["--help", "x"]), false, true), None);
        assert_eq!(flag(&args(&["Password: "]), false, true), None);
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("30"), Some(Some(Duration::from_secs(30))));
        assert_eq!(parse_timeout(" 5 "), Some(Some(Duration::from_secs(5))));
        assert_eq!(parse_timeout("0"), Some(None));
        assert_eq!(parse_timeout(""), Some(Some(bridge::DEFAULT_TIMEOUT)));
        assert_eq!(parse_timeout("soon"), None);
        assert_eq!(parse_timeout("-1"), None);
    }

    #[test]
    fn bridge_replies() {
        use pv_askpass::PromptKind;
        assert_eq!(
            bridge_outcome(bridge::Reply::answer(""), PromptKind::Confirm),
            Outcome::Accepted
        );
        assert_eq!(
            bridge_outcome(bridge::Reply::answer("YES"), PromptKind::Confirm),
            Outcome::Accepted
        );
        assert_eq!(
            bridge_outcome(bridge::Reply::answer("no"), PromptKind::Confirm),
            Outcome::Cancelled
        );
        assert_eq!(
            bridge_outcome(bridge::Reply::answer("pw"), PromptKind::Password),
            Outcome::answer("pw")
        );
        assert_eq!(
            bridge_outcome(bridge::Reply::Cancel, PromptKind::Password),
            Outcome::Cancelled
        );
    }
}
