//! The native handshake: version, role, connect id, and mutual token authentication.
//!
//! Both ends hold the same one-time [`Token`], handed out over the launch channel. The token
//! itself never crosses the connection; each side instead proves it knows the token by
//! returning an HMAC-SHA256 over both sides' fresh nonces. The exchange, with D the side that
//! dialled and A the side that accepted:
//!
//! ```text
//! D -> A  HELLO  versions min..max, role, connect id, nonce_D (32 random bytes)
//! A -> D  HELLO  chosen version, role, connect id, nonce_A     (or REJECT with the reason)
//! D -> A  PROOF  HMAC(token, "…dialler"  | SHA-256(both HELLOs) | TLS binding)
//!         A checks the proof (else REJECT token), then commits to the connection
//!         (else REJECT busy: it takes one connection and already has it)
//! A -> D  PROOF  HMAC(token, "…acceptor" | SHA-256(both HELLOs) | TLS binding)
//! ```
//!
//! Either side may answer a message with REJECT instead, and then closes. Its payload is a
//! reason byte and the reason's details:
//!
//! | reason | byte | details | sent by |
//! | --- | --- | --- | --- |
//! | version | 1 | the sender's min and max version, u16 each | A after D's HELLO, D after A's |
//! | role | 2 | none | A after D's HELLO, D after A's |
//! | connect id | 3 | the sender's connect id, u64 | A after D's HELLO, D after A's |
//! | token | 4 | none | A after D's PROOF, D after A's |
//! | busy | 5 | none | A after D's PROOF |
//!
//! Why this shape:
//! - Each proof covers the *other* side's fresh nonce, so a recorded proof is useless later
//!   (no replay), and the two proofs use different labels, so a proof cannot be reflected
//!   back at its sender.
//! - The proofs cover both HELLOs whole, so a man in the middle cannot change a version,
//!   role or connect id without breaking authentication.
//! - With TLS, both sides mix in keying material exported from their TLS session. A party
//!   that terminates TLS on each side and relays the plaintext has two different sessions,
//!   so the proofs do not match and the relay is detected.
//! - D proves first; A answers only after checking D's proof, so an unauthenticated dialler
//!   learns nothing it could use offline about the token from A's answer.
//! - A's PROOF is what tells D it is accepted, so A commits to the connection before sending
//!   it ([`HandshakeContext::admit`]). An acceptor that takes one connection
//!   (single-connection mode) thus never proves itself to a dialler it will not serve: of
//!   several diallers that know the token and handshake at once, the first to get there is
//!   served and the others hear REJECT busy, instead of being told they are in and then
//!   dropped (or worse, the one told first being dropped for a later one). Only a dialler
//!   that proved it knows the token can take the place.
//!
//! **Versions.** The HELLO's version range is checked before any proof, so a peer of
//! another version hears REJECT version (and reports both ranges) instead of failing on a
//! proof it cannot compute. The version moves whenever the bytes a proof covers change:
//! - 1: the TLS binding was exported under the label `EXPORTER-pv-launch-native-handshake`.
//! - 2 (this build): the binding uses the private label [`crate::tls::EXPORTER_LABEL`]
//!   (RFC 5705 §4 reserves `EXPORTER-` labels for registered uses), and the proof labels
//!   say `v2`. A build speaks only its own version: version 1's binding label is the one
//!   this version retires.
//!
//! Every message is `PVLN` (magic), a type byte (1 HELLO, 2 PROOF, 3 REJECT), a big-endian
//! u16 length and the payload; the payload is at most [`MAX_PAYLOAD`] bytes. Anything else
//! is reported as garbage, with a guess at what the peer speaks instead (TLS, ParaView's
//! handshake, HTTP, SSH).

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    BoxFuture, Handshake, HandshakeContext, HandshakeError, PeerInfo, Role, Side, Stream,
    guess_protocol,
};
use crate::token::Token;

/// Bytes every native handshake message starts with.
pub const MAGIC: [u8; 4] = *b"PVLN";
/// The native protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 2;
/// Largest payload of a handshake message.
pub const MAX_PAYLOAD: usize = 512;

const NAME: &str = "native";
const HELLO: u8 = 1;
const PROOF: u8 = 2;
const REJECT: u8 = 3;

const LABEL_DIALLER: &[u8] = b"pv-launch native handshake v2: dialler proof";
const LABEL_ACCEPTOR: &[u8] = b"pv-launch native handshake v2: acceptor proof";

