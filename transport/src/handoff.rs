//! Handing an authenticated connection to an unmodified client program over loopback.
//!
//! For a server on pv-transport, pv-launch runs the handshake and TLS itself; the client it
//! then starts (ParaView, pvpython, `nc`) knows none of that and only dials or listens on
//! plain TCP. So pv-launch relays: the client gets the plaintext stream on `127.0.0.1`, one
//! client connection per server connection, and bytes are copied both ways until each
//! direction ends.
//!
//! A loopback port is open to every user of a shared login node, and what flows through it
//! is already decrypted. So the relay only takes the user's own programs:
//!
//! - **forward** (the client dials us): [`LoopbackEndpoint`] accepts connections until one
//!   comes from a socket owned by our effective uid (looked up in the kernel's socket table,
//!   [`crate::socket_table::peer_uid`]); any other is reset at once, before a byte is
//!   sent, and reported through a callback ([`Refused`]). Once the right client is in, the
//!   listening socket is closed, so nobody else can connect.
//! - **reverse** (the client listens and waits for the server): the launcher first waits for
//!   the client's listener with [`crate::socket_table::wait_listening`] (never a probe
//!   connection, which would use the client's one reverse connection up), starts the server,
//!   and once the server's connection is handshaken, [`dial_client`] checks that every
//!   socket listening on the client's address is ours before connecting to it.
//!
//! Between two plain sockets (a TCP or Unix client and a server [`Connection`] without TLS,
//! or a bare [`TcpStream`]) the relay moves bytes inside the kernel with `splice(2)` through
//! a pipe per direction ([`RELAY_PIPE`] bytes each), without copying them. Otherwise (TLS,
//! other streams) it copies with [`tokio::io::copy_bidirectional_with_sizes`] and
//! [`RELAY_BUFFER`]-byte buffers. Either way an end-of-file on one side becomes a write
//! shutdown on the other (so a client's half-close reaches the server, as TLS
//! `close_notify` when the server is behind TLS), and the relay ends when both directions
//! have.

use std::any::Any;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::time::Instant;

use crate::Connection;
use crate::handshake::Stream;
use crate::socket_table::{self, effective_uid, listener_uids};

mod splice;

/// The size of each of the relay's two copy buffers. Loopback carries up to 64 KiB per
/// segment; 256 KiB lets one read drain several, so the relay makes few system calls per
/// byte. Measured with `cargo bench -p pv-transport --bench handoff` (2 shared cores): 8 KiB
/// (tokio's default) gave 40 % of the relayed throughput of 256 KiB, 64 KiB 76 %, and 1 MiB
/// no more than 256 KiB.
pub const RELAY_BUFFER: usize = 256 * 1024;

/// The capacity asked for each of a kernel relay's two pipes (`F_SETPIPE_SZ`): one `splice`
/// moves at most this much. 64 KiB, the kernel's default and one loopback segment: measured
/// with `cargo bench -p pv-transport --bench handoff` (2 shared cores), 1 MiB pipes gave no
/// more throughput and cost no less CPU. If the kernel refuses a size, the pipe keeps its
/// default, which works.
pub const RELAY_PIPE: usize = 64 * 1024;

/// A connection turned away because its socket is not ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The endpoint it dialled.
    pub endpoint: SocketAddr,
    /// Where it came from.
    pub peer: SocketAddr,
    /// The uid owning its socket (`None`: the socket was gone from the table, e.g. already
    /// closed, so its owner is unknown).
    pub uid: Option<u32>,
    /// Our effective uid, the only one admitted.
    pub own_uid: u32,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Refused {
            endpoint,
            peer,
            uid,
            own_uid,
        } = self;
        match uid {
            Some(uid) => write!(
                f,
                "refused a connection to {endpoint} from {peer}: its socket belongs to uid \
                 {uid}, not to ours ({own_uid})"
            ),
            None => write!(
                f,
                "refused a connection to {endpoint} from {peer}: its owner is not in the \
                 socket table (gone already?), so it cannot be shown to be uid {own_uid}"
            ),
        }
    }
}

/// How many bytes a finished relay moved each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transferred {
    /// From the client program to the server.
    pub client_to_server: u64,
    /// From the server to the client program.
    pub server_to_client: u64,
}

