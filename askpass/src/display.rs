//! Is there a display we can open? Answered before FLTK starts, because FLTK ends the
//! whole process (exit status 1, "Can't open display") when it cannot open one, leaving
//! no chance to fall back to the terminal.
//!
//! The probe does what Xlib's `XOpenDisplay` does, in safe Rust: it parses `DISPLAY`,
//! connects to the X server's socket (the Linux abstract socket, then
//! `/tmp/.X11-unix/X<n>`, or TCP port 6000+n for a remote host), sends the connection
//! setup with the `MIT-MAGIC-COOKIE-1` from `XAUTHORITY` (or `~/.Xauthority`) when one
//! matches, and reads the server's verdict. Only a server that says "success" counts.
//!
//! This build of FLTK speaks X11 only, so `WAYLAND_DISPLAY` alone is not enough: on a
//! Wayland desktop the dialog runs through XWayland, whose `DISPLAY` is set as usual.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// How long the probe may take in total before the display counts as unusable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why no display can be used (shown to the user in the one-line reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoDisplay(pub String);

impl std::fmt::Display for NoDisplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed `DISPLAY` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisplayAddr {
    /// A local server: `:N`, `unix:N`, `unix/:N`, with display number N.
    Local(u32),
    /// A socket path given directly (`/path/to/socket:N`, as XQuartz does).
    Path(PathBuf, u32),
    /// A server over TCP: `host:N` (port 6000 + N).
    Tcp(String, u32),
}

impl DisplayAddr {
    /// Parses `[protocol/][host]:display[.screen]`.
    pub fn parse(value: &str) -> Option<DisplayAddr> {
        let colon = value.rfind(':')?;
        let (head, tail) = (&value[..colon], &value[colon + 1..]);
        let number: u32 = tail.split('.').next()?.parse().ok()?;
        if head.starts_with('/') {
            return Some(DisplayAddr::Path(PathBuf::from(head), number));
        }
        let (protocol, host) = match head.split_once('/') {
            Some((p, h)) => (p, h),
            None => ("", head),
        };
        if protocol == "unix" || host.is_empty() || host == "unix" {
            return Some(DisplayAddr::Local(number));
        }
        // A bracketed IPv6 address, or a name / IPv4 address.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Some(DisplayAddr::Tcp(host.to_owned(), number))
    }
}

/// What the probe learnt about a display that accepted us. It holds the probe's
/// connection open: keep it alive until the dialog has connected, because an X server
/// with no other client (a bare Xvfb) resets when its last client leaves, and a client
/// connecting during the reset is refused, which FLTK would answer by exiting.
pub struct DisplayInfo {
    /// A window manager announced EWMH's "stay above" state (`_NET_WM_STATE_ABOVE`
    /// exists), so asking for an on-top window means something. Without one (a bare X
    /// server, Xvfb), FLTK would print an error when asked, on stdout.
    pub can_stay_on_top: bool,
    _connection: Conn,
}

impl std::fmt::Debug for DisplayInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DisplayInfo")
            .field("can_stay_on_top", &self.can_stay_on_top)
            .finish_non_exhaustive()
    }
}

/// Checks that an X server is reachable and accepts us. Returns the reason otherwise.
pub fn probe_x11(display: Option<&str>) -> Result<DisplayInfo, NoDisplay> {
    let value = match display {
        Some(v) if !v.is_empty() => v,
        _ => return Err(NoDisplay("DISPLAY is not set".into())),
    };
    let addr = DisplayAddr::parse(value).ok_or_else(|| {
        NoDisplay(format!(
            "DISPLAY={value} is not a display name we understand"
        ))
    })?;
    let mut conn = connect(&addr)
        .map_err(|e| NoDisplay(format!("cannot connect to X display {value}: {e}")))?;
    let cookie = find_cookie(&addr);
    setup(&mut conn, cookie.as_deref())
        .map_err(|e| NoDisplay(format!("X display {value} refused us: {e}")))?;
    Ok(DisplayInfo {
        can_stay_on_top: atom_exists(&mut conn, b"_NET_WM_STATE_ABOVE").unwrap_or(false),
        _connection: conn,
    })
}

