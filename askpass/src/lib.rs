//! pv-askpass: the helper that `ssh`, `ssh-add`, `ssh-agent` and `git` run as
//! `SSH_ASKPASS` / `GIT_ASKPASS` to ask the user for a secret or a yes/no answer.
//!
//! Not built yet: the askpass issue fills this crate (prompt classification, FLTK dialogs,
//! the terminal fallback and the bridge to an embedding application).
#![forbid(unsafe_code)]
