//! The connection manager: ParaView's ProcessModule rules for who connects to whom, and how
//! many connections a process keeps.
//!
//! **Single-connection mode** (the default):
//! - forward: the server waits for a client; after the first client it admits it closes its
//!   listening socket; when that client disconnects, the server's serving loop ends (the
//!   demo server then exits).
//! - reverse: the client listens before anything else; the server dials it; after the first
//!   good server the client closes its listening socket; the server exits when the client
//!   leaves.
//! - a client holds at most one connection: [`ConnectionManager::connect_to_remote`] refuses a
//!   second while the first is alive.
//!
//! **Multiple-connections mode** (chosen when the manager is made, before anything starts):
//! - forward: the server keeps listening and accepting ([`ConnectionManager::accept_clients`]);
//!   a client leaving closes only its own connection; a client may hold connections to
//!   several servers (`connect_to_remote` any number of times).
//! - reverse: each server still dials exactly one client and ends with that connection; the
//!   client does not wait at start and instead monitors ([`ConnectionManager::monitor_connections`])
//!   for any number of incoming servers.
//!
//! Peers that fail the handshake are dropped and the listener keeps waiting, as pvserver
//! does. Every accepted socket is handshaken in its own task under the handshake deadline,
//! so a silent or trickling peer cannot delay anyone else.
//!
//! **Unauthenticated work is bounded.** Anyone who can reach the port can open sockets, and
//! each one costs a task, buffers and (with TLS) a TLS handshake for up to the handshake
//! deadline before the token is checked. So a listener runs at most
//! [`HandshakeLimits::total`] such handshakes at once (default
//! [`DEFAULT_MAX_PENDING_HANDSHAKES`]) and at most [`HandshakeLimits::per_peer`] from one
//! peer (default [`DEFAULT_MAX_PENDING_PER_PEER`]; a peer is an IPv4 address, or an IPv6
//! /64, the block one host usually holds). A socket over either limit is closed at once and
//! reported as refused ([`EstablishError::TooManyPending`]); a place frees as soon as a
//! handshake ends, either way. The per-peer limit keeps one remote host from taking every
//! place (a listener bound to a network address). On loopback it cannot tell local users
//! apart (they all connect from 127.0.0.1, and any of them may pick another 127/8 source), so
//! there the limit in all bounds the cost, and the handshake deadline bounds how long a
//! squatter holds a place. Authenticated connections do not count. An honest burst of more
//! than [`HandshakeLimits::per_peer`] simultaneous clients from one address needs higher
//! limits ([`ConnectionManager::with_handshake_limits`]). A wait for the first good peer keeps the last [`REJECTED_KEPT`] refusals for its
//! error and counts the rest, so a stream of bad clients costs no memory.
//!
//! **Which peer is "the first"** when several handshake at once: the first to be *admitted*.
//! The acceptor commits to a connection inside the handshake, just before the message that
//! tells the dialler it is accepted (the native acceptor's PROOF; see [`Admission`]), by
//! taking one of the listener's places (single mode: one place). So the dialler that hears
//! "accepted" is always the one served: the launcher's own client cannot be told it is in
//! and then lose to a second client whose handshake happened to be reported first. A peer
//! that reaches that point after the place is taken is turned away with
//! [`HandshakeError::Busy`] (native: a REJECT with that reason); one still handshaking when
//! the winner is delivered is closed with the listener, and later ones are refused by the
//! kernel.
//!
//! One manager per process is the seed's rule: [`ConnectionManager::install_global`] makes
//! the process-wide instance, and a second call is an error. Plain values from
//! [`ConnectionManager::new`] serve tests and embedders that want several.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connection::{Connection, ConnectionConfig, EstablishError, Slot};
use crate::handshake::{Admission, HandshakeError, Role, Side};
use crate::net::{DialError, Listener, RetryPolicy, dial, dial_addr};

