//! Server resources: the URIs ParaView uses to say where a server is and who dials whom.
//!
//! | form | meaning |
//! | --- | --- |
//! | `builtin:` | the server runs inside this process |
//! | `cs://host[:port]` | forward: the client dials a listening server |
//! | `csrc://[host][:port]` | reverse: the client listens, the server dials back |
//! | `cdsrs://ds[:port]//rs[:port]` | forward to a data server and a render server |
//! | `cdsrsrc://[ds][:port]//[rs][:port]` | reverse from a data server and a render server |
//!
//! Each network form has a TLS spelling with `+tls` after the scheme: `cs+tls://host:11111`,
//! `csrc+tls://:11111`, `cdsrs+tls://a//b`, `cdsrsrc+tls://a//b`. (`+` is legal in a URI scheme,
//! and the plain scheme stays readable in front of it.) Default ports are 11111 for a server or
//! data server and 22221 for a render server. IPv6 literals go in brackets: `cs://[::1]:11111`.
//! Between the data and the render part, one or two slashes are accepted, as ParaView does.
//!
//! Parsing then printing gives back an equal [`Resource`]; [`ResourceError`] points at the
//! offending character.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Port of a server or data server when the resource names none.
pub const DEFAULT_SERVER_PORT: u16 = 11111;
/// Port of a render server when the resource names none.
pub const DEFAULT_RENDER_SERVER_PORT: u16 = 22221;

/// Who dials whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The client dials a listening server (`cs`, `cdsrs`).
    Forward,
    /// The client listens and the server dials back (`csrc`, `cdsrsrc`).
    Reverse,
}

/// A host as written in a resource.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name or a bare name such as `localhost` (letters, digits, `-`, `_`, `.`).
    Name(String),
    /// A dotted IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 address, written in brackets.
    Ipv6(Ipv6Addr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ipv4(a) => write!(f, "{a}"),
            Host::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

impl Host {
    /// The host in the form a socket address lookup takes (IPv6 without brackets).
    pub fn to_lookup_string(&self) -> String {
        match self {
            Host::Name(n) => n.clone(),
            Host::Ipv4(a) => a.to_string(),
            Host::Ipv6(a) => a.to_string(),
        }
    }
}

/// One host-and-port part of a resource; either half may be absent where the form allows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The host, if written.
    pub host: Option<Host>,
    /// The port, if written (`None` means the default for that part).
    pub port: Option<u16>,
}

impl Endpoint {
    /// The written port, or `default`.
    pub fn port_or(&self, default: u16) -> u16 {
        self.port.unwrap_or(default)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(h) = &self.host {
            write!(f, "{h}")?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// Where a server is and how the connection is made.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `builtin:`: an in-process server.
    Builtin,
    /// `cs://` or `csrc://` (and their `+tls` forms): one server process.
    ClientServer {
        /// Forward (`cs`) or reverse (`csrc`).
        direction: Direction,
        /// Whether the connection runs inside TLS.
        tls: bool,
        /// The server's host and port.
        server: Endpoint,
    },
    /// `cdsrs://` or `cdsrsrc://` (and their `+tls` forms): a data server and a render server.
    DataRender {
        /// Forward (`cdsrs`) or reverse (`cdsrsrc`).
        direction: Direction,
        /// Whether the connections run inside TLS.
        tls: bool,
        /// The data server's host and port (default port 11111).
        data: Endpoint,
        /// The render server's host and port (default port 22221).
        render: Endpoint,
    },
}

impl Resource {
    /// The scheme as printed, e.g. `cs`, `csrc+tls`, `builtin`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Resource::Builtin => "builtin",
            Resource::ClientServer { direction, tls, .. } => match (direction, tls) {
                (Direction::Forward, false) => "cs",
                (Direction::Forward, true) => "cs+tls",
                (Direction::Reverse, false) => "csrc",
                (Direction::Reverse, true) => "csrc+tls",
            },
            Resource::DataRender { direction, tls, .. } => match (direction, tls) {
                (Direction::Forward, false) => "cdsrs",
                (Direction::Forward, true) => "cdsrs+tls",
                (Direction::Reverse, false) => "cdsrsrc",
                (Direction::Reverse, true) => "cdsrsrc+tls",
            },
        }
    }

