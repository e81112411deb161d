//! Handshakes: what two freshly connected sockets say to each other before any application
//! byte flows, behind one trait so the connection manager does not care which one runs.
//!
//! - [`native::NativeHandshake`]: pv-launch's own. Protocol version negotiation, a role check
//!   (client or server, so two clients cannot pair up), an optional connect id, and mutual
//!   authentication with a one-time token that never crosses the wire (HMAC-SHA256
//!   challenge-response over both sides' nonces, bound to the TLS session when there is one).
//! - [`paraview::ParaViewHandshake`]: the VTK socket-communicator handshake followed by the
//!   ParaView handshake string, so a real `pvserver` can be dialled or accepted.
//! - [`NoHandshake`]: nothing at all (raw TCP), for servers that speak none.
//!
//! Every handshake runs under a deadline ([`perform`]), so a silent or trickling peer cannot
//! hold a slot, and every failure is a distinct [`HandshakeError`].
//!
//! An acceptor that takes a limited number of connections (single-connection mode: one)
//! commits to a connection *inside* the handshake, through [`HandshakeContext::admit`], just
//! before the message that tells the dialler it is accepted. So a dialler is told "accepted"
//! only by an acceptor that will serve it, whichever of several concurrent handshakes gets
//! there first; the others are refused at that point ([`HandshakeError::Busy`]).

pub mod native;
pub mod paraview;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// Default time a whole handshake may take before the peer is dropped.
pub const DEFAULT_HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// A byte stream a handshake can run on: a TCP socket, a TLS stream, an in-memory pipe.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Which end of the socket we are: the side that called `connect` or the side that accepted.
///
/// This is independent of [`Role`]: in a reverse connection the server dials the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// We called `connect`.
    Dialler,
    /// We accepted the connection.
    Acceptor,
}

/// Which end of the application we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The client (the GUI, the launcher's caller).
    Client,
    /// The server (what the launcher starts).
    Server,
}

impl Role {
    /// The role the peer must have.
    pub fn peer(self) -> Role {
        match self {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Client => "client",
            Role::Server => "server",
        })
    }
}

/// An acceptor's commitment to a connection: asked for by the handshake at the one moment
/// that matters, just before it sends the message that tells the dialler it is accepted (the
/// native acceptor's PROOF, the ParaView acceptor's verdict 0).
///
/// The connection manager gives each accepted socket one: in single-connection mode the
/// first handshake to ask takes the listener's one place and every later one is refused.
pub trait Admission: Send + Sync + fmt::Debug {
    /// Commit to this connection: `true` if the acceptor takes it, `false` if it has no room
    /// left, in which case the handshake must refuse the dialler instead of accepting it.
    /// Asking again after `true` answers `true`.
    fn admit(&self) -> bool;
}

/// What a handshake needs to know about this end of the connection.
#[derive(Clone, Copy, Debug)]
pub struct HandshakeContext<'a> {
    /// Which end of the socket we are.
    pub side: Side,
    /// Which end of the application we are.
    pub role: Role,
    /// Keying material exported from the TLS session the handshake runs inside, if any.
    /// Both ends derive it from the same session, so a relayed TLS session yields different
    /// values on the two ends and authentication fails.
    pub tls_binding: Option<&'a [u8]>,
    /// Where an acceptor commits to the connection (see [`Admission`]); `None` takes every
    /// peer (a dialler, or an acceptor outside a connection manager).
    pub admission: Option<&'a dyn Admission>,
}

impl HandshakeContext<'_> {
    /// Commit to this connection (see [`Admission`]): an acceptor calls this just before the
    /// message that tells the dialler it is accepted, and refuses the dialler on `false`.
    pub fn admit(&self) -> bool {
        self.admission.is_none_or(|a| a.admit())
    }
}

/// What a successful handshake learned about the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Which handshake ran (`"native"`, `"paraview"`, `"none"`, `"builtin"`).
    pub handshake: &'static str,
    /// The negotiated protocol version (native), or the ParaView version `major*100+minor`.
    pub protocol: u32,
    /// The peer's role.
    pub role: Role,
    /// The connect id both sides agreed on (0 = none).
    pub connect_id: u64,
}

/// A boxed future, as trait objects need.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One handshake protocol. Implementations read and write only what their protocol says and
/// leave the stream positioned at the first application byte.
///
/// An acceptor calls [`HandshakeContext::admit`] just before the message that tells the
/// dialler it is accepted, and refuses the dialler (with [`HandshakeError::Busy`]) when it
/// answers `false`. One that does not is admitted by the connection manager only after it
/// finishes, when its dialler may already believe it was accepted.
pub trait Handshake: Send + Sync + fmt::Debug {
    /// A short name for logs and errors.
    fn name(&self) -> &'static str;

    /// Run the handshake on `stream`. Callers apply the deadline (see [`perform`]).
    fn run<'a>(
        &'a self,
        stream: &'a mut dyn Stream,
        ctx: HandshakeContext<'a>,
    ) -> BoxFuture<'a, Result<PeerInfo, HandshakeError>>;
}

