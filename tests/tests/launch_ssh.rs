//! The launcher end to end over ssh, against a real loopback sshd: TOML profiles and a
//! ParaView `.pvsc` file whose servers start on the "remote" host, run through
//! `session::launch_with` and through the `pv-launch` CLI — forward and reverse through
//! tunnels, without a tunnel, TLS through a tunnel, a password asked through the
//! embedding application's prompter, a real pvserver started by a `.pvsc` file, a remote
//! command failing before its ready line, and nothing left running on the remote side.
//! The forward, reverse and password scenarios run once per ssh backend: the system's
//! OpenSSH client and, with `backend = "russh"` in the profile, the in-process russh
//! client (which also asks the askpass program when there is no prompter, and reports a
//! lost connection from `wait_server`).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pv_e2e::prompts::Scripted;
use pv_e2e::sshd::{Sshd, TEST_PASSWORD, TEST_USER, wait_group_gone};
use pv_e2e::{echo, running, wait_not_running, workspace_bin};
use pv_launch::events::{Event, Stage};
use pv_launch::plan::Plan;
use pv_launch::session::{LaunchError, LaunchOptions, Session, launch_with};
use pv_launch::startup::ssh::AskpassProgram;
use pv_launch::{LaunchContext, NonInteractive, Profile};
use pv_transport::{Listener, loopback};

const WAIT: Duration = Duration::from_secs(30);

/// The `[server.startup.ssh]` line selecting the OpenSSH backend (the default).
const OPENSSH: &str = "";
/// The `[server.startup.ssh]` line selecting the russh backend.
#[cfg(feature = "russh")]
const RUSSH: &str = "backend = \"russh\"\n";

fn demo() -> String {
    workspace_bin("pv-demo-server").display().to_string()
}

async fn free_port() -> u16 {
    let l = Listener::bind(loopback(0), None).await.unwrap();
    l.local_addr().unwrap().port()
}

/// The `[server.startup.ssh]` table reaching `sshd` as the test user, with `methods`
/// (`publickey` uses the fixture's plain key) and `extra` lines.
fn ssh_table(sshd: &Sshd, methods: &str, extra: &str) -> String {
    let mut options = String::new();
    for a in sshd.client_args(&sshd.known_hosts(), methods) {
        options.push_str(&format!("{a:?}, "));
    }
    let key = if methods == "publickey" {
        format!(
            "identity_file = {:?}\n",
            sshd.plain_key().display().to_string()
        )
    } else {
        String::new()
    };
    format!(
        "[server.startup.ssh]\nhost = \"127.0.0.1\"\nuser = \"{TEST_USER}\"\nport = {}\n{key}options = [{options}]\n{extra}",
        sshd.port()
    )
}

/// What a launch reported, in order.
type Seen = Arc<Mutex<Vec<Event>>>;

fn options(prompter: Arc<Scripted>) -> LaunchOptions {
    let mut o = LaunchOptions::default().with_prompter(prompter);
    o.ssh.askpass = AskpassProgram::Path(workspace_bin("pv-askpass"));
    o.ssh.auth_timeout = WAIT;
    o
}

async fn launch_plan(plan: &Plan, prompter: Arc<Scripted>) -> (Result<Session, LaunchError>, Seen) {
    launch_plan_with(plan, &options(prompter)).await
}

async fn launch_plan_with(
    plan: &Plan,
    options: &LaunchOptions,
) -> (Result<Session, LaunchError>, Seen) {
    let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            sink.lock().unwrap().push(e);
        }
    });
    let result = tokio::time::timeout(WAIT * 2, launch_with(plan, &events, options))
        .await
        .expect("the launch finishes within the deadline");
    (result, seen)
}

fn plan_of(text: &str) -> Plan {
    let profile = pv_launch::profile::toml::load_str(Path::new("ssh.toml"), text).unwrap();
    Plan::resolve(
        &profile.servers[0],
        &LaunchContext::from_host(),
        &NonInteractive,
    )
    .unwrap()
}

async fn launch_text(text: &str, prompter: Arc<Scripted>) -> (Result<Session, LaunchError>, Seen) {
    launch_plan(&plan_of(text), prompter).await
}

async fn echo_through(session: &mut Session, msg: &[u8]) {
    echo(session.connection().expect("a connection"), msg, WAIT).await;
}

fn stages(seen: &Seen) -> Vec<Stage> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Stage { stage, .. } => Some(*stage),
            _ => None,
        })
        .collect()
}

