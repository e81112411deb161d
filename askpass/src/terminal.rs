//! The terminal fallback, used when there is no display: the prompt is asked on the
//! controlling terminal (`/dev/tty`), never on stdout, which is ssh's pipe.
//!
//! Secrets are read with `rpassword` (no echo). One-time codes, user names and yes/no
//! answers are read visibly. With no controlling terminal either (a daemon, `setsid`),
//! [`Terminal::open`] fails at once with the reason, and the helper exits 1.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};

use zeroize::Zeroizing;

use crate::classify::{Prompt, PromptKind};
use crate::outcome::Outcome;

/// The controlling terminal could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("no terminal: /dev/tty: {0}")]
pub struct NoTerminal(#[source] pub io::Error);

/// The controlling terminal, opened for reading and writing.
#[derive(Debug)]
pub struct Terminal {
    tty: File,
}

impl Terminal {
    /// Opens `/dev/tty`; fails at once when the process has no controlling terminal.
    pub fn open() -> Result<Terminal, NoTerminal> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .map(|tty| Terminal { tty })
            .map_err(NoTerminal)
    }

    /// Asks `prompt` on the terminal. An I/O error while reading (Ctrl-D, Ctrl-C) is a
    /// [`Outcome::Cancelled`]. A notification is written to the terminal and then waits,
    /// like the dialog, until ssh ends the helper with SIGTERM.
    pub fn ask(self, prompt: &Prompt) -> Outcome {
        let mut tty = self.tty;
        match prompt.kind {
            PromptKind::Notify => {
                let _ = writeln!(tty, "{}", prompt.text.trim_end());
                // ssh sends SIGTERM when the operation is over; the default action ends us.
                loop {
                    std::thread::park();
                }
            }
            PromptKind::Confirm => {
                let question = format!("{}\nAllow? (yes/no) ", prompt.text.trim_end());
                match read_visible(&mut tty, &question) {
                    Some(answer) if is_yes(&answer) => Outcome::Accepted,
                    _ => Outcome::Cancelled,
                }
            }
            // Host-key answers (yes / no / a fingerprint) are passed on as typed: ssh
            // checks them and asks again if they are neither.
            PromptKind::HostKey | PromptKind::OneTimeCode | PromptKind::Username => {
                match read_visible(&mut tty, &prompt.text) {
                    Some(answer) => Outcome::Answer(answer),
                    None => Outcome::Cancelled,
                }
            }
            PromptKind::Password
            | PromptKind::Passphrase
            | PromptKind::Pin
            | PromptKind::Unknown => {
                // rpassword opens /dev/tty itself, switches echo off and restores it.
                drop(tty);
                match rpassword::prompt_password(&prompt.text) {
                    Ok(secret) => Outcome::Answer(Zeroizing::new(secret)),
                    Err(_) => Outcome::Cancelled,
                }
            }
        }
    }
}

fn is_yes(answer: &str) -> bool {
    let a = answer.trim();
    a.eq_ignore_ascii_case("yes") || a.eq_ignore_ascii_case("y")
}

/// Writes the prompt and reads one visible line; `None` on end-of-file or error.
fn read_visible(tty: &mut File, prompt: &str) -> Option<Zeroizing<String>> {
    tty.write_all(prompt.as_bytes()).ok()?;
    tty.flush().ok()?;
    let mut line = Zeroizing::new(String::new());
    let n = BufReader::new(&*tty).read_line(&mut line).ok()?;
    if n == 0 {
        return None;
    }
    let trimmed = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(trimmed);
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_answers() {
        for y in ["yes", "YES", "y", " yes \n"] {
            assert!(is_yes(y), "{y:?}");
        }
        for n in ["no", "", "yess", "n"] {
            assert!(!is_yes(n), "{n:?}");
        }
    }
}
