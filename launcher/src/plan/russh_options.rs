//! What the russh backend (a profile's `backend = "russh"`) takes from a plan's ssh
//! settings: a pure, plan-time check over the typed [`SshTarget`] and its extra OpenSSH
//! options ([`RusshSettings::for_target`]), so a profile fails with its file and line
//! before anything starts. The runtime maps the result onto the backend's connection
//! options (`startup::ssh`, cargo feature `russh`).
//!
//! ssh options are written for OpenSSH; the russh backend honours what it can and refuses
//! the rest:
//!
//! | option | russh backend |
//! | --- | --- |
//! | `-p`, `-l`, `-i` | port, user, identity files (ed25519 / ECDSA, OpenSSH format) |
//! | `UserKnownHostsFile` | the one known_hosts file (else `~/.ssh/known_hosts`) |
//! | `StrictHostKeyChecking` | `ask` (default) asks the prompter; `yes` refuses unknown hosts; others refused |
//! | `PreferredAuthentications` | which methods are tried (order: publickey, keyboard-interactive, password) |
//! | `ConnectTimeout`, `ServerAliveInterval`, `ServerAliveCountMax` | honoured |
//! | `BatchMode=yes` (`prompts = "batch-mode"`) | no prompter: known hosts and unencrypted keys only |
//! | `-F /dev/null`, `IdentitiesOnly`, `IdentityAgent=none`, `NumberOfPasswordPrompts`, `ExitOnForwardFailure`, `-T`, `-x`, `-a`, `-q` | accepted; they say what this backend does anyway |
//! | `GlobalKnownHostsFile` | not read (a warning unless `/dev/null`): a host listed only there gets the host-key question |
//! | jump hosts (`-J`, `ProxyJump`), `ProxyCommand`, `-F <file>`, any other option | refused: use `backend = "openssh"` |

use std::path::PathBuf;
use std::time::Duration;

use super::ssh_target::SshTarget;

/// What the russh backend takes from a plan's OpenSSH options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RusshSettings {
    /// `UserKnownHostsFile` (`~/` expanded); `None`: `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    /// Every `-i`, in order.
    pub identity_files: Vec<PathBuf>,
    /// `PreferredAuthentications`, split on commas; `None`: every method.
    pub methods: Option<Vec<String>>,
    /// `StrictHostKeyChecking=yes`: unknown hosts are refused without a question.
    pub refuse_unknown_hosts: bool,
    /// `ConnectTimeout`.
    pub connect_timeout: Option<Duration>,
    /// `ServerAliveInterval`.
    pub alive_interval: Option<u32>,
    /// `ServerAliveCountMax`.
    pub alive_count: Option<u32>,
    /// Options accepted without effect that the user may expect to matter (plan warnings).
    pub ignored: Vec<String>,
}

/// The options of ssh's command line that take a value (`ssh(1)`).
const VALUE_FLAGS: &str = "BbcDEeFIiJLlmOopQRSWw";
/// Flags without a value that only say what the russh backend does anyway.
const NO_OP_FLAGS: &str = "Txaq";

fn refuse(what: &str) -> String {
    format!("the russh ssh backend cannot honour {what}; remove it or use backend = \"openssh\"")
}

fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(rest),
        None => PathBuf::from(path),
    }
}

fn seconds(key: &str, value: &str) -> Result<u32, String> {
    value
        .parse()
        .map_err(|_| format!("ssh option {key}={value}: expected whole seconds"))
}

