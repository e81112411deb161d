//! Connecting to what was started: the transport configuration the plan asks for
//! (handshake, TLS pinned to the certificate the server announced on the launch
//! channel), dialling with retry (a forward ssh tunnel that closes early is retried), and
//! the resource the client finally uses.

use std::sync::Arc;
use std::time::Duration;

use pv_transport::handshake::native::NativeHandshake;
use pv_transport::handshake::{Handshake, NoHandshake};
use pv_transport::launch::ReadyLine;
use pv_transport::{
    ConnectError, ConnectTimeout as NetTimeout, Connection, ConnectionConfig, ConnectionManager,
    Resource, RetryPolicy, TlsConfig, Token,
};

use super::LaunchError;
use crate::events::{Event, EventSender};
use crate::plan::{ExpectedConnection, ResolvedHandshake};
use crate::profile::ConnectTimeout;

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
    matches!(expected.handshake, ResolvedHandshake::Native)
}

/// The host to dial for an endpoint: exactly the address a server binds, never a name
/// that resolves to several (`localhost` may resolve to `::1` first, where another local
/// user could listen): `localhost` and no host are `127.0.0.1`.
pub(super) fn dial_host(host: Option<&pv_transport::Host>) -> String {
    match host.map(|h| h.to_lookup_string()) {
        None => "127.0.0.1".to_string(),
        Some(h) if h.eq_ignore_ascii_case("localhost") => "127.0.0.1".to_string(),
        Some(h) => h,
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
        (ResolvedHandshake::ParaView(hs), _) => Arc::new(hs.clone()),
        (ResolvedHandshake::None, _) => Arc::new(NoHandshake),
    })
}

/// The transport configuration for `expected`: its handshake, and TLS pinned to the
/// certificate fingerprint of the server's ready line.
pub(super) fn connection_config(
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

/// Why [`connect`] made no connection.
pub(super) enum Failed {
    /// Dialling or waiting failed, or the handshake was refused.
    Connect(ConnectError),
    /// A reverse resource without a port to listen on.
    NoPort,
}

/// Make the connection(s) `expected` describes to `target`: dial with retry (forward; a
/// data + render pair dials both), or wait on `listeners` for the server's dial
/// (reverse). `retry_closed`: see [`dial_retrying_closed`].
pub(super) async fn connect(
    manager: &ConnectionManager,
    target: &Resource,
    listeners: Vec<pv_transport::Listener>,
    expected: &ExpectedConnection,
    retry_closed: bool,
    events: &EventSender,
) -> Result<Vec<Connection>, Failed> {
    use pv_transport::Direction;
    let policy = retry_policy(&expected.timeout);
    match (target.direction(), target) {
        (Some(Direction::Forward), Resource::ClientServer { server: ep, .. }) => {
            let host = dial_host(ep.host.as_ref());
            let port = ep.port_or(pv_transport::resource::DEFAULT_SERVER_PORT);
            let conn = dial_retrying_closed(manager, &host, port, policy, retry_closed, events)
                .await
                .map_err(Failed::Connect)?;
            Ok(vec![conn])
        }
        (Some(Direction::Forward), _) => {
            let eps = target.endpoints();
            let host = |i: usize| dial_host(eps[i].0);
            let (d, r) = manager
                .connect_data_render((&host(0), eps[0].1), (&host(1), eps[1].1), policy)
                .await
                .map_err(Failed::Connect)?;
            Ok(vec![d, r])
        }
        (_, _) => {
            let deadline = wait_deadline(&expected.timeout);
            let mut ls = listeners.into_iter();
            match (ls.next(), ls.next()) {
                (Some(one), None) => Ok(vec![
                    manager
                        .wait_for_server(one, deadline)
                        .await
                        .map_err(Failed::Connect)?,
                ]),
                (Some(d), Some(r)) => {
                    let (d, r) = manager
                        .wait_for_data_render(d, r, deadline)
                        .await
                        .map_err(Failed::Connect)?;
                    Ok(vec![d, r])
                }
                _ => Err(Failed::NoPort),
            }
        }
    }
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
                let _ = events.send(Event::Note {
                    message: format!(
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
        let _ = events.send(Event::Note {
            message: format!(
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
