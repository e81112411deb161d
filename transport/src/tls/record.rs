//! TLS 1.3 application data with one copy each way, on top of rustls's handshake.
//!
//! rustls runs the handshake through its unbuffered API, checks certificates with our
//! verifiers, and afterwards keeps the two jobs a record layer cannot do alone: deriving the
//! next traffic secrets on a key update, and storing the session tickets a server sends. That
//! is rustls's `kernel` API, the one made for kernel TLS; this kernel has no TLS module
//! (`TCP_ULP "tls"` gives `ENOENT`), so the record layer is this module, in user space.
//!
//! Why not rustls's own buffered stream: it copies every received byte three times (into
//! its record buffer, out into a fresh allocation per record, then into the reader's
//! buffer) and reads at most 4 KiB per call. Here a received record is decrypted where it
//! landed and the plaintext is copied once, into the caller's buffer; a sent record is
//! copied once, next to its header, and sealed in place. Many records move per system call.
//!
//! What the record layer does, per RFC 8446 §5: records of type `application_data` only,
//! at most 2^14 + 256 bytes of ciphertext and 2^14 of plaintext; the nonce is the
//! per-direction IV XOR the record's sequence number; the header is the additional data;
//! padding is stripped and the inner content type read. `close_notify` ends the stream;
//! other alerts are errors; `KeyUpdate` (§4.6.3) switches the receiving key and, when asked,
//! answers with one of ours; a client passes `NewSessionTicket` to rustls. Before the
//! sending key reaches the suite's confidentiality limit, it is updated. A peer that ends
//! the connection without `close_notify` gives an `UnexpectedEof` error, as with rustls.
//!
//! The TLS exporter (RFC 8446 §7.5), which binds the native handshake to the session, is
//! computed here from the exporter secret rustls hands to the connection's key log: an
//! in-memory capture of that one secret, made for this connection only, never written out.

use std::io;
use std::ops::DerefMut;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::{digest, hkdf};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, UnbufferedConnectionCommon, UnbufferedStatus,
};
use rustls::{CipherSuite, ConnectionTrafficSecrets, ExtractedSecrets, KeyLog};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

const HEADER: usize = 5;
const TAG: usize = 16;
/// Largest plaintext in one record.
const MAX_PLAINTEXT: usize = 1 << 14;
/// Largest ciphertext in one record (plaintext, content type, padding and tag).
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;

const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;

/// The receive buffer starts this small (idle connections stay small) …
const READ_MIN: usize = 4 * 1024;
/// … and doubles while reads fill it, up to this.
const READ_MAX: usize = 256 * 1024;
/// Plaintext sealed per `poll_write` call at most (16 records).
const WRITE_BATCH: usize = 16 * MAX_PLAINTEXT;
/// Update the sending key this many records before the suite's confidentiality limit.
const KEY_UPDATE_MARGIN: u64 = 1 << 16;

const EXPORTER_SECRET: &str = "EXPORTER_SECRET";

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Catches the one secret the exporter needs as rustls derives it, for one connection.
#[derive(Default)]
pub(super) struct ExporterSecret(Mutex<Option<Vec<u8>>>);

impl std::fmt::Debug for ExporterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExporterSecret(..)")
    }
}

impl KeyLog for ExporterSecret {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        if label == EXPORTER_SECRET {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(secret.to_vec());
        }
    }

    fn will_log(&self, label: &str) -> bool {
        label == EXPORTER_SECRET
    }
}