/// Reject reasons on the wire.
const REJECT_VERSION: u8 = 1;
const REJECT_ROLE: u8 = 2;
const REJECT_CONNECT_ID: u8 = 3;
const REJECT_TOKEN: u8 = 4;
const REJECT_BUSY: u8 = 5;

/// pv-launch's own handshake; see the module documentation for the exchange.
#[derive(Clone)]
pub struct NativeHandshake {
    token: Token,
    connect_id: u64,
    min_version: u16,
    max_version: u16,
}

impl std::fmt::Debug for NativeHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeHandshake")
            .field("token", &self.token)
            .field("connect_id", &self.connect_id)
            .field("versions", &(self.min_version..=self.max_version))
            .finish()
    }
}

impl NativeHandshake {
    /// A handshake authenticating with `token`, no connect id, this build's version.
    pub fn new(token: Token) -> NativeHandshake {
        NativeHandshake {
            token,
            connect_id: 0,
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
        }
    }

    /// Also require this connect id on both ends (0 = none), as ParaView's `--connect-id`.
    pub fn with_connect_id(mut self, connect_id: u64) -> NativeHandshake {
        self.connect_id = connect_id;
        self
    }

    /// Speak the protocol versions `min..=max` (for compatibility tests and future builds).
    pub fn with_versions(mut self, min: u16, max: u16) -> NativeHandshake {
        assert!(min <= max, "an empty version range");
        self.min_version = min;
        self.max_version = max;
        self
    }
}

/// The fields of a HELLO.
#[derive(Debug)]
struct Hello {
    min: u16,
    max: u16,
    role: Role,
    connect_id: u64,
    nonce: [u8; 32],
}

impl Hello {
    fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(45);
        p.extend_from_slice(&self.min.to_be_bytes());
        p.extend_from_slice(&self.max.to_be_bytes());
        p.push(role_byte(self.role));
        p.extend_from_slice(&self.connect_id.to_be_bytes());
        p.extend_from_slice(&self.nonce);
        p
    }

    fn decode(p: &[u8]) -> Result<Hello, HandshakeError> {
        if p.len() != 45 {
            return Err(garbage(format!(
                "a HELLO of {} bytes (expected 45)",
                p.len()
            )));
        }
        let role = match p[4] {
            1 => Role::Client,
            2 => Role::Server,
            b => return Err(garbage(format!("unknown role byte {b}"))),
        };
        Ok(Hello {
            min: u16::from_be_bytes([p[0], p[1]]),
            max: u16::from_be_bytes([p[2], p[3]]),
            role,
            connect_id: u64::from_be_bytes(p[5..13].try_into().expect("8 bytes")),
            nonce: p[13..45].try_into().expect("32 bytes"),
        })
    }
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Client => 1,
        Role::Server => 2,
    }
}

fn garbage(detail: String) -> HandshakeError {
    HandshakeError::Garbage {
        expected: NAME,
        detail,
    }
}

/// Write one message.
async fn send(stream: &mut dyn Stream, kind: u8, payload: &[u8]) -> Result<(), HandshakeError> {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    let mut msg = Vec::with_capacity(7 + payload.len());
    msg.extend_from_slice(&MAGIC);
    msg.push(kind);
    msg.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    msg.extend_from_slice(payload);
    stream.write_all(&msg).await?;
    stream.flush().await?;
    Ok(())
}

/// Read one message; a REJECT becomes the matching error here, so callers see only the
/// message they expect.
async fn receive(
    stream: &mut dyn Stream,
    expect: u8,
    ours: &NativeHandshake,
    our_role: Role,
) -> Result<Vec<u8>, HandshakeError> {
    let mut header = [0u8; 7];
    read_exact(stream, &mut header).await?;
    if header[..4] != MAGIC {
        return Err(garbage(format!(
            "first bytes {:02x?}; {}",
            &header[..4],
            guess_protocol(&header)
        )));
    }
    let len = usize::from(u16::from_be_bytes([header[5], header[6]]));
    if len > MAX_PAYLOAD {
        return Err(HandshakeError::Oversized {
            size: len,
            limit: MAX_PAYLOAD,
        });
    }
    let mut payload = vec![0u8; len];
    read_exact(stream, &mut payload).await?;
    match header[4] {
        k if k == expect => Ok(payload),
        REJECT => Err(decode_reject(&payload, ours, our_role)),
        k => Err(garbage(format!("message type {k} where {expect} was due"))),
    }
}

