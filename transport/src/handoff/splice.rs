//! Relaying between two plain sockets inside the kernel, with `splice(2)` through a pipe per
//! direction.
//!
//! A user-space copy reads every byte out of one socket into a buffer and writes it into the
//! other: two copies of the data per byte relayed, on top of the sender's and the
//! receiver's own. `splice` moves the socket's received pages into a pipe and from the pipe
//! into the other socket by reference, so the relay costs system calls but no copies, and a
//! relayed connection comes close to a direct one.
//!
//! Each direction alternates: one `splice` from the source socket fills the (empty) pipe
//! with whatever the socket holds, up to the pipe's size; then the pipe is drained into the
//! destination socket. Filling only an empty pipe means a "would block" from the source
//! socket always means "no data yet" (never "pipe full"), so tokio's readiness stays right.
//!
//! Writing to a socket whose peer has gone raises `SIGPIPE` with `splice` (no
//! `MSG_NOSIGNAL` can be given); Rust programs ignore that signal from the start, so the
//! relay sees the `EPIPE` error, as a `write` would give.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_getpipe_size, fcntl_setpipe_size, pipe_with};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

use super::Transferred;

/// One end of a relay in the kernel: a socket tokio watches.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Socket<'a> {
    /// A TCP socket (the loopback endpoint's client, a plain server connection).
    Tcp(&'a TcpStream),
    /// A Unix stream socket (the private relay socket's client).
    Unix(&'a UnixStream),
}

impl Socket<'_> {
    async fn ready(self, interest: Interest) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.ready(interest).await.map(drop),
            Socket::Unix(s) => s.ready(interest).await.map(drop),
        }
    }

    /// Run `f` on the socket, clearing tokio's readiness if it would block.
    fn try_io<R>(self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match self {
            Socket::Tcp(s) => s.try_io(interest, f),
            Socket::Unix(s) => s.try_io(interest, f),
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Socket::Tcp(s) => s.as_fd(),
            Socket::Unix(s) => s.as_fd(),
        }
    }

    fn shutdown_write(self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => SockRef::from(s).shutdown(Shutdown::Write),
            Socket::Unix(s) => SockRef::from(s).shutdown(Shutdown::Write),
        }
    }

    /// Wait for `interest` and run `op` until it does not block.
    async fn retry(
        self,
        interest: Interest,
        op: impl Fn() -> io::Result<usize>,
    ) -> io::Result<usize> {
        loop {
            self.ready(interest).await?;
            match self.try_io(interest, &op) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                done => return done,
            }
        }
    }
}

/// A pipe carrying one direction's bytes.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Its capacity in bytes: the most one `splice` into it is asked for.
    size: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        // Best effort: a refused size leaves the default, which works, only slower.
        let _ = fcntl_setpipe_size(&write, super::RELAY_PIPE);
        let size = fcntl_getpipe_size(&write)?;
        Ok(Pipe { read, write, size })
    }
}

/// Both directions' pipes, made before the relay starts so that a failure (no file
/// descriptors left) can fall back to the copy in user space.
pub(crate) struct Pipes([Pipe; 2]);

impl Pipes {
    pub(crate) fn new() -> io::Result<Pipes> {
        Ok(Pipes([Pipe::new()?, Pipe::new()?]))
    }
}

const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

/// Move bytes from `from` to `to` until `from` ends, then shut `to`'s writing down.
/// Returns the bytes delivered to `to`.
async fn one_way(from: Socket<'_>, to: Socket<'_>, pipe: &Pipe) -> io::Result<u64> {
    let mut moved = 0u64;
    loop {
        // The pipe is empty here: a full pipe cannot be why this would block.
        let filled = from
            .retry(Interest::READABLE, || {
                Ok(rustix::pipe::splice(
                    from.fd(),
                    None,
                    &pipe.write,
                    None,
                    pipe.size,
                    FLAGS,
                )?)
            })
            .await?;
        if filled == 0 {
            to.shutdown_write()?;
            return Ok(moved);
        }
        let mut left = filled;
        while left > 0 {
            let sent = to
                .retry(Interest::WRITABLE, || {
                    Ok(rustix::pipe::splice(
                        &pipe.read,
                        None,
                        to.fd(),
                        None,
                        left,
                        FLAGS,
                    )?)
                })
                .await?;
            if sent == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the relay's pipe gave no bytes to the socket",
                ));
            }
            left -= sent;
            moved += sent as u64;
        }
    }
}

/// Relay between `client` and `server` until both directions have ended, as
/// [`relay`](super::relay) does, with `splice` instead of a copy. Fails at the first error
/// of either direction.
pub(crate) async fn relay(
    client: Socket<'_>,
    server: Socket<'_>,
    pipes: Pipes,
) -> io::Result<Transferred> {
    let [up, down] = &pipes.0;
    let (client_to_server, server_to_client) =
        tokio::try_join!(one_way(client, server, up), one_way(server, client, down))?;
    Ok(Transferred {
        client_to_server,
        server_to_client,
    })
}
