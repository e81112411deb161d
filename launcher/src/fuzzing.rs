//! Entry points for the fuzz targets in `fuzz/` (not a stable API).
//!
//! The fuzz targets call the parsers through this module alone, so that moving the modules
//! behind it changes this file and nothing in `fuzz/`. Each function is the parser that
//! the rest of the crate uses, unchanged; none of them touches the file system.

use std::path::Path;

use crate::profile::{Profile, ProfileError};

pub use crate::template::paraview_line::{
    EndlessSubstitution, analyse_arguments, command_argv, join_line, quote_if_spaced,
    split_command, substitute,
};

/// The file name errors and warnings name for text given to the loaders below.
const FUZZ_PATH: &str = "fuzz-input";

/// Load a TOML profile from `text`, as [`Profile::load`] loads a TOML file.
pub fn load_toml(text: &str) -> Result<Profile, ProfileError> {
    crate::profile::toml::load_str(Path::new(FUZZ_PATH), text)
}

/// Load a `.pvsc` profile from `text`, as [`Profile::load`] loads an XML file.
pub fn load_pvsc(text: &str) -> Result<Profile, ProfileError> {
    crate::profile::pvsc::load_str(Path::new(FUZZ_PATH), text)
}

/// The TOML text `pv-launch import` writes for a profile loaded from a `.pvsc` file.
pub fn import_to_toml(profile: &Profile) -> String {
    crate::profile::pvsc::import::to_toml(profile)
}
