//! TLS for every connection type, pinned, with nothing for the user to manage.
//!
//! **Who holds which identity.** The application *server* is always the TLS server and the
//! application *client* is always the TLS client, whichever of them dialled. In a reverse
//! connection the server's socket dials out, and then runs the TLS *server* half over the
//! socket it opened; the client accepts the socket and runs the TLS *client* half. So one
//! rule covers every connection type: the server proves its identity, the client pins it.
//!
//! **Per-launch identity.** A server makes a fresh key pair and self-signed certificate when
//! it starts ([`ServerIdentity::generate`]); the private key never leaves that process. It
//! prints the certificate's SHA-256 fingerprint on the launch channel's ready line, which the
//! launcher already trusts (a child's stdout or the ssh channel), and the client pins exactly
//! that fingerprint ([`TlsConfig::client_pinned`]). A different certificate is refused with
//! an error that shows both fingerprints. There is no switch that accepts any certificate.
//!
//! **Sites with real certificates** use [`TlsConfig::client_with_ca`] (a CA bundle and the
//! server name to check) and [`TlsConfig::server_from_pem`]. **Mutual TLS** is optional: the
//! client presents its own identity and the server pins its fingerprint, which reaches the
//! server on the launch channel's secrets line.
//!
//! **Binding.** After the TLS handshake both ends export 32 bytes of keying material
//! (RFC 8446 §7.5, rustls's `export_keying_material`, label [`EXPORTER_LABEL`], no context)
//! and feed them into the native handshake's proofs. Someone who terminates TLS towards each
//! end and relays between them has two different sessions, hence two different bindings,
//! and the native handshake fails. The label is a private one: RFC 5705 §4 reserves labels
//! for registered uses (`EXPORTER-…` among them) and leaves those starting with
//! `EXPERIMENTAL` for private use. It changed with native handshake version 2 (see
//! [`crate::handshake::native`]), which is why that version number moved: a peer of
//! version 1 binds to the old label and is turned away as "wrong version", not as a bad
//! proof.
//!
//! **Records.** rustls's own stream (`tokio-rustls`) carries the application data: rustls's
//! record layer, with its limits and counters (a peer that sends more than 32 key updates
//! in a row, or floods warning alerts, is cut off), sticky errors, and key material that is
//! wiped when dropped. A key update the peer asks for is answered as soon as it is read
//! (`FlushAfterRead`), not only with this end's next write. Beneath rustls, the socket is
//! read in large pieces (`ReadAhead`: ciphertext only, it parses nothing), which saves a
//! system call per 4 KiB on bulk transfers. Session tickets and
//! resumption are off at both ends: every launch makes a fresh identity, so a ticket would
//! never be used, and issuing them only adds state for unauthenticated clients.
//!
//! TLS 1.3 only, with the `ring` provider (the one crypto backend of the workspace).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::fingerprint::Fingerprint;
use crate::handshake::{Role, Stream};

/// The TLS exporter label whose output binds the native handshake to the TLS session.
///
/// Private (RFC 5705 §4: labels starting with `EXPERIMENTAL` need no registration) and
/// versioned with the native handshake that uses it.
pub const EXPORTER_LABEL: &[u8] = b"EXPERIMENTAL pv-launch channel binding v2";
/// The DNS name in every per-launch certificate, and the name a pinning client checks.
pub const PER_LAUNCH_NAME: &str = "pv-launch-server";

/// A TLS problem, said plainly.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate presented is not the one pinned.
    #[error("the peer's certificate {received} is not the pinned {expected}")]
    PinMismatch {
        /// The pinned fingerprint.
        expected: Fingerprint,
        /// The fingerprint the peer presented.
        received: Fingerprint,
    },
    /// The peer does not speak TLS at all.
    #[error("the peer is not speaking TLS (plaintext on a TLS port? is TLS off at the other end?)")]
    NotTls,
    /// The TLS handshake did not finish in time.
    #[error("the TLS handshake did not finish within {0:?} (peer silent or stalled)")]
    DeadlinePassed(Duration),
    /// The TLS handshake failed for another reason (expired certificate, wrong name, …).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// A certificate, key or CA bundle could not be used.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The configuration is for the other application role.
    #[error("this TLS configuration is for the {configured}, but this end is the {used}")]
    WrongRole {
        /// The role the configuration was made for.
        configured: Role,
        /// The role it was used for.
        used: Role,
    },
}