    /// Forward or reverse; `None` for `builtin:`.
    pub fn direction(&self) -> Option<Direction> {
        match self {
            Resource::Builtin => None,
            Resource::ClientServer { direction, .. } | Resource::DataRender { direction, .. } => {
                Some(*direction)
            }
        }
    }

    /// Whether the connection runs inside TLS.
    pub fn is_tls(&self) -> bool {
        match self {
            Resource::Builtin => false,
            Resource::ClientServer { tls, .. } | Resource::DataRender { tls, .. } => *tls,
        }
    }

    /// The same resource with TLS switched on or off (no effect on `builtin:`).
    pub fn with_tls(mut self, on: bool) -> Self {
        match &mut self {
            Resource::Builtin => {}
            Resource::ClientServer { tls, .. } | Resource::DataRender { tls, .. } => *tls = on,
        }
        self
    }

    /// The endpoints a client must reach or listen on, with the default port filled in
    /// for each: one for `cs`/`csrc`, two (data, render) for `cdsrs`/`cdsrsrc`.
    pub fn endpoints(&self) -> Vec<(Option<&Host>, u16)> {
        match self {
            Resource::Builtin => vec![],
            Resource::ClientServer { server, .. } => {
                vec![(server.host.as_ref(), server.port_or(DEFAULT_SERVER_PORT))]
            }
            Resource::DataRender { data, render, .. } => vec![
                (data.host.as_ref(), data.port_or(DEFAULT_SERVER_PORT)),
                (
                    render.host.as_ref(),
                    render.port_or(DEFAULT_RENDER_SERVER_PORT),
                ),
            ],
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Builtin => f.write_str("builtin:"),
            Resource::ClientServer { server, .. } => write!(f, "{}://{server}", self.scheme()),
            Resource::DataRender { data, render, .. } => {
                write!(f, "{}://{data}//{render}", self.scheme())
            }
        }
    }
}

/// A resource string that does not parse; `offset` is the byte offset of the offending
/// character (the string's length when something is missing at the end).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid server resource {input:?} at column {column}: {message}\n  {input}\n  {caret}", column = offset + 1, caret = caret(input, *offset))]
pub struct ResourceError {
    /// The whole input.
    pub input: String,
    /// Byte offset of the problem.
    pub offset: usize,
    /// What is wrong there.
    pub message: String,
}

impl ResourceError {
    /// The resource and, under it, a caret at the offending character: two lines, each
    /// indented by two spaces (what `Display` ends with), for a caller that says where the
    /// resource was written in its own words.
    pub fn pointer(&self) -> String {
        format!("  {}\n  {}", self.input, caret(&self.input, self.offset))
    }
}

fn caret(input: &str, offset: usize) -> String {
    let width = input
        .get(..offset)
        .map_or(offset, |prefix| prefix.chars().count());
    format!("{}^", " ".repeat(width))
}

impl FromStr for Resource {
    type Err = ResourceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Parser { input, pos: 0 }.resource()
    }
}

impl Resource {
    /// Parse a resource string (same as `str::parse`).
    pub fn parse(input: &str) -> Result<Self, ResourceError> {
        input.parse()
    }
}

