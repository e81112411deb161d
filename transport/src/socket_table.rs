//! The kernel's TCP socket tables: who listens where, and which user owns the other end of
//! a loopback connection.
//!
//! pv-launch needs two facts that no socket call gives:
//!
//! - **Is a client listening on its reverse port yet?** A ParaView client started with
//!   `csrc://127.0.0.1:P` accepts exactly one server connection; a probe connection would use
//!   it up. So we must see the listener without connecting to it: [`is_listening`],
//!   [`wait_listening`].
//! - **Which user runs the program that dialled our loopback endpoint?** A loopback port is
//!   open to every user of a shared login node, and the stream pv-launch hands out is already
//!   authenticated and decrypted, so only the user's own programs may have it: [`peer_uid`].
//!   (`SO_PEERCRED` answers this for Unix sockets only.)
//!
//! Linux publishes both in `/proc/net/tcp` and `/proc/net/tcp6` (one line per socket of this
//! network namespace: addresses, state, owner uid, inode). The other way in is the
//! `sock_diag` netlink interface, which filters in the kernel and also reports
//! `IPV6_V6ONLY`. We read `/proc` instead: it is plain text that a pure, unit-tested parser
//! reads, it needs neither a raw netlink socket (which would mean `unsafe` or another
//! dependency) nor any privilege, and its cost (the kernel formats every TCP socket of the
//! namespace, about 150 bytes each) is a fraction of a millisecond for the few thousand
//! sockets of a busy login node — paid once per accepted client and once per poll.
//!
//! What the tables cannot tell: whether a `::` listener has `IPV6_V6ONLY` set. Linux's
//! default is dual stack, so such a listener is counted as listening on IPv4 addresses too
//! (see [`SocketTable::listeners_for`]).
//!
//! Address encoding: each 32-bit word of an address is printed as the hexadecimal value of
//! the word *as it lies in memory* (so `127.0.0.1` reads `0100007F` on a little-endian
//! machine); ports are printed in host order. [`parse_line`] undoes exactly that on the
//! machine it runs on.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

/// The IPv4 table.
pub const TCP4_TABLE: &str = "/proc/net/tcp";
/// The IPv6 table (absent when the kernel has no IPv6).
pub const TCP6_TABLE: &str = "/proc/net/tcp6";

/// A TCP socket state as the kernel numbers it (`include/net/tcp_states.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpState {
    /// `01`: connected.
    Established,
    /// `02`: `connect` sent its SYN.
    SynSent,
    /// `03`: a SYN arrived (full sockets only, e.g. with TCP Fast Open).
    SynRecv,
    /// `04`: we closed; our FIN is not acknowledged yet.
    FinWait1,
    /// `05`: we closed and the peer acknowledged; waiting for its FIN.
    FinWait2,
    /// `06`: both closed; the kernel keeps a stub (uid and inode read 0).
    TimeWait,
    /// `07`: closed.
    Close,
    /// `08`: the peer closed; we have not.
    CloseWait,
    /// `09`: the peer closed, then we did.
    LastAck,
    /// `0A`: a listening socket.
    Listen,
    /// `0B`: both closed at once.
    Closing,
    /// `0C`: a connection request not yet accepted into a full socket.
    NewSynRecv,
    /// Any other number.
    Other(u8),
}

impl TcpState {
    /// The state for the kernel's number.
    pub fn from_code(code: u8) -> TcpState {
        match code {
            0x01 => TcpState::Established,
            0x02 => TcpState::SynSent,
            0x03 => TcpState::SynRecv,
            0x04 => TcpState::FinWait1,
            0x05 => TcpState::FinWait2,
            0x06 => TcpState::TimeWait,
            0x07 => TcpState::Close,
            0x08 => TcpState::CloseWait,
            0x09 => TcpState::LastAck,
            0x0A => TcpState::Listen,
            0x0B => TcpState::Closing,
            0x0C => TcpState::NewSynRecv,
            other => TcpState::Other(other),
        }
    }

    /// Whether the line's uid is the owner's: `TIME_WAIT` stubs and pending requests print
    /// 0 (or the listener's uid), which says nothing about who made the connection.
    fn has_owner(self) -> bool {
        !matches!(self, TcpState::TimeWait | TcpState::NewSynRecv)
    }
}

