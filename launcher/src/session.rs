//! Sessions: the last two steps of the data flow. After the plan's process is started (or
//! before, for a reverse connection, where the client must listen first), the expected
//! connection is handed to pv-transport: dial with retry or wait for the server's dial,
//! TLS pinned to the certificate the server announced on the launch channel, and the
//! handshake. The result is a [`Session`]: the handshaken connection(s), the server handle
//! and the URL.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use pv_launch::{LaunchContext, NonInteractive, Profile};
//! use pv_launch::plan::Plan;
//! use tokio::io::AsyncWriteExt;
//!
//! let profile = Profile::load("examples/profiles/local.toml".as_ref())?;
//! let entry = profile.select(None)?;
//! let plan = Plan::resolve(entry, &LaunchContext::from_host(), &NonInteractive)?;
//! let (events, _progress) = tokio::sync::mpsc::unbounded_channel();
//! let mut session = pv_launch::session::launch(&plan, &events).await?;
//! println!("connected to {}", session.url());
//! session.connection().expect("one connection").write_all(b"hello").await?;
//! session.cleanup().await;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use pv_transport::handshake::native::NativeHandshake;
use pv_transport::handshake::paraview::{ParaViewHandshake, VtkHash};
use pv_transport::handshake::{Handshake, NoHandshake};
use pv_transport::launch::{ReadyLine, Secrets};
use pv_transport::{
    ConnectError, ConnectTimeout as NetTimeout, Connection, ConnectionConfig, ConnectionManager,
    ConnectionMode, Direction, Listener, Resource, RetryPolicy, TlsConfig, Token,
};

use crate::events::{Event, EventSender, Stage};
use crate::plan::{ExpectedConnection, Launch, Plan, ResolvedHandshake};
use crate::profile::{ConnectTimeout, Delay, SshBackend};
use crate::ssh::{
    self, Master, MasterOptions, RemoteOutput, SshError, SshSession, SshTarget, TunnelMode,
};
use crate::startup::{DEFAULT_READY_TIMEOUT, ServerHandle, StartError, Started, start_local};

/// The resource the client uses: the plan's, with the port the server reported on the
/// launch channel when it chose one (port 0 in a forward single-server resource).
pub fn connection_target(expected: &ExpectedConnection, ready: Option<&ReadyLine>) -> Resource {
    let mut resource = expected.resource.clone();
    if let (Some(ready), Resource::ClientServer { server, .. }) = (ready, &mut resource) {
        if server.port.is_none_or(|p| p == 0) {
            server.port = Some(ready.port);
        }
    }
    resource
}

/// Whether the launch needs a one-time token on the launch channel.
pub fn needs_token(expected: &ExpectedConnection) -> bool {
    expected.handshake == ResolvedHandshake::Native
}

/// A launch that did not produce a connection.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Starting the server failed.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The connection could not be made or was refused.
    #[error("{url}: {source}")]
    Connect {
        /// What was dialled or listened on.
        url: String,
        /// Why it failed.
        #[source]
        source: ConnectError,
    },
    /// The client could not listen for a reverse connection.
    #[error("cannot listen on 127.0.0.1:{port} for the server to dial back: {source}")]
    Listen {
        /// The port.
        port: u16,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The plan's settings cannot make a connection.
    #[error("{0}")]
    Config(String),
    /// Starting the server over ssh failed, or the ssh connection was lost.
    #[error(transparent)]
    Ssh(#[from] SshError),
}

/// How a launch is carried out beyond what the plan says.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct LaunchOptions {
    /// For plans that start their server over ssh: how the control master is started —
    /// the askpass helper, the [`Prompter`](crate::prompt::Prompter) that answers ssh's
    /// prompts (`None`: pv-askpass asks with its own dialog or on the terminal), timeouts.
    /// A plan with `backend = "russh"` uses the same prompter (else runs the askpass
    /// helper itself, as ssh would), timeouts and keepalive.
    pub ssh: MasterOptions,
}

