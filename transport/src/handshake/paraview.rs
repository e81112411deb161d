//! The ParaView-compatible handshake: what a real `pvserver` (or the ParaView GUI, or
//! `pvpython`) expects to hear on a fresh TCP connection, so pv-launch can dial a listening
//! pvserver and accept a pvserver's reverse connection.
//!
//! # The protocol
//!
//! Two layers run back to back over the same framing. Every frame is
//!
//! ```text
//! int32 tag | int32 payload length in bytes | payload
//! ```
//!
//! all in the **sender's** native byte order. The receiver learns the sender's byte order in
//! the very first exchange and decodes everything after it accordingly.
//!
//! Layer 1 is VTK's socket-communicator handshake. The side that called `connect` (the
//! *dialler*, VTK's "client" half) speaks first; the side that accepted (the *acceptor*,
//! VTK's "server" half) answers each step with its own value:
//!
//! | step | tag | payload | failure |
//! | --- | --- | --- | --- |
//! | endian | `0x3C3C3C3C` | 1 byte: 1 = big-endian, 0 = little-endian | — |
//! | version | `0x3E3E3E3E` | int32 `100` (the "MD5" hash id) | [`ParaViewError::VtkVersionMismatch`] |
//! | hash | `0x3F3F3F3F` | 33 bytes: 32 lowercase hex digits + NUL | [`ParaViewError::HashMismatch`] |
//! | id type size | `0x3D3D3D3D` | int32: 1 if VTK ids are 64-bit, else 0 | informational |
//!
//! Layer 2 is ParaView's handshake string. The dialler sends int32 `strlen + 1` and then the
//! NUL-terminated string, both with tag `99991`; the acceptor compares it byte for byte with
//! its own and answers one int32 [`ErrorCode`] with tag `99990` (0 = accepted). The string is
//! `paraview-<major>.<minor>[.connect_id.<N>].renderingbackend.<backend>`, e.g.
//! `paraview-5.11.renderingbackend.opengl2` or
//! `paraview-5.11.connect_id.4242.renderingbackend.opengl2`; the connect-id part is present
//! only when the id is not 0.
//!
//! Verdict 0 is what tells the dialler it is accepted, so our acceptor commits to the
//! connection just before sending it ([`HandshakeContext::admit`]). One that takes one
//! connection and already has it (single-connection mode) sends no verdict and closes
//! ([`HandshakeError::Busy`] on our side): ParaView has no code for "busy", and a close is
//! what a pvserver's dialler would see from a pvserver that has its client.
//!
//! Which half runs is decided by the socket side alone ([`Side`]), not by the application
//! role: in a reverse connection pvserver dials, so it runs the dialler half.
//!
//! # Which hash a pvserver needs
//!
//! The layer-1 hash is the MD5 of the `vtkSocketCommunicator.cxx` source file the peer's VTK
//! was built from, so two builds of the *same* ParaView version may differ. The default,
//! [`VtkHash::DEBIAN_12_PARAVIEW_5_11`] = `5e7a24e1e7033d8c49830a3775623523`, is what
//! Debian 12's `paraview` 5.11.0+dfsg-1+b1 pvserver sends (observed on the wire, and found
//! in its `libvtkParallelCore-pv5.11.so.5.11` as below). It is not upstream ParaView 5.11.0's
//! value ([`VtkHash::UPSTREAM_PARAVIEW_5_11`]), so Debian's pvserver and Kitware's 5.11
//! binaries do not handshake with each other. The other upstream values are
//! [`VtkHash::UPSTREAM_PARAVIEW_5_13`] and [`VtkHash::UPSTREAM_PARAVIEW_6`].
//!
//! To find the hash of another build, the surest way is to ask it: dial its pvserver with
//! any hash, and the [`ParaViewError::HashMismatch`] you get names the server's (a VTK
//! acceptor sends its hash before it compares). Offline, look in its `vtkParallelCore`
//! library. `strings lib | grep -E '^[0-9a-f]{32}$'` does **not** work on an optimised build:
//! the compiler stores the 32 digits as four 8-byte immediates inside the code, and the one
//! 32-hex-digit string `strings` finds in Debian's library is the `.gnu_debuglink` file name
//! (the build id), not the hash. Reassemble the immediates instead (x86-64):
//!
//! ```text
//! objdump -d /usr/lib/x86_64-linux-gnu/libvtkParallelCore-pv5.11.so.5.11 \
//!   | perl -ne 'print pack("Q<", hex $1) if /movabs\s+\$0x([0-9a-f]{16})/' \
//!   | grep -aoE '[0-9a-f]{32}' | sort -u
//! ```
//!
//! (in a ParaView binary tarball the library is `lib/libvtkParallelCore-pv<X.Y>.so*`; a
//! build that keeps the literal in `.rodata` shows it to plain `strings` too).
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use pv_transport::handshake::paraview::{ParaViewHandshake, VtkHash};
//! use pv_transport::handshake::{perform, HandshakeContext, Role, Side, DEFAULT_HANDSHAKE_DEADLINE};
//!
//! let handshake = ParaViewHandshake::builder()
//!     .version(5, 11)
//!     .connect_id(4242)
//!     .vtk_hash(VtkHash::DEBIAN_12_PARAVIEW_5_11)
//!     .build()?;
//! let mut socket = tokio::net::TcpStream::connect("127.0.0.1:11111").await?;
//! let ctx = HandshakeContext {
//!     side: Side::Dialler,
//!     role: Role::Client,
//!     tls_binding: None,
//!     admission: None,
//! };
//! let peer = perform(&handshake, &mut socket, ctx, DEFAULT_HANDSHAKE_DEADLINE).await?;
//! assert_eq!(peer.protocol, 511);
//! # Ok(()) }
//! ```

use std::fmt;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    BoxFuture, Handshake, HandshakeContext, HandshakeError, PeerInfo, Side, Stream, guess_protocol,
};

/// The name this handshake reports in [`PeerInfo::handshake`] and in errors.
const NAME: &str = "paraview";

// Layer-1 tags. Each is the same byte repeated, so it reads the same in either byte order:
// that is what lets the first frame be parsed before the peer's byte order is known.
const ENDIAN_TAG: i32 = 0x3C3C_3C3C;
const VERSION_TAG: i32 = 0x3E3E_3E3E;
const HASH_TAG: i32 = 0x3F3F_3F3F;
const ID_TYPE_SIZE_TAG: i32 = 0x3D3D_3D3D;

// Layer-2 tags: the dialler's handshake string (size, then bytes), the acceptor's verdict.
const STRING_TAG: i32 = 99991;
const VERDICT_TAG: i32 = 99990;

/// The VTK socket-communicator version both ends must announce: the id of the hash
/// algorithm (100 = MD5), not a release number.
pub const VTK_COMMUNICATOR_VERSION: i32 = 100;

/// The default limit on the size of the peer's handshake string (ParaView's are < 100 bytes).
pub const DEFAULT_MAX_STRING_LEN: usize = 4096;

/// The default rendering backend ParaView has put in its handshake string since 2017.
pub const DEFAULT_RENDERING_BACKEND: &str = "opengl2";

/// Length of a VTK hash on the wire: 32 hex digits and a NUL.
const HASH_WIRE_LEN: usize = 33;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// A VTK socket-communicator hash: 32 lowercase hex digits, the MD5 of the
/// `vtkSocketCommunicator.cxx` a VTK build was compiled from. See the [module
/// docs](self#which-hash-a-pvserver-needs) for which build uses which.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VtkHash([u8; 32]);

impl VtkHash {
    /// Debian 12 (bookworm) `paraview` 5.11.0+dfsg-1+b1: what its pvserver sends. The
    /// default. (`917f5e8a…`, the build id of its `libvtkParallelCore`, is *not* it.)
    pub const DEBIAN_12_PARAVIEW_5_11: VtkHash =
        VtkHash::from_static("5e7a24e1e7033d8c49830a3775623523");
    /// Upstream ParaView 5.11.0 sources (Kitware's VTK at that tag).
    pub const UPSTREAM_PARAVIEW_5_11: VtkHash =
        VtkHash::from_static("86f3e537c2131aaeb456f77748ab346b");
    /// Upstream ParaView 5.13.2 sources.
    pub const UPSTREAM_PARAVIEW_5_13: VtkHash =
        VtkHash::from_static("fed88705215b54d5101b1b6e9f76673e");
    /// Upstream ParaView 6.0.1 and 6.1.0 sources (and VTK master as of 2026).
    pub const UPSTREAM_PARAVIEW_6: VtkHash =
        VtkHash::from_static("8b9893cd135e41165164da7f5d2f922e");

    /// Every hash this module knows, with the builds that use it (for error messages).
    pub const KNOWN: &'static [(VtkHash, &'static str)] = &[
        (Self::DEBIAN_12_PARAVIEW_5_11, "Debian 12's paraview 5.11"),
        (Self::UPSTREAM_PARAVIEW_5_11, "upstream ParaView 5.11"),
        (Self::UPSTREAM_PARAVIEW_5_13, "upstream ParaView 5.13"),
        (Self::UPSTREAM_PARAVIEW_6, "upstream ParaView 6.0/6.1"),
    ];

    /// Parses 32 lowercase hex digits.
    pub fn parse(text: &str) -> Result<VtkHash, ConfigError> {
        let bytes = text.as_bytes();
        if bytes.len() != 32 || !bytes.iter().all(|b| is_lower_hex(*b)) {
            return Err(ConfigError::BadHash(text.to_owned()));
        }
        let mut hash = [0; 32];
        hash.copy_from_slice(bytes);
        Ok(VtkHash(hash))
    }

    /// A hash from a literal, checked at compile time when used in a `const`.
    const fn from_static(text: &str) -> VtkHash {
        let bytes = text.as_bytes();
        assert!(bytes.len() == 32, "a VTK hash has 32 hex digits");
        let mut hash = [0; 32];
        let mut i = 0;
        while i < 32 {
            assert!(is_lower_hex(bytes[i]), "a VTK hash is lowercase hex");
            hash[i] = bytes[i];
            i += 1;
        }
        VtkHash(hash)
    }

    /// The hash as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits ever get in (`parse`, `from_static`, `from_wire`).
        std::str::from_utf8(&self.0).expect("a VTK hash is ASCII")
    }

    /// Which known builds use this hash, if any.
    pub fn describe(&self) -> Option<&'static str> {
        Self::KNOWN
            .iter()
            .find(|(hash, _)| hash == self)
            .map(|(_, what)| *what)
    }

    /// The hash from the first 32 bytes of a hash frame, if they are lowercase hex.
    fn from_wire(bytes: &[u8]) -> Option<VtkHash> {
        std::str::from_utf8(bytes.get(..32)?)
            .ok()
            .and_then(|s| VtkHash::parse(s).ok())
    }

    /// The 33 bytes VTK sends: the digits and a terminating NUL.
    fn to_wire(self) -> [u8; HASH_WIRE_LEN] {
        let mut wire = [0; HASH_WIRE_LEN];
        wire[..32].copy_from_slice(&self.0);
        wire
    }
}

const fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b >= b'a' && b <= b'f')
}

impl Default for VtkHash {
    fn default() -> Self {
        VtkHash::DEBIAN_12_PARAVIEW_5_11
    }
}

impl fmt::Display for VtkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for VtkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VtkHash({})", self.as_str())
    }
}

impl std::str::FromStr for VtkHash {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VtkHash::parse(s)
    }
}

/// The byte order of the integers in a frame. VTK sends its machine's native order and
/// announces it in the first frame; the receiver converts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ByteOrder {
    /// Least significant byte first (x86, ARM): what nearly every peer sends.
    #[default]
    Little,
    /// Most significant byte first (POWER, SPARC).
    Big,
}

impl ByteOrder {
    /// The byte VTK puts in the endian frame: 1 for big-endian, 0 for little-endian.
    fn flag(self) -> u8 {
        match self {
            ByteOrder::Little => 0,
            ByteOrder::Big => 1,
        }
    }

    fn encode(self, value: i32) -> [u8; 4] {
        match self {
            ByteOrder::Little => value.to_le_bytes(),
            ByteOrder::Big => value.to_be_bytes(),
        }
    }

    fn decode(self, bytes: [u8; 4]) -> i32 {
        match self {
            ByteOrder::Little => i32::from_le_bytes(bytes),
            ByteOrder::Big => i32::from_be_bytes(bytes),
        }
    }
}

/// The ParaView-compatible handshake, configured for one ParaView build.
///
/// Build one with [`ParaViewHandshake::builder`]; [`Default`] is Debian 12's pvserver
/// (ParaView 5.11, hash `5e7a24e1…`, no connect id, 64-bit ids, `opengl2`).
#[derive(Clone, Debug)]
pub struct ParaViewHandshake {
    major: u16,
    minor: u16,
    connect_id: i32,
    hash: VtkHash,
    ids_64bit: bool,
    byte_order: ByteOrder,
    max_string_len: usize,
    /// `paraview-<major>.<minor>[.connect_id.<N>].renderingbackend.<backend>`, built once.
    string: String,
}

impl Default for ParaViewHandshake {
    fn default() -> Self {
        ParaViewHandshake::builder()
            .build()
            .expect("the default configuration is valid")
    }
}

impl ParaViewHandshake {
    /// A builder starting from the defaults (Debian 12's ParaView 5.11).
    pub fn builder() -> ParaViewHandshakeBuilder {
        ParaViewHandshakeBuilder::default()
    }

    /// The ParaView handshake string this side sends (dialler) or expects (acceptor).
    pub fn handshake_string(&self) -> &str {
        &self.string
    }

    /// The ParaView version, `(major, minor)`.
    pub fn version(&self) -> (u16, u16) {
        (self.major, self.minor)
    }

    /// The connect id (0 = none).
    pub fn connect_id(&self) -> i32 {
        self.connect_id
    }

    /// The VTK communicator hash this side announces and requires.
    pub fn vtk_hash(&self) -> VtkHash {
        self.hash
    }

    /// The version as [`PeerInfo::protocol`] reports it: `major * 100 + minor`.
    pub fn protocol(&self) -> u32 {
        u32::from(self.major) * 100 + u32::from(self.minor)
    }
}

/// Builds a [`ParaViewHandshake`]; every setter has the default of Debian 12's pvserver.
#[derive(Clone, Debug)]
pub struct ParaViewHandshakeBuilder {
    major: u16,
    minor: u16,
    connect_id: i32,
    hash: VtkHash,
    ids_64bit: bool,
    rendering_backend: String,
    byte_order: ByteOrder,
    max_string_len: usize,
}

impl Default for ParaViewHandshakeBuilder {
    fn default() -> Self {
        ParaViewHandshakeBuilder {
            major: 5,
            minor: 11,
            connect_id: 0,
            hash: VtkHash::DEBIAN_12_PARAVIEW_5_11,
            ids_64bit: true,
            rendering_backend: DEFAULT_RENDERING_BACKEND.to_owned(),
            byte_order: ByteOrder::Little,
            max_string_len: DEFAULT_MAX_STRING_LEN,
        }
    }
}

impl ParaViewHandshakeBuilder {
    /// The ParaView version (default 5.11). Only major and minor take part: ParaView leaves
    /// the patch level out on purpose, so 5.11.0 and 5.11.2 connect.
    pub fn version(mut self, major: u16, minor: u16) -> Self {
        self.major = major;
        self.minor = minor;
        self
    }

    /// The connect id, as pvserver's `--connect-id` (default 0 = none, and then the string
    /// has no `.connect_id.N` part). ParaView stores it in a C `int`; a negative id works
    /// when both ends use the same one, but ParaView's acceptor cannot parse it to say why a
    /// mismatch happened, so a mismatch then reports [`ErrorCode::Unknown`].
    pub fn connect_id(mut self, connect_id: i32) -> Self {
        self.connect_id = connect_id;
        self
    }

    /// The VTK communicator hash of the peer's build (default Debian 12's).
    pub fn vtk_hash(mut self, hash: VtkHash) -> Self {
        self.hash = hash;
        self
    }

    /// Whether to announce 64-bit VTK ids (default true, as every current build). The peer's
    /// answer is informational: VTK converts id arrays, the handshake does not fail.
    pub fn ids_64bit(mut self, ids_64bit: bool) -> Self {
        self.ids_64bit = ids_64bit;
        self
    }

    /// The rendering backend in the string (default `opengl2`, the only one ParaView uses).
    pub fn rendering_backend(mut self, backend: impl Into<String>) -> Self {
        self.rendering_backend = backend.into();
        self
    }

    /// The byte order we send in (default little-endian). Any VTK peer copes with either;
    /// this exists so tests can play a big-endian machine.
    pub fn byte_order(mut self, byte_order: ByteOrder) -> Self {
        self.byte_order = byte_order;
        self
    }

    /// The largest handshake string accepted from a peer, NUL included (default 4 KiB).
    pub fn max_string_len(mut self, limit: usize) -> Self {
        self.max_string_len = limit;
        self
    }

    /// Checks the configuration and builds the handshake string.
    pub fn build(self) -> Result<ParaViewHandshake, ConfigError> {
        // ParaView's acceptor recognises a backend as a run of anything but '.' (and a C
        // string cannot hold NUL); any other string could never be classified on mismatch.
        let backend = &self.rendering_backend;
        if backend.is_empty() || backend.contains(['.', '\0']) {
            return Err(ConfigError::BadRenderingBackend(backend.clone()));
        }
        // `PeerInfo::protocol` is major * 100 + minor; keep it unambiguous.
        if self.minor >= 100 {
            return Err(ConfigError::MinorTooLarge(self.minor));
        }
        let mut string = format!("paraview-{}.{}", self.major, self.minor);
        if self.connect_id != 0 {
            string.push_str(&format!(".connect_id.{}", self.connect_id));
        }
        string.push_str(".renderingbackend.");
        string.push_str(backend);
        Ok(ParaViewHandshake {
            major: self.major,
            minor: self.minor,
            connect_id: self.connect_id,
            hash: self.hash,
            ids_64bit: self.ids_64bit,
            byte_order: self.byte_order,
            max_string_len: self.max_string_len,
            string,
        })
    }
}

/// A configuration the handshake cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A VTK hash that is not 32 lowercase hex digits.
    #[error("{0:?} is not a VTK communicator hash (32 lowercase hex digits)")]
    BadHash(String),
    /// A rendering backend that is empty or holds '.' or NUL.
    #[error("{0:?} is not a usable rendering backend (non-empty, no '.', no NUL)")]
    BadRenderingBackend(String),
    /// A minor version of 100 or more (it would make `major*100+minor` ambiguous).
    #[error("ParaView minor version {0} is out of range (0..=99)")]
    MinorTooLarge(u16),
}

// ---------------------------------------------------------------------------------------------
// The acceptor's verdict
// ---------------------------------------------------------------------------------------------

/// The int32 the acceptor answers to the handshake string (ParaView's codes 0–5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 0: the strings match; the connection is accepted.
    NoError,
    /// 1: the socket communicators differ. ParaView uses this only locally when layer 1
    /// fails; it does not reach the wire from ParaView itself.
    CommunicatorDifferent,
    /// 2: different ParaView versions (major.minor).
    DifferentVersions,
    /// 3: different connect ids (ParaView's GUI re-prompts for the id on this one).
    DifferentConnectIds,
    /// 4: different rendering backends.
    DifferentRenderingBackends,
    /// 5: a string could not be parsed, or they differ in a way none of the above explains.
    Unknown,
}

impl ErrorCode {
    /// The number on the wire.
    pub fn as_i32(self) -> i32 {
        match self {
            ErrorCode::NoError => 0,
            ErrorCode::CommunicatorDifferent => 1,
            ErrorCode::DifferentVersions => 2,
            ErrorCode::DifferentConnectIds => 3,
            ErrorCode::DifferentRenderingBackends => 4,
            ErrorCode::Unknown => 5,
        }
    }

    /// The code for a number from the wire, if it is one of 0–5.
    pub fn from_i32(code: i32) -> Option<ErrorCode> {
        Some(match code {
            0 => ErrorCode::NoError,
            1 => ErrorCode::CommunicatorDifferent,
            2 => ErrorCode::DifferentVersions,
            3 => ErrorCode::DifferentConnectIds,
            4 => ErrorCode::DifferentRenderingBackends,
            5 => ErrorCode::Unknown,
            _ => return None,
        })
    }
}

