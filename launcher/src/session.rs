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
use crate::profile::ConnectTimeout;
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
}

/// A launched server and the live, handshaken connection(s) to it.
#[derive(Debug)]
pub struct Session {
    url: String,
    connections: Vec<Connection>,
    server: Option<ServerHandle>,
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

    /// The started server process, when pv-launch started one that is still attached.
    pub fn server(&mut self) -> Option<&mut ServerHandle> {
        self.server.as_mut()
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
        if let Some(mut h) = self.server.take() {
            h.cleanup().await;
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

/// Start what `plan` says and connect to it. Progress goes to `events`.
///
/// Forward: start, wait for the ready line (or the delay), then dial with retry.
/// Reverse: listen first, start, then wait for the server to dial back.
/// Dropping the future at any point stops everything started so far.
pub async fn launch(plan: &Plan, events: &EventSender) -> Result<Session, LaunchError> {
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

    let (server, ready) = start(plan, token.as_ref(), events).await?;
    let config = connection_config(expected, token.as_ref(), ready.as_ref())?;
    let manager = ConnectionManager::new(ConnectionMode::Single, config);
    stage(events, Stage::Connect, begun);

    let target = connection_target(expected, ready.as_ref());
    let url = match direction {
        Direction::Forward => target.to_string(),
        Direction::Reverse => {
            let ports: Vec<String> = listeners
                .iter()
                .filter_map(|l| l.local_addr().ok())
                .map(|a| format!(":{}", a.port()))
                .collect();
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
            let conn = manager
                .connect_to_remote(
                    &host,
                    port,
                    retry_policy(&expected.timeout),
                    |n, e, left| {
                        let _ = events.send(Event::Stderr {
                            line: format!(
                                "connect attempt {n} to {host}:{port} failed ({e}){}",
                                left.map(|l| format!(
                                    "; retrying for {:.0} s more",
                                    l.as_secs_f64()
                                ))
                                .unwrap_or_else(|| "; retrying".into())
                            ),
                        });
                    },
                )
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

/// Start the plan's process, if any; the handle (unless it detached) and its ready line.
async fn start(
    plan: &Plan,
    token: Option<&Token>,
    events: &EventSender,
) -> Result<(Option<ServerHandle>, Option<ReadyLine>), LaunchError> {
    let Launch::Process(process) = plan.launch() else {
        return Ok((None, None));
    };
    let secrets = token.map(|token| Secrets {
        token: token.clone(),
        client_cert: None,
    });
    let timeout = plan
        .timeouts()
        .process_start
        .unwrap_or(DEFAULT_READY_TIMEOUT)
        .max(Duration::from_secs(1));
    match start_local(process, secrets.as_ref(), timeout, events).await? {
        Started::Running { handle, ready } => Ok((Some(handle), ready)),
        Started::Detached => Ok((None, None)),
    }
}