/// Why a hand-off failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// No connection from our own uid came within the time given.
    #[error(
        "no client of uid {own_uid} connected to {endpoint} within {waited:?} \
         ({refused} connection(s) from others refused)"
    )]
    NoClient {
        /// The endpoint waited on.
        endpoint: SocketAddr,
        /// How long we waited.
        waited: Duration,
        /// Connections turned away meanwhile.
        refused: u32,
        /// Our effective uid.
        own_uid: u32,
    },
    /// The socket table (or our own uid) could not be read, so no client can be admitted.
    #[error("cannot tell who owns the connection from {peer}: {source}")]
    Lookup {
        /// The connection whose owner was asked.
        peer: SocketAddr,
        /// The failure.
        source: io::Error,
    },
    /// The client's reverse port is held by someone else (or by nobody).
    #[error(
        "the client's port {addr} is not ours to dial: listening socket owners {owners:?}, \
         our uid {own_uid}"
    )]
    NotOurs {
        /// The client's address.
        addr: SocketAddr,
        /// The uids of the sockets listening there (empty: none).
        owners: Vec<u32>,
        /// Our effective uid.
        own_uid: u32,
    },
    /// A socket operation failed (bind, accept, connect, or the copy itself).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> HandoffError {
    let what = what.into();
    move |source| HandoffError::Io { what, source }
}

/// A listening socket on `127.0.0.1` that hands one server connection to one client program
/// of our own uid.
#[derive(Debug)]
pub struct LoopbackEndpoint {
    listener: TcpListener,
    addr: SocketAddr,
    own_uid: u32,
}

impl LoopbackEndpoint {
    /// Listen on `127.0.0.1:port` (0: a free port, see [`local_addr`](Self::local_addr)).
    pub async fn bind(port: u16) -> io::Result<LoopbackEndpoint> {
        let own_uid = effective_uid()?;
        let want = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        let listener = TcpListener::bind(want)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {want}: {e}")))?;
        let addr = listener.local_addr()?;
        Ok(LoopbackEndpoint {
            listener,
            addr,
            own_uid,
        })
    }

    /// The address clients dial: `PV_LAUNCH_URL=cs://127.0.0.1:<port>`.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The uid whose connections are admitted (our effective uid).
    pub fn own_uid(&self) -> u32 {
        self.own_uid
    }

    /// Wait up to `timeout` for a connection from a socket of our own uid and return it,
    /// closing the listening socket. Connections from other uids (or whose owner cannot be
    /// found) are reset at once and passed to `on_refused`; waiting goes on.
    ///
    /// The wait is bounded by `timeout` alone, not by a count of refusals: a count would let
    /// another user end the hand-off by dialling often enough.
    pub async fn accept_own(
        self,
        timeout: Duration,
        mut on_refused: impl FnMut(&Refused),
    ) -> Result<TcpStream, HandoffError> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut refused = 0u32;
        loop {
            let accepted = tokio::time::timeout_at(deadline, self.listener.accept()).await;
            let (stream, peer) = match accepted {
                Err(_) => {
                    return Err(HandoffError::NoClient {
                        endpoint: self.addr,
                        waited: start.elapsed(),
                        refused,
                        own_uid: self.own_uid,
                    });
                }
                // The dialler gave up between its SYN and our accept: not an error of ours.
                Ok(Err(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Ok(Err(e)) => return Err(io_err(format!("accepting on {}", self.addr))(e)),
                Ok(Ok(accepted)) => accepted,
            };
            let local = stream
                .local_addr()
                .map_err(io_err("the accepted socket's address"))?;
            let uid = socket_table::peer_uid(local, peer)
                .map_err(|source| HandoffError::Lookup { peer, source })?;
            if uid == Some(self.own_uid) {
                // One client per server connection: nobody else may dial in now.
                drop(self.listener);
                stream
                    .set_nodelay(true)
                    .map_err(io_err("setting TCP_NODELAY"))?;
                return Ok(stream);
            }
            refused += 1;
            reset(stream);
            on_refused(&Refused {
                endpoint: self.addr,
                peer,
                uid,
                own_uid: self.own_uid,
            });
        }
    }

    /// [`accept_own`](Self::accept_own), then [`relay`] between that client and `server` (a
    /// handshaken [`Connection`], or any stream) until both directions
    /// have ended.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin + 'static>(
        self,
        mut server: S,
        timeout: Duration,
        on_refused: impl FnMut(&Refused),
    ) -> Result<Transferred, HandoffError> {
        let endpoint = self.addr;
        let mut client = self.accept_own(timeout, on_refused).await?;
        relay(&mut client, &mut server)
            .await
            .map_err(io_err(format!("relaying through {endpoint}")))
    }
}

