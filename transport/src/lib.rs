//! pv-transport: the connection layer of pv-launch.
//!
//! It knows where a server is ([`resource`]), how to reach it ([`net`]: dial with retry,
//! listen, reverse dial), how both ends prove who they are ([`handshake`]: the native token
//! challenge-response, and ParaView's own), how to encrypt and pin ([`tls`]), how the
//! launcher and a server it starts talk before the connection exists ([`launch`]), how a
//! process manages one or many connections ([`manager`]), and how a launcher hands a
//! connection to an unmodified client program on loopback, admitting only the user's own
//! sockets ([`handoff`], reading the kernel's socket tables with [`socket_table`]). It never
//! starts processes and knows nothing of ssh or profiles: that is the launcher's job.
//!
//! A server built on this crate, in outline:
//!
//! ```no_run
//! use pv_transport::{ConnectionConfig, ConnectionManager, ConnectionMode, Listener, loopback};
//! use pv_transport::handshake::native::NativeHandshake;
//! use pv_transport::launch::{ReadyLine, Secrets};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // The launcher writes the one-time token on our stdin (never argv).
//! let mut line = String::new();
//! std::io::stdin().read_line(&mut line)?;
//! let secrets = Secrets::parse(&line).ok_or("no secrets line")??;
//!
//! let config = ConnectionConfig::new(NativeHandshake::new(secrets.token));
//! let manager = ConnectionManager::install_global(ConnectionMode::Single, config)?;
//! let listener = Listener::bind(loopback(0), manager.config().heartbeat).await?;
//! let port = listener.local_addr()?.port();
//! println!("{}", ReadyLine { port, handshake: "native".into(), protocol: 2, tls: None });
//!
//! let mut conn = manager.accept_client(listener, None).await?;
//! tokio::io::copy(&mut tokio::io::empty(), &mut conn).await?; // serve something
//! # Ok(()) }
//! ```
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
