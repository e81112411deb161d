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

mod connect;

pub use crate::startup::StartOptions as LaunchOptions;
pub use connect::{connection_target, needs_token};

use std::time::Duration;

use pv_transport::{
    ConnectError, Connection, ConnectionManager, ConnectionMode, Direction, Listener, Resource,
    Token,
};

use crate::events::{Event, EventSender, Stage};
use crate::plan::{Launch, Plan};
use crate::startup::ssh::{SshError, SshSession};
use crate::startup::{Server, ServerHandle, StartError, UNLIMITED_READY_WAIT};
use connect::connection_config;

/// A launch that did not produce a connection.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Starting the server failed.
    #[error(transparent)]
    Start(StartError),
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

impl From<StartError> for LaunchError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::Ssh(e) => LaunchError::Ssh(e),
            other => LaunchError::Start(other),
        }
    }
}

/// A launched server and the live, handshaken connection(s) to it.
///
/// End it with [`Session::cleanup`], which awaits everything: for a batch job, `scancel`
/// and the confirmation that the job left the queue. Dropping a session instead stops
/// what it started as well; a batch job is then cancelled by its watchdog (a small process
/// on the submitting host that `scancel`s when pv-launch's end of its pipe or ssh channel
/// closes: nothing more is needed from the program, not even a live async runtime, and
/// it works after a crash or SIGKILL too), and confirmed from a background task while the
/// runtime lives ([`crate::startup::batch::finish_pending_cancels`] waits for those).
#[derive(Debug)]
pub struct Session {
    url: String,
    connections: Vec<Connection>,
    server: Option<Server>,
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

    /// The server pv-launch started and supervises, wherever it runs (`None`: a manual
    /// start, a local command that detached, `builtin:`).
    pub fn started(&mut self) -> Option<&mut Server> {
        self.server.as_mut()
    }

    /// The started server process, when pv-launch started one on this host that is still
    /// attached.
    pub fn server(&mut self) -> Option<&mut ServerHandle> {
        self.server.as_mut().and_then(Server::local)
    }

    /// The ssh session (connection, tunnels, remote process group), when the server was
    /// started over ssh, with either backend.
    pub fn ssh(&mut self) -> Option<&mut SshSession> {
        self.server.as_mut().and_then(Server::ssh)
    }

    /// Wait until the supervised server ends: its exit status, or an error when the ssh
    /// connection carrying it (and its tunnels) was lost or its batch job ended otherwise
    /// than completed. Never returns when nothing is
    /// supervised (a manual start, a detached local command, `builtin:`).
    pub async fn wait_server(&mut self) -> Result<std::process::ExitStatus, LaunchError> {
        match self.server.as_mut() {
            Some(s) => Ok(s.wait().await?),
            None => std::future::pending().await,
        }
    }

    /// For `builtin:`: the server's end of the in-process connection, for the embedding
    /// application to serve.
    pub fn take_builtin_server(&mut self) -> Option<Connection> {
        self.builtin_server.take()
    }

    /// Close the connections and stop the server's whole process group; a batch job is
    /// cancelled and confirmed gone from the queue before this returns.
    pub async fn cleanup(mut self) {
        self.connections.clear();
        self.builtin_server = None;
        if let Some(server) = self.server.take() {
            server.cleanup().await;
        }
    }
}

/// The resource the client dials once the server runs (the ready line's port when it
/// chose one), through the local end of a forward ssh tunnel when there is one; and that
/// tunnel's local address.
fn tunnelled_target(
    expected: &crate::plan::ExpectedConnection,
    ready: Option<&pv_transport::launch::ReadyLine>,
    server: Option<&Server>,
) -> (Resource, Option<std::net::SocketAddr>) {
    let mut target = connection_target(expected, ready);
    let tunnel = server.and_then(Server::tunnel_address);
    if let (Some(local), Resource::ClientServer { server: ep, .. }) = (tunnel, &mut target) {
        ep.host = Some(pv_transport::resource::Host::Ipv4(
            std::net::Ipv4Addr::LOCALHOST,
        ));
        ep.port = Some(local.port());
    }
    // A batch job's server (without a tunnel) is on the job's node: dial it there.
    let dial = server.and_then(Server::dial_target);
    if let (Some((host, port)), Resource::ClientServer { server: ep, .. }) = (dial, &mut target) {
        ep.host = Some(match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => pv_transport::resource::Host::Ipv4(a),
            Ok(std::net::IpAddr::V6(a)) => pv_transport::resource::Host::Ipv6(a),
            Err(_) => pv_transport::resource::Host::Name(host),
        });
        ep.port = Some(port);
    }
    (target, tunnel)
}