impl ExporterSecret {
    fn take(&self) -> Option<Vec<u8>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The hash of a TLS 1.3 suite, for HKDF and for the transcript of an empty context.
fn suite_hash(suite: CipherSuite) -> Option<(hkdf::Algorithm, &'static digest::Algorithm)> {
    match suite {
        CipherSuite::TLS13_AES_128_GCM_SHA256 | CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => {
            Some((hkdf::HKDF_SHA256, &digest::SHA256))
        }
        CipherSuite::TLS13_AES_256_GCM_SHA384 => Some((hkdf::HKDF_SHA384, &digest::SHA384)),
        _ => None,
    }
}

/// HKDF-Expand-Label (RFC 8446 §7.1).
fn expand_label(alg: hkdf::Algorithm, secret: &[u8], label: &[u8], context: &[u8], out: &mut [u8]) {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let length = u16::try_from(out.len())
        .expect("a short output")
        .to_be_bytes();
    let label_len = [u8::try_from(6 + label.len()).expect("a short label")];
    let context_len = [u8::try_from(context.len()).expect("a short context")];
    let info: [&[u8]; 6] = [&length, &label_len, b"tls13 ", label, &context_len, context];
    hkdf::Prk::new_less_safe(alg, secret)
        .expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("HKDF output within 255 hash lengths");
}

/// TLS-Exporter(label, no context, 32) of RFC 8446 §7.5.
fn export(suite: CipherSuite, exporter_secret: &[u8], label: &[u8]) -> io::Result<[u8; 32]> {
    let (alg, hash) = suite_hash(suite)
        .ok_or_else(|| invalid(format!("no exporter for cipher suite {suite:?}")))?;
    let empty = digest::digest(hash, b"");
    let mut derived = vec![0u8; hash.output_len()];
    expand_label(alg, exporter_secret, label, empty.as_ref(), &mut derived);
    let mut out = [0u8; 32];
    expand_label(alg, &derived, b"exporter", empty.as_ref(), &mut out);
    Ok(out)
}

/// What rustls keeps after the handshake, for either side.
pub(super) enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Client(k) => k.update_tx_secret(),
            Kernel::Server(k) => k.update_tx_secret(),
        }
    }

    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Client(k) => k.update_rx_secret(),
            Kernel::Server(k) => k.update_rx_secret(),
        }
    }

    fn confidentiality_limit(&self) -> u64 {
        let suite = match self {
            Kernel::Client(k) => k.negotiated_cipher_suite(),
            Kernel::Server(k) => k.negotiated_cipher_suite(),
        };
        match suite {
            rustls::SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            // Not reached: the handshake refuses anything but TLS 1.3.
            _ => 1 << 23,
        }
    }

    fn new_session_ticket(&mut self, payload: &[u8]) -> io::Result<()> {
        match self {
            Kernel::Client(k) => k.handle_new_session_ticket(payload).map_err(tls_error),
            Kernel::Server(_) => Err(invalid(
                "the TLS client sent a session ticket (only servers send them)",
            )),
        }
    }
}