/// The parts ParaView's acceptor recognises in a handshake string, following its pattern
/// `^paraview-([0-9]+\.[0-9]+)\.(connect_id\.([0-9]+)\.)?renderingbackend\.([^.]+)$`.
#[derive(Debug, PartialEq, Eq)]
struct HandshakeParts<'a> {
    version: &'a [u8],
    connect_id: Option<&'a [u8]>,
    backend: &'a [u8],
}

impl<'a> HandshakeParts<'a> {
    fn parse(s: &'a [u8]) -> Option<HandshakeParts<'a>> {
        let rest = s.strip_prefix(b"paraview-")?;
        let major = digits(rest)?;
        let minor = digits(rest[major..].strip_prefix(b".")?)?;
        let (version, rest) = rest.split_at(major + 1 + minor);
        let rest = rest.strip_prefix(b".")?;
        let (connect_id, rest) = match rest.strip_prefix(b"connect_id.") {
            Some(after) => {
                let n = digits(after)?;
                (Some(&after[..n]), after[n..].strip_prefix(b".")?)
            }
            None => (None, rest),
        };
        let backend = rest.strip_prefix(b"renderingbackend.")?;
        if backend.is_empty() || backend.contains(&b'.') {
            return None;
        }
        Some(HandshakeParts {
            version,
            connect_id,
            backend,
        })
    }
}

/// The length of the run of ASCII digits at the start of `s`, if there is at least one.
fn digits(s: &[u8]) -> Option<usize> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    (n > 0).then_some(n)
}

/// Why two different handshake strings differ, as ParaView's acceptor decides it: parse ours
/// first, then theirs (either failing is "unknown"), then compare version, connect id and
/// backend in that order. Only called when the strings differ.
fn classify(ours: &[u8], theirs: &[u8]) -> ErrorCode {
    let (Some(ours), Some(theirs)) = (HandshakeParts::parse(ours), HandshakeParts::parse(theirs))
    else {
        return ErrorCode::Unknown;
    };
    if ours.version != theirs.version {
        ErrorCode::DifferentVersions
    } else if ours.connect_id != theirs.connect_id {
        ErrorCode::DifferentConnectIds
    } else if ours.backend != theirs.backend {
        ErrorCode::DifferentRenderingBackends
    } else {
        ErrorCode::Unknown
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One step of the exchange, to say where a malformed frame arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Layer 1: the byte-order frame.
    Endian,
    /// Layer 1: the communicator version.
    Version,
    /// Layer 1: the communicator source hash.
    Hash,
    /// Layer 1: the VTK id size.
    IdTypeSize,
    /// Layer 2: the size of the handshake string.
    StringSize,
    /// Layer 2: the handshake string.
    String,
    /// Layer 2: the acceptor's error code.
    Verdict,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Endian => "the VTK byte-order exchange",
            Step::Version => "the VTK communicator version exchange",
            Step::Hash => "the VTK communicator hash exchange",
            Step::IdTypeSize => "the VTK id-size exchange",
            Step::StringSize => "the ParaView handshake string's size",
            Step::String => "the ParaView handshake string",
            Step::Verdict => "the ParaView handshake verdict",
        })
    }
}

/// Why the ParaView-compatible handshake failed.
///
/// The four string mismatches carry `ours` (the string we sent or expected) and `theirs`:
/// the peer's string when we were the acceptor and saw it, `None` when we were the dialler
/// and only heard the acceptor's code. [`ParaViewError::code`] gives that code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParaViewError {
    /// The peer's VTK socket communicator announces another version (hash algorithm id).
    VtkVersionMismatch {
        /// Ours, [`VTK_COMMUNICATOR_VERSION`].
        ours: i32,
        /// The peer's.
        theirs: i32,
    },
    /// The peer's VTK was built from another `vtkSocketCommunicator.cxx`.
    HashMismatch {
        /// Ours.
        ours: VtkHash,
        /// The peer's first 32 bytes, escaped if they are not hex.
        theirs: String,
    },
    /// Code 1 from the acceptor: the socket communicators differ.
    CommunicatorMismatch {
        /// The string we sent.
        ours: String,
    },
    /// Code 2: the ParaView versions (major.minor) differ.
    ParaViewVersionMismatch {
        /// Our string.
        ours: String,
        /// The peer's string, when we saw it.
        theirs: Option<String>,
    },
    /// Code 3: the connect ids differ.
    ConnectIdMismatch {
        /// Our connect id (0 = none).
        ours_id: i32,
        /// Our string.
        ours: String,
        /// The peer's string, when we saw it.
        theirs: Option<String>,
    },
    /// Code 4: the rendering backends differ.
    RenderingBackendMismatch {
        /// Our string.
        ours: String,
        /// The peer's string, when we saw it.
        theirs: Option<String>,
    },
    /// Code 5: a string could not be parsed, or they differ in some other way.
    Unparsable {
        /// Our string.
        ours: String,
        /// The peer's string, when we saw it.
        theirs: Option<String>,
    },
    /// The acceptor answered a code outside 0–5.
    UnknownCode(i32),
    /// A frame carried another tag than the step expects.
    UnexpectedTag {
        /// Where.
        step: Step,
        /// The tag the step needs.
        expected: i32,
        /// The tag that came.
        got: i32,
    },
    /// A frame's length does not fit its step.
    BadLength {
        /// Where.
        step: Step,
        /// The length the step needs.
        expected: usize,
        /// The length that came (negative lengths are malformed too).
        got: i64,
    },
    /// The byte-order frame held neither 0 (little-endian) nor 1 (big-endian).
    BadEndianFlag(u8),
}

impl ParaViewError {
    /// The ParaView error code (0–5) this failure corresponds to, for the string mismatches.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ParaViewError::CommunicatorMismatch { .. } => Some(ErrorCode::CommunicatorDifferent),
            ParaViewError::ParaViewVersionMismatch { .. } => Some(ErrorCode::DifferentVersions),
            ParaViewError::ConnectIdMismatch { .. } => Some(ErrorCode::DifferentConnectIds),
            ParaViewError::RenderingBackendMismatch { .. } => {
                Some(ErrorCode::DifferentRenderingBackends)
            }
            ParaViewError::Unparsable { .. } => Some(ErrorCode::Unknown),
            _ => None,
        }
    }
}

/// "the peer sent `…`" when we saw the peer's string, "the peer refused ours" otherwise.
struct PeerSaid<'a>(&'a Option<String>);

impl fmt::Display for PeerSaid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(theirs) => write!(f, "the peer sent {theirs:?}"),
            None => f.write_str("the peer refused it"),
        }
    }
}

/// A hash and, when known, the builds that use it.
struct NamedHash<'a>(&'a str);

impl fmt::Display for NamedHash<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)?;
        match VtkHash::parse(self.0).ok().and_then(|h| h.describe()) {
            Some(what) => write!(f, " ({what} uses it)"),
            None => f.write_str(" (not a build this module knows)"),
        }
    }
}

impl fmt::Display for ParaViewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParaViewError::VtkVersionMismatch { ours, theirs } => write!(
                f,
                "VTK socket communicator version mismatch: ours is {ours}, the peer's is \
                 {theirs}; the peer's VTK uses another handshake generation"
            ),
            ParaViewError::HashMismatch { ours, theirs } => write!(
                f,
                "VTK communicator hash mismatch: ours is {}, the peer's is {}. Both ends must \
                 be built from the same vtkSocketCommunicator.cxx: configure the peer's hash \
                 (ParaViewHandshakeBuilder::vtk_hash) or use a matching ParaView build",
                NamedHash(ours.as_str()),
                NamedHash(theirs)
            ),
            ParaViewError::CommunicatorMismatch { ours } => write!(
                f,
                "the peer's socket communicator differs from ours (ParaView handshake code 1); \
                 we sent {ours:?}"
            ),
            ParaViewError::ParaViewVersionMismatch { ours, theirs } => write!(
                f,
                "ParaView version mismatch (handshake code 2): we have {ours:?}, {}; client \
                 and server need the same major.minor version",
                PeerSaid(theirs)
            ),
            ParaViewError::ConnectIdMismatch {
                ours_id,
                ours,
                theirs,
            } => write!(
                f,
                "connect id mismatch (handshake code 3): ours is {} ({ours:?}), {}; start both \
                 ends with the same --connect-id",
                if *ours_id == 0 {
                    "none".to_owned()
                } else {
                    ours_id.to_string()
                },
                PeerSaid(theirs)
            ),
            ParaViewError::RenderingBackendMismatch { ours, theirs } => write!(
                f,
                "rendering backend mismatch (handshake code 4): we have {ours:?}, {}",
                PeerSaid(theirs)
            ),
            ParaViewError::Unparsable { ours, theirs } => write!(
                f,
                "the ParaView handshake strings differ in a way ParaView cannot classify \
                 (handshake code 5, likely another ParaView generation): we have {ours:?}, {}",
                PeerSaid(theirs)
            ),
            ParaViewError::UnknownCode(code) => write!(
                f,
                "the peer answered the ParaView handshake with code {code}, which is none of 0-5"
            ),
            ParaViewError::UnexpectedTag {
                step,
                expected,
                got,
            } => write!(
                f,
                "malformed ParaView handshake: during {step} the peer sent a frame tagged \
                 {got:#x} where {expected:#x} belongs"
            ),
            ParaViewError::BadLength {
                step,
                expected,
                got,
            } => write!(
                f,
                "malformed ParaView handshake: during {step} the peer announced {got} bytes \
                 where {expected} belong"
            ),
            ParaViewError::BadEndianFlag(flag) => write!(
                f,
                "malformed ParaView handshake: the byte-order flag is {flag}, neither 0 \
                 (little-endian) nor 1 (big-endian)"
            ),
        }
    }
}

impl std::error::Error for ParaViewError {}

// ---------------------------------------------------------------------------------------------
// The exchange
// ---------------------------------------------------------------------------------------------

impl Handshake for ParaViewHandshake {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run<'a>(
        &'a self,
        stream: &'a mut dyn Stream,
        ctx: HandshakeContext<'a>,
    ) -> BoxFuture<'a, Result<PeerInfo, HandshakeError>> {
        Box::pin(async move {
            // ParaView has no TLS, so `ctx.tls_binding` has nothing to bind to: when this
            // runs inside TLS the TLS layer authenticates, and this only checks compatibility.
            let mut wire = Wire {
                stream,
                ours: self.byte_order,
                peer: None,
            };
            match ctx.side {
                Side::Dialler => self.run_dialler(&mut wire).await?,
                Side::Acceptor => self.run_acceptor(&mut wire, &ctx).await?,
            }
            Ok(PeerInfo {
                handshake: NAME,
                protocol: self.protocol(),
                role: ctx.role.peer(),
                // The bit pattern of ParaView's C int: keeps a negative id distinct from any
                // positive one. Both strings matched, so the peer's id is ours.
                connect_id: u64::from(self.connect_id as u32),
            })
        })
    }
}

