#![doc = include_str!("../README.md")]
//!
//! The modules, in the order a connection uses them: [`resource`] (where the server is),
//! [`launch`] (the launch channel), [`net`] (dial, listen), [`tls`], [`handshake`],
//! [`manager`] (one or many connections), [`handoff`] and [`socket_table`] (serving a
//! connection to the user's own local programs), [`token`] and [`fingerprint`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod connection;
pub mod fingerprint;
pub mod handoff;
pub mod handshake;
pub mod launch;
pub mod manager;
pub mod net;
pub mod resource;
pub mod socket_table;
pub mod tls;
pub mod token;

pub use connection::{Connection, ConnectionConfig, EstablishError};
pub use fingerprint::Fingerprint;
pub use handshake::{Handshake, HandshakeError, PeerInfo, Role, Side};
pub use manager::{
    ConnectError, ConnectionManager, ConnectionMode, HandshakeLimits, Incoming, Rejected,
};
pub use net::{ConnectTimeout, Heartbeat, Listener, RetryPolicy, dial, dial_addr, loopback};
pub use resource::{Direction, Endpoint, Host, Resource, ResourceError};
pub use tls::{ServerIdentity, TlsConfig, TlsError, TlsInfo};
pub use token::Token;
