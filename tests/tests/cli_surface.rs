//! The `pv-launch` command line as a user meets it, with the real binary and real servers:
//! `list`, `check`, `import`, `completions bash`, `--server` selection (and the error
//! listing the servers), `--seed` with `random` defaults, profiles found by name in
//! `$XDG_CONFIG_HOME/pv-launch/`, exit status 2 for a bad profile or bad usage, SIGTERM to a
//! held session (`--no-client`) after connecting, every `--json` event kind of a launch
//! with a client, a positive `delay`, bytes through the Unix relay (`PV_LAUNCH_SOCKET`) and
//! a server on `[::1]`.
//!
//! Needs `socat` for the relay and `delay` tests: without it a test says so and skips,
//! except under `CI=true`, where a missing part fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use pv_e2e::workspace_bin;
use serde_json::Value;

/// Bound on every wait for something that should happen.
const WAIT: Duration = Duration::from_secs(60);

const SOCAT: &str = "/usr/bin/socat";

/// Whether every one of `parts` is installed; under `CI=true` a missing part fails.
fn have(parts: &[&str]) -> bool {
    pv_e2e::have_parts(parts, false)
}

fn demo() -> String {
    workspace_bin("pv-demo-server").display().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scratch directory with `config/pv-launch/` (for `XDG_CONFIG_HOME`).
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("pv-cli-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("config/pv-launch")).unwrap();
        Scratch { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> PathBuf {
        self.path().join("config")
    }

    /// Write `text` as `name` in the config directory.
    fn profile(&self, name: &str, text: &str) -> PathBuf {
        let p = self.config().join("pv-launch").join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Write an executable script `name` with `body`.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(workspace_bin("pv-launch"));
        c.args(args)
            .env("XDG_CONFIG_HOME", self.config())
            .env_remove("PV_LAUNCH_TOKEN")
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Run `pv-launch ARGS` to its end (bounded).
    fn run(&self, args: &[&str]) -> Ran {
        let child = self.command(args).spawn().expect("start pv-launch");
        let pid = child.id();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = rx.recv_timeout(WAIT * 2).unwrap_or_else(|_| {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("pv-launch {args:?} did not end within {:?}", WAIT * 2)
        });
        Ran(out.unwrap())
    }
}

/// How a finished `pv-launch` run ended.
struct Ran(Output);

impl Ran {
    fn code(&self) -> Option<i32> {
        self.0.status.code()
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    fn context(&self) -> String {
        format!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            self.0.status,
            self.stdout(),
            self.stderr()
        )
    }
    /// stdout as JSON lines (each must parse).
    fn events(&self) -> Vec<Value> {
        self.stdout()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n{}", self.context()))
            })
            .collect()
    }
}

/// A profile with two local demo servers: `alpha`, and `beta` whose connect id is an
/// option with a `random` default.
fn two_servers() -> String {
    format!(
        "[[server]]\nname = \"alpha\"\nresource = \"cs://127.0.0.1:0\"\n\
         [server.startup]\nmechanism = \"local\"\nargv = [{demo:?}, \"--server-port\", \"${{PV_SERVER_PORT}}\"]\n\
         [[server]]\nname = \"beta\"\nresource = \"cs://127.0.0.1:0\"\n\
         [server.startup]\nmechanism = \"local\"\n\
         argv = [{demo:?}, \"--server-port\", \"${{PV_SERVER_PORT}}\", \"--connect-id\", \"${{ID}}\"]\n\
         [[server.option]]\nname = \"ID\"\ntype = \"int\"\nmin = 1\nmax = 1000000\ndefault = \"random\"\n",
        demo = demo()
    )
}

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../launcher/tests/data/pvsc-corpus")
        .join(name)
}

#[test]
fn list_shows_the_config_directorys_profiles_and_a_profiles_servers() {
    let s = Scratch::new();
    s.profile("two.toml", &two_servers());
    s.profile("noext", &two_servers());
    s.profile("notes.txt", "not a profile");
    s.profile(".hidden", "not a profile");
    std::fs::copy(
        corpus("olcf-andes.pvsc"),
        s.config().join("pv-launch/andes.pvsc"),
    )
    .unwrap();
    let all = s.run(&["list"]);
    assert_eq!(all.code(), Some(0), "{}", all.context());
    let listed: Vec<String> = all.stdout().lines().map(str::to_owned).collect();
    let dir = s.config().join("pv-launch");
    assert!(
        listed.contains(&dir.join("two.toml").display().to_string()),
        "{}",
        all.context()
    );
    assert!(
        listed.contains(&dir.join("andes.pvsc").display().to_string()),
        "{}",
        all.context()
    );
    // A profile named without an extension is found by name (NAME, NAME.toml or
    // NAME.pvsc), so `list` shows it too; a hidden file or another extension is not one.
    assert!(
        listed.contains(&dir.join("noext").display().to_string()),
        "{}",
        all.context()
    );
    assert!(
        !all.stdout().contains("notes.txt") && !all.stdout().contains(".hidden"),
        "{}",
        all.context()
    );
    for name in ["two", "noext"] {
        let one = s.run(&["list", "--profile", name]);
        assert_eq!(one.code(), Some(0), "{}", one.context());
        assert_eq!(
            one.stdout(),
            "alpha\tcs://127.0.0.1:0\tlocal\nbeta\tcs://127.0.0.1:0\tlocal\n",
            "{name}: {}",
            one.context()
        );
    }
    let pvsc = s.run(&["list", "--profile", "andes"]);
    assert_eq!(pvsc.code(), Some(0), "{}", pvsc.context());
    assert!(
        pvsc.stdout().starts_with("ORNL andes\t"),
        "{}",
        pvsc.context()
    );
}

