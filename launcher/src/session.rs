//! The seam between startup and transport: after the server is started, the plan's
//! expected connection (with the port from the ready line) is what pv-transport dials or
//! listens on.
//!
//! Not wired yet: the CLI stops after startup and the ready line, prints the URL the
//! client would use, and keeps the server alive. The next step hands
//! [`connection_target`]'s resource, the plan's [`ResolvedHandshake`] (with the launch's
//! token for the native handshake) and, with TLS, the ready line's certificate
//! fingerprint to pv-transport's connect (`Connection::establish` after a dial with retry,
//! or a reverse listener), and returns the handshaken stream in a session.

use pv_transport::Resource;
use pv_transport::launch::ReadyLine;

use crate::plan::{ExpectedConnection, ResolvedHandshake};

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
