//! A [`ServerHandle`]'s signals reach its own process group and never another one that
//! got the group's id after it ended.
//!
//! Pid reuse is made to happen on purpose: the scenarios that need it run in a private pid
//! namespace (`unshare --user --map-root-user --pid --fork --mount-proc`, no root needed
//! where unprivileged user namespaces are allowed), where this test binary is the only
//! thing that starts processes and may set the namespace's last pid
//! (`/proc/sys/kernel/ns_last_pid`), so the next process it starts gets exactly the pid
//! that just went free. Where namespaces are not allowed these tests print `SKIPPED`.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{ServerHandle, Started, start_local, wait_for_group_stops};
use crate::plan::LocalCommand;
use crate::profile::Delay;

/// Set in the environment of this test binary when it runs inside the namespace.
const IN_NAMESPACE: &str = "PV_LAUNCH_TEST_IN_PID_NAMESPACE";

/// How long any wait here may take.
const DEADLINE: Duration = Duration::from_secs(20);

/// Poll `cond` every 10 ms until it holds; panics after [`DEADLINE`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait (within [`DEADLINE`]) for a child of this test to exit.
fn reap(child: &mut Child) -> std::process::ExitStatus {
    let mut status = None;
    wait_until("a child to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// `unshare` options for a private pid namespace, as an unprivileged user may make one.
const UNSHARE: [&str; 5] = [
    "--user",
    "--map-root-user",
    "--pid",
    "--fork",
    "--mount-proc",
];

/// Whether `unshare` can make the namespace here.
fn namespaces_allowed() -> bool {
    Command::new("unshare")
        .args(UNSHARE)
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run the test `name` (this module's) again inside a private pid namespace and check
/// that it passed there. `true` when the caller is that run and does the work; `false`
/// when it is the outer run, done (or skipped).
fn in_pid_namespace(name: &str) -> bool {
    if std::env::var_os(IN_NAMESPACE).is_some() {
        return true;
    }
    if !namespaces_allowed() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {name} cannot have a private pid namespace (unshare --user --pid)"
        );
        eprintln!("SKIPPED: {name} needs a private pid namespace (unshare --user --pid)");
        return false;
    }
    let test = format!(
        "{}::{name}",
        module_path!().split_once("::").map_or("", |(_, m)| m)
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    // Both streams appending to one file, so neither overwrites the other.
    let append = || {
        std::fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .unwrap()
    };
    let mut inner = Command::new("unshare")
        .args(UNSHARE)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", &test, "--nocapture", "--test-threads=1"])
        .env(IN_NAMESPACE, "1")
        .stdin(Stdio::null())
        .stdout(append())
        .stderr(append())
        .spawn()
        .unwrap();
    let end = Instant::now() + 2 * DEADLINE;
    let mut ended = false;
    while !ended && Instant::now() < end {
        ended = inner.try_wait().unwrap().is_some();
        std::thread::sleep(Duration::from_millis(20));
    }
    if !ended {
        let _ = inner.kill();
    }
    let status = inner.wait().unwrap();
    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(
        ended && status.success(),
        "{test} in the pid namespace (ended in time: {ended}): {status:?}\n{output}"
    );
    assert!(output.contains("1 passed"), "{test} did not run:\n{output}");
    false
}

fn plan(argv: &[&str]) -> LocalCommand {
    LocalCommand {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        env: vec![],
        workdir: None,
    }
}

async fn start(argv: &[&str]) -> ServerHandle {
    let (events, _) = tokio::sync::mpsc::unbounded_channel();
    let expect = super::Expect {
        secrets: None,
        ready_timeout: DEADLINE,
        pattern: None,
        delay: &Delay::None,
    };
    match start_local(&plan(argv), &expect, &events).await {
        Ok(Started::Running { handle, .. }) => handle,
        other => panic!("{argv:?} did not start: {other:?}"),
    }
}

/// A `sleep 60` of this test's, leading a process group of its own, that has exactly the
/// pid `pid` (free now): another user's program that happens to get the id of a group
/// pv-launch started, once that group has ended.
fn stranger_with_pid(pid: u32) -> Child {
    for _ in 0..50 {
        // The next pid handed out is the last one plus one.
        std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1)).unwrap();
        let mut child = Command::new("sleep")
            .arg("60")
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        if child.id() == pid {
            return child;
        }
        // A thread of this process took the pid first: try again.
        let _ = child.kill();
        reap(&mut child);
    }
    panic!("could not start a process with pid {pid}");
}

/// Nothing pv-launch did signalled `stranger`: it dies of the SIGUSR1 sent now, not of an
/// earlier SIGTERM or SIGKILL. (A fatal signal decides the exit status when it is sent,
/// so one that went out earlier would show even if the process had not died yet.)
fn assert_never_signalled(mut stranger: Child) {
    kill(Pid::from_raw(stranger.id() as i32), Signal::SIGUSR1).unwrap();
    let status = reap(&mut stranger);
    assert_eq!(
        status.signal(),
        Some(Signal::SIGUSR1 as i32),
        "the other process group was signalled: {status:?}"
    );
}

/// Every way the handle can signal: `terminate`, `signal`, `cleanup`, and its drop
/// (waited for as the CLI waits).
async fn signal_every_way(mut handle: ServerHandle) {
    assert_eq!(handle.terminate(), Err(Errno::ESRCH));
    assert_eq!(handle.signal(Signal::SIGKILL), Err(Errno::ESRCH));
    handle.cleanup().await;
    drop(handle);
    wait_for_group_stops();
}

/// The live processes of group `pgid`.
fn group_of(pgid: u32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let fields: Vec<&str> = stat
                    .rsplit_once(')')
                    .map_or("", |(_, r)| r)
                    .split_whitespace()
                    .collect();
                fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str())
            })
        })
        .collect()
}