/// One direction's key and sequence number.
struct Keys {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Keys {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> io::Result<Keys> {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(invalid("the negotiated cipher suite is not supported")),
        };
        let key = UnboundKey::new(alg, key.as_ref())
            .map_err(|_| invalid("a traffic key of the wrong length"))?;
        let iv = iv
            .as_ref()
            .try_into()
            .map_err(|_| invalid("a traffic IV of the wrong length"))?;
        Ok(Keys {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The nonce for the next record, which uses up a sequence number.
    fn next_nonce(&mut self) -> io::Result<Nonce> {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or_else(|| invalid("TLS record sequence numbers exhausted"))?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

/// Received bytes: `buf[start..end]` is read and not yet used.
#[derive(Default)]
struct RecvBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl RecvBuf {
    /// Twice the buffer's size, within [`READ_MAX`].
    fn doubled(&self) -> usize {
        (2 * self.buf.len()).min(READ_MAX)
    }

    fn pending(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// Read more from `io`, making room for at least `want` bytes from `start` on. `Ok(0)`
    /// at end of stream.
    fn poll_fill<S: AsyncRead + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.start > 0 && self.buf.len() - self.end < self.buf.len() / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        let need = (self.start + want.max(self.end - self.start + 1)).max(READ_MIN);
        if self.buf.len() < need {
            // Out of room: grow by doubling (as for a full read), or to what is needed.
            self.buf.resize(need.max(self.doubled()), 0);
        }
        let space = self.buf.len() - self.end;
        let mut fill = ReadBuf::new(&mut self.buf[self.end..]);
        ready!(Pin::new(io).poll_read(cx, &mut fill))?;
        let n = fill.filled().len();
        self.end += n;
        if n == space && self.buf.len() < READ_MAX {
            // Full: more was waiting. Grow for the next read (the data stays where it is).
            self.buf.resize(self.doubled(), 0);
        }
        Poll::Ready(Ok(n))
    }

    /// Read more during the handshake; the end of the stream is an error there.
    async fn fill_some<S: AsyncRead + Unpin>(&mut self, io: &mut S) -> io::Result<()> {
        match std::future::poll_fn(|cx| self.poll_fill(io, cx, HEADER)).await? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }
}

/// A connection in its handshake, client or server.
pub(super) trait Handshaking:
    DerefMut<Target = UnbufferedConnectionCommon<Self::Data>> + Sized
{
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error>;
}

/// The same three lines for either side, whose rustls types differ.
macro_rules! handshaking {
    ($conn:ty, $data:ty, $kernel:ident) => {
        impl Handshaking for $conn {
            type Data = $data;
            fn process<'c, 'i>(
                &'c mut self,
                incoming: &'i mut [u8],
            ) -> UnbufferedStatus<'c, 'i, Self::Data> {
                self.process_tls_records(incoming)
            }
            fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error> {
                let (secrets, kernel) = self.dangerous_into_kernel_connection()?;
                Ok((secrets, Kernel::$kernel(kernel)))
            }
        }
    };
}

handshaking!(UnbufferedClientConnection, ClientConnectionData, Client);
handshaking!(UnbufferedServerConnection, ServerConnectionData, Server);

/// Append the handshake record `e` holds to `out`.
fn encode<Data>(e: &mut EncodeTlsData<'_, Data>, out: &mut Vec<u8>) -> io::Result<()> {
    let at = out.len();
    out.resize(at + 4096, 0);
    loop {
        match e.encode(&mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(s)) => out.resize(at + s.required_size, 0),
            Err(other) => return Err(invalid(other.to_string())),
        }
    }
}

/// What the handshake loop does after one step of rustls.
enum Step {
    Again,
    Send,
    Read,
    Traffic,
    Failed(rustls::Error),
    Closed,
}

/// A finished handshake: the stream, what was negotiated and the exporter value.
pub(super) struct Established<S> {
    pub(super) stream: TlsStream<S>,
    pub(super) info: super::TlsInfo,
    pub(super) binding: [u8; 32],
}

/// Run the handshake of `conn` (client or server) over `io`, then hand the connection to
/// the record layer; `exporter` is the capture installed in `conn`'s configuration.
pub(super) async fn handshake<C: Handshaking, S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: C,
    mut io: S,
    exporter: &ExporterSecret,
    label: &[u8],
) -> io::Result<Established<S>> {
    let mut recv = RecvBuf::default();
    let mut out = Vec::new();
    // Application data that arrived with the handshake's last flight.
    let mut early = Vec::new();
    loop {
        let UnbufferedStatus { discard, state } = conn.process(recv.pending());
        let mut discard = discard;
        let step = match state {
            Err(e) => Step::Failed(e),
            Ok(ConnectionState::EncodeTlsData(mut e)) => {
                encode(&mut e, &mut out)?;
                Step::Again
            }
            Ok(ConnectionState::TransmitTlsData(t)) => {
                // The bytes are in `out` and go out before rustls is asked again.
                t.done();
                Step::Send
            }
            Ok(ConnectionState::BlockedHandshake) => Step::Read,
            Ok(ConnectionState::ReadTraffic(mut r)) => {
                let mut step = Step::Again;
                while let Some(record) = r.next_record() {
                    match record {
                        Ok(record) => {
                            early.extend_from_slice(record.payload);
                            discard += record.discard;
                        }
                        Err(e) => {
                            step = Step::Failed(e);
                            break;
                        }
                    }
                }
                step
            }
            Ok(ConnectionState::WriteTraffic(_)) => Step::Traffic,
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => Step::Closed,
            Ok(other) => Step::Failed(rustls::Error::General(format!(
                "unexpected TLS state {other:?} during the handshake"
            ))),
        };
        recv.start += discard;
        match step {
            Step::Again => {}
            Step::Send => {
                io.write_all(&out).await?;
                out.clear();
            }
            Step::Read => recv.fill_some(&mut io).await?,
            // A server may send before the client's Finished has arrived; the handshake
            // is over only when rustls says so.
            Step::Traffic if conn.is_handshaking() => recv.fill_some(&mut io).await?,
            Step::Traffic => break,
            Step::Closed => return Err(io::ErrorKind::UnexpectedEof.into()),
            Step::Failed(e) => {
                // rustls queued an alert for the peer: send it if we can, then fail.
                if let Ok(ConnectionState::EncodeTlsData(mut alert)) = conn.process(&mut []).state {
                    let _ = encode(&mut alert, &mut out);
                }
                let _ = io.write_all(&out).await;
                return Err(tls_error(e));
            }
        }
    }
    if !out.is_empty() {
        io.write_all(&out).await?;
    }
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return Err(invalid("the peer negotiated a TLS version other than 1.3"));
    }
    let info = super::TlsInfo::of(&conn);
    let suite = conn
        .negotiated_cipher_suite()
        .ok_or_else(|| invalid("no cipher suite after the handshake"))?
        .suite();
    let secret = exporter
        .take()
        .ok_or_else(|| invalid("rustls gave no exporter secret"))?;
    let binding = export(suite, &secret, label)?;
    let (secrets, kernel) = conn.into_kernel().map_err(tls_error)?;
    let tx_limit = kernel
        .confidentiality_limit()
        .saturating_sub(KEY_UPDATE_MARGIN)
        .max(1);
    let stream = TlsStream {
        io,
        tx: Keys::new(secrets.tx)?,
        rx: Keys::new(secrets.rx)?,
        kernel,
        tx_limit,
        recv,
        plain: 0..0,
        early,
        early_pos: 0,
        peer_closed: false,
        send: Vec::new(),
        sent: 0,
        close_sent: false,
    };
    Ok(Established {
        stream,
        info,
        binding,
    })
}

/// An established TLS 1.3 connection over `S`.
pub(super) struct TlsStream<S> {
    io: S,
    kernel: Kernel,
    tx: Keys,
    rx: Keys,
    /// Update the sending key when its sequence number reaches this.
    tx_limit: u64,
    recv: RecvBuf,
    /// The plaintext of the last record opened, inside `recv.buf`, not yet handed out.
    plain: std::ops::Range<usize>,
    /// Plaintext rustls decrypted during the handshake, handed out first.
    early: Vec<u8>,
    early_pos: usize,
    /// The peer sent `close_notify`.
    peer_closed: bool,
    /// Sealed records, `send[sent..]` not yet written.
    send: Vec<u8>,
    sent: usize,
    close_sent: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream<S> {
    /// Seal `data` (at most one record's worth) as a record of inner type `kind`.
    fn seal(&mut self, kind: u8, data: &[u8]) -> io::Result<()> {
        debug_assert!(data.len() <= MAX_PLAINTEXT);
        let len = data.len() + 1 + TAG;
        let at = self.send.len();
        self.send.reserve(HEADER + len);
        let [hi, lo] = u16::try_from(len)
            .expect("a record fits in 16 bits")
            .to_be_bytes();
        let header = [APPLICATION_DATA, 3, 3, hi, lo];
        self.send.extend_from_slice(&header);
        self.send.extend_from_slice(data);
        self.send.push(kind);
        let nonce = self.tx.next_nonce()?;
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut self.send[at + HEADER..])
            .map_err(|_| invalid("sealing a TLS record failed"))?;
        self.send.extend_from_slice(tag.as_ref());
        Ok(())
    }