/// How many connections a manager keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionMode {
    /// One connection; listeners close after the first good peer.
    Single,
    /// Any number; listeners keep accepting.
    Multiple,
}

/// What went wrong while connecting.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No socket could be opened.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// A socket opened but TLS or the handshake failed.
    #[error("connected to {addr}, but: {source}")]
    Establish {
        /// The peer's address.
        addr: String,
        /// What failed.
        #[source]
        source: EstablishError,
    },
    /// Single-connection mode already has a live connection.
    #[error(
        "this manager is in single-connection mode and already holds a connection; close it first or use multiple-connections mode"
    )]
    AlreadyConnected,
    /// The operation needs multiple-connections mode.
    #[error(
        "{0} needs multiple-connections mode, which must be chosen when the manager is created"
    )]
    NeedsMultipleMode(&'static str),
    /// Waiting for a peer took longer than allowed.
    #[error("no peer completed the handshake within {waited:?}{}", rejected_summary(*.refused, .rejected))]
    TimedOut {
        /// How long we waited.
        waited: Duration,
        /// Why the last peers that did connect were refused: the last [`REJECTED_KEPT`] at
        /// most, oldest first.
        rejected: Vec<Rejected>,
        /// How many peers were refused in all.
        refused: u64,
    },
    /// The listening socket failed.
    #[error("listening socket failed: {0}")]
    Listen(#[source] std::io::Error),
    /// A process-wide manager exists already.
    #[error("a process-wide connection manager was already created (one per process)")]
    AlreadyCreated,
}

fn rejected_summary(refused: u64, rejected: &[Rejected]) -> String {
    match rejected.last() {
        None => String::new(),
        Some(last) => format!(
            "; {refused} peer(s) were refused, the last one because: {}",
            last.error
        ),
    }
}

/// Default of [`HandshakeLimits::total`].
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 64;
/// Default of [`HandshakeLimits::per_peer`].
pub const DEFAULT_MAX_PENDING_PER_PEER: usize = 8;
/// How many refused peers a wait for the first good one keeps for its error.
pub const REJECTED_KEPT: usize = 16;

/// How many unauthenticated handshakes one listener runs at once (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// In all.
    pub total: usize,
    /// From one peer: one IPv4 address, or one IPv6 /64.
    pub per_peer: usize,
}

impl Default for HandshakeLimits {
    /// [`DEFAULT_MAX_PENDING_HANDSHAKES`] in all, [`DEFAULT_MAX_PENDING_PER_PEER`] per peer:
    /// far more than a launch needs (one client, or a few servers of one session dialling
    /// back), and few enough that a flood costs little.
    fn default() -> Self {
        HandshakeLimits {
            total: DEFAULT_MAX_PENDING_HANDSHAKES,
            per_peer: DEFAULT_MAX_PENDING_PER_PEER,
        }
    }
}

/// A peer that connected but was refused.
#[derive(Debug)]
pub struct Rejected {
    /// Its address.
    pub addr: SocketAddr,
    /// Why.
    pub error: EstablishError,
}

/// Makes and accepts connections under one mode and one [`ConnectionConfig`].
#[derive(Debug)]
pub struct ConnectionManager {
    mode: ConnectionMode,
    config: ConnectionConfig,
    limits: HandshakeLimits,
    live: Arc<AtomicUsize>,
}

static GLOBAL: OnceLock<ConnectionManager> = OnceLock::new();

