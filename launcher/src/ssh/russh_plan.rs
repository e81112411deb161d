//! Running an ssh [`Plan`](crate::plan::Plan) with the russh backend (a profile's
//! `backend = "russh"`): the plan's ssh options mapped onto
//! `russh_backend::RusshOptions` (cargo feature `russh`), then the same steps as the
//! OpenSSH backend's [`SshLaunch`](super::SshLaunch) — authenticate, reverse tunnel,
//! remote command with the secrets on its stdin, forward tunnel — on one in-process
//! connection.
//!
//! The plan's ssh argv is written for OpenSSH; the russh backend takes from it what it
//! can honour and refuses the rest ([`RusshSettings::from_args`], checked when the plan
//! is made, so a profile fails with its file and line before anything starts):
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
    /// Read `args` (an [`SshTarget`](super::SshTarget)'s options, or any OpenSSH option
    /// list): what the russh backend honours, or why it cannot run them.
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

#[cfg(feature = "russh")]
pub use launch::*;

#[cfg(feature = "russh")]
mod launch {
    use std::net::SocketAddr;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{ExitStatus, Stdio};
    use std::sync::Arc;
    use std::time::Duration;

    use pv_transport::launch::{ReadyLine, Secrets};
    use tokio::sync::mpsc;

    use super::RusshSettings;
    use crate::plan::Plan;
    use crate::prompt::{PromptError, PromptRequest, Prompter};
    use crate::ssh::russh_backend::{RusshConnection, RusshOptions, RusshRemote, local_address};
    use crate::ssh::{
        AskpassProgram, MasterOptions, RemoteOutput, SshError, SshTarget, TunnelMode, find_askpass,
        ssh_launch,
    };

    /// One russh launch: where to, how to authenticate, the tunnel, how long the ready
    /// line may take. Made from a plan by [`russh_launch`].
    #[derive(Debug)]
    pub struct RusshLaunch {
        /// Where ssh goes.
        pub target: SshTarget,
        /// How the connection is made and authenticated.
        pub options: RusshOptions,
        /// The tunnel.
        pub tunnel: TunnelMode,
        /// How long to wait for the ready line (`None`: do not wait for one).
        pub ready_timeout: Option<Duration>,
    }

    /// What [`RusshLaunch`] runs `plan` with, and the remote shell command: the same
    /// target, tunnel and ready timeout as [`ssh_launch`] (so both backends map a plan's
    /// tunnels the same way), with the ssh options read by [`RusshSettings::from_args`].
    /// Prompts go to `master.prompter`; without one, to the askpass helper
    /// `master.askpass` run as ssh runs it (the prompt as its argument, the answer on its
    /// stdout, a non-zero exit cancels); with `BatchMode=yes`, nowhere.
    pub fn russh_launch(
        plan: &Plan,
        master: &MasterOptions,
        with_ready_line: bool,
    ) -> Result<(RusshLaunch, String), SshError> {
        let (launch, command) = ssh_launch(plan, master.clone(), with_ready_line)?;
        let settings = RusshSettings::from_args(launch.target.args()).map_err(SshError::Invalid)?;
        let prompter: Option<Arc<dyn Prompter + Send + Sync>> = if launch.target.batch_mode() {
            None
        } else {
            Some(
                master
                    .prompter
                    .clone()
                    .unwrap_or_else(|| Arc::new(AskpassProgramPrompter(master.askpass.clone()))),
            )
        };
        let defaults = RusshOptions::new();
        let options = RusshOptions {
            known_hosts: settings.known_hosts.unwrap_or(defaults.known_hosts),
            identity_files: settings.identity_files,
            prompter,
            connect_timeout: settings.connect_timeout.unwrap_or(master.connect_timeout),
            auth_timeout: master.auth_timeout,
            keepalive: (
                Duration::from_secs(
                    settings
                        .alive_interval
                        .unwrap_or(master.server_alive.0)
                        .into(),
                ),
                settings.alive_count.unwrap_or(master.server_alive.1) as usize,
            ),
            methods: settings.methods,
            ask_unknown_host: !settings.refuse_unknown_hosts,
        };
        Ok((
            RusshLaunch {
                target: launch.target,
                options,
                tunnel: launch.tunnel,
                ready_timeout: launch.ready_timeout,
            },
            command,
        ))
    }

