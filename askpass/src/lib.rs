#![doc = include_str!("../README.md")]
//!
//! ## The library's modules
//!
//! [`mod@classify`] decides what a prompt wants from the `SSH_ASKPASS_PROMPT` hint and the
//! text; [`bridge`] is both ends of the `PV_ASKPASS_SOCKET` protocol; [`display`] probes
//! the X display before FLTK is touched; `dialog` (feature `dialogs`) shows the FLTK
//! dialogs; [`terminal`] asks on `/dev/tty`; [`outcome`] turns the user's answer into
//! stdout and an exit status.
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
