//! The ssh control master pv-launch starts and owns for one host and one launch.
//!
//! Why our own master and not the `openssh` crate's `connect`: that one always passes
//! `BatchMode=yes`, which turns off askpass too, so password and passphrase logins could
//! never work. We start `ssh -M -S <ctl> -f -N` ourselves with `pv-askpass` as
//! `SSH_ASKPASS`; `-f` makes ssh go to the background once authenticated, so the first
//! process's exit status is the authentication's outcome. Every later command is a mux
//! client of that master (`ssh -S <ctl>`), which never authenticates again: the clients
//! run with `-F /dev/null` (the user's config cannot add a tty, a `RemoteCommand` or
//! a jump host to them) and `ProxyCommand=false`, so a client whose master is gone
//! fails at once instead of opening a second, unauthenticated connection.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::askpass_bridge::AskpassBridge;
use super::{SshError, SshTarget};
use crate::plan::ssh::check_ssh_name;
use crate::prompt::Prompter;

/// `ServerAliveInterval` (seconds) and `ServerAliveCountMax` used when not set: a dead
/// connection is noticed within about 45 s.
pub const DEFAULT_SERVER_ALIVE: (u32, u32) = (15, 3);

/// The longest control socket path accepted: ssh appends a 17-character suffix while
/// binding, and a Unix socket path holds at most 107 bytes; 60 leaves room for both.
const MAX_CONTROL_PATH: usize = 60;

/// Which askpass helper ssh runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AskpassProgram {
    /// `pv-askpass` beside the current executable, else on `PATH` ([`find_askpass`]).
    #[default]
    Auto,
    /// This program.
    Path(PathBuf),
}

/// How the master is started.
#[derive(Clone)]
pub struct MasterOptions {
    /// The askpass helper.
    pub askpass: AskpassProgram,
    /// Who answers ssh's prompts. `None`: the helper asks on its own (dialog or
    /// terminal); `Some`: every prompt comes to this prompter over the bridge socket.
    pub prompter: Option<Arc<dyn Prompter + Send + Sync>>,
    /// How long connecting and authenticating may take, prompts included.
    pub auth_timeout: Duration,
    /// ssh's `ConnectTimeout` (TCP connect and banner exchange), whole seconds.
    pub connect_timeout: Duration,
    /// `ServerAliveInterval` (seconds) and `ServerAliveCountMax`.
    pub server_alive: (u32, u32),
    /// How long each control command (`-O check`, `-O forward`, `-O exit`) may take.
    pub control_timeout: Duration,
}

impl Default for MasterOptions {
    fn default() -> Self {
        MasterOptions {
            askpass: AskpassProgram::Auto,
            prompter: None,
            auth_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(20),
            server_alive: DEFAULT_SERVER_ALIVE,
            control_timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for MasterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterOptions")
            .field("askpass", &self.askpass)
            .field("prompter", &self.prompter.is_some())
            .field("auth_timeout", &self.auth_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("server_alive", &self.server_alive)
            .field("control_timeout", &self.control_timeout)
            .finish()
    }
}

/// `pv-askpass` beside the current executable, else the first one on `PATH`.
pub fn find_askpass() -> Result<PathBuf, SshError> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("pv-askpass")));
    if let Some(p) = beside.as_ref().filter(|p| p.is_file()) {
        return Ok(p.clone());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("pv-askpass");
            let executable = std::fs::metadata(&p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false);
            if executable && p.is_absolute() {
                return Ok(p);
            }
        }
    }
    Err(SshError::AskpassMissing {
        beside: beside
            .and_then(|p| p.parent().map(|d| d.display().to_string()))
            .unwrap_or_else(|| "the current executable".to_string()),
    })
}

/// A private, short-named directory for the control socket, ssh's log and the askpass
/// socket: `$TMPDIR` when its path is short, else `/tmp`.
fn private_dir() -> Result<tempfile::TempDir, SshError> {
    let tmp = std::env::temp_dir();
    let base = if tmp.as_os_str().len() <= 30 {
        tmp
    } else {
        PathBuf::from("/tmp")
    };
    let dir = tempfile::Builder::new()
        .prefix("pvl-")
        .tempdir_in(&base)
        .map_err(SshError::io(format!(
            "create a private directory in {}",
            base.display()
        )))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .map_err(SshError::io("make the ssh directory private"))?;
    Ok(dir)
}

