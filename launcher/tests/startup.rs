//! Local startup with real processes: the launch channel (secrets in on stdin, ready line
//! out on stdout), ParaView's delay rules, stderr in errors, and that every process of
//! the group is gone afterwards (checked in /proc, not by trusting a kill call).

use std::path::Path;
use std::time::{Duration, Instant};

use pv_launch::events::Event;
use pv_launch::events::EventSender;
use pv_launch::plan::LocalCommand;
use pv_launch::profile::Delay;
use pv_launch::startup::{Expect, StartError, Started, start_local};
use pv_transport::Token;
use pv_transport::launch::Secrets;

fn sh(script: &str, delay: Delay) -> (LocalCommand, Delay) {
    let command = LocalCommand {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![],
        workdir: None,
    };
    (command, delay)
}

/// [`start_local`] of a command and its delay.
async fn start_sh(
    (command, delay): &(LocalCommand, Delay),
    secrets: Option<&Secrets>,
    ready_timeout: Duration,
    events: &EventSender,
) -> Result<Started, StartError> {
    let expect = Expect {
        secrets,
        ready_timeout,
        pattern: None,
        delay,
    };
    start_local(command, &expect, events).await
}

/// Whether `pid` is a live process (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Wait until `pid` is gone, up to a deadline.
fn gone_within(pid: u32, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn read_pid(path: &Path) -> u32 {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(t) = std::fs::read_to_string(path) {
            if let Ok(p) = t.trim().parse() {
                return p;
            }
        }
        assert!(Instant::now() < end, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn secrets_go_in_on_stdin_and_the_ready_line_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("secrets");
    let child_pid = dir.path().join("child.pid");
    let script = format!(
        "read line; printf '%s' \"$line\" > {got}; sleep 60 & echo $! > {pidf}; echo 'starting'; echo 'pv-launch-ready v1 port=4242 handshake=native'; wait",
        got = got.display(),
        pidf = child_pid.display()
    );
    let token = Token::generate();
    let secrets = Secrets {
        token: token.clone(),
        client_cert: None,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = start_sh(
        &sh(&script, Delay::None),
        Some(&secrets),
        Duration::from_secs(10),
        &tx,
    )
    .await
    .unwrap();
    let Started::Running { mut handle, ready } = started else {
        panic!("detached")
    };
    assert_eq!(ready.unwrap().port, 4242);
    let line = std::fs::read_to_string(&got).unwrap();
    assert_eq!(
        line,
        format!("pv-launch-secrets v1 token={}", token.to_hex())
    );
    // The token is not on the command line of any process of the group.
    let leader = handle.pid();
    let grandchild = read_pid(&child_pid);
    for pid in [leader, grandchild] {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(!String::from_utf8_lossy(&cmdline).contains(&token.to_hex()));
    }
    handle.cleanup().await;
    assert!(
        gone_within(leader, Duration::from_secs(5)),
        "leader still alive"
    );
    assert!(
        gone_within(grandchild, Duration::from_secs(5)),
        "grandchild still alive"
    );
    let mut saw_ready = false;
    let mut saw_stdout = false;
    while let Ok(e) = rx.try_recv() {
        saw_ready |= matches!(e, Event::Ready { port: 4242, .. });
        saw_stdout |= matches!(&e, Event::Stdout { line } if line == "starting");
    }
    assert!(saw_ready && saw_stdout);
}

#[tokio::test]
async fn wait_for_exit_zero_means_the_server_detached() {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let started = start_sh(
        &sh("echo submitted; exit 0", Delay::UntilExit),
        None,
        Duration::from_secs(5),
        &tx,
    )
    .await
    .unwrap();
    assert!(matches!(started, Started::Detached));
}

#[tokio::test]
async fn a_failing_script_reports_its_stderr() {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let err = start_sh(
        &sh(
            "echo one >&2; echo 'queue full' >&2; exit 3",
            Delay::UntilExit,
        ),
        None,
        Duration::from_secs(5),
        &tx,
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StartError::Exited { .. }), "{text}");
    assert!(
        text.contains("exit code 3") && text.contains("queue full") && text.contains("one"),
        "{text}"
    );
}

#[tokio::test]
async fn a_server_that_dies_before_its_ready_line_fails_with_its_stderr() {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let secrets = Secrets {
        token: Token::generate(),
        client_cert: None,
    };
    let err = start_sh(
        &sh("echo 'port in use' >&2; exit 1", Delay::None),
        Some(&secrets),
        Duration::from_secs(10),
        &tx,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("port in use"), "{err}");
}

#[tokio::test]
async fn no_ready_line_times_out_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let pidf = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 60", pidf.display());
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let secrets = Secrets {
        token: Token::generate(),
        client_cert: None,
    };
    let begun = Instant::now();
    let err = start_sh(
        &sh(&script, Delay::None),
        Some(&secrets),
        Duration::from_millis(500),
        &tx,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StartError::NoReadyLine { .. }), "{err}");
    assert!(begun.elapsed() < Duration::from_secs(5));
    assert!(gone_within(read_pid(&pidf), Duration::from_secs(5)));
}

#[tokio::test]
async fn dropping_the_handle_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidf = dir.path().join("pid");
    let script = format!("sleep 60 & echo $! > {}; wait", pidf.display());
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let started = start_sh(&sh(&script, Delay::None), None, Duration::from_secs(5), &tx)
        .await
        .unwrap();
    let Started::Running { handle, .. } = started else {
        panic!("detached")
    };
    let grandchild = read_pid(&pidf);
    assert!(alive(grandchild));
    drop(handle);
    assert!(gone_within(grandchild, Duration::from_secs(5)));
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_error() {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let mut plan = sh("", Delay::None);
    plan.0.argv = vec!["/nonexistent/pv-server".into()];
    let err = start_sh(&plan, None, Duration::from_secs(1), &tx)
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::Spawn { .. }), "{err}");
}

/// The SIGTERM grace is the group's: a helper in the server's group that takes a second
/// to shut down finishes, even though the leader exits at once on SIGTERM.
#[tokio::test]
async fn cleanup_gives_the_whole_group_its_grace_not_only_the_leader() {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("helper.log");
    let script = format!(
        "( trap 'echo got TERM >> {log}; sleep 1; echo done >> {log}; exit 0' TERM; \
           echo up >> {log}; while :; do sleep 0.05; done ) & \
         trap 'exit 0' TERM; while [ ! -s {log} ]; do sleep 0.01; done; \
         echo started; while :; do sleep 0.05; done",
        log = log.display()
    );
    let started = start_sh(&sh(&script, Delay::None), None, Duration::from_secs(5), &tx)
        .await
        .unwrap();
    let Started::Running { mut handle, .. } = started else {
        panic!("it runs")
    };
    // The helper is up before the cleanup begins.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("up")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the helper never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.cleanup().await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("got TERM") && text.contains("done"),
        "the helper got SIGTERM and finished its shutdown: {text:?}"
    );
}