impl ConnectionManager {
    /// A manager value (for tests and embedders; processes normally use
    /// [`install_global`](Self::install_global)).
    pub fn new(mode: ConnectionMode, config: ConnectionConfig) -> ConnectionManager {
        ConnectionManager {
            mode,
            config,
            limits: HandshakeLimits::default(),
            live: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The same with other limits on unauthenticated handshakes (values below 1 count as
    /// 1).
    pub fn with_handshake_limits(mut self, limits: HandshakeLimits) -> ConnectionManager {
        self.limits = HandshakeLimits {
            total: limits.total.max(1),
            per_peer: limits.per_peer.max(1),
        };
        self
    }

    /// The limits on unauthenticated handshakes of this manager's listeners.
    pub fn handshake_limits(&self) -> HandshakeLimits {
        self.limits
    }

    /// Make this manager the process-wide one (for settings beyond
    /// [`install_global`](Self::install_global)'s). Fails with
    /// [`ConnectError::AlreadyCreated`] if there is one already.
    pub fn install(self) -> Result<&'static ConnectionManager, ConnectError> {
        GLOBAL.set(self).map_err(|_| ConnectError::AlreadyCreated)?;
        Ok(GLOBAL.get().expect("just set"))
    }

    /// Create the process-wide manager. A second call fails with
    /// [`ConnectError::AlreadyCreated`], whatever its arguments.
    pub fn install_global(
        mode: ConnectionMode,
        config: ConnectionConfig,
    ) -> Result<&'static ConnectionManager, ConnectError> {
        let mut created = false;
        let manager = GLOBAL.get_or_init(|| {
            created = true;
            ConnectionManager::new(mode, config)
        });
        if created {
            Ok(manager)
        } else {
            Err(ConnectError::AlreadyCreated)
        }
    }

    /// The process-wide manager, if created.
    pub fn global() -> Option<&'static ConnectionManager> {
        GLOBAL.get()
    }

    /// The mode chosen at creation.
    pub fn mode(&self) -> ConnectionMode {
        self.mode
    }

