//! What the `throughput` and `tls_paired` benchmarks share: the three kinds of connection
//! compared, a connected pair of each, and the receiver that acknowledges every
//! [`PER_ITER`] bytes.

use pv_transport::handshake::native::NativeHandshake;
use pv_transport::handshake::{Role, Side, Stream};
use pv_transport::{
    Connection, ConnectionConfig, Listener, ServerIdentity, TlsConfig, Token, loopback,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The size of each write (and of the receiver's reads).
pub const CHUNK: usize = 64 * 1024;
/// Bytes per iteration, acknowledged once by the receiver.
pub const PER_ITER: usize = 16 * 1024 * 1024;

/// The three kinds of connection compared.
#[derive(Clone, Copy)]
pub enum Kind {
    Raw,
    Native,
    Tls,
}

/// The two ends' settings of a handshaken connection.
pub struct Configs {
    pub server: ConnectionConfig,
    pub client: ConnectionConfig,
}

/// The settings for `kind` (`None`: raw TCP).
pub fn configs(kind: Kind) -> Option<Configs> {
    let token = Token::generate();
    let base = || ConnectionConfig::new(NativeHandshake::new(token.clone()));
    match kind {
        Kind::Raw => None,
        Kind::Native => Some(Configs {
            server: base(),
            client: base(),
        }),
        Kind::Tls => {
            let id = ServerIdentity::generate().unwrap();
            Some(Configs {
                server: base().with_tls(TlsConfig::server(&id, None).unwrap()),
                client: base().with_tls(TlsConfig::client_pinned(id.fingerprint(), None).unwrap()),
            })
        }
    }
}

/// One connected pair: (client end, server end).
pub async fn connect_pair(
    listener: &Listener,
    cfg: &Option<Configs>,
) -> (Box<dyn Stream>, Box<dyn Stream>) {
    let port = listener.local_addr().unwrap().port();
    let (c, s) = tokio::join!(TcpStream::connect(loopback(port)), listener.accept());
    let (c, (s, addr)) = (c.unwrap(), s.unwrap());
    c.set_nodelay(true).unwrap();
    match cfg {
        None => (Box::new(c), Box::new(s)),
        Some(cfg) => {
            let (c, s) = tokio::join!(
                Connection::establish(c, Side::Dialler, Role::Client, &cfg.client, None),
                Connection::establish(s, Side::Acceptor, Role::Server, &cfg.server, Some(addr))
            );
            (Box::new(c.unwrap()), Box::new(s.unwrap()))
        }
    }
}

/// Read [`PER_ITER`] bytes per request from `rx` and acknowledge each with one byte, until
/// the connection ends.
pub async fn ack_receiver(mut rx: Box<dyn Stream>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut left = PER_ITER;
        while left > 0 {
            match rx.read(&mut buf[..left.min(CHUNK)]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left -= n,
            }
        }
        if rx.write_all(&[1]).await.is_err() || rx.flush().await.is_err() {
            return;
        }
    }
}
