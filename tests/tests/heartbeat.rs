//! The heartbeat detects a dead peer: a connection whose network silently disappears (no
//! FIN, no RST: the loopback interface of a private network namespace is taken down) fails
//! with "timed out" once the keepalive probes go unanswered, instead of hanging forever.
//!
//! Needs root (to make a network namespace), as CI runs; elsewhere it says SKIPPED.

use std::process::Stdio;
use std::time::Duration;

use pv_e2e::workspace_bin;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn a_silent_peer_is_declared_dead_by_the_heartbeat() {
    let probe = std::process::Command::new("unshare")
        .args(["-n", "true"])
        .stderr(Stdio::null())
        .status();
    if !probe.map(|s| s.success()).unwrap_or(false) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no network namespace can be made here (needs root and util-linux)"
        );
        eprintln!("SKIPPED: cannot create a network namespace here (needs root and util-linux)");
        return;
    }
    let bin = workspace_bin("heartbeat-pair");
    let mut child = Command::new("unshare")
        .args(["-n", "--", "sh", "-c", "ip link set lo up && exec \"$0\""])
        .arg(&bin)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the pair connects")
        .unwrap();
    assert_eq!(first.as_deref(), Some("connected"));
    // Cut the namespace's network without telling either end.
    let cut = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-n", "ip", "link", "set", "lo", "down"])
        .status()
        .unwrap();
    assert!(cut.success());
    let verdict = tokio::time::timeout(Duration::from_secs(40), lines.next_line())
        .await
        .expect("a verdict within 40 s")
        .unwrap()
        .unwrap_or_default();
    assert!(
        verdict.starts_with("dead after") && verdict.contains("timed out"),
        "{verdict}"
    );
}
