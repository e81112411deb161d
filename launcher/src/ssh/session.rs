//! One launch over ssh from start to cleanup: master, tunnels, remote server.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use pv_transport::launch::{ReadyLine, Secrets};
use tokio::sync::mpsc;

use super::remote::RemoteOutput;
use super::{Master, MasterOptions, RemoteServer, SshError, SshTarget};

/// How the client reaches the server through ssh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelMode {
    /// No tunnel: the client reaches the server's host and port directly.
    None,
    /// Forward connection through `-L 127.0.0.1:<local port>:<server_host>:<port>`,
    /// where `<port>` is the one in the server's ready line (else `server_port`) and
    /// `server_host` is as seen from the ssh host (usually `127.0.0.1`). The client dials
    /// the local end.
    Forward {
        /// The server's address as seen from the ssh host.
        server_host: String,
        /// The server's port when it prints no ready line (a server that does not speak
        /// the launch channel, e.g. pvserver).
        server_port: Option<u16>,
        /// The local port; `None` takes a free one.
        local_port: Option<u16>,
    },
    /// Reverse connection through `-R 127.0.0.1:<remote port>:127.0.0.1:<local_port>`:
    /// the server dials `127.0.0.1:<remote port>` on its host, which reaches the client
    /// listening on `127.0.0.1:<local_port>` here. With `remote_port: None` the remote
    /// side chooses the port (`-R 127.0.0.1:0:…`, read back) and the command builder
    /// gets it.
    Reverse {
        /// The port the client listens on here (127.0.0.1).
        local_port: u16,
        /// The port on the remote host; `None`: chosen by the remote side.
        remote_port: Option<u16>,
    },
}

/// What one ssh launch needs: the destination, how to authenticate, the tunnel and how
/// long the server may take to print its ready line.
#[derive(Clone, Debug)]
pub struct SshLaunch {
    /// Where ssh goes.
    pub target: SshTarget,
    /// How the master is started (askpass, prompter, timeouts).
    pub master: MasterOptions,
    /// The tunnel.
    pub tunnel: TunnelMode,
    /// How long to wait for the ready line (`None`: do not wait for one).
    pub ready_timeout: Option<Duration>,
}

/// A server running on a remote host, reached through ssh. Dropping it ends the remote
/// process group (the channel closes), the forwards and the master (when this session
/// holds the last reference to it); [`SshSession::close`] does the same and waits.
#[derive(Debug)]
pub struct SshSession {
    master: Arc<Master>,
    server: RemoteServer,
    ready: Option<ReadyLine>,
    local_port: Option<u16>,
    remote_port: Option<u16>,
}

impl SshLaunch {
    /// Connect (authenticating once, prompts through the prompter) and start the server.
    /// `command` builds the remote POSIX sh command line; for a reverse tunnel it gets the
    /// remote port the server must dial (`127.0.0.1:<port>` on its host), else `None`.
    pub async fn start(
        &self,
        command: impl FnOnce(Option<u16>) -> String,
        secrets: Option<&Secrets>,
        output: Option<mpsc::UnboundedSender<RemoteOutput>>,
    ) -> Result<SshSession, SshError> {
        let master = Arc::new(Master::connect(&self.target, &self.master).await?);
        self.start_on(master, command, secrets, output).await
    }

    /// Like [`SshLaunch::start`], through a master that is already connected (a second
    /// launch to the same host: no new authentication).
    pub async fn start_on(
        &self,
        master: Arc<Master>,
        command: impl FnOnce(Option<u16>) -> String,
        secrets: Option<&Secrets>,
        output: Option<mpsc::UnboundedSender<RemoteOutput>>,
    ) -> Result<SshSession, SshError> {
        let remote_port = match &self.tunnel {
            TunnelMode::Reverse {
                local_port,
                remote_port: None,
            } => Some(master.forward_remote(*local_port).await?),
            TunnelMode::Reverse {
                local_port,
                remote_port: Some(port),
            } => {
                master.forward_remote_at(*port, *local_port).await?;
                Some(*port)
            }
            _ => None,
        };
        let (mut server, ready) = RemoteServer::start(
            &master,
            &command(remote_port),
            secrets,
            self.ready_timeout,
            output,
        )
        .await?;
        let local_port = match &self.tunnel {
            TunnelMode::Forward {
                server_host,
                server_port,
                local_port,
            } => {
                let Some(port) = ready.as_ref().map(|r| r.port).or(*server_port) else {
                    server.stop(Some(&master)).await;
                    return Err(SshError::Invalid(
                        "a forward tunnel needs the server's port: a ready line or a fixed port"
                            .to_string(),
                    ));
                };
                let forwarded = match local_port {
                    Some(l) => master
                        .forward_local(*l, server_host, port)
                        .await
                        .map(|()| *l),
                    None => master.forward_local_any(server_host, port).await,
                };
                match forwarded {
                    Ok(p) => Some(p),
                    Err(e) => {
                        server.stop(Some(&master)).await;
                        return Err(e);
                    }
                }
            }
            _ => None,
        };
        Ok(SshSession {
            master,
            server,
            ready,
            local_port,
            remote_port,
        })
    }
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

    /// The master this session runs on (share it for another launch to the same host).
    pub fn master(&self) -> &Arc<Master> {
        &self.master
    }

    /// The remote process group (ended on close).
    pub fn remote_pgid(&self) -> Option<u32> {
        self.server.remote_pgid()
    }

    /// The remote server.
    pub fn server(&mut self) -> &mut RemoteServer {
        &mut self.server
    }

    /// Wait until the session ends: `Ok(status)` when the remote command ended by itself,
    /// [`SshError::ConnectionLost`] when the ssh connection (and with it the forwards)
    /// went away.
    pub async fn wait(&mut self) -> Result<ExitStatus, SshError> {
        let status = self.server.wait().await;
        // 255: ssh itself failed, most likely because the master went away.
        let grace = if status.code() == Some(255) {
            Duration::from_secs(2)
        } else {
            Duration::ZERO
        };
        if self.master.gone_within(grace).await {
            return Err(SshError::ConnectionLost {
                host: self.master.target().display_name(),
                log_tail: self.master.log_tail(),
            });
        }
        Ok(status)
    }

    /// Wait until the ssh connection (and with it the forwards) is lost, whatever the
    /// remote command does: for a server that detached from its command and still uses
    /// the tunnels. Checks the master process twice a second (it exits when ssh's
    /// `ServerAlive` checks fail) and its control socket every 10 s.
    pub async fn connection_lost(&self) -> SshError {
        let mut checks = 0u32;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            checks += 1;
            let gone = if checks % 20 == 0 {
                self.master.is_gone().await
            } else {
                !self.master.is_alive()
            };
            if gone {
                return SshError::ConnectionLost {
                    host: self.master.target().display_name(),
                    log_tail: self.master.log_tail(),
                };
            }
        }
    }

    /// End everything: the remote process group, the forwards and, when no other session
    /// shares it, the master (`-O exit`).
    pub async fn close(self) {
        let SshSession {
            master, mut server, ..
        } = self;
        server.stop(Some(&master)).await;
        drop(server);
        if let Ok(master) = Arc::try_unwrap(master) {
            master.close().await;
        }
    }
}
