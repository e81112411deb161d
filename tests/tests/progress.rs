//! The CLI's progress display, with the real `pv-launch` and demo server: plain timed lines
//! when stderr is not a terminal, JSON events with `--json`, and the live display (spinner,
//! `✓` and `✗` lines) on a real terminal (tmux on a private socket); and how each reports
//! an interrupt (SIGINT, SIGTERM, Ctrl-C) during the start and the cleanup after it.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pv_e2e::{running, workspace_bin};

/// How long any single wait may take.
const DEADLINE: Duration = Duration::from_secs(30);

fn demo() -> String {
    workspace_bin("pv-demo-server").display().to_string()
}

/// A forward profile whose server starts after `pause` seconds (a script: `sleep`, then
/// exec the demo server), so a stage lasts long enough to be seen. The script writes its
/// pid, its process group's id, to `server.pid` in `dir` (see [`server_group`]).
fn profile(dir: &Path, pause: &str) -> PathBuf {
    let script = dir.join("start.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > '{pid}.tmp' && mv '{pid}.tmp' '{pid}'\nsleep {pause}\nexec '{}' --server-port \"$1\"\n",
            demo(),
            pid = dir.join("server.pid").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("profile.toml");
    std::fs::write(
        &path,
        format!(
            "[[server]]\nname = \"f\"\nresource = \"cs://127.0.0.1:0\"\nconnect_timeout = 10\n\
             [server.startup]\nmechanism = \"local-script\"\nscript = \"{}\"\nargs = [\"${{PV_SERVER_PORT}}\"]\n\
             process_start_timeout = 20\n",
            script.display()
        ),
    )
    .unwrap();
    path
}

/// Polls `cond` every 20 ms until it returns `Some`, or panics after `deadline`.
fn wait_for<T>(what: &str, deadline: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The id of the process group the profile's script started in (its pid), once written.
fn server_group(dir: &Path) -> u32 {
    wait_for("the server's pid", DEADLINE, || {
        std::fs::read_to_string(dir.join("server.pid"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    })
}

/// Whether a live (not zombie) process is in process group `pgid` (/proc).
fn group_runs(pgid: u32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().take(3).collect())
            .unwrap_or_default();
        fields.len() == 3 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}

/// `pv-launch ARGS` running with stdout and stderr piped (not terminals), their lines
/// collected as they come by two threads, so the deadlines below stay in charge.
struct Piped {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Piped {
    fn start(args: &[&str]) -> Piped {
        let mut child = Command::new(workspace_bin("pv-launch"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let read = |pipe: Box<dyn std::io::Read + Send>, into: &Arc<Mutex<Vec<String>>>| {
            let into = Arc::clone(into);
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines() {
                    into.lock().unwrap().push(line.unwrap());
                }
            })
        };
        let readers = vec![
            read(Box::new(child.stdout.take().unwrap()), &out),
            read(Box::new(child.stderr.take().unwrap()), &err),
        ];
        Piped {
            child,
            out,
            err,
            readers,
        }
    }

    /// Wait until a line of stdout (`stdout`) or stderr satisfies `cond`.
    fn wait_for_line(&self, stdout: bool, what: &str, cond: impl Fn(&str) -> bool) {
        let lines = if stdout { &self.out } else { &self.err };
        wait_for(what, DEADLINE, || {
            lines.lock().unwrap().iter().any(|l| cond(l)).then_some(())
        });
    }

    /// Send signal `name` (`INT`, `TERM`) to pv-launch.
    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Wait for pv-launch to exit: its status, stdout and stderr.
    fn exit(mut self) -> (Option<i32>, String, String) {
        let status = wait_for("pv-launch to exit", DEADLINE, || {
            self.child.try_wait().unwrap()
        });
        // Its pipes close with it (nothing it started holds them).
        wait_for("pv-launch's output to end", DEADLINE, || {
            self.readers.iter().all(|r| r.is_finished()).then_some(())
        });
        for reader in self.readers {
            reader.join().unwrap();
        }
        let text = |lines: &Mutex<Vec<String>>| {
            lines
                .lock()
                .unwrap()
                .iter()
                .map(|l| format!("{l}\n"))
                .collect()
        };
        (status.code(), text(&self.out), text(&self.err))
    }
}

/// Run `pv-launch ARGS` with stdout and stderr piped (not terminals); status, stdout, stderr.
fn run_cli(args: &[&str]) -> (Option<i32>, String, String) {
    Piped::start(args).exit()
}

/// `[  1.23s] text` -> (1.23, "text").
fn timed(line: &str) -> Option<(f64, &str)> {
    let rest = line.strip_prefix('[')?;
    let (secs, text) = rest.split_once("s] ")?;
    // The seconds are right-aligned in six columns with two decimals.
    if secs.len() < 6 || !secs.trim_start().contains('.') {
        return None;
    }
    Some((secs.trim_start().parse().ok()?, text))
}

#[test]
fn plain_timed_lines_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let path = profile(dir.path(), "0");
    let (code, _, err) = run_cli(&["--profile", path.to_str().unwrap(), "--exec", "sleep 0.3"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains('\u{1b}') && !err.contains('✓'), "{err}");
    let stamped: Vec<(f64, &str)> = err.lines().filter_map(timed).collect();
    let texts: Vec<&str> = stamped
        .iter()
        .map(|(_, t)| *t)
        .filter(|t| !t.starts_with("server ready on port "))
        .collect();
    assert_eq!(
        texts[..texts.len().min(4)],
        [
            "starting the server",
            "waiting for the server's ready line",
            "connecting",
            "stopping processes",
        ],
        "{err}"
    );
    assert_eq!(texts.len(), 5, "{err}");
    assert!(
        stamped
            .iter()
            .any(|(_, t)| t.starts_with("server ready on port ")),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("connected: cs://127.0.0.1:")),
        "{err}"
    );
    // The cleanup stage is stamped with the real time since the launch began (the
    // `--exec` command alone took 0.3 s), and its end says how long stopping took.
    let cleanup = stamped
        .iter()
        .find(|(_, t)| *t == "stopping processes")
        .unwrap();
    assert!(cleanup.0 >= 0.3, "{err}");
    let (end, text) = stamped.last().unwrap();
    let took: f64 = text
        .strip_prefix("processes stopped in ")
        .and_then(|t| t.strip_suffix('s'))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no cleanup line: {err}"));
    assert!(
        *end >= cleanup.0 && took <= *end - cleanup.0 + 0.011,
        "{err}"
    );
}

#[test]
fn json_events_on_stdout_with_the_cleanup_times() {
    let dir = tempfile::tempdir().unwrap();
    let path = profile(dir.path(), "0");
    let (code, out, err) = run_cli(&[
        "--profile",
        path.to_str().unwrap(),
        "--json",
        "--exec",
        "sleep 0.3",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.is_empty(),
        "nothing but JSON on stdout, nothing on stderr: {err}"
    );
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let of = |kind: &str| {
        events
            .iter()
            .find(|e| e["event"] == kind || e["stage"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {out}"))
    };
    assert!(
        of("connected")["url"]
            .as_str()
            .unwrap()
            .starts_with("cs://")
    );
    let cleanup = of("cleanup")["elapsed"].as_f64().unwrap();
    assert!(cleanup >= 0.3, "{out}");
    let done = of("cleaned-up");
    assert!(done["elapsed"].as_f64().unwrap() >= cleanup, "{out}");
    assert!(done["took"].as_f64().unwrap() >= 0.0, "{out}");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "cleaned-up", "the last event: {out}");
}

/// The ready-line wait of a server that starts after 30 s: interrupted (SIGINT), pv-launch
/// reports the interrupt, then the cleanup stage and its end, as after connecting; the
/// script's whole process group is gone when it exits 130.
#[test]
fn an_interrupt_during_the_start_reports_the_cleanup_in_plain_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = profile(dir.path(), "30");
    let cli = Piped::start(&["--profile", path.to_str().unwrap()]);
    cli.wait_for_line(false, "the ready-line wait", |l| {
        timed(l).is_some_and(|(_, t)| t == "waiting for the server's ready line")
    });
    let group = server_group(dir.path());
    assert!(group_runs(group));
    cli.signal("INT");
    let (code, _, err) = cli.exit();
    assert_eq!(code, Some(130), "{err}");
    let stamped: Vec<(f64, &str)> = err.lines().filter_map(timed).collect();
    let texts: Vec<&str> = stamped.iter().map(|(_, t)| *t).collect();
    assert_eq!(
        texts[..texts.len() - 1],
        [
            "starting the server",
            "waiting for the server's ready line",
            "interrupted (SIGINT)",
            "stopping processes",
        ],
        "{err}"
    );
    // The last line says how long stopping took, within the time stamps around it.
    let (interrupted, cleanup, (end, last)) = (stamped[2].0, stamped[3].0, stamped[4]);
    let took: f64 = last
        .strip_prefix("processes stopped in ")
        .and_then(|t| t.strip_suffix('s'))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no cleanup line: {err}"));
    assert!(interrupted <= cleanup && cleanup <= end, "{err}");
    assert!(took <= end - cleanup + 0.011, "{err}");
    // Nothing of what was stopped runs any more.
    assert!(
        !group_runs(group),
        "the server's group outlived pv-launch: {err}"
    );
    assert!(!running(group));
}

/// The same with SIGTERM and `--json`: `interrupted`, the `cleanup` stage, then
/// `cleaned-up` as the last event, with consistent times.
#[test]
fn an_interrupt_during_the_start_reports_the_cleanup_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = profile(dir.path(), "30");
    let cli = Piped::start(&["--profile", path.to_str().unwrap(), "--json"]);
    cli.wait_for_line(true, "the wait-ready stage", |l| {
        l.contains(r#""stage":"wait-ready""#)
    });
    let group = server_group(dir.path());
    cli.signal("TERM");
    let (code, out, err) = cli.exit();
    assert_eq!(code, Some(130), "{out}{err}");
    assert!(err.is_empty(), "nothing on stderr with --json: {err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e["stage"].as_str() {
            Some(stage) => format!("stage {stage}"),
            None => e["event"].as_str().unwrap().to_string(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "stage start",
            "stage wait-ready",
            "interrupted",
            "stage cleanup",
            "cleaned-up"
        ],
        "{out}"
    );
    assert_eq!(events[2]["signal"], "SIGTERM", "{out}");
    let elapsed = |i: usize| events[i]["elapsed"].as_f64().unwrap();
    assert!(
        elapsed(2) <= elapsed(3) && elapsed(3) <= elapsed(4),
        "{out}"
    );
    let took = events[4]["took"].as_f64().unwrap();
    assert!(
        took >= 0.0 && took <= elapsed(4) - elapsed(3) + 0.002,
        "{out}"
    );
    assert!(
        !group_runs(group),
        "the server's group outlived pv-launch: {out}"
    );
}

/// A tmux server on a private socket running `pv-launch` in one 120x30 pane; the shell
/// around it records the exit status in `rc`. Killed on drop.
struct Tmux {
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Tmux {
    fn run(pv_launch_args: &str) -> Tmux {
        let dir = tempfile::Builder::new()
            .prefix("pvlt")
            .tempdir_in("/tmp")
            .unwrap();
        let script = dir.path().join("run.sh");
        std::fs::write(
            &script,
            format!(
                // Ctrl-C is for pv-launch: the shell only waits for it (a trapped signal
                // is reset to the default in the child).
                "trap 'true' INT\n\
                 '{bin}' {pv_launch_args}\n\
                 echo $? > '{d}/rc.tmp' && mv '{d}/rc.tmp' '{d}/rc'\n\
                 sleep 60\n",
                bin = workspace_bin("pv-launch").display(),
                d = dir.path().display()
            ),
        )
        .unwrap();
        let socket = dir.path().join("tmux.sock");
        let status = Command::new("tmux")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("TERM", "xterm")
            .arg("-S")
            .arg(&socket)
            .args(["new-session", "-d", "-x", "120", "-y", "30", "-s", "t"])
            .arg(format!("sh '{}'", script.display()))
            .stdin(Stdio::null())
            .status()
            .expect("tmux (apt-get install tmux)");
        assert!(status.success());
        Tmux { socket, dir }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "t"])
    }

    /// Wait until some line of the screen satisfies `cond`; that line.
    fn wait_for_line(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(what, DEADLINE, || {
                last = self.screen();
                last.lines().find(|l| cond(l)).map(str::to_owned)
            })
        }));
        found.unwrap_or_else(|_| panic!("no {what} on the screen:\n{last}"))
    }

    /// pv-launch's exit status, once the shell recorded it.
    fn rc(&self) -> i32 {
        let rc = self.dir.path().join("rc");
        wait_for("pv-launch to exit", DEADLINE, || {
            std::fs::read_to_string(&rc).ok()
        })
        .trim()
        .parse()
        .unwrap()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The seconds at the end of a display line (`… 1.23s`).
fn trailing_seconds(line: &str) -> Option<f64> {
    line.trim_end()
        .rsplit(' ')
        .next()?
        .strip_suffix('s')?
        .parse()
        .ok()
}

#[test]
fn the_terminal_display_spins_then_ticks_each_stage_and_shows_the_url() {
    let dir = tempfile::tempdir().unwrap();
    // The server starts after 1.5 s: the ready-line wait spins that long.
    let path = profile(dir.path(), "1.5");
    let t = Tmux::run(&format!("--profile '{}'", path.display()));
    // A live spinner (not a ✓ line) for the running stage, its elapsed time counting.
    let spinning = t.wait_for_line("a spinner with a live elapsed time", |l| {
        l.contains("waiting for the server's ready line")
            && !l.starts_with('✓')
            && trailing_seconds(l).is_some_and(|s| s >= 0.3)
    });
    assert!(!spinning.starts_with('['), "not a plain line: {spinning}");
    let url = t.wait_for_line("the connection URL", |l| l.starts_with("connected: cs://"));
    let screen = t.screen();
    for done in [
        "✓ starting the server",
        "✓ server ready on port ",
        "✓ connecting",
    ] {
        let line = screen
            .lines()
            .find(|l| l.starts_with(done))
            .unwrap_or_else(|| panic!("no {done:?} line:\n{screen}"));
        assert!(trailing_seconds(line).is_some(), "{line}");
    }
    // The ready-line wait took the script's 1.5 s, and the ✓ line says so.
    let ready = screen
        .lines()
        .find(|l| l.starts_with("✓ server ready on port "))
        .unwrap();
    assert!(trailing_seconds(ready).unwrap() >= 1.4, "{screen}");
    // Server output prints above the display, and no plain timed line is drawn.
    assert!(
        screen.contains("server: pv-launch-ready v1 port="),
        "{screen}"
    );
    assert!(!screen.lines().any(|l| timed(l).is_some()), "{screen}");
    assert!(url.contains("127.0.0.1:"), "{url}");

    // Ctrl-C: a line says so, the cleanup stage ends as a ✓ line, and pv-launch exits 130.
    t.tmux(&["send-keys", "-t", "t", "C-c"]);
    t.wait_for_line("the cleanup ✓ line", |l| {
        l.starts_with("✓ stopping processes")
    });
    assert_eq!(t.rc(), 130, "{}", t.screen());
    let screen = t.screen();
    let lines: Vec<&str> = screen.lines().map(str::trim_end).collect();
    let at = |text: &str| lines.iter().position(|l| l.starts_with(text));
    assert!(
        at("interrupted (SIGINT)") < at("✓ stopping processes"),
        "{screen}"
    );
    assert_clean(&screen);
}

/// No echoed `^C` and no spinner glyph (Braille patterns) left on `screen`.
fn assert_clean(screen: &str) {
    assert!(!screen.contains("^C"), "an echoed ^C:\n{screen}");
    assert!(
        !screen
            .chars()
            .any(|c| ('\u{2800}'..='\u{28ff}').contains(&c)),
        "a spinner left on the screen:\n{screen}"
    );
}

/// Ctrl-C in the terminal while the ready line is awaited: the spinner becomes a `✗` line
/// saying so, the cleanup stage a `✓` line, and nothing else is left on the screen (before,
/// the terminal's `^C` echo wrapped past the padded spinner line and left a stale copy of
/// it); the script's whole process group is gone.
#[test]
fn the_terminal_display_ends_cleanly_when_interrupted_during_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = profile(dir.path(), "30");
    let t = Tmux::run(&format!("--profile '{}'", path.display()));
    t.wait_for_line("the ready-line spinner", |l| {
        l.contains("waiting for the server's ready line")
            && trailing_seconds(l).is_some_and(|s| s >= 0.3)
    });
    let group = server_group(dir.path());
    t.tmux(&["send-keys", "-t", "t", "C-c"]);
    t.wait_for_line("the cleanup ✓ line", |l| {
        l.starts_with("✓ stopping processes")
    });
    assert_eq!(t.rc(), 130, "{}", t.screen());
    let screen = t.screen();
    // pv-launch's lines are all there is (the shell around it prints nothing).
    let lines: Vec<&str> = screen
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 3, "{screen}");
    assert!(
        lines[0].starts_with("✓ starting the server  ") && trailing_seconds(lines[0]).is_some(),
        "{screen}"
    );
    assert!(
        lines[1].starts_with("✗ waiting for the server's ready line (after ")
            && lines[1].ends_with("s): interrupted (SIGINT)"),
        "{screen}"
    );
    assert!(
        lines[2].starts_with("✓ stopping processes  ") && trailing_seconds(lines[2]).is_some(),
        "{screen}"
    );
    assert_clean(&screen);
    assert!(!group_runs(group), "the server's group outlived pv-launch");
}

#[test]
fn the_terminal_display_shows_a_failure_with_a_cross_and_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fail.sh");
    std::fs::write(&script, "#!/bin/sh\necho 'no licence left' >&2\nexit 3\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("profile.toml");
    std::fs::write(
        &path,
        format!(
            "[[server]]\nname = \"f\"\nresource = \"cs://127.0.0.1:0\"\n\
             [server.startup]\nmechanism = \"local-script\"\nscript = \"{}\"\n",
            script.display()
        ),
    )
    .unwrap();
    let t = Tmux::run(&format!("--profile '{}'", path.display()));
    let cross = t.wait_for_line("a ✗ line", |l| l.starts_with("✗ "));
    assert!(
        cross.contains("waiting for the server's ready line") && cross.contains("exit code 3"),
        "{cross}"
    );
    assert!(t.screen().contains("no licence left"), "{}", t.screen());
    assert_eq!(t.rc(), 1, "{}", t.screen());
}
