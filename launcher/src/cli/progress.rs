//! The progress display: how the CLI shows a launch's [`Event`]s.
//!
//! Three forms, chosen once per run:
//!
//! - [`Renderer::json`] (`--json`): one JSON object per event on stdout, for GUIs and
//!   scripts;
//! - [`Renderer::plain`] (stderr is not a terminal: logs, pipes, tests): one timed line per
//!   event, `[  0.12s] connecting`. Scripts and users' logs parse these lines, so their
//!   format does not change;
//! - [`Renderer::terminal`] (stderr is a terminal): a spinner for the running stage with its
//!   name and live elapsed time; a finished stage becomes a `✓` line with its duration, a
//!   failure or an interrupt a `✗` line with the message, and the server's output prints
//!   above the spinner. While it runs the terminal does not echo Ctrl-C as `^C` (see
//!   [`Renderer::terminal`]).
//!
//! The renderer only draws: it is fed events, in order, by whoever receives them.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use pv_askpass::terminal::printable;
use pv_launch::events::{Event, Stage};

/// What a stage is called on the screen and in the plain lines.
pub fn stage_text(stage: Stage) -> &'static str {
    match stage {
        Stage::SshConnect => "connecting over ssh (authenticating)",
        Stage::Start => "starting the server",
        Stage::WaitReady => "waiting for the server's ready line",
        Stage::WaitPattern => "waiting for the server to say it is ready",
        Stage::Delay => "waiting the configured delay",
        Stage::WaitExit => "waiting for the command to exit",
        Stage::Submit => "submitting the batch job",
        Stage::WaitJob => "waiting for the batch job to start",
        Stage::Connect => "connecting",
        Stage::WaitClient => "waiting for the client to listen",
        Stage::Cleanup => "stopping processes",
    }
}

/// The one line of text an event shows as, without its time stamp. Stage events show as
/// their stage's name.
pub fn event_text(event: &Event) -> String {
    match event {
        Event::Stage { stage, .. } => stage_text(*stage).to_string(),
        Event::Ready { port, .. } => format!("server ready on port {port}"),
        Event::Stdout { line } => format!("server: {}", printable(line)),
        Event::Stderr { line } => format!("server stderr: {}", printable(line)),
        Event::Exited { code } => format!(
            "server exited ({})",
            code.map_or("signal".to_string(), |c| format!("code {c}"))
        ),
        Event::Connected { url } => format!("connected: {url}"),
        Event::Relay { socket } => {
            format!("local programs reach the connection at unix:{socket} (PV_LAUNCH_SOCKET)")
        }
        Event::Interrupted { signal, .. } => format!("interrupted ({signal})"),
        Event::CleanedUp { took, .. } => {
            format!("processes stopped in {:.2}s", took.as_secs_f64())
        }
        Event::Job {
            id,
            state,
            reason,
            estimated_start,
            nodes,
            time_left,
        } => job_text(
            id,
            state,
            reason.as_deref(),
            *estimated_start,
            nodes.as_deref(),
            *time_left,
            std::time::SystemTime::now(),
            &chrono::Local,
        ),
        Event::WalltimeWarning { id, time_left } => format!(
            "job {id}: walltime limit in {}: the server will be stopped then",
            span(*time_left)
        ),
        Event::Failed { message } => format!("failed: {}", printable(message)),
        Event::Note { message } => format!("note: {}", printable(message)),
        Event::Handoff { url } => format!("ready for the client: {url}"),
        Event::Client { pid, command } => format!("client started (pid {pid}): {command}"),
        Event::ClientExited { code } => format!(
            "client exited ({})",
            code.map_or("signal".to_string(), |c| format!("code {c}"))
        ),
    }
}