/// One socket of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketEntry {
    /// The socket's own address, as the kernel printed it (an IPv6 socket talking IPv4 shows
    /// `::ffff:a.b.c.d`; [`canonical`] maps it back).
    pub local: SocketAddr,
    /// The address it is connected to (`0.0.0.0:0` / `[::]:0` for listeners).
    pub remote: SocketAddr,
    /// Its state.
    pub state: TcpState,
    /// The uid that created it, in this process's user namespace.
    pub uid: u32,
    /// Its inode number (0 for sockets no process holds: `TIME_WAIT`, not yet accepted).
    pub inode: u64,
}

/// A line of a table that is not in the kernel's format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a /proc/net/tcp line ({what}): {line:?}")]
pub struct ParseError {
    /// Which field was wrong.
    pub what: &'static str,
    /// The line.
    pub line: String,
}

/// One hexadecimal 32-bit word as it lay in memory: its bytes in this machine's order.
fn word(hex: &str) -> Option<[u8; 4]> {
    if hex.len() != 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes)
}

/// `0100007F:0277` (IPv4) or 32 hex digits and a port (IPv6).
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    if port.len() != 4 {
        return None;
    }
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(&ip[i * 8..i * 8 + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parse one socket line of `/proc/net/tcp` or `/proc/net/tcp6`:
///
/// ```text
/// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
/// ```
///
/// The header line is not a socket line: [`parse_table`] skips it.
pub fn parse_line(line: &str) -> Result<SocketEntry, ParseError> {
    let bad = |what| ParseError {
        what,
        line: line.to_owned(),
    };
    let mut fields = line.split_whitespace();
    let slot = fields.next().ok_or_else(|| bad("slot"))?;
    if !slot.ends_with(':') {
        return Err(bad("slot"));
    }
    let local = fields
        .next()
        .and_then(parse_addr)
        .ok_or_else(|| bad("local address"))?;
    let remote = fields
        .next()
        .and_then(parse_addr)
        .ok_or_else(|| bad("remote address"))?;
    let state = fields
        .next()
        .filter(|s| s.len() == 2)
        .and_then(|s| u8::from_str_radix(s, 16).ok())
        .map(TcpState::from_code)
        .ok_or_else(|| bad("state"))?;
    // tx_queue:rx_queue, tr:tm->when, retrnsmt.
    let mut fields = fields.skip(3);
    let uid = fields
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("uid"))?;
    let inode = fields
        .nth(1) // after the timeout
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("inode"))?;
    Ok(SocketEntry {
        local,
        remote,
        state,
        uid,
        inode,
    })
}

/// Parse a whole table: the header line, then one socket per line.
pub fn parse_table(text: &str) -> Result<Vec<SocketEntry>, ParseError> {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(parse_line)
        .collect()
}

/// The address an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) stands for: traffic to it is
/// IPv4 traffic. Other addresses are returned as they are (without flow info or scope).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => SocketAddr::new(IpAddr::V6(v6), addr.port()),
        },
        IpAddr::V4(_) => addr,
    }
}

/// Both tables at one moment.
#[derive(Clone, Debug, Default)]
pub struct SocketTable {
    entries: Vec<SocketEntry>,
}