/// A `sleep` in the process group `pgid` (started by the test, which reaps it).
fn member_of(pgid: u32) -> std::process::Child {
    Command::new("sleep")
        .arg("60")
        .process_group(pgid as i32)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_group_that_ended_alone_is_not_signalled_once_its_id_is_reused() {
    if !in_pid_namespace("a_group_that_ended_alone_is_not_signalled_once_its_id_is_reused") {
        return;
    }
    let mut handle = start(&["sh", "-c", "exit 0"]).await;
    let pid = handle.pid();
    assert!(handle.wait().await.success());
    // The leader is reaped and its group empty: its pid is free, and another process
    // group takes it.
    let stranger = stranger_with_pid(pid);
    signal_every_way(handle).await;
    assert_never_signalled(stranger);
}

#[tokio::test]
async fn a_group_whose_members_outlived_the_leader_is_not_signalled_once_its_id_is_reused() {
    if !in_pid_namespace(
        "a_group_whose_members_outlived_the_leader_is_not_signalled_once_its_id_is_reused",
    ) {
        return;
    }
    let mut handle = start(&["sleep", "60"]).await;
    let pid = handle.pid();
    // A member of the group (started by this test, which reaps it below).
    let mut member = member_of(pid);
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    // Reaped through `poll` this time.
    wait_until("the leader to be reaped", || handle.poll().is_some());
    // The member keeps the group, and its id, ours: it can still be signalled.
    assert_eq!(handle.signal(Signal::SIGCONT), Ok(()));
    // Then the member ends without the handle looking. The handle's watcher is still a
    // member, so the id cannot go to another group yet (nothing but the watcher is left).
    member.kill().unwrap();
    reap(&mut member);
    let left = group_of(pid);
    assert_eq!(left.len(), 1, "only the watcher holds the group: {left:?}");
    // The handle looks, finds only its watcher, forgets the group and releases the
    // watcher; then the id goes to another group.
    assert_eq!(handle.signal(Signal::SIGCONT), Err(Errno::ESRCH));
    assert_eq!(group_of(pid), Vec::<i32>::new());
    let stranger = stranger_with_pid(pid);
    signal_every_way(handle).await;
    assert_never_signalled(stranger);
}

#[tokio::test]
async fn members_that_outlive_the_leader_are_still_stopped() {
    let mut handle = start(&["sleep", "60"]).await;
    let pid = handle.pid();
    let mut member = member_of(pid);
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    assert_eq!(handle.wait().await.signal(), Some(Signal::SIGKILL as i32));
    // The leader is reaped, but its group lives on in the member: cleanup stops it.
    handle.cleanup().await;
    let status = reap(&mut member);
    assert_eq!(status.signal(), Some(Signal::SIGTERM as i32), "{status:?}");
    // And the group is forgotten: nothing more is sent.
    assert_eq!(handle.terminate(), Err(Errno::ESRCH));
}
