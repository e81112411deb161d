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

use super::super::askpass_bridge::AskpassBridge;
use super::super::{SshError, SshOptions, SshTarget};
use crate::plan::Tunnel;
use crate::plan::ssh::{MasterSettings, OpenSshCommands, check_ssh_name};
use crate::startup::describe_status as describe;
use crate::startup::watcher::{Watcher, WatcherGroup};

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
    // Created 0700 at once (no window in which another user could enter it).
    tempfile::Builder::new()
        .prefix("pvl-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(&base)
        .map_err(SshError::io(format!(
            "create a private directory in {}",
            base.display()
        )))
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
    /// Stops the master and removes the private directory if pv-launch dies without
    /// closing it (see [`MASTER_WATCH`]); released by `close` and the drop.
    _watcher: Option<Watcher>,
}

/// The master's watcher's action once pv-launch is gone (`$1` the private directory, the
/// rest the `-O exit` command line). From inside the group the first ssh is started in:
/// SIGTERM to the group stops an ssh (and its askpass helper) still authenticating; a
/// master that already went to the background left the group, so `-O exit` stops it and
/// its forwards; then the directory goes.
const MASTER_WATCH: &str = concat!(
    "d=$1; shift; trap '' TERM; kill -TERM 0; ",
    "\"$@\" </dev/null >/dev/null 2>&1; rm -rf -- \"$d\""
);

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

/// Run the master's `argv` in process group `group` (its watcher's), no stdio, with the askpass helper
/// (and the bridge socket to the prompter, when there is one) in its environment.
fn spawn_master(
    argv: &[String],
    target: &SshTarget,
    options: &SshOptions,
    bridge: Option<&AskpassBridge>,
    group: u32,
) -> Result<tokio::process::Child, SshError> {
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(group as i32)
        .kill_on_drop(true);
    command.env_remove(pv_askpass::bridge::SOCKET_ENV);
    if !target.batch_mode() {
        let askpass = match &options.askpass {
            AskpassProgram::Auto => find_askpass()?,
            AskpassProgram::Path(p) => p.clone(),
        };
        command
            .env("SSH_ASKPASS", askpass)
            .env("SSH_ASKPASS_REQUIRE", "force");
    }
    if let Some(b) = bridge {
        command.env(pv_askpass::bridge::SOCKET_ENV, b.socket_path());
    }
    command
        .spawn()
        .map_err(SshError::io(format!("cannot run {:?}", target.program())))
}

fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| crate::plan::ssh::sh_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Master {
    /// Start the master for `target` and wait (up to `options.auth_timeout`) until it is
    /// authenticated. Prompts go to the askpass helper, and through it to
    /// `options.prompter` when there is one. Authentication is tried once: a wrong
    /// password is an error, never a second attempt.
    pub async fn connect(target: &SshTarget, options: &SshOptions) -> Result<Master, SshError> {
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
        let argv = OpenSshCommands {
            target,
            control: &lossy(&ctl),
            log: &lossy(&log),
        }
        .master(&MasterSettings {
            server_alive: options.server_alive,
            connect_timeout_secs: options.connect_timeout.as_secs(),
        });
        let connect_command = shell_line(&argv);
        let exit_argv = OpenSshCommands {
            target,
            control: &lossy(&ctl),
            log: &lossy(&log),
        }
        .control(&["exit"]);
        // The watcher first, leading its own group, and ssh then joins that group: there
        // is no moment at which ssh runs unwatched. The group's id is the watcher's pid,
        // ours until `Watcher` reaps it (after every signal below).
        let mut watch_args = vec![dir.path().as_os_str()];
        watch_args.extend(exit_argv.iter().map(std::ffi::OsStr::new));
        let watcher = Watcher::spawn(MASTER_WATCH, &watch_args, WatcherGroup::Own).map_err(
            SshError::io("start the watcher that stops ssh if pv-launch dies"),
        )?;
        let group = watcher.pid().unwrap_or(0);
        let mut child = spawn_master(&argv, target, options, bridge.as_ref(), group)?;
        let pgid = Some(Pid::from_raw(group as i32)).filter(|g| g.as_raw() > 1);
        let watcher = Some(watcher);
        let mut master = Master {
            target: target.clone(),
            dir,
            ctl,
            log,
            pid: None,
            control_timeout: options.control_timeout,
            connect_command,
            closed: false,
            _watcher: watcher,
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
            return Err(master.failed(status, bridge.as_ref()));
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

    /// Why the master's authentication failed: a refused host key or a cancelled prompt
    /// (as the bridge saw them), else ssh's status and log.
    fn failed(&self, status: std::process::ExitStatus, bridge: Option<&AskpassBridge>) -> SshError {
        let host = self.target.display_name();
        if let Some(b) = bridge {
            if let Some(prompt) = b.refused_host_key() {
                return SshError::HostKeyRefused { host, prompt };
            }
            if let Some(prompt) = b.cancelled_prompt() {
                return SshError::Cancelled { host, prompt };
            }
        }
        SshError::Connect {
            host,
            status: describe(status),
            command: self.connect_command.clone(),
            log_tail: self.log_tail(),
        }
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

    /// A mux-client argv of this master, rendered by `f` from its command lines.
    fn argv(&self, f: impl FnOnce(&OpenSshCommands<'_>) -> Vec<String>) -> Vec<String> {
        let (control, log) = (lossy(&self.ctl), lossy(&self.log));
        f(&OpenSshCommands {
            target: &self.target,
            control: &control,
            log: &log,
        })
    }

    /// A command that runs `remote` (one shell string) on the host through the master,
    /// without a tty. stdin, stdout and stderr are left for the caller to set.
    pub fn remote_command(&self, remote: &str) -> tokio::process::Command {
        let argv = self.argv(|c| c.run(remote));
        let mut c = tokio::process::Command::new(&argv[0]);
        c.args(&argv[1..])
            .env_remove(pv_askpass::bridge::SOCKET_ENV)
            .env_remove("SSH_ASKPASS");
        c
    }

    fn command_timed_out(&self, waited: Duration) -> SshError {
        SshError::Timeout {
            host: self.target.display_name(),
            what: "a remote command".to_string(),
            waited,
            log_tail: Vec::new(),
        }
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
            .map_err(|_| self.command_timed_out(timeout))?;
        out.map_err(SshError::io("run ssh"))
    }

    /// Run `remote` to completion through the master with `stdin` written to it (then
    /// closed), at most `timeout`: its status and output. For the batch scheduler's
    /// commands; `stdin` may hold a secret and is never logged.
    pub async fn run_with_input(
        &self,
        remote: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, SshError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = self.remote_command(remote);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = c.spawn().map_err(SshError::io("run ssh"))?;
        let (mut input, mut out, mut err) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let data = stdin.unwrap_or_default();
        let work = async {
            // Feed and drain at once: neither side may fill a pipe and wait on the other.
            let write = async {
                if let Some(mut w) = input.take() {
                    let _ = w.write_all(data).await;
                    let _ = w.shutdown().await;
                }
            };
            let read_out = async {
                let mut buf = Vec::new();
                if let Some(r) = out.as_mut() {
                    let _ = r.read_to_end(&mut buf).await;
                }
                buf
            };
            let read_err = async {
                let mut buf = Vec::new();
                if let Some(r) = err.as_mut() {
                    let _ = r.read_to_end(&mut buf).await;
                }
                buf
            };
            let ((), o, e) = tokio::join!(write, read_out, read_err);
            let status = child.wait().await?;
            Ok::<_, std::io::Error>(Output {
                status,
                stdout: o,
                stderr: e,
            })
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| self.command_timed_out(timeout))?
            .map_err(SshError::io("run ssh"))
    }

    /// Run a control command (`-O op …`) on the master.
    async fn control(&self, op: &[&str]) -> Result<Output, SshError> {
        self.run_control(self.argv(|c| c.control(op)), &op.join(" "))
            .await
    }

    async fn run_control(&self, argv: Vec<String>, what: &str) -> Result<Output, SshError> {
        let mut c = tokio::process::Command::new(&argv[0]);
        c.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(self.control_timeout, c.output())
            .await
            .map_err(|_| SshError::Timeout {
                host: self.target.display_name(),
                what: format!("ssh -O {what}"),
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

    /// Open `tunnel` on the master (`-O forward`); what ssh printed (the allocated port
    /// for `-R` with port 0).
    async fn forward(&self, tunnel: &Tunnel) -> Result<String, SshError> {
        let spec = format!("{} {}", tunnel.flag(), tunnel.spec());
        let out = self
            .run_control(self.argv(|c| c.forward(tunnel)), &format!("forward {spec}"))
            .await?;
        if !out.status.success() {
            return Err(SshError::Forward {
                host: self.target.display_name(),
                spec,
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Forward `127.0.0.1:<local_port>` here to `host:port` as seen from the remote host
    /// (`-L`, bound to loopback explicitly); local port 0: a free one, replaced when it is
    /// taken between choosing and binding it (three tries). The local port.
    pub async fn forward_local(
        &self,
        local_port: u16,
        host: &str,
        port: u16,
    ) -> Result<u16, SshError> {
        check_ssh_name("forward target", host).map_err(SshError::Invalid)?;
        let tunnel = |local_port| Tunnel::Local {
            local_port,
            host: host.to_string(),
            remote_port: port,
        };
        if local_port != 0 {
            return self.forward(&tunnel(local_port)).await.map(|_| local_port);
        }
        let mut last = None;
        for _ in 0..3 {
            let local = std::net::TcpListener::bind(("127.0.0.1", 0))
                .and_then(|l| l.local_addr())
                .map_err(SshError::io("find a free local port"))?
                .port();
            match self.forward(&tunnel(local)).await {
                Ok(_) => return Ok(local),
                Err(e @ SshError::Forward { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("three tries were made"))
    }

    /// Forward `127.0.0.1:<remote_port>` on the remote host (bound to its loopback) to
    /// `127.0.0.1:<local_port>` here (`-R`); remote port 0: the remote side chooses, and
    /// the port it chose is read back. The remote port.
    /// With `public`, the remote end is bound on all its interfaces (sshd's `GatewayPorts`
    /// decides whether it is).
    pub async fn forward_remote(
        &self,
        remote_port: u16,
        local_port: u16,
        public: bool,
    ) -> Result<u16, SshError> {
        let tunnel = Tunnel::Remote {
            remote_port,
            local_port,
            public,
        };
        let out = self.forward(&tunnel).await?;
        if remote_port != 0 {
            return Ok(remote_port);
        }
        out.lines()
            .last()
            .and_then(|l| l.trim().parse::<u16>().ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| SshError::Forward {
                host: self.target.display_name(),
                spec: format!("-R {}", tunnel.spec()),
                message: format!("ssh did not report the allocated port (printed {out:?})"),
            })
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
        let argv = self.argv(|c| c.control(&["exit"]));
        let exit = std::process::Command::new(&argv[0])
            .args(&argv[1..])
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