/// The token of the native handshake: made here for a server pv-launch starts (it goes
/// to the server on the launch channel), given by the caller for one started by hand.
fn launch_token(plan: &Plan, options: &LaunchOptions) -> Result<Option<Token>, LaunchError> {
    if !needs_token(plan.connection()) {
        return Ok(None);
    }
    match plan.launch() {
        Launch::Process(_) => Ok(Some(Token::generate())),
        Launch::Nothing => options.token.clone().map(Some).ok_or_else(|| {
            LaunchError::Config(
                "this server is started by hand and speaks pv-launch's native handshake: give the \
                 token it was started with (--token-file FILE, or PV_LAUNCH_TOKEN in the \
                 environment)"
                    .into(),
            )
        }),
    }
}

/// Start the plan's process, if any: the supervised server and its ready line.
async fn start_plan(
    plan: &Plan,
    token: Option<&Token>,
    options: &LaunchOptions,
    listening: &[u16],
    events: &EventSender,
) -> Result<(Option<Server>, Option<pv_transport::launch::ReadyLine>), LaunchError> {
    let Launch::Process(process) = plan.launch() else {
        return Ok((None, None));
    };
    let secrets = token.map(|token| pv_transport::launch::Secrets {
        token: token.clone(),
        client_cert: None,
    });
    let ready_timeout = plan
        .timeouts()
        .process_start
        .unwrap_or(UNLIMITED_READY_WAIT)
        .max(Duration::from_secs(1));
    Ok(crate::startup::start(
        process,
        secrets.as_ref(),
        ready_timeout,
        options,
        listening,
        events,
    )
    .await?)
}

/// `127.0.0.1:<port>` for each of `ports`: where a client listens (or a relay serves).
pub fn loopback_endpoints(ports: &[u16]) -> Vec<(String, u16)> {
    ports
        .iter()
        .map(|p| ("127.0.0.1".to_string(), *p))
        .collect()
}

/// The URL a client gets in `PV_LAUNCH_URL`: `scheme://HOST:PORT`, endpoints joined by
/// `//` (a data + render pair), IPv6 hosts in brackets.
pub fn client_url(scheme: &str, endpoints: &[(String, u16)]) -> String {
    let hosts: Vec<String> = endpoints
        .iter()
        .map(|(h, p)| {
            if h.contains(':') {
                format!("[{h}]:{p}")
            } else {
                format!("{h}:{p}")
            }
        })
        .collect();
    format!("{scheme}://{}", hosts.join("//"))
}

/// A server started and readied for a client program that runs the server's handshake
/// itself (ParaView's, or none): pv-launch holds no connection to it.
#[derive(Debug)]
pub struct Handoff {
    url: String,
    direction: Direction,
    endpoints: Vec<(String, u16)>,
    server: Option<Server>,
}

impl Handoff {
    /// What the client does, in ParaView's URI forms (`PV_LAUNCH_URL`): `cs://H:P` dial
    /// there, `csrc://127.0.0.1:P` listen there (the server dials); `cdsrs://…//…` and
    /// `cdsrsrc://…//…` for a data server + render server pair.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Forward: the client dials; reverse: the client listens.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The host and port of each endpoint (one, or data then render).
    pub fn endpoints(&self) -> &[(String, u16)] {
        &self.endpoints
    }

    /// The server pv-launch started and supervises (`None`: started by hand, or
    /// detached).
    pub fn started(&mut self) -> Option<&mut Server> {
        self.server.as_mut()
    }

    /// Wait until the supervised server ends (never when nothing is supervised).
    pub async fn wait_server(&mut self) -> Result<std::process::ExitStatus, LaunchError> {
        match self.server.as_mut() {
            Some(s) => Ok(s.wait().await?),
            None => std::future::pending().await,
        }
    }

