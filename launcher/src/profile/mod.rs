//! Server profiles: named server entries, each saying where the server is (a resource),
//! how it is started (manual, or a command through a mechanism), which options the user is
//! asked for, and the timeouts and handshake of the connection.
//!
//! Both file formats load into one model (`model.rs`, re-exported here): pv-launch's TOML
//! ([`toml`]) and ParaView's `.pvsc` XML ([`pvsc`]). [`Profile::load`] chooses between
//! them. Nothing here is resolved yet: option values, variables and final ports are decided
//! when a [`crate::plan::Plan`] is made.
//!
//! Inside, the arrows run one way: this file (the dispatch) uses the loaders, the loaders
//! use the model (`model.rs`, `options.rs`, `error.rs`), and the model knows no file
//! format.

mod error;
pub mod find;
mod model;
pub mod options;
pub mod pvsc;
pub mod toml;

use std::path::Path;

pub use error::ProfileError;
pub use model::*;
pub use options::{EnumEntry, OptionKind, OptionSpec, RangeDefault};

impl Profile {
    /// Load a profile file, TOML or `.pvsc` (chosen by content: a file whose first
    /// non-blank character is `<` is XML).
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if text.trim_start().starts_with('<') {
            pvsc::load_str(path, &text)
        } else {
            toml::load_str(path, &text)
        }
    }
}