impl LaunchOptions {
    /// ssh's prompts (passwords, passphrases, host keys, one-time codes) go to `prompter`.
    pub fn with_prompter(
        mut self,
        prompter: Arc<dyn crate::prompt::Prompter + Send + Sync>,
    ) -> LaunchOptions {
        self.ssh.prompter = Some(prompter);
        self
    }
}

/// The server a session supervises.
#[derive(Debug)]
enum Supervised {
    /// A process on this host (direct or through a script).
    Local(ServerHandle),
    /// A process group on a remote host, reached through ssh.
    Ssh(SshSession),
    /// A process group on a remote host, reached through the russh backend.
    #[cfg(feature = "russh")]
    Russh(ssh::RusshSession),
    /// A remote command that exited with status 0 after detaching its server (e.g. a
    /// script that submitted a batch job): the ssh connection and its tunnels stay up for
    /// the server, and only their loss ends the session.
    Detached(Box<Supervised>),
}

impl Supervised {
    /// What supervises the server, seen through [`Supervised::Detached`].
    fn active(&mut self) -> &mut Supervised {
        match self {
            Supervised::Detached(inner) => inner.active(),
            other => other,
        }
    }

    /// Wait until the ssh connection carrying the tunnels is lost.
    async fn connection_lost(&self) -> LaunchError {
        match self {
            Supervised::Ssh(s) => s.connection_lost().await.into(),
            #[cfg(feature = "russh")]
            Supervised::Russh(s) => s.connection_lost().await.into(),
            Supervised::Detached(inner) => Box::pin(inner.connection_lost()).await,
            Supervised::Local(_) => std::future::pending().await,
        }
    }

    /// Where the client dials: the local end of a forward ssh tunnel.
    fn tunnel_address(&self) -> Option<std::net::SocketAddr> {
        match self {
            Supervised::Detached(inner) => inner.tunnel_address(),
            Supervised::Local(_) => None,
            Supervised::Ssh(s) => s.local_address(),
            #[cfg(feature = "russh")]
            Supervised::Russh(s) => s.local_address(),
        }
    }

    /// The ready line a remote server printed.
    fn remote_ready(&self) -> Option<&ReadyLine> {
        match self {
            Supervised::Detached(inner) => inner.remote_ready(),
            Supervised::Local(_) => None,
            Supervised::Ssh(s) => s.ready(),
            #[cfg(feature = "russh")]
            Supervised::Russh(s) => s.ready(),
        }
    }

    /// Wait for the server's end (see [`Session::wait_server`]).
    async fn wait(&mut self) -> Result<std::process::ExitStatus, LaunchError> {
        match self {
            Supervised::Detached(inner) => Err(inner.connection_lost().await),
            Supervised::Local(h) => Ok(h.wait().await),
            Supervised::Ssh(s) => Ok(s.wait().await?),
            #[cfg(feature = "russh")]
            Supervised::Russh(s) => Ok(s.wait().await?),
        }
    }

    /// The error for a remote server that ended with `status` during the start.
    fn remote_exit_error(&mut self, status: std::process::ExitStatus) -> LaunchError {
        let (host, stderr_tail) = match self.active() {
            Supervised::Ssh(s) => (s.master().target().display_name(), s.server().stderr_tail()),
            #[cfg(feature = "russh")]
            Supervised::Russh(s) => (s.host().to_string(), s.stderr_tail()),
            Supervised::Local(_) | Supervised::Detached(_) => {
                unreachable!("only remote servers are started over ssh")
            }
        };
        LaunchError::Ssh(SshError::RemoteExited {
            host,
            status: crate::ssh::describe_status(status),
            stderr_tail,
        })
    }
}

/// A launched server and the live, handshaken connection(s) to it.
#[derive(Debug)]
pub struct Session {
    url: String,
    connections: Vec<Connection>,
    server: Option<Supervised>,
    builtin_server: Option<Connection>,
}

impl Session {
    /// The connection URL (the local end of the connection as the client sees it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The first (for a data/render pair: the data server's) connection.
    pub fn connection(&mut self) -> Option<&mut Connection> {
        self.connections.first_mut()
    }