    /// The configuration every connection uses.
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// Connections made or accepted by this manager that are still open.
    pub fn live_connections(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Single mode allows one live connection at a time.
    fn ensure_free(&self) -> Result<(), ConnectError> {
        if self.mode == ConnectionMode::Single && self.live_connections() > 0 {
            return Err(ConnectError::AlreadyConnected);
        }
        Ok(())
    }

    /// Accept and handshake on `listener` as `role`, stopping after `max` good peers.
    fn incoming(&self, listener: Listener, role: Role, max: Option<usize>) -> Incoming {
        Incoming::start(
            listener,
            role,
            self.config.clone(),
            self.limits,
            self.live.clone(),
            max,
        )
    }

    /// Client, forward: dial a listening server (retrying per `policy`) and handshake.
    pub async fn connect_to_remote(
        &self,
        host: &str,
        port: u16,
        policy: RetryPolicy,
        on_retry: impl FnMut(u32, &std::io::Error, Option<Duration>),
    ) -> Result<Connection, ConnectError> {
        self.ensure_free()?;
        self.dial_as(Role::Client, host, port, policy, on_retry)
            .await
    }

    /// Client, forward: dial exactly `addr` (no name resolution; the address a server
    /// reported it listens on) and handshake.
    pub async fn connect_to_addr(
        &self,
        addr: SocketAddr,
        policy: RetryPolicy,
        on_retry: impl FnMut(u32, &std::io::Error, Option<Duration>),
    ) -> Result<Connection, ConnectError> {
        self.ensure_free()?;
        let stream = dial_addr(addr, policy, self.config.heartbeat.as_ref(), on_retry).await?;
        self.establish_dialled(stream, Role::Client, addr.to_string())
            .await
    }

    /// Client, forward, data server + render server: connect to both, in that order.
    pub async fn connect_data_render(
        &self,
        data: (&str, u16),
        render: (&str, u16),
        policy: RetryPolicy,
    ) -> Result<(Connection, Connection), ConnectError> {
        self.ensure_free()?;
        let d = self
            .dial_as(Role::Client, data.0, data.1, policy, |_, _, _| {})
            .await?;
        let r = self
            .dial_as(Role::Client, render.0, render.1, policy, |_, _, _| {})
            .await?;
        Ok((d, r))
    }

    /// Server, reverse: dial the client that waits for us (retrying per `policy`, ParaView
    /// uses 60 s) and handshake. A server dials exactly one client in either mode.
    pub async fn dial_client(
        &self,
        host: &str,
        port: u16,
        policy: RetryPolicy,
        on_retry: impl FnMut(u32, &std::io::Error, Option<Duration>),
    ) -> Result<Connection, ConnectError> {
        self.dial_as(Role::Server, host, port, policy, on_retry)
            .await
    }

    async fn dial_as(
        &self,
        role: Role,
        host: &str,
        port: u16,
        policy: RetryPolicy,
        on_retry: impl FnMut(u32, &std::io::Error, Option<Duration>),
    ) -> Result<Connection, ConnectError> {
        let stream = dial(host, port, policy, self.config.heartbeat.as_ref(), on_retry).await?;
        self.establish_dialled(stream, role, format!("{host}:{port}"))
            .await
    }

    /// TLS and the handshake on a socket this end dialled (`shown`: what was dialled).
    async fn establish_dialled(
        &self,
        stream: tokio::net::TcpStream,
        role: Role,
        shown: String,
    ) -> Result<Connection, ConnectError> {
        let peer = stream.peer_addr().ok();
        let conn = Connection::establish(stream, Side::Dialler, role, &self.config, peer)
            .await
            .map_err(|source| ConnectError::Establish {
                addr: shown,
                source,
            })?;
        Ok(conn.with_slot(Slot::take(&self.live)))
    }

    /// Server, forward: accept clients on `listener`. In single mode the stream yields one
    /// connection and then closes the listener; in multiple mode it keeps accepting until it
    /// is dropped.
    pub fn accept_clients(&self, listener: Listener) -> Incoming {
        let max = match self.mode {
            ConnectionMode::Single => Some(1),
            ConnectionMode::Multiple => None,
        };
        self.incoming(listener, Role::Server, max)
    }

    /// Server, forward, single: wait for the first good client, close the listener, and
    /// return the connection. `deadline = None` waits forever.
    pub async fn accept_client(
        &self,
        listener: Listener,
        deadline: Option<Duration>,
    ) -> Result<Connection, ConnectError> {
        let incoming = self.incoming(listener, Role::Server, Some(1));
        incoming.first(deadline).await
    }

    /// Client, reverse, single: wait on `listener` (bound before the server was started) for
    /// the server to dial back; close the listener after the first good server.
    /// `deadline = None` waits forever (ParaView's reverse default).
    pub async fn wait_for_server(
        &self,
        listener: Listener,
        deadline: Option<Duration>,
    ) -> Result<Connection, ConnectError> {
        self.ensure_free()?;
        let incoming = self.incoming(listener, Role::Client, Some(1));
        incoming.first(deadline).await
    }

    /// Client, reverse, data server + render server: wait for both to dial back.
    pub async fn wait_for_data_render(
        &self,
        data: Listener,
        render: Listener,
        deadline: Option<Duration>,
    ) -> Result<(Connection, Connection), ConnectError> {
        let d = self.incoming(data, Role::Client, Some(1));
        let r = self.incoming(render, Role::Client, Some(1));
        let (d, r) = tokio::join!(d.first(deadline), r.first(deadline));
        Ok((d?, r?))
    }

    /// Client, reverse, multiple mode: monitor `listener` for any number of servers dialling
    /// in. Each yields its own connection.
    pub fn monitor_connections(&self, listener: Listener) -> Result<Incoming, ConnectError> {
        if self.mode != ConnectionMode::Multiple {
            return Err(ConnectError::NeedsMultipleMode("monitor_connections"));
        }
        Ok(self.incoming(listener, Role::Client, None))
    }
}

/// Connections arriving on a listener, each already handshaken. Dropping it stops accepting
/// and closes the listening socket.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<Result<Connection, Rejected>>,
    local_addr: Option<SocketAddr>,
    task: JoinHandle<()>,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Incoming {
    fn start(
        listener: Listener,
        role: Role,
        config: ConnectionConfig,
        limits: HandshakeLimits,
        live: Arc<AtomicUsize>,
        max: Option<usize>,
    ) -> Incoming {
        let local_addr = listener.local_addr().ok();
        let (tx, rx) = mpsc::channel(64);
        let pending = Pending::new(limits);
        let task = tokio::spawn(accept_loop(listener, role, config, pending, live, max, tx));
        Incoming {
            rx,
            local_addr,
            task,
        }
    }

    /// The address being listened on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The next peer: `Ok` for a handshaken connection, `Err` for one that was refused (the
    /// listener keeps going). `None` once the listener is closed (single mode: after the
    /// first connection).
    pub async fn next(&mut self) -> Option<Result<Connection, Rejected>> {
        self.rx.recv().await
    }

    /// The first good connection, skipping refused peers, within `deadline`. The last
    /// [`REJECTED_KEPT`] refusals are kept for the error, and all are counted.
    async fn first(mut self, deadline: Option<Duration>) -> Result<Connection, ConnectError> {
        let mut rejected = VecDeque::with_capacity(REJECTED_KEPT);
        let mut refused = 0u64;
        let wait = async {
            loop {
                match self.next().await {
                    Some(Ok(conn)) => return Ok(conn),
                    Some(Err(r)) => {
                        if rejected.len() == REJECTED_KEPT {
                            rejected.pop_front();
                        }
                        rejected.push_back(r);
                        refused += 1;
                    }
                    None => {
                        return Err(ConnectError::Listen(std::io::Error::other(
                            "the listener closed before a peer connected",
                        )));
                    }
                }
            }
        };
        match deadline {
            None => wait.await,
            Some(d) => match tokio::time::timeout(d, wait).await {
                Ok(r) => r,
                Err(_) => Err(ConnectError::TimedOut {
                    waited: d,
                    rejected: rejected.into(),
                    refused,
                }),
            },
        }
    }
}

/// The places one listener has for peers: `max` in all (single mode: one), or any number.
#[derive(Debug)]
struct Places {
    max: Option<usize>,
    taken: AtomicUsize,
}

impl Places {
    fn new(max: Option<usize>) -> Arc<Places> {
        Arc::new(Places {
            max,
            taken: AtomicUsize::new(0),
        })
    }