impl RusshSettings {
    /// Read `args` (an OpenSSH option list): what the russh backend honours, or why it cannot run them.
    pub fn from_args(args: &[String]) -> Result<RusshSettings, String> {
        let mut settings = RusshSettings::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
                return Err(refuse(&format!("the ssh argument {arg:?}")));
            };
            let flag = flags.chars().next().unwrap_or_default();
            if !VALUE_FLAGS.contains(flag) {
                if let Some(other) = flags.chars().find(|c| !NO_OP_FLAGS.contains(*c)) {
                    return Err(refuse(&format!("the ssh flag -{other}")));
                }
                continue;
            }
            let joined = &flags[flag.len_utf8()..];
            let value = if joined.is_empty() {
                args.next()
                    .ok_or_else(|| format!("the ssh option -{flag} has no value"))?
                    .as_str()
            } else {
                joined
            };
            match flag {
                // The plan's port and user are the target's own.
                'p' | 'l' => {}
                'i' => settings.identity_files.push(expand_home(value)),
                'F' if value == "/dev/null" => {}
                'F' => return Err(refuse(&format!("-F {value} (it reads no ssh config file)"))),
                'J' => return Err(refuse(&format!("jump hosts (-J {value})"))),
                'o' => settings.option(value)?,
                other => return Err(refuse(&format!("the ssh option -{other} {value}"))),
            }
        }
        Ok(settings)
    }

    /// One `-o Key=Value` (or `Key Value`).
    fn option(&mut self, option: &str) -> Result<(), String> {
        let (key, value) = option
            .split_once(|c: char| c == '=' || c.is_whitespace())
            .map(|(k, v)| (k.trim(), v.trim()))
            .unwrap_or((option, ""));
        match key.to_ascii_lowercase().as_str() {
            "userknownhostsfile" => {
                let files: Vec<&str> = value.split_whitespace().collect();
                match files.as_slice() {
                    [one] if !one.contains('%') => self.known_hosts = Some(expand_home(one)),
                    _ => {
                        return Err(refuse(&format!(
                            "-o {option} (it reads exactly one known_hosts file, without % tokens)"
                        )));
                    }
                }
            }
            "globalknownhostsfile" if value == "/dev/null" => {}
            "globalknownhostsfile" => self.ignored.push(format!(
                "the russh ssh backend does not read {option}: a host listed only there gets the host-key question"
            )),
            "stricthostkeychecking" => match value.to_ascii_lowercase().as_str() {
                "ask" => self.refuse_unknown_hosts = false,
                "yes" => self.refuse_unknown_hosts = true,
                _ => {
                    return Err(refuse(&format!(
                        "-o {option} (it asks about unknown hosts, or refuses them with StrictHostKeyChecking=yes)"
                    )));
                }
            },
            "preferredauthentications" => {
                let methods: Vec<String> = value.split(',').map(|m| m.trim().to_string()).collect();
                if let Some(m) = methods
                    .iter()
                    .find(|m| !["publickey", "keyboard-interactive", "password"].contains(&m.as_str()))
                {
                    return Err(refuse(&format!("the authentication method {m:?}")));
                }
                self.methods = Some(methods);
            }
            "connecttimeout" => {
                self.connect_timeout = Some(Duration::from_secs(seconds(key, value)?.into()));
            }
            "serveraliveinterval" => self.alive_interval = Some(seconds(key, value)?),
            "serveralivecountmax" => self.alive_count = Some(seconds(key, value)?),
            "identitiesonly" | "numberofpasswordprompts" | "batchmode" => {}
            "identityagent" if value.eq_ignore_ascii_case("none") => {}
            "exitonforwardfailure" if value.eq_ignore_ascii_case("yes") => {}
            "proxyjump" => return Err(refuse(&format!("jump hosts (-o {option})"))),
            _ => return Err(refuse(&format!("the ssh option -o {option}"))),
        }
        Ok(())
    }
}

impl RusshSettings {
    /// What the russh backend takes from `target` (its typed settings and its extra
    /// options), or why it cannot run it: a pure check made when the plan is made, so a
    /// profile fails with its file and line before anything starts.
    pub fn for_target(target: &SshTarget) -> Result<RusshSettings, String> {
        if target.program() != "ssh" {
            return Err(
                "ssh.program has no meaning with backend = \"russh\" (no ssh program runs)".into(),
            );
        }
        if !target.jump_hosts().is_empty() {
            return Err(refuse(&format!(
                "jump hosts (-J {})",
                target.jump_hosts().join(",")
            )));
        }
        let mut settings = RusshSettings::from_args(target.extra_options())?;
        if let Some(i) = target.identity_file() {
            settings.identity_files.insert(0, i.to_path_buf());
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn what_the_russh_backend_honours() {
        let s = RusshSettings::from_args(&args(&[
            "-p",
            "2222",
            "-l",
            "u",
            "-i",
            "/k/id",
            "-F",
            "/dev/null",
            "-o",
            "UserKnownHostsFile=/k/known_hosts",
            "-oStrictHostKeyChecking=yes",
            "-o",
            "PreferredAuthentications=publickey,password",
            "-o",
            "ConnectTimeout 7",
            "-o",
            "IdentityAgent=none",
            "-o",
            "GlobalKnownHostsFile=/etc/other",
            "-T",
        ]))
        .unwrap();
        assert_eq!(s.known_hosts, Some(PathBuf::from("/k/known_hosts")));
        assert_eq!(s.identity_files, [PathBuf::from("/k/id")]);
        assert!(s.refuse_unknown_hosts);
        assert_eq!(
            s.methods,
            Some(vec!["publickey".to_string(), "password".to_string()])
        );
        assert_eq!(s.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(s.ignored.len(), 1, "{:?}", s.ignored);
    }

    #[test]
    fn what_it_refuses() {
        for bad in [
            &["-J", "jump"][..],
            &["-o", "ProxyJump=jump"],
            &["-o", "ProxyCommand=nc %h %p"],
            &["-F", "/home/u/.ssh/config"],
            &["-o", "StrictHostKeyChecking=no"],
            &["-o", "UserKnownHostsFile=/a /b"],
            &["-o", "PreferredAuthentications=gssapi-with-mic"],
            &["-v"],
            &["-D", "1080"],
        ] {
            let e = RusshSettings::from_args(&args(bad)).unwrap_err();
            assert!(e.contains("backend = \"openssh\""), "{bad:?}: {e}");
        }
    }
}