/// Whether process `pid` exists and is not a zombie. The daemonized master is not our
/// child: once dead it may stay a zombie until whoever adopted it reaps it.
fn running(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => kill(pid, None).is_ok() && !Path::new("/proc/self").exists(),
    }
}

/// An authenticated ssh connection to one host, shared by every command of a launch
/// through its control socket. Dropping it stops the master (`-O exit`, then SIGKILL).
pub struct Master {
    target: SshTarget,
    dir: tempfile::TempDir,
    ctl: PathBuf,
    log: PathBuf,
    pid: Option<Pid>,
    control_timeout: Duration,
    connect_command: String,
    closed: bool,
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Master")
            .field("target", &self.target.display_name())
            .field("ctl", &self.ctl)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

fn lossy(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn shell_line(program: &str, args: &[String]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(crate::plan::ssh::sh_quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// An exit status in words.
pub(crate) fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "an unknown status".to_string(),
    }
}

impl Master {
    /// Start the master for `target` and wait (up to `options.auth_timeout`) until it is
    /// authenticated. Prompts go to the askpass helper, and through it to
    /// `options.prompter` when there is one. Authentication is tried once: a wrong
    /// password is an error, never a second attempt.
    pub async fn connect(target: &SshTarget, options: &MasterOptions) -> Result<Master, SshError> {
        let host = target.display_name();
        let dir = private_dir()?;
        let ctl = dir.path().join("c");
        let log = dir.path().join("log");
        if ctl.as_os_str().len() > MAX_CONTROL_PATH {
            return Err(SshError::Invalid(format!(
                "control socket path {} is longer than {MAX_CONTROL_PATH} bytes; set TMPDIR to a short directory",
                ctl.display()
            )));
        }
        let bridge = match (&options.prompter, target.batch_mode()) {
            (Some(p), false) => Some(AskpassBridge::start(dir.path(), Arc::clone(p))?),
            _ => None,
        };
        let askpass = if target.batch_mode() {
            None
        } else {
            Some(match &options.askpass {
                AskpassProgram::Auto => find_askpass()?,
                AskpassProgram::Path(p) => p.clone(),
            })
        };
        let (alive_interval, alive_count) = options.server_alive;
        let mut args: Vec<String> = vec![
            "-M".into(),
            "-S".into(),
            lossy(&ctl),
            "-f".into(),
            "-N".into(),
            "-T".into(),
            "-a".into(),
            "-x".into(),
            "-E".into(),
            lossy(&log),
        ];
        let batch = if target.batch_mode() { "yes" } else { "no" };
        for o in [
            "ControlMaster=yes".to_string(),
            "ControlPersist=yes".to_string(),
            format!("BatchMode={batch}"),
            "NumberOfPasswordPrompts=1".to_string(),
            "ExitOnForwardFailure=yes".to_string(),
            format!("ServerAliveInterval={alive_interval}"),
            format!("ServerAliveCountMax={alive_count}"),
            format!(
                "ConnectTimeout={}",
                options.connect_timeout.as_secs().max(1)
            ),
            "PermitLocalCommand=no".to_string(),
        ] {
            args.extend(["-o".to_string(), o]);
        }
        args.extend(target.args().iter().cloned());
        args.extend(["--".to_string(), target.host().to_string()]);
        let connect_command = shell_line(target.program(), &args);

        let mut command = tokio::process::Command::new(target.program());
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        command.env_remove(pv_askpass::bridge::SOCKET_ENV);
        if let Some(a) = &askpass {
            command
                .env("SSH_ASKPASS", a)
                .env("SSH_ASKPASS_REQUIRE", "force");
        }
        if let Some(b) = &bridge {
            command.env(pv_askpass::bridge::SOCKET_ENV, b.socket_path());
        }
        let mut child = command
            .spawn()
            .map_err(SshError::io(format!("cannot run {:?}", target.program())))?;
        let pgid = child.id().map(|p| Pid::from_raw(p as i32));
        let mut master = Master {
            target: target.clone(),
            dir,
            ctl,
            log,
            pid: None,
            control_timeout: options.control_timeout,
            connect_command,
            closed: false,
        };
        let status = match tokio::time::timeout(options.auth_timeout, child.wait()).await {
            Ok(status) => status.map_err(SshError::io("wait for ssh"))?,
            Err(_) => {
                if let Some(g) = pgid {
                    let _ = killpg(g, Signal::SIGKILL);
                }
                let _ = child.wait().await;
                master.closed = true;
                return Err(SshError::Timeout {
                    host,
                    what: "connecting and authenticating".to_string(),
                    waited: options.auth_timeout,
                    log_tail: master.log_tail(),
                });
            }
        };
        if !status.success() {
            // A helper still asking goes with the failed ssh. (Not on success: the
            // daemonized master may not have left this process group yet.)
            if let Some(g) = pgid {
                let _ = killpg(g, Signal::SIGKILL);
            }
            master.closed = true;
            if let Some(b) = &bridge {
                if let Some(prompt) = b.refused_host_key() {
                    return Err(SshError::HostKeyRefused { host, prompt });
                }
                if let Some(prompt) = b.cancelled_prompt() {
                    return Err(SshError::Cancelled { host, prompt });
                }
            }
            return Err(SshError::Connect {
                host,
                status: describe(status),
                command: master.connect_command.clone(),
                log_tail: master.log_tail(),
            });
        }
        drop(bridge);
        master.pid = master.check_pid().await.ok();
        if master.pid.is_none() {
            master.closed = true;
            return Err(SshError::Connect {
                host,
                status: "the control master did not answer `-O check`".to_string(),
                command: master.connect_command.clone(),
                log_tail: master.log_tail(),
            });
        }
        Ok(master)
    }

    /// The target this master is connected to.
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// The control socket.
    pub fn control_path(&self) -> &Path {
        &self.ctl
    }

    /// The master's process id.
    pub fn pid(&self) -> Option<u32> {
        self.pid.map(|p| p.as_raw() as u32)
    }

    /// The command line that started the master, for error messages and reproducing by
    /// hand (it never holds a secret).
    pub fn connect_command(&self) -> &str {
        &self.connect_command
    }

    /// Whether the master process is still there.
    pub fn is_alive(&self) -> bool {
        !self.closed && self.pid.is_some_and(running)
    }

    /// Whether the connection is gone: the process has ended, or its control socket no
    /// longer answers (a master being killed closes its socket before it is reaped).
    pub async fn is_gone(&self) -> bool {
        !self.is_alive() || self.check().await.is_err()
    }

    /// Whether the connection is gone, waiting up to `grace` for a dying master to
    /// finish going (used when a mux client just failed, exit status 255).
    pub async fn gone_within(&self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        loop {
            if self.is_gone().await {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of the master's log (`ssh -E`).
    pub fn log_tail(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines[lines.len().saturating_sub(10)..].to_vec()
    }

    /// The private directory holding the control socket and the log.
    pub fn private_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The argv of a mux client of this master, program first, before the destination:
    /// it cannot authenticate by itself nor read the user's ssh config.
    pub fn client_args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            self.target.program().to_string(),
            "-F".into(),
            "/dev/null".into(),
            "-S".into(),
            lossy(&self.ctl),
        ];
        for o in [
            "ControlMaster=no",
            "ProxyCommand=false",
            "BatchMode=yes",
            "LogLevel=ERROR",
        ] {
            a.extend(["-o".to_string(), o.to_string()]);
        }
        a
    }

    /// A command that runs `remote` (one shell string) on the host through the master,
    /// without a tty. stdin, stdout and stderr are left for the caller to set.
    pub fn remote_command(&self, remote: &str) -> tokio::process::Command {
        let args = self.client_args();
        let mut c = tokio::process::Command::new(&args[0]);
        c.args(&args[1..])
            .args(["-T", "--", self.target.host(), remote])
            .env_remove(pv_askpass::bridge::SOCKET_ENV)
            .env_remove("SSH_ASKPASS");
        c
    }

    /// Run `remote` to completion through the master, at most `timeout`.
    pub async fn run(&self, remote: &str, timeout: Duration) -> Result<Output, SshError> {
        let mut c = self.remote_command(remote);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(timeout, c.output())
            .await
            .map_err(|_| SshError::Timeout {
                host: self.target.display_name(),
                what: "a remote command".to_string(),
                waited: timeout,
                log_tail: Vec::new(),
            })?;
        out.map_err(SshError::io("run ssh"))
    }

    /// Run a control command (`-O op …`) on the master.
    async fn control(&self, op: &[&str]) -> Result<Output, SshError> {
        let args = self.client_args();
        let mut c = tokio::process::Command::new(&args[0]);
        c.args(&args[1..])
            .arg("-O")
            .args(op)
            .args(["--", self.target.host()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(self.control_timeout, c.output())
            .await
            .map_err(|_| SshError::Timeout {
                host: self.target.display_name(),
                what: format!("ssh -O {}", op.join(" ")),
                waited: self.control_timeout,
                log_tail: self.log_tail(),
            })?;
        out.map_err(SshError::io("run ssh -O"))
    }

    async fn check_pid(&self) -> Result<Pid, SshError> {
        let out = self.control(&["check"]).await?;
        let text = String::from_utf8_lossy(&out.stderr);
        // "Master running (pid=1234)"
        text.split("pid=")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|n| n.trim().parse::<i32>().ok())
            .filter(|_| out.status.success())
            .map(Pid::from_raw)
            .ok_or_else(|| SshError::ConnectionLost {
                host: self.target.display_name(),
                log_tail: self.log_tail(),
            })
    }

    /// Ask the master whether it still runs (`-O check`).
    pub async fn check(&self) -> Result<(), SshError> {
        self.check_pid().await.map(|_| ())
    }

    async fn forward(&self, flag: &str, spec: &str) -> Result<String, SshError> {
        let out = self.control(&["forward", flag, spec]).await?;
        if !out.status.success() {
            return Err(SshError::Forward {
                host: self.target.display_name(),
                spec: format!("{flag} {spec}"),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Forward `127.0.0.1:<local_port>` here to `host:port` as seen from the remote host
    /// (`-L`, bound to loopback explicitly).
    pub async fn forward_local(
        &self,
        local_port: u16,
        host: &str,
        port: u16,
    ) -> Result<(), SshError> {
        check_ssh_name("forward target", host).map_err(SshError::Invalid)?;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        self.forward("-L", &format!("127.0.0.1:{local_port}:{host}:{port}"))
            .await
            .map(|_| ())
    }

    /// Forward a free local port to `host:port` on the remote side; the local port.
    /// A port taken between choosing and binding it is replaced (three tries).
    pub async fn forward_local_any(&self, host: &str, port: u16) -> Result<u16, SshError> {
        let mut last = None;
        for _ in 0..3 {
            let local = std::net::TcpListener::bind(("127.0.0.1", 0))
                .and_then(|l| l.local_addr())
                .map_err(SshError::io("find a free local port"))?
                .port();
            match self.forward_local(local, host, port).await {
                Ok(()) => return Ok(local),
                Err(e @ SshError::Forward { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("three tries were made"))
    }

    /// Forward a port chosen by the remote side (`-R 127.0.0.1:0:…`, bound to the remote
    /// loopback) to `127.0.0.1:<local_port>` here; the remote port it chose.
    pub async fn forward_remote(&self, local_port: u16) -> Result<u16, SshError> {
        let spec = format!("127.0.0.1:0:127.0.0.1:{local_port}");
        let out = self.forward("-R", &spec).await?;
        out.lines()
            .last()
            .and_then(|l| l.trim().parse::<u16>().ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| SshError::Forward {
                host: self.target.display_name(),
                spec: format!("-R {spec}"),
                message: format!("ssh did not report the allocated port (printed {out:?})"),
            })
    }

    /// Forward `127.0.0.1:<remote_port>` on the remote host (bound to its loopback) to
    /// `127.0.0.1:<local_port>` here (`-R`, a fixed port).
    pub async fn forward_remote_at(
        &self,
        remote_port: u16,
        local_port: u16,
    ) -> Result<(), SshError> {
        self.forward(
            "-R",
            &format!("127.0.0.1:{remote_port}:127.0.0.1:{local_port}"),
        )
        .await
        .map(|_| ())
    }

    /// Stop the master (`-O exit`), wait for it to go (SIGKILL after the control
    /// timeout). Its forwards close with it.
    pub async fn close(mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let _ = self.control(&["exit"]).await;
        if let Some(pid) = self.pid {
            let deadline = Instant::now() + self.control_timeout;
            while running(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if running(pid) {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let args = self.client_args();
        let exit = std::process::Command::new(&args[0])
            .args(&args[1..])
            .args(["-O", "exit", "--", self.target.host()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(mut exit) = exit {
            let deadline = Instant::now() + Duration::from_secs(2);
            while matches!(exit.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = exit.kill();
            let _ = exit.wait();
        }
        if let Some(pid) = self.pid {
            let deadline = Instant::now() + Duration::from_secs(1);
            while running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if running(pid) {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }
}
