//! The launcher end to end over ssh, against a real loopback sshd: TOML profiles and a
//! ParaView `.pvsc` file whose servers start on the "remote" host, run through
//! `session::launch_with` and through the `pv-launch` CLI — forward and reverse through
//! tunnels, without a tunnel, TLS through a tunnel, a password asked through the
//! embedding application's prompter, a real pvserver started by a `.pvsc` file, a remote
//! command failing before its ready line, and nothing left running on the remote side.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pv_e2e::prompts::Scripted;
use pv_e2e::sshd::{Sshd, TEST_PASSWORD, TEST_USER, wait_group_gone};
use pv_e2e::workspace_bin;
use pv_launch::events::{Event, Stage};
use pv_launch::plan::Plan;
use pv_launch::session::{LaunchError, LaunchOptions, Session, launch_with};
use pv_launch::ssh::AskpassProgram;
use pv_launch::{LaunchContext, NonInteractive, Profile};
use pv_transport::{Listener, loopback};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

fn demo() -> String {
    workspace_bin("pv-demo-server").display().to_string()
}

async fn free_port() -> u16 {
    let l = Listener::bind(loopback(0), None).await.unwrap();
    l.local_addr().unwrap().port()
}

/// Whether `pid` runs (a zombie does not count).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

fn wait_not_running(pid: u32) -> bool {
    let deadline = Instant::now() + WAIT;
    while running(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
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
    let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            sink.lock().unwrap().push(e);
        }
    });
    let result = tokio::time::timeout(WAIT * 2, launch_with(plan, &events, &options(prompter)))
        .await
        .expect("the launch finishes within the deadline");
    (result, seen)
}

async fn launch_text(text: &str, prompter: Arc<Scripted>) -> (Result<Session, LaunchError>, Seen) {
    let profile = pv_launch::profile::toml_format::load_str(Path::new("ssh.toml"), text).unwrap();
    let plan = Plan::resolve(
        &profile.servers[0],
        &LaunchContext::from_host(),
        &NonInteractive,
    )
    .unwrap();
    launch_plan(&plan, prompter).await
}

async fn echo_through(session: &mut Session, msg: &[u8]) {
    let conn = session.connection().expect("a connection");
    conn.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(WAIT, conn.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, msg);
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

/// Clean up and prove it: the remote process group and the ssh master are gone.
async fn cleanup_and_check(mut session: Session) {
    let ssh = session.ssh().expect("an ssh session");
    let pgid = ssh.remote_pgid().expect("the remote group is known");
    let master = ssh.master().pid().expect("the master runs");
    assert!(running(master));
    session.cleanup().await;
    assert_eq!(wait_group_gone(pgid, WAIT), Vec::<u32>::new());
    assert!(wait_not_running(master), "the ssh master {master} is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_starts_the_server_over_ssh_and_connects_through_a_forward_tunnel_plain_and_tls()
{
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
            ssh_table(&sshd, "publickey", "port_forwarding = true\n"),
        );
        let (result, seen) = launch_text(&text, Scripted::new(vec![])).await;
        let mut session = result.unwrap_or_else(|e| panic!("{scheme}: {e}"));
        // The client dials the local end of the tunnel, not the server's own port.
        let ready_port = seen
            .lock()
            .unwrap()
            .iter()
            .find_map(|e| match e {
                Event::Ready { port, .. } => Some(*port),
                _ => None,
            })
            .expect("a ready event");
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
async fn a_script_over_ssh_makes_a_reverse_connection_through_the_tunnel() {
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
            &format!("port_forwarding = {{ local_port = {local} }}\n")
        ),
    );
    let (result, _) = launch_text(&text, Scripted::new(vec![])).await;
    let mut session = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(session.url(), format!("csrc://:{local}"));
    assert_eq!(session.ssh().unwrap().remote_port(), Some(remote));
    echo_through(&mut session, b"reverse through ssh").await;
    cleanup_and_check(session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_is_asked_through_the_prompter_and_no_tunnel_dials_the_server_directly() {
    let sshd = Sshd::start();
    let text = format!(
        "[[server]]\nname = \"pw\"\nresource = \"cs://127.0.0.1:0\"\nconnect_timeout = 20\n\
         [server.startup]\nmechanism = \"ssh\"\n\
         argv = [{:?}, \"--server-port\", \"${{PV_SERVER_PORT}}\"]\n{}",
        demo(),
        ssh_table(&sshd, "password", ""),
    );
    let prompter = Scripted::new(vec![Ok(TEST_PASSWORD)]);
    let (result, seen) = launch_text(&text, prompter.clone()).await;
    let mut session = result.unwrap_or_else(|e| panic!("{e}"));
    let asked = prompter.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0].1.to_lowercase().contains("password"), "{asked:?}");
    // No tunnel: the URL is the server's own port from its ready line.
    let ready_port = seen
        .lock()
        .unwrap()
        .iter()
        .find_map(|e| match e {
            Event::Ready { port, .. } => Some(*port),
            _ => None,
        })
        .unwrap();
    assert_eq!(session.url(), format!("cs://127.0.0.1:{ready_port}"));
    echo_through(&mut session, b"password").await;
    cleanup_and_check(session).await;
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
    assert!(wait_not_running(pid), "the remote server {pid} is gone");
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