impl ParaViewHandshake {
    /// The side that called `connect`: VTK's "client" half. We speak first at every step,
    /// then read the acceptor's answer and check it ourselves, so a mismatch is reported
    /// here with both values even though the acceptor also notices it.
    async fn run_dialler(&self, wire: &mut Wire<'_>) -> Result<(), HandshakeError> {
        // Layer 1, step 1: byte order. Ours goes out in our order; the acceptor's tells us
        // how to read every integer that follows.
        wire.send(ENDIAN_TAG, &[self.byte_order.flag()]).await?;
        wire.receive_endian().await?;

        // Step 2: communicator version (the hash algorithm id, 100 = MD5).
        wire.send_i32(VERSION_TAG, VTK_COMMUNICATOR_VERSION).await?;
        let theirs = wire.receive_i32(Step::Version, VERSION_TAG).await?;
        check_vtk_version(theirs)?;

        // Step 3: the communicator source hash: equal builds of VTK only.
        wire.send(HASH_TAG, &self.hash.to_wire()).await?;
        let theirs = wire.receive_hash().await?;
        self.check_hash(&theirs)?;

        // Step 4: VTK id size. Informational: VTK converts id arrays, nothing fails here.
        wire.send_i32(ID_TYPE_SIZE_TAG, i32::from(self.ids_64bit))
            .await?;
        let _peer_ids_64bit = wire.receive_i32(Step::IdTypeSize, ID_TYPE_SIZE_TAG).await?;

        // Layer 2: our handshake string, size first (NUL included), then the bytes.
        let mut string = self.string.clone().into_bytes();
        string.push(0);
        let size = i32::try_from(string.len()).expect("our handshake string is short");
        wire.send_i32(STRING_TAG, size).await?;
        wire.send(STRING_TAG, &string).await?;

        // The acceptor's verdict: 0 accepts, anything else says which part differs.
        let code = wire.receive_i32(Step::Verdict, VERDICT_TAG).await?;
        match ErrorCode::from_i32(code) {
            Some(ErrorCode::NoError) => Ok(()),
            Some(code) => Err(self.mismatch(code, None).into()),
            None => Err(ParaViewError::UnknownCode(code).into()),
        }
    }

    /// The side that accepted: VTK's "server" half. At every step we read the dialler's
    /// value, answer ours *before* judging, so the dialler learns the precise reason too,
    /// and then compare.
    async fn run_acceptor(
        &self,
        wire: &mut Wire<'_>,
        ctx: &HandshakeContext<'_>,
    ) -> Result<(), HandshakeError> {
        // Layer 1, step 1: byte order. The first bytes from the dialler: anything but the
        // endian frame is another protocol, named where we can.
        wire.receive_endian().await?;
        wire.send(ENDIAN_TAG, &[self.byte_order.flag()]).await?;

        // Step 2: communicator version.
        let theirs = wire.receive_i32(Step::Version, VERSION_TAG).await?;
        wire.send_i32(VERSION_TAG, VTK_COMMUNICATOR_VERSION).await?;
        check_vtk_version(theirs)?;

        // Step 3: communicator source hash.
        let theirs = wire.receive_hash().await?;
        wire.send(HASH_TAG, &self.hash.to_wire()).await?;
        self.check_hash(&theirs)?;

        // Step 4: VTK id size (informational).
        let _peer_ids_64bit = wire.receive_i32(Step::IdTypeSize, ID_TYPE_SIZE_TAG).await?;
        wire.send_i32(ID_TYPE_SIZE_TAG, i32::from(self.ids_64bit))
            .await?;

        // Layer 2: the dialler's string, size first. ParaView reads a size of 0 or less as
        // "no string" (and then it cannot match); a size over our limit is refused before
        // a single byte of it is read.
        let size = wire.receive_i32(Step::StringSize, STRING_TAG).await?;
        let theirs = match usize::try_from(size) {
            Ok(0) | Err(_) => Vec::new(),
            Ok(size) if size > self.max_string_len => {
                return Err(HandshakeError::Oversized {
                    size,
                    limit: self.max_string_len,
                });
            }
            Ok(size) => wire.receive_string(size).await?,
        };
        // ParaView reads the bytes as a C string: whatever follows a NUL does not count.
        let theirs = match theirs.iter().position(|&b| b == 0) {
            Some(nul) => &theirs[..nul],
            None => &theirs[..],
        };

        // Byte-for-byte comparison; only a difference is classified, ParaView's way.
        let code = if theirs == self.string.as_bytes() {
            ErrorCode::NoError
        } else {
            classify(self.string.as_bytes(), theirs)
        };
        // Verdict 0 tells the dialler it is in: commit to this connection first, or close
        // without a verdict if we have no room for it (ParaView has no "busy" code).
        if code == ErrorCode::NoError && !ctx.admit() {
            return Err(HandshakeError::Busy);
        }
        wire.send_i32(VERDICT_TAG, code.as_i32()).await?;
        match code {
            ErrorCode::NoError => Ok(()),
            code => {
                let theirs = String::from_utf8_lossy(theirs).into_owned();
                Err(self.mismatch(code, Some(theirs)).into())
            }
        }
    }

    fn check_hash(&self, theirs: &[u8; HASH_WIRE_LEN]) -> Result<(), ParaViewError> {
        // VTK compares the first 32 characters; the 33rd is the NUL.
        if theirs[..32] == self.hash.0 {
            return Ok(());
        }
        let theirs = match VtkHash::from_wire(theirs) {
            Some(hash) => hash.to_string(),
            None => theirs[..32].escape_ascii().to_string(),
        };
        Err(ParaViewError::HashMismatch {
            ours: self.hash,
            theirs,
        })
    }

    /// The error for a non-zero verdict, seen from either side.
    fn mismatch(&self, code: ErrorCode, theirs: Option<String>) -> ParaViewError {
        let ours = self.string.clone();
        match code {
            ErrorCode::CommunicatorDifferent => ParaViewError::CommunicatorMismatch { ours },
            ErrorCode::DifferentVersions => ParaViewError::ParaViewVersionMismatch { ours, theirs },
            ErrorCode::DifferentConnectIds => ParaViewError::ConnectIdMismatch {
                ours_id: self.connect_id,
                ours,
                theirs,
            },
            ErrorCode::DifferentRenderingBackends => {
                ParaViewError::RenderingBackendMismatch { ours, theirs }
            }
            ErrorCode::Unknown | ErrorCode::NoError => ParaViewError::Unparsable { ours, theirs },
        }
    }
}

fn check_vtk_version(theirs: i32) -> Result<(), ParaViewError> {
    if theirs == VTK_COMMUNICATOR_VERSION {
        Ok(())
    } else {
        Err(ParaViewError::VtkVersionMismatch {
            ours: VTK_COMMUNICATOR_VERSION,
            theirs,
        })
    }
}

/// Frames on one stream: our byte order for what we send, the peer's (once known) for what
/// we read. Every read is of a length checked beforehand, so a peer cannot make us allocate
/// more than the string limit.
struct Wire<'s> {
    stream: &'s mut dyn Stream,
    ours: ByteOrder,
    peer: Option<ByteOrder>,
}

impl Wire<'_> {
    /// Sends one frame: tag, length, payload, in our byte order.
    async fn send(&mut self, tag: i32, payload: &[u8]) -> Result<(), HandshakeError> {
        let len = i32::try_from(payload.len()).expect("handshake frames are small");
        let mut frame = Vec::with_capacity(8 + payload.len());
        frame.extend_from_slice(&self.ours.encode(tag));
        frame.extend_from_slice(&self.ours.encode(len));
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await.map_err(io_error)?;
        self.stream.flush().await.map_err(io_error)
    }

    async fn send_i32(&mut self, tag: i32, value: i32) -> Result<(), HandshakeError> {
        let bytes = self.ours.encode(value);
        self.send(tag, &bytes).await
    }

    /// Reads exactly `buf.len()` bytes.
    async fn read(&mut self, buf: &mut [u8]) -> Result<(), HandshakeError> {
        self.stream.read_exact(buf).await.map_err(io_error)?;
        Ok(())
    }

    /// The first frame from the peer: its byte-order flag. Its tag reads the same in both
    /// orders; its length (1) is checked in both orders, since we cannot know which yet.
    async fn receive_endian(&mut self) -> Result<(), HandshakeError> {
        let mut tag = [0; 4];
        self.read(&mut tag).await?;
        if tag != ENDIAN_TAG.to_le_bytes() {
            return Err(HandshakeError::Garbage {
                expected: NAME,
                detail: format!(
                    "expected the VTK byte-order frame (tag 0x3c3c3c3c), got bytes {}: {}",
                    hex(&tag),
                    guess(&tag)
                ),
            });
        }
        let mut len = [0; 4];
        self.read(&mut len).await?;
        if i32::from_le_bytes(len) != 1 && i32::from_be_bytes(len) != 1 {
            return Err(ParaViewError::BadLength {
                step: Step::Endian,
                expected: 1,
                got: i64::from(i32::from_le_bytes(len)),
            }
            .into());
        }
        let mut flag = [0; 1];
        self.read(&mut flag).await?;
        self.peer = Some(match flag[0] {
            0 => ByteOrder::Little,
            1 => ByteOrder::Big,
            other => return Err(ParaViewError::BadEndianFlag(other).into()),
        });
        Ok(())
    }

    /// Reads a frame header, checks its tag, and returns the announced payload length.
    async fn receive_header(&mut self, step: Step, tag: i32) -> Result<i32, HandshakeError> {
        let order = self.peer.expect("the byte-order exchange comes first");
        let mut header = [0; 8];
        self.read(&mut header).await?;
        let got = order.decode([header[0], header[1], header[2], header[3]]);
        if got != tag {
            return Err(ParaViewError::UnexpectedTag {
                step,
                expected: tag,
                got,
            }
            .into());
        }
        Ok(order.decode([header[4], header[5], header[6], header[7]]))
    }

    /// Reads a frame whose payload must be exactly `N` bytes.
    async fn receive_exact<const N: usize>(
        &mut self,
        step: Step,
        tag: i32,
    ) -> Result<[u8; N], HandshakeError> {
        let len = self.receive_header(step, tag).await?;
        if usize::try_from(len) != Ok(N) {
            return Err(ParaViewError::BadLength {
                step,
                expected: N,
                got: i64::from(len),
            }
            .into());
        }
        let mut payload = [0; N];
        self.read(&mut payload).await?;
        Ok(payload)
    }

    /// Reads a frame holding one int32, in the peer's byte order.
    async fn receive_i32(&mut self, step: Step, tag: i32) -> Result<i32, HandshakeError> {
        let payload = self.receive_exact::<4>(step, tag).await?;
        let order = self.peer.expect("the byte-order exchange comes first");
        Ok(order.decode(payload))
    }

    /// Reads the peer's hash frame: 32 hex digits and a NUL.
    async fn receive_hash(&mut self) -> Result<[u8; HASH_WIRE_LEN], HandshakeError> {
        self.receive_exact::<HASH_WIRE_LEN>(Step::Hash, HASH_TAG)
            .await
    }

    /// Reads the string frame whose size the peer announced (already checked against the
    /// limit); its length must agree with that size.
    async fn receive_string(&mut self, size: usize) -> Result<Vec<u8>, HandshakeError> {
        let len = self.receive_header(Step::String, STRING_TAG).await?;
        if usize::try_from(len) != Ok(size) {
            return Err(ParaViewError::BadLength {
                step: Step::String,
                expected: size,
                got: i64::from(len),
            }
            .into());
        }
        let mut string = vec![0; size];
        self.read(&mut string).await?;
        Ok(string)
    }
}