    /// Every connection: one, or two for a data server + render server pair.
    pub fn connections(&mut self) -> &mut [Connection] {
        &mut self.connections
    }

    /// Take the connections out (the session keeps supervising the server).
    pub fn take_connections(&mut self) -> Vec<Connection> {
        std::mem::take(&mut self.connections)
    }

    /// The started server process, when pv-launch started one on this host that is still
    /// attached.
    pub fn server(&mut self) -> Option<&mut ServerHandle> {
        match self.server.as_mut().map(Supervised::active) {
            Some(Supervised::Local(h)) => Some(h),
            _ => None,
        }
    }

    /// The ssh session (master, tunnels, remote process group), when the server was
    /// started over ssh with the OpenSSH backend (`None` with `backend = "russh"`: see
    /// `Session::russh`, cargo feature `russh`).
    pub fn ssh(&mut self) -> Option<&mut SshSession> {
        match self.server.as_mut().map(Supervised::active) {
            Some(Supervised::Ssh(s)) => Some(s),
            _ => None,
        }
    }

    /// The russh session (connection, tunnels, remote process group), when the server
    /// was started over ssh with `backend = "russh"`.
    #[cfg(feature = "russh")]
    pub fn russh(&mut self) -> Option<&mut ssh::RusshSession> {
        match self.server.as_mut().map(Supervised::active) {
            Some(Supervised::Russh(s)) => Some(s),
            _ => None,
        }
    }

    /// Wait until the supervised server ends: its exit status, or an error when the ssh
    /// connection carrying it (and its tunnels) was lost. Never returns when nothing is
    /// supervised (a manual start, a detached script, `builtin:`).
    pub async fn wait_server(&mut self) -> Result<std::process::ExitStatus, LaunchError> {
        match self.server.as_mut() {
            Some(s) => s.wait().await,
            None => std::future::pending().await,
        }
    }

    /// For `builtin:`: the server's end of the in-process connection, for the embedding
    /// application to serve.
    pub fn take_builtin_server(&mut self) -> Option<Connection> {
        self.builtin_server.take()
    }

    /// Close the connections and stop the server's whole process group.
    pub async fn cleanup(mut self) {
        self.connections.clear();
        self.builtin_server = None;
        let mut server = self.server.take();
        while let Some(Supervised::Detached(inner)) = server {
            server = Some(*inner);
        }
        match server {
            Some(Supervised::Detached(_)) => unreachable!("unwrapped above"),
            Some(Supervised::Local(mut h)) => h.cleanup().await,
            Some(Supervised::Ssh(s)) => s.close().await,
            #[cfg(feature = "russh")]
            Some(Supervised::Russh(s)) => s.close().await,
            None => {}
        }
    }
}

fn retry_policy(timeout: &ConnectTimeout) -> RetryPolicy {
    RetryPolicy::new(match timeout {
        ConnectTimeout::OneAttempt => NetTimeout::Once,
        ConnectTimeout::Within(d) => NetTimeout::Within(*d),
        ConnectTimeout::Forever => NetTimeout::Forever,
    })
}

fn wait_deadline(timeout: &ConnectTimeout) -> Option<Duration> {
    match timeout {
        // One attempt makes no sense for waiting: give the server a second to dial.
        ConnectTimeout::OneAttempt => Some(Duration::from_secs(1)),
        ConnectTimeout::Within(d) => Some(*d),
        ConnectTimeout::Forever => None,
    }
}