    impl RusshLaunch {
        /// Connect and authenticate (prompts through the options' prompter).
        pub async fn connect(&self) -> Result<RusshConnection, SshError> {
            RusshConnection::connect(&self.target, &self.options).await
        }

        /// On `conn`: the reverse tunnel, the remote command (built by `command` from the
        /// reverse tunnel's remote port) with `secrets` on its stdin, then the forward
        /// tunnel to the port of the ready line (else the plan's). On failure everything
        /// started so far is stopped.
        pub async fn start_on(
            &self,
            mut conn: RusshConnection,
            command: impl FnOnce(Option<u16>) -> String,
            secrets: Option<&Secrets>,
            output: Option<mpsc::UnboundedSender<RemoteOutput>>,
        ) -> Result<RusshSession, SshError> {
            let host = self.target.display_name();
            let remote_port = match &self.tunnel {
                TunnelMode::Reverse {
                    local_port,
                    remote_port,
                } => Some(
                    conn.forward_remote_at(remote_port.unwrap_or(0), *local_port)
                        .await?,
                ),
                _ => None,
            };
            let (mut remote, ready) = conn
                .start_server(&command(remote_port), secrets, self.ready_timeout, output)
                .await?;
            let local_port = match &self.tunnel {
                TunnelMode::Forward {
                    server_host,
                    server_port,
                    local_port,
                } => {
                    let forwarded = match ready.as_ref().map(|r| r.port).or(*server_port) {
                        Some(port) => {
                            conn.forward_local(local_port.unwrap_or(0), server_host, port)
                                .await
                        }
                        None => Err(SshError::Invalid(
                            "a forward tunnel needs the server's port: a ready line or a fixed port"
                                .to_string(),
                        )),
                    };
                    match forwarded {
                        Ok(p) => Some(p),
                        Err(e) => {
                            remote.stop(Some(&conn)).await;
                            conn.close().await;
                            return Err(e);
                        }
                    }
                }
                _ => None,
            };
            Ok(RusshSession {
                conn,
                remote,
                host,
                ready,
                local_port,
                remote_port,
            })
        }
    }

    /// A server running on a remote host, reached through the russh backend. Dropping it
    /// closes the connection, which ends the remote process group (its channel's stdin
    /// ends); [`RusshSession::close`] does the same and waits.
    #[derive(Debug)]
    pub struct RusshSession {
        conn: RusshConnection,
        remote: RusshRemote,
        host: String,
        ready: Option<ReadyLine>,
        local_port: Option<u16>,
        remote_port: Option<u16>,
    }

    impl RusshSession {
        /// The server's ready line, when it was awaited.
        pub fn ready(&self) -> Option<&ReadyLine> {
            self.ready.as_ref()
        }

        /// The local end of the forward tunnel (what the client dials), if there is one.
        pub fn local_address(&self) -> Option<SocketAddr> {
            self.local_port.map(local_address)
        }

        /// The remote port of the reverse tunnel (what the server dials on its host).
        pub fn remote_port(&self) -> Option<u16> {
            self.remote_port
        }

        /// The remote process group (ended on close).
        pub fn remote_pgid(&self) -> Option<u32> {
            self.remote.remote_pgid()
        }

        /// `user@host`, for messages.
        pub fn host(&self) -> &str {
            &self.host
        }

        /// The last lines of the remote stderr.
        pub fn stderr_tail(&self) -> Vec<String> {
            self.remote.stderr_tail()
        }

        /// The connection (for more commands or tunnels to the same host).
        pub fn connection(&mut self) -> &mut RusshConnection {
            &mut self.conn
        }

