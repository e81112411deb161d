//! One launch over ssh from start to cleanup, whichever backend carries it: the
//! connection ([`SshHost`]), the tunnels, the remote server ([`SshSession`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use pv_transport::launch::{ReadyLine, Secrets};

use super::openssh::{Master, RemoteServer};
#[cfg(feature = "russh")]
use super::russh::{RusshConnection, RusshOptions, RusshRemote};
use super::{SshError, SshOptions, SshTarget, Tunnel};
use crate::plan::BackendPlan;
use crate::startup::channel::{Matched, OutputSink};
use crate::startup::describe_status;

/// What a remote start exchanges on the launch channel, whichever backend carries it.
#[derive(Clone, Debug)]
pub(crate) struct RemoteIo<'a> {
    /// The secrets line's content (an empty line without).
    pub secrets: Option<&'a Secrets>,
    /// How long to wait for the ready line (`None`: none is awaited).
    pub ready_timeout: Option<Duration>,
    /// Where the output lines go.
    pub output: OutputSink,
    /// The ready pattern to watch the output for.
    pub pattern: Option<&'a regex_lite::Regex>,
}

/// An authenticated ssh connection to one host: the one face of both backends.
#[derive(Debug)]
pub enum SshHost {
    /// pv-launch's own OpenSSH control master (shareable between launches to the host).
    OpenSsh(Arc<Master>),
    /// An in-process russh connection.
    #[cfg(feature = "russh")]
    Russh(RusshConnection),
}

/// A helper process on the remote host ([`SshHost::start_helper`]); dropping it closes its
/// channel, and the cleanup wrapper then ends its process group.
#[derive(Debug)]
pub(crate) struct RemoteHelper(RemoteProcess);

/// The remote server, as each backend runs it.
#[derive(Debug)]
enum RemoteProcess {
    OpenSsh(RemoteServer),
    #[cfg(feature = "russh")]
    Russh(RusshRemote),
}

impl SshHost {
    /// Connect to `target` with `backend` and authenticate once, prompts through
    /// `options` (never retried by pv-launch).
    pub async fn connect(
        target: &SshTarget,
        backend: &BackendPlan,
        options: &SshOptions,
    ) -> Result<SshHost, SshError> {
        match backend {
            BackendPlan::OpenSsh => Ok(SshHost::OpenSsh(Arc::new(
                Master::connect(target, options).await?,
            ))),
            #[cfg(feature = "russh")]
            BackendPlan::Russh(settings) => {
                let o = RusshOptions::for_launch(settings, target.batch_mode(), options);
                Ok(SshHost::Russh(RusshConnection::connect(target, &o).await?))
            }
            #[cfg(not(feature = "russh"))]
            BackendPlan::Russh(_) => Err(SshError::BackendUnavailable("russh")),
        }
    }

    /// `user@host`, for messages.
    pub fn display_name(&self) -> String {
        match self {
            SshHost::OpenSsh(m) => m.target().display_name(),
            #[cfg(feature = "russh")]
            SshHost::Russh(c) => c.host().to_string(),
        }
    }

    /// Open `-R 127.0.0.1:<remote_port>:127.0.0.1:<local_port>` (remote port 0: the
    /// remote side chooses; `public`: `0.0.0.0` instead of `127.0.0.1`, if the remote sshd
    /// allows it): the remote port.
    pub(crate) async fn forward_remote(
        &self,
        remote_port: u16,
        local_port: u16,
        public: bool,
    ) -> Result<u16, SshError> {
        match self {
            SshHost::OpenSsh(m) => m.forward_remote(remote_port, local_port, public).await,
            #[cfg(feature = "russh")]
            SshHost::Russh(c) => c.forward_remote_at(remote_port, local_port, public).await,
        }
    }

