//! pv-launch: start a server somewhere (this host, a user's script, a remote host over
//! ssh, and next a batch job) and hand back a live, authenticated connection to it.
//!
//! This is the library an application embeds; it carries no GUI toolkit and no CLI
//! crates (the `pv-launch` command is the default cargo feature `cli`, built on top).
//! Data flows one way through the modules:
//!
//! 1. [`profile`]: a TOML profile or a ParaView `.pvsc` file is loaded into server entries
//!    (errors name file, line and column);
//! 2. [`plan`]: one entry, the answers to its options ([`prompt`]) and the launch context
//!    ([`variables`]) become a fully resolved, typed [`plan::Plan`]: how the server starts
//!    (its command or a script) × where (this host, or an ssh target with its tunnels and
//!    backend), the expected connection and its handshake, timeouts. `--dry-run` prints
//!    it, with every command line that will run;
//! 3. [`startup`]: the one room that starts every server and supervises it — the launch
//!    channel's exchange ([`startup::channel`]) written once, a process group on this host
//!    ([`startup::local`]), a command over ssh through either backend behind one face
//!    ([`startup::ssh`]: `openssh/`, `russh/`), and the place batch jobs join;
//! 4. [`session`]: connects to what was started (listen or dial, handshake, TLS) and
//!    holds the result: the connection(s) and the [`startup::Server`].
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