#[test]
fn check_prints_ok_lines_and_warnings_and_a_broken_profile_exits_2() {
    let s = Scratch::new();
    s.profile("two.toml", &two_servers());
    let ok = s.run(&["check", "--profile", "two"]);
    assert_eq!(ok.code(), Some(0), "{}", ok.context());
    assert_eq!(ok.stdout(), "ok: alpha\nok: beta\n", "{}", ok.context());
    assert_eq!(ok.stderr(), "", "{}", ok.context());

    let warned = s.run(&[
        "check",
        "--profile",
        corpus("olcf-frontier.pvsc").to_str().unwrap(),
    ]);
    assert_eq!(warned.code(), Some(0), "{}", warned.context());
    assert!(
        warned
            .stdout()
            .contains("ok: ORNL frontier (OLCF Official)"),
        "{}",
        warned.context()
    );
    assert!(
        warned
            .stderr()
            .contains("olcf-frontier.pvsc:36:7: warning: the timeout attribute is deprecated"),
        "{}",
        warned.context()
    );

    let broken = s.profile(
        "broken.toml",
        "[[server]]\nname = \"x\"\nresource = \"cs://127.0.0.1:0\"\nbogus = 1\n",
    );
    let bad = s.run(&["check", "--profile", broken.to_str().unwrap()]);
    assert_eq!(bad.code(), Some(2), "{}", bad.context());
    assert!(
        bad.stderr()
            .contains("broken.toml:4:1: unknown field `bogus`"),
        "{}",
        bad.context()
    );
    assert!(!bad.stdout().contains("ok:"), "{}", bad.context());
}

