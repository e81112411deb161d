//! Why a profile cannot be used: an unreadable file, a mistake at a line and column, an
//! unknown profile or server name.

use std::path::PathBuf;

use crate::source::SourcePos;

/// A profile that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Something in the file is wrong, at a known place.
    #[error("{at}: {message}")]
    At {
        /// Where.
        at: SourcePos,
        /// What is wrong, and what would be right.
        message: String,
    },
    /// No profile by that name was found.
    #[error("no profile {name:?}: looked in {}", looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound {
        /// The name asked for.
        name: String,
        /// The places looked at.
        looked: Vec<PathBuf>,
    },
    /// `--server` names no entry.
    #[error("{}: no server named {name:?}; servers: {}", path.display(), quoted_list(available))]
    NoSuchServer {
        /// The profile.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// The names there are.
        available: Vec<String>,
    },
    /// The profile has several servers and none was chosen.
    #[error("{} has {} servers: choose one with --server NAME: {}", path.display(), available.len(), quoted_list(available))]
    ServerNeeded {
        /// The profile.
        path: PathBuf,
        /// The names there are.
        available: Vec<String>,
    },
}

fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ProfileError {
    /// An error about the text at `at`.
    pub fn at(at: &SourcePos, message: impl Into<String>) -> Self {
        ProfileError::At {
            at: at.clone(),
            message: message.into(),
        }
    }
}