        /// Wait until the session ends: `Ok(status)` when the remote command ended by
        /// itself, [`SshError::ConnectionLost`] when the connection (and with it the
        /// tunnels) went away.
        pub async fn wait(&mut self) -> Result<ExitStatus, SshError> {
            let code = self.remote.wait().await;
            if code.is_none() {
                // The channel ended without an exit status: a lost connection ends it
                // first, and the connection's own task notices a moment later.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                while !self.conn.is_closed() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if self.conn.is_closed() {
                    return Err(SshError::ConnectionLost {
                        host: self.host.clone(),
                        log_tail: self.remote.stderr_tail(),
                    });
                }
            }
            // No exit status (killed by a signal): 255, as OpenSSH's client reports it.
            let code = code.unwrap_or(255) & 0xff;
            Ok(ExitStatus::from_raw((code as i32) << 8))
        }

        /// Wait until the connection (and with it the tunnels) is lost, whatever the
        /// remote command does: for a server that detached from its command and still
        /// uses the tunnels. Checks twice a second.
        pub async fn connection_lost(&self) -> SshError {
            while !self.conn.is_closed() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            SshError::ConnectionLost {
                host: self.host.clone(),
                log_tail: self.remote.stderr_tail(),
            }
        }

        /// End everything: the remote process group (end-of-file on its stdin, SIGKILL
        /// to the group if it lingers), the tunnels and the connection.
        pub async fn close(self) {
            let RusshSession {
                conn, mut remote, ..
            } = self;
            remote.stop(Some(&conn)).await;
            drop(remote);
            conn.close().await;
        }
    }

    /// Asks like OpenSSH does without a prompter: the askpass helper runs with the prompt
    /// as its argument and prints the answer on stdout; a non-zero exit cancels.
    struct AskpassProgramPrompter(AskpassProgram);

    impl Prompter for AskpassProgramPrompter {
        fn ask(&self, request: &PromptRequest<'_>) -> Result<String, PromptError> {
            let program = match &self.0 {
                AskpassProgram::Path(p) => p.clone(),
                AskpassProgram::Auto => {
                    find_askpass().map_err(|e| PromptError::NoAnswer(e.to_string()))?
                }
            };
            let out = std::process::Command::new(&program)
                .arg(&request.option.label)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| PromptError::NoAnswer(format!("{}: {e}", program.display())))?;
            let mut answer = zeroize::Zeroizing::new(out.stdout);
            if !out.status.success() {
                return Err(PromptError::Cancelled);
            }
            while matches!(answer.last(), Some(b'\n' | b'\r')) {
                answer.pop();
            }
            String::from_utf8(answer.to_vec()).map_err(|_| {
                PromptError::NoAnswer(format!("{} answered with invalid UTF-8", program.display()))
            })
        }
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

    /// A build without the backend refuses a russh plan before anything starts (no
    /// connection is tried: the host does not exist).
    #[cfg(not(feature = "russh"))]
    #[tokio::test]
    async fn a_build_without_russh_refuses_the_launch() {
        let text = "[[server]]\nname = \"r\"\nresource = \"cs://127.0.0.1:0\"\n\
                    [server.startup]\nmechanism = \"ssh\"\nargv = [\"pvserver\"]\n\
                    [server.startup.ssh]\nhost = \"nowhere.invalid\"\nbackend = \"russh\"\n";
        let profile = crate::profile::toml::load_str(std::path::Path::new("p.toml"), text).unwrap();
        let plan = crate::plan::Plan::resolve(
            &profile.servers[0],
            &crate::LaunchContext::fixed(),
            &crate::prompt::NonInteractive,
        )
        .unwrap();
        let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let e = crate::session::launch(&plan, &events).await.unwrap_err();
        assert!(
            matches!(
                e,
                crate::session::LaunchError::Ssh(crate::ssh::SshError::BackendUnavailable("russh"))
            ),
            "{e}"
        );
        drop(events);
        // Not even the ssh-connect stage began.
        assert!(rx.recv().await.is_none());
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