/// The handshake the plan asks for.
fn handshake(
    expected: &ExpectedConnection,
    token: Option<&Token>,
) -> Result<Arc<dyn Handshake>, LaunchError> {
    Ok(match (&expected.handshake, token) {
        (ResolvedHandshake::Native, Some(token)) => Arc::new(NativeHandshake::new(token.clone())),
        (ResolvedHandshake::Native, None) => {
            return Err(LaunchError::Config(
                "the native handshake needs a token".into(),
            ));
        }
        (
            ResolvedHandshake::ParaView {
                handshake,
                vtk_hash,
                connect_id,
            },
            _,
        ) => {
            // The string is `paraview-<major>.<minor>[...]`.
            let version = handshake
                .strip_prefix("paraview-")
                .and_then(|rest| {
                    let mut parts = rest.split('.');
                    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
                })
                .ok_or_else(|| {
                    LaunchError::Config(format!(
                        "unexpected ParaView handshake string {handshake:?}"
                    ))
                })?;
            let hash = VtkHash::parse(vtk_hash)
                .map_err(|e| LaunchError::Config(format!("VTK hash {vtk_hash:?}: {e}")))?;
            let hs = ParaViewHandshake::builder()
                .version(version.0, version.1)
                .connect_id(*connect_id as i32)
                .vtk_hash(hash)
                .build()
                .map_err(|e| LaunchError::Config(format!("ParaView handshake: {e}")))?;
            Arc::new(hs)
        }
        (ResolvedHandshake::None, _) => Arc::new(NoHandshake),
    })
}

fn connection_config(
    expected: &ExpectedConnection,
    token: Option<&Token>,
    ready: Option<&ReadyLine>,
) -> Result<ConnectionConfig, LaunchError> {
    let mut config = ConnectionConfig {
        handshake: handshake(expected, token)?,
        ..ConnectionConfig::new(NoHandshake)
    };
    if expected.resource.is_tls() {
        let pin = ready.and_then(|r| r.tls).ok_or_else(|| {
            LaunchError::Config(
                "TLS needs the server's certificate fingerprint, which it announces on the launch \
                 channel's ready line; this server printed none (is it started by pv-launch, with --tls?)"
                    .into(),
            )
        })?;
        if matches!(expected.resource, Resource::DataRender { .. }) {
            return Err(LaunchError::Config(
                "TLS for a data server + render server pair launched from one command is not supported \
                 yet: each server has its own certificate and only the first ready line is read"
                    .into(),
            ));
        }
        let tls =
            TlsConfig::client_pinned(pin, None).map_err(|e| LaunchError::Config(e.to_string()))?;
        config = config.with_tls(tls);
    }
    Ok(config)
}

fn stage(events: &EventSender, stage: Stage, begun: std::time::Instant) {
    let _ = events.send(Event::Stage {
        stage,
        elapsed: begun.elapsed(),
    });
}

/// Start what `plan` says and connect to it, with the default [`LaunchOptions`] (ssh
/// prompts are asked by pv-askpass itself). Progress goes to `events`.
pub async fn launch(plan: &Plan, events: &EventSender) -> Result<Session, LaunchError> {
    launch_with(plan, events, &LaunchOptions::default()).await
}