    /// Run `command` (one POSIX sh command line, no cleanup wrapper) to its end with
    /// `stdin` written to it, at most `timeout`: its exit status (`None`: a signal, or none
    /// sent), stdout and stderr. For the batch scheduler's commands.
    pub async fn run(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<(Option<i32>, Vec<u8>, Vec<u8>), SshError> {
        match self {
            SshHost::OpenSsh(m) => {
                let out = m.run_with_input(command, stdin, timeout).await?;
                // 255 is ssh's own failure (the master went away), not the command's.
                if out.status.code() == Some(255) && !m.is_alive() {
                    return Err(SshError::ConnectionLost {
                        host: m.target().display_name(),
                        log_tail: m.log_tail(),
                    });
                }
                Ok((out.status.code(), out.stdout, out.stderr))
            }
            #[cfg(feature = "russh")]
            SshHost::Russh(c) => {
                let run = c.run_command(command, stdin);
                let (status, out, err) =
                    tokio::time::timeout(timeout, run)
                        .await
                        .map_err(|_| SshError::Timeout {
                            host: c.host().to_string(),
                            what: "a remote command".to_string(),
                            waited: timeout,
                            log_tail: Vec::new(),
                        })??;
                Ok((status.map(|s| s as i32), out, err))
            }
        }
    }

    /// Open `-L 127.0.0.1:<local_port>:<host>:<port>` (local port 0: a free one): the
    /// local port.
    pub(crate) async fn forward_local(
        &mut self,
        local_port: u16,
        host: &str,
        port: u16,
    ) -> Result<u16, SshError> {
        match self {
            SshHost::OpenSsh(m) => m.forward_local(local_port, host, port).await,
            #[cfg(feature = "russh")]
            SshHost::Russh(c) => c.forward_local(local_port, host, port).await,
        }
    }

    async fn start_server(
        &self,
        command: &str,
        secrets: Option<&Secrets>,
        ready_timeout: Option<Duration>,
        output: OutputSink,
        pattern: Option<&regex_lite::Regex>,
    ) -> Result<(RemoteProcess, Option<ReadyLine>), SshError> {
        let io = RemoteIo {
            secrets,
            ready_timeout,
            output,
            pattern,
        };
        Ok(match self {
            SshHost::OpenSsh(m) => {
                let (s, r) = RemoteServer::start_with(m, command, io).await?;
                (RemoteProcess::OpenSsh(s), r)
            }
            #[cfg(feature = "russh")]
            SshHost::Russh(c) => {
                let (s, r) = c.start(command, io).await?;
                (RemoteProcess::Russh(s), r)
            }
        })
    }

    /// Start `command` (one POSIX sh command line) in the cleanup wrapper and wait at most
    /// `ready_timeout` for its ready line: a helper process beside the server (the batch
    /// relay) that ends with its channel, whichever way that closes.
    pub(crate) async fn start_helper(
        &self,
        command: &str,
        ready_timeout: Duration,
    ) -> Result<(RemoteHelper, ReadyLine), SshError> {
        let (mut process, ready) = self
            .start_server(command, None, Some(ready_timeout), None, None)
            .await?;
        match ready {
            Some(r) => Ok((RemoteHelper(process), r)),
            None => {
                self.stop(&mut process).await;
                Err(SshError::Invalid(format!(
                    "the helper command on {} printed no ready line",
                    self.display_name()
                )))
            }
        }
    }

    /// Stop a helper started by [`SshHost::start_helper`] on this connection.
    pub(crate) async fn stop_helper(&self, helper: &mut RemoteHelper) {
        self.stop(&mut helper.0).await;
    }

    /// Stop `server`'s remote process group through this connection.
    async fn stop(&self, server: &mut RemoteProcess) {
        match (self, server) {
            (SshHost::OpenSsh(m), RemoteProcess::OpenSsh(s)) => s.stop(Some(m)).await,
            #[cfg(feature = "russh")]
            (SshHost::Russh(c), RemoteProcess::Russh(s)) => s.stop(Some(c)).await,
            #[cfg(feature = "russh")]
            _ => unreachable!("a server runs on the connection that started it"),
        }
    }

    /// Close the connection (the master only when no other session shares it).
    pub(crate) async fn close(self) {
        match self {
            SshHost::OpenSsh(m) => {
                if let Ok(m) = Arc::try_unwrap(m) {
                    m.close().await;
                }
            }
            #[cfg(feature = "russh")]
            SshHost::Russh(c) => c.close().await,
        }
    }

    /// Wait until the connection (and with it the tunnels) is lost. OpenSSH: checks the
    /// master process twice a second (it exits when ssh's `ServerAlive` checks fail) and
    /// its control socket every 10 s; russh: the connection's own state, twice a second.
    pub(crate) async fn connection_lost(&self, log_tail: impl Fn() -> Vec<String>) -> SshError {
        let mut checks = 0u32;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            checks += 1;
            let gone = match self {
                SshHost::OpenSsh(m) if checks % 20 == 0 => m.is_gone().await,
                SshHost::OpenSsh(m) => !m.is_alive(),
                #[cfg(feature = "russh")]
                SshHost::Russh(c) => c.is_closed(),
            };
            if gone {
                return SshError::ConnectionLost {
                    host: self.display_name(),
                    log_tail: log_tail(),
                };
            }
        }
    }
}