/// Close `stream` with a reset rather than a FIN: the refused program sees
/// "connection reset", not an empty but orderly stream.
fn reset(stream: TcpStream) {
    // Best effort: if the option cannot be set the socket still closes, with a FIN.
    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Move bytes both ways between `client` and `server` until both directions have ended: an
/// end-of-file read on one side shuts the other side's writing down (half-close), and the
/// other direction goes on until it ends too. Fails at the first error of either side.
///
/// When both are plain sockets — each a [`TcpStream`], a [`UnixStream`] or a
/// [`Connection`] without TLS on a TCP socket ([`Connection::tcp_socket`]) — the bytes move
/// inside the kernel (`splice(2)`, no copy); otherwise they are copied as
/// [`relay_with_buffers`] does with [`RELAY_BUFFER`]-byte buffers.
pub async fn relay<C, S>(client: &mut C, server: &mut S) -> io::Result<Transferred>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    if let (Some(c), Some(s)) = (plain_socket(client), plain_socket(server)) {
        // No pipes (no file descriptors left): the copy still works.
        if let Ok(pipes) = splice::Pipes::new() {
            return splice::relay(c, s, pipes).await;
        }
    }
    relay_with_buffers(client, server, RELAY_BUFFER).await
}

/// The socket under `stream` if its bytes are the socket's own (nothing layered above).
fn plain_socket<T: 'static>(stream: &T) -> Option<splice::Socket<'_>> {
    let any = stream as &dyn Any;
    if let Some(tcp) = any.downcast_ref::<TcpStream>() {
        Some(splice::Socket::Tcp(tcp))
    } else if let Some(unix) = any.downcast_ref::<UnixStream>() {
        Some(splice::Socket::Unix(unix))
    } else {
        any.downcast_ref::<Connection>()
            .and_then(Connection::tcp_socket)
            .map(splice::Socket::Tcp)
    }
}

/// Copy bytes both ways as [`relay`] does, through `buffer`-byte buffers (one per direction)
/// in user space, whatever the streams: for measuring, or for a caller short of memory.
pub async fn relay_with_buffers<C, S>(
    client: &mut C,
    server: &mut S,
    buffer: usize,
) -> io::Result<Transferred>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (client_to_server, server_to_client) =
        tokio::io::copy_bidirectional_with_sizes(client, server, buffer, buffer).await?;
    Ok(Transferred {
        client_to_server,
        server_to_client,
    })
}

/// Serve several server connections at once, each on its own endpoint (a data server and a
/// render server: two endpoints, the client dials both). Each pair runs in its own task with
/// its own `timeout` for its client, and ends on its own; the results come back in the
/// order given.
pub async fn serve_all<S: Stream + 'static>(
    pairs: Vec<(LoopbackEndpoint, S)>,
    timeout: Duration,
    on_refused: Arc<dyn Fn(&Refused) + Send + Sync>,
) -> Vec<Result<Transferred, HandoffError>> {
    let mut tasks = tokio::task::JoinSet::new();
    let count = pairs.len();
    for (index, (endpoint, server)) in pairs.into_iter().enumerate() {
        let on_refused = on_refused.clone();
        tasks.spawn(async move {
            let result = endpoint
                .serve(server, timeout, |r: &Refused| on_refused(r))
                .await;
            (index, result)
        });
    }
    let mut results: Vec<Option<Result<Transferred, HandoffError>>> =
        (0..count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, result)) => results[index] = Some(result),
            // A task that panicked: re-raise its panic here, where the caller sees it.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every task reported"))
        .collect()
}

/// Connect to a client program listening on `addr` (reverse connections), after checking
/// in the socket table that every socket listening there belongs to our effective uid:
/// otherwise another user holds the port and would receive the decrypted stream. Nothing
/// listening is [`HandoffError::NotOurs`] with no owners; wait for the listener first with
/// [`wait_listening`](crate::socket_table::wait_listening).
///
/// The check is on the listener, not on the accepted socket: until the client calls
/// `accept`, older kernels show the accepted socket as owned by root. No other user can
/// start listening on the port between the check and the connection while ours does (the
/// bind would fail), so the listener we checked is the one we reach.
pub async fn dial_client(addr: SocketAddr) -> Result<TcpStream, HandoffError> {
    let own_uid = effective_uid().map_err(|source| HandoffError::Lookup { peer: addr, source })?;
    let owners =
        listener_uids(addr).map_err(|source| HandoffError::Lookup { peer: addr, source })?;
    if owners.is_empty() || owners.iter().any(|&uid| uid != own_uid) {
        return Err(HandoffError::NotOurs {
            addr,
            owners,
            own_uid,
        });
    }
    let stream = TcpStream::connect(addr)
        .await
        .map_err(io_err(format!("connecting to the client at {addr}")))?;
    stream
        .set_nodelay(true)
        .map_err(io_err("setting TCP_NODELAY"))?;
    Ok(stream)
}