/// Start what `plan` says and connect to it. Progress goes to `events`.
///
/// Forward: start, wait for the ready line (or the delay), then dial with retry.
/// Reverse: listen first, start, then wait for the server to dial back.
/// Over ssh: the control master authenticates first (prompts through
/// `options.ssh.prompter`), then the remote command runs and the tunnels open; the client
/// dials the local end of a forward tunnel.
/// Dropping the future at any point stops everything started so far.
pub async fn launch_with(
    plan: &Plan,
    events: &EventSender,
    options: &LaunchOptions,
) -> Result<Session, LaunchError> {
    let begun = std::time::Instant::now();
    let expected = plan.connection();
    if expected.resource == Resource::Builtin {
        let (server, client) = Connection::builtin_pair();
        let _ = events.send(Event::Connected {
            url: "builtin:".into(),
        });
        return Ok(Session {
            url: "builtin:".into(),
            connections: vec![client],
            server: None,
            builtin_server: Some(server),
        });
    }
    let token = needs_token(expected).then(Token::generate);
    let direction = expected.resource.direction().unwrap_or(Direction::Forward);

    // Reverse: the client listens before anything starts.
    let mut listeners = Vec::new();
    if direction == Direction::Reverse {
        for (_, port) in expected.resource.endpoints() {
            let l = Listener::bind(pv_transport::loopback(port), Some(Default::default()))
                .await
                .map_err(|source| LaunchError::Listen { port, source })?;
            listeners.push(l);
        }
    }
    let listening: Vec<u16> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.port())
        .collect();

    let (server, ready) = start(plan, token.as_ref(), events, options, &listening).await?;
    let config = connection_config(expected, token.as_ref(), ready.as_ref())?;
    let manager = ConnectionManager::new(ConnectionMode::Single, config);
    stage(events, Stage::Connect, begun);

    let mut target = connection_target(expected, ready.as_ref());
    // Through a forward ssh tunnel the client dials the tunnel's local end.
    let tunnel = server.as_ref().and_then(Supervised::tunnel_address);
    if let (Some(local), Resource::ClientServer { server: ep, .. }) = (tunnel, &mut target) {
        ep.host = Some(pv_transport::resource::Host::Ipv4(
            std::net::Ipv4Addr::LOCALHOST,
        ));
        ep.port = Some(local.port());
    }
    let url = match direction {
        Direction::Forward => target.to_string(),
        Direction::Reverse => {
            let ports: Vec<String> = listening.iter().map(|p| format!(":{p}")).collect();
            format!("{}://{}", target.scheme(), ports.join("//"))
        }
    };
    let connect_error = |source| LaunchError::Connect {
        url: url.clone(),
        source,
    };
    let connections = match (direction, &target) {
        (Direction::Forward, Resource::ClientServer { server: ep, .. }) => {
            let host = ep
                .host
                .as_ref()
                .map(|h| h.to_lookup_string())
                .unwrap_or_else(|| "localhost".into());
            let port = ep.port_or(pv_transport::resource::DEFAULT_SERVER_PORT);
            let policy = retry_policy(&expected.timeout);
            // An ssh tunnel accepts at once, then closes when nothing listens at its far
            // end yet: without a ready line saying the server listens, such a close is
            // retried like a refused dial.
            let retry_closed = tunnel.is_some() && ready.is_none();
            let conn = dial_retrying_closed(&manager, &host, port, policy, retry_closed, events)
                .await
                .map_err(connect_error)?;
            vec![conn]
        }
        (Direction::Forward, Resource::DataRender { .. }) => {
            let eps = target.endpoints();
            let host = |i: usize| {
                eps[i]
                    .0
                    .map(|h| h.to_lookup_string())
                    .unwrap_or_else(|| "localhost".into())
            };
            let (d, r) = manager
                .connect_data_render(
                    (&host(0), eps[0].1),
                    (&host(1), eps[1].1),
                    retry_policy(&expected.timeout),
                )
                .await
                .map_err(connect_error)?;
            vec![d, r]
        }
        (Direction::Reverse, _) => {
            let deadline = wait_deadline(&expected.timeout);
            let mut ls = listeners.into_iter();
            match (ls.next(), ls.next()) {
                (Some(one), None) => vec![
                    manager
                        .wait_for_server(one, deadline)
                        .await
                        .map_err(connect_error)?,
                ],
                (Some(d), Some(r)) => {
                    let (d, r) = manager
                        .wait_for_data_render(d, r, deadline)
                        .await
                        .map_err(connect_error)?;
                    vec![d, r]
                }
                _ => {
                    return Err(LaunchError::Config(
                        "a reverse resource without a port".into(),
                    ));
                }
            }
        }
        (Direction::Forward, Resource::Builtin) => unreachable!("handled above"),
    };
    let _ = events.send(Event::Connected { url: url.clone() });
    Ok(Session {
        url,
        connections,
        server,
        builtin_server: None,
    })
}