impl SocketTable {
    /// Read both tables of this process's network namespace. A missing IPv6 table (a kernel
    /// without IPv6) counts as empty; any other failure is an error naming the file.
    ///
    /// The files are in memory: reading them does not wait on a device, so this is fine to
    /// call from async code.
    pub fn read() -> io::Result<SocketTable> {
        let mut entries = Vec::new();
        for path in [TCP4_TABLE, TCP6_TABLE] {
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound && path == TCP6_TABLE => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("reading {path}: {e}"))),
            };
            let parsed = parse_table(&text)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {e}")))?;
            entries.extend(parsed);
        }
        Ok(SocketTable { entries })
    }

    /// A table made of the text of `/proc/net/tcp` and `/proc/net/tcp6` (for tests, or a
    /// table captured elsewhere).
    pub fn from_text(tcp4: &str, tcp6: &str) -> Result<SocketTable, ParseError> {
        let mut entries = parse_table(tcp4)?;
        entries.extend(parse_table(tcp6)?);
        Ok(SocketTable { entries })
    }

    /// Every socket.
    pub fn entries(&self) -> &[SocketEntry] {
        &self.entries
    }

    /// The listening sockets that a connection to `addr` could reach: in `LISTEN` state, on
    /// `addr`'s port, and bound to
    ///
    /// - for an IPv4 address `a` (or its mapped form `::ffff:a`): `a` itself, `0.0.0.0`, or
    ///   IPv6 `::` (dual stack; a `::` socket with `IPV6_V6ONLY` set would be counted too,
    ///   which the table cannot show), or `::ffff:a` / `::ffff:0.0.0.0`;
    /// - for an IPv6 address: that address or `::`.
    ///
    /// A listener on another address of the same range (`127.0.0.2` for `127.0.0.1`) does
    /// not count: a connection to `127.0.0.1` never reaches it. Port 0 matches nothing.
    pub fn listeners_for(&self, addr: SocketAddr) -> impl Iterator<Item = &SocketEntry> {
        let target = canonical(addr);
        self.entries.iter().filter(move |e| {
            if e.state != TcpState::Listen || target.port() == 0 || e.local.port() != target.port()
            {
                return false;
            }
            let bound = canonical(e.local).ip();
            match (target.ip(), bound) {
                (IpAddr::V4(want), IpAddr::V4(have)) => have == want || have.is_unspecified(),
                (IpAddr::V4(_), IpAddr::V6(have)) => have.is_unspecified(),
                (IpAddr::V6(want), IpAddr::V6(have)) => have == want || have.is_unspecified(),
                (IpAddr::V6(_), IpAddr::V4(_)) => false,
            }
        })
    }

    /// The socket at the other end of a connection that this process holds with local
    /// address `local` and peer address `peer`: the entry whose own address is `peer` and
    /// whose remote address is `local` (IPv4-mapped forms compare equal to IPv4 ones, so an
    /// IPv6 client dialling `::ffff:127.0.0.1` is found too). Entries whose uid is not an
    /// owner's (`TIME_WAIT`, pending requests) are passed over.
    ///
    /// Only sockets of this host and network namespace are in the table, so this answers for
    /// loopback connections (and other local ones); for a remote peer it finds nothing.
    pub fn peer_of(&self, local: SocketAddr, peer: SocketAddr) -> Option<&SocketEntry> {
        let (local, peer) = (canonical(local), canonical(peer));
        self.entries.iter().find(|e| {
            e.state.has_owner() && canonical(e.local) == peer && canonical(e.remote) == local
        })
    }
}

/// Whether a socket listens where a connection to `addr` would reach it, without connecting
/// (see [`SocketTable::listeners_for`] for exactly which sockets count).
pub fn is_listening(addr: SocketAddr) -> io::Result<bool> {
    Ok(SocketTable::read()?.listeners_for(addr).next().is_some())
}

/// The uids owning the sockets that listen where a connection to `addr` would reach them
/// (empty: nothing listens). Before dialling a client's reverse port, check that every one
/// is ours: otherwise another user holds the port and would get the stream.
pub fn listener_uids(addr: SocketAddr) -> io::Result<Vec<u32>> {
    Ok(SocketTable::read()?
        .listeners_for(addr)
        .map(|e| e.uid)
        .collect())
}

/// The uid owning the other end of the loopback connection this process holds from `local`
/// to `peer` (as `TcpStream::local_addr` and `peer_addr` give them), or `None` when no such
/// socket is in the table (the peer is not on this host, or has already gone).
///
/// The answer is the uid that *created* the peer's socket (its file-system uid then), which
/// is who runs the program holding it unless that program received it from another.
pub fn peer_uid(local: SocketAddr, peer: SocketAddr) -> io::Result<Option<u32>> {
    Ok(SocketTable::read()?.peer_of(local, peer).map(|e| e.uid))
}

/// This process's effective uid, from `/proc/self/status` (no `unsafe` call needed). New
/// sockets are owned by the file-system uid, which equals the effective uid unless a
/// program changes it on purpose.
pub fn effective_uid() -> io::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "/proc/self/status has no Uid line",
            )
        })
}