/// A job's status in words, e.g. `job 12 queued (Priority), estimated start 14:05 (in
/// 3 min)` or `job 12 running on node01, 59 min left`. `now` is the time the estimated
/// start is measured from; the start is shown in `tz` (the terminal display passes
/// [`chrono::Local`]: `TZ`, else `/etc/localtime`), with its weekday and date when it is
/// 20 hours or more away.
#[allow(clippy::too_many_arguments)] // the event's fields, the clock and the zone
pub fn job_text<Tz: chrono::TimeZone>(
    id: &str,
    state: &str,
    reason: Option<&str>,
    estimated_start: Option<u64>,
    nodes: Option<&str>,
    time_left: Option<Duration>,
    now: std::time::SystemTime,
    tz: &Tz,
) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let word = match state {
        "PENDING" => "queued".to_string(),
        "CONFIGURING" => "starting (its nodes are being set up)".to_string(),
        "RUNNING" => "running".to_string(),
        "COMPLETING" => "completing".to_string(),
        "UNKNOWN" => "status unknown (the controller does not answer; retrying)".to_string(),
        other => other.to_lowercase().replace('_', " "),
    };
    let mut text = format!("job {id} {word}");
    if let Some(r) = reason.filter(|_| state != "UNKNOWN") {
        text.push_str(&format!(" ({r})"));
    }
    if let Some(n) = nodes {
        text.push_str(&format!(" on {n}"));
    }
    let start = estimated_start
        .and_then(|s| i64::try_from(s).ok())
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0));
    if let (Some(start), Some(secs)) = (start, estimated_start) {
        let now_s = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let ahead = secs.saturating_sub(now_s);
        let when = if ahead > 0 {
            format!("in {}", span(Duration::from_secs(ahead)))
        } else {
            "now".to_string()
        };
        let pattern = if ahead >= 20 * 3600 {
            "%a %d %b %H:%M"
        } else {
            "%H:%M"
        };
        text.push_str(&format!(
            ", estimated start {} ({when})",
            start.with_timezone(tz).format(pattern)
        ));
    }
    if let Some(t) = time_left {
        text.push_str(&format!(", {} left", span(t)));
    }
    text
}

/// A span of time for people: `45 s`, `3 min`, `2 h 05 min`.
fn span(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s / 60)
    } else {
        format!("{} h {:02} min", s / 3600, s / 60 % 60)
    }
}

/// Shows a launch's events as JSON lines, plain timed lines or a live terminal display.
pub struct Renderer {
    form: Form,
}

enum Form {
    Json,
    Plain(Box<dyn Write + Send>),
    Terminal(Spinner),
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let form = match self.form {
            Form::Json => "json",
            Form::Plain(_) => "plain",
            Form::Terminal(_) => "terminal",
        };
        f.debug_struct("Renderer").field("form", &form).finish()
    }
}

impl Renderer {
    /// The CLI's choice: JSON with `--json`, else the terminal display when stderr is a
    /// terminal, else plain lines on stderr.
    pub fn for_cli(json: bool) -> Renderer {
        if json {
            Renderer::json()
        } else if std::io::stderr().is_terminal() {
            Renderer::terminal()
        } else {
            Renderer::plain(Box::new(std::io::stderr()))
        }
    }

    /// One JSON object per event, one per line, on stdout.
    pub fn json() -> Renderer {
        Renderer { form: Form::Json }
    }

    /// Timed lines (`[  0.12s] connecting`) written to `out`.
    pub fn plain(out: Box<dyn Write + Send>) -> Renderer {
        Renderer {
            form: Form::Plain(out),
        }
    }

    /// The live display on stderr: spinners, `✓` and `✗` lines. Colour unless `NO_COLOR`
    /// is set.
    ///
    /// Until [`finish`](Self::finish) (or the drop) the terminal on stderr does not echo
    /// control characters as `^C` (its `ECHOCTL` flag is cleared, then set again): the
    /// spinner's line is padded to the terminal's width, so such an echo would wrap
    /// onto a new line and leave a stale copy of the spinner above the display. An
    /// interrupt shows as the `✗` line of [`Event::Interrupted`] instead.
    pub fn terminal() -> Renderer {
        Renderer {
            form: Form::Terminal(Spinner {
                current: None,
                colour: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
                quiet_echo: QuietControlEcho::on_stderr(),
            }),
        }
    }