async fn read_exact(stream: &mut dyn Stream, buf: &mut [u8]) -> Result<(), HandshakeError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(HandshakeError::Closed(NAME))
        }
        Err(e) => Err(e.into()),
    }
}

/// Tell the peer why we give up (best effort: it may be gone already), then return `err`.
async fn reject(
    stream: &mut dyn Stream,
    code: u8,
    detail: &[u8],
    err: HandshakeError,
) -> HandshakeError {
    let mut p = vec![code];
    p.extend_from_slice(detail);
    let _ = send(stream, REJECT, &p).await;
    err
}

/// Turn a peer's REJECT into the error it describes, from our point of view.
fn decode_reject(p: &[u8], ours: &NativeHandshake, our_role: Role) -> HandshakeError {
    match (p.first().copied(), &p[p.len().min(1)..]) {
        (Some(REJECT_VERSION), [a, b, c, d]) => HandshakeError::VersionMismatch {
            ours_min: ours.min_version,
            ours_max: ours.max_version,
            theirs_min: u16::from_be_bytes([*a, *b]),
            theirs_max: u16::from_be_bytes([*c, *d]),
        },
        (Some(REJECT_ROLE), _) => HandshakeError::WrongRole {
            ours: our_role,
            theirs: our_role,
        },
        (Some(REJECT_CONNECT_ID), rest) if rest.len() == 8 => HandshakeError::ConnectIdMismatch {
            ours: ours.connect_id,
            theirs: u64::from_be_bytes(rest.try_into().expect("8 bytes")),
        },
        (Some(REJECT_TOKEN), _) => {
            HandshakeError::WrongToken("the peer rejected our proof: the tokens differ")
        }
        (Some(REJECT_BUSY), _) => HandshakeError::Busy,
        _ => HandshakeError::Rejected(format!("unrecognised reject message {p:02x?}")),
    }
}

impl NativeHandshake {
    fn hello(&self, role: Role, chosen: Option<u16>) -> Hello {
        let mut nonce = [0u8; 32];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the operating system's random number generator failed");
        Hello {
            min: chosen.unwrap_or(self.min_version),
            max: chosen.unwrap_or(self.max_version),
            role,
            connect_id: self.connect_id,
            nonce,
        }
    }

    /// The message a proof signs: label | SHA-256(transcript) | binding length | binding.
    fn proof_message(label: &[u8], transcript: &[u8], binding: Option<&[u8]>) -> Vec<u8> {
        let digest = ring::digest::digest(&ring::digest::SHA256, transcript);
        let binding = binding.unwrap_or(&[]);
        let mut msg = Vec::with_capacity(label.len() + 32 + 2 + binding.len());
        msg.extend_from_slice(label);
        msg.extend_from_slice(digest.as_ref());
        msg.extend_from_slice(&(binding.len() as u16).to_be_bytes());
        msg.extend_from_slice(binding);
        msg
    }