/// What one ssh launch needs: the destination, how to authenticate, the tunnel and how
/// long the server may take to print its ready line.
#[derive(Clone, Debug)]
pub struct SshLaunch {
    /// Where ssh goes.
    pub target: SshTarget,
    /// How the connection is made (askpass, prompter, timeouts).
    pub options: SshOptions,
    /// The tunnel. A [`Tunnel::Local`] with remote port 0 goes to the port in the
    /// server's ready line; a [`Tunnel::Remote`] with remote port 0 lets the remote side
    /// choose, and the command builder gets the port.
    pub tunnel: Option<Tunnel>,
    /// How long to wait for the ready line (`None`: do not wait for one).
    pub ready_timeout: Option<Duration>,
    /// A pattern on the server's output that says it is ready
    /// ([`SshSession::await_pattern`]).
    pub pattern: Option<regex_lite::Regex>,
}

impl SshLaunch {
    /// Connect with the OpenSSH backend (authenticating once, prompts through the
    /// prompter) and start the server: [`SshLaunch::start_on`].
    pub async fn start(
        &self,
        command: impl FnOnce(Option<u16>) -> String,
        secrets: Option<&Secrets>,
        output: OutputSink,
    ) -> Result<SshSession, SshError> {
        let host = SshHost::connect(&self.target, &BackendPlan::OpenSsh, &self.options).await?;
        self.start_on(host, command, secrets, output).await
    }

    /// On `host` (either backend): the reverse tunnel, the remote command (built by
    /// `command` from the reverse tunnel's remote port) with `secrets` on its stdin, then
    /// the forward tunnel to the port of the ready line (else the tunnel's). On failure
    /// everything started so far is stopped.
    pub async fn start_on(
        &self,
        mut host: SshHost,
        command: impl FnOnce(Option<u16>) -> String,
        secrets: Option<&Secrets>,
        output: OutputSink,
    ) -> Result<SshSession, SshError> {
        let remote_port = match &self.tunnel {
            Some(Tunnel::Remote {
                remote_port,
                local_port,
                public,
            }) => Some(
                host.forward_remote(*remote_port, *local_port, *public)
                    .await?,
            ),
            _ => None,
        };
        let (mut server, ready) = host
            .start_server(
                &command(remote_port),
                secrets,
                self.ready_timeout,
                output,
                self.pattern.as_ref(),
            )
            .await?;
        let mut local_port = None;
        if let Some(Tunnel::Local {
            local_port: local,
            host: server_host,
            remote_port: fixed,
        }) = &self.tunnel
        {
            let port = ready
                .as_ref()
                .map(|r| r.port)
                .or(Some(*fixed).filter(|p| *p != 0));
            let forwarded = match port {
                Some(port) => host.forward_local(*local, server_host, port).await,
                None => Err(SshError::Invalid(
                    "a forward tunnel needs the server's port: a ready line or a fixed port"
                        .to_string(),
                )),
            };
            match forwarded {
                Ok(p) => local_port = Some(p),
                Err(e) => {
                    host.stop(&mut server).await;
                    host.close().await;
                    return Err(e);
                }
            }
        }
        Ok(SshSession {
            host,
            server,
            ready,
            local_port,
            remote_port,
        })
    }
}

/// A server running on a remote host, reached through ssh (either backend). Dropping it
/// ends the remote process group (its channel closes), the tunnels and the connection
/// (when this session holds the last reference to it); [`SshSession::close`] does the
/// same and waits.
#[derive(Debug)]
pub struct SshSession {
    host: SshHost,
    server: RemoteProcess,
    ready: Option<ReadyLine>,
    local_port: Option<u16>,
    remote_port: Option<u16>,
}

impl SshSession {
    /// The server's ready line, when it was awaited.
    pub fn ready(&self) -> Option<&ReadyLine> {
        self.ready.as_ref()
    }

    /// The local end of the forward tunnel, `127.0.0.1:<port>`: the address the client
    /// dials. `None` without a forward tunnel.
    pub fn local_address(&self) -> Option<SocketAddr> {
        self.local_port
            .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
    }

    /// The remote port of the reverse tunnel (what the server dials on its host).
    pub fn remote_port(&self) -> Option<u16> {
        self.remote_port
    }

    /// The connection URL the user is shown: `cs://127.0.0.1:<local port>` through a
    /// forward tunnel (`cs+tls` when the ready line carries a certificate fingerprint).
    pub fn url(&self) -> Option<String> {
        let addr = self.local_address()?;
        let tls = self.ready.as_ref().is_some_and(|r| r.tls.is_some());
        Some(format!("{}://{addr}", if tls { "cs+tls" } else { "cs" }))
    }

    /// The connection this session runs on.
    pub fn host(&self) -> &SshHost {
        &self.host
    }