/// A connection of either kind, so the setup code is written once.
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Conn::Unix(s) => s,
            Conn::Tcp(s) => s,
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn connect(addr: &DisplayAddr) -> std::io::Result<Conn> {
    let conn = match addr {
        DisplayAddr::Local(n) => Conn::Unix(connect_local(*n)?),
        DisplayAddr::Path(path, n) => {
            // XQuartz passes the socket path itself; older forms append `:N` to it.
            let with_number = PathBuf::from(format!("{}:{n}", path.display()));
            Conn::Unix(UnixStream::connect(&with_number).or_else(|_| UnixStream::connect(path))?)
        }
        DisplayAddr::Tcp(host, n) => {
            let port = 6000u16
                .checked_add(u16::try_from(*n).map_err(|_| std::io::ErrorKind::InvalidInput)?)
                .ok_or(std::io::ErrorKind::InvalidInput)?;
            let mut last = std::io::Error::from(std::io::ErrorKind::NotFound);
            let mut found = None;
            for sock in (host.as_str(), port).to_socket_addrs()? {
                match TcpStream::connect_timeout(&sock, PROBE_TIMEOUT) {
                    Ok(s) => {
                        found = Some(s);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            Conn::Tcp(found.ok_or(last)?)
        }
    };
    match &conn {
        Conn::Unix(s) => {
            s.set_read_timeout(Some(PROBE_TIMEOUT))?;
            s.set_write_timeout(Some(PROBE_TIMEOUT))?;
        }
        Conn::Tcp(s) => {
            s.set_read_timeout(Some(PROBE_TIMEOUT))?;
            s.set_write_timeout(Some(PROBE_TIMEOUT))?;
        }
    }
    Ok(conn)
}

/// Xlib on Linux tries the abstract socket first, then the file in /tmp/.X11-unix.
fn connect_local(n: u32) -> std::io::Result<UnixStream> {
    let path = format!("/tmp/.X11-unix/X{n}");
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(path.as_bytes()) {
            if let Ok(s) = UnixStream::connect_addr(&addr) {
                return Ok(s);
            }
        }
    }
    UnixStream::connect(&path)
}

/// X11 connection setup: byte order, protocol 11.0, the authorisation name and data.
/// The server answers with a status byte: 0 failed, 1 success, 2 authenticate.
fn setup(conn: &mut Conn, cookie: Option<&[u8]>) -> Result<(), String> {
    const AUTH_NAME: &[u8] = b"MIT-MAGIC-COOKIE-1";
    let (name, data): (&[u8], &[u8]) = match cookie {
        Some(c) => (AUTH_NAME, c),
        None => (b"", b""),
    };
    let pad = |n: usize| (4 - n % 4) % 4;
    let mut msg = Vec::with_capacity(12 + name.len() + data.len() + 6);
    msg.extend_from_slice(b"l\0"); // little-endian byte order, unused byte
    msg.extend_from_slice(&11u16.to_le_bytes());
    msg.extend_from_slice(&0u16.to_le_bytes());
    msg.extend_from_slice(&(name.len() as u16).to_le_bytes());
    msg.extend_from_slice(&(data.len() as u16).to_le_bytes());
    msg.extend_from_slice(&[0, 0]);
    msg.extend_from_slice(name);
    msg.extend(std::iter::repeat_n(0u8, pad(name.len())));
    msg.extend_from_slice(data);
    msg.extend(std::iter::repeat_n(0u8, pad(data.len())));
    let stream = conn.stream();
    stream.write_all(&msg).map_err(|e| e.to_string())?;
    let mut head = [0u8; 8];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    match head[0] {
        1 => {
            // Success: skip the server description (screens, formats, visuals); its
            // length in 4-byte units is in bytes 6-7.
            let extra = usize::from(u16::from_le_bytes([head[6], head[7]])) * 4;
            std::io::copy(&mut stream.take(extra as u64), &mut std::io::sink())
                .map_err(|e| e.to_string())?;
            Ok(())
        }
        0 => {
            // Failed: byte 1 is the reason's length; the reason follows the 8-byte header.
            let mut reason = vec![0u8; usize::from(head[1])];
            let _ = stream.read_exact(&mut reason);
            Err(String::from_utf8_lossy(&reason).trim().to_owned())
        }
        2 => Err("the server wants further authentication".into()),
        other => Err(format!("unexpected setup status {other}")),
    }
}

/// Asks the server whether an atom exists (InternAtom, only-if-exists), which is how a
/// window manager's EWMH support shows.
fn atom_exists(conn: &mut Conn, name: &[u8]) -> std::io::Result<bool> {
    const INTERN_ATOM: u8 = 16;
    let padded = name.len().div_ceil(4) * 4;
    let units = u16::try_from((8 + padded) / 4).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut req = Vec::with_capacity(8 + padded);
    req.push(INTERN_ATOM);
    req.push(1); // only if exists
    req.extend_from_slice(&units.to_le_bytes());
    req.extend_from_slice(&(name.len() as u16).to_le_bytes());
    req.extend_from_slice(&[0, 0]);
    req.extend_from_slice(name);
    req.resize(8 + padded, 0);
    let stream = conn.stream();
    stream.write_all(&req)?;
    // The reply (or an error) is 32 bytes: type 1 = reply, with the atom at 8..12.
    let mut reply = [0u8; 32];
    stream.read_exact(&mut reply)?;
    Ok(reply[0] == 1 && u32::from_le_bytes([reply[8], reply[9], reply[10], reply[11]]) != 0)
}

/// Finds the MIT-MAGIC-COOKIE-1 for the display in the Xauthority file, as Xlib does:
/// an entry for this display number (or any number) whose address is this host (local
/// connections) or the server's host name / address, or a wildcard entry.
fn find_cookie(addr: &DisplayAddr) -> Option<Vec<u8>> {
    let file = std::env::var_os("XAUTHORITY")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".Xauthority")))?;
    let bytes = std::fs::read(file).ok()?;
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    pick_cookie(parse_xauthority(&bytes), addr, &hostname)
}

