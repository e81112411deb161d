//! The terminal fallback, used when there is no display: the prompt is asked on the
//! controlling terminal (`/dev/tty`), never on stdout, which is ssh's pipe.
//!
//! Secrets are read with `rpassword` (no echo). One-time codes, user names and yes/no
//! answers are read visibly. With no controlling terminal either (a daemon, `setsid`),
//! [`Terminal::open`] fails at once with the reason, and the helper exits 1.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};

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
        // The prompt's text comes from the remote host (keyboard-interactive prompts, host
        // names): it reaches the terminal without escape sequences.
        let shown = printable(&prompt.text);
        match prompt.kind {
            PromptKind::Notify => {
                let _ = writeln!(tty, "{}", shown.trim_end());
                // ssh sends SIGTERM when the operation is over; the default action ends us.
                loop {
                    std::thread::park();
                }
            }
            PromptKind::Confirm => {
                let question = format!("{}\nAllow? (yes/no) ", shown.trim_end());
                match read_visible(&mut tty, &question) {
                    Some(answer) if is_yes(&answer) => Outcome::Accepted,
                    _ => Outcome::Cancelled,
                }
            }
            // Host-key answers (yes / no / a fingerprint) are passed on as typed: ssh
            // checks them and asks again if they are neither.
            PromptKind::HostKey | PromptKind::OneTimeCode | PromptKind::Username => {
                match read_visible(&mut tty, &shown) {
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
                match rpassword::prompt_password(shown.as_ref()) {
                    Ok(secret) => Outcome::Answer(Zeroizing::new(secret)),
                    Err(_) => Outcome::Cancelled,
                }
            }
        }
    }
}

/// `text` as it may reach a terminal: a remote host's prompt (or a server's output) could
/// move the cursor, retitle the window or rewrite what the user sees, so escape sequences
/// are dropped and other control characters shown as `?` (tabs and newlines kept).
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\t' && c != '\n')
    {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters, then one final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC (and DCS, PM, APC, SOS): up to BEL or ESC \.
                Some(']' | 'P' | '^' | '_' | 'X') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                // Any other escape: the one character after it.
                _ => {}
            },
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

fn is_yes(answer: &str) -> bool {
    let a = answer.trim();
    a.eq_ignore_ascii_case("yes") || a.eq_ignore_ascii_case("y")
}

/// Writes the prompt and reads one visible line; `None` on end-of-file or error.
fn read_visible(tty: &mut File, prompt: &str) -> Option<Zeroizing<String>> {
    tty.write_all(prompt.as_bytes()).ok()?;
    tty.flush().ok()?;
    read_line_wiped(tty).ok()?
}

/// The longest line [`read_line_wiped`] takes, in bytes.
pub const MAX_ANSWER: usize = 4096;

/// Reads one typed line (an answer, perhaps a secret) without reading past its end: byte by
/// byte into a buffer sized once (so it never reallocates and leaves an unwiped copy
/// behind) and wiped on drop, with no `BufReader` whose buffer would keep a copy. `None` at
/// end of input before any byte; the line ending (`\n` or `\r\n`) is not part of the line.
/// Longer than [`MAX_ANSWER`] bytes or not UTF-8: an error (the bytes are wiped).
pub fn read_line_wiped(input: &mut impl Read) -> io::Result<Option<Zeroizing<String>>> {
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_ANSWER));
    let mut byte = Zeroizing::new([0u8; 1]);
    loop {
        match input.read(&mut *byte) {
            Ok(0) if line.is_empty() => return Ok(None),
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() == MAX_ANSWER => {
                return Err(io::Error::other(format!(
                    "the answer is longer than {MAX_ANSWER} bytes"
                )));
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    // Moves the bytes into the String: no copy. Invalid UTF-8 is wiped with the error.
    match String::from_utf8(std::mem::take(&mut *line)) {
        Ok(text) => Ok(Some(Zeroizing::new(text))),
        Err(e) => {
            drop(Zeroizing::new(e.into_bytes()));
            Err(io::Error::other("the answer is not valid UTF-8"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_read_up_to_its_end_and_nothing_more() {
        let mut input: &[u8] = b"s3cret\r\nnext line\n";
        let first = read_line_wiped(&mut input).unwrap().unwrap();
        assert_eq!(first.as_str(), "s3cret");
        // Nothing past the line was consumed (no buffer holds a copy of later input).
        assert_eq!(input, b"next line\n");
        let second = read_line_wiped(&mut input).unwrap().unwrap();
        assert_eq!(second.as_str(), "next line");
        assert_eq!(read_line_wiped(&mut input).unwrap(), None);
    }

    #[test]
    fn overlong_and_invalid_lines_are_refused() {
        let long = vec![b'a'; MAX_ANSWER + 1];
        let e = read_line_wiped(&mut long.as_slice()).unwrap_err();
        assert!(e.to_string().contains("longer than 4096"), "{e}");
        let e = read_line_wiped(&mut &b"\xff\xfe\n"[..]).unwrap_err();
        assert!(e.to_string().contains("UTF-8"), "{e}");
        let last = read_line_wiped(&mut &b"no newline at the end"[..]).unwrap();
        assert_eq!(last.unwrap().as_str(), "no newline at the end");
    }

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