#[test]
fn import_writes_a_toml_profile_that_check_accepts_with_the_same_servers() {
    let s = Scratch::new();
    for file in [
        "olcf-frontier.pvsc",
        "olcf-andes.pvsc",
        "artracfd-sharcnet.pvsc",
    ] {
        let out = s.path().join(format!("{file}.toml"));
        let import = s.run(&[
            "import",
            corpus(file).to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(import.code(), Some(0), "{file}: {}", import.context());
        let text = std::fs::read_to_string(&out).expect("import wrote the TOML");
        assert!(text.contains("[[server]]"), "{text}");
        let from_pvsc = s.run(&["check", "--profile", corpus(file).to_str().unwrap()]);
        let from_toml = s.run(&["check", "--profile", out.to_str().unwrap()]);
        assert_eq!(from_toml.code(), Some(0), "{file}: {}", from_toml.context());
        assert!(
            from_toml.stdout().contains("ok: "),
            "{}",
            from_toml.context()
        );
        assert_eq!(
            from_toml.stdout(),
            from_pvsc.stdout(),
            "{file}: the imported profile has the same servers"
        );
        // And the same plans, as far as a dry run shows them (argv, ssh, connection).
        let servers: Vec<String> = from_pvsc
            .stdout()
            .lines()
            .filter_map(|l| l.strip_prefix("ok: ").map(str::to_owned))
            .collect();
        assert!(!servers.is_empty(), "{file}: no server compared");
        for server in &servers {
            let plan = |profile: &str| -> Value {
                let r = s.run(&[
                    "--profile",
                    profile,
                    "--server",
                    server,
                    "--dry-run",
                    "--json",
                    "--no-prompt",
                    "--seed",
                    "3",
                ]);
                assert_eq!(r.code(), Some(0), "{file} {server}: {}", r.context());
                let mut v: Value = serde_json::from_str(r.stdout().trim()).unwrap();
                v.as_object_mut().unwrap().remove("defined_at");
                v
            };
            let a = plan(corpus(file).to_str().unwrap());
            let b = plan(out.to_str().unwrap());
            if from_pvsc
                .stderr()
                .contains("disappears from the command line")
            {
                // Documented divergence (the import's header comment says so): ParaView drops
                // an argument empty after substitution, the TOML keeps it as "".
                assert!(
                    text.contains(
                        "an empty value vanished); here every argv element stays one argument"
                    ),
                    "{text}"
                );
                let kept: Vec<&Value> = b["launch"]["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|v| *v != "")
                    .collect();
                let dropped: Vec<&Value> = a["launch"]["argv"].as_array().unwrap().iter().collect();
                assert_eq!(dropped, kept, "{file} {server}");
                assert_ne!(a["launch"]["argv"], b["launch"]["argv"], "{file} {server}");
            } else {
                assert_eq!(a["launch"]["argv"], b["launch"]["argv"], "{file} {server}");
            }
            assert_eq!(a["connection"], b["connection"], "{file} {server}");
        }
    }
}

#[test]
fn completions_bash_is_a_script_that_knows_the_options() {
    let s = Scratch::new();
    let r = s.run(&["completions", "bash"]);
    assert_eq!(r.code(), Some(0), "{}", r.context());
    let script = r.stdout();
    for word in [
        "--profile",
        "--server",
        "--dry-run",
        "--seed",
        "import",
        "check",
    ] {
        assert!(script.contains(word), "no {word} in the bash completion");
    }
    assert!(
        script.contains("complete -F"),
        "not a bash completion script"
    );
    // bash itself accepts it.
    let bash = Command::new("bash")
        .args(["-n", "-c", &script])
        .status()
        .unwrap();
    assert!(bash.success(), "bash -n rejects the completion script");
}

#[test]
fn server_is_chosen_by_name_found_by_profile_name_and_an_ambiguous_choice_lists_them() {
    let s = Scratch::new();
    s.profile("two.toml", &two_servers());
    let picked = s.run(&["--profile", "two", "--server", "beta", "--dry-run"]);
    assert_eq!(picked.code(), Some(0), "{}", picked.context());
    assert!(
        picked.stdout().starts_with("server: \"beta\"\n"),
        "{}",
        picked.context()
    );
    let defined = format!(
        "defined at: {}:",
        s.config().join("pv-launch/two.toml").display()
    );
    assert!(picked.stdout().contains(&defined), "{}", picked.context());

    let ambiguous = s.run(&["--profile", "two", "--dry-run"]);
    assert_eq!(ambiguous.code(), Some(2), "{}", ambiguous.context());
    assert!(
        ambiguous
            .stderr()
            .contains("has 2 servers: choose one with --server NAME: \"alpha\", \"beta\""),
        "{}",
        ambiguous.context()
    );
    assert_eq!(ambiguous.stdout(), "");

    let unknown = s.run(&["--profile", "two", "--server", "gamma", "--dry-run"]);
    assert_eq!(unknown.code(), Some(2), "{}", unknown.context());
    assert!(
        unknown
            .stderr()
            .contains("no server named \"gamma\"; servers: \"alpha\", \"beta\""),
        "{}",
        unknown.context()
    );

    let missing = s.run(&["--profile", "nosuch", "--dry-run"]);
    assert_eq!(missing.code(), Some(2), "{}", missing.context());

    // A single-server profile needs no --server.
    s.profile(
        "one.toml",
        &format!(
            "[[server]]\nname = \"solo\"\nresource = \"cs://127.0.0.1:0\"\n\
             [server.startup]\nmechanism = \"local\"\nargv = [{:?}]\n",
            demo()
        ),
    );
    let solo = s.run(&["--profile", "one", "--dry-run"]);
    assert_eq!(solo.code(), Some(0), "{}", solo.context());
    assert!(solo.stdout().starts_with("server: \"solo\"\n"));
}

#[test]
fn seed_makes_random_defaults_reproducible_in_the_dry_run() {
    let s = Scratch::new();
    s.profile("two.toml", &two_servers());
    let id = |seed: &str| -> String {
        let r = s.run(&[
            "--profile",
            "two",
            "--server",
            "beta",
            "--dry-run",
            "--json",
            "--seed",
            seed,
        ]);
        assert_eq!(r.code(), Some(0), "{}", r.context());
        let plan: Value = serde_json::from_str(r.stdout().trim()).unwrap();
        let argv = plan["launch"]["argv"].as_array().unwrap().clone();
        assert_eq!(argv[3], "--connect-id");
        let value = argv[4].as_str().unwrap().to_owned();
        let n: u64 = value.parse().unwrap();
        assert!((1..=1_000_000).contains(&n), "{n} outside min..max");
        let var = plan["variables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "ID")
            .expect("the ID variable")
            .clone();
        assert_eq!(var["value"], value.as_str());
        value
    };
    let first = id("5");
    assert_eq!(id("5"), first, "the same seed, the same random default");
    let others: Vec<String> = ["6", "7", "8"].iter().map(|s| id(s)).collect();
    assert!(
        others.iter().any(|o| *o != first),
        "other seeds all gave {first}: the seed is ignored"
    );
    // The text dry run agrees with the JSON one.
    let text = s.run(&[
        "--profile",
        "two",
        "--server",
        "beta",
        "--dry-run",
        "--seed",
        "5",
    ]);
    assert!(
        text.stdout().contains(&format!("\"{first}\"")),
        "{}",
        text.context()
    );
}

#[test]
fn a_bad_profile_or_bad_usage_exits_2_before_anything_starts() {
    let s = Scratch::new();
    let marker = s.path().join("started");
    let script = s.script("srv", &format!("touch {}\n", marker.display()));
    // A launch (not a dry run or check) of a profile with an error.
    let bad = s.profile(
        "bad.toml",
        &format!(
            "[[server]]\nname = \"x\"\nresource = \"cs://127.0.0.1:0\"\n\
             [server.startup]\nmechanism = \"local\"\nargv = [{:?}]\ndelay = -2\n",
            script.display().to_string()
        ),
    );
    let r = s.run(&["--profile", bad.to_str().unwrap()]);
    assert_eq!(r.code(), Some(2), "{}", r.context());
    assert!(r.stderr().contains("bad.toml:"), "{}", r.context());
    // An undefined variable in the argv.
    let undefined = s.profile(
        "undefined.toml",
        &format!(
            "[[server]]\nname = \"x\"\nresource = \"cs://127.0.0.1:0\"\n\
             [server.startup]\nmechanism = \"local\"\nargv = [{:?}, \"${{NOPE_NOT_SET}}\"]\n",
            script.display().to_string()
        ),
    );
    let r = s.run(&["--profile", undefined.to_str().unwrap()]);
    assert_eq!(r.code(), Some(2), "{}", r.context());
    // Usage errors.
    for args in [
        &["--no-such-flag"][..],
        &["--seed", "abc", "--dry-run"],
        &["list", "extra"],
    ] {
        let r = s.run(args);
        assert_eq!(r.code(), Some(2), "{args:?}: {}", r.context());
    }
    assert!(!marker.exists(), "a server started despite the error");
}

/// `pv-launch --json ARGS` running: its events as they come.
struct Live {
    child: Child,
    events: Receiver<Value>,
    seen: Vec<Value>,
}

impl Live {
    fn start(s: &Scratch, args: &[&str]) -> Live {
        let mut child = s.command(args).spawn().expect("start pv-launch");
        let (tx, events) = channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Live {
            child,
            events,
            seen: vec![],
        }
    }

    /// `pv-launch --json --no-client --profile PROFILE`: a session held until it ends.
    fn held(s: &Scratch, profile: &Path) -> Live {
        Live::start(
            s,
            &[
                "--json",
                "--no-client",
                "--profile",
                profile.to_str().unwrap(),
            ],
        )
    }

    fn wait_event(&mut self, kind: &str) -> Value {
        let end = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.seen.iter().find(|e| e["event"] == kind) {
                return e.clone();
            }
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {kind} within {WAIT:?}: {:?}",
                self.seen
            );
            match self.events.recv_timeout(left) {
                Ok(e) => self.seen.push(e),
                Err(_) => panic!("pv-launch ended before {kind}: {:?}", self.seen),
            }
        }
    }

    /// Wait (bounded) for the exit; the exit code and every event.
    fn finish(mut self) -> (Option<i32>, Vec<Value>) {
        let end = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("pv-launch did not end within {WAIT:?}: {:?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader ends with the pipe.
        while let Ok(e) = self.events.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(e);
        }
        (status.code(), self.seen)
    }
}

/// Live processes whose command line contains `marker` (not this test).
fn processes_with(marker: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut out = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if pid == me || !pv_e2e::running(pid) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            out.push(pid);
        }
    }
    out
}

