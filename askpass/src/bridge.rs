//! The bridge: a private Unix socket over which the helper hands a prompt to the
//! application that started ssh, so that the application answers with its own UI.
//!
//! When `PV_ASKPASS_SOCKET` names a socket, `pv-askpass` does not show a dialog. It
//! connects, sends one request line, reads one reply line and prints the answer, exactly
//! as if the user had typed it. The format is defined here, once, for both ends:
//!
//! ```text
//! helper -> app   {"v":1,"prompt":"alice@host's password: ","kind":"password","echo":false,
//!                  "host":"alice@host","fingerprint":null}\n
//! app -> helper   {"v":1,"answer":"s3cret"}\n        (the user answered)
//!             or  {"v":1,"cancel":true}\n            (the user cancelled: exit 1)
//! ```
//!
//! One JSON object per line, UTF-8, at most [`MAX_LINE`] bytes each way. `kind` is a
//! [`PromptKind`] in snake case. For `confirm` an answer of `""` or `"yes"` allows. For
//! `host_key` answer `"yes"` or `"no"`. For `notify` no reply is needed: the helper keeps
//! the connection open until ssh sends it SIGTERM, so the application sees end-of-file
//! when the notification is over and should hide it then.
//!
//! The application's side, blocking (an async server can use [`Request::from_line`] and
//! [`Reply::to_line`] on its own streams, and `tokio::net::UnixListener::from_std` on
//! the listener from [`bind_private`]):
//!
//! ```no_run
//! use pv_askpass::PromptKind;
//! use pv_askpass::bridge::{self, Reply};
//!
//! let dir = std::env::temp_dir().join("my-app-askpass"); // created 0700
//! let (listener, socket) = bridge::bind_private(&dir, "askpass.sock")?;
//! // Start ssh with SSH_ASKPASS=pv-askpass, SSH_ASKPASS_REQUIRE=force and
//! // PV_ASKPASS_SOCKET=<socket>; then, for each prompt:
//! let request = bridge::serve_one(&listener, |req| match req.kind {
//!     PromptKind::HostKey => Reply::answer("no"),
//!     _ => Reply::Cancel, // or ask the user and reply with Reply::answer(text)
//! })?;
//! println!("answered a {} prompt", request.kind.as_str());
//! # let _ = socket;
//! # Ok::<(), bridge::BridgeError>(())
//! ```
//!
//! Security: the socket path is checked before connecting. The socket and its parent
//! directory must be owned by the current user, the directory must not be writable by
//! group or others (so nobody can swap the socket), and the socket must not be reachable
//! by group or others. [`bind_private`] creates a listener that passes these checks.
//! Answers are held in [`Zeroizing`] buffers and wiped when dropped.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::classify::{Prompt, PromptKind};

/// The protocol version carried in every message as `"v"`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The environment variable that names the bridge socket.
pub const SOCKET_ENV: &str = "PV_ASKPASS_SOCKET";

/// The largest request or reply line accepted, newline included (64 KiB; ssh's prompts
/// are far shorter and its reply buffer holds 1023 bytes).
pub const MAX_LINE: usize = 64 * 1024;

/// How long the server side waits for the helper's request once it has connected.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long pv-askpass waits for an answer (a dialog, or the application's reply on the
/// bridge) when `PV_ASKPASS_TIMEOUT` is not set; `PV_ASKPASS_TIMEOUT=0` waits without limit.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// A prompt sent from the helper to the application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub v: u32,
    /// The prompt text exactly as ssh or git passed it (may span lines).
    pub prompt: String,
    /// The helper's classification of the prompt.
    pub kind: PromptKind,
    /// Whether the answer may be shown while typed (one-time codes, user names).
    pub echo: bool,
    /// The host the prompt is about, when the text names it.
    pub host: Option<String>,
    /// The key fingerprint named in the prompt, if any.
    pub fingerprint: Option<String>,
}

impl Request {
    /// Builds the request for a classified prompt.
    pub fn new(prompt: &Prompt) -> Request {
        Request {
            v: PROTOCOL_VERSION,
            prompt: prompt.text.clone(),
            kind: prompt.kind,
            echo: prompt.kind.echo(),
            host: prompt.host.clone(),
            fingerprint: prompt.fingerprint.clone(),
        }
    }

