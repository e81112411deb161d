//! The launch channel's exchange with a started command, written once for every start
//! (a local child, an OpenSSH mux client, a russh channel): the secrets line in; the
//! output read line by line, with the ready line (and, from the remote cleanup wrapper,
//! its process-group line) picked out, every other line passed on and the last stderr
//! lines kept for error messages; then ParaView's rules for how a start is awaited — a
//! ready line within a timeout, or a delay, or the command's exit, where exit 0 before
//! the server is ready means the server detached.

use std::collections::VecDeque;
use std::future::Future;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pv_transport::launch::{ReadyLine, Secrets};
use regex_lite::Regex;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use crate::events::{Event, EventSender, Stage};
use crate::plan::ssh::PGID_PREFIX;
use crate::profile::Delay;

/// How many stderr lines a failure report keeps.
pub const STDERR_TAIL_LINES: usize = 20;

/// The wait for a ready line when the plan sets no process start timeout
/// (`process_start_timeout = 0`, ParaView's `process_wait` ≤ 0): no limit, in practice —
/// a year, which keeps every deadline computed from it in range. Ctrl-C or the server's
/// exit still ends the wait.
pub const UNLIMITED_READY_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long a command that closed its output may take to exit before it counts as
/// still running.
pub(crate) const EXIT_GRACE: Duration = Duration::from_secs(2);

/// A line the started command wrote (the ready line and the wrapper's own line
/// excluded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputLine {
    /// On stdout.
    Stdout(String),
    /// On stderr.
    Stderr(String),
}

/// Where a start's output lines go.
pub type OutputSink = Option<mpsc::UnboundedSender<OutputLine>>;

/// A sink that turns output lines into [`Event::Stdout`] / [`Event::Stderr`].
pub fn events_sink(events: &EventSender) -> mpsc::UnboundedSender<OutputLine> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let forward = events.clone();
    tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            let _ = forward.send(match line {
                OutputLine::Stdout(line) => Event::Stdout { line },
                OutputLine::Stderr(line) => Event::Stderr { line },
            });
        }
    });
    tx
}

/// The secrets line as the channel carries it: the line and its newline, or an empty
/// line when there are no secrets (the remote wrapper always reads one line). Wiped on
/// drop.
pub fn secrets_line(secrets: Option<&Secrets>) -> Zeroizing<Vec<u8>> {
    let line = Zeroizing::new(secrets.map(Secrets::to_line).unwrap_or_default());
    let mut bytes = Zeroizing::new(line.as_bytes().to_vec());
    if bytes.last() != Some(&b'\n') {
        bytes.push(b'\n');
    }
    bytes
}

/// The last stderr lines of a command, shared with its reader.
#[derive(Clone, Debug, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    fn push(&self, line: &str) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() == STDERR_TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line.to_string());
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// What the output readers found: the ready line (or why it was bad), the remote
/// wrapper's process group, the first line matching the ready pattern, and the stderr
/// tail.
pub struct Readers {
    /// The first line (stdout or stderr) matching the ready pattern, when one was given.
    pub matched: oneshot::Receiver<String>,
    /// The first ready line; closed without a value when stdout ended without one.
    pub ready: oneshot::Receiver<Result<ReadyLine, String>>,
    /// The remote wrapper's process group (first `pv-launch-pgid` line), when routed.
    pub pgid: oneshot::Receiver<u32>,
    /// The last stderr lines.
    pub tail: StderrTail,
    /// The stderr reader, done once stderr closed.
    pub stderr_done: tokio::task::JoinHandle<()>,
}