fn wait_no_process_with(marker: &str) {
    let end = Instant::now() + WAIT;
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "still running with {marker}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `NAME.toml`: one local server `NAME` at `cs://127.0.0.1:0` started with `argv`.
fn local_profile(s: &Scratch, name: &str, argv: &[&str]) -> PathBuf {
    s.profile(
        &format!("{name}.toml"),
        &format!(
            "[[server]]\nname = {name:?}\nresource = \"cs://127.0.0.1:0\"\n\
             [server.startup]\nmechanism = \"local\"\nargv = {argv:?}\n"
        ),
    )
}

/// A demo server reached through a symlink in the scratch directory, so its command line
/// carries a marker unique to the test.
fn marked_demo(s: &Scratch) -> PathBuf {
    let link = s.path().join("marked-demo-server");
    std::os::unix::fs::symlink(workspace_bin("pv-demo-server"), &link).unwrap();
    link
}

#[test]
fn sigterm_to_a_held_session_after_connecting_exits_130_and_stops_everything() {
    let s = Scratch::new();
    let demo = marked_demo(&s);
    let marker = demo.display().to_string();
    let profile = local_profile(&s, "held", &[&marker, "--server-port", "${PV_SERVER_PORT}"]);
    let mut live = Live::held(&s, &profile);
    let connected = live.wait_event("connected");
    let relay = live.wait_event("relay")["socket"]
        .as_str()
        .unwrap()
        .to_owned();
    let ready_port = live.wait_event("ready")["port"].as_u64().unwrap() as u16;
    assert!(Path::new(&relay).exists(), "the relay socket {relay}");
    assert_eq!(processes_with(&marker).len(), 1, "the server runs");
    assert!(
        connected["url"]
            .as_str()
            .unwrap()
            .starts_with("cs://127.0.0.1:"),
        "{connected}"
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &live.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let (code, events) = live.finish();
    assert_eq!(code, Some(130), "{events:?}");
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    let interrupted = kinds
        .iter()
        .position(|k| *k == "interrupted")
        .expect("an interrupted event");
    assert_eq!(events[interrupted]["signal"], "SIGTERM");
    events.iter().for_each(assert_fields);
    let cleanup = events
        .iter()
        .position(|e| e["event"] == "stage" && e["stage"] == "cleanup")
        .expect("the cleanup stage");
    let cleaned = kinds
        .iter()
        .position(|k| *k == "cleaned-up")
        .expect("cleaned-up");
    assert!(interrupted < cleanup && cleanup < cleaned, "{kinds:?}");
    assert_eq!(cleaned, events.len() - 1, "cleaned-up is the last event");
    wait_no_process_with(&marker);
    assert!(!Path::new(&relay).exists(), "the relay socket is left");
    assert!(
        !Path::new(&relay).parent().unwrap().exists(),
        "the relay directory is left"
    );
    let refused = std::net::TcpStream::connect(("127.0.0.1", ready_port)).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

/// The keys every event of `kind` has (launcher/src/events.rs), besides `event`.
fn fields_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "stage" => &["stage", "elapsed"],
        "stdout" | "stderr" => &["line"],
        "ready" => &["port", "elapsed"],
        "exited" => &["code"],
        "connected" | "handoff" => &["url"],
        "relay" => &["socket"],
        "interrupted" => &["signal", "elapsed"],
        "cleaned-up" => &["took", "elapsed"],
        "note" | "failed" => &["message"],
        "client" => &["pid", "command"],
        "client-exited" => &["code"],
        other => panic!("an event kind the test does not know: {other}"),
    }
}

/// `e` has exactly its kind's keys, and its durations are seconds within the test's time.
fn assert_fields(e: &Value) {
    let kind = e["event"].as_str().expect("an event key");
    let mut keys: Vec<&str> = e
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "event")
        .collect();
    keys.sort_unstable();
    let mut want = fields_of(kind).to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "{e}");
    for k in ["elapsed", "took"] {
        if let Some(v) = e.get(k) {
            let secs = v.as_f64().expect("seconds");
            assert!((0.0..WAIT.as_secs_f64() * 2.0).contains(&secs), "{e}");
        }
    }
}