    /// Take a place if one is free.
    fn take(&self) -> bool {
        match self.max {
            None => true,
            Some(max) => self
                .taken
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                    (t < max).then_some(t + 1)
                })
                .is_ok(),
        }
    }

    fn give_back(&self) {
        if self.max.is_some() {
            self.taken.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// One accepted socket's claim on a place, made by its handshake through [`Admission`]. A
/// claim that is dropped without being [`kept`](Claim::keep) (the handshake failed or was
/// cancelled after committing, e.g. its last write failed) gives its place back, so that
/// place is not lost to a peer that never got the acceptor's answer.
#[derive(Debug)]
struct Claim {
    places: Arc<Places>,
    holds: AtomicBool,
}

impl Claim {
    fn new(places: &Arc<Places>) -> Claim {
        Claim {
            places: places.clone(),
            holds: AtomicBool::new(false),
        }
    }

    /// The connection is delivered: its place stays taken for the listener's life.
    fn keep(self) {
        self.holds.store(false, Ordering::SeqCst);
    }
}

impl Admission for Claim {
    fn admit(&self) -> bool {
        if self.holds.load(Ordering::SeqCst) {
            return true;
        }
        let taken = self.places.take();
        if taken {
            self.holds.store(true, Ordering::SeqCst);
        }
        taken
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.holds.load(Ordering::SeqCst) {
            self.places.give_back();
        }
    }
}

/// The unauthenticated handshakes one listener is running: how many in all and per peer.
#[derive(Debug)]
struct Pending {
    limits: HandshakeLimits,
    running: Mutex<Running>,
}

#[derive(Debug, Default)]
struct Running {
    total: usize,
    /// Only peers with a handshake running: at most `limits.total` entries.
    per_peer: HashMap<IpAddr, usize>,
}

/// The peer an address counts as: an IPv4 address (also when mapped into IPv6), or the /64
/// an IPv6 address is in.
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

impl Pending {
    fn new(limits: HandshakeLimits) -> Arc<Pending> {
        Arc::new(Pending {
            limits,
            running: Mutex::new(Running::default()),
        })
    }

    /// A place for one more handshake from `ip`, held until the guard drops; or why not.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<PendingPlace, EstablishError> {
        let key = peer_key(ip);
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.total >= self.limits.total {
            return Err(EstablishError::TooManyPending {
                limit: self.limits.total,
                per_peer: false,
            });
        }
        let from_peer = running.per_peer.entry(key).or_insert(0);
        if *from_peer >= self.limits.per_peer {
            return Err(EstablishError::TooManyPending {
                limit: self.limits.per_peer,
                per_peer: true,
            });
        }
        *from_peer += 1;
        running.total += 1;
        Ok(PendingPlace {
            pending: self.clone(),
            key,
        })
    }
}

/// One running handshake's place in [`Pending`]; dropping it frees the place.
#[derive(Debug)]
struct PendingPlace {
    pending: Arc<Pending>,
    key: IpAddr,
}

impl Drop for PendingPlace {
    fn drop(&mut self) {
        let mut running = self
            .pending
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        running.total -= 1;
        if let Some(n) = running.per_peer.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                running.per_peer.remove(&self.key);
            }
        }
    }
}