/// The remote side of a session, whichever backend runs it: the remote process group,
/// the reverse tunnel's remote port, and the OpenSSH master's pid (`None` with russh,
/// which has no process of its own).
fn remote_side(session: &mut Session) -> (u32, Option<u16>, Option<u32>) {
    let ssh = session.ssh().expect("the session runs an ssh backend");
    let pgid = ssh.remote_pgid().expect("the remote group is known");
    let master = ssh.master().map(|m| m.pid().expect("the master runs"));
    (pgid, ssh.remote_port(), master)
}

/// Check the session runs the backend the profile chose (`OPENSSH` or `RUSSH`).
fn assert_backend(session: &mut Session, backend: &str) {
    assert_eq!(
        session.ssh().and_then(|s| s.master()).is_some(),
        backend == OPENSSH,
        "the session runs the wrong ssh backend"
    );
}

/// Clean up and prove it: the remote process group and the ssh master (if any) are gone.
async fn cleanup_and_check(mut session: Session) {
    let (pgid, _, master) = remote_side(&mut session);
    if let Some(master) = master {
        assert!(running(master));
    }
    session.cleanup().await;
    assert_eq!(wait_group_gone(pgid, WAIT), Vec::<u32>::new());
    if let Some(master) = master {
        assert!(
            wait_not_running(master, WAIT),
            "the ssh master {master} is gone"
        );
    }
}

fn ready_port(seen: &Seen) -> u16 {
    seen.lock()
        .unwrap()
        .iter()
        .find_map(|e| match e {
            Event::Ready { port, .. } => Some(*port),
            _ => None,
        })
        .expect("a ready event")
}