    /// Encodes the request as one JSON line (newline included).
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("a Request always serialises");
        line.push(b'\n');
        line
    }

    /// Decodes one request line (with or without its newline), checking the version.
    pub fn from_line(line: &[u8]) -> Result<Request, BridgeError> {
        let request: Request = serde_json::from_slice(trim_newline(line))
            .map_err(|e| BridgeError::Malformed(e.to_string()))?;
        check_version(request.v)?;
        Ok(request)
    }
}

/// The application's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The user answered; the helper prints this text and a newline, then exits 0.
    Answer(Zeroizing<String>),
    /// The user cancelled; the helper prints nothing and exits 1.
    Cancel,
}

/// The wire form of a [`Reply`]: `{"v":1,"answer":"…"}` or `{"v":1,"cancel":true}`
/// (written; [`WireReplyShape`] and [`answer_of`] read it).
#[derive(Serialize)]
struct WireReply {
    v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    answer: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    cancel: bool,
}

/// A reply line as serde_json checks it: the answer's string is only skipped (serde_json
/// would decode an escaped string through a scratch buffer of its own, which nothing
/// wipes); [`answer_of`] decodes it from the line instead.
#[derive(Deserialize)]
struct WireReplyShape {
    v: u32,
    #[serde(default)]
    answer: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    cancel: bool,
}

impl Drop for WireReply {
    fn drop(&mut self) {
        if let Some(answer) = self.answer.as_mut() {
            zeroize::Zeroize::zeroize(answer);
        }
    }
}

impl Reply {
    /// An answer from anything string-like.
    pub fn answer(text: impl Into<String>) -> Reply {
        Reply::Answer(Zeroizing::new(text.into()))
    }

    /// Encodes the reply as one JSON line (newline included), in a buffer wiped on drop.
    pub fn to_line(&self) -> Zeroizing<Vec<u8>> {
        let wire = match self {
            Reply::Answer(text) => WireReply {
                v: PROTOCOL_VERSION,
                answer: Some(String::from(text.as_str())),
                cancel: false,
            },
            Reply::Cancel => WireReply {
                v: PROTOCOL_VERSION,
                answer: None,
                cancel: true,
            },
        };
        // Sized up front (JSON escapes take at most 6 bytes per byte) so the buffer is
        // never reallocated, which would leave an unwiped copy of the answer behind.
        let answer_len = wire.answer.as_ref().map_or(0, String::len);
        let mut line = Zeroizing::new(Vec::with_capacity(answer_len * 6 + 48));
        serde_json::to_writer(&mut *line, &wire).expect("a reply always serialises");
        line.push(b'\n');
        line
    }

    /// Decodes one reply line (with or without its newline), checking the version.
    /// A reply with both an answer and `cancel: true` is a cancel.
    pub fn from_line(line: &[u8]) -> Result<Reply, BridgeError> {
        let line = trim_newline(line);
        let wire: WireReplyShape =
            serde_json::from_slice(line).map_err(|e| BridgeError::Malformed(e.to_string()))?;
        check_version(wire.v)?;
        if wire.cancel {
            return Ok(Reply::Cancel);
        }
        match wire.answer.and_then(|_| answer_of(line)) {
            Some(answer) => Ok(Reply::Answer(answer)),
            None => Err(BridgeError::Malformed(
                "a reply needs \"answer\" or \"cancel\": true".into(),
            )),
        }
    }
}