/// Handshake one accepted socket, committing to it through a [`Claim`] on `places`.
async fn handshake_one(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    role: Role,
    config: &ConnectionConfig,
    places: &Arc<Places>,
) -> Result<Connection, Rejected> {
    let claim = Claim::new(places);
    let established = Connection::establish_admitted(
        stream,
        Side::Acceptor,
        role,
        config,
        Some(addr),
        Some(&claim),
    )
    .await;
    match established {
        // A handshake that does not ask for admission itself (NoHandshake asks at once; a
        // third-party one may not ask at all) is admitted now, or closed.
        Ok(conn) if claim.admit() => {
            claim.keep();
            Ok(conn)
        }
        Ok(_) => Err(Rejected {
            addr,
            error: HandshakeError::Busy.into(),
        }),
        Err(error) => Err(Rejected { addr, error }),
    }
}

/// Accept sockets, handshake each in its own task (within `pending`'s limits; a socket over
/// them is closed at once and reported), forward the results. With `max`, admit
/// at most that many peers (see [`Admission`]), and once they are all delivered stop,
/// closing the listener before the last one is handed over.
async fn accept_loop(
    listener: Listener,
    role: Role,
    config: ConnectionConfig,
    pending: Arc<Pending>,
    live: Arc<AtomicUsize>,
    max: Option<usize>,
    tx: mpsc::Sender<Result<Connection, Rejected>>,
) {
    let (done_tx, mut done_rx) = mpsc::channel::<Result<Connection, Rejected>>(64);
    let mut handshakes = tokio::task::JoinSet::new();
    let places = Places::new(max);
    let mut accepted = 0usize;
    let last = loop {
        tokio::select! {
            socket = listener.accept() => {
                let (stream, addr) = match socket {
                    Ok(s) => s,
                    // Per-connection accept errors (e.g. the peer reset before we got to it,
                    // or a file-descriptor limit) must not end the listener; pause briefly so
                    // an fd shortage does not spin.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let place = match pending.enter(addr.ip()) {
                    Ok(place) => place,
                    Err(error) => {
                        // Over a limit: close at once, and say so.
                        drop(stream);
                        if tx.send(Err(Rejected { addr, error })).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                let config = config.clone();
                let done_tx = done_tx.clone();
                let places = places.clone();
                handshakes.spawn(async move {
                    let result = handshake_one(stream, addr, role, &config, &places).await;
                    // The handshake is over (either way): free its place before waiting
                    // to hand the result on.
                    drop(place);
                    let _ = done_tx.send(result).await;
                });
            }
            Some(result) = done_rx.recv() => {
                let result = result.map(|c| c.with_slot(Slot::take(&live)));
                if result.is_ok() {
                    accepted += 1;
                    if max.is_some_and(|m| accepted >= m) {
                        break result;
                    }
                }
                if tx.send(result).await.is_err() {
                    return; // nobody is listening for connections any more
                }
            }
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
        }
    };
    // Single mode: every place is taken. Close the listening socket and drop the handshakes
    // still in flight (none of them was or can be admitted) *before* handing the last
    // connection over, so that once the application has it no further peer can even
    // connect: it is refused by the kernel.
    drop(listener);
    drop(handshakes);
    let _ = tx.send(last).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_mode_has_one_place_and_a_failed_handshake_gives_it_back() {
        let places = Places::new(Some(1));
        let (first, second) = (Claim::new(&places), Claim::new(&places));
        assert!(first.admit());
        assert!(first.admit(), "asking again keeps the place");
        assert!(!second.admit(), "the one place is taken");
        // The first handshake fails after committing (say its last write failed): nobody
        // was told "accepted", so its place goes back.
        drop(first);
        assert!(second.admit());
        second.keep();
        assert!(
            !Claim::new(&places).admit(),
            "a delivered connection keeps its place"
        );
    }

    #[test]
    fn pending_handshakes_are_limited_in_all_and_per_peer_and_places_come_back() {
        let pending = Pending::new(HandshakeLimits {
            total: 3,
            per_peer: 2,
        });
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let c: IpAddr = "::ffff:127.0.0.3".parse().unwrap();
        let a1 = pending.enter(a).unwrap();
        let _a2 = pending.enter(a).unwrap();
        assert!(matches!(
            pending.enter(a),
            Err(EstablishError::TooManyPending {
                limit: 2,
                per_peer: true
            })
        ));
        let _b1 = pending.enter(b).unwrap();
        let e = pending.enter(c).unwrap_err();
        assert!(
            matches!(
                e,
                EstablishError::TooManyPending {
                    limit: 3,
                    per_peer: false
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("in all"), "{e}");
        drop(a1);
        let _c1 = pending.enter(c).unwrap();
        let running = pending.running.lock().unwrap();
        assert_eq!(running.total, 3);
        assert_eq!(running.per_peer.len(), 3, "{:?}", running.per_peer);
    }

    #[test]
    fn an_ipv6_peer_is_its_slash_64_and_a_mapped_ipv4_one_its_address() {
        let key = |s: &str| peer_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
        assert_ne!(key("10.0.0.1"), key("10.0.0.2"));
    }

    #[test]
    fn multiple_mode_has_room_for_everyone() {
        let places = Places::new(None);
        let claims: Vec<Claim> = (0..100).map(|_| Claim::new(&places)).collect();
        assert!(claims.iter().all(|c| c.admit()));
    }

    #[tokio::test]
    async fn no_handshake_commits_at_once_or_closes() {
        use crate::handshake::{Handshake, HandshakeContext, NoHandshake};
        let places = Places::new(Some(1));
        let (first, second) = (Claim::new(&places), Claim::new(&places));
        let (mut a, mut b) = tokio::io::duplex(64);
        let ctx = |claim| HandshakeContext {
            side: Side::Acceptor,
            role: Role::Server,
            tls_binding: None,
            admission: Some(claim),
        };
        NoHandshake.run(&mut a, ctx(&first)).await.unwrap();
        let e = NoHandshake.run(&mut b, ctx(&second)).await.unwrap_err();
        assert!(matches!(e, HandshakeError::Busy), "{e:?}");
    }
}
