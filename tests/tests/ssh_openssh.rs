//! Remote starts over ssh with the system OpenSSH client, against a real loopback sshd:
//! forward and reverse tunnels carrying the native handshake, every kind of
//! authentication answered through the real `pv-askpass` and its bridge socket by a
//! scripted prompter, the host-key question, shell metacharacters reaching the remote argv
//! byte for byte, no orphans on the remote side, and a lost connection noticed.
//!
//! Each test starts its own sshd (distinct port and directory), so the tests run in
//! parallel with each other and with the rest of the workspace.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pv_e2e::prompts::Scripted;
use pv_e2e::sshd::{
    KEY_PASSPHRASE, Sshd, TEST_PASSWORD, TEST_USER, group_members, wait_group_gone,
};
use pv_e2e::{echo, running, workspace_bin};
use pv_launch::prompt::{PromptError, PromptRequest, Prompter};
use pv_launch::startup::ssh::{
    AskpassProgram, Master, OutputLine, RemoteServer, SshError, SshLaunch, SshOptions, SshTarget,
    Tunnel, remote_command,
};
use pv_transport::handshake::native::NativeHandshake;
use pv_transport::launch::Secrets;
use pv_transport::{
    ConnectTimeout, ConnectionConfig, ConnectionManager, ConnectionMode, Listener, RetryPolicy,
    Token, loopback,
};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

fn target(sshd: &Sshd, known_hosts: &Path, methods: &str, key: Option<&Path>) -> SshTarget {
    let mut t = SshTarget::new("127.0.0.1")
        .unwrap()
        .with_user(TEST_USER)
        .unwrap()
        .with_port(sshd.port());
    for a in sshd.client_args(known_hosts, methods) {
        t = t.with_arg(a).unwrap();
    }
    if let Some(k) = key {
        t = t.with_identity_file(k).unwrap();
    }
    t
}

fn options(prompter: &Arc<Scripted>) -> SshOptions {
    SshOptions {
        askpass: AskpassProgram::Path(workspace_bin("pv-askpass")),
        prompter: Some(prompter.clone()),
        auth_timeout: WAIT,
        ..SshOptions::default()
    }
}