/// What can go wrong on the bridge. Messages never contain an answer.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The socket or its directory failed the ownership and permission checks.
    #[error("refusing askpass socket {path}: {reason}")]
    Insecure {
        /// The path that was checked.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// Connecting, reading or writing failed (including a read deadline passing).
    #[error("askpass socket {what}: {source}")]
    Io {
        /// The step that failed.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The peer closed the connection before a complete line arrived.
    #[error("askpass socket closed before a complete {0} arrived")]
    Closed(&'static str),
    /// A line was longer than [`MAX_LINE`].
    #[error("askpass socket sent a line longer than {MAX_LINE} bytes")]
    TooLong,
    /// A line was not valid JSON for the message expected.
    #[error("askpass socket sent a malformed message: {0}")]
    Malformed(String),
    /// The peer speaks another protocol version.
    #[error("askpass socket speaks protocol version {0}, this helper speaks {PROTOCOL_VERSION}")]
    Version(u32),
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> BridgeError {
    move |source| BridgeError::Io { what, source }
}

fn check_version(v: u32) -> Result<(), BridgeError> {
    if v == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(BridgeError::Version(v))
    }
}

/// The top-level `"answer"` string of a reply line that serde_json has already checked
/// (one JSON object, valid UTF-8, no duplicate field), decoded straight into a buffer that
/// is wiped on drop and never reallocated (a decoded string is never longer than its
/// literal). `None`: no such key, or `null`.
fn answer_of(line: &[u8]) -> Option<Zeroizing<String>> {
    let mut scan = Scan { bytes: line, at: 0 };
    scan.skip_ws();
    scan.eat(b'{')?;
    loop {
        scan.skip_ws();
        if scan.peek()? == b'}' {
            return None;
        }
        let key = scan.string()?;
        scan.skip_ws();
        scan.eat(b':')?;
        scan.skip_ws();
        if key.as_str() == "answer" {
            return match scan.peek()? {
                b'"' => scan.string(),
                _ => None,
            };
        }
        scan.skip_value()?;
        scan.skip_ws();
        if scan.peek()? == b',' {
            scan.at += 1;
        }
    }
}

/// A cursor over a JSON text already known to be valid.
struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.at..self.at + 4)?;
        self.at += 4;
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    }

    /// A string literal, decoded into a wiped buffer sized for the rest of the line.
    fn string(&mut self) -> Option<Zeroizing<String>> {
        self.eat(b'"')?;
        let mut out = Zeroizing::new(Vec::with_capacity(self.bytes.len() - self.at));
        loop {
            match self.next()? {
                b'"' => break,
                b'\\' => {
                    let unescaped = match self.next()? {
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let high = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&high) {
                                self.eat(b'\\')?;
                                self.eat(b'u')?;
                                let low = self.hex4()?;
                                0x10000 + ((high - 0xD800) << 10) + (low.checked_sub(0xDC00)?)
                            } else {
                                high
                            };
                            char::from_u32(code)?
                        }
                        other => char::from(other),
                    };
                    let mut utf8 = Zeroizing::new([0u8; 4]);
                    out.extend_from_slice(unescaped.encode_utf8(&mut *utf8).as_bytes());
                }
                b => out.push(b),
            }
        }
        let bytes = std::mem::take(&mut *out);
        match String::from_utf8(bytes) {
            Ok(text) => Some(Zeroizing::new(text)),
            Err(e) => {
                drop(Zeroizing::new(e.into_bytes()));
                None
            }
        }
    }

    /// Skip one value: a string, an object or array (with what it holds), or a literal.
    fn skip_value(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    while self.next()? != b'"' {
                        if self.bytes[self.at - 1] == b'\\' {
                            self.at += 1;
                        }
                    }
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.at += 1;
                }
                b'}' | b']' if depth > 0 => {
                    depth -= 1;
                    self.at += 1;
                }
                b',' | b'}' | b']' if depth == 0 => return Some(()),
                _ => self.at += 1,
            }
            if depth == 0 && matches!(self.peek(), Some(b',' | b'}' | b']')) {
                return Some(());
            }
        }
    }
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Checks that `path` is a socket that only the current user can reach: the socket and
/// its parent directory are owned by the current user, the directory is not writable by
/// group or others, and the socket has no group or other permission bits.
///
/// Symbolic links are not followed for the socket itself (a link is refused).
pub fn check_socket_path(path: &Path) -> Result<(), BridgeError> {
    let refuse = |reason: String| BridgeError::Insecure {
        path: path.to_owned(),
        reason,
    };
    let uid = nix::unistd::getuid().as_raw();
    let meta = fs::symlink_metadata(path).map_err(|e| refuse(e.to_string()))?;
    if meta.file_type().is_symlink() {
        return Err(refuse("it is a symbolic link".into()));
    }
    if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
        return Err(refuse("it is not a socket".into()));
    }
    if meta.uid() != uid {
        return Err(refuse(format!(
            "it is owned by uid {}, not by the current user (uid {uid})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "its mode {:04o} lets group or others connect (want 0600 or stricter)",
            meta.mode() & 0o7777
        )));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let dir = fs::metadata(&parent).map_err(|e| refuse(format!("its directory: {e}")))?;
    if dir.uid() != uid {
        return Err(refuse(format!(
            "its directory {} is owned by uid {}, not by the current user (uid {uid})",
            parent.display(),
            dir.uid()
        )));
    }
    if dir.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "its directory {} has mode {:04o}: group or others could replace the socket",
            parent.display(),
            dir.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Reads one line of at most [`MAX_LINE`] bytes straight into a buffer wiped on drop.
///
/// No `BufReader`: its internal buffer would keep a copy of the answer that nothing wipes.
/// The buffer has its full size up front, so it never reallocates (which would leave an
/// unwiped copy behind). Bytes after the newline are not part of the line (the protocol
/// sends one line each way); they are wiped with the buffer.
fn read_line(
    reader: &mut impl Read,
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>, BridgeError> {
    let mut line = Zeroizing::new(vec![0u8; MAX_LINE]);
    let mut filled = 0;
    loop {
        let n = match reader.read(&mut line[filled..]) {
            Ok(0) => return Err(BridgeError::Closed(what)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(what)(e)),
        };
        if let Some(at) = line[filled..filled + n].iter().position(|&b| b == b'\n') {
            line.truncate(filled + at + 1);
            return Ok(line);
        }
        filled += n;
        if filled == MAX_LINE {
            return Err(BridgeError::TooLong);
        }
    }
}

/// The helper's side: checks the socket, sends the request for `prompt` and waits for the
/// reply, at most `reply_timeout` (`None` waits without limit, as a notification does).
///
/// For a [`PromptKind::Notify`] prompt the application may never reply; the helper then
/// waits here until ssh ends it with SIGTERM, and end-of-file without a reply is a
/// [`Reply::Cancel`].
pub fn ask(
    socket: &Path,
    prompt: &Prompt,
    reply_timeout: Option<Duration>,
) -> Result<Reply, BridgeError> {
    check_socket_path(socket)?;
    let stream = UnixStream::connect(socket).map_err(io_err("connect"))?;
    stream
        .set_write_timeout(Some(REQUEST_TIMEOUT))
        .map_err(io_err("set write timeout"))?;
    stream
        .set_read_timeout(reply_timeout)
        .map_err(io_err("set read timeout"))?;
    (&stream)
        .write_all(&Request::new(prompt).to_line())
        .map_err(io_err("write request"))?;
    match read_line(&mut &stream, "reply") {
        Ok(line) => Reply::from_line(&line),
        Err(BridgeError::Closed(_)) if prompt.kind == PromptKind::Notify => Ok(Reply::Cancel),
        Err(e) => Err(e),
    }
}

/// The application's side: reads one request from a connection the listener accepted,
/// waiting at most [`REQUEST_TIMEOUT`].
pub fn read_request(stream: &UnixStream) -> Result<Request, BridgeError> {
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(io_err("set read timeout"))?;
    let line = read_line(&mut &*stream, "request")?;
    Request::from_line(&line)
}

/// The application's side: writes the reply to a request.
pub fn write_reply(stream: &UnixStream, reply: &Reply) -> Result<(), BridgeError> {
    stream
        .set_write_timeout(Some(REQUEST_TIMEOUT))
        .map_err(io_err("set write timeout"))?;
    let mut writer = stream;
    writer
        .write_all(&reply.to_line())
        .map_err(io_err("write reply"))?;
    writer.flush().map_err(io_err("write reply"))
}

/// The application's side, in one call: accepts one connection, reads its request,
/// asks `answer` for the reply and writes it. Returns the request that was answered.
pub fn serve_one(
    listener: &UnixListener,
    answer: impl FnOnce(&Request) -> Reply,
) -> Result<Request, BridgeError> {
    let (stream, _) = listener.accept().map_err(io_err("accept"))?;
    let request = read_request(&stream)?;
    let reply = answer(&request);
    write_reply(&stream, &reply)?;
    Ok(request)
}

/// Creates `dir` (mode 0700) if needed, checks it is private, and binds a listener on
/// `dir/name` with mode 0600: a socket that [`check_socket_path`] accepts. Set
/// [`SOCKET_ENV`] to the returned path in the environment of the ssh or git you start.
pub fn bind_private(dir: &Path, name: &str) -> Result<(UnixListener, PathBuf), BridgeError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
        .map_err(io_err("create directory"))?;
    let path = dir.join(name);
    // Tighten the directory in case it existed with looser permissions we own.
    let meta = fs::metadata(dir).map_err(io_err("stat directory"))?;
    if meta.mode() & 0o077 != 0 && meta.uid() == nix::unistd::getuid().as_raw() {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod directory"))?;
    }
    let listener = UnixListener::bind(&path).map_err(io_err("bind"))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
        .map_err(io_err("chmod socket"))?;
    check_socket_path(&path)?;
    Ok((listener, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Hint, classify};

    #[test]
    fn request_round_trips() {
        let prompt = classify("alice@h's password: ", Hint::None);
        let line = Request::new(&prompt).to_line();
        assert!(line.ends_with(b"\n"));
        let text = String::from_utf8(line.clone()).unwrap();
        assert!(text.starts_with("{\"v\":1,"), "{text}");
        assert!(text.contains("\"kind\":\"password\""), "{text}");
        let back = Request::from_line(&line).unwrap();
        assert_eq!(back, Request::new(&prompt));
    }

    #[test]
    fn replies_round_trip() {
        let line = Reply::answer("s3 cr\"et@\n").to_line();
        assert_eq!(
            Reply::from_line(&line).unwrap(),
            Reply::answer("s3 cr\"et@\n")
        );
        let line = Reply::Cancel.to_line();
        assert_eq!(&line[..], b"{\"v\":1,\"cancel\":true}\n");
        assert_eq!(Reply::from_line(&line).unwrap(), Reply::Cancel);
        assert_eq!(
            Reply::from_line(b"{\"v\":1,\"answer\":\"x\",\"cancel\":true}").unwrap(),
            Reply::Cancel
        );
    }

    /// Answers are decoded from the line itself (not through serde_json's unwiped scratch
    /// buffer), exactly as serde_json decodes them: every escape, surrogate pairs, unknown
    /// fields before the answer (holding an "answer" of their own), null.
    #[test]
    fn answers_decode_from_the_line_as_serde_json_does() {
        for answer in [
            "",
            "plain",
            "s3 cr\"et@\n",
            "\\/\u{8}\u{c}\n\r\t\u{1}\u{1f}",
            "h\u{e9}llo \u{1F600} \u{FFFF} \u{7f}",
        ] {
            let line = Reply::answer(answer).to_line();
            let Reply::Answer(got) = Reply::from_line(&line).unwrap() else {
                panic!("an answer")
            };
            assert_eq!(got.as_str(), answer);
        }
        let lines: [&[u8]; 4] = [
            br#"{"x":{"answer":"no","y":[1,"]}",{}]},"z":"\"","v":1,"answer":"\ud83d\ude00\/"}"#,
            br#" { "v" : 1 , "answer" : "a\u00e9\"b" } "#,
            br#"{"answer":"first","v":1,"other":null}"#,
            br#"{"v":1,"n":-1.5e3,"t":true,"answer":"\\"}"#,
        ];
        for line in lines {
            let expected: serde_json::Value = serde_json::from_slice(line).unwrap();
            let Reply::Answer(got) = Reply::from_line(line).unwrap() else {
                panic!("an answer")
            };
            assert_eq!(got.as_str(), expected["answer"].as_str().unwrap());
        }
        // Many strings of characters from every range (control, ASCII, quotes and
        // backslashes, two- to four-byte UTF-8), after a field that holds them too; each
        // also with its non-ASCII characters written as \u escapes (surrogate pairs).
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as u32
        };
        let ranges = [
            (0u32, 0x20u32),
            (0x20, 0x7f),
            (0x7f, 0x800),
            (0x800, 0xd800),
            (0xe000, 0x11_0000),
        ];
        for _ in 0..2000 {
            let len = next() % 12;
            let text: String = (0..len)
                .filter_map(|_| {
                    let (lo, hi) = ranges[(next() % 5) as usize];
                    match next() % 4 {
                        0 => Some(['"', '\\', '/'][(next() % 3) as usize]),
                        _ => char::from_u32(lo + next() % (hi - lo)),
                    }
                })
                .collect();
            let plain = serde_json::json!({"w": {"answer": &text}, "v": 1, "answer": &text});
            let plain = serde_json::to_string(&plain).unwrap();
            let mut escaped = String::new();
            for c in plain.chars() {
                if c.is_ascii() {
                    escaped.push(c);
                } else {
                    for unit in c.encode_utf16(&mut [0; 2]) {
                        escaped.push_str(&format!("\\u{unit:04x}"));
                    }
                }
            }
            for line in [plain, escaped] {
                let Reply::Answer(got) = Reply::from_line(line.as_bytes()).unwrap() else {
                    panic!("an answer")
                };
                assert_eq!(got.as_str(), text, "{line}");
            }
        }
        assert!(matches!(
            Reply::from_line(br#"{"v":1,"answer":null}"#),
            Err(BridgeError::Malformed(_))
        ));
    }

    #[test]
    fn bad_lines_are_rejected() {
        assert!(matches!(
            Reply::from_line(b"{\"v\":2,\"answer\":\"x\"}"),
            Err(BridgeError::Version(2))
        ));
        assert!(matches!(
            Reply::from_line(b"{\"v\":1}"),
            Err(BridgeError::Malformed(_))
        ));
        assert!(matches!(
            Reply::from_line(b"garbage"),
            Err(BridgeError::Malformed(_))
        ));
        assert!(matches!(
            Request::from_line(b"{\"v\":1,\"prompt\":\"p\",\"kind\":\"bogus\",\"echo\":false,\"host\":null,\"fingerprint\":null}"),
            Err(BridgeError::Malformed(_))
        ));
    }

    #[test]
    fn long_lines_are_cut_off() {
        let long = vec![b'a'; MAX_LINE + 10];
        assert!(matches!(
            read_line(&mut &long[..], "reply"),
            Err(BridgeError::TooLong)
        ));
        assert!(matches!(
            read_line(&mut &b"{\"v\":1"[..], "reply"),
            Err(BridgeError::Closed("reply"))
        ));
    }

    /// Hands out its input a few bytes per read, as a socket may.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(3);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_line_is_read_straight_from_the_stream_in_pieces() {
        let line = read_line(&mut Trickle(b"{\"v\":1,\"answer\":\"pw\"}\n"), "reply").unwrap();
        assert_eq!(&line[..], b"{\"v\":1,\"answer\":\"pw\"}\n");
        // A reply the buffer holds whole, and whatever followed it on the same read, is cut
        // at the newline (and wiped with the buffer).
        let line = read_line(&mut &b"{\"v\":1,\"cancel\":true}\ntrailing"[..], "reply").unwrap();
        assert_eq!(&line[..], b"{\"v\":1,\"cancel\":true}\n");
        assert!(line.capacity() >= MAX_LINE, "sized once, never regrown");
    }

    /// The real socket path, both ends, with an answer that needs JSON escapes.
    #[test]
    fn an_answer_crosses_a_real_socket() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, socket) = bind_private(&dir.path().join("b"), "s").unwrap();
        let server =
            std::thread::spawn(move || serve_one(&listener, |_| Reply::answer("p\"w\\1")).unwrap());
        let prompt = classify("alice@h's password: ", Hint::None);
        let reply = ask(&socket, &prompt, Some(Duration::from_secs(10))).unwrap();
        assert_eq!(reply, Reply::answer("p\"w\\1"));
        assert_eq!(server.join().unwrap().kind, PromptKind::Password);
    }
}
