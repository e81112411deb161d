//! A handshaken connection: the only kind of stream pv-launch hands to applications.
//!
//! A raw socket becomes a [`Connection`] only through [`Connection::establish`], which runs
//! TLS (when configured) and then the handshake under its deadline. So holding a
//! `Connection` means the peer was authenticated; a raw `TcpStream` is a different type.
//! After that it is a plain byte stream (`AsyncRead + AsyncWrite`) with nothing added to
//! the data path.

use std::any::Any;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::handshake::{
    Admission, DEFAULT_HANDSHAKE_DEADLINE, Handshake, HandshakeContext, HandshakeError, PeerInfo,
    Role, Side, Stream, perform,
};
use crate::net::Heartbeat;
use crate::tls::{TlsConfig, TlsInfo};

/// How connections are made secure and authenticated; shared by every connection a
/// manager makes.
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    /// The handshake both ends run.
    pub handshake: Arc<dyn Handshake>,
    /// Time the TLS and application handshakes together may take.
    pub handshake_deadline: Duration,
    /// TCP keepalive settings (`None` turns the heartbeat off).
    pub heartbeat: Option<Heartbeat>,
    /// TLS, if the connection runs inside it.
    pub tls: Option<TlsConfig>,
}

impl ConnectionConfig {
    /// Plain TCP with `handshake`, the default deadline and heartbeat.
    pub fn new(handshake: impl Handshake + 'static) -> ConnectionConfig {
        ConnectionConfig {
            handshake: Arc::new(handshake),
            handshake_deadline: DEFAULT_HANDSHAKE_DEADLINE,
            heartbeat: Some(Heartbeat::default()),
            tls: None,
        }
    }

    /// The same, inside TLS.
    pub fn with_tls(mut self, tls: TlsConfig) -> ConnectionConfig {
        self.tls = Some(tls);
        self
    }

    /// The same with another handshake deadline.
    pub fn with_deadline(mut self, deadline: Duration) -> ConnectionConfig {
        self.handshake_deadline = deadline;
        self
    }
}