/// A launch with a client and a server that announces itself before it listens: every
/// event kind of such a run appears, each line is JSON with exactly its kind's keys, and
/// the order is the launch's. The client sends bytes through `PV_LAUNCH_SOCKET` with socat.
#[test]
fn json_events_of_a_launch_with_a_client_each_have_their_kinds_fields() {
    if !have(&[SOCAT]) {
        return;
    }
    let s = Scratch::new();
    let port = free_port();
    // A ready line for a port nobody listens on yet, so pv-launch's first connect
    // attempts fail (notes); then the real server (its own ready line dropped).
    let script = s.script(
        "announce-early",
        &format!(
            "echo 'to stdout'\necho 'to stderr' >&2\n\
             echo 'pv-launch-ready v1 port={port} handshake=native protocol=2'\n\
             sleep 1\nexec {:?} --multi-clients --server-port {port} >/dev/null\n",
            demo()
        ),
    );
    let profile = s.profile(
        "json.toml",
        &format!(
            "[[server]]\nname = \"json\"\nresource = \"cs://127.0.0.1:0\"\nconnect_timeout = 30\n\
             [server.startup]\nmechanism = \"local\"\nargv = [{:?}]\n",
            script.display().to_string()
        ),
    );
    let out = s.path().join("echoed");
    let client = format!(
        "printf 'through the relay\\n' | {SOCAT} -t 5 - UNIX-CONNECT:\"$PV_LAUNCH_SOCKET\" > {}; echo client-ran",
        out.display()
    );
    let r = s.run(&[
        "--json",
        "--profile",
        profile.to_str().unwrap(),
        "--exec",
        &client,
    ]);
    assert_eq!(r.code(), Some(0), "{}", r.context());
    let events = r.events();
    events.iter().for_each(assert_fields);
    let first = |pred: &dyn Fn(&Value) -> bool, what: &str| -> usize {
        events
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("no {what}:\n{}", r.context()))
    };
    let start = first(&|e| e["event"] == "stage" && e["stage"] == "start", "start");
    let out_line = first(
        &|e| e["event"] == "stdout" && e["line"] == "to stdout",
        "stdout",
    );
    let err_line = first(
        &|e| e["event"] == "stderr" && e["line"] == "to stderr",
        "stderr",
    );
    let ready = first(&|e| e["event"] == "ready" && e["port"] == port, "ready");
    let connect = first(
        &|e| e["event"] == "stage" && e["stage"] == "connect",
        "connect",
    );
    let note = first(
        &|e| {
            e["event"] == "note"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("connect attempt"))
        },
        "a connect-retry note",
    );
    let connected = first(
        &|e| e["event"] == "connected" && e["url"] == format!("cs://127.0.0.1:{port}"),
        "connected",
    );
    let relay = first(&|e| e["event"] == "relay", "relay");
    let handoff = first(&|e| e["event"] == "handoff", "handoff");
    let client_ev = first(&|e| e["event"] == "client", "client");
    let client_exited = first(
        &|e| e["event"] == "client-exited" && e["code"] == 0,
        "client-exited 0",
    );
    let cleanup = first(
        &|e| e["event"] == "stage" && e["stage"] == "cleanup",
        "cleanup",
    );
    let cleaned = first(&|e| e["event"] == "cleaned-up", "cleaned-up");
    assert!(start < out_line && start < err_line && out_line < ready);
    assert!(ready < connect && connect < note && note < connected);
    assert!(connected < relay && relay < handoff && handoff < client_ev);
    assert!(client_ev < client_exited && client_exited < cleanup && cleanup < cleaned);
    assert_eq!(cleaned, events.len() - 1);
    assert_eq!(
        events[client_ev]["command"], client,
        "the client's command as given"
    );
    let handoff_url = events[handoff]["url"].as_str().unwrap();
    assert!(handoff_url.starts_with("cs://127.0.0.1:"), "{handoff_url}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "through the relay\n",
        "the echo through the relay"
    );
    assert!(r.stderr().is_empty() || !r.stderr().contains('\u{1b}'));
}