/// Read `stdout` and `stderr` line by line until they close. On stdout the first ready
/// line and (with `wrapper`, the remote cleanup wrapper's stream) the first
/// process-group line are picked out; every other line goes to `sink` (a local server's
/// ready line too). Stderr lines go to `sink` and to the tail.
pub fn spawn_readers(
    stdout: impl AsyncRead + Unpin + Send + 'static,
    stderr: impl AsyncRead + Unpin + Send + 'static,
    sink: OutputSink,
    wrapper: bool,
    pattern: Option<&Regex>,
) -> Readers {
    let (ready_tx, ready) = oneshot::channel();
    let (pgid_tx, pgid) = oneshot::channel();
    let (matched_tx, matched) = oneshot::channel();
    let watch = PatternWatch::new(pattern, matched_tx);
    let out_sink = sink.clone();
    let out_watch = watch.clone();
    tokio::spawn(async move {
        let (mut ready_tx, mut pgid_tx) = (Some(ready_tx), wrapper.then_some(pgid_tx));
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(pgid) = pgid_line(&line) {
                if let Some(tx) = pgid_tx.take() {
                    let _ = tx.send(pgid);
                    continue;
                }
            }
            if let Some(parsed) = ReadyLine::parse(&line) {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(parsed.map_err(|e| e.to_string()));
                    // A local server's ready line is also shown as its output; the
                    // remote wrapper's protocol lines are not.
                    if wrapper {
                        continue;
                    }
                }
            }
            out_watch.check(&line);
            if let Some(o) = &out_sink {
                let _ = o.send(OutputLine::Stdout(line));
            }
        }
    });
    let tail = StderrTail::default();
    let stderr_done = {
        let tail = tail.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tail.push(&line);
                watch.check(&line);
                if let Some(o) = &sink {
                    let _ = o.send(OutputLine::Stderr(line));
                }
            }
        })
    };
    Readers {
        matched,
        ready,
        pgid,
        tail,
        stderr_done,
    }
}

/// The remote wrapper's process-group line: its group id, which is never 0 or 1 (a
/// `kill -- -1` would signal every process the remote user may signal).
fn pgid_line(line: &str) -> Option<u32> {
    line.strip_prefix(PGID_PREFIX)?
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|p| *p > 1)
}

/// The ready pattern, shared by the two readers: the first matching line, on either
/// stream, is sent once.
#[derive(Clone)]
struct PatternWatch(Option<(Regex, OnceSender)>);

/// A sender used once, by whichever reader matches first.
type OnceSender = Arc<Mutex<Option<oneshot::Sender<String>>>>;

impl PatternWatch {
    fn new(pattern: Option<&Regex>, tx: oneshot::Sender<String>) -> PatternWatch {
        PatternWatch(pattern.map(|p| (p.clone(), Arc::new(Mutex::new(Some(tx))))))
    }

    fn check(&self, line: &str) {
        if let Some((re, tx)) = &self.0 {
            if re.is_match(line) {
                if let Some(tx) = tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = tx.send(line.to_string());
                }
            }
        }
    }
}

/// How the wait for a ready line ended.
#[derive(Debug)]
pub enum Awaited {
    /// The ready line came.
    Ready(ReadyLine),
    /// A ready line came but was malformed.
    BadLine(String),
    /// The command exited 0 before a ready line: its server detached (e.g. a script
    /// that submitted a batch job), as ParaView treats it.
    Detached,
    /// The command ended (or closed its output) without a ready line: its exit status,
    /// `None` when it still runs with its stdout closed.
    Failed(Option<ExitStatus>),
    /// No ready line within the time allowed.
    TimedOut(Duration),
}

/// Wait up to `timeout` for the ready line, while `exit` (the command's exit) may come
/// first.
pub async fn await_ready<F>(
    ready: oneshot::Receiver<Result<ReadyLine, String>>,
    exit: F,
    timeout: Duration,
) -> Awaited
where
    F: Future<Output = ExitStatus>,
{
    tokio::pin!(exit);
    let exited = |s: ExitStatus| {
        if s.success() {
            Awaited::Detached
        } else {
            Awaited::Failed(Some(s))
        }
    };
    tokio::select! {
        ready = ready => match ready {
            Ok(Ok(ready)) => Awaited::Ready(ready),
            Ok(Err(message)) => Awaited::BadLine(message),
            // stdout closed without a ready line: how did the command end?
            Err(_) => match tokio::time::timeout(EXIT_GRACE, &mut exit).await {
                Ok(s) => exited(s),
                Err(_) => Awaited::Failed(None),
            },
        },
        s = &mut exit => exited(s),
        _ = tokio::time::sleep(timeout) => Awaited::TimedOut(timeout),
    }
}