    /// The OpenSSH master this session runs on (share it for another launch to the same
    /// host); `None` with the russh backend.
    pub fn master(&self) -> Option<&Arc<Master>> {
        match &self.host {
            SshHost::OpenSsh(m) => Some(m),
            #[cfg(feature = "russh")]
            SshHost::Russh(_) => None,
        }
    }

    /// The remote process group (ended on close).
    pub fn remote_pgid(&self) -> Option<u32> {
        match &self.server {
            RemoteProcess::OpenSsh(s) => s.remote_pgid(),
            #[cfg(feature = "russh")]
            RemoteProcess::Russh(s) => s.remote_pgid(),
        }
    }

    /// The last lines of the remote stderr.
    pub fn stderr_tail(&self) -> Vec<String> {
        match &self.server {
            RemoteProcess::OpenSsh(s) => s.stderr_tail(),
            #[cfg(feature = "russh")]
            RemoteProcess::Russh(s) => s.stderr_tail(),
        }
    }

    /// The error for a remote server that ended with `status` during the start.
    pub(crate) fn exit_error(&self, status: ExitStatus) -> SshError {
        SshError::RemoteExited {
            host: self.host.display_name(),
            status: describe_status(status),
            stderr_tail: self.stderr_tail(),
        }
    }

    /// Wait until the session ends: `Ok(status)` when the remote command ended by itself,
    /// [`SshError::ConnectionLost`] when the ssh connection (and with it the tunnels)
    /// went away.
    pub async fn wait(&mut self) -> Result<ExitStatus, SshError> {
        match (&self.host, &mut self.server) {
            (SshHost::OpenSsh(master), RemoteProcess::OpenSsh(server)) => {
                let status = server.wait().await;
                // 255: ssh itself failed, most likely because the master went away.
                let grace = if status.code() == Some(255) {
                    Duration::from_secs(2)
                } else {
                    Duration::ZERO
                };
                if master.gone_within(grace).await {
                    return Err(SshError::ConnectionLost {
                        host: master.target().display_name(),
                        log_tail: master.log_tail(),
                    });
                }
                Ok(status)
            }
            #[cfg(feature = "russh")]
            (SshHost::Russh(conn), RemoteProcess::Russh(remote)) => {
                if remote.wait().await.is_none() {
                    // The channel ended with neither an exit status nor a signal: a lost
                    // connection ends it first, and the connection's own task notices a
                    // moment later — seconds later on a loaded machine.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                    while !conn.is_closed() && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    if conn.is_closed() {
                        return Err(SshError::ConnectionLost {
                            host: conn.host().to_string(),
                            log_tail: remote.stderr_tail(),
                        });
                    }
                }
                Ok(remote.exit_status().await)
            }
            #[cfg(feature = "russh")]
            _ => unreachable!("a server runs on the connection that started it"),
        }
    }

    /// Wait up to `timeout` for the server's first output line matching the launch's
    /// ready pattern (never, without one), while it may exit first. A lost connection is
    /// an error.
    pub async fn await_pattern(&mut self, timeout: Duration) -> Result<Matched, SshError> {
        let matched = match &mut self.server {
            RemoteProcess::OpenSsh(s) => s.take_matched(),
            #[cfg(feature = "russh")]
            RemoteProcess::Russh(s) => s.take_matched(),
        };
        let Some(matched) = matched else {
            return Ok(Matched::NotSeen(Duration::ZERO));
        };
        let mut lost = None;
        let exit = async {
            match self.wait().await {
                Ok(s) => s,
                Err(e) => {
                    lost = Some(e);
                    std::os::unix::process::ExitStatusExt::from_raw(255 << 8)
                }
            }
        };
        let got = crate::startup::channel::await_pattern(matched, exit, timeout).await;
        match lost {
            Some(e) => Err(e),
            None => Ok(got),
        }
    }

    /// Wait until the ssh connection (and with it the tunnels) is lost, whatever the
    /// remote command does: for a server that detached from its command and still uses
    /// the tunnels.
    pub async fn connection_lost(&self) -> SshError {
        self.host
            .connection_lost(|| match &self.host {
                SshHost::OpenSsh(m) => m.log_tail(),
                #[cfg(feature = "russh")]
                SshHost::Russh(_) => self.stderr_tail(),
            })
            .await
    }

    /// End everything: the remote process group, the tunnels and, when no other session
    /// shares it, the connection.
    pub async fn close(self) {
        let SshSession {
            host, mut server, ..
        } = self;
        host.stop(&mut server).await;
        drop(server);
        host.close().await;
    }
}