/// Counts live connections of one manager; a slot is released when its connection drops.
#[derive(Debug)]
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Slot {
    pub(crate) fn take(counter: &Arc<AtomicUsize>) -> Slot {
        counter.fetch_add(1, Ordering::SeqCst);
        Slot(counter.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a connection's bytes travel on after the handshake.
enum Inner {
    /// A plain TCP socket, no layer above it: a relay may move its bytes in the kernel
    /// ([`Connection::tcp_socket`]).
    Tcp(TcpStream),
    /// Anything else: TLS, an in-process pipe, a stream of the caller's.
    Other(Box<dyn Stream>),
}

impl Inner {
    fn stream(&mut self) -> &mut (dyn Stream + 'static) {
        match self {
            Inner::Tcp(s) => s,
            Inner::Other(s) => &mut **s,
        }
    }
}

/// `stream` itself if it is a [`TcpStream`], else `stream` back: the handshake's type
/// parameter, told apart at run time.
fn as_tcp<S: Stream + 'static>(stream: S) -> Result<TcpStream, S> {
    let mut slot = Some(stream);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<TcpStream>>() {
        Some(tcp) => Ok(tcp.take().expect("filled above")),
        None => Err(slot.expect("untouched")),
    }
}

/// An authenticated, handshaken byte stream.
pub struct Connection {
    stream: Inner,
    peer: PeerInfo,
    peer_addr: Option<SocketAddr>,
    tls: Option<TlsInfo>,
    slot: Option<Slot>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("peer_addr", &self.peer_addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Why a connection could not be established on an open socket.
#[derive(Debug, thiserror::Error)]
pub enum EstablishError {
    /// The TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The application handshake failed.
    #[error("{0}")]
    Handshake(#[from] HandshakeError),
    /// An acceptor closed the socket at once, without a handshake: as many unauthenticated
    /// handshakes as it allows were already running (see
    /// [`HandshakeLimits`](crate::manager::HandshakeLimits)).
    #[error(
        "closed without a handshake: {limit} unauthenticated handshake(s) already running {}, the limit",
        if *.per_peer { "from this peer" } else { "in all" }
    )]
    TooManyPending {
        /// The limit that was reached.
        limit: usize,
        /// Whether it was the per-peer limit (else the limit in all).
        per_peer: bool,
    },
}

impl Connection {
    /// Turn an open socket into a connection: TLS first when `config` has it, then the
    /// handshake, all within `config.handshake_deadline`. An acceptor made this way takes
    /// every peer that passes the handshake (the connection manager commits through an
    /// [`Admission`] instead).
    pub async fn establish<S: Stream + 'static>(
        stream: S,
        side: Side,
        role: Role,
        config: &ConnectionConfig,
        peer_addr: Option<SocketAddr>,
    ) -> Result<Connection, EstablishError> {
        Connection::establish_admitted(stream, side, role, config, peer_addr, None).await
    }

    /// [`establish`](Self::establish), with the handshake committing to the connection
    /// through `admission` (see [`Admission`]).
    pub(crate) async fn establish_admitted<S: Stream + 'static>(
        stream: S,
        side: Side,
        role: Role,
        config: &ConnectionConfig,
        peer_addr: Option<SocketAddr>,
        admission: Option<&dyn Admission>,
    ) -> Result<Connection, EstablishError> {
        let deadline = config.handshake_deadline;
        let started = tokio::time::Instant::now();
        let (mut stream, tls, binding) = match &config.tls {
            None => match as_tcp(stream) {
                Ok(tcp) => (Inner::Tcp(tcp), None, None),
                Err(other) => (Inner::Other(Box::new(other)), None, None),
            },
            Some(tls) => {
                let secured = tokio::time::timeout(deadline, tls.secure(stream, role))
                    .await
                    .map_err(|_| crate::tls::TlsError::DeadlinePassed(deadline))??;
                let info = Some(secured.info);
                (Inner::Other(secured.stream), info, Some(secured.binding))
            }
        };
        let ctx = HandshakeContext {
            side,
            role,
            tls_binding: binding.as_ref().map(|b: &[u8; 32]| b.as_slice()),
            admission,
        };
        let left = deadline.saturating_sub(started.elapsed());
        let peer = perform(config.handshake.as_ref(), stream.stream(), ctx, left).await?;
        Ok(Connection {
            stream,
            peer,
            peer_addr,
            tls,
            slot: None,
        })
    }

    /// Two connected in-process ends (`builtin:`): `(server end, client end)`. No socket and
    /// no handshake: both ends live in this process.
    pub fn builtin_pair() -> (Connection, Connection) {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let info = |role| PeerInfo {
            handshake: "builtin",
            protocol: u32::from(crate::handshake::native::PROTOCOL_VERSION),
            role,
            connect_id: 0,
        };
        let end = |stream, role| Connection {
            stream: Inner::Other(Box::new(stream)),
            peer: info(role),
            peer_addr: None,
            tls: None,
            slot: None,
        };
        // Each end's `peer` describes the other end.
        (end(a, Role::Client), end(b, Role::Server))
    }

    pub(crate) fn with_slot(mut self, slot: Slot) -> Connection {
        self.slot = Some(slot);
        self
    }

    /// What the handshake learned about the peer.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// The peer's socket address (`None` for in-process connections).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// TLS details (protocol version, cipher suite, peer certificate fingerprint), if any.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// The TCP socket this connection's bytes travel on when nothing is layered above it (no
    /// TLS; established on a [`TcpStream`]): what follows the handshake is the socket's
    /// plain byte stream, so a relay may move it in the kernel
    /// ([`handoff::relay`](crate::handoff::relay) does). `None` for TLS and in-process
    /// connections.
    pub fn tcp_socket(&self) -> Option<&TcpStream> {
        match &self.stream {
            Inner::Tcp(tcp) => Some(tcp),
            Inner::Other(_) => None,
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.stream.stream()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.stream.stream()).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream.stream()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream.stream()).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.stream.stream()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Inner::Tcp(s) => s.is_write_vectored(),
            Inner::Other(s) => s.is_write_vectored(),
        }
    }
}