/// How the wait for the ready pattern ended.
#[derive(Debug)]
pub enum Matched {
    /// A line matched.
    Line(String),
    /// The command exited 0 first: its server detached.
    Detached,
    /// The command failed first, with this status.
    Failed(ExitStatus),
    /// No line matched within the time allowed (output ended, or time ran out).
    NotSeen(Duration),
}

/// Wait up to `timeout` for the first output line matching the ready pattern, while
/// `exit` may come first. A server's output ending without a match is not its end: the
/// wait goes on for its exit or the timeout.
pub async fn await_pattern<F>(
    matched: oneshot::Receiver<String>,
    exit: F,
    timeout: Duration,
) -> Matched
where
    F: Future<Output = ExitStatus>,
{
    tokio::pin!(exit);
    let deadline = tokio::time::Instant::now() + timeout;
    let exited = |s: ExitStatus| {
        if s.success() {
            Matched::Detached
        } else {
            Matched::Failed(s)
        }
    };
    tokio::select! {
        m = matched => match m {
            Ok(line) => Matched::Line(line),
            Err(_) => tokio::select! {
                s = &mut exit => exited(s),
                _ = tokio::time::sleep_until(deadline) => Matched::NotSeen(timeout),
            },
        },
        s = &mut exit => exited(s),
        _ = tokio::time::sleep_until(deadline) => Matched::NotSeen(timeout),
    }
}

/// The note for a default ready pattern that did not match in time: the client's own
/// retry takes over.
pub fn pattern_not_seen(pattern: &crate::plan::ReadyPattern, waited: Duration) -> Event {
    Event::Note {
        message: format!(
            "the server printed no line matching {:?} within {}; handing over anyway (the client retries)",
            pattern.regex.as_str(),
            crate::plan::render::seconds(&waited)
        ),
    }
}

/// How a start without a ready line went, by ParaView's delay rules.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterDelay {
    /// The command runs: connect now.
    Running,
    /// The command exited 0 during the wait: its server detached.
    Detached,
    /// The command failed during the wait, with this status.
    Failed(ExitStatus),
}