fn config_error(what: &str, e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(format!("{what}: {e}"))
}

/// ring's provider, TLS 1.3 suites only, AES-128-GCM first: as strong as needed here and
/// markedly faster than AES-256-GCM on the bulk data a visualisation session moves.
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

/// A certificate and its private key, made for one launch or loaded from files.
pub struct ServerIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl ServerIdentity {
    /// A fresh ECDSA P-256 key and a self-signed certificate for [`PER_LAUNCH_NAME`].
    pub fn generate() -> Result<ServerIdentity, TlsError> {
        let certified = rcgen::generate_simple_self_signed(vec![PER_LAUNCH_NAME.to_string()])
            .map_err(|e| config_error("generating the per-launch certificate", e))?;
        Ok(ServerIdentity {
            chain: vec![certified.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                certified.signing_key.serialize_der(),
            )),
        })
    }

    /// An identity from a certificate chain and a private key given as DER.
    pub fn from_der(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        ServerIdentity { chain, key }
    }

    /// An identity from PEM text: a certificate chain (leaf first) and its private key.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<ServerIdentity, TlsError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| config_error("reading the certificate chain", e))?;
        if chain.is_empty() {
            return Err(TlsError::Config("no certificate in the PEM chain".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| config_error("reading the private key", e))?;
        Ok(ServerIdentity { chain, key })
    }

    /// The SHA-256 fingerprint of the leaf certificate: what clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_der(&self.chain[0])
    }

    /// The leaf certificate (DER), for tests and for exporting to other tools.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }
}

/// TLS settings for one end of a connection.
#[derive(Clone)]
pub enum TlsConfig {
    /// The application server's end: it presents an identity.
    Server {
        /// The rustls configuration.
        config: Arc<rustls::ServerConfig>,
        /// Fingerprint of the identity presented (for the ready line).
        fingerprint: Fingerprint,
    },
    /// The application client's end: it checks the server's certificate.
    Client {
        /// The rustls configuration.
        config: Arc<rustls::ClientConfig>,
        /// The name checked against the certificate.
        server_name: ServerName<'static>,
    },
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsConfig::Server { fingerprint, .. } => {
                write!(f, "TlsConfig::Server({fingerprint})")
            }
            TlsConfig::Client { server_name, .. } => {
                write!(f, "TlsConfig::Client({server_name:?})")
            }
        }
    }
}