    /// Show one event. An error only when the JSON lines' reader went away (a closed
    /// stdout: `pv-launch --json … | head -1`); the other forms carry on whatever
    /// happens to stderr.
    pub fn show(&mut self, event: &Event) -> std::io::Result<()> {
        match &mut self.form {
            Form::Json => {
                if let Ok(line) = serde_json::to_string(event) {
                    let mut out = std::io::stdout().lock();
                    out.write_all(with_newline(&line).as_bytes())?;
                    out.flush()?;
                }
            }
            Form::Plain(out) => {
                let line = match event {
                    Event::Stage { elapsed, .. }
                    | Event::Ready { elapsed, .. }
                    | Event::Interrupted { elapsed, .. }
                    | Event::CleanedUp { elapsed, .. } => {
                        format!("[{:>6.2}s] {}", elapsed.as_secs_f64(), event_text(event))
                    }
                    _ => event_text(event),
                };
                // A closed stderr is no reason to stop the launch.
                let _ = out.write_all(with_newline(&line).as_bytes());
                let _ = out.flush();
            }
            Form::Terminal(spinner) => spinner.show(event),
        }
        Ok(())
    }

    /// End the display: a stage still spinning is cleared (its outcome is unknown), and
    /// the terminal echoes control characters again.
    pub fn finish(&mut self) {
        if let Form::Terminal(spinner) = &mut self.form {
            spinner.clear();
            spinner.quiet_echo = None;
        }
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The terminal display: at most one running stage, drawn by indicatif on stderr.
struct Spinner {
    current: Option<Running>,
    colour: bool,
    /// Set while the display runs (see [`Renderer::terminal`]).
    quiet_echo: Option<QuietControlEcho>,
}

/// The terminal on stderr echoes no control characters as `^X` until dropped (its
/// `ECHOCTL` flag is cleared; a raw control byte echoed instead moves no cursor). Only the
/// flag is put back, so settings others changed meanwhile stay.
struct QuietControlEcho;

impl QuietControlEcho {
    /// Only for the terminal's foreground job: a background one (`pv-launch … &`) leaves
    /// the terminal's settings alone.
    fn on_stderr() -> Option<QuietControlEcho> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stderr = std::io::stderr();
        if !stderr.is_terminal() || nix::unistd::tcgetpgrp(&stderr).ok()? != nix::unistd::getpgrp()
        {
            return None;
        }
        let mut settings = tcgetattr(&stderr).ok()?;
        if !settings.local_flags.contains(LocalFlags::ECHOCTL) {
            return None;
        }
        settings.local_flags.remove(LocalFlags::ECHOCTL);
        without_sigttou(|| tcsetattr(&stderr, SetArg::TCSANOW, &settings)).ok()?;
        Some(QuietControlEcho)
    }
}

impl Drop for QuietControlEcho {
    fn drop(&mut self) {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stderr = std::io::stderr();
        if let Ok(mut settings) = tcgetattr(&stderr) {
            settings.local_flags.insert(LocalFlags::ECHOCTL);
            // Also when the job was moved to the background meanwhile (Ctrl-Z, `bg`).
            let _ = without_sigttou(|| tcsetattr(&stderr, SetArg::TCSANOW, &settings));
        }
    }
}

/// Run `change` (a terminal setting) with SIGTTOU blocked in this thread: a process that
/// is not in the terminal's foreground may then change its settings instead of being
/// stopped for it.
fn without_sigttou<R>(change: impl FnOnce() -> R) -> R {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let mut before = SigSet::empty();
    let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut before)).is_ok();
    let result = change();
    if blocked {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&before), None);
    }
    result
}