/// A socket error, except that every way of noticing the peer has gone (end of stream on a
/// read, a broken pipe or reset on a write) is [`HandshakeError::Closed`]: a pvserver that
/// rejects us closes the socket, and which of these we see first is a race.
fn io_error(e: std::io::Error) -> HandshakeError {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    match e.kind() {
        UnexpectedEof | BrokenPipe | ConnectionReset | ConnectionAborted => {
            HandshakeError::Closed(NAME)
        }
        _ => HandshakeError::Io(e),
    }
}

/// Bytes as space-separated hex, for error messages.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// [`guess_protocol`], plus what a TLS server answers to a non-TLS client: an alert.
fn guess(first: &[u8]) -> &'static str {
    match first {
        [0x15, 0x03, ..] => "it looks like a TLS alert: is the peer a TLS server?",
        _ => guess_protocol(first),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::handshake::{Role, perform};

    const DEADLINE: Duration = Duration::from_secs(5);

    fn ctx(side: Side) -> HandshakeContext<'static> {
        // The usual forward case: the client dials, the server accepts.
        let role = match side {
            Side::Dialler => Role::Client,
            Side::Acceptor => Role::Server,
        };
        HandshakeContext {
            side,
            role,
            tls_binding: None,
            admission: None,
        }
    }

    fn hs() -> ParaViewHandshakeBuilder {
        ParaViewHandshake::builder()
    }

    /// A connected pair of real loopback sockets: (dialler's end, acceptor's end).
    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (dialled, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (dialled.unwrap(), accepted.unwrap().0)
    }

    /// Runs our dialler against our acceptor; each side drops its end when it finishes, as a
    /// real caller does, so neither waits for a peer that has given up.
    async fn ours_vs_ours<S: Stream + 'static>(
        (mut dialler_end, mut acceptor_end): (S, S),
        dialler: &ParaViewHandshake,
        acceptor: &ParaViewHandshake,
    ) -> (
        Result<PeerInfo, HandshakeError>,
        Result<PeerInfo, HandshakeError>,
    ) {
        tokio::join!(
            async move { perform(dialler, &mut dialler_end, ctx(Side::Dialler), DEADLINE).await },
            async move { perform(acceptor, &mut acceptor_end, ctx(Side::Acceptor), DEADLINE).await },
        )
    }

    fn duplex_pair() -> (DuplexStream, DuplexStream) {
        tokio::io::duplex(64 * 1024)
    }

    fn paraview_error(result: Result<PeerInfo, HandshakeError>) -> ParaViewError {
        match result {
            Err(HandshakeError::ParaView(e)) => e,
            other => panic!("expected a ParaView error, got {other:?}"),
        }
    }

    /// A hand-written peer speaking the framing byte by byte: it sends in `order` and reads
    /// our frames in `ours` (the byte order our side under test sends).
    struct Script<S> {
        stream: S,
        order: ByteOrder,
        ours: ByteOrder,
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> Script<S> {
        fn new(stream: S, order: ByteOrder) -> Self {
            Script {
                stream,
                order,
                ours: ByteOrder::Little,
            }
        }

        fn frame(order: ByteOrder, tag: i32, payload: &[u8]) -> Vec<u8> {
            let mut frame = order.encode(tag).to_vec();
            frame.extend_from_slice(&order.encode(payload.len() as i32));
            frame.extend_from_slice(payload);
            frame
        }

        async fn send(&mut self, tag: i32, payload: &[u8]) {
            let frame = Self::frame(self.order, tag, payload);
            self.stream.write_all(&frame).await.unwrap();
        }

        async fn send_i32(&mut self, tag: i32, value: i32) {
            let bytes = self.order.encode(value);
            self.send(tag, &bytes).await;
        }

        async fn recv(&mut self, tag: i32) -> Vec<u8> {
            let mut header = [0; 8];
            self.stream.read_exact(&mut header).await.unwrap();
            let got = self.ours.decode(header[..4].try_into().unwrap());
            assert_eq!(got, tag, "our side sent an unexpected tag");
            let len = self.ours.decode(header[4..].try_into().unwrap());
            let mut payload = vec![0; len as usize];
            self.stream.read_exact(&mut payload).await.unwrap();
            payload
        }

        async fn recv_i32(&mut self, tag: i32) -> i32 {
            let payload = self.recv(tag).await;
            self.ours.decode(payload.try_into().unwrap())
        }

        /// VTK's connecting half, against our acceptor.
        async fn vtk_dialler_half(&mut self, hash: VtkHash) {
            self.send(ENDIAN_TAG, &[self.order.flag()]).await;
            assert_eq!(self.recv(ENDIAN_TAG).await, [self.ours.flag()]);
            self.send_i32(VERSION_TAG, 100).await;
            assert_eq!(self.recv_i32(VERSION_TAG).await, 100);
            self.send(HASH_TAG, &hash.to_wire()).await;
            self.recv(HASH_TAG).await;
            self.send_i32(ID_TYPE_SIZE_TAG, 1).await;
            assert_eq!(self.recv_i32(ID_TYPE_SIZE_TAG).await, 1);
        }

        /// VTK's accepting half, against our dialler.
        async fn vtk_acceptor_half(&mut self, hash: VtkHash) {
            assert_eq!(self.recv(ENDIAN_TAG).await, [self.ours.flag()]);
            self.send(ENDIAN_TAG, &[self.order.flag()]).await;
            assert_eq!(self.recv_i32(VERSION_TAG).await, 100);
            self.send_i32(VERSION_TAG, 100).await;
            self.recv(HASH_TAG).await;
            self.send(HASH_TAG, &hash.to_wire()).await;
            assert_eq!(self.recv_i32(ID_TYPE_SIZE_TAG).await, 1);
            self.send_i32(ID_TYPE_SIZE_TAG, 1).await;
        }

        /// Layer 2 as ParaView's connector: the string, then the acceptor's code.
        async fn send_string(&mut self, string: &[u8]) -> i32 {
            self.send_i32(STRING_TAG, string.len() as i32).await;
            self.send(STRING_TAG, string).await;
            self.recv_i32(VERDICT_TAG).await
        }
    }

    async fn accept_with(
        handshake: &ParaViewHandshake,
        mut end: DuplexStream,
    ) -> Result<PeerInfo, HandshakeError> {
        perform(handshake, &mut end, ctx(Side::Acceptor), DEADLINE).await
    }

    async fn dial_with(
        handshake: &ParaViewHandshake,
        mut end: DuplexStream,
    ) -> Result<PeerInfo, HandshakeError> {
        perform(handshake, &mut end, ctx(Side::Dialler), DEADLINE).await
    }

    // --- configuration -----------------------------------------------------------------

    #[test]
    fn default_is_debian_12_paraview_5_11() {
        let hs = ParaViewHandshake::default();
        assert_eq!(
            hs.handshake_string(),
            "paraview-5.11.renderingbackend.opengl2"
        );
        assert_eq!(hs.vtk_hash().as_str(), "5e7a24e1e7033d8c49830a3775623523");
        assert_eq!(hs.vtk_hash().describe(), Some("Debian 12's paraview 5.11"));
        assert_eq!(hs.protocol(), 511);
        assert_eq!(hs.connect_id(), 0);
    }

    #[test]
    fn connect_id_appears_in_the_string_only_when_not_zero() {
        let with = hs().version(5, 13).connect_id(4242).build().unwrap();
        assert_eq!(
            with.handshake_string(),
            "paraview-5.13.connect_id.4242.renderingbackend.opengl2"
        );
        let negative = hs().connect_id(-7).build().unwrap();
        assert_eq!(
            negative.handshake_string(),
            "paraview-5.11.connect_id.-7.renderingbackend.opengl2"
        );
        assert_eq!(
            hs().connect_id(0).build().unwrap().handshake_string(),
            "paraview-5.11.renderingbackend.opengl2"
        );
    }

    #[test]
    fn bad_configurations_are_refused() {
        for bad in [
            "",
            "5E7A24E1E7033D8C49830A3775623523",
            "5e7a24e1",
            "5e7a24e1e7033d8c49830a377562352g",
        ] {
            assert_eq!(
                VtkHash::parse(bad),
                Err(ConfigError::BadHash(bad.to_owned()))
            );
        }
        assert_eq!(
            "fed88705215b54d5101b1b6e9f76673e".parse::<VtkHash>(),
            Ok(VtkHash::UPSTREAM_PARAVIEW_5_13)
        );
        for bad in ["", "open.gl", "gl\0"] {
            assert_eq!(
                hs().rendering_backend(bad).build().unwrap_err(),
                ConfigError::BadRenderingBackend(bad.to_owned())
            );
        }
        assert_eq!(
            hs().version(5, 100).build().unwrap_err(),
            ConfigError::MinorTooLarge(100)
        );
    }

    #[test]
    fn error_codes_round_trip() {
        for n in 0..=5 {
            assert_eq!(ErrorCode::from_i32(n).unwrap().as_i32(), n);
        }
        assert_eq!(ErrorCode::from_i32(6), None);
        assert_eq!(ErrorCode::from_i32(-1), None);
    }

    #[test]
    fn classification_follows_paraviews_order() {
        let c = |ours: &str, theirs: &str| classify(ours.as_bytes(), theirs.as_bytes());
        let base = "paraview-5.11.renderingbackend.opengl2";
        let id7 = "paraview-5.11.connect_id.7.renderingbackend.opengl2";
        // Version is checked before the connect id, the connect id before the backend.
        assert_eq!(
            c(base, "paraview-5.13.connect_id.7.renderingbackend.egl"),
            ErrorCode::DifferentVersions
        );
        assert_eq!(c(base, id7), ErrorCode::DifferentConnectIds);
        assert_eq!(
            c(id7, "paraview-5.11.connect_id.8.renderingbackend.egl"),
            ErrorCode::DifferentConnectIds
        );
        assert_eq!(
            c(id7, "paraview-5.11.connect_id.07.renderingbackend.opengl2"),
            ErrorCode::DifferentConnectIds
        );
        assert_eq!(
            c(base, "paraview-5.11.renderingbackend.opengl2x"),
            ErrorCode::DifferentRenderingBackends
        );
        // Versions compare as text, as ParaView does.
        assert_eq!(
            c(base, "paraview-05.11.renderingbackend.opengl2"),
            ErrorCode::DifferentVersions
        );
        // Anything the pattern does not match is "unknown", whichever side it is on.
        assert_eq!(c(base, ""), ErrorCode::Unknown);
        assert_eq!(c(base, "hello"), ErrorCode::Unknown);
        assert_eq!(
            c(base, "paraview-5.11.renderingbackend.opengl2.x"),
            ErrorCode::Unknown
        );
        assert_eq!(
            c(base, "paraview-5.11.connect_id.-7.renderingbackend.opengl2"),
            ErrorCode::Unknown
        );
        assert_eq!(
            c(base, "paraview-5.11.connect_id.renderingbackend.opengl2"),
            ErrorCode::Unknown
        );
        assert_eq!(
            c("paraview-5.11.connect_id.-7.renderingbackend.opengl2", base),
            ErrorCode::Unknown
        );
    }

    // --- ours against ours ---------------------------------------------------------------

    #[tokio::test]
    async fn succeeds_without_connect_id_over_tcp() {
        let dialler = ParaViewHandshake::default();
        let acceptor = ParaViewHandshake::default();
        let (d, a) = ours_vs_ours(tcp_pair().await, &dialler, &acceptor).await;
        let d = d.unwrap();
        let a = a.unwrap();
        assert_eq!(
            d,
            PeerInfo {
                handshake: "paraview",
                protocol: 511,
                role: Role::Server,
                connect_id: 0
            }
        );
        assert_eq!(a.role, Role::Client);
        assert_eq!(a.protocol, 511);
    }

    #[tokio::test]
    async fn succeeds_with_connect_id_and_leaves_the_stream_at_application_data() {
        let hs = hs()
            .version(5, 13)
            .vtk_hash(VtkHash::UPSTREAM_PARAVIEW_5_13)
            .connect_id(4242)
            .build()
            .unwrap();
        let (mut d_end, mut a_end) = tcp_pair().await;
        let (d, a) = tokio::join!(
            async {
                let peer = perform(&hs, &mut d_end, ctx(Side::Dialler), DEADLINE).await;
                d_end.write_all(b"after").await.unwrap();
                peer
            },
            async {
                let peer = perform(&hs, &mut a_end, ctx(Side::Acceptor), DEADLINE).await;
                let mut after = [0; 5];
                a_end.read_exact(&mut after).await.unwrap();
                assert_eq!(&after, b"after");
                peer
            },
        );
        assert_eq!(d.unwrap().connect_id, 4242);
        assert_eq!(a.unwrap().connect_id, 4242);
        assert_eq!(
            ParaViewHandshake::builder()
                .connect_id(-7)
                .build()
                .unwrap()
                .protocol(),
            511
        );
    }

    #[tokio::test]
    async fn an_acceptor_with_no_room_left_sends_no_verdict_and_closes() {
        #[derive(Debug)]
        struct NoRoom;
        impl crate::handshake::Admission for NoRoom {
            fn admit(&self) -> bool {
                false
            }
        }
        let hs = &ParaViewHandshake::default();
        let (mut d_end, mut a_end) = duplex_pair();
        let actx = HandshakeContext {
            admission: Some(&NoRoom),
            ..ctx(Side::Acceptor)
        };
        let (d, a) = tokio::join!(
            async move { perform(hs, &mut d_end, ctx(Side::Dialler), DEADLINE).await },
            // The acceptor drops its end when it gives up, as a real caller does.
            async move { perform(hs, &mut a_end, actx, DEADLINE).await },
        );
        assert!(matches!(a, Err(HandshakeError::Busy)), "{a:?}");
        assert!(matches!(d, Err(HandshakeError::Closed(NAME))), "{d:?}");
    }

    #[tokio::test]
    async fn reverse_roles_come_from_the_context_not_the_socket_side() {
        // Reverse connection: the server dials, the client accepts.
        let hs = ParaViewHandshake::default();
        let (mut d_end, mut a_end) = duplex_pair();
        let server = HandshakeContext {
            side: Side::Dialler,
            role: Role::Server,
            tls_binding: None,
            admission: None,
        };
        let client = HandshakeContext {
            side: Side::Acceptor,
            role: Role::Client,
            tls_binding: None,
            admission: None,
        };
        let (d, a) = tokio::join!(
            perform(&hs, &mut d_end, server, DEADLINE),
            perform(&hs, &mut a_end, client, DEADLINE)
        );
        assert_eq!(d.unwrap().role, Role::Client);
        assert_eq!(a.unwrap().role, Role::Server);
    }

    #[tokio::test]
    async fn either_side_may_be_big_endian() {
        let big = hs()
            .byte_order(ByteOrder::Big)
            .connect_id(9)
            .build()
            .unwrap();
        let little = hs().connect_id(9).build().unwrap();
        let (d, a) = ours_vs_ours(duplex_pair(), &big, &little).await;
        assert_eq!(d.unwrap().connect_id, 9);
        assert_eq!(a.unwrap().connect_id, 9);
        let (d, a) = ours_vs_ours(tcp_pair().await, &little, &big).await;
        d.unwrap();
        a.unwrap();
    }

    #[tokio::test]
    async fn paraview_version_mismatch_is_code_2_on_both_sides() {
        let d_hs = hs().version(5, 13).build().unwrap();
        let a_hs = ParaViewHandshake::default();
        let (d, a) = ours_vs_ours(tcp_pair().await, &d_hs, &a_hs).await;
        let d = paraview_error(d);
        let a = paraview_error(a);
        assert_eq!(d.code(), Some(ErrorCode::DifferentVersions));
        assert_eq!(
            d,
            ParaViewError::ParaViewVersionMismatch {
                ours: "paraview-5.13.renderingbackend.opengl2".into(),
                theirs: None
            }
        );
        assert_eq!(
            a,
            ParaViewError::ParaViewVersionMismatch {
                ours: "paraview-5.11.renderingbackend.opengl2".into(),
                theirs: Some("paraview-5.13.renderingbackend.opengl2".into())
            }
        );
        assert!(a.to_string().contains("code 2"), "{a}");
    }

    #[tokio::test]
    async fn connect_id_mismatch_is_code_3_on_both_sides() {
        for (d_id, a_id) in [(7, 8), (0, 8), (7, 0)] {
            let d_hs = hs().connect_id(d_id).build().unwrap();
            let a_hs = hs().connect_id(a_id).build().unwrap();
            let (d, a) = ours_vs_ours(duplex_pair(), &d_hs, &a_hs).await;
            let d = paraview_error(d);
            let a = paraview_error(a);
            assert_eq!(d.code(), Some(ErrorCode::DifferentConnectIds), "{d}");
            assert_eq!(a.code(), Some(ErrorCode::DifferentConnectIds), "{a}");
            assert!(
                matches!(d, ParaViewError::ConnectIdMismatch { ours_id, theirs: None, .. } if ours_id == d_id)
            );
            let ParaViewError::ConnectIdMismatch {
                ours_id,
                theirs: Some(theirs),
                ..
            } = &a
            else {
                panic!("{a:?}")
            };
            assert_eq!(*ours_id, a_id);
            assert_eq!(theirs, d_hs.handshake_string());
            assert!(d.to_string().contains("--connect-id"), "{d}");
        }
    }

    #[tokio::test]
    async fn rendering_backend_mismatch_is_code_4_on_both_sides() {
        let d_hs = hs().rendering_backend("egl").build().unwrap();
        let a_hs = ParaViewHandshake::default();
        let (d, a) = ours_vs_ours(duplex_pair(), &d_hs, &a_hs).await;
        assert!(matches!(
            paraview_error(d),
            ParaViewError::RenderingBackendMismatch { theirs: None, .. }
        ));
        let a = paraview_error(a);
        assert_eq!(a.code(), Some(ErrorCode::DifferentRenderingBackends));
        assert!(
            a.to_string().contains("paraview-5.11.renderingbackend.egl"),
            "{a}"
        );
    }

    #[tokio::test]
    async fn negative_connect_id_mismatch_is_code_5_as_paraview_cannot_parse_it() {
        let d_hs = hs().connect_id(-7).build().unwrap();
        let a_hs = hs().connect_id(7).build().unwrap();
        let (d, a) = ours_vs_ours(duplex_pair(), &d_hs, &a_hs).await;
        assert!(matches!(
            paraview_error(d),
            ParaViewError::Unparsable { theirs: None, .. }
        ));
        assert!(matches!(
            paraview_error(a),
            ParaViewError::Unparsable {
                theirs: Some(_),
                ..
            }
        ));
        // Equal negative ids still connect: the strings match byte for byte.
        let (d, a) = ours_vs_ours(duplex_pair(), &d_hs, &d_hs).await;
        assert_eq!(d.unwrap().connect_id, u64::from((-7i32) as u32));
        a.unwrap();
    }

    #[tokio::test]
    async fn hash_mismatch_names_both_hashes_and_their_builds() {
        let d_hs = hs()
            .vtk_hash(VtkHash::UPSTREAM_PARAVIEW_5_11)
            .build()
            .unwrap();
        let a_hs = ParaViewHandshake::default();
        let (d, a) = ours_vs_ours(tcp_pair().await, &d_hs, &a_hs).await;
        let d = paraview_error(d);
        let a = paraview_error(a);
        assert_eq!(
            d,
            ParaViewError::HashMismatch {
                ours: VtkHash::UPSTREAM_PARAVIEW_5_11,
                theirs: VtkHash::DEBIAN_12_PARAVIEW_5_11.to_string()
            }
        );
        assert_eq!(
            a,
            ParaViewError::HashMismatch {
                ours: VtkHash::DEBIAN_12_PARAVIEW_5_11,
                theirs: VtkHash::UPSTREAM_PARAVIEW_5_11.to_string()
            }
        );
        let message = a.to_string();
        assert!(
            message
                .contains("5e7a24e1e7033d8c49830a3775623523 (Debian 12's paraview 5.11 uses it)"),
            "{message}"
        );
        assert!(
            message.contains("86f3e537c2131aaeb456f77748ab346b (upstream ParaView 5.11 uses it)"),
            "{message}"
        );
    }

    // --- hand-written peers --------------------------------------------------------------

    /// The bytes of the research notes (§3.2–3.3), little-endian, from a dialler with
    /// connect id 4242 — checked against a recording of what our dialler sends.
    #[tokio::test]
    async fn dialler_sends_exactly_the_documented_bytes() {
        let string = b"paraview-5.11.connect_id.4242.renderingbackend.opengl2\0";
        let unhex = |hex: &str| -> Vec<u8> {
            hex.split_whitespace()
                .map(|b| u8::from_str_radix(b, 16).unwrap())
                .collect()
        };
        let mut expected: Vec<u8> = Vec::new();
        expected.extend(unhex("3c 3c 3c 3c  01 00 00 00  00"));
        expected.extend(unhex("3e 3e 3e 3e  04 00 00 00  64 00 00 00"));
        expected.extend(unhex("3f 3f 3f 3f  21 00 00 00"));
        expected.extend_from_slice(b"5e7a24e1e7033d8c49830a3775623523\0");
        expected.extend(unhex("3d 3d 3d 3d  04 00 00 00  01 00 00 00"));
        expected.extend(unhex("97 86 01 00  04 00 00 00"));
        expected.extend_from_slice(&(string.len() as i32).to_le_bytes());
        expected.extend(unhex("97 86 01 00"));
        expected.extend_from_slice(&(string.len() as i32).to_le_bytes());
        expected.extend_from_slice(string);

        let hs = hs().connect_id(4242).build().unwrap();
        let (ours, theirs) = duplex_pair();
        let peer = async move {
            let mut script = Script::new(theirs, ByteOrder::Little);
            let mut recorded = Vec::new();
            for (tag, reply) in [
                (ENDIAN_TAG, vec![0u8]),
                (VERSION_TAG, 100i32.to_le_bytes().to_vec()),
                (
                    HASH_TAG,
                    VtkHash::DEBIAN_12_PARAVIEW_5_11.to_wire().to_vec(),
                ),
                (ID_TYPE_SIZE_TAG, 1i32.to_le_bytes().to_vec()),
            ] {
                let payload = script.recv(tag).await;
                recorded.extend(Script::<DuplexStream>::frame(
                    ByteOrder::Little,
                    tag,
                    &payload,
                ));
                script.send(tag, &reply).await;
            }
            for _ in 0..2 {
                let payload = script.recv(STRING_TAG).await;
                recorded.extend(Script::<DuplexStream>::frame(
                    ByteOrder::Little,
                    STRING_TAG,
                    &payload,
                ));
            }
            // The verdict ParaView sends: tag 99990, length 4, code 0.
            script
                .stream
                .write_all(&[0x96, 0x86, 0x01, 0x00, 4, 0, 0, 0, 0, 0, 0, 0])
                .await
                .unwrap();
            recorded
        };
        let (peer_info, recorded) = tokio::join!(dial_with(&hs, ours), peer);
        assert_eq!(peer_info.unwrap().connect_id, 4242);
        assert_eq!(recorded, expected);
    }

    #[tokio::test]
    async fn acceptor_swaps_a_big_endian_dialler() {
        let hs = hs().connect_id(0x0102_0304).build().unwrap();
        let (ours, theirs) = duplex_pair();
        let peer = async move {
            let mut script = Script::new(theirs, ByteOrder::Big);
            // Prove the peer really sends big-endian: the endian frame's length is 00 00 00 01.
            assert_eq!(
                Script::<DuplexStream>::frame(ByteOrder::Big, ENDIAN_TAG, &[1]),
                [0x3c, 0x3c, 0x3c, 0x3c, 0, 0, 0, 1, 1]
            );
            script
                .vtk_dialler_half(VtkHash::DEBIAN_12_PARAVIEW_5_11)
                .await;
            let string = format!("{}\0", hs_string(0x0102_0304));
            script.send_string(string.as_bytes()).await
        };
        let (peer_info, verdict) = tokio::join!(accept_with(&hs, ours), peer);
        assert_eq!(peer_info.unwrap().connect_id, 0x0102_0304);
        assert_eq!(verdict, 0);
    }

    fn hs_string(connect_id: i32) -> String {
        hs().connect_id(connect_id)
            .build()
            .unwrap()
            .handshake_string()
            .to_owned()
    }

    #[tokio::test]
    async fn dialler_swaps_a_big_endian_acceptor() {
        let hs = ParaViewHandshake::default();
        for verdict in [0, 3] {
            let (ours, theirs) = duplex_pair();
            let peer = async move {
                let mut script = Script::new(theirs, ByteOrder::Big);
                script
                    .vtk_acceptor_half(VtkHash::DEBIAN_12_PARAVIEW_5_11)
                    .await;
                let size = script.recv_i32(STRING_TAG).await;
                let string = script.recv(STRING_TAG).await;
                assert_eq!(size as usize, string.len());
                assert_eq!(string, b"paraview-5.11.renderingbackend.opengl2\0");
                script.send_i32(VERDICT_TAG, verdict).await;
            };
            let (peer_info, ()) = tokio::join!(dial_with(&hs, ours), peer);
            match verdict {
                0 => assert_eq!(peer_info.unwrap().protocol, 511),
                _ => assert_eq!(
                    paraview_error(peer_info).code(),
                    Some(ErrorCode::DifferentConnectIds)
                ),
            }
        }
    }

    #[tokio::test]
    async fn dialler_reports_every_code_it_can_be_answered() {
        let hs = ParaViewHandshake::default();
        for verdict in [1, 2, 3, 4, 5, 42, -1] {
            let (ours, theirs) = duplex_pair();
            let peer = async move {
                let mut script = Script::new(theirs, ByteOrder::Little);
                script
                    .vtk_acceptor_half(VtkHash::DEBIAN_12_PARAVIEW_5_11)
                    .await;
                script.recv(STRING_TAG).await;
                script.recv(STRING_TAG).await;
                script.send_i32(VERDICT_TAG, verdict).await;
            };
            let (result, ()) = tokio::join!(dial_with(&hs, ours), peer);
            let error = paraview_error(result);
            match ErrorCode::from_i32(verdict) {
                Some(code) => assert_eq!(error.code(), Some(code), "{error}"),
                None => assert_eq!(error, ParaViewError::UnknownCode(verdict)),
            }
            if verdict == 1 {
                assert!(matches!(error, ParaViewError::CommunicatorMismatch { .. }));
            }
        }
    }

    #[tokio::test]
    async fn acceptor_answers_code_5_to_an_unparsable_string() {
        let hs = ParaViewHandshake::default();
        for (size, string) in [(6, &b"hello\0"[..]), (0, &b""[..]), (-3, &b""[..])] {
            let (ours, theirs) = duplex_pair();
            let peer = async move {
                let mut script = Script::new(theirs, ByteOrder::Little);
                script
                    .vtk_dialler_half(VtkHash::DEBIAN_12_PARAVIEW_5_11)
                    .await;
                script.send_i32(STRING_TAG, size).await;
                if size > 0 {
                    script.send(STRING_TAG, string).await;
                }
                script.recv_i32(VERDICT_TAG).await
            };
            let (result, verdict) = tokio::join!(accept_with(&hs, ours), peer);
            assert_eq!(verdict, 5);
            let error = paraview_error(result);
            let expected =
                String::from_utf8_lossy(string.strip_suffix(b"\0").unwrap_or(string)).into_owned();
            assert_eq!(
                error,
                ParaViewError::Unparsable {
                    ours: hs.handshake_string().into(),
                    theirs: Some(expected)
                }
            );
        }
    }

    #[tokio::test]
    async fn acceptor_reads_the_string_as_a_c_string() {
        let hs = ParaViewHandshake::default();
        let (ours, theirs) = duplex_pair();
        let peer = async move {
            let mut script = Script::new(theirs, ByteOrder::Little);
            script
                .vtk_dialler_half(VtkHash::DEBIAN_12_PARAVIEW_5_11)
                .await;
            script
                .send_string(b"paraview-5.11.renderingbackend.opengl2\0trailing junk")
                .await
        };
        let (result, verdict) = tokio::join!(accept_with(&hs, ours), peer);
        assert_eq!(verdict, 0);
        result.unwrap();
    }

    #[tokio::test]
    async fn vtk_version_mismatch_is_reported_by_both_halves() {
        let hs = ParaViewHandshake::default();
        // A dialler announcing version 99: we still answer 100, so it learns why, then fail.
        let (ours, theirs) = duplex_pair();
        let peer = async move {
            let mut script = Script::new(theirs, ByteOrder::Little);
            script.send(ENDIAN_TAG, &[0]).await;
            script.recv(ENDIAN_TAG).await;
            script.send_i32(VERSION_TAG, 99).await;
            script.recv_i32(VERSION_TAG).await
        };
        let (result, answered) = tokio::join!(accept_with(&hs, ours), peer);
        assert_eq!(answered, 100);
        assert_eq!(
            paraview_error(result),
            ParaViewError::VtkVersionMismatch {
                ours: 100,
                theirs: 99
            }
        );

        // An acceptor answering 101.
        let (ours, theirs) = duplex_pair();
        let peer = async move {
            let mut script = Script::new(theirs, ByteOrder::Little);
            script.recv(ENDIAN_TAG).await;
            script.send(ENDIAN_TAG, &[0]).await;
            script.recv_i32(VERSION_TAG).await;
            script.send_i32(VERSION_TAG, 101).await;
            script
        };
        let (result, _script) = tokio::join!(dial_with(&hs, ours), peer);
        let error = paraview_error(result);
        assert_eq!(
            error,
            ParaViewError::VtkVersionMismatch {
                ours: 100,
                theirs: 101
            }
        );
        assert!(error.to_string().contains("version mismatch"), "{error}");
    }

    #[tokio::test]
    async fn a_non_hex_hash_is_shown_escaped() {
        let hs = ParaViewHandshake::default();
        let (ours, theirs) = duplex_pair();
        let peer = async move {
            let mut script = Script::new(theirs, ByteOrder::Little);
            script.send(ENDIAN_TAG, &[0]).await;
            script.recv(ENDIAN_TAG).await;
            script.send_i32(VERSION_TAG, 100).await;
            script.recv(VERSION_TAG).await;
            let mut hash = [b'Z'; 33];
            hash[0] = 0x07;
            script.send(HASH_TAG, &hash).await;
            script.recv(HASH_TAG).await
        };
        let (result, _) = tokio::join!(accept_with(&hs, ours), peer);
        let ParaViewError::HashMismatch { theirs, .. } = paraview_error(result) else {
            panic!()
        };
        assert!(theirs.starts_with("\\x07ZZZ"), "{theirs}");
    }

    // --- hostile and broken peers --------------------------------------------------------

    /// What the acceptor says when the first bytes are another protocol.
    async fn acceptor_garbage(first: &'static [u8]) -> String {
        let hs = ParaViewHandshake::default();
        let (mut d_end, mut a_end) = tcp_pair().await;
        d_end.write_all(first).await.unwrap();
        match perform(&hs, &mut a_end, ctx(Side::Acceptor), DEADLINE).await {
            Err(HandshakeError::Garbage {
                expected: "paraview",
                detail,
            }) => detail,
            other => panic!("expected garbage, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn acceptor_names_a_tls_client_hello() {
        let detail =
            acceptor_garbage(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]).await;
        assert!(
            detail.contains("16 03 01 02") && detail.contains("TLS ClientHello"),
            "{detail}"
        );
    }

    #[tokio::test]
    async fn acceptor_names_the_native_handshake() {
        let detail = acceptor_garbage(b"PVLN\x00\x01\x00\x00").await;
        assert!(detail.contains("native handshake"), "{detail}");
    }

    #[tokio::test]
    async fn acceptor_rejects_random_bytes() {
        let detail = acceptor_garbage(b"\x00\xff\x13\x37garbage").await;
        assert!(detail.contains("unrecognised"), "{detail}");
    }

    #[tokio::test]
    async fn dialler_names_what_answered_instead() {
        let hs = ParaViewHandshake::default();
        for (reply, named) in [
            (&b"SSH-2.0-OpenSSH_9.2p1\r\n"[..], "SSH server"),
            (&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46][..], "TLS alert"),
        ] {
            let (mut d_end, mut a_end) = tcp_pair().await;
            a_end.write_all(reply).await.unwrap();
            let result = perform(&hs, &mut d_end, ctx(Side::Dialler), DEADLINE).await;
            let Err(HandshakeError::Garbage { detail, .. }) = result else {
                panic!("expected garbage, got {result:?}")
            };
            assert!(detail.contains(named), "{detail}");
        }
    }

    #[tokio::test]
    async fn a_bad_endian_flag_or_length_is_malformed() {
        let hs = ParaViewHandshake::default();
        let (mut d_end, a_end) = duplex_pair();
        d_end
            .write_all(&[0x3c, 0x3c, 0x3c, 0x3c, 1, 0, 0, 0, 7])
            .await
            .unwrap();
        assert_eq!(
            paraview_error(accept_with(&hs, a_end).await),
            ParaViewError::BadEndianFlag(7)
        );

        let (mut d_end, a_end) = duplex_pair();
        d_end
            .write_all(&[0x3c, 0x3c, 0x3c, 0x3c, 2, 0, 0, 0, 0, 0])
            .await
            .unwrap();
        assert_eq!(
            paraview_error(accept_with(&hs, a_end).await),
            ParaViewError::BadLength {
                step: Step::Endian,
                expected: 1,
                got: 2
            }
        );
    }

    #[tokio::test]
    async fn a_wrong_tag_or_length_later_is_malformed() {
        let hs = ParaViewHandshake::default();
        // The hash where the version belongs.
        let (ours, theirs) = duplex_pair();
        let peer = async move {
            let mut script = Script::new(theirs, ByteOrder::Little);
            script.send(ENDIAN_TAG, &[0]).await;
            script.recv(ENDIAN_TAG).await;
            script
                .send(HASH_TAG, &VtkHash::DEBIAN_12_PARAVIEW_5_11.to_wire())
                .await;
            script
        };
        let (result, _script) = tokio::join!(accept_with(&hs, ours), peer);
        assert_eq!(
            paraview_error(result),
            ParaViewError::UnexpectedTag {
                step: Step::Version,
                expected: VERSION_TAG,
                got: HASH_TAG
            }
        );

        // A version frame announcing 2 GB.
        let (ours, theirs) = duplex_pair();
        let peer = async move {
            let mut script = Script::new(theirs, ByteOrder::Little);
            script.send(ENDIAN_TAG, &[0]).await;
            script.recv(ENDIAN_TAG).await;
            script
                .stream
                .write_all(&[0x3e, 0x3e, 0x3e, 0x3e, 0xff, 0xff, 0xff, 0x7f])
                .await
                .unwrap();
            script
        };
        let (result, _script) = tokio::join!(accept_with(&hs, ours), peer);
        let error = paraview_error(result);
        assert_eq!(
            error,
            ParaViewError::BadLength {
                step: Step::Version,
                expected: 4,
                got: i64::from(i32::MAX)
            }
        );
        assert!(
            error.to_string().contains("communicator version"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_oversized_string_is_refused_before_it_is_read() {
        for (limit, size) in [
            (DEFAULT_MAX_STRING_LEN, 1_000_000),
            (DEFAULT_MAX_STRING_LEN, i32::MAX),
            (16, 17),
        ] {
            let hs = hs().max_string_len(limit).build().unwrap();
            let (ours, theirs) = duplex_pair();
            let peer = async move {
                let mut script = Script::new(theirs, ByteOrder::Little);
                script
                    .vtk_dialler_half(VtkHash::DEBIAN_12_PARAVIEW_5_11)
                    .await;
                script.send_i32(STRING_TAG, size).await;
                script
            };
            let (result, _script) = tokio::join!(accept_with(&hs, ours), peer);
            match result {
                Err(HandshakeError::Oversized {
                    size: got,
                    limit: l,
                }) => {
                    assert_eq!((got, l), (size as usize, limit));
                }
                other => panic!("expected oversized, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_string_frame_that_disagrees_with_its_size_is_malformed() {
        let hs = ParaViewHandshake::default();
        let (ours, theirs) = duplex_pair();
        let peer = async move {
            let mut script = Script::new(theirs, ByteOrder::Little);
            script
                .vtk_dialler_half(VtkHash::DEBIAN_12_PARAVIEW_5_11)
                .await;
            script.send_i32(STRING_TAG, 10).await;
            script.send(STRING_TAG, &[b'x'; 20]).await;
            script
        };
        let (result, _script) = tokio::join!(accept_with(&hs, ours), peer);
        assert_eq!(
            paraview_error(result),
            ParaViewError::BadLength {
                step: Step::String,
                expected: 10,
                got: 20
            }
        );
    }

    #[tokio::test]
    async fn a_peer_closing_midway_is_closed_on_both_sides() {
        let hs = ParaViewHandshake::default();
        // A dialler that stops after the version and closes (mid-frame, too).
        for cut in [0, 9, 17, 20] {
            let (mut d_end, mut a_end) = tcp_pair().await;
            let mut bytes = Script::<TcpStream>::frame(ByteOrder::Little, ENDIAN_TAG, &[0]);
            bytes.extend(Script::<TcpStream>::frame(
                ByteOrder::Little,
                VERSION_TAG,
                &100i32.to_le_bytes(),
            ));
            bytes.truncate(cut);
            d_end.write_all(&bytes).await.unwrap();
            drop(d_end);
            let result = perform(&hs, &mut a_end, ctx(Side::Acceptor), DEADLINE).await;
            assert!(
                matches!(result, Err(HandshakeError::Closed("paraview"))),
                "cut {cut}: {result:?}"
            );
        }
        // An acceptor that answers the byte order and then leaves.
        let (ours, theirs) = duplex_pair();
        let peer = async move {
            let mut script = Script::new(theirs, ByteOrder::Little);
            script.recv(ENDIAN_TAG).await;
            script.send(ENDIAN_TAG, &[0]).await;
        };
        let (result, ()) = tokio::join!(dial_with(&hs, ours), peer);
        assert!(
            matches!(result, Err(HandshakeError::Closed("paraview"))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_peer_sending_one_byte_a_second_hits_the_deadline() {
        let hs = ParaViewHandshake::default();
        let (mut d_end, mut a_end) = tcp_pair().await;
        let mut bytes = Script::<TcpStream>::frame(ByteOrder::Little, ENDIAN_TAG, &[0]);
        bytes.extend(Script::<TcpStream>::frame(
            ByteOrder::Little,
            VERSION_TAG,
            &100i32.to_le_bytes(),
        ));
        // The trickling peer: a valid handshake, one byte a second.
        let trickle = tokio::spawn(async move {
            for byte in bytes {
                d_end.write_all(&[byte]).await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let deadline = Duration::from_millis(2500);
        let started = Instant::now();
        let result = perform(&hs, &mut a_end, ctx(Side::Acceptor), deadline).await;
        let elapsed = started.elapsed();
        assert!(
            matches!(result, Err(HandshakeError::DeadlinePassed { handshake: "paraview", deadline: d }) if d == deadline),
            "{result:?}"
        );
        assert!(
            elapsed >= deadline && elapsed < deadline + Duration::from_secs(2),
            "{elapsed:?}"
        );
        trickle.abort();
    }
}
