//! The result of asking, and how it is handed to ssh or git: the answer and one newline
//! on stdout, exit status 0; nothing on stdout and exit status 1 for a cancel.

use std::io::{self, Write};
use std::process::ExitCode;

use zeroize::Zeroizing;

/// What the user did with a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The user typed or chose an answer: printed with one newline, exit 0.
    Answer(Zeroizing<String>),
    /// The user allowed a `confirm` question (or dismissed a notification): nothing is
    /// printed, exit 0. ssh's confirm contract reads "exit 0 and empty output" as allow.
    Accepted,
    /// The user cancelled, denied, or the dialog timed out: nothing printed, exit 1.
    Cancelled,
}

impl Outcome {
    /// An answer from anything string-like.
    pub fn answer(text: impl Into<String>) -> Outcome {
        Outcome::Answer(Zeroizing::new(text.into()))
    }

    /// Writes the outcome to `out` and returns the exit status to end with. The answer's
    /// buffers are wiped when `self` is dropped by the caller.
    pub fn deliver(&self, out: &mut impl Write) -> io::Result<ExitCode> {
        match self {
            Outcome::Answer(text) => {
                // One write of answer + newline, from a buffer that is wiped afterwards.
                let mut line = Zeroizing::new(Vec::with_capacity(text.len() + 1));
                line.extend_from_slice(text.as_bytes());
                line.push(b'\n');
                out.write_all(&line)?;
                out.flush()?;
                Ok(ExitCode::SUCCESS)
            }
            Outcome::Accepted => Ok(ExitCode::SUCCESS),
            Outcome::Cancelled => Ok(ExitCode::FAILURE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_get_one_newline() {
        let mut out = Vec::new();
        let code = Outcome::answer("s3 cr@t").deliver(&mut out).unwrap();
        assert_eq!(out, b"s3 cr@t\n");
        assert_eq!(code, ExitCode::SUCCESS);
    }

    #[test]
    fn accept_and_cancel_print_nothing() {
        let mut out = Vec::new();
        assert_eq!(
            Outcome::Accepted.deliver(&mut out).unwrap(),
            ExitCode::SUCCESS
        );
        assert_eq!(
            Outcome::Cancelled.deliver(&mut out).unwrap(),
            ExitCode::FAILURE
        );
        assert!(out.is_empty());
    }
}