    /// Stop the server's whole process group (and the ssh connection carrying it).
    pub async fn cleanup(mut self) {
        if let Some(server) = self.server.take() {
            server.cleanup().await;
        }
    }
}

/// Start what `plan` says and ready the path for a client program that connects by
/// itself, running the server's handshake end to end: start, tunnels, readiness (the
/// ready line, else the ready pattern, else the delay) — never a probe connection, which
/// would use up a server that accepts one client. For a reverse connection the client
/// must already listen on `client_ports` (one, or data then render, on 127.0.0.1): the
/// server (or its ssh tunnel) dials them. The plan must not need pv-launch's native
/// handshake (see [`needs_token`]; such servers are connected with [`launch_with`] and
/// handed on decrypted).
pub async fn prepare(
    plan: &Plan,
    events: &EventSender,
    options: &LaunchOptions,
    client_ports: &[u16],
) -> Result<Handoff, LaunchError> {
    let expected = plan.connection();
    if needs_token(expected) || expected.resource == Resource::Builtin {
        return Err(LaunchError::Config(
            "this server speaks pv-launch's native handshake (or is built in): pv-launch connects \
             to it itself"
                .into(),
        ));
    }
    let direction = expected.resource.direction().unwrap_or(Direction::Forward);
    let (server, ready) = start_plan(plan, None, options, client_ports, events).await?;
    let scheme = expected.resource.scheme();
    let (url, endpoints) = match direction {
        Direction::Reverse => {
            let endpoints = loopback_endpoints(client_ports);
            (client_url(scheme, &endpoints), endpoints)
        }
        Direction::Forward => {
            let (target, _) = tunnelled_target(expected, ready.as_ref(), server.as_ref());
            let endpoints: Vec<(String, u16)> = target
                .endpoints()
                .iter()
                .map(|(h, p)| (connect::dial_host(*h), *p))
                .collect();
            // Port 0 with no ready line reporting the real one: the client would dial
            // port 0 (pvpython falls back to 11111). Say so, instead of handing it over.
            if endpoints.iter().any(|(_, p)| *p == 0) {
                if let Some(server) = server {
                    server.cleanup().await;
                }
                return Err(LaunchError::Config(format!(
                    "{}: port 0, and the server reported no port (it prints no pv-launch \
                     ready line): the client cannot know where to connect; give the \
                     resource a port (e.g. {scheme}://127.0.0.1:11111)",
                    expected.resource
                )));
            }
            (client_url(scheme, &endpoints), endpoints)
        }
    };
    let _ = events.send(Event::Handoff { url: url.clone() });
    Ok(Handoff {
        url,
        direction,
        endpoints,
        server,
    })
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
    let token = launch_token(plan, options)?;
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

    let (server, ready) = start_plan(plan, token.as_ref(), options, &listening, events).await?;
    let config = connection_config(expected, token.as_ref(), ready.as_ref())?;
    let manager = ConnectionManager::new(ConnectionMode::Single, config);
    stage(events, Stage::Connect, begun);

    // Through a forward ssh tunnel the client dials the tunnel's local end.
    let (target, tunnel) = tunnelled_target(expected, ready.as_ref(), server.as_ref());
    let url = match direction {
        Direction::Forward => target.to_string(),
        Direction::Reverse => {
            let ports: Vec<String> = listening.iter().map(|p| format!(":{p}")).collect();
            format!("{}://{}", target.scheme(), ports.join("//"))
        }
    };
    // An ssh tunnel accepts at once, then closes when nothing listens at its far end
    // yet: without a ready line saying the server listens, such a close is retried like
    // a refused dial.
    let retry_closed = tunnel.is_some() && ready.is_none();
    let connections =
        connect::connect(&manager, &target, listeners, expected, retry_closed, events)
            .await
            .map_err(|e| match e {
                connect::Failed::Connect(source) => LaunchError::Connect {
                    url: url.clone(),
                    source,
                },
                connect::Failed::NoPort => {
                    LaunchError::Config("a reverse resource without a port".into())
                }
            })?;
    let _ = events.send(Event::Connected { url: url.clone() });
    Ok(Session {
        url,
        connections,
        server,
        builtin_server: None,
    })
}