/// Run `handshake` on `stream` with a deadline for the whole exchange.
pub async fn perform(
    handshake: &dyn Handshake,
    stream: &mut dyn Stream,
    ctx: HandshakeContext<'_>,
    deadline: Duration,
) -> Result<PeerInfo, HandshakeError> {
    match tokio::time::timeout(deadline, handshake.run(stream, ctx)).await {
        Ok(result) => result,
        Err(_) => Err(HandshakeError::DeadlinePassed {
            handshake: handshake.name(),
            deadline,
        }),
    }
}

/// No handshake: the connection is usable at once (for servers that speak none).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHandshake;

impl Handshake for NoHandshake {
    fn name(&self) -> &'static str {
        "none"
    }

    fn run<'a>(
        &'a self,
        _stream: &'a mut dyn Stream,
        ctx: HandshakeContext<'a>,
    ) -> BoxFuture<'a, Result<PeerInfo, HandshakeError>> {
        Box::pin(async move {
            // Nothing is said, so the dialler believes it is connected from the start: the
            // acceptor can only commit, or close.
            if !ctx.admit() {
                return Err(HandshakeError::Busy);
            }
            Ok(PeerInfo {
                handshake: "none",
                protocol: 0,
                role: ctx.role.peer(),
                connect_id: 0,
            })
        })
    }
}

/// Why a handshake failed. Each cause is its own variant so callers (and tests) can tell
/// them apart, and each message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's proof did not match our token, or the peer rejected ours.
    #[error("authentication failed: {0}")]
    WrongToken(&'static str),
    /// No protocol version both sides support.
    #[error(
        "protocol version mismatch: we speak {ours_min}..={ours_max}, the peer speaks {theirs_min}..={theirs_max}"
    )]
    VersionMismatch {
        /// Our lowest version.
        ours_min: u16,
        /// Our highest version.
        ours_max: u16,
        /// The peer's lowest version.
        theirs_min: u16,
        /// The peer's highest version.
        theirs_max: u16,
    },
    /// The peer claims the wrong role (e.g. two clients dialled each other).
    #[error("role mismatch: we are the {ours}, and the peer says it is the {theirs} too")]
    WrongRole {
        /// Our role.
        ours: Role,
        /// The role the peer announced.
        theirs: Role,
    },
    /// The connect ids differ.
    #[error("connect id mismatch: ours is {ours}, the peer's is {theirs}")]
    ConnectIdMismatch {
        /// Ours.
        ours: u64,
        /// The peer's.
        theirs: u64,
    },
    /// The peer sent bytes that are not this protocol.
    #[error("the peer does not speak the {expected} handshake: {detail}")]
    Garbage {
        /// Which handshake we expected.
        expected: &'static str,
        /// What we saw instead (with a guess at what the peer speaks, where we can tell).
        detail: String,
    },
    /// A message larger than the protocol allows.
    #[error("the peer sent a {size}-byte handshake message; the limit is {limit}")]
    Oversized {
        /// Announced size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The whole handshake took longer than allowed (a silent or trickling peer).
    #[error(
        "the {handshake} handshake did not finish within {deadline:?} (peer silent or too slow)"
    )]
    DeadlinePassed {
        /// Which handshake.
        handshake: &'static str,
        /// The deadline that passed.
        deadline: Duration,
    },
    /// The peer closed the connection in the middle of the handshake.
    #[error("the peer closed the connection during the {0} handshake")]
    Closed(&'static str),
    /// The peer refused us and said why.
    #[error("the peer rejected the handshake: {0}")]
    Rejected(String),
    /// The accepting end takes one connection (single-connection mode) and already has it,
    /// so it turned this peer away at the end of the handshake. Seen on both ends.
    #[error(
        "the accepting end already has its one connection (single-connection mode) and turned this peer away"
    )]
    Busy,
    /// The ParaView-compatible handshake failed.
    #[error(transparent)]
    ParaView(#[from] paraview::ParaViewError),
    /// A socket error.
    #[error("socket error during the handshake: {0}")]
    Io(#[source] std::io::Error),
}

impl From<std::io::Error> for HandshakeError {
    fn from(e: std::io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

/// Guess what a peer speaks from the first bytes it sent, for error messages.
pub fn guess_protocol(first: &[u8]) -> &'static str {
    match first {
        [0x16, 0x03, ..] => {
            "it looks like a TLS ClientHello/ServerHello: is TLS on at one end only?"
        }
        [0x3C, 0x3C, 0x3C, 0x3C, ..] => {
            "it looks like the VTK/ParaView handshake: choose handshake = \"paraview\""
        }
        [b'P', b'V', b'L', b'N', ..] => "it looks like the pv-launch native handshake",
        [b'S', b'S', b'H', b'-', ..] => "it looks like an SSH server",
        [b'G', b'E', b'T', b' ', ..]
        | [b'P', b'O', b'S', b'T', ..]
        | [b'H', b'T', b'T', b'P', ..] => "it looks like HTTP",
        _ => "unrecognised bytes",
    }
}
