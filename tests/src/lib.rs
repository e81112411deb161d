//! Shared fixtures for pv-launch's end-to-end tests: locating the workspace's built
//! binaries and starting them as real processes, with deadlines and cleanup on drop.
//!
//! The tests themselves live in `tests/tests/*.rs`; each starts the real parts it needs.
//! They run the binaries cargo built for the workspace (`cargo build --workspace --bins`,
//! which `ci/test` does first).
#![forbid(unsafe_code)]

pub mod prompts;
pub mod sshd;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use pv_transport::handshake::native::NativeHandshake;
use pv_transport::launch::{ReadyLine, Secrets};
use pv_transport::{
    ConnectError, ConnectTimeout, Connection, ConnectionConfig, ConnectionManager, ConnectionMode,
    RetryPolicy, Token,
};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, Lines,
};
use tokio::process::{Child, ChildStdout, Command};

/// How long any fixture waits for a process to become ready.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);

/// The directory cargo puts the workspace's binaries in for this test build.
pub fn target_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // Test binaries run from target/<profile>/deps/<name>-<hash>.
    exe.parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .expect("test binary lives in target/<profile>/deps")
}

/// Path of a binary built by this workspace (e.g. `pv-demo-server`); panics with the
/// command to run when it has not been built.
pub fn workspace_bin(name: &str) -> PathBuf {
    let path = target_bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (ci/test does)",
        path.display()
    );
    path
}

/// A running `pv-demo-server`, killed when dropped.
pub struct DemoServer {
    /// The process.
    pub child: Child,
    /// What it announced on the launch channel.
    pub ready: ReadyLine,
    /// The rest of its stdout.
    pub stdout: Lines<BufReader<ChildStdout>>,
}

impl DemoServer {
    /// Start `pv-demo-server ARGS`, hand it `token` on stdin (the launch channel) and wait
    /// for its ready line.
    pub async fn start(args: &[&str], token: &Token) -> DemoServer {
        let mut child = Command::new(workspace_bin("pv-demo-server"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start pv-demo-server");
        let mut stdin = child.stdin.take().unwrap();
        let line = Secrets {
            token: token.clone(),
            client_cert: None,
        }
        .to_line();
        stdin.write_all(line.as_bytes()).await.unwrap();
        drop(stdin);
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(READY_DEADLINE, async {
            loop {
                let line = stdout
                    .next_line()
                    .await
                    .unwrap()
                    .expect("pv-demo-server closed stdout before its ready line");
                if let Some(r) = ReadyLine::parse(&line) {
                    return r.unwrap();
                }
            }
        })
        .await
        .expect("ready line within the deadline");
        DemoServer {
            child,
            ready,
            stdout,
        }
    }

    /// Wait for the process to exit, within `deadline`; its exit code.
    pub async fn exit_within(&mut self, deadline: Duration) -> Option<i32> {
        tokio::time::timeout(deadline, self.child.wait())
            .await
            .expect("the server exits within the deadline")
            .unwrap()
            .code()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// Write `msg` on `conn` and check that the same bytes come back within `deadline` (the
/// demo server echoes what it reads).
pub async fn echo(
    conn: &mut (impl AsyncRead + AsyncWrite + Unpin),
    msg: &[u8],
    deadline: Duration,
) {
    conn.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(deadline, conn.read_exact(&mut back))
        .await
        .expect("the echo within the deadline")
        .unwrap();
    assert_eq!(back, msg);
}

/// One more client of a server on 127.0.0.1:`port`: one dial, the native handshake with
/// `token` within `handshake_deadline`.
pub async fn native_client(
    token: &Token,
    port: u16,
    handshake_deadline: Duration,
) -> Result<Connection, ConnectError> {
    ConnectionManager::new(
        ConnectionMode::Multiple,
        ConnectionConfig::new(NativeHandshake::new(token.clone()))
            .with_deadline(handshake_deadline),
    )
    .connect_to_remote(
        "127.0.0.1",
        port,
        RetryPolicy::new(ConnectTimeout::Once),
        |_, _, _| {},
    )
    .await
}

/// The pid of every process (listed in /proc; some may be gone by the time they are read).
pub fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// Whether process `pid` runs (a zombie waiting to be reaped does not count).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

/// Live processes (not this one) whose command line contains `marker`: pid and command
/// line (arguments joined by spaces).
pub fn processes_with(marker: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    pids()
        .into_iter()
        .filter(|pid| *pid != me && running(*pid))
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.contains(marker).then_some((pid, cmd))
        })
        .collect()
}

/// Wait up to `deadline` for process `pid` to be gone; whether it went.
pub fn wait_not_running(pid: u32, deadline: Duration) -> bool {
    let end = std::time::Instant::now() + deadline;
    while running(pid) {
        if std::time::Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Whether every one of `parts` (paths of programs) is installed, and, with `root`,
/// whether the test runs as root. A missing part is a skip, said on stderr, except under
/// `CI=true`, where it fails the test.
pub fn have_parts(parts: &[&str], root: bool) -> bool {
    let mut missing: Vec<String> = parts
        .iter()
        .filter(|p| !std::path::Path::new(p).exists())
        .map(|p| p.to_string())
        .collect();
    if root && pv_transport::socket_table::effective_uid().unwrap_or(u32::MAX) != 0 {
        missing.push("root".into());
    }
    if missing.is_empty() {
        return true;
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "missing under CI: {missing:?}"
    );
    eprintln!("SKIPPED: missing {missing:?}");
    false
}