    fn key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, self.token.as_bytes())
    }

    /// HMAC-SHA256 keyed with the token over [`Self::proof_message`].
    fn proof(&self, label: &[u8], transcript: &[u8], binding: Option<&[u8]>) -> hmac::Tag {
        hmac::sign(
            &self.key(),
            &Self::proof_message(label, transcript, binding),
        )
    }

    /// Check a peer's proof (ring compares the tags in constant time).
    fn verify(&self, label: &[u8], transcript: &[u8], binding: Option<&[u8]>, tag: &[u8]) -> bool {
        hmac::verify(
            &self.key(),
            &Self::proof_message(label, transcript, binding),
            tag,
        )
        .is_ok()
    }

    /// Check the peer's HELLO: a usable version, the complementary role, the same connect
    /// id. On a mismatch, tell the peer why (REJECT) and return the matching error.
    async fn check_hello(
        &self,
        stream: &mut dyn Stream,
        theirs: &Hello,
        our_role: Role,
        version_ok: bool,
    ) -> Result<(), HandshakeError> {
        if !version_ok {
            let detail = [
                self.min_version.to_be_bytes(),
                self.max_version.to_be_bytes(),
            ]
            .concat();
            let err = HandshakeError::VersionMismatch {
                ours_min: self.min_version,
                ours_max: self.max_version,
                theirs_min: theirs.min,
                theirs_max: theirs.max,
            };
            return Err(reject(stream, REJECT_VERSION, &detail, err).await);
        }
        if theirs.role != our_role.peer() {
            let err = HandshakeError::WrongRole {
                ours: our_role,
                theirs: theirs.role,
            };
            return Err(reject(stream, REJECT_ROLE, &[], err).await);
        }
        if theirs.connect_id != self.connect_id {
            let err = HandshakeError::ConnectIdMismatch {
                ours: self.connect_id,
                theirs: theirs.connect_id,
            };
            let detail = self.connect_id.to_be_bytes();
            return Err(reject(stream, REJECT_CONNECT_ID, &detail, err).await);
        }
        Ok(())
    }

    async fn dial(
        &self,
        stream: &mut dyn Stream,
        ctx: HandshakeContext<'_>,
    ) -> Result<PeerInfo, HandshakeError> {
        // 1. Offer our versions, role, connect id and a fresh nonce.
        let ours = self.hello(ctx.role, None).encode();
        send(stream, HELLO, &ours).await?;

        // 2. The acceptor picks a version or rejects us.
        let theirs_bytes = receive(stream, HELLO, self, ctx.role).await?;
        let theirs = Hello::decode(&theirs_bytes)?;
        let version_ok =
            theirs.min == theirs.max && (self.min_version..=self.max_version).contains(&theirs.min);
        self.check_hello(stream, &theirs, ctx.role, version_ok)
            .await?;

        // 3. Prove we know the token, over both HELLOs and the TLS binding.
        let transcript = [ours.as_slice(), theirs_bytes.as_slice()].concat();
        let tag = self.proof(LABEL_DIALLER, &transcript, ctx.tls_binding);
        send(stream, PROOF, tag.as_ref()).await?;

        // 4. The acceptor proves it knows the token too (or tells us ours was wrong).
        let their_tag = receive(stream, PROOF, self, ctx.role).await?;
        if !self.verify(LABEL_ACCEPTOR, &transcript, ctx.tls_binding, &their_tag) {
            let err = HandshakeError::WrongToken(
                "the peer could not prove it knows the token (wrong server, or a relay in between)",
            );
            return Err(reject(stream, REJECT_TOKEN, &[], err).await);
        }
        Ok(PeerInfo {
            handshake: NAME,
            protocol: u32::from(theirs.min),
            role: theirs.role,
            connect_id: self.connect_id,
        })
    }

    async fn accept(
        &self,
        stream: &mut dyn Stream,
        ctx: HandshakeContext<'_>,
    ) -> Result<PeerInfo, HandshakeError> {
        // 1. The dialler's offer.
        let theirs_bytes = receive(stream, HELLO, self, ctx.role).await?;
        let theirs = Hello::decode(&theirs_bytes)?;

        // 2. Check it, then answer with the highest version both speak.
        let low = theirs.min.max(self.min_version);
        let high = theirs.max.min(self.max_version);
        self.check_hello(stream, &theirs, ctx.role, low <= high)
            .await?;
        let ours = self.hello(ctx.role, Some(high)).encode();
        send(stream, HELLO, &ours).await?;

        // 3. The dialler must prove it knows the token before we prove anything.
        let transcript = [theirs_bytes.as_slice(), ours.as_slice()].concat();
        let their_tag = receive(stream, PROOF, self, ctx.role).await?;
        if !self.verify(LABEL_DIALLER, &transcript, ctx.tls_binding, &their_tag) {
            let err = HandshakeError::WrongToken(
                "the peer's proof does not match our token (wrong token, or a relay in between)",
            );
            return Err(reject(stream, REJECT_TOKEN, &[], err).await);
        }

        // 4. Our proof tells the dialler it is in, so commit to this connection first: an
        //    acceptor that takes one connection and already has it turns the dialler away
        //    here rather than prove itself to a peer it will not serve.
        if !ctx.admit() {
            return Err(reject(stream, REJECT_BUSY, &[], HandshakeError::Busy).await);
        }

        // 5. Our own proof.
        let tag = self.proof(LABEL_ACCEPTOR, &transcript, ctx.tls_binding);
        send(stream, PROOF, tag.as_ref()).await?;
        Ok(PeerInfo {
            handshake: NAME,
            protocol: u32::from(high),
            role: theirs.role,
            connect_id: self.connect_id,
        })
    }
}

impl Handshake for NativeHandshake {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run<'a>(
        &'a self,
        stream: &'a mut dyn Stream,
        ctx: HandshakeContext<'a>,
    ) -> BoxFuture<'a, Result<PeerInfo, HandshakeError>> {
        Box::pin(async move {
            match ctx.side {
                Side::Dialler => self.dial(stream, ctx).await,
                Side::Acceptor => self.accept(stream, ctx).await,
            }
        })
    }
}