/// A profile starts the demo server over ssh with `backend` and the client reaches it
/// through a forward tunnel, plain and TLS, with the native handshake.
async fn forward_through_a_tunnel_plain_and_tls(backend: &str) {
    let sshd = Sshd::start();
    for scheme in ["cs", "cs+tls"] {
        let tls = if scheme == "cs+tls" {
            ", \"--tls\""
        } else {
            ""
        };
        let text = format!(
            "[[server]]\nname = \"remote\"\nresource = \"{scheme}://127.0.0.1:0\"\nconnect_timeout = 20\n\
             [server.startup]\nmechanism = \"ssh\"\n\
             argv = [{:?}, \"--server-port\", \"${{PV_SERVER_PORT}}\"{tls}]\n{}",
            demo(),
            ssh_table(
                &sshd,
                "publickey",
                &format!("port_forwarding = true\n{backend}")
            ),
        );
        let (result, seen) = launch_text(&text, Scripted::new(vec![])).await;
        let mut session = result.unwrap_or_else(|e| panic!("{scheme}: {e}"));
        assert_backend(&mut session, backend);
        // The client dials the local end of the tunnel, not the server's own port.
        let ready_port = ready_port(&seen);
        let url = session.url().to_string();
        assert!(url.starts_with(&format!("{scheme}://127.0.0.1:")), "{url}");
        assert_ne!(url, format!("{scheme}://127.0.0.1:{ready_port}"));
        let st = stages(&seen);
        assert_eq!(
            &st[..3],
            [Stage::SshConnect, Stage::Start, Stage::WaitReady],
            "{st:?}"
        );
        echo_through(&mut session, scheme.as_bytes()).await;
        cleanup_and_check(session).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_starts_the_server_over_ssh_and_connects_through_a_forward_tunnel_plain_and_tls()
{
    forward_through_a_tunnel_plain_and_tls(OPENSSH).await;
}

#[cfg(feature = "russh")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn russh_a_profile_starts_the_server_and_connects_through_a_forward_tunnel_plain_and_tls() {
    forward_through_a_tunnel_plain_and_tls(RUSSH).await;
}

/// A remote script started over ssh with `backend` dials back through a reverse tunnel
/// whose remote port is the resource's and whose local end is `local_port`.
async fn reverse_through_a_tunnel(backend: &str) {
    let sshd = Sshd::start();
    let script = sshd.dir().join("start-rc.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec {:?} --reverse-connection --client-host 127.0.0.1 --server-port \"$PV_SERVER_PORT\"\n",
            demo()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (remote, local) = (free_port().await, free_port().await);
    let text = format!(
        "[[server]]\nname = \"rc\"\nresource = \"csrc://127.0.0.1:{remote}\"\nconnect_timeout = 20\n\
         [server.startup]\nmechanism = \"ssh-script\"\nscript = {:?}\n{}",
        script.display().to_string(),
        ssh_table(
            &sshd,
            "publickey",
            &format!("port_forwarding = {{ local_port = {local} }}\n{backend}")
        ),
    );
    let (result, _) = launch_text(&text, Scripted::new(vec![])).await;
    let mut session = result.unwrap_or_else(|e| panic!("{e}"));
    assert_backend(&mut session, backend);
    assert_eq!(session.url(), format!("csrc://:{local}"));
    assert_eq!(remote_side(&mut session).1, Some(remote));
    echo_through(&mut session, b"reverse through ssh").await;
    cleanup_and_check(session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_over_ssh_makes_a_reverse_connection_through_the_tunnel() {
    reverse_through_a_tunnel(OPENSSH).await;
}

#[cfg(feature = "russh")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn russh_a_script_makes_a_reverse_connection_through_the_tunnel() {
    reverse_through_a_tunnel(RUSSH).await;
}

/// A script that detaches its server (as a batch submission does: the server leaves the
/// script's process group) and exits 0 before any ready line: the session keeps the
/// master and its reverse tunnel for the server, which dials back through it with the
/// token it was handed; `wait_server` then waits for the ssh connection only, and ends
/// with an error when it is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_that_detaches_its_server_keeps_the_tunnel_until_the_connection_is_lost() {
    let sshd = Sshd::start();
    let out = sshd.dir().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let pidfile = out.join("detached.pid");
    let started = out.join("detached.out");
    let script = sshd.dir().join("submit.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# the server reads the secrets line on its stdin, like a job handed the token\n\
             # (an asynchronous command's stdin is /dev/null unless given through another fd)\n\
             exec 4<&0\n\
             setsid {:?} --reverse-connection --client-host 127.0.0.1 --server-port \"$PV_SERVER_PORT\" <&4 >{:?} 2>&1 &\n\
             echo $! > {:?}\n\
             # like a submission that waits for the job to be queued: until the server runs\n\
             # (left this group), at most 10 s; what stays in the group ends with the script\n\
             n=0; while [ ! -s {:?} ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n+1)); done\n\
             exit 0\n",
            demo(),
            started.display().to_string(),
            pidfile.display().to_string(),
            started.display().to_string(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (remote, local) = (free_port().await, free_port().await);
    let text = format!(
        "[[server]]\nname = \"job\"\nresource = \"csrc://127.0.0.1:{remote}\"\nconnect_timeout = 20\n\
         [server.startup]\nmechanism = \"ssh-script\"\nscript = {:?}\ndelay = -1\n{}",
        script.display().to_string(),
        ssh_table(
            &sshd,
            "publickey",
            &format!("port_forwarding = {{ local_port = {local} }}\n")
        ),
    );
    let (result, _) = launch_text(&text, Scripted::new(vec![])).await;
    let mut session = result.unwrap_or_else(|e| panic!("{e}"));
    echo_through(&mut session, b"detached job").await;
    let server: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The script is gone, the session is not: nothing ends it while ssh is up.
    let (_, _, master) = remote_side(&mut session);
    let master = master.expect("an OpenSSH master");
    assert!(
        tokio::time::timeout(Duration::from_secs(1), session.wait_server())
            .await
            .is_err(),
        "the session ended with the script"
    );
    // Losing the ssh connection ends it, with an error that says so.
    std::process::Command::new("kill")
        .arg(master.to_string())
        .status()
        .unwrap();
    let e = tokio::time::timeout(WAIT, session.wait_server())
        .await
        .expect("the loss is noticed")
        .expect_err("a lost connection is an error")
        .to_string();
    assert!(e.contains("connection ended"), "{e}");
    session.cleanup().await;
    // Like a batch job, the detached server is not pv-launch's to stop.
    std::process::Command::new("kill")
        .arg(server.to_string())
        .status()
        .unwrap();
}

/// The profile for [`password_then_a_direct_dial`]: password authentication only, no
/// tunnel, with `backend`.
fn password_profile(sshd: &Sshd, backend: &str) -> String {
    format!(
        "[[server]]\nname = \"pw\"\nresource = \"cs://127.0.0.1:0\"\nconnect_timeout = 20\n\
         [server.startup]\nmechanism = \"ssh\"\n\
         argv = [{:?}, \"--server-port\", \"${{PV_SERVER_PORT}}\"]\n{}",
        demo(),
        ssh_table(sshd, "password", backend),
    )
}

/// A session whose ssh login took a password reaches the server without a tunnel: the
/// URL is the server's own port from its ready line.
async fn password_then_a_direct_dial(mut session: Session, seen: &Seen) {
    assert_eq!(
        session.url(),
        format!("cs://127.0.0.1:{}", ready_port(seen))
    );
    echo_through(&mut session, b"password").await;
    cleanup_and_check(session).await;
}

async fn password_through_the_prompter(backend: &str) {
    let sshd = Sshd::start();
    let prompter = Scripted::new(vec![Ok(TEST_PASSWORD)]);
    let (result, seen) = launch_text(&password_profile(&sshd, backend), prompter.clone()).await;
    let mut session = result.unwrap_or_else(|e| panic!("{e}"));
    assert_backend(&mut session, backend);
    let asked = prompter.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0].1.to_lowercase().contains("password"), "{asked:?}");
    password_then_a_direct_dial(session, &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_is_asked_through_the_prompter_and_no_tunnel_dials_the_server_directly() {
    password_through_the_prompter(OPENSSH).await;
}

#[cfg(feature = "russh")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn russh_the_password_is_asked_through_the_prompter_and_no_tunnel_dials_directly() {
    password_through_the_prompter(RUSSH).await;
}

/// Without a prompter, the russh backend asks like ssh would: the askpass program gets
/// the prompt as its argument and answers on stdout.
#[cfg(feature = "russh")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn russh_without_a_prompter_asks_the_askpass_program() {
    let sshd = Sshd::start();
    let asked = sshd.dir().join("asked");
    let askpass = sshd.dir().join("askpass.sh");
    std::fs::write(
        &askpass,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" >> {:?}\nprintf '%s\\n' {TEST_PASSWORD:?}\n",
            asked.display().to_string()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &askpass,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let mut options = LaunchOptions::default();
    options.ssh.askpass = AskpassProgram::Path(askpass);
    options.ssh.auth_timeout = WAIT;
    let (result, seen) =
        launch_plan_with(&plan_of(&password_profile(&sshd, RUSSH)), &options).await;
    let mut session = result.unwrap_or_else(|e| panic!("{e}"));
    assert_backend(&mut session, RUSSH);
    let asked = std::fs::read_to_string(&asked).unwrap();
    assert_eq!(asked.lines().count(), 1, "{asked}");
    assert!(
        asked.contains(&format!("{TEST_USER}@127.0.0.1's password:")),
        "{asked}"
    );
    password_then_a_direct_dial(session, &seen).await;
}

/// The connection carrying a russh session dies (the sshd processes serving it are
/// killed): `wait_server` says so, and the remote group goes with the channel.
#[cfg(feature = "russh")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn russh_a_lost_connection_ends_wait_server_with_an_error() {
    let sshd = Sshd::start();
    let (result, _) = launch_text(
        &password_profile(&sshd, RUSSH),
        Scripted::new(vec![Ok(TEST_PASSWORD)]),
    )
    .await;
    let mut session = result.unwrap_or_else(|e| panic!("{e}"));
    assert_backend(&mut session, RUSSH);
    let (pgid, _, _) = remote_side(&mut session);
    // The remote wrapper's parent is sshd's session process, whose parent is its
    // privileged monitor: both serve only this connection.
    let parent = |pid: u32| -> u32 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        stat.rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    let session_sshd = parent(pgid);
    let monitor = parent(session_sshd);
    for pid in [session_sshd, monitor] {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert!(comm.starts_with("sshd"), "{pid} is {comm}");
    }
    // One kill each: the first death can make the other exit on its own before its
    // signal arrives (under load it did, and a joint `kill` then failed on a gone pid),
    // so a pid already gone is fine; what counts is that both are gone.
    for pid in [session_sshd, monitor] {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
    }
    for pid in [session_sshd, monitor] {
        assert!(
            wait_not_running(pid, WAIT),
            "sshd process {pid} survived SIGKILL"
        );
    }
    let e = tokio::time::timeout(WAIT, session.wait_server())
        .await
        .expect("wait_server notices within the deadline")
        .expect_err("a lost connection is an error");
    assert!(e.to_string().contains("connection ended"), "{e}");
    assert_eq!(wait_group_gone(pgid, WAIT), Vec::<u32>::new());
    session.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_command_failing_before_its_ready_line_is_a_clear_error() {
    let sshd = Sshd::start();
    let text = format!(
        "[[server]]\nname = \"broken\"\nresource = \"cs://127.0.0.1:0\"\n\
         [server.startup]\nmechanism = \"ssh\"\n\
         argv = [\"sh\", \"-c\", \"echo 'no such module: pvserver' >&2; exit 3\"]\n{}",
        ssh_table(&sshd, "publickey", "port_forwarding = true\n"),
    );
    let (result, _) = launch_text(&text, Scripted::new(vec![])).await;
    let e = result.expect_err("the launch fails").to_string();
    assert!(e.contains("exit code 3"), "{e}");
    assert!(e.contains("no such module: pvserver"), "{e}");
}

/// The CLI with `--exec`: the command runs once the connection is up, its status is
/// pv-launch's, and afterwards the remote server is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_an_ssh_profile_with_exec_and_leaves_nothing_on_the_remote_host() {
    let sshd = Sshd::start();
    // The remote server (run as the test user) writes its pid here.
    let pid_dir = sshd.dir().join("out");
    std::fs::create_dir(&pid_dir).unwrap();
    std::fs::set_permissions(
        &pid_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let pidfile = pid_dir.join("server.pid");
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("ssh.toml");
    std::fs::write(
        &profile,
        format!(
            "[[server]]\nname = \"cli\"\nresource = \"cs://127.0.0.1:0\"\nconnect_timeout = 20\n\
             [server.startup]\nmechanism = \"ssh\"\n\
             argv = [\"sh\", \"-c\", \"echo $$$$ > \\\"$0\\\"; exec \\\"$1\\\" --server-port 0\", {:?}, {:?}]\n{}",
            pidfile.display().to_string(),
            demo(),
            ssh_table(&sshd, "publickey", "port_forwarding = true\n"),
        ),
    )
    .unwrap();
    let out = tokio::time::timeout(
        WAIT * 2,
        tokio::process::Command::new(workspace_bin("pv-launch"))
            .arg("--profile")
            .arg(&profile)
            .arg("--json")
            .arg("--exec")
            .arg("case \"$PV_LAUNCH_URL\" in cs://127.0.0.1:*) test -S \"$PV_LAUNCH_SOCKET\" && exit 5;; esac; exit 1")
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("pv-launch ends")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(5),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"stage\":\"ssh-connect\""), "{stdout}");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_not_running(pid, WAIT),
        "the remote server {pid} is gone"
    );
}

/// A ParaView server file as an HPC centre writes it: `SSHCommand` with `PortForwarding`,
/// starting Debian's real `pvserver` on the "remote" host, forward (the client dials the
/// tunnel at once, while pvserver still starts: the tunnel's early closes are retried) and
/// reverse (pvserver dials back through `-R`). The ssh options come from
/// `PARAVIEW_SSH_OPTIONS`, as in ParaView.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pvsc_file_starts_a_real_pvserver_over_ssh_forward_and_reverse_through_tunnels() {
    let Some(pvserver) = ["/usr/bin/pvserver"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but pvserver is not installed (ci/apt-packages.txt: paraview)"
        );
        eprintln!("SKIPPED: pvserver is not installed (apt-get install paraview)");
        return;
    };
    let sshd = Sshd::start();
    for reverse in [false, true] {
        let (remote, local) = (free_port().await, free_port().await);
        let (scheme, rc) = if reverse {
            (
                "csrc",
                "<Argument value=\"--reverse-connection\"/><Argument value=\"--client-host=127.0.0.1\"/>",
            )
        } else {
            ("cs", "")
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("servers.pvsc");
        std::fs::write(
            &file,
            format!(
                r#"<Servers>
  <Server name="cluster" resource="{scheme}://127.0.0.1:{remote}" timeout="30">
    <CommandStartup>
      <SSHCommand exec="{pvserver}" process_wait="0" delay="0">
        <SSHConfig user="{TEST_USER}" port="{port}">
          <PortForwarding local="{local}"/>
        </SSHConfig>
        <Arguments>
          {rc}<Argument value="--server-port=$PV_SERVER_PORT$"/>
        </Arguments>
      </SSHCommand>
    </CommandStartup>
  </Server>
</Servers>
"#,
                port = sshd.port()
            ),
        )
        .unwrap();
        let mut ctx = LaunchContext::from_host();
        let mut ssh_options = sshd.client_args(&sshd.known_hosts(), "publickey");
        ssh_options.extend(["-i".to_string(), sshd.plain_key().display().to_string()]);
        ctx.process_env
            .insert("PARAVIEW_SSH_OPTIONS".into(), ssh_options.join(" "));
        let profile = Profile::load(&file).unwrap();
        let plan = Plan::resolve(profile.select(None).unwrap(), &ctx, &NonInteractive).unwrap();
        let (result, _) = launch_plan(&plan, Scripted::new(vec![])).await;
        let session = result.unwrap_or_else(|e| panic!("{scheme}: {e}"));
        let expected = if reverse {
            format!("csrc://:{local}")
        } else {
            format!("cs://127.0.0.1:{local}")
        };
        assert_eq!(session.url(), expected);
        cleanup_and_check(session).await;
    }
}