/// The matching rule. Like libxcb, a TCP connection to a loopback address (how ssh's X11
/// forwarding sets `DISPLAY=localhost:10.0`) uses the entry of this host's name, which
/// is where `xauth` stores forwarded cookies (`host/unix:10`).
fn pick_cookie(entries: Vec<XauthEntry>, addr: &DisplayAddr, hostname: &str) -> Option<Vec<u8>> {
    let (number, local, host) = match addr {
        DisplayAddr::Local(n) | DisplayAddr::Path(_, n) => (*n, true, None),
        DisplayAddr::Tcp(h, n) => (*n, is_loopback(h), Some(h.as_str())),
    };
    let number = number.to_string();
    entries
        .into_iter()
        .find(|e| {
            let number_ok = e.number.is_empty() || e.number == number.as_bytes();
            let addr_ok = match e.family {
                FAMILY_WILD => true,
                FAMILY_LOCAL => local && e.address == hostname.as_bytes(),
                _ => host.is_some_and(|h| e.address == h.as_bytes() || ip_matches(&e.address, h)),
            };
            number_ok && addr_ok && e.name == b"MIT-MAGIC-COOKIE-1"
        })
        .map(|e| e.data)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

const FAMILY_LOCAL: u16 = 256;
const FAMILY_WILD: u16 = 65535;

fn ip_matches(raw: &[u8], host: &str) -> bool {
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => raw == ip.octets(),
        Ok(std::net::IpAddr::V6(ip)) => raw == ip.octets(),
        Err(_) => false,
    }
}

/// One Xauthority entry.
#[derive(Debug, PartialEq, Eq)]
struct XauthEntry {
    family: u16,
    address: Vec<u8>,
    number: Vec<u8>,
    name: Vec<u8>,
    data: Vec<u8>,
}

