//! Asking the user for option values.
//!
//! The launcher never talks to a user directly: it asks a [`Prompter`]. The CLI uses
//! [`TerminalPrompter`] on a terminal and [`NonInteractive`] otherwise; an application
//! embedding pv-launch implements [`Prompter`] with its own dialogs.
//!
//! Answers are [`Zeroizing`] strings: a password typed into a prompter is wiped from memory
//! when the launcher drops it.
//!
//! ```
//! use pv_launch::prompt::{Prompter, PromptRequest, PromptError, Zeroizing};
//!
//! /// Answers every option with its default, and "42" when there is none.
//! struct Defaults;
//!
//! impl Prompter for Defaults {
//!     fn ask(&self, request: &PromptRequest<'_>) -> Result<Zeroizing<String>, PromptError> {
//!         Ok(Zeroizing::new(request.default.clone().unwrap_or_else(|| "42".to_string())))
//!     }
//! }
//! ```

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;

pub use zeroize::Zeroizing;

use pv_askpass::terminal::read_line_wiped;

use crate::profile::{OptionKind, OptionSpec};

/// One question: which option, its proposed default, and why a previous answer was refused.
#[derive(Debug)]
pub struct PromptRequest<'a> {
    /// The option asked for (name, label, type, limits).
    pub option: &'a OptionSpec,
    /// The value used when the user just accepts (`None`: there is none, an answer is needed).
    pub default: Option<String>,
    /// Why the previous answer was refused, when asking again.
    pub problem: Option<String>,
}

/// Why no answer came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// The user cancelled: the launch stops.
    #[error("cancelled")]
    Cancelled,
    /// No answer can be had (no terminal, no default).
    #[error("{0}")]
    NoAnswer(String),
}

/// Answers option prompts (and, later, password prompts) for the launcher.
pub trait Prompter {
    /// Ask for the value of `request.option`, as text. The launcher validates the answer
    /// (range, step, enumeration) and asks again with `problem` set if it is refused.
    /// The answer may be a password: it is wiped when dropped.
    fn ask(&self, request: &PromptRequest<'_>) -> Result<Zeroizing<String>, PromptError>;

    /// Whether asking again after a refused answer makes sense (false for prompters that
    /// would give the same answer).
    fn interactive(&self) -> bool {
        true
    }
}

/// Never asks: every option takes its default (or its `--set` value, which the launcher
/// applies before asking); an option with no default is an error.
#[derive(Debug, Default, Clone, Copy)]
pub struct NonInteractive;

impl Prompter for NonInteractive {
    fn ask(&self, request: &PromptRequest<'_>) -> Result<Zeroizing<String>, PromptError> {
        request.default.clone().map(Zeroizing::new).ok_or_else(|| {
            PromptError::NoAnswer(format!(
                "option {} ({}) has no default and nobody can be asked: give it with --set {}=VALUE",
                request.option.name, request.option.label, request.option.name
            ))
        })
    }

    fn interactive(&self) -> bool {
        false
    }
}

/// Asks on the terminal (stderr for the question, stdin for the answer). An empty answer
/// takes the default; end of input cancels. Password input is not echoed when stdin is a
/// terminal.
#[derive(Debug, Default, Clone, Copy)]
pub struct TerminalPrompter;

impl TerminalPrompter {
    /// Whether a terminal is there to ask on.
    pub fn available() -> bool {
        std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
    }
}

fn describe(kind: &OptionKind) -> String {
    match kind {
        OptionKind::Int { min, max, step, .. } if *step > 1 => {
            format!("integer {min}..={max}, step {step}")
        }
        OptionKind::Int { min, max, .. } => format!("integer {min}..={max}"),
        OptionKind::Double {
            min,
            max,
            step: Some(step),
            ..
        } => format!("number {min}..={max}, step {step}"),
        OptionKind::Double { min, max, .. } => format!("number {min}..={max}"),
        OptionKind::Boolean {
            true_value,
            false_value,
            ..
        } => format!("{true_value:?} or {false_value:?}"),
        OptionKind::Enumeration { entries, .. } => entries
            .iter()
            .map(|e| {
                if e.label == e.value {
                    format!("{:?}", e.value)
                } else {
                    format!("{:?} ({})", e.value, e.label)
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.type_name().to_string(),
    }
}

impl Prompter for TerminalPrompter {
    fn ask(&self, request: &PromptRequest<'_>) -> Result<Zeroizing<String>, PromptError> {
        let option = request.option;
        let mut err = std::io::stderr();
        if let Some(problem) = &request.problem {
            let _ = writeln!(err, "  {problem}");
        }
        let default = match (&request.default, option.kind.is_secret()) {
            (Some(_), true) => " [keep default]".to_string(),
            (Some(d), false) => format!(" [{d}]"),
            (None, _) => String::new(),
        };
        let _ = write!(
            err,
            "{} ({}){default}: ",
            option.label,
            describe(&option.kind)
        );
        let _ = err.flush();
        let echo_off = option.kind.is_secret().then(EchoOff::new).flatten();
        // Read from a duplicate of the descriptor, not through std's shared stdin buffer,
        // whose copy of the answer would never be wiped.
        let read = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .and_then(|fd| read_line_wiped(&mut std::fs::File::from(fd)));
        if echo_off.is_some() {
            let _ = writeln!(err);
        }
        drop(echo_off);
        let answer = read
            .map_err(|e| PromptError::NoAnswer(e.to_string()))?
            .ok_or(PromptError::Cancelled)?;
        if answer.is_empty() {
            if let Some(d) = &request.default {
                return Ok(Zeroizing::new(d.clone()));
            }
        }
        Ok(answer)
    }
}

/// Terminal echo switched off on stdin until dropped.
struct EchoOff {
    saved: nix::sys::termios::Termios,
}

impl EchoOff {
    fn new() -> Option<EchoOff> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet).ok()?;
        Some(EchoOff { saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every prompter hands back an answer that is wiped on drop: this does not compile if
    /// the trait returns a plain `String` again.
    #[test]
    fn answers_are_zeroizing() {
        fn answer_of(p: &dyn Prompter, r: &PromptRequest<'_>) -> Zeroizing<String> {
            p.ask(r).unwrap_or_default()
        }
        let _: fn(&dyn Prompter, &PromptRequest<'_>) -> Zeroizing<String> = answer_of;
    }
}