impl TlsConfig {
    /// The server's end with `identity`; with `client_pin`, clients must present exactly
    /// that certificate (mutual TLS).
    pub fn server(
        identity: &ServerIdentity,
        client_pin: Option<Fingerprint>,
    ) -> Result<TlsConfig, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| config_error("TLS versions", e))?;
        let builder = match client_pin {
            None => builder.with_no_client_auth(),
            Some(pin) => builder.with_client_cert_verifier(Arc::new(PinnedClientVerifier { pin })),
        };
        let mut config = builder
            .with_single_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|e| config_error("the server certificate and key", e))?;
        // No session tickets and no session cache: nothing is ever resumed (see the module
        // doc), and an unauthenticated client should leave no state behind.
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(TlsConfig::Server {
            config: Arc::new(config),
            fingerprint: identity.fingerprint(),
        })
    }

    /// The server's end with a certificate and key from PEM files (sites with real
    /// certificates).
    pub fn server_from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<TlsConfig, TlsError> {
        TlsConfig::server(&ServerIdentity::from_pem(chain_pem, key_pem)?, None)
    }

    /// The client's end, accepting only the certificate whose SHA-256 fingerprint is `pin`
    /// (learned from the server's ready line). `identity` adds a client certificate.
    pub fn client_pinned(
        pin: Fingerprint,
        identity: Option<&ServerIdentity>,
    ) -> Result<TlsConfig, TlsError> {
        TlsConfig::client_pinned_any(&[pin], identity)
    }

    /// The client's end, accepting any of the certificates in `pins`: for a data server and
    /// a render server of one launch, each with its own per-launch certificate.
    pub fn client_pinned_any(
        pins: &[Fingerprint],
        identity: Option<&ServerIdentity>,
    ) -> Result<TlsConfig, TlsError> {
        if pins.is_empty() {
            return Err(TlsError::Config("no certificate fingerprint to pin".into()));
        }
        let verifier = Arc::new(PinnedServerVerifier {
            pins: pins.to_vec(),
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| config_error("TLS versions", e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| config_error("the client certificate and key", e))?,
        };
        config.resumption = rustls::client::Resumption::disabled();
        Ok(TlsConfig::Client {
            config: Arc::new(config),
            server_name: ServerName::try_from(PER_LAUNCH_NAME).expect("a valid DNS name"),
        })
    }

    /// The client's end, verifying the server against the CA certificates in `ca_pem` and
    /// checking that the certificate is for `server_name` (sites with real certificates).
    pub fn client_with_ca(
        ca_pem: &[u8],
        server_name: &str,
        identity: Option<&ServerIdentity>,
    ) -> Result<TlsConfig, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| config_error("reading the CA bundle", e))?;
            roots
                .add(cert)
                .map_err(|e| config_error("a CA certificate", e))?;
        }
        if roots.is_empty() {
            return Err(TlsError::Config(
                "the CA bundle holds no certificate".into(),
            ));
        }
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| config_error(&format!("server name {server_name:?}"), e))?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| config_error("TLS versions", e))?
            .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| config_error("the client certificate and key", e))?,
        };
        config.resumption = rustls::client::Resumption::disabled();
        Ok(TlsConfig::Client {
            config: Arc::new(config),
            server_name: name,
        })
    }

    /// Run the TLS handshake over `stream` for the application `role`, and export the
    /// channel binding. (Deadlines are applied by the caller.)
    pub async fn secure<S: Stream + 'static>(
        &self,
        stream: S,
        role: Role,
    ) -> Result<Secured, TlsError> {
        match (self, role) {
            (TlsConfig::Server { config, .. }, Role::Server) => {
                let tls = TlsAcceptor::from(config.clone())
                    .accept(ReadAhead::new(stream))
                    .await
                    .map_err(map_io)?;
                Secured::new(tokio_rustls::TlsStream::from(tls))
            }
            (
                TlsConfig::Client {
                    config,
                    server_name,
                },
                Role::Client,
            ) => {
                let tls = TlsConnector::from(config.clone())
                    .connect(server_name.clone(), ReadAhead::new(stream))
                    .await
                    .map_err(map_io)?;
                Secured::new(tokio_rustls::TlsStream::from(tls))
            }
            (TlsConfig::Server { .. }, used) | (TlsConfig::Client { .. }, used) => {
                Err(TlsError::WrongRole {
                    configured: used.peer(),
                    used,
                })
            }
        }
    }
}

/// A stream after the TLS handshake.
pub struct Secured {
    /// The encrypted stream.
    pub stream: Box<dyn Stream>,
    /// What was negotiated.
    pub info: TlsInfo,
    /// The exported keying material the native handshake binds to.
    pub binding: [u8; 32],
}

impl Secured {
    /// The stream with what its handshake negotiated, and the exported channel binding
    /// ([`EXPORTER_LABEL`], 32 bytes, no context: RFC 8446 §7.5).
    fn new<S: Stream + 'static>(
        stream: tokio_rustls::TlsStream<ReadAhead<S>>,
    ) -> Result<Secured, TlsError> {
        let (info, exported) = match &stream {
            tokio_rustls::TlsStream::Client(c) => {
                let conn = c.get_ref().1;
                let exported = conn.export_keying_material([0u8; 32], EXPORTER_LABEL, None);
                (TlsInfo::of(conn), exported)
            }
            tokio_rustls::TlsStream::Server(s) => {
                let conn = s.get_ref().1;
                let exported = conn.export_keying_material([0u8; 32], EXPORTER_LABEL, None);
                (TlsInfo::of(conn), exported)
            }
        };
        let binding = exported
            .map_err(|e| TlsError::Handshake(format!("exporting the channel binding: {e}")))?;
        Ok(Secured {
            stream: Box::new(FlushAfterRead(stream)),
            info,
            binding,
        })
    }
}