/// The Xauthority format: entries of a big-endian u16 family followed by four
/// length-prefixed (big-endian u16) byte strings: address, number, name, data.
fn parse_xauthority(mut bytes: &[u8]) -> Vec<XauthEntry> {
    fn u16be(b: &mut &[u8]) -> Option<u16> {
        let (head, rest) = b.split_first_chunk::<2>()?;
        *b = rest;
        Some(u16::from_be_bytes(*head))
    }
    fn field(b: &mut &[u8]) -> Option<Vec<u8>> {
        let len = usize::from(u16be(b)?);
        if b.len() < len {
            return None;
        }
        let (head, rest) = b.split_at(len);
        *b = rest;
        Some(head.to_vec())
    }
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let entry = (|| {
            Some(XauthEntry {
                family: u16be(&mut bytes)?,
                address: field(&mut bytes)?,
                number: field(&mut bytes)?,
                name: field(&mut bytes)?,
                data: field(&mut bytes)?,
            })
        })();
        match entry {
            Some(e) => entries.push(e),
            None => break,
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_display_names() {
        assert_eq!(DisplayAddr::parse(":0"), Some(DisplayAddr::Local(0)));
        assert_eq!(DisplayAddr::parse(":12.0"), Some(DisplayAddr::Local(12)));
        assert_eq!(DisplayAddr::parse("unix:3"), Some(DisplayAddr::Local(3)));
        assert_eq!(DisplayAddr::parse("unix/:3"), Some(DisplayAddr::Local(3)));
        assert_eq!(
            DisplayAddr::parse("localhost:10.0"),
            Some(DisplayAddr::Tcp("localhost".into(), 10))
        );
        assert_eq!(
            DisplayAddr::parse("tcp/example.org:1"),
            Some(DisplayAddr::Tcp("example.org".into(), 1))
        );
        assert_eq!(
            DisplayAddr::parse("[::1]:2"),
            Some(DisplayAddr::Tcp("::1".into(), 2))
        );
        assert_eq!(
            DisplayAddr::parse("/private/tmp/com.apple.launchd.x/org.xquartz:0"),
            Some(DisplayAddr::Path(
                "/private/tmp/com.apple.launchd.x/org.xquartz".into(),
                0
            ))
        );
        assert_eq!(DisplayAddr::parse("1"), None);
        assert_eq!(DisplayAddr::parse(":x"), None);
    }

    #[test]
    fn unset_display_is_reported() {
        assert_eq!(
            probe_x11(None).unwrap_err(),
            NoDisplay("DISPLAY is not set".into())
        );
        assert!(probe_x11(Some(":987654")).is_err());
    }

    fn entry(family: u16, address: &[u8], number: &[u8], data: &[u8]) -> XauthEntry {
        XauthEntry {
            family,
            address: address.to_vec(),
            number: number.to_vec(),
            name: b"MIT-MAGIC-COOKIE-1".to_vec(),
            data: data.to_vec(),
        }
    }

    #[test]
    fn picks_the_cookie_xlib_would() {
        let entries = || {
            vec![
                entry(FAMILY_LOCAL, b"otherbox", b"0", &[1]),
                entry(FAMILY_LOCAL, b"box", b"0", &[2]),
                entry(FAMILY_LOCAL, b"box", b"10", &[3]),
                entry(0, &[192, 0, 2, 5], b"1", &[4]),
            ]
        };
        let pick = |addr: DisplayAddr| pick_cookie(entries(), &addr, "box");
        assert_eq!(pick(DisplayAddr::Local(0)), Some(vec![2]));
        // ssh X11 forwarding: DISPLAY=localhost:10.0, cookie stored as box/unix:10.
        assert_eq!(
            pick(DisplayAddr::Tcp("localhost".into(), 10)),
            Some(vec![3])
        );
        assert_eq!(
            pick(DisplayAddr::Tcp("127.0.0.1".into(), 10)),
            Some(vec![3])
        );
        assert_eq!(pick(DisplayAddr::Tcp("192.0.2.5".into(), 1)), Some(vec![4]));
        assert_eq!(pick(DisplayAddr::Tcp("192.0.2.6".into(), 1)), None);
        assert_eq!(pick(DisplayAddr::Local(7)), None);
        let wild = vec![entry(FAMILY_WILD, b"", b"", &[9])];
        assert_eq!(
            pick_cookie(wild, &DisplayAddr::Local(7), "box"),
            Some(vec![9])
        );
    }

    #[test]
    fn parses_xauthority_entries() {
        let mut bytes = Vec::new();
        for (family, addr, num, name, data) in [
            (
                256u16,
                &b"box"[..],
                &b"0"[..],
                &b"MIT-MAGIC-COOKIE-1"[..],
                &[1u8, 2, 3][..],
            ),
            (65535, b"", b"7", b"MIT-MAGIC-COOKIE-1", &[9, 9]),
        ] {
            bytes.extend_from_slice(&family.to_be_bytes());
            for f in [addr, num, name, data] {
                bytes.extend_from_slice(&(f.len() as u16).to_be_bytes());
                bytes.extend_from_slice(f);
            }
        }
        bytes.extend_from_slice(&[0, 1, 0]); // truncated trailing entry is ignored
        let entries = parse_xauthority(&bytes);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].family, 256);
        assert_eq!(entries[0].address, b"box");
        assert_eq!(entries[1].number, b"7");
        assert_eq!(entries[1].data, vec![9, 9]);
    }
}