/// First pause between two reads of the tables in [`wait_listening`].
pub const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Longest pause between two reads: a client that starts listening is seen within this.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Why [`wait_listening`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum WaitListeningError {
    /// Nothing listened on the address within the time given.
    #[error(
        "nothing is listening on {addr} after {waited:?} ({polls} looks at {TCP4_TABLE} and \
         {TCP6_TABLE}); is the client started and waiting for the server on that port?"
    )]
    TimedOut {
        /// The address waited for.
        addr: SocketAddr,
        /// How long we waited.
        waited: Duration,
        /// How many times the tables were read.
        polls: u32,
    },
    /// The tables could not be read.
    #[error("cannot tell whether {addr} is listening: {source}")]
    Io {
        /// The address waited for.
        addr: SocketAddr,
        /// The failure.
        source: io::Error,
    },
}

/// Wait until something listens where a connection to `addr` would reach it, looking at the
/// socket tables and never connecting (a probe would use up a client's one reverse
/// connection). Gives up after `timeout`.
///
/// This polls: the kernel sends no notification when a socket starts listening (`inotify`
/// sees no change in `/proc/net` files, and the multicast groups of the `sock_diag` netlink
/// interface report sockets being destroyed, never created). The pause starts at [`FIRST_POLL_INTERVAL`]
/// and doubles up to [`MAX_POLL_INTERVAL`], so a listener that is already there or comes
/// soon is seen at once, and a slow client (a GUI starting) costs ten reads a second.
pub async fn wait_listening(addr: SocketAddr, timeout: Duration) -> Result<(), WaitListeningError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut interval = FIRST_POLL_INTERVAL;
    let mut polls = 0u32;
    loop {
        polls += 1;
        match is_listening(addr) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(source) => return Err(WaitListeningError::Io { addr, source }),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitListeningError::TimedOut {
                addr,
                waited: now - start,
                polls,
            });
        }
        tokio::time::sleep_until((now + interval).min(deadline)).await;
        interval = (interval * 2).min(MAX_POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER4: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
    const HEADER6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    // Lines captured from Linux 6.18 on x86_64 (little-endian words).
    // A listener of uid 65534 on 127.0.0.1:53631, our client from port 54138 (uid 0), and the
    // listener's side of it, not yet accepted (inode 0, the listener's uid).
    const LISTENER_65534: &str = "   1: 0100007F:D17F 00000000:0000 0A 00000000:00000001 00:00000000 00000000 65534        0 20261 2 000000001f8a8b5f 100 0 0 10 0";
    const CLIENT_0: &str = "   2: 0100007F:D37A 0100007F:D17F 01 00000000:00000000 00:00000000 00000000     0        0 20262 2 00000000416f4f3e 20 0 0 10 -1";
    const UNACCEPTED: &str = "   7: 0100007F:D17F 0100007F:D37A 01 00000000:00000000 00:00000000 00000000 65534        0 0 1 00000000990cbd51 20 0 0 10 -1";
    // A TIME_WAIT stub (uid 0 whoever made it) and a FIN_WAIT2 client after shutdown(WR).
    const TIME_WAIT: &str = "   3: 0100007F:EA8E 0100007F:957D 06 00000000:00000000 03:0000176A 00000000     0        0 0 3 00000000c3eb8f3a";
    const FIN_WAIT2: &str = "   4: 0100007F:EA9A 0100007F:957D 05 00000000:00000000 00:00000000 00000000     0        0 20868 2 000000004147ff30 20 0 0 11 -1";
    // A dual-stack `::` listener on 39695, an IPv6 client dialling ::ffff:127.0.0.1 from
    // 38974, the accepted side, and a ::1 connection from 59796.
    const V6_ANY_LISTENER: &str = "   0: 00000000000000000000000000000000:9B0F 00000000000000000000000000000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 21614 3 00000000e7cd4fc8 100 0 0 10 0";
    const V6_MAPPED_ACCEPTED: &str = "   1: 0000000000000000FFFF00000100007F:9B0F 0000000000000000FFFF00000100007F:983E 01 00000000:00000000 00:00000000 00000000     0        0 0 1 00000000595e5e90 20 0 0 10 -1";
    const V6_LOOPBACK_CLIENT: &str = "   2: 00000000000000000000000001000000:E994 00000000000000000000000001000000:9B0F 01 00000000:00000000 00:00000000 00000000     0        0 21616 2 00000000b6474a5b 20 0 0 10 -1";
    const V6_MAPPED_CLIENT: &str = "   3: 0000000000000000FFFF00000100007F:983E 0000000000000000FFFF00000100007F:9B0F 01 00000000:00000000 00:00000000 00000000     0        0 21615 2 00000000907b0819 20 0 0 10 -1";

    #[cfg(target_endian = "little")]
    #[test]
    fn captured_ipv4_lines_parse() {
        assert_eq!(
            parse_line(LISTENER_65534).unwrap(),
            SocketEntry {
                local: addr("127.0.0.1:53631"),
                remote: addr("0.0.0.0:0"),
                state: TcpState::Listen,
                uid: 65534,
                inode: 20261,
            }
        );
        let client = parse_line(CLIENT_0).unwrap();
        assert_eq!(client.local, addr("127.0.0.1:54138"));
        assert_eq!(client.remote, addr("127.0.0.1:53631"));
        assert_eq!(client.state, TcpState::Established);
        assert_eq!((client.uid, client.inode), (0, 20262));
        // The TIME_WAIT line is shorter (no congestion fields): it parses all the same.
        let tw = parse_line(TIME_WAIT).unwrap();
        assert_eq!(tw.state, TcpState::TimeWait);
        assert_eq!((tw.uid, tw.inode), (0, 0));
        assert_eq!(parse_line(FIN_WAIT2).unwrap().state, TcpState::FinWait2);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn captured_ipv6_lines_parse_including_mapped_addresses() {
        let any = parse_line(V6_ANY_LISTENER).unwrap();
        assert_eq!(any.local, addr("[::]:39695"));
        assert_eq!(any.state, TcpState::Listen);
        let mapped = parse_line(V6_MAPPED_CLIENT).unwrap();
        assert_eq!(mapped.local, addr("[::ffff:127.0.0.1]:38974"));
        assert_eq!(canonical(mapped.local), addr("127.0.0.1:38974"));
        assert_eq!(mapped.inode, 21615);
        let lo = parse_line(V6_LOOPBACK_CLIENT).unwrap();
        assert_eq!(lo.local, addr("[::1]:59796"));
        assert_eq!(lo.remote, addr("[::1]:39695"));
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_field() {
        for (line, what) in [
            ("", "slot"),
            ("   1 0100007F:D17F 00000000:0000 0A", "slot"),
            ("   1: 0100007F 00000000:0000 0A", "local address"),
            ("   1: 0100007G:D17F 00000000:0000 0A", "local address"),
            ("   1: 0100007F:D17F 000000:0000 0A", "remote address"),
            ("   1: 0100007F:D17F 00000000:0000 A", "state"),
            (
                "   1: 0100007F:D17F 00000000:0000 0A 0:0 00:0 0 -1 0 5",
                "uid",
            ),
            (
                "   1: 0100007F:D17F 00000000:0000 0A 0:0 00:0 0 7 0",
                "inode",
            ),
        ] {
            assert_eq!(parse_line(line).unwrap_err().what, what, "{line:?}");
        }
        // The header is skipped by parse_table but is not a socket line.
        assert!(parse_line(HEADER4).is_err());
        assert!(parse_table(&format!("{HEADER4}\n{LISTENER_65534}\ngarbage\n")).is_err());
    }

    fn captured() -> SocketTable {
        let tcp4 = [
            HEADER4,
            LISTENER_65534,
            CLIENT_0,
            UNACCEPTED,
            TIME_WAIT,
            FIN_WAIT2,
        ]
        .join("\n");
        let tcp6 = [
            HEADER6,
            V6_ANY_LISTENER,
            V6_MAPPED_ACCEPTED,
            V6_LOOPBACK_CLIENT,
            V6_MAPPED_CLIENT,
        ]
        .join("\n");
        SocketTable::from_text(&tcp4, &tcp6).unwrap()
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn listeners_match_the_address_or_its_family_wildcard() {
        let t = captured();
        let uids = |a: &str| t.listeners_for(addr(a)).map(|e| e.uid).collect::<Vec<_>>();
        assert_eq!(uids("127.0.0.1:53631"), [65534]);
        assert_eq!(uids("[::ffff:127.0.0.1]:53631"), [65534]);
        assert!(
            uids("127.0.0.2:53631").is_empty(),
            "another loopback address"
        );
        assert!(
            uids("[::1]:53631").is_empty(),
            "an IPv4 listener takes no IPv6"
        );
        assert!(uids("127.0.0.1:53632").is_empty(), "another port");
        // The dual-stack `::` listener reaches IPv4 and IPv6 alike.
        assert_eq!(uids("127.0.0.1:39695"), [0]);
        assert_eq!(uids("[::1]:39695"), [0]);
        assert_eq!(uids("10.1.2.3:39695"), [0]);
        // Connected sockets on a port are not listeners; port 0 is nobody's.
        assert!(uids("127.0.0.1:54138").is_empty());
        assert!(uids("0.0.0.0:0").is_empty());
    }

    #[test]
    fn wildcards_and_exact_addresses_synthetic() {
        // Built with this machine's word order, so it holds on any endianness.
        let hex4 = |ip: Ipv4Addr| format!("{:08X}", u32::from_ne_bytes(ip.octets()));
        let line = |local: String, port: u16, st: &str, uid: u32| {
            format!(
                "   0: {local}:{port:04X} 00000000:0000 {st} 00000000:00000000 00:00000000 00000000 {uid} 0 1 1 0"
            )
        };
        let tcp4 = [
            HEADER4.to_owned(),
            line(hex4(Ipv4Addr::UNSPECIFIED), 4000, "0A", 7),
            line(hex4(Ipv4Addr::LOCALHOST), 4001, "0A", 8),
            line(hex4(Ipv4Addr::LOCALHOST), 4002, "01", 9),
        ]
        .join("\n");
        let t = SocketTable::from_text(&tcp4, HEADER6).unwrap();
        let uids = |a: &str| t.listeners_for(addr(a)).map(|e| e.uid).collect::<Vec<_>>();
        assert_eq!(uids("127.0.0.1:4000"), [7]);
        assert_eq!(uids("192.0.2.1:4000"), [7]);
        assert_eq!(uids("127.0.0.1:4001"), [8]);
        assert!(
            uids("127.0.0.1:4002").is_empty(),
            "established, not listening"
        );
        assert!(uids("[::1]:4000").is_empty());
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn the_peer_is_the_entry_seen_from_the_other_side() {
        let t = captured();
        // We accepted 127.0.0.1:53631 <- 127.0.0.1:54138: the client's socket is uid 0.
        let peer = t
            .peer_of(addr("127.0.0.1:53631"), addr("127.0.0.1:54138"))
            .unwrap();
        assert_eq!((peer.uid, peer.inode), (0, 20262));
        // Seen from the client, the other end is the not yet accepted socket (listener's uid).
        let other = t
            .peer_of(addr("127.0.0.1:54138"), addr("127.0.0.1:53631"))
            .unwrap();
        assert_eq!(other.uid, 65534);
        // An IPv6 socket that dialled ::ffff:127.0.0.1 is found from the IPv4 view and the
        // mapped one.
        for (local, peer) in [
            ("127.0.0.1:39695", "127.0.0.1:38974"),
            ("[::ffff:127.0.0.1]:39695", "[::ffff:127.0.0.1]:38974"),
        ] {
            assert_eq!(t.peer_of(addr(local), addr(peer)).unwrap().inode, 21615);
        }
        assert_eq!(
            t.peer_of(addr("[::1]:39695"), addr("[::1]:59796"))
                .unwrap()
                .inode,
            21616
        );
        // A TIME_WAIT stub's uid 0 is nobody's: it is not an answer.
        assert!(
            t.peer_of(addr("127.0.0.1:38269"), addr("127.0.0.1:60046"))
                .is_none()
        );
        // A half-closed client (FIN_WAIT2) still has its owner.
        assert_eq!(
            t.peer_of(addr("127.0.0.1:38269"), addr("127.0.0.1:60058"))
                .unwrap()
                .inode,
            20868
        );
        // Unknown peers are None.
        assert!(
            t.peer_of(addr("127.0.0.1:53631"), addr("127.0.0.1:1"))
                .is_none()
        );
    }

    #[test]
    fn effective_uid_reads_our_own_status() {
        use std::os::unix::fs::MetadataExt;
        // /proc/self is owned by our effective uid.
        let owner = std::fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(effective_uid().unwrap(), owner);
    }
}