/// Dial with `policy`; with `retry_closed`, a peer that closes during the handshake
/// (an ssh tunnel whose far end does not listen yet) counts as one more failed attempt
/// within the same time budget.
async fn dial_retrying_closed(
    manager: &ConnectionManager,
    host: &str,
    port: u16,
    policy: RetryPolicy,
    retry_closed: bool,
    events: &EventSender,
) -> Result<Connection, ConnectError> {
    let started = tokio::time::Instant::now();
    let mut attempt = 0u32;
    loop {
        // Each round gets what is left of the time budget.
        let round = RetryPolicy {
            timeout: match policy.timeout {
                NetTimeout::Within(d) => NetTimeout::Within(d.saturating_sub(started.elapsed())),
                other => other,
            },
            ..policy
        };
        let result = manager
            .connect_to_remote(host, port, round, |n, e, left| {
                let _ = events.send(Event::Stderr {
                    line: format!(
                        "connect attempt {} to {host}:{port} failed ({e}){}",
                        attempt + n,
                        left.map(|l| format!("; retrying for {:.0} s more", l.as_secs_f64()))
                            .unwrap_or_else(|| "; retrying".into())
                    ),
                });
            })
            .await;
        attempt += 1;
        let closed = matches!(
            &result,
            Err(ConnectError::Establish { source, .. }) if closed_early(source)
        );
        let time_left = match policy.timeout {
            NetTimeout::Once => false,
            NetTimeout::Within(d) => started.elapsed() + policy.interval < d,
            NetTimeout::Forever => true,
        };
        if !(retry_closed && closed && time_left) {
            return result;
        }
        let _ = events.send(Event::Stderr {
            line: format!(
                "connect attempt {attempt} to {host}:{port}: the tunnel closed (the server does not listen yet); retrying"
            ),
        });
        tokio::time::sleep(policy.interval).await;
    }
}

/// Whether the peer went away before the handshake could start: what an ssh tunnel
/// does while its far end refuses connections.
fn closed_early(e: &pv_transport::EstablishError) -> bool {
    use pv_transport::handshake::HandshakeError;
    match e {
        pv_transport::EstablishError::Handshake(HandshakeError::Closed(_)) => true,
        pv_transport::EstablishError::Handshake(HandshakeError::Io(io)) => matches!(
            io.kind(),
            std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
        ),
        _ => false,
    }
}

/// Start the plan's process, if any: the supervised server (unless it detached) and its
/// ready line. `listening`: the ports a reverse connection listens on here.
async fn start(
    plan: &Plan,
    token: Option<&Token>,
    events: &EventSender,
    options: &LaunchOptions,
    listening: &[u16],
) -> Result<(Option<Supervised>, Option<ReadyLine>), LaunchError> {
    let Launch::Process(process) = plan.launch() else {
        return Ok((None, None));
    };
    let secrets = token.map(|token| Secrets {
        token: token.clone(),
        client_cert: None,
    });
    if ssh::is_ssh_plan(plan) {
        return start_ssh(plan, secrets.as_ref(), events, options, listening).await;
    }
    let timeout = plan
        .timeouts()
        .process_start
        .unwrap_or(DEFAULT_READY_TIMEOUT)
        .max(Duration::from_secs(1));
    match start_local(process, secrets.as_ref(), timeout, events).await? {
        Started::Running { handle, ready } => Ok((Some(Supervised::Local(handle)), ready)),
        Started::Detached => Ok((None, None)),
    }
}