/// A small cursor-based parser; every error carries the byte offset where it was found.
struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, offset: usize, message: impl Into<String>) -> ResourceError {
        ResourceError {
            input: self.input.to_string(),
            offset,
            message: message.into(),
        }
    }

    fn rest(&self) -> &str {
        &self.input[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn resource(mut self) -> Result<Resource, ResourceError> {
        let Some(colon) = self.input.find(':') else {
            return Err(self.err(
                self.input.len(),
                "expected a scheme such as `cs://`, `csrc://`, `cdsrs://`, `cdsrsrc://` or `builtin:`",
            ));
        };
        let scheme = self.input[..colon].to_ascii_lowercase();
        let (base, tls) = match scheme.strip_suffix("+tls") {
            Some(b) => (b, true),
            None => (scheme.as_str(), false),
        };
        self.pos = colon + 1;
        let (direction, pair) = match base {
            "builtin" if !tls => {
                if !self.rest().is_empty() {
                    return Err(self.err(self.pos, "nothing may follow `builtin:`"));
                }
                return Ok(Resource::Builtin);
            }
            "builtin" => return Err(self.err(colon - 4, "`builtin:` has no TLS form")),
            "cs" => (Direction::Forward, false),
            "csrc" => (Direction::Reverse, false),
            "cdsrs" => (Direction::Forward, true),
            "cdsrsrc" => (Direction::Reverse, true),
            _ => {
                return Err(self.err(
                    0,
                    format!(
                        "unknown scheme `{}`; expected cs, csrc, cdsrs, cdsrsrc (each optionally +tls) or builtin",
                        &self.input[..colon]
                    ),
                ));
            }
        };
        if !self.eat("//") {
            return Err(self.err(self.pos, "expected `//` after the scheme"));
        }
        let host_required = direction == Direction::Forward;
        let first = self.endpoint(host_required, pair)?;
        let resource = if pair {
            // One or two slashes separate the data server from the render server.
            if !self.eat("/") {
                return Err(self.err(
                    self.pos,
                    "expected `//` between the data server and the render server",
                ));
            }
            self.eat("/");
            let render = self.endpoint(host_required, false)?;
            Resource::DataRender {
                direction,
                tls,
                data: first,
                render,
            }
        } else {
            Resource::ClientServer {
                direction,
                tls,
                server: first,
            }
        };
        if self.pos < self.input.len() {
            return Err(self.err(
                self.pos,
                format!(
                    "unexpected `{}`; a resource ends after the port",
                    self.peek().unwrap_or(' ').escape_default()
                ),
            ));
        }
        Ok(resource)
    }

    /// `[host][:port]`; stops before `/` when `stop_at_slash` (the data part of a pair).
    fn endpoint(
        &mut self,
        host_required: bool,
        stop_at_slash: bool,
    ) -> Result<Endpoint, ResourceError> {
        let host = self.host()?;
        if host.is_none() && host_required {
            return Err(self.err(
                self.pos,
                "a forward resource needs a host to dial, e.g. `cs://localhost:11111`",
            ));
        }
        let port = if self.eat(":") {
            Some(self.port()?)
        } else {
            None
        };
        match self.peek() {
            None => {}
            Some('/') if stop_at_slash => {}
            Some(c) => {
                return Err(self.err(
                    self.pos,
                    format!(
                        "unexpected `{}` after the host and port",
                        c.escape_default()
                    ),
                ));
            }
        }
        Ok(Endpoint { host, port })
    }

    fn host(&mut self) -> Result<Option<Host>, ResourceError> {
        let start = self.pos;
        if self.eat("[") {
            let Some(end) = self.rest().find(']') else {
                return Err(self.err(start, "`[` opens an IPv6 address that is never closed"));
            };
            let text = &self.input[self.pos..self.pos + end];
            let addr = text
                .parse::<Ipv6Addr>()
                .map_err(|_| self.err(self.pos, format!("`{text}` is not an IPv6 address")))?;
            self.pos += end + 1;
            return Ok(Some(Host::Ipv6(addr)));
        }
        let len = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'))
            .unwrap_or(self.rest().len());
        if len == 0 {
            return Ok(None);
        }
        let text = &self.input[start..start + len];
        if text.starts_with('-') || text.starts_with('.') {
            return Err(self.err(start, "a host name may not start with `-` or `.`"));
        }
        self.pos += len;
        if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            let addr = text
                .parse::<Ipv4Addr>()
                .map_err(|_| self.err(start, format!("`{text}` is not an IPv4 address")))?;
            return Ok(Some(Host::Ipv4(addr)));
        }
        Ok(Some(Host::Name(text.to_string())))
    }

    fn port(&mut self) -> Result<u16, ResourceError> {
        let start = self.pos;
        let len = self
            .rest()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.rest().len());
        if len == 0 {
            return Err(self.err(start, "expected a port number after `:`"));
        }
        let text = &self.input[start..start + len];
        let port = text
            .parse::<u32>()
            .ok()
            .filter(|p| *p <= u32::from(u16::MAX))
            .ok_or_else(|| self.err(start, format!("port {text} is out of range 0-65535")))?;
        self.pos += len;
        Ok(port as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Resource {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn paraview_forms_parse_with_defaults() {
        assert_eq!(p("builtin:"), Resource::Builtin);
        let r = p("cs://localhost");
        assert_eq!(
            r.endpoints(),
            vec![(Some(&Host::Name("localhost".into())), 11111)]
        );
        let r = p("csrc://:4444");
        assert_eq!(r.direction(), Some(Direction::Reverse));
        assert_eq!(r.endpoints(), vec![(None, 4444)]);
        assert_eq!(p("csrc://").endpoints(), vec![(None, 11111)]);
        let r = p("cdsrs://ds:1//rs");
        assert_eq!(r.endpoints()[1].1, DEFAULT_RENDER_SERVER_PORT);
        assert_eq!(p("cdsrs://ds:1/rs:2"), p("cdsrs://ds:1//rs:2"));
        assert_eq!(
            p("cdsrsrc:////").endpoints(),
            vec![(None, 11111), (None, 22221)]
        );
        assert_eq!(p("CS://h:1").scheme(), "cs");
    }

    #[test]
    fn tls_and_ipv6_forms() {
        let r = p("cs+tls://[::1]:5000");
        assert!(r.is_tls());
        assert_eq!(r.to_string(), "cs+tls://[::1]:5000");
        assert_eq!(
            p("cdsrsrc+tls://:1//:2").to_string(),
            "cdsrsrc+tls://:1//:2"
        );
        assert_eq!(
            p("cs://10.0.0.1:7").endpoints()[0].0,
            Some(&Host::Ipv4(Ipv4Addr::new(10, 0, 0, 1)))
        );
    }

    #[test]
    fn errors_point_at_the_offending_character() {
        let cases = [
            ("cs://host:70000", 10, "out of range"),
            ("cs://host:", 10, "expected a port"),
            ("cs://:11111", 5, "needs a host"),
            ("cs://ho st", 7, "unexpected ` `"),
            ("cs://host:1/path", 11, "unexpected `/`"),
            ("xs://host", 0, "unknown scheme"),
            ("cs:host", 3, "expected `//`"),
            ("cs://[::1", 5, "never closed"),
            ("cs://[nope]", 6, "not an IPv6"),
            ("cs://-oProxyCommand=x", 5, "may not start with `-`"),
            ("cdsrs://a:1", 11, "between the data server"),
            ("builtin:x", 8, "nothing may follow"),
            ("localhost", 9, "expected a scheme"),
            ("cs://999.1.1.1", 5, "not an IPv4"),
        ];
        for (input, offset, needle) in cases {
            let e = input.parse::<Resource>().expect_err(input);
            assert_eq!(e.offset, offset, "{input}: {e}");
            assert!(e.message.contains(needle), "{input}: {e}");
            assert!(e.to_string().contains('^'), "{e}");
        }
    }

    fn host() -> impl Strategy<Value = Host> {
        prop_oneof![
            "[a-z][a-z0-9_-]{0,10}(\\.[a-z0-9][a-z0-9-]{0,6}){0,2}".prop_map(Host::Name),
            any::<[u8; 4]>().prop_map(|o| Host::Ipv4(Ipv4Addr::from(o))),
            any::<[u16; 8]>().prop_map(|s| Host::Ipv6(Ipv6Addr::from(s))),
        ]
    }

    fn endpoint(host_required: bool) -> impl Strategy<Value = Endpoint> {
        let h = if host_required {
            host().prop_map(Some).boxed()
        } else {
            proptest::option::of(host()).boxed()
        };
        (h, proptest::option::of(any::<u16>())).prop_map(|(host, port)| Endpoint { host, port })
    }

    fn resource() -> impl Strategy<Value = Resource> {
        let dir = prop_oneof![Just(Direction::Forward), Just(Direction::Reverse)];
        prop_oneof![
            Just(Resource::Builtin),
            (dir.clone(), any::<bool>()).prop_flat_map(|(direction, tls)| {
                endpoint(direction == Direction::Forward).prop_map(move |server| {
                    Resource::ClientServer {
                        direction,
                        tls,
                        server,
                    }
                })
            }),
            (dir, any::<bool>()).prop_flat_map(|(direction, tls)| {
                let fwd = direction == Direction::Forward;
                (endpoint(fwd), endpoint(fwd)).prop_map(move |(data, render)| {
                    Resource::DataRender {
                        direction,
                        tls,
                        data,
                        render,
                    }
                })
            }),
        ]
    }

    proptest! {
        #[test]
        fn print_then_parse_round_trips(r in resource()) {
            let printed = r.to_string();
            let back: Resource = printed.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(&back, &r);
            prop_assert_eq!(back.to_string(), printed);
        }

        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Resource>();
        }
    }
}
