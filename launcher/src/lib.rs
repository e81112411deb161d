#![doc = include_str!("../README.md")]
//!
//! ## Modules
//!
//! Data flows one way through the modules:
//!
//! 1. [`profile`]: a TOML profile or a ParaView `.pvsc` file is loaded into server entries
//!    (errors name file, line and column);
//! 2. [`plan`]: one entry, the answers to its options ([`prompt`]) and the launch context
//!    ([`variables`]) become a fully resolved, typed [`plan::Plan`]: how the server starts
//!    (its command or a script) × where (this host, an ssh target with its tunnels and
//!    backend, or a batch job), the expected connection and its handshake, timeouts.
//!    `--dry-run` prints it, with every command line that will run;
//! 3. [`startup`]: the one room that starts every server and supervises it — the launch
//!    channel's exchange ([`startup::channel`]) written once, a process group on this host
//!    ([`startup::local`]), a command over ssh through either backend behind one face
//!    ([`startup::ssh`]: `openssh/`, `russh/`), and Slurm batch jobs ([`startup::batch`]);
//! 4. [`session`]: connects to what was started (listen or dial, handshake, TLS) and
//!    holds the result: the connection(s) and the [`startup::Server`]; or readies the path
//!    for a client program that connects by itself ([`session::prepare`]).
//!
//! Progress is reported as [`events::Event`]s; [`template`] is the `${NAME}` syntax and
//! [`source`] the file positions every error and warning carries.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod plan;
pub mod profile;
pub mod prompt;
pub mod saved;
pub mod session;
pub mod source;
pub mod startup;
pub mod template;
pub mod variables;

pub use plan::{Plan, PlanError};
pub use profile::{Profile, ProfileError, ServerEntry};
pub use prompt::{NonInteractive, PromptError, PromptRequest, Prompter, TerminalPrompter};
pub use source::{SourcePos, Warning};
pub use variables::LaunchContext;
