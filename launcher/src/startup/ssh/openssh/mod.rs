//! The OpenSSH backend: pv-launch's own control master for one host and one launch
//! ([`Master`]), and the server run through it as a mux client ([`RemoteServer`]).

mod master;
mod remote;

pub use master::{AskpassProgram, Master, find_askpass};
pub use remote::RemoteServer;
