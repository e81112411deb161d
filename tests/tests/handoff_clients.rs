//! The `pv-launch` CLI handing its server to a real client program, end to end:
//!
//! - Debian's `pvpython` as the client of a real `pvserver`, forward and reverse: started
//!   locally from a `.pvsc` `<Command>`; over ssh through a loopback sshd with
//!   `<PortForwarding>` (a `.pvsc` `SSHCommand` with OpenSSH, a TOML profile with the
//!   russh backend); and from a TOML profile with `handshake = "paraview"` and `client`.
//!   pv-launch never connects: pvpython runs ParaView's handshake itself and prints the
//!   sphere's point count it got from the server.
//! - An unmodified TCP client (`socat`) through the loopback endpoint to the demo server
//!   with TLS and the native handshake, bytes both ways, while a client of another uid is
//!   refused (and a note says so).
//! - `pv-front` (TLS and the token in front of a plain server): pvpython reaches an
//!   unmodified pvserver through `examples/profiles/pvserver-tls.toml`; clients without the
//!   token never reach its backend; bad backends are clear errors.
//! - Failures: a client exiting non-zero, a client that never connects or never listens,
//!   a server dying under its client; `--json` errors before the launch and a reader that
//!   goes away; SIGTERM and SIGINT to pv-launch.
//!
//! After each: pv-launch's status is the client's (or says why not), and no server, ssh
//! process, tunnel or relay directory is left (bounded waits). Needs root (sshd's test
//! user, a uid-65534 client), `pvserver` and `pvpython` (python3-paraview), `socat`,
//! `setpriv`, `sshd`; without them a test says so and skips, except under `CI=true`,
//! where a missing part fails.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use pv_e2e::sshd::{Sshd, TEST_USER, group_members, wait_group_gone};
use pv_e2e::{processes_with, workspace_bin};
use serde_json::Value;

/// Bound on every wait for something that should happen.
const WAIT: Duration = Duration::from_secs(60);
/// How long pv-launch may take to clean up once its session ended.
const CLEANUP: Duration = Duration::from_secs(10);

const PVSERVER: &str = "/usr/bin/pvserver";
const PVPYTHON: &str = "/usr/bin/pvpython";

/// What the sphere the client builds has, once the server computed it.
const SPHERE_POINTS: &str = "points 226";

/// Whether every one of `parts` is installed (and we are root); under `CI=true` a missing
/// part is a failure, never a skip.
fn have(parts: &[&str]) -> bool {
    pv_e2e::have_parts(parts, true)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn lo(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A directory readable by the ssh test user too (its pvpython-free remote side reads
/// nothing from it, but the client script lives here).
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pv-handoff-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    dir
}

/// The pvpython client: ParaView's handshake end to end. It takes the URL from its
/// `--url=` argument, else `PV_LAUNCH_URL`; dials (`cs://`) or listens (`csrc://`), builds
/// a sphere on the server and prints its point count. Exits with `CLIENT_EXIT` (0 by
/// default); with `CLIENT_HOLD` set, sleeps 600 s first.
fn client_py(dir: &Path) -> PathBuf {
    let path = dir.join("client.py");
    std::fs::write(
        &path,
        r#"import os, sys, time
from paraview.simple import *
url = os.environ["PV_LAUNCH_URL"]
for a in sys.argv[1:]:
    if a.startswith("--url="):
        url = a[len("--url="):]
scheme, rest = url.split("://", 1)
host, port = rest.rsplit(":", 1)
assert (host, port) == (os.environ["PV_LAUNCH_HOST"], os.environ["PV_LAUNCH_PORT"]), (url, host, port)
if scheme == "csrc":
    ReverseConnect(port)
else:
    Connect(host, int(port))
assert servermanager.ActiveConnection.IsRemote(), "not connected"
s = Sphere(ThetaResolution=16, PhiResolution=16)
s.UpdatePipeline()
print("points", s.GetDataInformation().GetNumberOfPoints(), flush=True)
if os.environ.get("CLIENT_HOLD"):
    time.sleep(600)
sys.exit(int(os.environ.get("CLIENT_EXIT", "0")))
"#,
    )
    .unwrap();
    path
}

/// A running `pv-launch --json …`: its events (stdout) and stderr lines as they come.
struct Launched {
    child: Child,
    events: Receiver<Value>,
    stderr: Receiver<String>,
    seen_events: Vec<Value>,
    seen_stderr: Vec<String>,
    begun: Instant,
}

/// How a `pv-launch` run ended.
struct Ended {
    code: Option<i32>,
    signal: Option<i32>,
    events: Vec<Value>,
    stderr: String,
    took: Duration,
}

impl Ended {
    fn event(&self, name: &str) -> Option<&Value> {
        self.events.iter().find(|e| e["event"] == name)
    }

    /// The `failed` event's message (the run must have one).
    fn failed_message(&self) -> String {
        let failed = self.event("failed").expect("a failed event");
        failed["message"].as_str().unwrap().to_string()
    }

    fn context(&self) -> String {
        format!(
            "code {:?} signal {:?} after {:?}\nevents:\n{}\nstderr:\n{}",
            self.code,
            self.signal,
            self.took,
            self.events
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            self.stderr
        )
    }

    /// The pid of the client program (its process group's id too).
    fn client_pid(&self) -> u32 {
        self.event("client").expect("a client event")["pid"]
            .as_u64()
            .unwrap() as u32
    }
}

/// `pv-launch --json ARGS` with `env`, stdin from /dev/null.
fn start(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Launched {
    let mut child = Command::new(workspace_bin("pv-launch"))
        .arg("--json")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pv-launch");
    let (etx, events) = channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let v = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line on stdout ({e}): {line}"));
            if etx.send(v).is_err() {
                break;
            }
        }
    });
    let (stx, stderr) = channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if stx.send(line).is_err() {
                break;
            }
        }
    });
    Launched {
        child,
        events,
        stderr,
        seen_events: vec![],
        seen_stderr: vec![],
        begun: Instant::now(),
    }
}

