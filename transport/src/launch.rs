//! The launch channel: the trusted pipe between the launcher and a server it starts.
//!
//! The channel is the child's stdin/stdout for a local start, or the ssh channel's for a
//! remote one. Both ends already trust it (only the launcher holds the other end), so:
//!
//! - **in** (launcher → server): one *secrets line* carries the one-time token (and, with TLS,
//!   the client certificate's fingerprint). Secrets never go on argv, where every local user
//!   can read them with `ps`.
//!
//!   ```text
//!   pv-launch-secrets v1 token=<64 hex> [client-cert-sha256=<64 hex>]
//!   ```
//!
//! - **out** (server → launcher): one *ready line* says the server is listening (or about to
//!   dial back) and what the client must know: the actual port (the server may have bound
//!   port 0), the handshake it speaks, the protocol version, and, with TLS, the SHA-256
//!   fingerprint of its per-launch certificate, which the client pins.
//!
//!   ```text
//!   pv-launch-ready v1 port=<n> handshake=native protocol=1 [tls-sha256=<64 hex>]
//!   ```
//!
//! A local child may instead get its token from the environment variable [`TOKEN_ENV`] (the
//! environment of a process is private to its owner); a remote one always reads stdin.
//! Other output of the server passes through untouched: [`ReadyLine::parse`] returns `None`
//! for lines that are not ready lines. Unknown `key=value` fields are ignored so later
//! versions can add fields; an unknown version is an error.

use std::fmt;
use std::path::Path;

use zeroize::{Zeroize, Zeroizing};

use crate::fingerprint::Fingerprint;
use crate::token::Token;

/// First word of a secrets line.
pub const SECRETS_PREFIX: &str = "pv-launch-secrets";
/// First word of a ready line.
pub const READY_PREFIX: &str = "pv-launch-ready";
/// Environment variable through which a *local* child may receive its token (hex).
pub const TOKEN_ENV: &str = "PV_LAUNCH_TOKEN";
/// Version of the launch-channel format.
pub const LAUNCH_CHANNEL_VERSION: &str = "v1";
/// Longest secrets or ready line accepted, in bytes.
pub const MAX_LINE: usize = 4096;

/// Reads a file that holds a secret (a `--token-file`, a password given by file): opened
/// once, then checked on the open file, so nobody can swap the path between the check and
/// the read. The file must belong to the effective user and must not be readable or
/// writable by group or others. The text is wiped when dropped. `what` names the file in
/// the error message (for example `"--token-file"`).
pub fn read_private_file(path: &Path, what: &str) -> Result<Zeroizing<String>, String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    let mut file = std::fs::File::open(path).map_err(|e| format!("{what} {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{what} {shown}: {e}"))?;
    let uid = crate::socket_table::effective_uid()
        .map_err(|e| format!("cannot tell which user this process runs as: {e}"))?;
    if meta.uid() != uid {
        return Err(format!(
            "{what} {shown} belongs to uid {}, not to you (uid {uid}): refused",
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{what} {shown} can be read or written by others (mode {:o}): chmod 600 it",
            meta.mode() & 0o777
        ));
    }
    // Sized up front so that reading does not regrow the buffer and leave unwiped copies.
    let mut text = Zeroizing::new(String::with_capacity(meta.len() as usize + 64));
    file.read_to_string(&mut text)
        .map_err(|e| format!("{what} {shown}: {e}"))?;
    Ok(text)
}

/// A launch-channel line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad {what} line on the launch channel: {reason}")]
pub struct LaunchLineError {
    what: &'static str,
    reason: String,
}

fn line_error(what: &'static str, reason: impl Into<String>) -> LaunchLineError {
    LaunchLineError {
        what,
        reason: reason.into(),
    }
}

/// Split `line` into its `key=value` fields after checking prefix and version.
/// Returns `None` when the line does not start with `prefix`.
fn fields<'a>(
    line: &'a str,
    prefix: &str,
    what: &'static str,
) -> Option<Result<Vec<(&'a str, &'a str)>, LaunchLineError>> {
    let line = line.trim_end_matches(['\r', '\n']);
    let mut words = line.split(' ');
    if words.next() != Some(prefix) {
        return None;
    }
    Some((|| {
        if line.len() > MAX_LINE {
            return Err(line_error(what, format!("longer than {MAX_LINE} bytes")));
        }
        match words.next() {
            Some(LAUNCH_CHANNEL_VERSION) => {}
            Some(v) => {
                return Err(line_error(
                    what,
                    format!(
                        "version {v:?} is not supported (this build speaks {LAUNCH_CHANNEL_VERSION})"
                    ),
                ));
            }
            None => return Err(line_error(what, "no version")),
        }
        words
            .filter(|w| !w.is_empty())
            .map(|w| {
                w.split_once('=')
                    .ok_or_else(|| line_error(what, format!("field {w:?} is not key=value")))
            })
            .collect()
    })())
}

