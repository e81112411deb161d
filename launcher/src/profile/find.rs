//! Finding a profile: by path, or by name in the user's configuration directory
//! (`$XDG_CONFIG_HOME/pv-launch/`, else `~/.config/pv-launch/`), trying `NAME`,
//! `NAME.toml` and `NAME.pvsc` there.

use std::path::{Path, PathBuf};

use super::error::ProfileError;

/// The directory named profiles are looked up in, if one can be worked out.
pub fn config_dir() -> Option<PathBuf> {
    xdg_dir("XDG_CONFIG_HOME", ".config")
}

/// `$VAR/pv-launch` for an XDG base directory variable (an absolute value only), else
/// `$HOME/HOME_RELATIVE/pv-launch`.
pub(crate) fn xdg_dir(var: &str, home_relative: &str) -> Option<PathBuf> {
    let from = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    from(var)
        .filter(|p| p.is_absolute())
        .or_else(|| from("HOME").map(|h| h.join(home_relative)))
        .map(|d| d.join("pv-launch"))
}

/// Whether a file of this name in [`config_dir`] is a profile [`locate`] finds by name:
/// `NAME.toml`, `NAME.pvsc`, or `NAME` without an extension (not a hidden file).
pub fn is_profile_file_name(file_name: &str) -> bool {
    !file_name.starts_with('.')
        && (file_name.ends_with(".toml")
            || file_name.ends_with(".pvsc")
            || !file_name.contains('.'))
}

/// The file `name_or_path` designates: an existing path, else a profile of that name in
/// [`config_dir`].
pub fn locate(name_or_path: &str) -> Result<PathBuf, ProfileError> {
    let direct = Path::new(name_or_path);
    if direct.is_file() {
        return Ok(direct.to_path_buf());
    }
    let mut looked = vec![direct.to_path_buf()];
    let is_bare_name =
        !name_or_path.contains(std::path::MAIN_SEPARATOR) && !name_or_path.is_empty();
    if let (true, Some(dir)) = (is_bare_name, config_dir()) {
        for candidate in [
            name_or_path.to_string(),
            format!("{name_or_path}.toml"),
            format!("{name_or_path}.pvsc"),
        ] {
            let p = dir.join(candidate);
            if p.is_file() {
                return Ok(p);
            }
            looked.push(p);
        }
    }
    Err(ProfileError::NotFound {
        name: name_or_path.to_string(),
        looked,
    })
}