fn demo_server() -> String {
    workspace_bin("pv-demo-server").display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_tunnel_with_key_auth_carries_the_native_handshake_and_cleans_up() {
    let sshd = Sshd::start();
    let prompter = Scripted::new(vec![]);
    let launch = SshLaunch {
        target: target(
            &sshd,
            &sshd.known_hosts(),
            "publickey",
            Some(&sshd.plain_key()),
        ),
        options: options(&prompter),
        tunnel: Some(Tunnel::Local {
            local_port: 0,
            host: "127.0.0.1".into(),
            remote_port: 0,
        }),
        ready_timeout: Some(WAIT),
        pattern: None,
    };
    let token = Token::generate();
    let secrets = Secrets {
        token: token.clone(),
        client_cert: None,
    };
    let server = demo_server();
    let session = launch
        .start(
            |_| remote_command(&[server, "--server-port".into(), "0".into()], &[], None),
            Some(&secrets),
            None,
        )
        .await
        .unwrap();
    assert!(prompter.asked().is_empty(), "{:?}", prompter.asked());
    let addr = session.local_address().unwrap();
    assert_ne!(addr.port(), session.ready().unwrap().port);
    assert_eq!(session.url().unwrap(), format!("cs://{addr}"));
    let m = ConnectionManager::new(
        ConnectionMode::Single,
        ConnectionConfig::new(NativeHandshake::new(token)),
    );
    let mut conn = m
        .connect_to_remote(
            "127.0.0.1",
            addr.port(),
            RetryPolicy::new(ConnectTimeout::Within(WAIT)),
            |_, _, _| {},
        )
        .await
        .unwrap();
    echo(&mut conn, b"through the -L tunnel", WAIT).await;

    let pgid = session.remote_pgid().unwrap();
    let master_pid = session.master().unwrap().pid().unwrap();
    assert!(!group_members(pgid).is_empty());
    session.close().await;
    assert_eq!(
        wait_group_gone(pgid, WAIT),
        Vec::<u32>::new(),
        "remote group left"
    );
    assert!(!running(master_pid), "master left");
    drop(conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_tunnel_hands_the_remote_port_to_the_server() {
    let sshd = Sshd::start();
    let prompter = Scripted::new(vec![]);
    let token = Token::generate();
    let listener = Listener::bind(loopback(0), None).await.unwrap();
    let local_port = listener.local_addr().unwrap().port();
    let launch = SshLaunch {
        target: target(
            &sshd,
            &sshd.known_hosts(),
            "publickey",
            Some(&sshd.plain_key()),
        ),
        options: options(&prompter),
        tunnel: Some(Tunnel::Remote {
            remote_port: 0,
            local_port,
            public: false,
        }),
        ready_timeout: Some(WAIT),
        pattern: None,
    };
    let secrets = Secrets {
        token: token.clone(),
        client_cert: None,
    };
    let server = demo_server();
    let session = launch
        .start(
            |port| {
                let port = port
                    .expect("a reverse tunnel gives the remote port")
                    .to_string();
                remote_command(
                    &[
                        server,
                        "--reverse-connection".into(),
                        "--client-host".into(),
                        "127.0.0.1".into(),
                        "--server-port".into(),
                        port,
                    ],
                    &[],
                    None,
                )
            },
            Some(&secrets),
            None,
        )
        .await
        .unwrap();
    let remote_port = session.remote_port().unwrap();
    assert_ne!(remote_port, local_port);
    assert_eq!(session.ready().unwrap().port, remote_port);
    let m = ConnectionManager::new(
        ConnectionMode::Single,
        ConnectionConfig::new(NativeHandshake::new(token)),
    );
    let mut conn = tokio::time::timeout(WAIT, m.wait_for_server(listener, Some(WAIT)))
        .await
        .unwrap()
        .unwrap();
    echo(&mut conn, b"through the -R tunnel", WAIT).await;
    let pgid = session.remote_pgid().unwrap();
    session.close().await;
    assert_eq!(wait_group_gone(pgid, WAIT), Vec::<u32>::new());
}

/// Start `remote` (a POSIX sh command) through `master`, without a ready line, and
/// collect its stdout lines until it ends.
async fn run_collecting(master: &Master, remote: &str) -> Vec<String> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (mut server, _) = RemoteServer::start(master, remote, None, None, Some(tx))
        .await
        .unwrap();
    let status = tokio::time::timeout(WAIT, server.wait()).await.unwrap();
    assert!(status.success(), "{status:?}: {:?}", server.stderr_tail());
    drop(server);
    let mut lines = Vec::new();
    while let Some(o) = rx.recv().await {
        if let OutputLine::Stdout(l) = o {
            lines.push(l);
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_is_asked_once_through_the_bridge() {
    let sshd = Sshd::start();
    let prompter = Scripted::new(vec![Ok(TEST_PASSWORD)]);
    let t = target(&sshd, &sshd.known_hosts(), "password", None);
    let master = Master::connect(&t, &options(&prompter)).await.unwrap();
    let asked = prompter.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].0, "ssh-password");
    assert!(asked[0].1.contains("password"), "{asked:?}");
    let lines = run_collecting(&master, "id -un").await;
    assert_eq!(lines, [TEST_USER]);
    master.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_not_retried() {
    let sshd = Sshd::start();
    let prompter = Scripted::new(vec![Ok("not the password"), Ok(TEST_PASSWORD)]);
    let t = target(&sshd, &sshd.known_hosts(), "password", None);
    let err = Master::connect(&t, &options(&prompter)).await.unwrap_err();
    assert!(matches!(err, SshError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("Permission denied"), "{err}");
    assert!(!err.to_string().contains("not the password"), "{err}");
    assert_eq!(prompter.asked().len(), 1, "{:?}", prompter.asked());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_passphrase_is_asked_through_the_bridge() {
    let sshd = Sshd::start();
    let prompter = Scripted::new(vec![Ok(KEY_PASSPHRASE)]);
    let t = target(
        &sshd,
        &sshd.known_hosts(),
        "publickey",
        Some(&sshd.encrypted_key()),
    );
    let master = Master::connect(&t, &options(&prompter)).await.unwrap();
    let asked = prompter.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].0, "ssh-passphrase");
    assert_eq!(run_collecting(&master, "echo ok").await, ["ok"]);
    master.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_prompt_aborts_with_a_clear_error() {
    let sshd = Sshd::start();
    let prompter = Scripted::new(vec![Err(PromptError::Cancelled)]);
    let t = target(&sshd, &sshd.known_hosts(), "password", None);
    let err = Master::connect(&t, &options(&prompter)).await.unwrap_err();
    assert!(matches!(err, SshError::Cancelled { .. }), "{err}");
    assert!(err.to_string().contains("cancelled by the user"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_key_is_asked_yes_proceeds() {
    let sshd = Sshd::start();
    let known = sshd.fresh_known_hosts("kh_yes");
    let prompter = Scripted::new(vec![Ok("yes")]);
    let t = target(&sshd, &known, "publickey", Some(&sshd.plain_key()));
    let master = Master::connect(&t, &options(&prompter)).await.unwrap();
    let asked = prompter.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].0, "ssh-host-key");
    assert!(asked[0].1.contains("authenticity"), "{asked:?}");
    let learned = std::fs::read_to_string(&known).unwrap();
    let key = sshd.host_key_line().split_whitespace().nth(2).unwrap();
    assert!(learned.contains(key), "{learned}");
    master.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_key_is_asked_no_aborts() {
    let sshd = Sshd::start();
    let known = sshd.fresh_known_hosts("kh_no");
    let prompter = Scripted::new(vec![Ok("no")]);
    let t = target(&sshd, &known, "publickey", Some(&sshd.plain_key()));
    let err = Master::connect(&t, &options(&prompter)).await.unwrap_err();
    assert!(matches!(err, SshError::HostKeyRefused { .. }), "{err}");
    assert!(err.to_string().contains("host key not accepted"), "{err}");
    assert_eq!(std::fs::read_to_string(&known).unwrap(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_metacharacters_reach_the_remote_argv_byte_for_byte() {
    let sshd = Sshd::start();
    let prompter = Scripted::new(vec![]);
    let t = target(
        &sshd,
        &sshd.known_hosts(),
        "publickey",
        Some(&sshd.plain_key()),
    );
    let master = Master::connect(&t, &options(&prompter)).await.unwrap();
    let marker = format!("/tmp/pv-ssh-meta-{}", std::process::id());
    let value = format!("'a b' ; $(touch {marker}) `touch {marker}` \"q\" \\n \n!x *  \t$HOME");
    let argv: Vec<String> = [
        "/bin/sh",
        "-c",
        "printf %s \"$1\" | od -An -v -tx1 | tr -d ' \\n'; echo",
        "_",
        &value,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let lines = run_collecting(&master, &remote_command(&argv, &[], None)).await;
    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
    assert_eq!(lines, [hex]);
    assert!(
        !Path::new(&marker).exists(),
        "the remote shell ran a substitution"
    );
    // The wrapper tells the remote side where the ssh connection came from.
    assert_eq!(
        run_collecting(&master, "printf '%s\\n' \"$PV_CLIENT_HOST\"").await,
        ["127.0.0.1"]
    );
    master.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_process_of_the_remote_group_survives_a_cancel_or_a_drop() {
    let sshd = Sshd::start();
    let prompter = Scripted::new(vec![]);
    let t = target(
        &sshd,
        &sshd.known_hosts(),
        "publickey",
        Some(&sshd.plain_key()),
    );
    let master = Master::connect(&t, &options(&prompter)).await.unwrap();
    // Children in the background, one ignoring SIGTERM, a grandchild: the whole group.
    let tree =
        "sleep 300 & (trap '' TERM; sleep 301) & sh -c 'sleep 302 & wait' & echo started; wait";
    for how in ["stop", "drop"] {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (mut server, _) = RemoteServer::start(&master, tree, None, None, Some(tx))
            .await
            .unwrap();
        assert_eq!(
            tokio::time::timeout(WAIT, rx.recv()).await.unwrap(),
            Some(OutputLine::Stdout("started".into()))
        );
        let pgid = server.remote_pgid().unwrap();
        let deadline = Instant::now() + WAIT;
        while group_members(pgid).len() < 5 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            group_members(pgid).len() >= 5,
            "{how}: {:?}",
            group_members(pgid)
        );
        match how {
            "stop" => server.stop(Some(&master)).await,
            _ => drop(server),
        }
        assert_eq!(
            wait_group_gone(pgid, WAIT),
            Vec::<u32>::new(),
            "{how}: orphans left"
        );
    }
    master.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_master_ends_the_session_with_a_clear_error() {
    let sshd = Sshd::start();
    let prompter = Scripted::new(vec![]);
    let token = Token::generate();
    let launch = SshLaunch {
        target: target(
            &sshd,
            &sshd.known_hosts(),
            "publickey",
            Some(&sshd.plain_key()),
        ),
        options: options(&prompter),
        tunnel: Some(Tunnel::Local {
            local_port: 0,
            host: "127.0.0.1".into(),
            remote_port: 0,
        }),
        ready_timeout: Some(WAIT),
        pattern: None,
    };
    let secrets = Secrets {
        token,
        client_cert: None,
    };
    let server = demo_server();
    let mut session = launch
        .start(
            |_| remote_command(&[server, "--server-port".into(), "0".into()], &[], None),
            Some(&secrets),
            None,
        )
        .await
        .unwrap();
    let pgid = session.remote_pgid().unwrap();
    let local = session.local_address().unwrap();
    let master_pid = session.master().unwrap().pid().unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &master_pid.to_string()])
        .status()
        .unwrap();
    let err = tokio::time::timeout(WAIT, session.wait())
        .await
        .expect("the session notices within the deadline")
        .unwrap_err();
    assert!(matches!(err, SshError::ConnectionLost { .. }), "{err}");
    assert!(err.to_string().contains("forwards closed"), "{err}");
    // The forward is gone, and sshd ended the remote group when the connection closed.
    assert!(tokio::net::TcpStream::connect(local).await.is_err());
    assert_eq!(wait_group_gone(pgid, WAIT), Vec::<u32>::new());
    session.close().await;
}

/// A plan made from a TOML profile (mechanism `ssh` or `ssh-script`), its typed ssh part
/// run by [`SshLaunch`]: the profile's host, user, port, identity file,
/// options, workdir and remote environment all reach the remote side.
fn ssh_plan(sshd: &Sshd, startup: &str) -> pv_launch::Plan {
    let mut options = String::new();
    for a in sshd.client_args(&sshd.known_hosts(), "publickey") {
        options.push_str(&format!("{a:?}, "));
    }
    let text = format!(
        "[[server]]\nname = \"remote\"\nresource = \"cs://127.0.0.1:11111\"\n\
         [server.startup]\n{startup}\n\
         [server.startup.ssh]\nhost = \"127.0.0.1\"\nuser = \"{TEST_USER}\"\nport = {port}\n\
         identity_file = \"{key}\"\noptions = [{options}]\nworkdir = \"/tmp\"\n\
         env = {{ PV_META = \"'a b' ; $(touch /tmp/pv-ssh-plan-meta) \\\"q\\\"\" }}\n",
        port = sshd.port(),
        key = sshd.plain_key().display(),
    );
    let p = pv_launch::profile::toml::load_str(Path::new("ssh.toml"), &text).unwrap();
    pv_launch::Plan::resolve(
        &p.servers[0],
        &pv_launch::LaunchContext::fixed(),
        &pv_launch::NonInteractive,
    )
    .unwrap()
}

fn process_plan(plan: &pv_launch::Plan) -> &pv_launch::plan::ProcessPlan {
    match plan.launch() {
        pv_launch::plan::Launch::Process(p) => p,
        other => panic!("not a process plan: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_start_servers_over_ssh_directly_and_through_a_script() {
    let sshd = Sshd::start();
    // The "remote" script: checks the workdir and the exported variable, then runs the
    // demo server.
    let script = sshd.dir().join("start.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$(pwd)\" = /tmp ] || exit 3\n\
             [ \"$PV_META\" = \"'a b' ; \\$(touch /tmp/pv-ssh-plan-meta) \\\"q\\\"\" ] || exit 4\n\
             exec {} --server-port 0\n",
            demo_server()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let direct = format!(
        "mechanism = \"ssh\"\nargv = [{:?}, \"--server-port\", \"0\"]",
        demo_server()
    );
    let through_script = format!(
        "mechanism = \"ssh-script\"\nscript = {:?}",
        script.display().to_string()
    );
    for (startup, tunnel) in [
        (direct, None),
        (
            through_script,
            Some(Tunnel::Local {
                local_port: 0,
                host: "127.0.0.1".into(),
                remote_port: 0,
            }),
        ),
    ] {
        let plan = ssh_plan(&sshd, &startup);
        let ssh = process_plan(&plan).ssh().expect("an ssh plan");
        let (target, command) = (ssh.target.clone(), ssh.command());
        assert_eq!(target.host(), "127.0.0.1");
        assert_eq!(target.user(), Some(TEST_USER));
        let prompter = Scripted::new(vec![]);
        let launch = SshLaunch {
            target,
            options: options(&prompter),
            tunnel: tunnel.clone(),
            ready_timeout: Some(WAIT),
            pattern: None,
        };
        let token = Token::generate();
        let secrets = Secrets {
            token: token.clone(),
            client_cert: None,
        };
        let session = launch
            .start(|_| command, Some(&secrets), None)
            .await
            .unwrap_or_else(|e| panic!("{startup}: {e}"));
        // Without a tunnel the client dials the server's own port (same machine here).
        let port = match tunnel {
            None => session.ready().unwrap().port,
            _ => session.local_address().unwrap().port(),
        };
        let m = ConnectionManager::new(
            ConnectionMode::Single,
            ConnectionConfig::new(NativeHandshake::new(token)),
        );
        let mut conn = m
            .connect_to_remote(
                "127.0.0.1",
                port,
                RetryPolicy::new(ConnectTimeout::Within(WAIT)),
                |_, _, _| {},
            )
            .await
            .unwrap();
        echo(&mut conn, startup.as_bytes(), WAIT).await;
        let pgid = session.remote_pgid().unwrap();
        session.close().await;
        assert_eq!(wait_group_gone(pgid, WAIT), Vec::<u32>::new());
    }
    assert!(!Path::new("/tmp/pv-ssh-plan-meta").exists());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `startup::ssh::start`, the ssh part of the launcher's start step: a profile with ssh
/// port forwarding (fixed ports, as ParaView's `<PortForwarding>` has them), forward and
/// reverse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_plan_runs_profiles_with_port_forwarding_both_ways() {
    let sshd = Sshd::start();
    for reverse in [false, true] {
        let (server_port, local_port) = (free_port(), free_port());
        let argv = if reverse {
            format!(
                "[{:?}, \"--reverse-connection\", \"--client-host\", \"127.0.0.1\", \"--server-port\", \"${{PV_SERVER_PORT}}\"]",
                demo_server()
            )
        } else {
            format!(
                "[{:?}, \"--server-port\", \"${{PV_SERVER_PORT}}\"]",
                demo_server()
            )
        };
        let mut ssh_options = String::new();
        for a in sshd.client_args(&sshd.known_hosts(), "publickey") {
            ssh_options.push_str(&format!("{a:?}, "));
        }
        let text = format!(
            "[[server]]\nname = \"pf\"\nresource = \"{scheme}://127.0.0.1:{server_port}\"\n\
             [server.startup]\nmechanism = \"ssh\"\nargv = {argv}\n\
             [server.startup.ssh]\nhost = \"127.0.0.1\"\nuser = \"{TEST_USER}\"\nport = {port}\n\
             identity_file = \"{key}\"\noptions = [{ssh_options}]\n\
             port_forwarding = {{ local_port = {local_port} }}\n",
            scheme = if reverse { "csrc" } else { "cs" },
            port = sshd.port(),
            key = sshd.plain_key().display(),
        );
        let p = pv_launch::profile::toml::load_str(Path::new("pf.toml"), &text).unwrap();
        let plan = pv_launch::Plan::resolve(
            &p.servers[0],
            &pv_launch::LaunchContext::fixed(),
            &pv_launch::NonInteractive,
        )
        .unwrap();
        let ssh = process_plan(&plan).ssh().expect("an ssh plan");
        let token = Token::generate();
        let secrets = Secrets {
            token: token.clone(),
            client_cert: None,
        };
        let m = ConnectionManager::new(
            ConnectionMode::Single,
            ConnectionConfig::new(NativeHandshake::new(token)),
        );
        let prompter = Scripted::new(vec![]);
        let listener = if reverse {
            Some(Listener::bind(loopback(local_port), None).await.unwrap())
        } else {
            None
        };
        let (events, _events) = mpsc::unbounded_channel();
        let expect = pv_launch::startup::Expect {
            secrets: Some(&secrets),
            ready_timeout: WAIT,
            pattern: None,
            delay: &pv_launch::profile::Delay::None,
        };
        let (session, detached) = pv_launch::startup::ssh::start(
            ssh,
            &expect,
            &options(&prompter),
            &[],
            &events,
            Instant::now(),
        )
        .await
        .unwrap();
        assert!(!detached);
        let mut conn = match listener {
            Some(l) => {
                assert_eq!(session.remote_port(), Some(server_port));
                m.wait_for_server(l, Some(WAIT)).await.unwrap()
            }
            None => {
                assert_eq!(session.local_address().unwrap().port(), local_port);
                m.connect_to_remote(
                    "127.0.0.1",
                    local_port,
                    RetryPolicy::new(ConnectTimeout::Within(WAIT)),
                    |_, _, _| {},
                )
                .await
                .unwrap()
            }
        };
        echo(&mut conn, b"planned tunnel", WAIT).await;
        let pgid = session.remote_pgid().unwrap();
        session.close().await;
        assert_eq!(wait_group_gone(pgid, WAIT), Vec::<u32>::new());
    }
}

/// Answers nothing until the test ends: a user who walked away from the prompt.
struct Silent(Mutex<std::sync::mpsc::Receiver<()>>);

impl Prompter for Silent {
    fn ask(
        &self,
        _: &PromptRequest<'_>,
    ) -> Result<pv_launch::prompt::Zeroizing<String>, PromptError> {
        let _ = self.0.lock().unwrap().recv_timeout(Duration::from_secs(60));
        Err(PromptError::Cancelled)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_prompt_times_out_and_leaves_no_ssh_behind() {
    let sshd = Sshd::start();
    let (release, rx) = std::sync::mpsc::channel();
    let t = target(&sshd, &sshd.known_hosts(), "password", None);
    let options = SshOptions {
        askpass: AskpassProgram::Path(workspace_bin("pv-askpass")),
        prompter: Some(Arc::new(Silent(Mutex::new(rx)))),
        auth_timeout: Duration::from_secs(2),
        ..SshOptions::default()
    };
    let started = Instant::now();
    let err = Master::connect(&t, &options).await.unwrap_err();
    assert!(matches!(err, SshError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < WAIT);
    // The ssh that was waiting for the answer (and its pv-askpass, in its process
    // group) is gone: no process names this sshd's known_hosts any more.
    let mark = sshd.known_hosts().display().to_string();
    let left: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&mark))
                && running(*p)
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
    drop(release);
}