/// What the launcher sends the server on the launch channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Secrets {
    /// The one-time token of the native handshake.
    pub token: Token,
    /// With mutual TLS: the fingerprint of the client's certificate, which the server pins.
    pub client_cert: Option<Fingerprint>,
}

impl Secrets {
    /// The line to write (with its trailing newline). It holds the secret: wipe it after use.
    pub fn to_line(&self) -> String {
        let mut hex = self.token.to_hex();
        let mut line = format!("{SECRETS_PREFIX} {LAUNCH_CHANNEL_VERSION} token={hex}");
        hex.zeroize();
        if let Some(fp) = &self.client_cert {
            line.push_str(&format!(" client-cert-sha256={}", fp.to_hex()));
        }
        line.push('\n');
        line
    }

    /// Parse a secrets line; `None` when the line is not one.
    pub fn parse(line: &str) -> Option<Result<Secrets, LaunchLineError>> {
        const WHAT: &str = "secrets";
        let fields = match fields(line, SECRETS_PREFIX, WHAT)? {
            Ok(f) => f,
            Err(e) => return Some(Err(e)),
        };
        let mut token = None;
        let mut client_cert = None;
        for (k, v) in fields {
            match k {
                "token" => {
                    token = Some(Token::from_hex(v).map_err(|e| line_error(WHAT, e.to_string())))
                }
                "client-cert-sha256" => {
                    client_cert =
                        Some(Fingerprint::from_hex(v).map_err(|e| line_error(WHAT, e.to_string())))
                }
                _ => {}
            }
        }
        Some((|| {
            Ok(Secrets {
                token: token.ok_or_else(|| line_error(WHAT, "no token= field"))??,
                client_cert: client_cert.transpose()?,
            })
        })())
    }
}

/// What a server announces on the launch channel once it listens (or is about to dial back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyLine {
    /// The port the server listens on (forward), or dials (reverse).
    pub port: u16,
    /// The handshake it speaks (`native`, `paraview`, `none`).
    pub handshake: String,
    /// The native protocol version it speaks.
    pub protocol: u32,
    /// With TLS: the SHA-256 fingerprint of the server's certificate.
    pub tls: Option<Fingerprint>,
}

impl ReadyLine {
    /// Parse a line of the server's output; `None` when the line is not a ready line.
    pub fn parse(line: &str) -> Option<Result<ReadyLine, LaunchLineError>> {
        const WHAT: &str = "ready";
        let fields = match fields(line, READY_PREFIX, WHAT)? {
            Ok(f) => f,
            Err(e) => return Some(Err(e)),
        };
        Some((|| {
            let mut port = None;
            let mut handshake = None;
            let mut protocol = 1;
            let mut tls = None;
            for (k, v) in fields {
                match k {
                    "port" => {
                        port = Some(v.parse::<u16>().map_err(|_| {
                            line_error(WHAT, format!("port {v:?} is not a number in 0-65535"))
                        })?)
                    }
                    "handshake" => handshake = Some(v.to_string()),
                    "protocol" => {
                        protocol = v.parse().map_err(|_| {
                            line_error(WHAT, format!("protocol {v:?} is not a number"))
                        })?
                    }
                    "tls-sha256" => {
                        tls = Some(
                            Fingerprint::from_hex(v)
                                .map_err(|e| line_error(WHAT, e.to_string()))?,
                        )
                    }
                    _ => {}
                }
            }
            Ok(ReadyLine {
                port: port.ok_or_else(|| line_error(WHAT, "no port= field"))?,
                handshake: handshake.unwrap_or_else(|| "native".to_string()),
                protocol,
                tls,
            })
        })())
    }
}