/// Bytes across the Unix relay: socat on `PV_LAUNCH_SOCKET` gets the demo server's echo
/// (authenticated and, here, decrypted by pv-launch: the server runs TLS); the socket's
/// directory is private (0700) and gone afterwards.
#[test]
fn socat_on_the_unix_relay_gets_the_servers_echo_through_tls() {
    if !have(&[SOCAT]) {
        return;
    }
    let s = Scratch::new();
    let demo = marked_demo(&s);
    let profile = s.profile(
        "relay.toml",
        &format!(
            "[[server]]\nname = \"relay\"\nresource = \"cs+tls://127.0.0.1:0\"\n\
             [server.startup]\nmechanism = \"local\"\n\
             argv = [{:?}, \"--tls\", \"--multi-clients\", \"--server-port\", \"${{PV_SERVER_PORT}}\"]\n",
            demo.display().to_string()
        ),
    );
    let out = s.path().join("echoed");
    let info = s.path().join("relay-info");
    let payload = "bytes: \u{1}\u{7f} é ; $HOME\n";
    std::fs::write(s.path().join("payload"), payload).unwrap();
    let client = format!(
        "stat -c '%a %U' \"$(dirname \"$PV_LAUNCH_SOCKET\")\" > {info}; \
         echo \"$PV_LAUNCH_SOCKET\" >> {info}; \
         {SOCAT} -t 5 - UNIX-CONNECT:\"$PV_LAUNCH_SOCKET\" < payload > {out}",
        info = info.display(),
        out = out.display()
    );
    let r = s.run(&[
        "--json",
        "--profile",
        profile.to_str().unwrap(),
        "--exec",
        &client,
    ]);
    assert_eq!(r.code(), Some(0), "{}", r.context());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), payload);
    let info = std::fs::read_to_string(&info).unwrap();
    let mut lines = info.lines();
    let me = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    assert_eq!(lines.next(), Some(format!("700 {}", me.trim()).as_str()));
    let socket = lines.next().unwrap();
    let relay_event = r
        .events()
        .into_iter()
        .find(|e| e["event"] == "relay")
        .expect("a relay event");
    assert_eq!(relay_event["socket"], socket);
    assert!(!Path::new(socket).exists());
    assert!(!Path::new(socket).parent().unwrap().exists());
    wait_no_process_with(&demo.display().to_string());
}

/// A positive `delay` with a server that prints no ready line (handshake `none`, so no
/// launch channel) and no ready pattern: pv-launch waits the delay, then hands over. The
/// server listens only 1.5 s after it starts, so a client dialling once succeeds only if
/// the 2.5 s delay was waited; with `delay = 0` the same single dial is refused (control).
#[test]
fn a_positive_delay_is_waited_before_the_handoff() {
    if !have(&[SOCAT]) {
        return;
    }
    let s = Scratch::new();
    let run = |delay: &str| -> (Ran, String) {
        let port = free_port();
        let script = s.script(
            &format!("late-{delay}"),
            &format!(
                "sleep 1.5\nexec {:?} --handshake none --multi-clients --server-port {port} >/dev/null\n",
                demo()
            ),
        );
        let profile = s.profile(
            &format!("delay-{delay}.toml"),
            &format!(
                "[[server]]\nname = \"late\"\nresource = \"cs://127.0.0.1:{port}\"\nhandshake = \"none\"\n\
                 [server.startup]\nmechanism = \"local\"\nargv = [{:?}]\ndelay = {delay}\n",
                script.display().to_string()
            ),
        );
        let out = s.path().join(format!("echo-{delay}"));
        let client = format!(
            "printf 'after the delay\\n' | {SOCAT} -t 5 - TCP:\"$PV_LAUNCH_HOST\":\"$PV_LAUNCH_PORT\" > {}",
            out.display()
        );
        let r = s.run(&[
            "--json",
            "--profile",
            profile.to_str().unwrap(),
            "--exec",
            &client,
        ]);
        let echoed = std::fs::read_to_string(&out).unwrap_or_default();
        (r, echoed)
    };
    let (waited, echoed) = run("2.5");
    assert_eq!(waited.code(), Some(0), "{}", waited.context());
    assert_eq!(echoed, "after the delay\n", "{}", waited.context());
    let events = waited.events();
    let delay = events
        .iter()
        .position(|e| e["event"] == "stage" && e["stage"] == "delay")
        .unwrap_or_else(|| panic!("no delay stage: {}", waited.context()));
    let handoff = events
        .iter()
        .position(|e| e["event"] == "handoff")
        .expect("a handoff");
    assert!(delay < handoff, "{}", waited.context());
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "stage" && e["stage"] == "wait-ready"),
        "no ready line is awaited: {}",
        waited.context()
    );
    let cleanup_at = events
        .iter()
        .find(|e| e["event"] == "stage" && e["stage"] == "cleanup")
        .expect("cleanup")["elapsed"]
        .as_f64()
        .unwrap();
    assert!(cleanup_at >= 2.5, "the delay was not waited: {cleanup_at}");

    let (control, echoed) = run("0");
    assert!(
        echoed.is_empty() && control.code() != Some(0),
        "without the delay the single dial should be refused; the test proves nothing: {}",
        control.context()
    );
}