/// The ssh part of [`start`]: authenticate, run the remote command, open the tunnel
/// (with the plan's ssh backend), then follow the plan's delay when no ready line is
/// awaited.
async fn start_ssh(
    plan: &Plan,
    secrets: Option<&Secrets>,
    events: &EventSender,
    options: &LaunchOptions,
    listening: &[u16],
) -> Result<(Option<Supervised>, Option<ReadyLine>), LaunchError> {
    let begun = std::time::Instant::now();
    let Launch::Process(process) = plan.launch() else {
        unreachable!("an ssh plan starts a process");
    };
    let backend = process
        .remote
        .as_ref()
        .map_or(SshBackend::Openssh, |r| r.backend);
    // Before anything starts: a build without the plan's backend refuses it.
    SshTarget::require_backend(backend)?;
    let mut server = match backend {
        SshBackend::Openssh => {
            start_openssh(plan, secrets, events, options, listening, begun).await?
        }
        #[cfg(feature = "russh")]
        SshBackend::Russh => start_russh(plan, secrets, events, options, listening, begun).await?,
        #[cfg(not(feature = "russh"))]
        SshBackend::Russh => unreachable!("refused by require_backend"),
    };
    let ready = server.remote_ready().cloned();
    if let Some(r) = &ready {
        let _ = events.send(Event::Ready {
            port: r.port,
            elapsed: begun.elapsed(),
        });
        return Ok((Some(server), ready));
    }
    // The ready line was awaited and the command exited 0 without one: detached.
    if secrets.is_some() {
        return Ok((Some(Supervised::Detached(Box::new(server))), None));
    }
    let detached = match &process.delay {
        Delay::None => false,
        Delay::Wait(d) => {
            stage(events, Stage::Delay, begun);
            tokio::select! {
                status = server.wait() => {
                    let status = status?;
                    if !status.success() {
                        return Err(server.remote_exit_error(status));
                    }
                    true
                }
                _ = tokio::time::sleep(*d) => false,
            }
        }
        Delay::UntilExit => {
            stage(events, Stage::WaitExit, begun);
            let status = server.wait().await?;
            if !status.success() {
                return Err(server.remote_exit_error(status));
            }
            true
        }
    };
    if detached {
        server = Supervised::Detached(Box::new(server));
    }
    Ok((Some(server), None))
}

/// Point a reverse tunnel at the port the client really listens on.
fn reverse_to_listener(tunnel: &mut TunnelMode, listening: &[u16]) {
    if let (TunnelMode::Reverse { local_port, .. }, Some(port)) = (tunnel, listening.first()) {
        *local_port = *port;
    }
}

/// Once authenticated: report the start (and the ready-line wait, when there is one), and
/// turn the remote command's output lines into events.
fn remote_start(
    events: &EventSender,
    with_ready_line: bool,
    begun: std::time::Instant,
) -> tokio::sync::mpsc::UnboundedSender<RemoteOutput> {
    stage(events, Stage::Start, begun);
    if with_ready_line {
        stage(events, Stage::WaitReady, begun);
    }
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel();
    let forward = events.clone();
    tokio::spawn(async move {
        while let Some(line) = out_rx.recv().await {
            let _ = forward.send(match line {
                RemoteOutput::Stdout(line) => Event::Stdout { line },
                RemoteOutput::Stderr(line) => Event::Stderr { line },
            });
        }
    });
    out_tx
}

/// [`start_ssh`] with the OpenSSH backend: the control master, then the remote command
/// and the tunnel through it.
async fn start_openssh(
    plan: &Plan,
    secrets: Option<&Secrets>,
    events: &EventSender,
    options: &LaunchOptions,
    listening: &[u16],
    begun: std::time::Instant,
) -> Result<Supervised, LaunchError> {
    let (mut launch, command) = ssh::ssh_launch(plan, options.ssh.clone(), secrets.is_some())?;
    reverse_to_listener(&mut launch.tunnel, listening);
    stage(events, Stage::SshConnect, begun);
    let master = Arc::new(Master::connect(&launch.target, &launch.master).await?);
    let out_tx = remote_start(events, secrets.is_some(), begun);
    let session = launch
        .start_on(master, move |_| command, secrets, Some(out_tx))
        .await?;
    Ok(Supervised::Ssh(session))
}

/// [`start_ssh`] with the russh backend: one in-process connection (prompts through
/// `options.ssh.prompter`), then the same steps on it.
#[cfg(feature = "russh")]
async fn start_russh(
    plan: &Plan,
    secrets: Option<&Secrets>,
    events: &EventSender,
    options: &LaunchOptions,
    listening: &[u16],
    begun: std::time::Instant,
) -> Result<Supervised, LaunchError> {
    let (mut launch, command) = ssh::russh_launch(plan, &options.ssh, secrets.is_some())?;
    reverse_to_listener(&mut launch.tunnel, listening);
    stage(events, Stage::SshConnect, begun);
    let conn = launch.connect().await?;
    let out_tx = remote_start(events, secrets.is_some(), begun);
    let session = launch
        .start_on(conn, move |_| command, secrets, Some(out_tx))
        .await?;
    Ok(Supervised::Russh(session))
}
