//! pv-launch: start a server somewhere (this host, a user's script, a remote host over ssh,
//! a batch job) and hand back a live, authenticated connection to it.
//!
//! Not built yet: the launcher-core issue fills this crate (profiles, templates, startup,
//! supervision, sessions and the CLI).
#![forbid(unsafe_code)]
