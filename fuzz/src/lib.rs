//! Helpers shared by the fuzz targets: driving a real handshake against fuzz bytes.
//!
//! A handshake runs, through the public [`perform`], on one end of an in-memory
//! [`tokio::io::duplex`] pipe. The other end plays the peer: it writes the fuzz bytes, closes
//! its sending half and reads whatever the handshake says until the handshake lets go of
//! its end. The runtime is current-thread with a paused clock, so time only moves when
//! nothing else can: a handshake that waits although the peer has said everything and
//! closed trips the deadline at once (no real waiting), and the target reports that as a
//! hang.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::Duration;

use pv_transport::handshake::{Admission, Handshake, HandshakeContext, perform};
use pv_transport::{HandshakeError, PeerInfo, Role, Side};
use tokio::io::{AsyncWriteExt, duplex};

/// The deadline each fuzzed handshake runs under (on the paused clock: free to wait out).
pub const DEADLINE: Duration = Duration::from_secs(10);

/// An acceptor's place for the connection: there (`true`) or already taken (`false`).
#[derive(Debug)]
pub struct FixedAdmission(pub bool);

impl Admission for FixedAdmission {
    fn admit(&self) -> bool {
        self.0
    }
}

/// The handshake settings every fuzz input chooses with its first two bytes.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    /// The first byte: bit flags the target reads (bit 0 side, bit 1 role, bit 3 refusal,
    /// the rest its own).
    pub flags: u8,
    /// Capacity of the in-memory pipe in each direction: 1 to 32 KiB, so reads and
    /// writes come in pieces of every size.
    pub pipe: usize,
}

impl Setup {
    /// Split an input into the setup and the peer's bytes (`None` when too short).
    pub fn split(input: &[u8]) -> Option<(Setup, &[u8])> {
        let [flags, pipe, peer @ ..] = input else {
            return None;
        };
        let setup = Setup {
            flags: *flags,
            pipe: 1 << (pipe % 16),
        };
        Some((setup, peer))
    }

    /// Bit `n` of the flags.
    pub fn bit(&self, n: u8) -> bool {
        self.flags & (1 << n) != 0
    }

    /// Which end of the socket the handshake under test is (bit 0).
    pub fn side(&self) -> Side {
        if self.bit(0) {
            Side::Acceptor
        } else {
            Side::Dialler
        }
    }

    /// Which end of the application it is (bit 1).
    pub fn role(&self) -> Role {
        if self.bit(1) {
            Role::Server
        } else {
            Role::Client
        }
    }

    /// Whether an acceptor has room for the connection (bit 3 set: it has none).
    pub fn admits(&self) -> bool {
        !self.bit(3)
    }
}

thread_local! {
    static RUNTIME: RefCell<tokio::runtime::Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime"),
    );
}

/// Whether `PV_FUZZ_VERBOSE` is set: each target then prints what an input led to, for
/// looking at a crash or a seed by hand (`cargo fuzz run TARGET FILE`).
pub fn verbose() -> bool {
    static VERBOSE: OnceLock<bool> = OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("PV_FUZZ_VERBOSE").is_some())
}

/// Run `handshake` as `setup` says against a peer that sends `peer` and then closes.
///
/// Panics if the handshake has not finished by the deadline: with every byte delivered
/// and the peer's half closed, a correct handshake always ends, in success or an error.
pub fn drive(
    handshake: &dyn Handshake,
    setup: Setup,
    peer: &[u8],
) -> Result<PeerInfo, HandshakeError> {
    let admission = FixedAdmission(setup.admits());
    let ctx = HandshakeContext {
        side: setup.side(),
        role: setup.role(),
        tls_binding: None,
        admission: Some(&admission),
    };
    let result = RUNTIME.with(|rt| {
        rt.borrow().block_on(async {
            let (ours, theirs) = duplex(setup.pipe);
            let (mut from_us, mut to_us) = tokio::io::split(theirs);
            let under_test = async move {
                let mut ours = ours;
                // Returning drops our end, which ends the peer's reading and writing.
                perform(handshake, &mut ours, ctx, DEADLINE).await
            };
            let speak = async move {
                // Fails once the handshake has let go of its end: that is fine.
                let _ = to_us.write_all(peer).await;
                let _ = to_us.shutdown().await;
            };
            let listen = async move {
                let _ = tokio::io::copy(&mut from_us, &mut tokio::io::sink()).await;
            };
            let (result, (), ()) = tokio::join!(under_test, speak, listen);
            result
        })
    });
    if verbose() {
        eprintln!("{setup:?}: {result:?}");
    }
    if let Err(HandshakeError::DeadlinePassed { .. }) = result {
        panic!(
            "the {} handshake hung: the peer had sent all {} bytes and closed",
            handshake.name(),
            peer.len()
        );
    }
    if let Err(e) = &result {
        // Every error message must format without panicking.
        let _ = e.to_string();
    }
    result
}