impl Launched {
    fn drain(&mut self) {
        self.seen_events.extend(self.events.try_iter());
        self.seen_stderr.extend(self.stderr.try_iter());
    }

    /// Wait (bounded) until an event satisfies `pred`; that event.
    fn wait_event(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.seen_events.iter().find(|e| pred(e)) {
                return e.clone();
            }
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {what} within {WAIT:?}: {:?}",
                self.seen_events
            );
            match self
                .events
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(e) => self.seen_events.push(e),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => panic!("pv-launch ended before {what}: {:?}", self.seen_events),
            }
            self.seen_stderr.extend(self.stderr.try_iter());
        }
    }

    /// Wait (bounded) until a stderr line contains `text`.
    fn wait_stderr(&mut self, text: &str) {
        let end = Instant::now() + WAIT;
        while !self.seen_stderr.iter().any(|l| l.contains(text)) {
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {text:?} on stderr: {:?}",
                self.seen_stderr
            );
            if let Ok(l) = self
                .stderr
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                self.seen_stderr.push(l);
            }
            self.seen_events.extend(self.events.try_iter());
        }
    }

    fn signal(&self, name: &str) {
        assert!(
            Command::new("kill")
                .args([&format!("-{name}"), &self.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Wait (bounded) for pv-launch to exit.
    fn finish(mut self, deadline: Duration) -> Ended {
        use std::os::unix::process::ExitStatusExt;
        let end = Instant::now() + deadline;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.drain();
                panic!(
                    "pv-launch did not end within {deadline:?}: {:?}\n{}",
                    self.seen_events,
                    self.seen_stderr.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = self.begun.elapsed();
        // The readers end with the pipes (a client could hold stderr: bounded).
        let end = Instant::now() + CLEANUP;
        while let Ok(e) = self
            .events
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            self.seen_events.push(e);
        }
        while let Ok(l) = self
            .stderr
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            self.seen_stderr.push(l);
        }
        Ended {
            code: status.code(),
            signal: status.signal(),
            events: self.seen_events,
            stderr: self.seen_stderr.join("\n"),
            took,
        }
    }
}

/// Run `pv-launch --json ARGS` to its end.
fn run(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Ended {
    start(args, env, dir).finish(WAIT * 2)
}

/// Wait (bounded) until no process's command line contains `marker`.
fn assert_no_process_with(marker: &str) {
    let end = Instant::now() + CLEANUP;
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < end, "still running ({marker}): {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait (bounded) until nothing listens on 127.0.0.1:`port`.
fn assert_not_listening(port: u16) {
    let end = Instant::now() + CLEANUP;
    while pv_transport::socket_table::is_listening(lo(port)).unwrap() {
        assert!(Instant::now() < end, "127.0.0.1:{port} still listens");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_group_gone(pgid: u32) {
    assert_eq!(wait_group_gone(pgid, CLEANUP), Vec::<u32>::new());
}

/// pvpython ran ParaView's handshake itself and got data computed by the server;
/// pv-launch's status is the client's; pvserver, the client's group, and the ports are
/// gone.
fn assert_client_served(end: &Ended, expected_code: i32, marker: &str, ports: &[u16]) {
    assert_eq!(end.code, Some(expected_code), "{}", end.context());
    assert!(end.stderr.contains(SPHERE_POINTS), "{}", end.context());
    assert_eq!(
        end.event("client-exited").map(|e| e["code"].clone()),
        Some(Value::from(expected_code)),
        "{}",
        end.context()
    );
    assert!(
        end.event("connected").is_none(),
        "pv-launch connected itself"
    );
    assert!(end.event("cleaned-up").is_some(), "{}", end.context());
    assert_group_gone(end.client_pid());
    assert_no_process_with(marker);
    for p in ports {
        assert_not_listening(*p);
    }
}

/// A `.pvsc` with one server: `resource`, started by `command` (a `<Command>` or an
/// `<SSHCommand>` element, without its arguments), with pvserver's `arguments`.
fn pvsc(dir: &Path, resource: &str, command: &str, arguments: &[String]) -> PathBuf {
    let (open, close) = command.split_once("|").unwrap();
    let args: String = arguments
        .iter()
        .map(|a| format!("          <Argument value=\"{a}\"/>\n"))
        .collect();
    let path = dir.join("servers.pvsc");
    std::fs::write(
        &path,
        format!(
            "<Servers>\n  <Server name=\"pv\" resource=\"{resource}\" timeout=\"30\">\n    <CommandStartup>\n      \
             {open}\n        <Arguments>\n{args}        </Arguments>\n      {close}\n    </CommandStartup>\n  </Server>\n</Servers>\n"
        ),
    )
    .unwrap();
    path
}

/// pvserver's arguments for `port`, dialling back to 127.0.0.1 when `reverse`.
fn pvserver_args(port: u16, reverse: bool) -> Vec<String> {
    let mut a = vec![];
    if reverse {
        a.push("--reverse-connection".to_string());
        a.push("--client-host=127.0.0.1".to_string());
    }
    a.push("--server-port=$PV_SERVER_PORT$".to_string());
    // (The port is the resource's: pvserver's command line then names it, our marker.)
    let _ = port;
    a
}

fn pvpython_exec(dir: &Path) -> String {
    format!("{PVPYTHON} {}", client_py(dir).display())
}

#[test]
fn pvpython_drives_a_local_pvserver_started_by_a_pvsc_command_forward_and_reverse() {
    if !have(&[PVSERVER, PVPYTHON]) {
        return;
    }
    for (reverse, code) in [(false, 0), (true, 3)] {
        let dir = scratch();
        let port = free_port();
        let scheme = if reverse { "csrc" } else { "cs" };
        let file = pvsc(
            dir.path(),
            &format!("{scheme}://127.0.0.1:{port}"),
            &format!("<Command exec=\"{PVSERVER}\" process_wait=\"0\" delay=\"0\">|</Command>"),
            &pvserver_args(port, reverse),
        );
        let code_s = code.to_string();
        let end = run(
            &[
                "--profile",
                file.to_str().unwrap(),
                "--exec",
                &pvpython_exec(dir.path()),
            ],
            &[("CLIENT_EXIT", &code_s)],
            dir.path(),
        );
        let url = format!("{scheme}://127.0.0.1:{port}");
        assert_eq!(
            end.event("handoff").map(|e| e["url"].clone()),
            Some(Value::from(url.clone())),
            "{}",
            end.context()
        );
        assert_client_served(&end, code, &format!("--server-port={port}"), &[port]);
        eprintln!("{url}: pv-launch took {:?}", end.took);
    }
}

/// The OpenSSH test: a `.pvsc` `SSHCommand` with `PortForwarding`, as ParaView reads it
/// (ssh options from `PARAVIEW_SSH_OPTIONS`).
#[test]
fn pvpython_drives_a_pvserver_over_openssh_from_a_pvsc_through_tunnels_forward_and_reverse() {
    if !have(&[PVSERVER, PVPYTHON, "/usr/sbin/sshd", "/usr/bin/ssh"]) {
        return;
    }
    let sshd = Sshd::start();
    let mut ssh_options = sshd.client_args(&sshd.known_hosts(), "publickey");
    ssh_options.extend(["-i".to_string(), sshd.plain_key().display().to_string()]);
    let ssh_options = ssh_options.join(" ");
    for (reverse, code) in [(false, 4), (true, 0)] {
        let dir = scratch();
        let (remote, local) = (free_port(), free_port());
        let scheme = if reverse { "csrc" } else { "cs" };
        let file = pvsc(
            dir.path(),
            &format!("{scheme}://127.0.0.1:{remote}"),
            &format!(
                "<SSHCommand exec=\"{PVSERVER}\" process_wait=\"0\" delay=\"0\">\n        \
                 <SSHConfig user=\"{TEST_USER}\" port=\"{}\"><PortForwarding local=\"{local}\"/></SSHConfig>|</SSHCommand>",
                sshd.port()
            ),
            &pvserver_args(remote, reverse),
        );
        let code_s = code.to_string();
        let end = run(
            &[
                "--profile",
                file.to_str().unwrap(),
                "--exec",
                &pvpython_exec(dir.path()),
            ],
            &[
                ("CLIENT_EXIT", &code_s),
                ("PARAVIEW_SSH_OPTIONS", &ssh_options),
            ],
            dir.path(),
        );
        // The client gets the local end: the tunnel (forward), its own port (reverse).
        assert_eq!(
            end.event("handoff").map(|e| e["url"].clone()),
            Some(Value::from(format!("{scheme}://127.0.0.1:{local}"))),
            "{}",
            end.context()
        );
        assert!(
            end.events.iter().any(|e| e["stage"] == "ssh-connect"),
            "{}",
            end.context()
        );
        assert_client_served(
            &end,
            code,
            &format!("--server-port={remote}"),
            &[local, remote],
        );
        // No ssh client (master, tunnel) is left: they all name the fixture's known_hosts.
        assert_no_process_with(&sshd.known_hosts().display().to_string());
        eprintln!("openssh {scheme}: pv-launch took {:?}", end.took);
    }
}

/// The russh test: the in-process ssh client runs a TOML profile's pvserver and its
/// tunnels; `handshake = "paraview"`, so pv-launch hands over without connecting.
#[cfg(feature = "russh")]
#[test]
fn pvpython_drives_a_pvserver_over_russh_from_a_toml_profile_forward_and_reverse() {
    if !have(&[PVSERVER, PVPYTHON, "/usr/sbin/sshd"]) {
        return;
    }
    let sshd = Sshd::start();
    let mut options = String::new();
    for a in sshd.client_args(&sshd.known_hosts(), "publickey") {
        options.push_str(&format!("{a:?}, "));
    }
    for (reverse, code) in [(false, 0), (true, 6)] {
        let dir = scratch();
        let (remote, local) = (free_port(), free_port());
        let (scheme, rc) = if reverse {
            (
                "csrc",
                "\"--reverse-connection\", \"--client-host=127.0.0.1\", ",
            )
        } else {
            ("cs", "")
        };
        let profile = dir.path().join("russh.toml");
        std::fs::write(
            &profile,
            format!(
                "[[server]]\nname = \"pv\"\nresource = \"{scheme}://127.0.0.1:{remote}\"\n\
                 handshake = \"paraview\"\nconnect_timeout = 30\n\
                 [server.startup]\nmechanism = \"ssh\"\n\
                 argv = [\"{PVSERVER}\", {rc}\"--server-port=${{PV_SERVER_PORT}}\"]\n\
                 [server.startup.ssh]\nbackend = \"russh\"\nhost = \"127.0.0.1\"\nuser = \"{TEST_USER}\"\nport = {}\n\
                 identity_file = {:?}\noptions = [{options}]\nport_forwarding = {{ local_port = {local} }}\n",
                sshd.port(),
                sshd.plain_key().display().to_string(),
            ),
        )
        .unwrap();
        let code_s = code.to_string();
        let end = run(
            &[
                "--profile",
                profile.to_str().unwrap(),
                "--exec",
                &pvpython_exec(dir.path()),
            ],
            &[("CLIENT_EXIT", &code_s)],
            dir.path(),
        );
        assert_eq!(
            end.event("handoff").map(|e| e["url"].clone()),
            Some(Value::from(format!("{scheme}://127.0.0.1:{local}"))),
            "{}",
            end.context()
        );
        assert_client_served(
            &end,
            code,
            &format!("--server-port={remote}"),
            &[local, remote],
        );
        // russh runs in pv-launch: no ssh process of ours at all.
        assert_no_process_with(&sshd.known_hosts().display().to_string());
        eprintln!("russh {scheme}: pv-launch took {:?}", end.took);
    }
}

/// A TOML profile naming ParaView's handshake and its own `client`, whose argument
/// carries `${PV_LAUNCH_URL}`: no `--exec` needed.
#[test]
fn a_toml_profile_with_the_paraview_handshake_runs_its_own_pvpython_client_forward_and_reverse() {
    if !have(&[PVSERVER, PVPYTHON]) {
        return;
    }
    for reverse in [false, true] {
        let dir = scratch();
        let port = free_port();
        let (scheme, rc) = if reverse {
            (
                "csrc",
                "\"--reverse-connection\", \"--client-host=127.0.0.1\", ",
            )
        } else {
            ("cs", "")
        };
        let profile = dir.path().join("pvserver.toml");
        std::fs::write(
            &profile,
            format!(
                "client = [\"{PVPYTHON}\", {:?}, \"--url=${{PV_LAUNCH_URL}}\"]\n\
                 [[server]]\nname = \"pv\"\nresource = \"{scheme}://127.0.0.1:{port}\"\n\
                 handshake = \"paraview\"\nconnect_timeout = 30\n\
                 [server.startup]\nmechanism = \"local\"\n\
                 argv = [\"{PVSERVER}\", {rc}\"--server-port=${{PV_SERVER_PORT}}\"]\n",
                client_py(dir.path()).display().to_string(),
            ),
        )
        .unwrap();
        let end = run(&["--profile", profile.to_str().unwrap()], &[], dir.path());
        let client = end.event("client").expect("a client event")["command"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            client.contains(&format!("--url={scheme}://127.0.0.1:{port}")),
            "{client}"
        );
        assert_client_served(&end, 0, &format!("--server-port={port}"), &[port]);
    }
}

/// A TOML profile in `dir` that starts `pv-demo-server` locally with `flag`, reached at
/// `scheme://127.0.0.1` (port from the ready line).
fn demo_server_profile(dir: &Path, scheme: &str, flag: &str) -> PathBuf {
    let profile = dir.join("demo.toml");
    std::fs::write(
        &profile,
        format!(
            "[[server]]\nname = \"demo\"\nresource = \"{scheme}://127.0.0.1:0\"\nconnect_timeout = 20\n\
             [server.startup]\nmechanism = \"local\"\n\
             argv = [{:?}, \"--server-port\", \"${{PV_SERVER_PORT}}\", {flag:?}]\n",
            workspace_bin("pv-demo-server").display().to_string()
        ),
    )
    .unwrap();
    profile
}

/// The demo server with TLS and the native handshake: pv-launch connects, and `socat`
/// (an unmodified TCP client) gets the plaintext stream on the loopback endpoint, bytes
/// both ways. Before it, a client of uid 65534 dials the same endpoint: refused, a note
/// says so, and our client is served after it.
#[test]
fn socat_reaches_a_tls_native_server_through_the_loopback_endpoint_and_another_uid_is_refused() {
    if !have(&["/usr/bin/socat", "/usr/bin/setpriv"]) {
        return;
    }
    let dir = scratch();
    let profile = demo_server_profile(dir.path(), "cs+tls", "--tls");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // uid 65534 first (it sends a line and keeps what comes back), then ours: a line
    // goes in, the echo comes back through the relay, TLS and the server.
    let client = format!(
        "echo \"$PV_LAUNCH_SOCKET\" > {out:?}/socket; \
         echo nobody | setpriv --reuid=65534 --regid=65534 --clear-groups \
           socat -t 2 - TCP:$PV_LAUNCH_HOST:$PV_LAUNCH_PORT > {out:?}/nobody 2>&1; \
         echo \"nobody status $?\" >&2; \
         echo 'both ways through TLS' | socat -t 5 - TCP:$PV_LAUNCH_HOST:$PV_LAUNCH_PORT > {out:?}/ours || exit 20; \
         grep -qx 'both ways through TLS' {out:?}/ours || exit 21; exit 0",
    );
    let end = run(
        &["--profile", profile.to_str().unwrap(), "--exec", &client],
        &[],
        dir.path(),
    );
    assert_eq!(end.code, Some(0), "{}", end.context());
    let nobody = std::fs::read_to_string(out.join("nobody")).unwrap();
    assert!(
        !nobody.contains("nobody\n") && !nobody.starts_with("nobody"),
        "{nobody}"
    );
    let notes: Vec<&Value> = end.events.iter().filter(|e| e["event"] == "note").collect();
    assert!(
        notes.iter().any(|n| {
            let m = n["message"].as_str().unwrap();
            m.starts_with("refused a connection to 127.0.0.1:")
                && m.contains("belongs to uid 65534")
                && m.matches("refused").count() == 1
        }),
        "{}",
        end.context()
    );
    let url = end.event("handoff").unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let port: u16 = url.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(url.starts_with("cs://127.0.0.1:"), "{url}");
    assert_group_gone(end.client_pid());
    assert_not_listening(port);
    let socket = std::fs::read_to_string(out.join("socket")).unwrap();
    let socket = PathBuf::from(socket.trim());
    assert!(
        !socket.parent().unwrap().exists(),
        "the relay directory {} is left",
        socket.display()
    );
    assert_no_process_with(&format!(
        "{} --server-port",
        workspace_bin("pv-demo-server").display()
    ));
}

/// The demo server on the native handshake without TLS: pv-launch relays its plain
/// connection to the loopback endpoint inside the kernel (`splice`); 4 MiB sent by `socat`
/// come back unchanged, and the client's half-close reaches the server, which ends the echo.
#[test]
fn socat_gets_megabytes_back_from_a_plain_native_server_through_the_loopback_endpoint() {
    if !have(&["/usr/bin/socat"]) {
        return;
    }
    // `--multi-clients`: the server outlives its client, so the session ends with the
    // client, once everything came back. Single mode: the server exits as soon as its
    // client is done, racing the relay that still carries its last bytes; the session's
    // end gives the client a grace to finish, so nothing is lost either.
    for flag in ["--multi-clients", "--bind-address=127.0.0.1"] {
        let dir = scratch();
        let profile = demo_server_profile(dir.path(), "cs", flag);
        let sent: Vec<u8> = (0..4 * 1024 * 1024 + 5)
            .map(|i: usize| (i % 251) as u8)
            .collect();
        let (input, output) = (dir.path().join("in"), dir.path().join("out"));
        std::fs::write(&input, &sent).unwrap();
        // Half-close after the input (socat shuts its writing down at end of file), then
        // wait for the server's end of file, at most 20 s.
        let client = format!(
            "socat -t 20 - TCP:$PV_LAUNCH_HOST:$PV_LAUNCH_PORT < {input:?} > {output:?} || exit 20"
        );
        let end = run(
            &["--profile", profile.to_str().unwrap(), "--exec", &client],
            &[],
            dir.path(),
        );
        assert_eq!(end.code, Some(0), "{flag}: {}", end.context());
        let back = std::fs::read(&output).unwrap();
        assert!(
            back == sent,
            "{flag}: {} bytes came back for {} sent\n{}",
            back.len(),
            sent.len(),
            end.context()
        );
        assert_group_gone(end.client_pid());
        assert_no_process_with(&format!(
            "{} --server-port",
            workspace_bin("pv-demo-server").display()
        ));
    }
}

#[test]
fn a_client_exiting_non_zero_is_pv_launchs_status_and_the_server_is_stopped() {
    if !have(&[PVSERVER]) {
        return;
    }
    let dir = scratch();
    let port = free_port();
    let file = pvsc(
        dir.path(),
        &format!("cs://127.0.0.1:{port}"),
        &format!("<Command exec=\"{PVSERVER}\" process_wait=\"0\" delay=\"0\">|</Command>"),
        &pvserver_args(port, false),
    );
    let end = run(
        &["--profile", file.to_str().unwrap(), "--exec", "exit 9"],
        &[],
        dir.path(),
    );
    assert_eq!(end.code, Some(9), "{}", end.context());
    assert_no_process_with(&format!("--server-port={port}"));
    assert_not_listening(port);
}

/// A relayed (native) server whose client never connects: the profile's connect timeout
/// bounds the wait, the error says so, and the client is stopped.
#[test]
fn a_client_that_never_connects_to_a_relayed_server_fails_within_the_connect_timeout() {
    let dir = scratch();
    let profile = dir.path().join("native.toml");
    std::fs::write(
        &profile,
        format!(
            "[[server]]\nname = \"n\"\nresource = \"cs://127.0.0.1:0\"\nconnect_timeout = 2\n\
             [server.startup]\nmechanism = \"local\"\n\
             argv = [{:?}, \"--server-port\", \"${{PV_SERVER_PORT}}\"]\n",
            workspace_bin("pv-demo-server").display().to_string()
        ),
    )
    .unwrap();
    let end = run(
        &[
            "--profile",
            profile.to_str().unwrap(),
            "--exec",
            "exec sleep 600",
        ],
        &[],
        dir.path(),
    );
    assert_eq!(end.code, Some(1), "{}", end.context());
    let failed = end.failed_message();
    assert!(
        failed.contains("no client connected"),
        "{failed}\n{}",
        end.context()
    );
    // The connect timeout ended it, not the client (which would have slept 600 s): a
    // bound with room for a loaded machine, not a speed figure.
    assert!(end.took < Duration::from_secs(120), "{:?}", end.took);
    assert_group_gone(end.client_pid());
}

/// Reverse: a client that never listens. The server is never started; the error says
/// what was waited for.
#[test]
fn a_client_that_never_listens_for_a_reverse_server_is_a_clear_error() {
    if !have(&[PVSERVER]) {
        return;
    }
    let dir = scratch();
    let port = free_port();
    let file = dir.path().join("rc.pvsc");
    std::fs::write(
        &file,
        format!(
            "<Servers>\n  <Server name=\"rc\" resource=\"csrc://127.0.0.1:{port}\" timeout=\"2\">\n    \
             <CommandStartup>\n      <Command exec=\"{PVSERVER}\" process_wait=\"0\" delay=\"0\">\n        \
             <Arguments><Argument value=\"--reverse-connection\"/><Argument value=\"--client-host=127.0.0.1\"/>\
             <Argument value=\"--server-port=$PV_SERVER_PORT$\"/></Arguments>\n      </Command>\n    \
             </CommandStartup>\n  </Server>\n</Servers>\n"
        ),
    )
    .unwrap();
    let end = run(
        &[
            "--profile",
            file.to_str().unwrap(),
            "--exec",
            "exec sleep 600",
        ],
        &[],
        dir.path(),
    );
    assert_eq!(end.code, Some(1), "{}", end.context());
    let failed = end.failed_message();
    assert!(
        failed.contains("the client did not listen") && failed.contains(&port.to_string()),
        "{failed}"
    );
    assert!(
        !end.events.iter().any(|e| e["stage"] == "start"),
        "the server was started: {}",
        end.context()
    );
    // Bounded by the 2 s timeout (with room for a loaded machine), not held forever.
    assert!(end.took < Duration::from_secs(120), "{:?}", end.took);
    assert_group_gone(end.client_pid());
    assert_no_process_with(&format!("--server-port={port}"));
}

/// The server dies while pvpython is connected to it: the session ends, and the client
/// (holding on in a sleep) is stopped with its whole group.
#[test]
fn a_server_dying_under_its_connected_client_ends_the_session_and_stops_the_client() {
    if !have(&[PVSERVER, PVPYTHON]) {
        return;
    }
    let dir = scratch();
    let port = free_port();
    let file = pvsc(
        dir.path(),
        &format!("cs://127.0.0.1:{port}"),
        &format!("<Command exec=\"{PVSERVER}\" process_wait=\"0\" delay=\"0\">|</Command>"),
        &pvserver_args(port, false),
    );
    let mut launched = start(
        &[
            "--profile",
            file.to_str().unwrap(),
            "--exec",
            &pvpython_exec(dir.path()),
        ],
        &[("CLIENT_HOLD", "1")],
        dir.path(),
    );
    let client = launched.wait_event("the client", |e| e["event"] == "client")["pid"]
        .as_u64()
        .unwrap() as u32;
    launched.wait_stderr(SPHERE_POINTS);
    let servers = processes_with(&format!("--server-port={port}"));
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert!(
        Command::new("kill")
            .args(["-KILL", &servers[0].0.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let end = launched.finish(WAIT);
    assert_eq!(end.code, Some(1), "{}", end.context());
    assert!(end.event("exited").is_some(), "{}", end.context());
    assert_group_gone(client);
    assert_not_listening(port);
}

/// `--json` with a profile that does not load: the error is a `failed` event on stdout
/// too (and still text on stderr), exit status 2.
#[test]
fn json_reports_an_error_before_the_launch_as_a_failed_event() {
    let dir = scratch();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[server]]\nname = \"x\"\nresource = \"cs://127.0.0.1:1\"\nbogus = 1\n",
    )
    .unwrap();
    for profile in [bad.to_str().unwrap(), "/no/such/profile.toml"] {
        let end = run(&["--profile", profile], &[], dir.path());
        assert_eq!(end.code, Some(2), "{}", end.context());
        assert_eq!(end.events.len(), 1, "{}", end.context());
        let failed = end.event("failed").expect("a failed event");
        let message = failed["message"].as_str().unwrap();
        assert!(
            !message.is_empty() && end.stderr.contains(message),
            "{}",
            end.context()
        );
    }
}

/// `pv-launch --json … | head -1`, with a client that runs quietly: once `head` has its
/// line and exits, pv-launch ends with 141 (as a shell reports SIGPIPE), the client and
/// the server stopped. With a reader that closes late (after every event was written)
/// too.
#[test]
fn json_into_head_ends_with_141_and_cleans_up() {
    if !have(&[PVSERVER]) {
        return;
    }
    for reader in ["head -1", "sleep 3; head -1"] {
        let dir = scratch();
        let port = free_port();
        let file = pvsc(
            dir.path(),
            &format!("cs://127.0.0.1:{port}"),
            &format!("<Command exec=\"{PVSERVER}\" process_wait=\"0\" delay=\"0\">|</Command>"),
            &pvserver_args(port, false),
        );
        let marker = format!("sleep 31{port}");
        let mut launch = Command::new(workspace_bin("pv-launch"))
            .args(["--json", "--profile", file.to_str().unwrap(), "--exec"])
            .arg(format!("exec {marker}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let head = Command::new("sh")
            .args(["-c", reader])
            .stdin(launch.stdout.take().unwrap())
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        let first = String::from_utf8(head.stdout).unwrap();
        assert!(first.starts_with("{\"event\":"), "{first}");
        let end = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = launch.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < end, "{reader}: pv-launch runs on");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(141), "{reader}");
        assert_no_process_with(&marker);
        assert_no_process_with(&format!("--server-port={port}"));
    }
}

/// SIGTERM and SIGINT to pv-launch while its client runs: the client is gone afterwards,
/// and so is the server.
#[test]
fn sigterm_and_sigint_stop_the_client_and_the_server() {
    if !have(&[PVSERVER]) {
        return;
    }
    for signal in ["TERM", "INT"] {
        let dir = scratch();
        let port = free_port();
        let file = pvsc(
            dir.path(),
            &format!("cs://127.0.0.1:{port}"),
            &format!("<Command exec=\"{PVSERVER}\" process_wait=\"0\" delay=\"0\">|</Command>"),
            &pvserver_args(port, false),
        );
        let mut launched = start(
            &["--profile", file.to_str().unwrap(), "--exec", "sleep 31"],
            &[],
            dir.path(),
        );
        let client = launched.wait_event("the client", |e| e["event"] == "client")["pid"]
            .as_u64()
            .unwrap() as u32;
        assert!(!group_members(client).is_empty());
        launched.signal(signal);
        let end = launched.finish(WAIT);
        assert_eq!(end.code, Some(130), "{}", end.context());
        assert_eq!(
            end.event("interrupted").map(|e| e["signal"].clone()),
            Some(Value::from(format!("SIG{signal}"))),
            "{}",
            end.context()
        );
        assert_group_gone(client);
        assert_no_process_with(&format!("--server-port={port}"));
        assert_not_listening(port);
    }
}

/// The `pv-front` line that says where its backend listens: the port, from pv-launch's
/// stderr events.
fn front_backend_port(end: &Ended) -> u16 {
    end.events
        .iter()
        .filter(|e| e["event"] == "stderr")
        .find_map(|e| {
            let line = e["line"].as_str()?;
            let (_, rest) = line.split_once("pv-front: backend pid ")?;
            rest.rsplit_once(':')?.1.parse().ok()
        })
        .unwrap_or_else(|| panic!("no backend line from pv-front: {}", end.context()))
}

/// `examples/profiles/pvserver-tls.toml` as shipped, from the repository's root with the
/// built binaries first on PATH: an unmodified pvpython reaches an unmodified pvserver
/// through pv-launch's loopback endpoint, TLS with the token to `pv-front`, and
/// pv-front's plain loopback relay. The sphere's point count proves the data arrived;
/// afterwards pvserver, pv-front, the client and every port are gone.
#[test]
fn pvpython_reaches_an_unmodified_pvserver_over_tls_through_pv_front() {
    if !have(&[PVSERVER, PVPYTHON]) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let bins = workspace_bin("pv-front").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let end = run(
        &["--profile", "examples/profiles/pvserver-tls.toml"],
        &[("PATH", &path)],
        root,
    );
    assert_eq!(end.code, Some(0), "{}", end.context());
    assert!(end.stderr.contains(SPHERE_POINTS), "{}", end.context());
    assert_eq!(
        end.event("client-exited").map(|e| e["code"].clone()),
        Some(Value::from(0)),
        "{}",
        end.context()
    );
    assert!(end.event("cleaned-up").is_some(), "{}", end.context());
    let url = end.event("handoff").expect("a handoff event")["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(url.starts_with("cs://127.0.0.1:"), "{url}");
    let endpoint: u16 = url.rsplit_once(':').unwrap().1.parse().unwrap();
    let front: u16 = end.event("ready").expect("a ready event")["port"]
        .as_u64()
        .unwrap()
        .try_into()
        .unwrap();
    let backend = front_backend_port(&end);
    assert!(
        ![endpoint, front].contains(&backend),
        "pvpython must not reach pvserver directly: {}",
        end.context()
    );
    assert_group_gone(end.client_pid());
    assert_no_process_with(&format!("--server-port={backend}"));
    assert_no_process_with("pv-front --server-port 0 --backend 127.0.0.1:0");
    for p in [endpoint, front, backend] {
        assert_not_listening(p);
    }
}

/// `pv-front ARGS` with `token` on its stdin (then closed), stdout piped.
fn spawn_front(args: &[&str], token: &pv_transport::Token, stderr: Stdio) -> Child {
    use std::io::Write;
    let mut child = Command::new(workspace_bin("pv-front"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start pv-front");
    let secrets = pv_transport::launch::Secrets {
        token: token.clone(),
        client_cert: None,
    };
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", secrets.to_line()).unwrap();
    child
}

/// A running `pv-front` started by hand with `token` on its stdin, relaying to `backend`:
/// the process and the port of its ready line, with its TLS fingerprint.
fn start_front(
    backend: u16,
    token: &pv_transport::Token,
) -> (Child, u16, pv_transport::Fingerprint) {
    let backend = format!("127.0.0.1:{backend}");
    let mut child = spawn_front(
        &["--backend", &backend, "--timeout", "60"],
        token,
        Stdio::inherit(),
    );
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready = pv_transport::launch::ReadyLine::parse(&line)
        .unwrap_or_else(|| panic!("not a ready line: {line:?}"))
        .unwrap();
    (child, ready.port, ready.tls.expect("a TLS fingerprint"))
}

/// A child process killed (and reaped) if the test ends before it exited.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Dial pv-front at `port` with TLS pinned to `pin` and the native handshake with `token`,
/// on `rt` (the connection lives on that runtime).
fn dial_front(
    rt: &tokio::runtime::Runtime,
    port: u16,
    pin: pv_transport::Fingerprint,
    token: pv_transport::Token,
) -> Result<pv_transport::Connection, pv_transport::ConnectError> {
    use pv_transport::handshake::native::NativeHandshake;
    use pv_transport::{
        ConnectionConfig, ConnectionManager, ConnectionMode, RetryPolicy, TlsConfig,
    };
    let config = ConnectionConfig::new(NativeHandshake::new(token))
        .with_tls(TlsConfig::client_pinned(pin, None).unwrap());
    let manager = ConnectionManager::new(ConnectionMode::Single, config);
    rt.block_on(manager.connect_to_addr(lo(port), RetryPolicy::default(), |_, _, _| {}))
}

/// Clients without the token get nothing from `pv-front` and never reach its backend:
/// plain bytes (socat, as an unmodified ParaView client would send) are closed without
/// an answer, and a TLS client pinned to the right certificate but with another token
/// fails the handshake. The backend's listener has no connection waiting after either.
/// Then the client with the token is relayed to it, bytes both ways, and pv-front exits
/// 0 once both sides closed.
#[test]
fn pv_front_relays_only_the_client_with_the_token_to_its_backend() {
    if !have(&["/usr/bin/socat"]) {
        return;
    }
    use std::io::{Read, Write};
    let backend = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    backend.set_nonblocking(true).unwrap();
    let backend_port = backend.local_addr().unwrap().port();
    let token = pv_transport::Token::generate();
    let (front, port, pin) = start_front(backend_port, &token);
    let mut front = KillOnDrop(front);

    let out = Command::new("/usr/bin/socat")
        .args(["-t", "5", "-T", "30", "-", &format!("TCP:127.0.0.1:{port}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(b"a ParaView client's first bytes\n")?;
            c.wait_with_output()
        })
        .unwrap();
    // At most rustls' alert record (content type 21, 7 bytes) refusing the plaintext.
    assert!(
        out.stdout.is_empty() || (out.stdout[0] == 21 && out.stdout.len() == 7),
        "socat got {:?}",
        out.stdout
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let wrong = dial_front(&rt, port, pin, pv_transport::Token::generate());
    assert!(wrong.is_err(), "a client with another token was accepted");
    match backend.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the backend saw a connection from an unauthenticated client: {other:?}"),
    }

    let mut conn = dial_front(&rt, port, pin, token).expect("the client with the token");
    backend.set_nonblocking(false).unwrap();
    let (mut server, _) = backend.accept().unwrap();
    server.set_read_timeout(Some(WAIT)).unwrap();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        conn.write_all(b"ping through TLS").await.unwrap();
        conn.flush().await.unwrap();
        let mut got = [0u8; 16];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping through TLS");
        server.write_all(b"pong").unwrap();
        let mut back = [0u8; 4];
        tokio::time::timeout(WAIT, conn.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back, b"pong");
        conn.shutdown().await.unwrap();
        drop(server);
        let mut rest = vec![];
        tokio::time::timeout(WAIT, conn.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(rest.is_empty());
    });
    let end = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = front.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "pv-front did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert_not_listening(port);
}

/// `pv-front` given a secrets line and `args`: its exit code and stderr.
fn front_fails(args: &[&str]) -> (Option<i32>, String) {
    let child = spawn_front(args, &pv_transport::Token::generate(), Stdio::piped());
    let mut child = KillOnDrop(child);
    let end = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut err).unwrap();
            let mut out = String::new();
            std::io::Read::read_to_string(&mut child.0.stdout.take().unwrap(), &mut out).unwrap();
            assert!(out.is_empty(), "a ready line although it failed: {out}");
            return (status.code(), err);
        }
        assert!(Instant::now() < end, "pv-front {args:?} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Bad input to `pv-front` is a clear error, before any ready line: a backend that is not
/// on loopback, port 0 without a command to start, a backend command that exits before
/// its port listens, and one that cannot be started.
#[test]
fn pv_front_refuses_bad_backends_with_a_clear_error() {
    let (code, err) = front_fails(&["--backend", "192.0.2.1:11111"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--backend 192.0.2.1:11111: not a loopback address"),
        "{err}"
    );
    let (code, err) = front_fails(&["--backend", "127.0.0.1:0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("port 0 needs a backend command"), "{err}");
    let (code, err) = front_fails(&["--backend", "127.0.0.1:0", "--", "/bin/false"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("the backend exited before listening on 127.0.0.1:"),
        "{err}"
    );
    let (code, err) = front_fails(&["--backend", "127.0.0.1:0", "--", "/nonexistent/pvserver"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("starting the backend \"/nonexistent/pvserver\""),
        "{err}"
    );
}
