//! Option values remembered for next time (ParaView's `save`): the value a user chose for an
//! option (at the prompt or with `--set`) becomes that option's default on the next launch
//! of the same server of the same profile file.
//!
//! Kept in one JSON file, `$XDG_STATE_HOME/pv-launch/saved-options.json` (else
//! `~/.local/state/pv-launch/`), keyed by the profile's canonical path, the server's name
//! and the option's name. The file is written whole (a temporary file in the same
//! directory, mode 0600, renamed over the old one), so a reader never sees half of it.
//! Password options are never saved: a profile that asks for it is refused when it loads.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name in [`state_dir`].
pub const FILE_NAME: &str = "saved-options.json";

/// Values by option name, for one server.
pub type Values = BTreeMap<String, String>;

/// The directory the saved values live in: `$XDG_STATE_HOME/pv-launch/` (an absolute
/// `XDG_STATE_HOME` only), else `~/.local/state/pv-launch/`.
pub fn state_dir() -> Option<PathBuf> {
    crate::profile::find::xdg_dir("XDG_STATE_HOME", ".local/state")
}

/// Every saved value, as the file holds them.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SavedOptions {
    /// Format version, 1.
    v: u32,
    /// Profile path → server name → option name → value.
    profiles: BTreeMap<String, BTreeMap<String, Values>>,
}

/// Why the saved values could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SaveError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// The key a profile file is saved under: its canonical path when it has one.
fn profile_key(profile: &Path) -> String {
    profile
        .canonicalize()
        .unwrap_or_else(|_| profile.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

impl SavedOptions {
    /// Read `path`; a missing file is an empty store.
    pub fn load(path: &Path) -> Result<SavedOptions, SaveError> {
        let err = |message: String| SaveError {
            path: path.to_path_buf(),
            message,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let saved: SavedOptions =
                    serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
                if saved.v != 1 {
                    return Err(err(format!("unknown format version {}", saved.v)));
                }
                Ok(saved)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SavedOptions {
                v: 1,
                ..SavedOptions::default()
            }),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// The values saved for `server` of the profile file `profile`.
    pub fn values(&self, profile: &Path, server: &str) -> Values {
        self.profiles
            .get(&profile_key(profile))
            .and_then(|servers| servers.get(server))
            .cloned()
            .unwrap_or_default()
    }

    /// Remember `values` for `server` of `profile` (added to, or replacing, what was
    /// there); whether anything changed.
    pub fn remember(&mut self, profile: &Path, server: &str, values: Values) -> bool {
        let slot = self
            .profiles
            .entry(profile_key(profile))
            .or_default()
            .entry(server.to_string())
            .or_default();
        let before = slot.clone();
        slot.extend(values);
        *slot != before
    }

    /// Write the store to `path` atomically, mode 0600 (its directory made 0700 if new).
    pub fn store(&self, path: &Path) -> Result<(), SaveError> {
        let err = |message: String| SaveError {
            path: path.to_path_buf(),
            message,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| err(format!("cannot create its directory: {e}")))?;
        }
        // NamedTempFile is created 0600.
        let mut tmp = tempfile::Builder::new()
            .prefix(".saved-options")
            .tempfile_in(dir)
            .map_err(|e| err(e.to_string()))?;
        let text = serde_json::to_string_pretty(self).map_err(|e| err(e.to_string()))?;
        tmp.write_all(text.as_bytes())
            .and_then(|()| tmp.write_all(b"\n"))
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| err(e.to_string()))?;
        tmp.persist(path).map_err(|e| err(e.error.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn values_round_trip_by_profile_server_and_option_in_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state/pv-launch").join(FILE_NAME);
        let profile = dir.path().join("p.toml");
        std::fs::write(&profile, "").unwrap();
        let mut saved = SavedOptions::load(&file).unwrap();
        assert!(saved.values(&profile, "a").is_empty());
        let v = Values::from([("N".to_string(), "4".to_string())]);
        assert!(saved.remember(&profile, "a", v.clone()));
        assert!(!saved.remember(&profile, "a", v.clone()));
        saved.store(&file).unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(file.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let again = SavedOptions::load(&file).unwrap();
        assert_eq!(again.values(&profile, "a"), v);
        assert!(again.values(&profile, "b").is_empty());
        // The same file named another way is the same profile.
        let other_name = dir.path().join(".").join("p.toml");
        assert_eq!(again.values(&other_name, "a"), v);
        std::fs::write(&file, "{not json").unwrap();
        assert!(SavedOptions::load(&file).is_err());
    }
}