struct Running {
    stage: Stage,
    bar: ProgressBar,
    started: Instant,
}

impl Spinner {
    fn show(&mut self, event: &Event) {
        match event {
            Event::Stage { stage, .. } => {
                self.done(None);
                self.begin(*stage);
            }
            Event::Ready { .. } => match &self.current {
                // The ready line ends the wait for it: say what came.
                Some(r) if r.stage == Stage::WaitReady => self.done(Some(&event_text(event))),
                _ => self.print(&event_text(event)),
            },
            Event::Connected { .. } | Event::Handoff { .. } => {
                self.done(None);
                let text = event_text(event);
                self.print(&self.paint("1", &text));
            }
            Event::CleanedUp { took, .. } => match &self.current {
                Some(r) if r.stage == Stage::Cleanup => self.done(None),
                _ => {
                    let line = format!(
                        "{} {}  {}",
                        self.paint("32", "✓"),
                        stage_text(Stage::Cleanup),
                        seconds(*took)
                    );
                    self.print(&line);
                }
            },
            Event::Failed { message } => self.fail(message),
            Event::Interrupted { .. } => self.interrupted(&event_text(event)),
            Event::Stdout { .. } | Event::Stderr { .. } => {
                let text = event_text(event);
                self.print(&self.paint("2", &text));
            }
            Event::Note { .. } => {
                let text = event_text(event);
                self.print(&self.paint("2", &text));
            }
            Event::Exited { .. }
            | Event::Relay { .. }
            | Event::Client { .. }
            | Event::ClientExited { .. } => self.print(&event_text(event)),
            Event::Job { .. } => {
                let text = event_text(event);
                if let Some(r) = self.current.as_ref().filter(|r| r.stage == Stage::WaitJob) {
                    r.bar
                        .set_message(format!("{}: {text}", stage_text(Stage::WaitJob)));
                }
                self.print(&text);
            }
            Event::WalltimeWarning { .. } => {
                let text = event_text(event);
                self.print(&self.paint("33", &text));
            }
        }
    }