/// Follow `delay` while `exit` may come: connect at once; or wait the delay, an exit 0
/// meaning the server detached and any other a failure; or (`-1`) wait for the exit.
pub async fn follow_delay<F, E>(
    delay: &Delay,
    exit: F,
    events: &EventSender,
    begun: std::time::Instant,
) -> Result<AfterDelay, E>
where
    F: Future<Output = Result<ExitStatus, E>>,
{
    let ended = |s: ExitStatus| {
        if s.success() {
            AfterDelay::Detached
        } else {
            AfterDelay::Failed(s)
        }
    };
    let stage = |stage| {
        let _ = events.send(Event::Stage {
            stage,
            elapsed: begun.elapsed(),
        });
    };
    match delay {
        Delay::None => Ok(AfterDelay::Running),
        Delay::Wait(d) => {
            stage(Stage::Delay);
            tokio::select! {
                s = exit => Ok(ended(s?)),
                _ = tokio::time::sleep(*d) => Ok(AfterDelay::Running),
            }
        }
        Delay::UntilExit => {
            stage(Stage::WaitExit);
            Ok(ended(exit.await?))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn status(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[tokio::test]
    async fn readers_pick_out_the_ready_and_group_lines_and_keep_the_stderr_tail() {
        let (mut out_w, out_r) = tokio::io::duplex(1024);
        let (mut err_w, err_r) = tokio::io::duplex(1024);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let readers = spawn_readers(out_r, err_r, Some(tx), true, None);
        use tokio::io::AsyncWriteExt;
        out_w
            .write_all(b"pv-launch-pgid 42\nhello\npv-launch-ready v1 port=5\n")
            .await
            .unwrap();
        for i in 0..25 {
            err_w.write_all(format!("e{i}\n").as_bytes()).await.unwrap();
        }
        drop((out_w, err_w));
        assert_eq!(readers.pgid.await.unwrap(), 42);
        assert_eq!(readers.ready.await.unwrap().unwrap().port, 5);
        readers.stderr_done.await.unwrap();
        let tail = readers.tail.lines();
        assert_eq!(tail.len(), STDERR_TAIL_LINES);
        assert_eq!(tail.last().unwrap(), "e24");
        assert_eq!(rx.recv().await, Some(OutputLine::Stdout("hello".into())));
    }

    #[test]
    fn a_process_group_line_never_names_group_0_or_1() {
        assert_eq!(pgid_line("pv-launch-pgid 4242"), Some(4242));
        assert_eq!(pgid_line("pv-launch-pgid 1"), None);
        assert_eq!(pgid_line("pv-launch-pgid 0"), None);
        assert_eq!(pgid_line("pv-launch-pgid -1"), None);
        assert_eq!(pgid_line("pv-launch-pgid x"), None);
    }

    #[tokio::test]
    async fn the_ready_pattern_matches_on_either_stream_once() {
        use tokio::io::AsyncWriteExt;
        let (mut out_w, out_r) = tokio::io::duplex(1024);
        let (mut err_w, err_r) = tokio::io::duplex(1024);
        let re = Regex::new(r"^Accepting connection\(s\): ").unwrap();
        let readers = spawn_readers(out_r, err_r, None, false, Some(&re));
        out_w.write_all(b"Waiting for client...\n").await.unwrap();
        err_w
            .write_all(b"Accepting connection(s): host:11111\n")
            .await
            .unwrap();
        let got = await_pattern(
            readers.matched,
            std::future::pending(),
            Duration::from_secs(5),
        )
        .await;
        assert!(
            matches!(&got, Matched::Line(l) if l.ends_with("host:11111")),
            "{got:?}"
        );
        // Output that ends without a match waits for the exit (or the timeout).
        let (out_w, out_r) = tokio::io::duplex(16);
        let (err_w, err_r) = tokio::io::duplex(16);
        let readers = spawn_readers(out_r, err_r, None, false, Some(&re));
        drop((out_w, err_w));
        let got = await_pattern(readers.matched, async { status(4) }, Duration::from_secs(5)).await;
        assert!(
            matches!(got, Matched::Failed(s) if s.code() == Some(4)),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn exit_zero_before_the_ready_line_is_a_detached_server() {
        let (_tx, rx) = oneshot::channel();
        let got = await_ready(rx, async { status(0) }, Duration::from_secs(5)).await;
        assert!(matches!(got, Awaited::Detached), "{got:?}");
        let (_tx, rx) = oneshot::channel();
        let got = await_ready(rx, async { status(3) }, Duration::from_secs(5)).await;
        assert!(
            matches!(got, Awaited::Failed(Some(s)) if s.code() == Some(3)),
            "{got:?}"
        );
        let (_tx, rx) = oneshot::channel();
        let got = await_ready(rx, std::future::pending(), Duration::from_millis(10)).await;
        assert!(matches!(got, Awaited::TimedOut(_)), "{got:?}");
    }

    #[tokio::test]
    async fn the_delay_rules() {
        let (events, _rx) = mpsc::unbounded_channel();
        let now = std::time::Instant::now();
        let ok = |c| async move { Ok::<_, ()>(status(c)) };
        assert_eq!(
            follow_delay(&Delay::None, ok(1), &events, now).await,
            Ok(AfterDelay::Running)
        );
        assert_eq!(
            follow_delay(&Delay::UntilExit, ok(0), &events, now).await,
            Ok(AfterDelay::Detached)
        );
        assert_eq!(
            follow_delay(&Delay::Wait(Duration::from_secs(5)), ok(2), &events, now).await,
            Ok(AfterDelay::Failed(status(2)))
        );
        let never = std::future::pending::<Result<ExitStatus, ()>>();
        assert_eq!(
            follow_delay(&Delay::Wait(Duration::from_millis(10)), never, &events, now).await,
            Ok(AfterDelay::Running)
        );
    }
}