/// A server bound to `::1` and a profile resource `cs://[::1]:0`: pv-launch connects over
/// IPv6 (the connected URL says so) and a client gets the echo through the relay.
#[test]
fn a_server_on_ipv6_loopback_is_connected() {
    if !have(&[SOCAT]) {
        return;
    }
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "no IPv6 loopback under CI"
        );
        eprintln!("SKIPPED: no IPv6 loopback");
        return;
    }
    let s = Scratch::new();
    let profile = s.profile(
        "v6.toml",
        &format!(
            "[[server]]\nname = \"v6\"\nresource = \"cs://[::1]:0\"\n\
             [server.startup]\nmechanism = \"local\"\n\
             argv = [{:?}, \"--bind-address\", \"::1\", \"--server-port\", \"${{PV_SERVER_PORT}}\"]\n",
            demo()
        ),
    );
    let out = s.path().join("echoed");
    let client = format!(
        "printf 'over ipv6\\n' | {SOCAT} -t 5 - UNIX-CONNECT:\"$PV_LAUNCH_SOCKET\" > {}",
        out.display()
    );
    let r = s.run(&[
        "--json",
        "--profile",
        profile.to_str().unwrap(),
        "--exec",
        &client,
    ]);
    assert_eq!(r.code(), Some(0), "{}", r.context());
    let events = r.events();
    let ready = events
        .iter()
        .find(|e| e["event"] == "ready")
        .expect("ready")["port"]
        .as_u64()
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "connected" && e["url"] == format!("cs://[::1]:{ready}")),
        "{}",
        r.context()
    );
    assert!(
        events.iter().any(|e| e["event"] == "stderr"
            && e["line"] == format!("Accepting connection(s): [::1]:{ready}")),
        "the server listened on ::1: {}",
        r.context()
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "over ipv6\n");
}

/// A local script written as a relative path is found beside its profile, whatever the
/// current directory: the shipped `examples/profiles/script.toml` run from a scratch
/// directory, and a profile found by name in the config directory whose script sits in a
/// subdirectory there.
#[test]
fn a_local_scripts_relative_path_is_relative_to_its_profile_not_the_current_directory() {
    let s = Scratch::new();
    let bins = pv_e2e::target_bin_dir();
    let path = format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/profiles/script.toml");
    let shipped = shipped.canonicalize().unwrap();
    let scripts = s.config().join("pv-launch/scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    let script = scripts.join("start.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho 'start.sh ran' >&2\nexec {:?} --server-port \"$1\" --bind-address 127.0.0.1\n",
            demo()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    s.profile(
        "scripted.toml",
        "[[server]]\nname = \"s\"\nresource = \"cs://127.0.0.1:0\"\n[server.startup]\n\
         mechanism = \"local-script\"\nscript = \"scripts/start.sh\"\nargs = [\"${PV_SERVER_PORT}\"]\n",
    );
    for (profile, marker) in [
        (shipped.to_str().unwrap(), "start-demo-server.sh: "),
        ("scripted", "start.sh ran"),
    ] {
        let dry = s.run(&["--profile", profile, "--dry-run", "--no-prompt"]);
        assert_eq!(dry.code(), Some(0), "{}", dry.context());
        let out = s
            .command(&[
                "--profile",
                profile,
                "--no-prompt",
                "--exec",
                "echo \"client got $PV_LAUNCH_URL\"",
            ])
            .env("PATH", &path)
            .output()
            .unwrap();
        let ran = Ran(out);
        assert_eq!(ran.code(), Some(0), "{profile}: {}", ran.context());
        assert!(
            ran.stdout().contains("client got cs://127.0.0.1:"),
            "{profile}: {}",
            ran.context()
        );
        assert!(
            ran.stderr().contains(marker),
            "{profile}: {}",
            ran.context()
        );
    }
}

/// `save` (the default, as in ParaView): the value chosen with `--set` becomes the option's
/// default for the next launch of that server, from a private file in `XDG_STATE_HOME`; a
/// dry run saves nothing; `save = false` options and passwords are never saved, and
/// `save = true` on a password is refused when the profile loads.
#[test]
fn a_saved_options_chosen_value_is_the_next_launchs_default() {
    let s = Scratch::new();
    let state = s.path().join("state");
    let profile = s.profile(
        "saving.toml",
        &format!(
            "[[server]]\nname = \"keep\"\nresource = \"cs://127.0.0.1:0\"\n[server.startup]\n\
             mechanism = \"local\"\nargv = [{demo:?}, \"--server-port\", \"${{PV_SERVER_PORT}}\"]\n\
             [[server.option]]\nname = \"NODES\"\ntype = \"int\"\nmin = 1\nmax = 9\ndefault = 1\n\
             [[server.option]]\nname = \"QUEUE\"\ntype = \"string\"\ndefault = \"debug\"\nsave = false\n\
             [[server.option]]\nname = \"PW\"\ntype = \"password\"\ndefault = \"pw\"\n",
            demo = demo()
        ),
    );
    let run = |args: &[&str]| {
        let out = s
            .command(args)
            .env("XDG_STATE_HOME", &state)
            .output()
            .unwrap();
        Ran(out)
    };
    let plan = |ran: &Ran| -> Value {
        assert_eq!(ran.code(), Some(0), "{}", ran.context());
        serde_json::from_str(ran.stdout().trim()).unwrap()
    };
    let value_of = |plan: &Value, name: &str| -> Value {
        plan["variables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {plan}"))["value"]
            .clone()
    };
    let dry = ["--profile", "saving", "--dry-run", "--json", "--no-prompt"];
    // A dry run with --set saves nothing.
    let p = plan(&run(&[&dry[..], &["--set", "NODES=3"]].concat()));
    assert_eq!(value_of(&p, "NODES"), "3");
    assert_eq!(value_of(&plan(&run(&dry)), "NODES"), "1");
    let file = state.join("pv-launch/saved-options.json");
    assert!(!file.exists());
    // A launch saves what was chosen.
    let ran = run(&[
        "--profile",
        "saving",
        "--no-prompt",
        "--set",
        "NODES=7",
        "--set",
        "QUEUE=long",
        "--exec",
        "true",
    ]);
    assert_eq!(ran.code(), Some(0), "{}", ran.context());
    let p = plan(&run(&dry));
    assert_eq!(value_of(&p, "NODES"), "7", "{p}");
    assert_eq!(value_of(&p, "QUEUE"), "debug", "{p}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("\"NODES\": \"7\"") && !text.contains("QUEUE") && !text.contains("PW"),
        "{text}"
    );
    assert!(
        text.contains(&profile.canonicalize().unwrap().display().to_string()),
        "{text}"
    );
    // A saved value the profile no longer accepts is ignored.
    std::fs::write(&file, text.replace("\"7\"", "\"70\"")).unwrap();
    assert_eq!(value_of(&plan(&run(&dry)), "NODES"), "1");
    // `save = true` on a password: refused with its position.
    let bad = s.profile(
        "badsave.toml",
        "[[server]]\nname = \"b\"\nresource = \"cs://127.0.0.1:0\"\n[server.startup]\n\
         mechanism = \"local\"\nargv = [\"true\"]\n[[server.option]]\nname = \"PW\"\n\
         type = \"password\"\nsave = true\n",
    );
    let ran = s.run(&["check", bad.to_str().unwrap()]);
    assert_eq!(ran.code(), Some(2), "{}", ran.context());
    assert!(
        ran.stderr().contains(&format!(
            "{}:10:8: `save = true` on the password option PW",
            bad.display()
        )),
        "{}",
        ran.context()
    );
}

