//! pv-transport: the connection layer of pv-launch.
//!
//! It knows where a server is ([`resource`]), how to reach it (dial with retry, listen,
//! reverse dial), how both ends prove who they are (handshakes: the native token
//! challenge-response, and ParaView's own), how the launcher and a server it starts talk
//! before the connection exists (the launch channel), and how a process manages one or many
//! connections (the connection manager). It never starts processes and knows nothing of ssh
//! or profiles: that is the launcher's job.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod resource;

pub use resource::{Direction, Endpoint, Host, Resource, ResourceError};