/// rustls's stream, which also sends at once the answer to a key update it read.
///
/// A peer may ask for a `KeyUpdate` back (`update_requested`). rustls queues the answer and
/// sends it in front of this end's next application data, which RFC 8446 §4.6.3 allows; but
/// an end that only receives (a viewer streaming a server's output) would then never switch
/// its sending key, and the peer would wait indefinitely. So after each read this hands
/// rustls an empty write, which releases a queued answer without sending an empty record,
/// and tries one flush when rustls has something to send. If the socket cannot take it now,
/// it goes with the next write or flush, as without this wrapper. The limits stay rustls's:
/// at most one answer is queued at a time, and more than 32 key updates in a row end the
/// connection.
struct FlushAfterRead<S>(tokio_rustls::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> FlushAfterRead<S> {
    /// Release a queued answer into rustls's outgoing buffer; whether there is one to send.
    fn release_queued(&mut self) -> bool {
        use std::io::Write;
        match &mut self.0 {
            tokio_rustls::TlsStream::Client(c) => {
                let conn = c.get_mut().1;
                conn.writer().write(&[]).is_ok() && conn.wants_write()
            }
            tokio_rustls::TlsStream::Server(s) => {
                let conn = s.get_mut().1;
                conn.writer().write(&[]).is_ok() && conn.wants_write()
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for FlushAfterRead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Also when the read is pending: a record with only a key update in it gives no data.
        let read = Pin::new(&mut self.0).poll_read(cx, buf);
        if self.release_queued() {
            // Pending or an error here is the next write's business; the read's result
            // stands.
            let _ = Pin::new(&mut self.0).poll_flush(cx);
        }
        read
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for FlushAfterRead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The socket beneath rustls, read in large pieces.
///
/// rustls asks its transport for about 4 KiB at a time, and tokio-rustls reads only until
/// one record is complete, so without this a bulk receiver makes a `recv` system call (and
/// a wake-up) for every 4 KiB. This reads whatever the socket holds, up to
/// [`READ_AHEAD_MAX`], and serves rustls from memory: ciphertext only, one more copy, far
/// fewer system calls. It parses nothing; every record is rustls's business.
///
/// Memory: the buffer is allocated on the first read at [`READ_AHEAD_MIN`], doubles only
/// when a read fills it (more was waiting), and halves again when a read that drains it used
/// less than a quarter of it; so an idle or interactive connection keeps a small buffer and
/// only one that moves bulk data holds up to [`READ_AHEAD_MAX`]. Writes pass straight through.
struct ReadAhead<S> {
    inner: S,
    buf: Vec<u8>,
    /// `buf[start..end]` is read from the socket but not yet handed to rustls.
    start: usize,
    end: usize,
}

const READ_AHEAD_MIN: usize = 4 * 1024;
const READ_AHEAD_MAX: usize = 256 * 1024;

impl<S> ReadAhead<S> {
    fn new(inner: S) -> ReadAhead<S> {
        ReadAhead {
            inner,
            buf: Vec::new(),
            start: 0,
            end: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.start == this.end {
            if this.buf.is_empty() {
                this.buf = vec![0; READ_AHEAD_MIN];
            }
            let mut fill = ReadBuf::new(&mut this.buf);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut fill))?;
            let n = fill.filled().len();
            (this.start, this.end) = (0, n);
            let len = this.buf.len();
            if n == len && len < READ_AHEAD_MAX {
                // Full: more was waiting. Grow for the next read; the data stays in front.
                this.buf.resize(2 * len, 0);
            } else if n < len / 4 && len > READ_AHEAD_MIN {
                // Mostly empty: the bulk is over. Give memory back (the data stays in front).
                this.buf.truncate(len / 2);
                this.buf.shrink_to_fit();
            }
        }
        let n = out.remaining().min(this.end - this.start);
        out.put_slice(&this.buf[this.start..this.start + n]);
        this.start += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a TLS handshake negotiated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// E.g. `TLSv1_3`.
    pub version: String,
    /// E.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// The fingerprint of the certificate the peer presented, if it presented one.
    pub peer_certificate: Option<Fingerprint>,
}

impl TlsInfo {
    fn of(conn: &rustls::CommonState) -> TlsInfo {
        TlsInfo {
            version: conn
                .protocol_version()
                .map_or_else(|| "unknown".into(), |v| format!("{v:?}")),
            cipher_suite: conn
                .negotiated_cipher_suite()
                .map_or_else(|| "unknown".into(), |s| format!("{:?}", s.suite())),
            peer_certificate: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| Fingerprint::of_der(c)),
        }
    }
}

/// Give rustls' errors the plain meaning a user needs.
fn map_io(e: io::Error) -> TlsError {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        if let rustls::Error::General(msg) = inner {
            if let Some(rest) = msg.strip_prefix(PIN_MISMATCH) {
                let mut parts = rest.split(' ');
                if let (Some(Ok(expected)), Some(Ok(received))) = (
                    parts.next().map(Fingerprint::from_hex),
                    parts.next().map(Fingerprint::from_hex),
                ) {
                    return TlsError::PinMismatch { expected, received };
                }
            }
        }
        if matches!(
            inner,
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. }
        ) {
            return TlsError::NotTls;
        }
        return TlsError::Handshake(inner.to_string());
    }
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return TlsError::Handshake(
            "the peer closed the connection during the TLS handshake (is TLS off at the other end, or did it refuse our certificate?)"
                .into(),
        );
    }
    TlsError::Handshake(e.to_string())
}

const PIN_MISMATCH: &str = "pv-launch pin mismatch: ";

/// Refuse a certificate whose fingerprint is not among `pins`, in the form [`map_io`] turns
/// back into [`TlsError::PinMismatch`].
fn check_pin(pins: &[Fingerprint], end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    let received = Fingerprint::of_der(end_entity);
    if pins.contains(&received) {
        return Ok(());
    }
    Err(rustls::Error::General(format!(
        "{PIN_MISMATCH}{} {}",
        pins[0].to_hex(),
        received.to_hex()
    )))
}

/// Verify a certificate whose fingerprint matched the pin with the ordinary WebPKI checks
/// (signature, validity period, and name), using that certificate as its own trust anchor.
fn webpki_roots_of(cert: &CertificateDer<'_>) -> Result<Arc<RootCertStore>, rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone().into_owned())?;
    Ok(Arc::new(roots))
}

/// Accepts only the pinned server certificates, by fingerprint; also checks the validity
/// period.
#[derive(Debug)]
struct PinnedServerVerifier {
    pins: Vec<Fingerprint>,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_pin(&self.pins, end_entity)?;
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            webpki_roots_of(end_entity)?,
            provider(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?
        .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signature::tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signature::tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signature::schemes()
    }
}

/// Accepts exactly one client certificate, by fingerprint; also checks its validity period.
#[derive(Debug)]
struct PinnedClientVerifier {
    pin: Fingerprint,
}

impl ClientCertVerifier for PinnedClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_pin(std::slice::from_ref(&self.pin), end_entity)?;
        rustls::server::WebPkiClientVerifier::builder_with_provider(
            webpki_roots_of(end_entity)?,
            provider(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?
        .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signature::tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signature::tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signature::schemes()
    }
}

/// Handshake-signature checks shared by both pinned verifiers: the provider's algorithms.
mod signature {
    use super::*;

    pub(super) fn tls12(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    pub(super) fn tls13(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    pub(super) fn schemes() -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The read-ahead grows while bulk data waits, never past its maximum, hands every byte
    /// on in order, and gives the memory back once only small pieces come.
    #[tokio::test]
    async fn the_read_ahead_grows_for_bulk_and_shrinks_after() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let mut ra = ReadAhead::new(rx);
        let bulk: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        tx.write_all(&bulk).await.unwrap();
        let mut got = vec![0u8; bulk.len()];
        for piece in got.chunks_mut(4096) {
            ra.read_exact(piece).await.unwrap();
        }
        assert!(got == bulk, "bytes changed on the way");
        let grown = ra.buf.len();
        assert!(grown > READ_AHEAD_MIN, "it grew: {grown}");
        assert!(grown <= READ_AHEAD_MAX, "{grown}");
        // Small messages one at a time: each read drains a nearly empty buffer.
        for i in 0..32u8 {
            tx.write_all(&[i; 100]).await.unwrap();
            let mut small = [0u8; 100];
            ra.read_exact(&mut small).await.unwrap();
            assert_eq!(small, [i; 100]);
        }
        assert_eq!(ra.buf.len(), READ_AHEAD_MIN, "back to its smallest");
    }
}