/// A held session whose server ends by itself, once with an exit code (the demo server
/// under a wrapper that then exits 3 is killed) and once by a signal (the wrapper is
/// killed): `exited` carries the code, `null` for the signal, with exactly its documented
/// keys, and pv-launch exits 1 and stops what is left. A server that ends before its ready
/// line gives `failed` with a message that says so.
#[test]
fn json_exited_carries_the_code_or_null_and_failed_a_message() {
    let s = Scratch::new();
    let demo = marked_demo(&s);
    let marker = demo.display().to_string();
    let wrapper = s.script(
        "wrapper-exits-3",
        &format!("{marker:?} --server-port \"$1\"\nexit 3\n"),
    );
    let wrapper_marker = wrapper.display().to_string();
    let profile = local_profile(&s, "ends", &[&wrapper_marker, "${PV_SERVER_PORT}"]);
    for (victim, code) in [(&marker, Value::from(3)), (&wrapper_marker, Value::Null)] {
        let mut live = Live::held(&s, &profile);
        live.wait_event("connected");
        let pids = processes_with(victim);
        assert_eq!(pids.len(), 1, "one process runs {victim}: {pids:?}");
        assert!(
            Command::new("kill")
                .args(["-KILL", &pids[0].to_string()])
                .status()
                .unwrap()
                .success()
        );
        let (status, events) = live.finish();
        assert_eq!(status, Some(1), "{events:?}");
        events.iter().for_each(assert_fields);
        let exited: Vec<&Value> = events.iter().filter(|e| e["event"] == "exited").collect();
        assert_eq!(exited.len(), 1, "{events:?}");
        assert_eq!(exited[0]["code"], code, "{events:?}");
        wait_no_process_with(&marker);
    }

    let early = s.script("exits-early", "echo starting\nexit 3\n");
    let profile = local_profile(&s, "early", &[early.to_str().unwrap()]);
    let r = s.run(&[
        "--json",
        "--no-client",
        "--profile",
        profile.to_str().unwrap(),
    ]);
    assert_eq!(r.code(), Some(1), "{}", r.context());
    let events = r.events();
    events.iter().for_each(assert_fields);
    let failed: Vec<&Value> = events.iter().filter(|e| e["event"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{}", r.context());
    let message = failed[0]["message"].as_str().unwrap();
    assert!(
        message.contains("exits-early") && message.contains("exit code 3"),
        "the message names the server and its status: {message}"
    );
}

/// ParaView's `builtin:` server lives inside the client: a launch of one says there is
/// nothing to start or connect, with the usage status, instead of asking for a token.
#[test]
fn a_builtin_server_is_refused_with_what_to_do_instead() {
    let s = Scratch::new();
    let profile = s.profile(
        "builtin.toml",
        "[[server]]\nname = \"b\"\nresource = \"builtin:\"\n",
    );
    let ran = s.run(&["--profile", profile.to_str().unwrap(), "--no-client"]);
    assert_eq!(ran.code(), Some(2), "{}", ran.context());
    assert!(
        ran.stderr().contains("this server is `builtin:`")
            && ran
                .stderr()
                .contains("run the client (paraview, pvpython) without it")
            && !ran.stderr().contains("token"),
        "{}",
        ran.context()
    );
}
