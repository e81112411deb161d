//! No orphans after a crash: `pv-launch` killed with SIGKILL (no destructor, no signal
//! handler runs) at each stage — while ssh connects, while the server starts, while
//! connected with an `--exec` client — locally and over ssh with OpenSSH and russh
//! against the loopback sshd. Then, within a bounded wait, nothing it started is left:
//! the server's process group (here or on the "remote" host), the client's group, the
//! ssh control master (and with it its forwards) and its private directory, the Unix
//! relay's directory.
//!
//! Processes are found by a marker unique to the test (in a shell's `$0`), and their
//! groups through /proc. Whatever a failing test leaves is killed by its guard.
//! Needs root (the sshd's test user) and sshd; under `CI=true` a missing part fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use pv_e2e::sshd::{Sshd, TEST_USER, group_members};
use pv_e2e::workspace_bin;
use serde_json::Value;

/// Bound on every wait for something to happen.
const WAIT: Duration = Duration::from_secs(60);
/// Bound on the cleanup after the SIGKILL: the watchers' grace (2 s) and more.
const AFTER_KILL: Duration = Duration::from_secs(15);

fn have_sshd() -> bool {
    pv_e2e::have_parts(&["/usr/sbin/sshd"], true)
}

fn demo() -> String {
    workspace_bin("pv-demo-server").display().to_string()
}

/// A marker unique to this run and `what`.
fn marker(what: &str) -> String {
    format!(
        "pv-orphan-{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Live processes (not this test) whose command line contains `marker`.
fn with_marker(marker: &str) -> Vec<u32> {
    pv_e2e::processes_with(marker)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

/// The process group of `pid`.
fn pgid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Wait (bounded) until `cond` holds; whether it did.
fn eventually(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `pv-launch --json …` and what a failing test must not leave behind.
struct Launched {
    child: Child,
    events: Receiver<Value>,
    seen: Vec<Value>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// Markers whose processes the guard kills.
    markers: Vec<String>,
    /// Directories the guard removes, and an ssh master it kills.
    dirs: Vec<PathBuf>,
    master: Option<u32>,
    /// A Slurm job the guard cancels.
    job: Option<String>,
}

impl Launched {
    fn start(args: &[&str], markers: &[&str]) -> Launched {
        let mut child = Command::new(workspace_bin("pv-launch"))
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pv-launch");
        let (tx, events) = channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (err, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Launched {
            child,
            events,
            seen: vec![],
            stderr,
            markers: markers.iter().map(|m| m.to_string()).collect(),
            dirs: vec![],
            master: None,
            job: None,
        }
    }

    fn context(&mut self) -> String {
        self.seen.extend(self.events.try_iter());
        format!(
            "events: {:?}\nstderr:\n{}",
            self.seen,
            self.stderr.lock().unwrap()
        )
    }

    /// Wait (bounded) for an event named `name`.
    fn event(&mut self, name: &str) -> Value {
        let end = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.seen.iter().find(|e| e["event"] == name) {
                return e.clone();
            }
            if let Ok(e) = self.events.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(e);
            }
            let exited = self.child.try_wait().unwrap().is_some();
            assert!(
                Instant::now() < end && !(exited && self.events.try_iter().next().is_none()),
                "no {name} event: {}",
                self.context()
            );
        }
    }

    /// Wait (bounded) for a live process with `marker`; its process group.
    fn group_with(&mut self, marker: &str) -> u32 {
        let mut found = None;
        let ok = eventually(WAIT, || {
            found = with_marker(marker).first().and_then(|p| pgid_of(*p));
            found.is_some() || self.child.try_wait().unwrap().is_some()
        });
        match found {
            Some(g) if ok => g,
            _ => panic!("no process with {marker}: {}", self.context()),
        }
    }

    /// With OpenSSH, the running master (which the guard then kills if a test fails).
    fn master_for(&mut self, place: Place, sshd: Option<&Sshd>) -> Option<(u32, PathBuf)> {
        if place != Place::OpenSsh {
            return None;
        }
        let master = master_of(sshd.expect("an sshd"));
        let Some((pid, dir)) = &master else {
            panic!("no ssh master: {}", self.context());
        };
        self.master = Some(*pid);
        self.dirs.push(dir.clone());
        master
    }

    /// SIGKILL pv-launch and reap it.
    fn kill(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "pv-launch ended early: {}",
            self.context()
        );
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(pid) = self.master.filter(|p| pv_e2e::running(*p)) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        if let Some(job) = &self.job {
            let _ = Command::new("scancel").arg(job).status();
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        for m in &self.markers {
            for pid in with_marker(m) {
                if let Some(g) = pgid_of(pid).filter(|g| *g > 1) {
                    let _ = Command::new("kill")
                        .args(["-KILL", "--", &format!("-{g}")])
                        .status();
                }
            }
        }
    }
}

/// Wait (bounded) until pv-launch's watcher (`pv-launch-watch`) is in group `pgid`.
/// pv-launch starts it right after the process it watches: a SIGKILL in between those
/// two spawns is the one moment a local group is not covered.
fn wait_watched(pgid: u32) {
    let watched = eventually(WAIT, || {
        group_members(pgid).iter().any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("pv-launch-watch"))
        })
    });
    assert!(
        watched,
        "no watcher in group {pgid}: {:?}",
        group_members(pgid)
    );
}