    fn seal_application_data(&mut self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(MAX_PLAINTEXT) {
            self.seal(APPLICATION_DATA, chunk)?;
            if self.tx.seq >= self.tx_limit {
                self.send_key_update(false)?;
            }
        }
        Ok(())
    }

    /// Send a `KeyUpdate` under the current key, then switch to the next one.
    fn send_key_update(&mut self, request_peer_update: bool) -> io::Result<()> {
        self.seal(
            HANDSHAKE,
            &[KEY_UPDATE, 0, 0, 1, u8::from(request_peer_update)],
        )?;
        self.tx = Keys::new(self.kernel.update_tx().map_err(tls_error)?)?;
        Ok(())
    }

    /// Write out every sealed record.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.send.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.send[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.send.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Open the next whole record in the receive buffer, if there is one. `Ok(Err(n))`: more
    /// bytes are needed, `n` from the buffer's start.
    fn open_next(&mut self) -> io::Result<Result<(), usize>> {
        let pending = self.recv.pending();
        if pending.len() < HEADER {
            return Ok(Err(HEADER));
        }
        let header: [u8; HEADER] = pending[..HEADER].try_into().expect("a header");
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        match header[0] {
            APPLICATION_DATA => {}
            CHANGE_CIPHER_SPEC => {
                return Err(invalid(
                    "the TLS peer sent change_cipher_spec after the handshake",
                ));
            }
            ALERT => {
                return Err(invalid(
                    "the TLS peer sent an unencrypted alert after the handshake",
                ));
            }
            other => {
                return Err(invalid(format!(
                    "not a TLS record (type {other}) after the handshake"
                )));
            }
        }
        if !(TAG + 1..=MAX_CIPHERTEXT).contains(&len) {
            return Err(invalid(format!(
                "a TLS record of {len} bytes (allowed: {} to {MAX_CIPHERTEXT})",
                TAG + 1
            )));
        }
        if pending.len() < HEADER + len {
            return Ok(Err(HEADER + len));
        }
        let body = &mut pending[HEADER..HEADER + len];
        let nonce = self.rx.next_nonce()?;
        let plain = self
            .rx
            .key
            .open_in_place(nonce, Aad::from(header), body)
            .map_err(|_| {
                invalid("a TLS record failed authentication (corrupted, replayed or forged)")
            })?;
        let Some(kind_at) = plain.iter().rposition(|&b| b != 0) else {
            return Err(invalid("a TLS record without a content type"));
        };
        if kind_at > MAX_PLAINTEXT {
            return Err(invalid("a TLS record with too much plaintext"));
        }
        let kind = plain[kind_at];
        let start = self.recv.start + HEADER;
        self.recv.start += HEADER + len;
        let content = start..start + kind_at;
        match kind {
            APPLICATION_DATA => self.plain = content,
            ALERT => self.on_alert(content)?,
            HANDSHAKE => {
                let messages = self.recv.buf[content].to_vec();
                self.on_handshake(&messages)?;
            }
            other => {
                return Err(invalid(format!(
                    "a TLS record of content type {other} after the handshake"
                )));
            }
        }
        Ok(Ok(()))
    }