    /// Start a spinner for `stage`, with its name and the time it has been running.
    fn begin(&mut self, stage: Stage) {
        let style = ProgressStyle::with_template("{spinner:.cyan} {msg}  {secs}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key(
                "secs",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}", seconds(state.elapsed()));
                },
            );
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(style);
        bar.set_message(stage_text(stage));
        bar.enable_steady_tick(Duration::from_millis(100));
        self.current = Some(Running {
            stage,
            bar,
            started: Instant::now(),
        });
    }

    /// The running stage succeeded: replace its spinner with a `✓` line and its duration
    /// (`what` instead of the stage's name when given).
    fn done(&mut self, what: Option<&str>) {
        if let Some(r) = self.current.take() {
            r.bar.finish_and_clear();
            let line = format!(
                "{} {}  {}",
                self.paint("32", "✓"),
                what.unwrap_or(stage_text(r.stage)),
                seconds(r.started.elapsed())
            );
            eprint_line(&line);
        }
    }

    /// The launch failed: a `✗` line naming the running stage (if any), then the message,
    /// which may span lines (the server's last stderr lines).
    fn fail(&mut self, message: &str) {
        let line = match self.current.take() {
            Some(r) => {
                r.bar.finish_and_clear();
                format!(
                    "{} {} (after {}): {message}",
                    self.paint("31", "✗"),
                    stage_text(r.stage),
                    seconds(r.started.elapsed())
                )
            }
            None => format!("{} {message}", self.paint("31", "✗")),
        };
        eprint_line(&line);
    }

    /// Interrupted: the running stage, abandoned, becomes a `✗` line saying so; with none
    /// running (after connecting, the usual way to end) a plain line.
    fn interrupted(&mut self, text: &str) {
        match self.current {
            Some(_) => self.fail(text),
            None => eprint_line(text),
        }
    }

    /// A line above the spinner (or a plain line when none runs).
    fn print(&self, line: &str) {
        match &self.current {
            Some(r) => r.bar.suspend(|| eprint_line(line)),
            None => eprint_line(line),
        }
    }

    fn clear(&mut self) {
        if let Some(r) = self.current.take() {
            r.bar.finish_and_clear();
        }
    }

    /// `text` in the SGR style `sgr` (ANSI), unless colour is off.
    fn paint(&self, sgr: &str, text: &str) -> String {
        if self.colour {
            format!("\u{1b}[{sgr}m{text}\u{1b}[0m")
        } else {
            text.to_string()
        }
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// `line` and its newline as one buffer, so that each line reaches a pipe in one `write`
/// (the std stderr is unbuffered: `writeln!` writes the text and the newline separately, and
/// a client's output sharing the pipe could land between them).
fn with_newline(line: &str) -> String {
    let mut whole = String::with_capacity(line.len() + 1);
    whole.push_str(line);
    whole.push('\n');
    whole
}

/// One line on stderr in one write (see [`with_newline`]); a closed stderr is ignored.
fn eprint_line(line: &str) {
    let _ = std::io::stderr()
        .lock()
        .write_all(with_newline(line).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `Write` whose bytes the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_lines_keep_their_format() {
        let out = Shared::default();
        let mut r = Renderer::plain(Box::new(out.clone()));
        let ms = Duration::from_millis;
        for e in [
            Event::Stage {
                stage: Stage::Start,
                elapsed: ms(0),
            },
            Event::Stdout {
                line: "hello".into(),
            },
            Event::Ready {
                port: 4242,
                elapsed: ms(120),
            },
            Event::Stage {
                stage: Stage::Connect,
                elapsed: ms(1234),
            },
            Event::Connected {
                url: "cs://127.0.0.1:4242".into(),
            },
            Event::Stage {
                stage: Stage::Cleanup,
                elapsed: Duration::from_secs(75),
            },
            Event::CleanedUp {
                took: ms(30),
                elapsed: ms(75_030),
            },
            Event::Failed {
                message: "boom".into(),
            },
        ] {
            r.show(&e).unwrap();
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "[  0.00s] starting the server\n\
             server: hello\n\
             [  0.12s] server ready on port 4242\n\
             [  1.23s] connecting\n\
             connected: cs://127.0.0.1:4242\n\
             [ 75.00s] stopping processes\n\
             [ 75.03s] processes stopped in 0.03s\n\
             failed: boom\n"
        );
    }

    #[test]
    fn an_interrupt_is_a_timed_line_and_a_json_event() {
        let e = Event::Interrupted {
            signal: "SIGINT".into(),
            elapsed: Duration::from_millis(1234),
        };
        let out = Shared::default();
        Renderer::plain(Box::new(out.clone())).show(&e).unwrap();
        assert_eq!(
            String::from_utf8(out.0.lock().unwrap().clone()).unwrap(),
            "[  1.23s] interrupted (SIGINT)\n"
        );
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"interrupted","signal":"SIGINT","elapsed":1.234}"#
        );
    }

    /// Job 12 pending at 14:00 UTC on 2025-12-01, estimated to start `ahead` seconds later,
    /// shown in `tz`.
    fn pending_from_14h<Tz: chrono::TimeZone>(ahead: u64, tz: &Tz) -> String
    where
        Tz::Offset: std::fmt::Display,
    {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_764_597_600);
        job_text(
            "12",
            "PENDING",
            None,
            Some(1_764_597_600 + ahead),
            None,
            None,
            now,
            tz,
        )
    }

    /// Run in a child process by the test below, with `TZ` set there (the environment
    /// cannot be changed safely in a running test binary).
    #[test]
    fn estimated_start_in_the_local_zone_child() {
        let Ok(expected) = std::env::var("PV_LAUNCH_TZ_CHILD") else {
            return;
        };
        assert_eq!(
            pending_from_14h(300, &chrono::Local),
            format!("job 12 queued, estimated start {expected} (in 5 min)")
        );
    }

    /// The terminal display's estimated start follows `TZ` (a POSIX zone string, so no
    /// zone database is needed).
    #[test]
    fn the_estimated_start_follows_tz() {
        for (tz, expected) in [("PVL-5:30", "19:35"), ("UTC0", "14:05"), ("PVW+3", "11:05")] {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "cli::progress::tests::estimated_start_in_the_local_zone_child",
                    "--test-threads=1",
                ])
                .env("TZ", tz)
                .env("PV_LAUNCH_TZ_CHILD", expected)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "TZ={tz}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn job_events_in_words_and_json() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_764_597_600); // 14:00 UTC
        assert_eq!(
            job_text(
                "12",
                "PENDING",
                Some("Priority"),
                Some(1_764_597_900),
                None,
                None,
                now,
                &chrono::Utc
            ),
            "job 12 queued (Priority), estimated start 14:05 (in 5 min)"
        );
        // A zone east of UTC, and a start a day away (its date is shown).
        let east = chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
        assert_eq!(
            pending_from_14h(300, &east),
            "job 12 queued, estimated start 19:35 (in 5 min)"
        );
        assert_eq!(
            pending_from_14h(86_700, &east),
            "job 12 queued, estimated start Tue 02 Dec 19:35 (in 24 h 05 min)"
        );
        assert_eq!(
            job_text(
                "12",
                "RUNNING",
                None,
                None,
                Some("node01"),
                Some(Duration::from_secs(3599)),
                now,
                &chrono::Utc
            ),
            "job 12 running on node01, 59 min left"
        );
        assert_eq!(
            job_text(
                "7",
                "UNKNOWN",
                Some("squeue: timed out"),
                None,
                None,
                None,
                now,
                &chrono::Utc
            ),
            "job 7 status unknown (the controller does not answer; retrying)"
        );
        let e = Event::Job {
            id: "12".into(),
            state: "PENDING".into(),
            reason: Some("Priority".into()),
            estimated_start: Some(1_764_597_900),
            nodes: None,
            time_left: None,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"job","id":"12","state":"PENDING","reason":"Priority","estimated_start":1764597900}"#
        );
        let e = Event::WalltimeWarning {
            id: "12".into(),
            time_left: Duration::from_secs(290),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"walltime-warning","id":"12","time_left":290.0}"#
        );
        let out = Shared::default();
        let mut r = Renderer::plain(Box::new(out.clone()));
        r.show(&Event::Stage {
            stage: Stage::WaitJob,
            elapsed: Duration::from_millis(500),
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(out.0.lock().unwrap().clone()).unwrap(),
            "[  0.50s] waiting for the batch job to start\n"
        );
    }

    #[test]
    fn remote_text_reaches_the_terminal_without_control_sequences() {
        assert_eq!(printable("plain\ttext"), "plain\ttext");
        assert_eq!(
            printable("\u{1b}[31mred\u{1b}[0m \u{1b}]0;owned\u{7}title \u{1b}]2;x\u{1b}\\ok"),
            "red title ok"
        );
        assert_eq!(
            printable("bell\u{7} cr\r del\u{7f} c1\u{9b}"),
            "bell? cr? del? c1?"
        );
        assert_eq!(
            event_text(&Event::Stderr {
                line: "\u{1b}[2J\u{1b}[Hfake prompt".into()
            }),
            "server stderr: fake prompt"
        );
    }

    #[test]
    fn cleaned_up_serialises_with_both_durations() {
        let e = Event::CleanedUp {
            took: Duration::from_millis(1500),
            elapsed: Duration::from_millis(4250),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"cleaned-up","took":1.5,"elapsed":4.25}"#
        );
    }
}