/// Assert that within [`AFTER_KILL`] process group `pgid` and every process with
/// `marker` are gone.
fn assert_gone(what: &str, pgid: u32, marker: &str) {
    let gone = eventually(AFTER_KILL, || {
        group_members(pgid).is_empty() && with_marker(marker).is_empty()
    });
    assert!(
        gone,
        "{what} left after SIGKILL: group {pgid}: {:?}, with the marker: {:?}",
        group_members(pgid),
        with_marker(marker)
    );
}

/// The ssh control master of `sshd` started by pv-launch (its argv names the test's
/// known_hosts file; mux clients never do): its pid and private directory.
fn master_of(sshd: &Sshd) -> Option<(u32, PathBuf)> {
    let known = sshd.known_hosts().display().to_string();
    with_marker(&known).into_iter().find_map(|pid| {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !argv.iter().any(|a| a == "-M") {
            return None;
        }
        let ctl = argv.iter().position(|a| a == "-S").map(|i| &argv[i + 1])?;
        Some((pid, Path::new(ctl).parent()?.to_path_buf()))
    })
}

/// Where the server runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Place {
    Local,
    OpenSsh,
    Russh,
}

/// A profile whose server is `/bin/sh -c SCRIPT MARKER ARGS…` (the marker is the shell's
/// `$0`, so it shows in its command line; the shell does not `exec`, so it stays the
/// group's leader), with `extra_ssh` in the ssh table.
fn profile(
    dir: &Path,
    place: Place,
    sshd: Option<&Sshd>,
    script: &str,
    marker: &str,
    extra_ssh: &str,
) -> PathBuf {
    let mut text = format!(
        "[[server]]\nname = \"s\"\nresource = \"cs://127.0.0.1:0\"\nconnect_timeout = 30\n\
         [server.startup]\nmechanism = \"{}\"\nprocess_start_timeout = 120\n\
         argv = [\"/bin/sh\", \"-c\", {script:?}, {marker:?}, {:?}]\n",
        if place == Place::Local {
            "local"
        } else {
            "ssh"
        },
        demo(),
    );
    if let Some(sshd) = sshd.filter(|_| place != Place::Local) {
        let mut options = String::new();
        for a in sshd.client_args(&sshd.known_hosts(), "publickey") {
            options.push_str(&format!("{a:?}, "));
        }
        let backend = if place == Place::Russh {
            "russh"
        } else {
            "openssh"
        };
        text.push_str(&format!(
            "[server.startup.ssh]\nbackend = \"{backend}\"\nhost = \"127.0.0.1\"\nuser = \"{TEST_USER}\"\nport = {}\n\
             identity_file = {:?}\noptions = [{options}]\nport_forwarding = true\n{extra_ssh}",
            sshd.port(),
            sshd.plain_key().display().to_string(),
        ));
    }
    let path = dir.join("p.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// After the SIGKILL: the master (if any) is gone and so is its private directory.
fn assert_no_master(master: Option<(u32, PathBuf)>, sshd: Option<&Sshd>) {
    if let Some((pid, dir)) = master {
        assert!(
            pv_e2e::wait_not_running(pid, AFTER_KILL),
            "the ssh master {pid} is left"
        );
        assert!(
            eventually(AFTER_KILL, || !dir.exists()),
            "the ssh private directory {} is left",
            dir.display()
        );
    }
    if let Some(sshd) = sshd {
        assert!(
            eventually(AFTER_KILL, || master_of(sshd).is_none()),
            "an ssh master is left: {:?}",
            master_of(sshd)
        );
    }
}

/// SIGKILL while the server starts (it never prints its ready line): its group goes.
fn killed_while_the_server_starts(place: Place) {
    let sshd = (place != Place::Local).then(Sshd::start);
    let dir = tempfile::tempdir().unwrap();
    let server = marker("starting");
    // A server that never gets ready, with a helper in its group.
    let p = profile(
        dir.path(),
        place,
        sshd.as_ref(),
        "sleep 300 & sleep 300; wait",
        &server,
        "",
    );
    let mut launched = Launched::start(&["--profile", p.to_str().unwrap()], &[&server]);
    let group = launched.group_with(&server);
    if place == Place::Local {
        wait_watched(group);
    }
    let master = launched.master_for(place, sshd.as_ref());
    launched.kill();
    assert_gone(&format!("{place:?}: the starting server"), group, &server);
    assert_no_master(master, sshd.as_ref());
}

/// SIGKILL while connected, an `--exec` client running: the server's group, the
/// client's group and the relay directory go.
fn killed_while_connected(place: Place) {
    let sshd = (place != Place::Local).then(Sshd::start);
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = (marker("server"), marker("client"));
    let p = profile(
        dir.path(),
        place,
        sshd.as_ref(),
        "\"$1\" --server-port 0",
        &server,
        "",
    );
    let exec = format!("sleep 300; : {client}");
    let mut launched = Launched::start(
        &["--profile", p.to_str().unwrap(), "--exec", &exec],
        &[&server, &client],
    );
    let relay = launched.event("relay")["socket"]
        .as_str()
        .unwrap()
        .to_string();
    let relay_dir = Path::new(&relay).parent().unwrap().to_path_buf();
    launched.dirs.push(relay_dir.clone());
    let client_pid = launched.event("client")["pid"].as_u64().unwrap() as u32;
    let server_group = launched.group_with(&server);
    wait_watched(client_pid);
    if place == Place::Local {
        wait_watched(server_group);
    }
    assert!(relay_dir.exists() && !group_members(client_pid).is_empty());
    let master = launched.master_for(place, sshd.as_ref());
    launched.kill();
    assert_gone(&format!("{place:?}: the client"), client_pid, &client);
    assert_gone(&format!("{place:?}: the server"), server_group, &server);
    assert!(
        eventually(AFTER_KILL, || !relay_dir.exists()),
        "{place:?}: the relay directory {} is left",
        relay_dir.display()
    );
    assert_no_master(master, sshd.as_ref());
}

#[test]
fn sigkill_while_a_local_server_starts_leaves_nothing() {
    killed_while_the_server_starts(Place::Local);
}

#[test]
fn sigkill_while_connected_to_a_local_server_with_a_client_leaves_nothing() {
    killed_while_connected(Place::Local);
}

#[test]
fn sigkill_while_a_server_starts_over_openssh_leaves_nothing() {
    if have_sshd() {
        killed_while_the_server_starts(Place::OpenSsh);
    }
}

#[test]
fn sigkill_while_connected_over_openssh_with_a_client_leaves_nothing() {
    if have_sshd() {
        killed_while_connected(Place::OpenSsh);
    }
}

#[cfg(feature = "russh")]
#[test]
fn sigkill_while_a_server_starts_over_russh_leaves_nothing() {
    if have_sshd() {
        killed_while_the_server_starts(Place::Russh);
    }
}

#[cfg(feature = "russh")]
#[test]
fn sigkill_while_connected_over_russh_with_a_client_leaves_nothing() {
    if have_sshd() {
        killed_while_connected(Place::Russh);
    }
}

/// SIGKILL while ssh is still connecting (a `ProxyCommand` that never answers holds it
/// before authentication): the ssh process and its proxy go, and no master appears.
#[test]
fn sigkill_while_openssh_connects_leaves_nothing() {
    if !have_sshd() {
        return;
    }
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let proxy = marker("proxy");
    let server = marker("never");
    let p = profile(
        dir.path(),
        Place::OpenSsh,
        Some(&sshd),
        "\"$1\" --server-port 0",
        &server,
        "",
    );
    // The proxy is added to the options: `/bin/sh -c "sleep 300" MARKER`.
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "options = [",
        &format!("options = [\"-o\", \"ProxyCommand=/bin/sh -c 'sleep 300' {proxy}\", "),
    );
    std::fs::write(&p, text).unwrap();
    let mut launched = Launched::start(&["--profile", p.to_str().unwrap()], &[&proxy, &server]);
    let group = launched.group_with(&proxy);
    launched.kill();
    assert_gone("the connecting ssh and its proxy", group, &proxy);
    assert!(with_marker(&server).is_empty());
    assert_no_master(None, Some(&sshd));
}

/// SIGKILL while connected to a Slurm batch job submitted over OpenSSH (its `-L` tunnel to
/// the job's node on the master), an `--exec` client running: the client, the master with
/// its tunnel, its directory and the relay directory go, and the job ends with its
/// server's only connection. (A job whose server outlives its clients stays until its
/// time limit: `pv-launch jobs --cancel ID` is the recovery, tests/batch.rs.) Needs the `ci/slurm` cluster and its `SLURM_CONF` in the environment.
#[test]
fn sigkill_while_connected_to_a_batch_job_over_openssh_leaves_nothing() {
    let conf = std::env::var("SLURM_CONF")
        .ok()
        .filter(|c| Path::new(c).exists());
    let Some(conf) = conf else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true but no SLURM_CONF: run `eval \"$(ci/slurm)\"` first"
        );
        eprintln!("SKIPPED: no Slurm test cluster (SLURM_CONF)");
        return;
    };
    if !have_sshd() {
        return;
    }
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let client = marker("batch-client");
    let mut options = String::new();
    for a in sshd.client_args(&sshd.known_hosts(), "publickey") {
        options.push_str(&format!("{a:?}, "));
    }
    let p = dir.path().join("batch.toml");
    std::fs::write(
        &p,
        format!(
            "[[server]]\nname = \"batch\"\nresource = \"cs://localhost:0\"\nconnect_timeout = 20\n\
             [server.startup]\nmechanism = \"batch\"\nprocess_start_timeout = 30\n\
             argv = [{:?}, \"--server-port\", \"${{PV_SERVER_PORT}}\", \"--bind-address\", \"127.0.0.1\"]\n\
             [server.startup.batch]\nntasks = 1\ntime = \"5\"\n\
             [server.startup.ssh]\nhost = \"127.0.0.1\"\nuser = \"{TEST_USER}\"\nport = {}\n\
             identity_file = {:?}\noptions = [{options}]\nenv = {{ SLURM_CONF = {conf:?} }}\n",
            demo(),
            sshd.port(),
            sshd.plain_key().display().to_string(),
        ),
    )
    .unwrap();
    let exec = format!("sleep 300; : {client}");
    let mut launched = Launched::start(
        &[
            "--profile",
            p.to_str().unwrap(),
            "--no-prompt",
            "--exec",
            &exec,
        ],
        &[&client],
    );
    let job = launched.event("job")["id"].as_str().unwrap().to_string();
    launched.job = Some(job.clone());
    let relay = launched.event("relay")["socket"]
        .as_str()
        .unwrap()
        .to_string();
    let relay_dir = Path::new(&relay).parent().unwrap().to_path_buf();
    launched.dirs.push(relay_dir.clone());
    let client_pid = launched.event("client")["pid"].as_u64().unwrap() as u32;
    wait_watched(client_pid);
    let master = launched.master_for(Place::OpenSsh, Some(&sshd));
    launched.kill();
    assert_gone("batch: the client", client_pid, &client);
    assert!(
        eventually(AFTER_KILL, || !relay_dir.exists()),
        "batch: the relay directory {} is left",
        relay_dir.display()
    );
    assert_no_master(master, Some(&sshd));
    // The job's server served only pv-launch's connection, now closed: the job ends by
    // itself (a server that outlives its client keeps the job until `pv-launch jobs
    // --cancel`, tests/batch.rs).
    let state = || {
        let out = Command::new("squeue")
            .args(["-h", "--states=all", "-j", &job, "-o", "%T"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert!(
        eventually(WAIT, || matches!(
            state().as_str(),
            "" | "COMPLETED" | "CANCELLED"
        )),
        "job {job} is {}",
        state()
    );
}