/// The dry run shows the OpenSSH commands that really run: a stand-in `ssh` (the
/// profile's `program`) records every argv it is run with, then runs the real ssh; the
/// recorded commands, with the private directory's paths put back as the dry run's
/// placeholders, hold each dry-run command in order. And the entry's `env` reaches the
/// remote server (the script checks it, the dry run shows it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_shows_the_ssh_commands_that_run_and_env_reaches_the_server() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("argv.log");
    let ssh = dir.path().join("recording-ssh");
    // One line per run: the arguments, NUL-separated.
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\nfor a; do printf '%s\\0' \"$a\"; done >> {log}\necho >> {log}\nexec ssh \"$@\"\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // The remote user runs it: in the fixture's directory, which it can read.
    let script = sshd.dir().join("server-with-env.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$PV_ENTRY_ENV\" = 'from the entry' ] || {{ echo \"PV_ENTRY_ENV=$PV_ENTRY_ENV\" >&2; exit 7; }}\nexec {} --server-port \"$1\"\n",
            demo()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (server_port, local_port) = (free_port().await, free_port().await);
    let text = format!(
        "[[server]]\nname = \"rec\"\nresource = \"cs://127.0.0.1:{server_port}\"\n\
         env = {{ PV_ENTRY_ENV = \"from the entry\" }}\n\
         [server.startup]\nmechanism = \"ssh-script\"\nscript = {:?}\nargs = [\"${{PV_SERVER_PORT}}\"]\n{}",
        script.display().to_string(),
        ssh_table(
            &sshd,
            "publickey",
            &format!(
                "program = {:?}\nport_forwarding = {{ local_port = {local_port} }}\n",
                ssh.display().to_string()
            )
        ),
    );
    let plan = plan_of(&text);
    let dry = plan.to_json();
    let commands: Vec<Vec<String>> =
        serde_json::from_value(dry["launch"]["remote"]["commands"].clone()).unwrap();
    assert_eq!(commands.len(), 3, "master, server, forward tunnel: {dry:#}");
    assert_eq!(
        dry["launch"]["remote"]["env"]["PV_ENTRY_ENV"], "from the entry",
        "{dry:#}"
    );
    assert!(
        plan.to_dry_run_text()
            .contains("PV_ENTRY_ENV=\"from the entry\"")
    );

    let (session, _) = launch_plan(&plan, Scripted::new(vec![])).await;
    let mut session = session.expect("the launch connects");
    echo_through(&mut session, b"recorded").await;
    let ctl = session
        .ssh()
        .and_then(|s| s.master())
        .map(|m| m.control_path().to_path_buf())
        .expect("an OpenSSH master");
    session.cleanup().await;

    let private = ctl.parent().unwrap().display().to_string();
    let recorded: Vec<Vec<String>> = std::fs::read(&log)
        .unwrap()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut argv: Vec<String> = l
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            argv.pop(); // after the last NUL
            argv.iter()
                .map(|a| {
                    a.replace(&format!("{private}/c"), "<control socket>")
                        .replace(&format!("{private}/log"), "<ssh log>")
                })
                .collect()
        })
        .collect();
    // The dry run's argv has the program first; the stand-in records its arguments.
    let mut at = 0;
    for c in &commands {
        let found = recorded[at..]
            .iter()
            .position(|r| r.as_slice() == &c[1..])
            .unwrap_or_else(|| {
                panic!("the dry run's {c:?} did not run; ran (from #{at}): {recorded:#?}")
            });
        at += found + 1;
    }
}