    fn on_alert(&mut self, content: std::ops::Range<usize>) -> io::Result<()> {
        let &[_level, description] = &self.recv.buf[content] else {
            return Err(invalid("a malformed TLS alert"));
        };
        match description {
            CLOSE_NOTIFY => {
                self.peer_closed = true;
                Ok(())
            }
            USER_CANCELED => Ok(()),
            other => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!(
                    "the TLS peer sent alert {:?}",
                    rustls::AlertDescription::from(other)
                ),
            )),
        }
    }

    /// Messages a peer may send after the handshake: session tickets and key updates.
    fn on_handshake(&mut self, mut messages: &[u8]) -> io::Result<()> {
        while !messages.is_empty() {
            let &[kind, a, b, c, ref rest @ ..] = messages else {
                return Err(invalid("a TLS handshake message split across records"));
            };
            let len = u32::from_be_bytes([0, a, b, c]) as usize;
            if rest.len() < len {
                return Err(invalid("a TLS handshake message split across records"));
            }
            let (body, rest) = rest.split_at(len);
            messages = rest;
            match kind {
                NEW_SESSION_TICKET => self.kernel.new_session_ticket(body)?,
                KEY_UPDATE => {
                    let requested = match body {
                        [0] => false,
                        [1] => true,
                        _ => return Err(invalid("a malformed TLS KeyUpdate")),
                    };
                    if !messages.is_empty() {
                        return Err(invalid("data after a TLS KeyUpdate in the same record"));
                    }
                    self.rx = Keys::new(self.kernel.update_rx().map_err(tls_error)?)?;
                    if requested {
                        self.send_key_update(false)?;
                    }
                }
                other => {
                    return Err(invalid(format!(
                        "TLS handshake message {other} after the handshake"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = out.filled().len();
        loop {
            if this.sent < this.send.len() {
                // A key update answer is waiting: send it along if the socket takes it now.
                if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                    return Poll::Ready(Err(e));
                }
            }
            if out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if this.early_pos < this.early.len() {
                let n = out.remaining().min(this.early.len() - this.early_pos);
                out.put_slice(&this.early[this.early_pos..this.early_pos + n]);
                this.early_pos += n;
                if this.early_pos == this.early.len() {
                    this.early = Vec::new();
                    this.early_pos = 0;
                }
                continue;
            }
            if !this.plain.is_empty() {
                let n = out.remaining().min(this.plain.len());
                out.put_slice(&this.recv.buf[this.plain.start..this.plain.start + n]);
                this.plain.start += n;
                continue;
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            let want = match this.open_next()? {
                Ok(()) => continue,
                Err(want) => want,
            };
            if out.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            if ready!(this.recv.poll_fill(&mut this.io, cx, want))? == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the TLS peer closed the connection without close_notify",
                )));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_send(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.close_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after TLS close_notify",
            )));
        }
        let taken = data.len().min(WRITE_BATCH);
        this.seal_application_data(&data[..taken])?;
        // The data is ours now; push what the socket takes at once, the rest on the next
        // write or flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.close_sent {
            ready!(this.poll_send(cx))?;
            this.seal(ALERT, &[1, CLOSE_NOTIFY])?;
            this.close_sent = true;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// A fresh key-log capture for one connection's copy of `config`.
pub(super) fn with_capture<T: Clone>(
    config: &Arc<T>,
    set: impl FnOnce(&mut T, Arc<dyn KeyLog>),
) -> (Arc<T>, Arc<ExporterSecret>) {
    let capture = Arc::new(ExporterSecret::default());
    let mut own = (**config).clone();
    set(&mut own, capture.clone());
    (Arc::new(own), capture)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{EXPORTER_LABEL, ServerIdentity, TlsConfig};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, DuplexStream};

    const DEADLINE: Duration = Duration::from_secs(10);

    type Pair = (Established<DuplexStream>, Established<DuplexStream>);

    fn configs(
        suites: Option<Vec<rustls::SupportedCipherSuite>>,
    ) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let id = ServerIdentity::generate().unwrap();
        let TlsConfig::Server { config: server, .. } = TlsConfig::server(&id, None).unwrap() else {
            unreachable!()
        };
        let TlsConfig::Client {
            config: mut client, ..
        } = TlsConfig::client_pinned(id.fingerprint(), None).unwrap()
        else {
            unreachable!()
        };
        if let Some(suites) = suites {
            let mut provider = rustls::crypto::ring::default_provider();
            provider.cipher_suites = suites;
            let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny))
                .with_no_client_auth();
            c.enable_secret_extraction = true;
            client = Arc::new(c);
        }
        (server, client)
    }

    /// Accepts any certificate: only for suite tests here, where what is checked is the record
    /// layer and the exporter, not the certificate.
    #[derive(Debug)]
    struct AcceptAny;
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    async fn pair_with(
        server: &Arc<rustls::ServerConfig>,
        client: &Arc<rustls::ClientConfig>,
    ) -> Pair {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (sc, se) = with_capture(server, |c, log| c.key_log = log);
        let (cc, ce) = with_capture(client, |c, log| c.key_log = log);
        let s = UnbufferedServerConnection::new(sc).unwrap();
        let c =
            UnbufferedClientConnection::new(cc, crate::tls::PER_LAUNCH_NAME.try_into().unwrap())
                .unwrap();
        let (s, c) = tokio::time::timeout(DEADLINE, async {
            tokio::join!(
                handshake(s, a, &se, EXPORTER_LABEL),
                handshake(c, b, &ce, EXPORTER_LABEL)
            )
        })
        .await
        .expect("the handshake finishes");
        (s.unwrap(), c.unwrap())
    }

    async fn pair() -> Pair {
        let (s, c) = configs(None);
        pair_with(&s, &c).await
    }

    /// Send `len` patterned bytes from `a` to `b` in uneven writes and check them on arrival.
    async fn carry<A, B>(a: &mut A, b: &mut B, len: usize)
    where
        A: AsyncWrite + Unpin,
        B: AsyncRead + Unpin,
    {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let send = async {
            for piece in data.chunks(40_000) {
                a.write_all(piece).await.unwrap();
            }
            a.flush().await.unwrap();
        };
        let recv = async {
            let mut got = vec![0u8; len];
            let mut at = 0;
            while at < len {
                let n = b.read(&mut got[at..(at + 7_777).min(len)]).await.unwrap();
                assert!(n > 0, "early end of stream at {at}");
                at += n;
            }
            got
        };
        let ((), got) = tokio::time::timeout(DEADLINE, async { tokio::join!(send, recv) })
            .await
            .expect("the transfer finishes");
        assert!(got == data, "bytes changed on the way");
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_and_both_ends_agree_on_the_binding() {
        let (mut s, mut c) = pair().await;
        assert_eq!(s.binding, c.binding);
        assert_ne!(s.binding, [0; 32]);
        carry(&mut c.stream, &mut s.stream, 1 << 20).await;
        carry(&mut s.stream, &mut c.stream, 300_001).await;
        // A clean close: close_notify, then end of stream.
        c.stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        s.stream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    /// Our exporter against rustls's own, for each suite (SHA-256 and SHA-384 schedules).
    #[test]
    fn the_exporter_matches_rustls_for_every_suite() {
        use rustls::crypto::ring::cipher_suite as cs;
        for suite in [
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            let (server, client) = configs(Some(vec![suite]));
            // The server is ours (unbuffered, own exporter); the client is rustls's buffered
            // connection over a blocking socket, exporting with rustls's own code.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let theirs = std::thread::spawn(move || {
                let mut sock = std::net::TcpStream::connect(addr).unwrap();
                sock.set_read_timeout(Some(DEADLINE)).unwrap();
                let mut conn = rustls::ClientConnection::new(
                    client,
                    crate::tls::PER_LAUNCH_NAME.try_into().unwrap(),
                )
                .unwrap();
                while conn.is_handshaking() {
                    conn.complete_io(&mut sock).unwrap();
                }
                let mut out = [0u8; 32];
                conn.export_keying_material(&mut out, EXPORTER_LABEL, None)
                    .unwrap();
                out
            });
            let ours = rt.block_on(async {
                let (sock, _) = listener.accept().unwrap();
                sock.set_nonblocking(true).unwrap();
                let sock = tokio::net::TcpStream::from_std(sock).unwrap();
                let (config, exporter) = with_capture(&server, |c, log| c.key_log = log);
                let conn = UnbufferedServerConnection::new(config).unwrap();
                tokio::time::timeout(DEADLINE, handshake(conn, sock, &exporter, EXPORTER_LABEL))
                    .await
                    .unwrap()
                    .unwrap()
            });
            assert_eq!(ours.binding, theirs.join().unwrap(), "{suite:?}");
            assert!(
                ours.info
                    .cipher_suite
                    .contains(&format!("{:?}", suite.suite()))
            );
        }
    }

    #[tokio::test]
    async fn every_suite_carries_data() {
        use rustls::crypto::ring::cipher_suite as cs;
        for suite in [
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            let (s, c) = configs(Some(vec![suite]));
            let (mut s, mut c) = pair_with(&s, &c).await;
            carry(&mut c.stream, &mut s.stream, 100_000).await;
            carry(&mut s.stream, &mut c.stream, 100_000).await;
        }
    }

    /// Near the confidentiality limit the sender updates its key; the receiver follows.
    #[tokio::test]
    async fn keys_are_updated_before_the_limit_and_the_peer_follows() {
        let (mut s, mut c) = pair().await;
        c.stream.tx_limit = 3;
        // 1 MiB is 64 records: the client updates its key about 21 times on the way.
        carry(&mut c.stream, &mut s.stream, 1 << 20).await;
        assert!(c.stream.tx.seq <= 3, "the client's sequence restarted");
        assert!(
            s.stream.rx.seq <= 3,
            "the server follows the client's updates"
        );
        carry(&mut s.stream, &mut c.stream, 50_000).await;
    }

    /// A `KeyUpdate` that asks for one back is answered, and both directions go on.
    #[tokio::test]
    async fn a_requested_key_update_is_answered() {
        let (mut s, mut c) = pair().await;
        carry(&mut s.stream, &mut c.stream, 100_000).await;
        let server_seq = s.stream.tx.seq;
        c.stream.send_key_update(true).unwrap();
        carry(&mut c.stream, &mut s.stream, 10).await;
        // The server answered with its own KeyUpdate when it read the request.
        assert!(
            s.stream.tx.seq < server_seq,
            "the server updated its sending key"
        );
        carry(&mut s.stream, &mut c.stream, 100_000).await;
        carry(&mut c.stream, &mut s.stream, 100_000).await;
    }

    async fn read_error(stream: &mut TlsStream<DuplexStream>) -> io::Error {
        let mut buf = [0u8; 64];
        tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .expect("an answer, not a hang")
            .expect_err("an error")
    }

    #[tokio::test]
    async fn a_changed_byte_is_refused() {
        let (mut s, mut c) = pair().await;
        c.stream.seal(APPLICATION_DATA, b"pay 10 euros").unwrap();
        let at = c.stream.send.len() - TAG - 3;
        c.stream.send[at] ^= 1;
        c.stream.flush().await.unwrap();
        let e = read_error(&mut s.stream).await;
        assert!(e.to_string().contains("failed authentication"), "{e}");
    }

    #[tokio::test]
    async fn a_replayed_record_is_refused() {
        let (mut s, mut c) = pair().await;
        c.stream.seal(APPLICATION_DATA, b"once").unwrap();
        let record = c.stream.send.clone();
        c.stream.send.extend_from_slice(&record);
        c.stream.flush().await.unwrap();
        let mut buf = [0u8; 4];
        s.stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"once");
        let e = read_error(&mut s.stream).await;
        assert!(e.to_string().contains("failed authentication"), "{e}");
    }

    #[tokio::test]
    async fn garbage_after_the_handshake_is_named() {
        let (mut s, mut c) = pair().await;
        c.stream
            .io
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let e = read_error(&mut s.stream).await;
        assert!(e.to_string().contains("not a TLS record (type 71)"), "{e}");
    }

    #[tokio::test]
    async fn an_oversized_record_is_refused_before_it_is_read() {
        let (mut s, mut c) = pair().await;
        c.stream
            .io
            .write_all(&[23, 3, 3, 0xff, 0xff])
            .await
            .unwrap();
        let e = read_error(&mut s.stream).await;
        assert!(e.to_string().contains("65535 bytes"), "{e}");
    }

    #[tokio::test]
    async fn an_end_without_close_notify_is_an_error_and_an_alert_is_named() {
        let (mut s, c) = pair().await;
        drop(c);
        let e = read_error(&mut s.stream).await;
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");

        let (mut s, mut c) = pair().await;
        c.stream.seal(ALERT, &[2, 40]).unwrap();
        c.stream.flush().await.unwrap();
        let e = read_error(&mut s.stream).await;
        assert!(e.to_string().contains("HandshakeFailure"), "{e}");
    }

    #[tokio::test]
    async fn the_receive_buffer_stays_small_for_small_messages() {
        let (mut s, mut c) = pair().await;
        for _ in 0..50 {
            carry(&mut c.stream, &mut s.stream, 100).await;
        }
        assert!(
            s.stream.recv.buf.len() <= READ_MIN,
            "{}",
            s.stream.recv.buf.len()
        );
        carry(&mut c.stream, &mut s.stream, 4 << 20).await;
        assert!(s.stream.recv.buf.len() <= READ_MAX + MAX_CIPHERTEXT);
    }
}
