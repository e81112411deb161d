//! pv-askpass: the helper that `ssh`, `ssh-add`, `ssh-agent` and `git` run as
//! `SSH_ASKPASS` / `GIT_ASKPASS` to ask the user for a secret or a yes/no answer.
//!
//! The contract (OpenSSH's, which git follows): the prompt arrives as `argv[1]` and may span
//! several lines; the answer and one newline go to stdout and nothing else does; exit
//! status 0 means "answered", 1 means "cancelled"; diagnostics go to stderr and never
//! contain the answer. `SSH_ASKPASS_PROMPT=confirm` asks a yes/no permission question
//! (exit 0 allows) and `SSH_ASKPASS_PROMPT=none` shows a notification until ssh sends
//! SIGTERM.
//!
//! How a prompt is asked, in order:
//! 1. [`bridge`]: when `PV_ASKPASS_SOCKET` names a private Unix socket, the prompt goes to
//!    the application listening there (the launcher's `Prompter`), which answers with its
//!    own UI;
//! 2. [`dialog`]: an FLTK dialog, when [`display::probe_x11`] finds a usable X display;
//! 3. [`terminal`]: the controlling terminal (`/dev/tty`);
//! 4. otherwise the helper exits 1 with a one-line reason on stderr.
//!
//! The FLTK dialogs ([`dialog`]) are the default cargo feature `dialogs`; without it the
//! crate builds no C++ and offers the rest (pv-launch's library uses it that way for the
//! bridge protocol and [`PromptKind`]).
//!
//! [`mod@classify`] decides what a prompt wants (a password, a visible one-time code, a
//! host-key yes/no, …), from the `SSH_ASKPASS_PROMPT` hint and the text; [`outcome`]
//! turns the user's answer into stdout and an exit status.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bridge;
pub mod classify;
#[cfg(feature = "dialogs")]
pub mod dialog;
pub mod display;
pub mod outcome;
pub mod terminal;

pub use classify::{Hint, Prompt, PromptKind, classify};
pub use outcome::Outcome;