impl fmt::Display for ReadyLine {
    /// The line as the server prints it (without the newline).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{READY_PREFIX} {LAUNCH_CHANNEL_VERSION} port={} handshake={} protocol={}",
            self.port, self.handshake, self.protocol
        )?;
        if let Some(fp) = &self.tls {
            write!(f, " tls-sha256={}", fp.to_hex())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private_file(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_private_file_is_read_and_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = private_file(dir.path(), "good", "secret\n", 0o600);
        assert_eq!(
            read_private_file(&good, "--token-file").unwrap().as_str(),
            "secret\n"
        );
        let open = private_file(dir.path(), "open", "secret", 0o644);
        let e = read_private_file(&open, "--token-file").unwrap_err();
        assert!(e.contains("--token-file") && e.contains("mode 644"), "{e}");
        // A symbolic link is judged by the file it reaches, not by the link's own mode.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        let e = read_private_file(&link, "--token-file").unwrap_err();
        assert!(e.contains("mode 644"), "{e}");
        let missing = read_private_file(&dir.path().join("none"), "--token-file").unwrap_err();
        assert!(missing.contains("none"), "{missing}");
    }

    #[test]
    fn a_file_of_another_user_is_refused() {
        let me = crate::socket_table::effective_uid().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let theirs = private_file(dir.path(), "theirs", "secret", 0o600);
        if me == 0 {
            std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        } else {
            // Not root: a root-owned private file stands in for another user's.
            let shadow = Path::new("/etc/shadow");
            let e = read_private_file(shadow, "--token-file").unwrap_err();
            assert!(e.contains("/etc/shadow"), "{e}");
            return;
        }
        let e = read_private_file(&theirs, "--token-file").unwrap_err();
        assert!(e.contains("belongs to uid 65534"), "{e}");
    }

    /// The path flips between a private file and a world-readable one while it is read:
    /// checking the path and then opening it again would now and then return the
    /// world-readable file's text; checking the opened file never does.
    #[test]
    fn swapping_the_file_during_the_check_never_gets_an_open_file_through() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let good = private_file(dir.path(), "good", "private", 0o600);
        let open = private_file(dir.path(), "open", "WORLD-READABLE", 0o644);
        let path = dir.path().join("token");
        std::os::unix::fs::symlink(&good, &path).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flipper = {
            let (stop, path, dir) = (stop.clone(), path.clone(), dir.path().to_owned());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let target = if n % 2 == 0 { &open } else { &good };
                    let tmp = dir.join(format!("tmp{n}"));
                    std::os::unix::fs::symlink(target, &tmp).unwrap();
                    std::fs::rename(&tmp, &path).unwrap();
                    n += 1;
                }
                n
            })
        };
        let (mut read, mut refused) = (0, 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            match read_private_file(&path, "--token-file") {
                Ok(text) => {
                    assert_eq!(text.as_str(), "private");
                    read += 1;
                }
                Err(_) => refused += 1,
            }
        }
        stop.store(true, Ordering::Relaxed);
        let flips = flipper.join().unwrap();
        assert!(
            read > 0 && refused > 0 && flips > 100,
            "{read} read, {refused} refused, {flips} flips"
        );
    }

    #[test]
    fn secrets_round_trip_and_other_lines_pass() {
        let s = Secrets {
            token: Token::generate(),
            client_cert: Some(Fingerprint::of_der(b"cert")),
        };
        let line = s.to_line();
        assert!(line.ends_with('\n'));
        assert_eq!(Secrets::parse(&line).unwrap().unwrap(), s);
        assert!(Secrets::parse("hello").is_none());
        assert!(Secrets::parse("pv-launch-secrets v1").unwrap().is_err());
        assert!(
            Secrets::parse("pv-launch-secrets v9 token=00")
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn ready_round_trip() {
        let r = ReadyLine {
            port: 4242,
            handshake: "native".into(),
            protocol: 1,
            tls: Some(Fingerprint::of_der(b"x")),
        };
        assert_eq!(ReadyLine::parse(&r.to_string()).unwrap().unwrap(), r);
        let e = ReadyLine::parse("pv-launch-ready v1 port=99999")
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("0-65535"), "{e}");
        assert!(ReadyLine::parse("Waiting for client...").is_none());
        let future = ReadyLine::parse("pv-launch-ready v1 port=1 later=field").unwrap();
        assert_eq!(future.unwrap().port, 1);
    }
}
