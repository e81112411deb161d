//! pv-launch: start a server somewhere (this host, a user's script, a remote host over ssh,
//! later a batch job) and hand back a live, authenticated connection to it.
//!
//! Data flows one way through the modules:
//!
//! 1. [`profile`]: a TOML profile or a ParaView `.pvsc` file is loaded into server entries
//!    (errors name file, line and column);
//! 2. [`plan`]: one entry, the answers to its options ([`prompt`]) and the launch context
//!    ([`variables`]) become a fully resolved [`plan::Plan`]: argv, environment, expected
//!    connection, timeouts. `--dry-run` prints it;
//! 3. [`startup`]: the plan's processes are started and supervised;
//! 4. [`session`]: the expected connection is handed to `pv-transport`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod prompt;
pub mod pvsc;
pub mod run;
pub mod session;
pub mod source;
pub mod ssh;
pub mod startup;
pub mod template;
pub mod variables;

pub use plan::{Plan, PlanError};
pub use profile::{Profile, ProfileError, ServerEntry};
pub use prompt::{NonInteractive, PromptError, PromptRequest, Prompter, TerminalPrompter};
pub use source::{SourcePos, Warning};
pub use variables::LaunchContext;
