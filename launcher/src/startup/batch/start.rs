//! A batch start end to end, as [`crate::startup::start`] runs it for a plan's
//! [`How::Batch`](crate::plan::How::Batch): the runner where the scheduler is (this host, or
//! a login node over ssh: [`SshRunner`]), the submission with the token staged in the 0700
//! job directory, the tracking until the ready line (events for every status change; the
//! queue wait and the wait for the ready line each have their own timeout), the way to the
//! server (its batch host directly, or an ssh `-L` tunnel there), and the supervised
//! [`BatchServer`].
//!
//! No job is left behind: a start that fails or times out cancels its job (and confirms it
//! left the queue) before it returns; [`BatchServer::cleanup`] does the same at the end of
//! a session. Beyond that, every job has a **watchdog** from the moment it is submitted: a
//! small `sh` on the host that submitted it (this host, or the login node in pv-launch's
//! cleanup wrapper over the launch's ssh connection) that waits for pv-launch's end of a
//! pipe (or the ssh channel) to close and then runs `scancel` and removes the job
//! directory. So a [`BatchServer`] that is merely dropped — by an embedder that never calls
//! `cleanup` nor [`finish_pending_cancels`], whose runtime shuts down at once, or by a
//! process that exits, crashes or is SIGKILLed — still has its job cancelled, without any
//! code of pv-launch's running afterwards. A dropped server also starts the confirmed
//! cancel in a background task; [`finish_pending_cancels`] only waits for those
//! confirmations. A lost ssh connection to the login node ends the session and cancels the
//! job the same way. `pv-launch jobs --cancel` remains for the one case left: the login
//! node's or this host's watchdog itself killed (a reboot, an OOM kill).

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pv_transport::launch::{LAUNCH_CHANNEL_VERSION, READY_PREFIX, ReadyLine, Secrets};

use super::relay::{LISTENER_PROBE, not_on_all_interfaces};
use super::{
    BatchError, BatchPlan, CommandOutput, DEFAULT_COMMAND_TIMEOUT, JobState, JobStatus,
    LocalRunner, RELAY_PROBE, ReverseVia, RunError, Runner, Slurm, Submitted, TrackEvent,
    relay_argv,
};
use crate::events::{Event, EventSender, Stage};
use crate::plan::{BatchStart, JobsDir, Place, ProcessPlan, ReadyPattern, ReverseBatch, Tunnel};
use crate::profile::Delay;
use crate::startup::ssh::{RemoteHelper, SshError, SshHost, remote_command, require_backend};
use crate::startup::watcher::{Watcher, WatcherGroup};
use crate::startup::{StartError, StartOptions, channel};

/// Runs scheduler commands on a login node through an authenticated ssh connection
/// (either backend): each argv is quoted for the remote shell ([`remote_command`]: POSIX sh
/// quoting inside one `exec /bin/sh -c '…'` argument), with the profile's ssh `env`
/// exported and in its `workdir`; stdin (the secrets line, the job script) goes through
/// the channel, never on a command line. Files are read with `cat`.
#[derive(Debug)]
pub struct SshRunner {
    host: SshHost,
    env: Vec<(String, String)>,
    workdir: Option<String>,
    timeout: Duration,
}

/// Exit status of the file-reading command when the file does not exist.
const MISSING_FILE: i32 = 66;

impl SshRunner {
    /// Run commands on `host` with `env` exported, in `workdir`, each at most `timeout`.
    pub fn new(
        host: SshHost,
        env: Vec<(String, String)>,
        workdir: Option<String>,
        timeout: Duration,
    ) -> SshRunner {
        SshRunner {
            host,
            env,
            workdir,
            timeout,
        }
    }

    /// The ssh connection.
    pub fn host(&self) -> &SshHost {
        &self.host
    }

    /// The ssh connection, for a tunnel.
    pub fn host_mut(&mut self) -> &mut SshHost {
        &mut self.host
    }

    /// Close the ssh connection (pv-launch's master, when nothing else shares it).
    pub async fn close(self) {
        self.host.close().await;
    }
}

fn program_name(argv: &[String]) -> String {
    argv.first().cloned().unwrap_or_default()
}

impl Runner for SshRunner {
    async fn run(&self, argv: &[String], stdin: Option<&[u8]>) -> Result<CommandOutput, RunError> {
        let command = remote_command(argv, &self.env, self.workdir.as_deref());
        match self.host.run(&command, stdin, self.timeout).await {
            Ok((status, stdout, stderr)) => Ok(CommandOutput {
                status,
                stdout,
                stderr,
            }),
            Err(SshError::Timeout { waited, .. }) => Err(RunError::TimedOut {
                program: program_name(argv),
                after: waited,
            }),
            Err(e) => Err(RunError::Io {
                what: format!("running {:?} over ssh", program_name(argv)),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, RunError> {
        let read = format!("[ -e \"$1\" ] || exit {MISSING_FILE}; exec cat -- \"$1\"");
        let argv = ["sh", "-c", &read, "pv-launch-read", path].map(String::from);
        let out = self.run(&argv, None).await?;
        match out.status {
            Some(0) => Ok(Some(out.stdout)),
            Some(MISSING_FILE) => Ok(None),
            _ => Err(RunError::Io {
                what: format!("reading {path} over ssh"),
                source: std::io::Error::other(out.stderr_text()),
            }),
        }
    }
}

/// Where a batch start's scheduler commands run.
#[derive(Debug)]
pub enum HostRunner {
    /// On this host.
    Local(LocalRunner),
    /// On a login node over ssh.
    Ssh(SshRunner),
}

impl Runner for HostRunner {
    async fn run(&self, argv: &[String], stdin: Option<&[u8]>) -> Result<CommandOutput, RunError> {
        match self {
            HostRunner::Local(r) => r.run(argv, stdin).await,
            HostRunner::Ssh(r) => r.run(argv, stdin).await,
        }
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, RunError> {
        match self {
            HostRunner::Local(r) => r.read_file(path).await,
            HostRunner::Ssh(r) => r.read_file(path).await,
        }
    }
}

/// What the watchdog here does once pv-launch's end of its pipe closes, however pv-launch
/// ends (a [`Watcher`] with `$1` = the job id, `$2` = the job directory).
const LOCAL_WATCHDOG: &str = "scancel \"$1\" >/dev/null 2>&1; rm -rf -- \"$2\"";

/// The watchdog on a login node, in the cleanup wrapper: the wrapper sends it SIGTERM when
/// the channel's stdin ends (pv-launch closed it, was killed, or the connection was lost);
/// its trap cancels. The ready line says the trap is set.
fn remote_watchdog() -> String {
    format!(
        "trap 'scancel \"$1\" >/dev/null 2>&1; rm -rf -- \"$2\"; exit 0' TERM HUP; \
         echo '{READY_PREFIX} {LAUNCH_CHANNEL_VERSION} port=0 handshake=none'; \
         while :; do sleep 3600 & wait $!; done"
    )
}

/// A job's watchdog (see the module documentation).
#[derive(Debug)]
enum Watchdog {
    /// A [`Watcher`] here (in its own process group: a Ctrl-C to the terminal's group does
    /// not end it) that cancels when fired, dropped, or left by a dead pv-launch.
    Local(Option<Watcher>),
    /// An `sh` on the login node in the cleanup wrapper.
    Remote(Box<RemoteHelper>),
}

impl Watchdog {
    /// Start the watchdog of job `id` (files in `dir`) where `runner` runs commands.
    async fn start(runner: &HostRunner, id: &str, dir: &str) -> Result<Watchdog, StartError> {
        match runner {
            HostRunner::Local(_) => {
                let args = [std::ffi::OsStr::new(id), std::ffi::OsStr::new(dir)];
                let watcher =
                    Watcher::spawn(LOCAL_WATCHDOG, &args, WatcherGroup::Own).map_err(|e| {
                        StartError::Batch(BatchError::Controller(format!(
                            "cannot start the job's watchdog (sh): {e}"
                        )))
                    })?;
                Ok(Watchdog::Local(Some(watcher)))
            }
            HostRunner::Ssh(r) => {
                let argv = [
                    "sh".to_string(),
                    "-c".to_string(),
                    remote_watchdog(),
                    "pv-launch-watchdog".to_string(),
                    id.to_string(),
                    dir.to_string(),
                ];
                let command = remote_command(&argv, &r.env, None);
                let (helper, _) = r
                    .host
                    .start_helper(&command, DEFAULT_COMMAND_TIMEOUT)
                    .await?;
                Ok(Watchdog::Remote(Box::new(helper)))
            }
        }
    }

    /// Release it after the job was cancelled and confirmed (its own `scancel` then finds
    /// nothing to do) and wait for it to end.
    async fn stop(&mut self, runner: &HostRunner) {
        match (self, runner) {
            (Watchdog::Local(watcher), _) => {
                if let Some(w) = watcher.take() {
                    w.fire_and_wait(DEFAULT_COMMAND_TIMEOUT).await;
                }
            }
            (Watchdog::Remote(helper), HostRunner::Ssh(r)) => {
                r.host.stop_helper(helper).await;
            }
            (Watchdog::Remote(_), HostRunner::Local(_)) => {}
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Unlike a server's watcher, a job's fires when dropped too: the job must not
        // outlive its session.
        if let Watchdog::Local(watcher) = self {
            if let Some(w) = watcher.take() {
                w.fire();
            }
        }
    }
}

/// Cancels of dropped [`BatchServer`]s still running in the background.
static PENDING_CANCELS: Mutex<Vec<tokio::task::JoinHandle<()>>> = Mutex::new(Vec::new());

/// Wait (at most `within`) for the confirmed cancels that dropped [`BatchServer`]s started
/// in the background. Optional: a dropped server's job is cancelled by its watchdog even if
/// nobody calls this (see the module documentation); a program that abandons a launch
/// (Ctrl-C) calls it to report the job's final state, and to know the job has left the
/// queue when it exits.
pub async fn finish_pending_cancels(within: Duration) {
    let handles: Vec<_> =
        std::mem::take(&mut *PENDING_CANCELS.lock().unwrap_or_else(|e| e.into_inner()));
    let _ = tokio::time::timeout(within, async {
        for h in handles {
            let _ = h.await;
        }
    })
    .await;
}

/// A server running in a batch job, supervised until the job ends or the session does.
///
/// [`BatchServer::cleanup`] cancels the job (confirming it left the queue), removes its
/// directory and closes the ssh connection. Dropping it without that cancels too: at once
/// through the job's watchdog (which needs nothing more from the program, not even a
/// running async runtime), and with confirmation from a background task while the
/// runtime lives (see [`finish_pending_cancels`]).
#[derive(Debug)]
pub struct BatchServer {
    live: Option<Live>,
}

#[derive(Debug)]
struct Live {
    slurm: Slurm<HostRunner>,
    plan: BatchPlan,
    job: Submitted,
    events: EventSender,
    last: Option<JobStatus>,
    dial: Option<(String, u16)>,
    tunnel: Option<SocketAddr>,
    relay: Option<RemoteHelper>,
    watchdog: Option<Watchdog>,
}

impl Live {
    /// Cancel (confirmed), remove the job directory, close the ssh connection.
    async fn end(self) -> Result<JobStatus, BatchError> {
        let Live {
            slurm,
            plan,
            job,
            relay,
            watchdog,
            ..
        } = self;
        let st = plan.cancel(&slurm, &job).await;
        if let Some(mut w) = watchdog {
            w.stop(slurm.runner()).await;
        }
        if let HostRunner::Ssh(r) = slurm.into_runner() {
            if let Some(mut relay) = relay {
                r.host.stop_helper(&mut relay).await;
            }
            r.host.close().await;
        }
        st
    }

    fn send_status(&self, st: &JobStatus) {
        let _ = self.events.send(job_event(st));
    }
}

/// The [`Event::Job`] for `st`.
pub fn job_event(st: &JobStatus) -> Event {
    Event::Job {
        id: st.id.to_string(),
        state: st.state.to_string(),
        reason: st.reason.clone(),
        estimated_start: st
            .estimated_start
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
        nodes: st.nodes.clone(),
        time_left: st.time_left,
    }
}

fn ended_error(status: JobStatus, output_tail: Vec<String>) -> StartError {
    StartError::JobEnded {
        id: status.id.to_string(),
        state: status.state.to_string(),
        reason: status.reason,
        exit_code: status.exit_code.map(|e| e.to_string()),
        output_tail,
    }
}

impl BatchServer {
    fn live(&self) -> &Live {
        self.live
            .as_ref()
            .expect("a batch server is live until cleanup")
    }

    fn live_mut(&mut self) -> &mut Live {
        self.live
            .as_mut()
            .expect("a batch server is live until cleanup")
    }

    /// The job's id.
    pub fn job_id(&self) -> &str {
        self.live().job.job_id.as_str()
    }

    /// The launch id the job is tagged with.
    pub fn launch_id(&self) -> &str {
        self.live().plan.launch_id.as_str()
    }

    /// The job's private directory.
    pub fn job_dir(&self) -> &str {
        &self.live().plan.files.dir
    }

    /// The last status seen.
    pub fn last_status(&self) -> Option<&JobStatus> {
        self.live().last.as_ref()
    }

    /// Where the client dials without a tunnel: the job's batch host and the server's port.
    pub fn dial_target(&self) -> Option<(String, u16)> {
        self.live.as_ref().and_then(|l| l.dial.clone())
    }

    /// The local end of the `-L` tunnel to the job's node (a job submitted over ssh).
    pub fn tunnel_address(&self) -> Option<SocketAddr> {
        self.live.as_ref().and_then(|l| l.tunnel)
    }

    /// Follow the job until it ends: `Ok` with its exit status when it completed, else the
    /// error naming its final state, reason, exit code and the last lines of its output.
    /// Over ssh, a lost connection ends the wait with [`SshError::ConnectionLost`].
    pub async fn wait(&mut self) -> Result<ExitStatus, StartError> {
        use std::os::unix::process::ExitStatusExt;
        let live = self.live_mut();
        let mut last = live.last.clone();
        let follow = async {
            let mut tracker = live
                .plan
                .tracker(&live.slurm, &live.job)
                .without_readiness();
            loop {
                match tracker.next_event().await {
                    Err(e) => return Err(StartError::Batch(e)),
                    Ok(None) => {
                        return Err(StartError::Batch(BatchError::Controller(
                            "the job's tracking ended without a final state".into(),
                        )));
                    }
                    Ok(Some(TrackEvent::Changed(st))) => {
                        if last.as_ref().is_none_or(|l| st.differs_from(l)) {
                            live.send_status(&st);
                        }
                        last = Some(st);
                    }
                    Ok(Some(TrackEvent::Ready { .. } | TrackEvent::Matched { .. })) => {}
                    Ok(Some(TrackEvent::WalltimeWarning { time_left })) => {
                        let _ = live.events.send(Event::WalltimeWarning {
                            id: live.job.job_id.to_string(),
                            time_left,
                        });
                    }
                    Ok(Some(TrackEvent::Ended {
                        status,
                        output_tail,
                    })) => {
                        live.send_status(&status);
                        let code = status.exit_code.map_or(0, |e| e.status);
                        if status.state == JobState::Completed {
                            return Ok(ExitStatus::from_raw((code & 0xff) << 8));
                        }
                        return Err(ended_error(status, output_tail));
                    }
                }
            }
        };
        match live.slurm.runner() {
            HostRunner::Ssh(r) => {
                let log = || Vec::new();
                tokio::select! {
                    r = follow => r,
                    e = r.host.connection_lost(log) => Err(StartError::Ssh(e)),
                }
            }
            HostRunner::Local(_) => follow.await,
        }
    }

    /// Wait until the ssh connection to the login node is lost (never for a local
    /// submission).
    pub async fn connection_lost(&self) -> SshError {
        match self.live.as_ref().map(|l| l.slurm.runner()) {
            Some(HostRunner::Ssh(r)) => r.host.connection_lost(Vec::new).await,
            _ => std::future::pending().await,
        }
    }

    /// Cancel the job and confirm it left the queue, remove its directory, close the ssh
    /// connection: the job's final status.
    pub async fn cleanup(mut self) -> Option<Result<JobStatus, BatchError>> {
        let live = self.live.take()?;
        Some(live.end().await)
    }
}

impl Drop for BatchServer {
    fn drop(&mut self) {
        let Some(live) = self.live.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let task = rt.spawn(async move {
                    let _ = live.end().await;
                });
                PENDING_CANCELS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(task);
            }
            // No runtime left: a local job can still be cancelled synchronously.
            Err(_) => {
                if let HostRunner::Local(_) = live.slurm.runner() {
                    let _ = std::process::Command::new("scancel")
                        .arg(live.job.job_id.as_str())
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status();
                    let _ = std::fs::remove_dir_all(&live.plan.files.dir);
                }
            }
        }
    }
}

fn stage(events: &EventSender, stage: Stage, begun: Instant) {
    let _ = events.send(Event::Stage {
        stage,
        elapsed: begun.elapsed(),
    });
}

/// Start the server of `batch` (`process`'s) in a job submitted where `process.place`
/// says: connect to the login node (over ssh), stage the secrets and submit, follow the
/// job (events) until the server is ready — within the queue timeout while queued and
/// `ready_timeout` once running — then open the way to it. On any failure the job is
/// cancelled first.
///
/// Ready means: with `secrets` (the native handshake), the server's ready line, which
/// names its port. Without (a server speaking ParaView's handshake or none, pvserver),
/// a line of its output matching `process.ready_pattern` (pvserver's `Accepting
/// connection(s)` by default, forward), or with no pattern (reverse) the job running;
/// the port is then the one the plan fixed ([`BatchStart::port`]) and there is no ready
/// line to return. pv-launch never connects to the server itself.
pub async fn start(
    process: &ProcessPlan,
    batch: &BatchStart,
    secrets: Option<&Secrets>,
    ready_timeout: Duration,
    options: &StartOptions,
    listening: &[u16],
    events: &EventSender,
) -> Result<(BatchServer, Option<ReadyLine>), StartError> {
    let place = &process.place;
    let expect = match (secrets, &process.ready_pattern) {
        (Some(_), _) => Readiness::Line,
        (None, Some(p)) => Readiness::Pattern(p),
        (None, None) => Readiness::Running(&process.delay),
    };
    let begun = Instant::now();
    let (runner, tunnel) = match place {
        Place::Local(_) => (HostRunner::Local(LocalRunner::default()), None),
        Place::Ssh(plan) => {
            require_backend(plan.backend_kind())?;
            stage(events, Stage::SshConnect, begun);
            let host = SshHost::connect(&plan.target, &plan.backend, &options.ssh).await?;
            let runner = SshRunner::new(
                host,
                plan.remote.env.clone(),
                plan.remote.workdir.clone(),
                DEFAULT_COMMAND_TIMEOUT,
            );
            (HostRunner::Ssh(runner), plan.tunnels.first().cloned())
        }
    };
    stage(events, Stage::Submit, begun);
    let home = match batch.jobs_dir {
        JobsDir::Path(_) => String::new(),
        JobsDir::RemoteHome => remote_home(&runner).await?,
    };
    let (batch, relay) = match (&batch.reverse, &runner, &tunnel) {
        (Some(reverse), HostRunner::Ssh(r), Some(Tunnel::Remote { public, .. })) => {
            let Some(&local) = listening.first() else {
                return Err(StartError::Batch(BatchError::Controller(
                    "a reverse connection without a port the client listens on".into(),
                )));
            };
            let way = way_back(r, reverse, local, *public, options).await?;
            (batch.dialling(&way.host, way.port), way.relay)
        }
        _ => (batch.clone(), None),
    };
    let plan = batch.batch_plan(&home)?;
    let slurm = Slurm::new(runner);
    let line = channel::secrets_line(secrets);
    let job = plan.submit(&slurm, &line).await?;
    let watchdog = Watchdog::start(slurm.runner(), job.job_id.as_str(), &plan.files.dir).await;
    let mut server = BatchServer {
        live: Some(Live {
            slurm,
            plan,
            job,
            events: events.clone(),
            last: None,
            dial: None,
            tunnel: None,
            relay,
            watchdog: None,
        }),
    };
    match watchdog {
        Ok(w) => server.live_mut().watchdog = Some(w),
        Err(e) => {
            let _ = server.cleanup().await;
            return Err(e);
        }
    }
    stage(events, Stage::WaitJob, begun);
    let ready = match await_ready(
        server.live_mut(),
        &expect,
        (batch.queue_timeout, ready_timeout),
        events,
        begun,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            let _ = server.cleanup().await;
            return Err(e);
        }
    };
    let live = server.live_mut();
    let Some(node) = live
        .last
        .as_ref()
        .and_then(|s| s.batch_host.clone().or_else(|| s.nodes.clone()))
    else {
        let _ = server.cleanup().await;
        return Err(StartError::Batch(BatchError::Controller(
            "the job runs but the scheduler names no batch host".into(),
        )));
    };
    // The ready line's port, else the one the plan fixed (none: a reverse connection from
    // a job submitted over ssh, which needs no way to the node).
    let Some(port) = ready.as_ref().map(|r| r.port).or(batch.port) else {
        return Ok((server, ready));
    };
    let forwarded = match (&tunnel, live.slurm.runner_mut()) {
        (Some(Tunnel::Local { local_port, .. }), HostRunner::Ssh(r)) => {
            Some(r.host_mut().forward_local(*local_port, &node, port).await)
        }
        _ => None,
    };
    match forwarded {
        Some(Ok(p)) => live.tunnel = Some(SocketAddr::from(([127, 0, 0, 1], p))),
        Some(Err(e)) => {
            let _ = server.cleanup().await;
            return Err(StartError::Ssh(e));
        }
        None => live.dial = Some((node, port)),
    }
    let _ = events.send(Event::Ready {
        port,
        elapsed: begun.elapsed(),
    });
    Ok((server, ready))
}

/// Where the job dials back, and the relay that listens there (none with gateway ports).
struct WayBack {
    host: String,
    port: u16,
    relay: Option<RemoteHelper>,
}

/// Open the way back from a compute node to the client listening on `local` here: the `-R`
/// tunnel (bound on the login node's loopback, or with `public` on all its interfaces), and
/// for [`ReverseVia::Relay`] the relay in front of it (see the `relay` module).
async fn way_back(
    runner: &SshRunner,
    reverse: &ReverseBatch,
    local: u16,
    public: bool,
    options: &StartOptions,
) -> Result<WayBack, StartError> {
    let host = runner.host();
    let probe = runner
        .run(&["sh", "-c", RELAY_PROBE].map(String::from), None)
        .await
        .map_err(BatchError::from)?;
    let relay = reverse.via == ReverseVia::Relay;
    if relay && probe.status == Some(127) {
        return Err(StartError::Ssh(SshError::Invalid(format!(
            "reverse_via = \"relay\" needs python3 on the login node {}, and it is not on \
             the PATH there: install it (or put it on PATH through [server.startup.ssh] env), \
             or use reverse_via = \"gateway-ports\" (needs GatewayPorts clientspecified in \
             the login node's sshd), or a forward connection (cs://)",
            host.display_name()
        ))));
    }
    let name = probe.stdout_text().trim().to_string();
    let dial = match (&reverse.host, name.is_empty()) {
        (Some(h), _) => h.clone(),
        (None, false) => name,
        (None, true) => {
            return Err(StartError::Batch(BatchError::Controller(format!(
                "cannot read the login node's name (uname -n): {}",
                probe.stderr_text()
            ))));
        }
    };
    let tunnel_port = host.forward_remote(0, local, public).await?;
    if public {
        check_gateway_port(runner, tunnel_port).await?;
    }
    if !relay {
        return Ok(WayBack {
            host: dial,
            port: tunnel_port,
            relay: None,
        });
    }
    let argv = relay_argv(reverse.host.as_deref().unwrap_or(""), tunnel_port);
    let command = remote_command(&argv, &runner.env, None);
    let (helper, ready) = host
        .start_helper(&command, options.ssh.control_timeout)
        .await?;
    Ok(WayBack {
        host: dial,
        port: ready.port,
        relay: Some(helper),
    })
}

/// Fail, before anything is submitted, when the login node's sshd bound the public `-R`
/// port on no wildcard address (its `GatewayPorts` is `no`, OpenSSH's default): the job's
/// dial would be refused. Where the login node cannot tell (no `/proc/net`), go on.
async fn check_gateway_port(runner: &SshRunner, port: u16) -> Result<(), StartError> {
    let argv = ["sh", "-c", LISTENER_PROBE, "sh", &port.to_string()].map(String::from);
    let out = runner.run(&argv, None).await.map_err(BatchError::from)?;
    if !not_on_all_interfaces(&out.stdout_text()) {
        return Ok(());
    }
    Err(StartError::Ssh(SshError::Invalid(format!(
        "reverse_via = \"gateway-ports\": the sshd of the login node {} bound the -R \
         tunnel's port {port} to its loopback only, where compute nodes cannot reach it \
         (its GatewayPorts is `no`, OpenSSH's default): set `GatewayPorts clientspecified` \
         in that sshd's sshd_config, or use reverse_via = \"relay\" (the default)",
        runner.host().display_name()
    ))))
}

/// `$HOME` on the login node.
async fn remote_home(runner: &HostRunner) -> Result<String, StartError> {
    let argv = ["sh", "-c", "printf '%s' \"$HOME\""].map(String::from);
    let out = runner.run(&argv, None).await.map_err(BatchError::from)?;
    let home = out.stdout_text();
    if !out.success() || !home.starts_with('/') {
        return Err(StartError::Batch(BatchError::Controller(format!(
            "cannot read $HOME on the login node (got {home:?}; {})",
            out.stderr_text()
        ))));
    }
    Ok(home)
}

/// What says the server in the job is ready.
enum Readiness<'a> {
    /// Its launch-channel ready line (the native handshake).
    Line,
    /// A line of its output matching the pattern (pvserver, forward).
    Pattern(&'a ReadyPattern),
    /// The job running (a server that dials a client already listening), and then the
    /// profile's `delay` as a local start waits it (the job ending meanwhile is a failure;
    /// `delay = -1`, waiting for an exit, does not apply to a job).
    Running(&'a Delay),
}

/// Follow the job until the server is ready (see [`Readiness`]; its ready line, when it
/// prints one): events for its status changes; the queue timeout (first of `timeouts`)
/// counts from the submission while it waits, the ready timeout (second) from the poll
/// that first saw it running. A ParaView default pattern not seen in time hands over all
/// the same (the client's own retry takes over, as in ParaView); a written one fails.
async fn await_ready(
    live: &mut Live,
    expect: &Readiness<'_>,
    (queue_timeout, ready_timeout): (Option<Duration>, Duration),
    events: &EventSender,
    begun: Instant,
) -> Result<Option<ReadyLine>, StartError> {
    let submitted = tokio::time::Instant::now();
    let mut tracker = live.plan.tracker(&live.slurm, &live.job);
    let what = match expect {
        Readiness::Pattern(p) => {
            tracker = tracker.with_pattern(p.regex.clone());
            "a line of the server's output matching the ready pattern once the job runs"
        }
        _ => "the server's ready line once the job runs",
    };
    let mut running_since: Option<tokio::time::Instant> = None;
    // The end of the delay a reverse server without a ready line waits after RUNNING.
    let mut delay_until: Option<tokio::time::Instant> = None;
    let mut last: Option<JobStatus> = None;
    let id = live.job.job_id.to_string();
    let result = loop {
        if let Some(at) = delay_until {
            match tokio::time::timeout_at(at, tracker.next_event()).await {
                Err(_) => break Ok(None),
                Ok(Ok(Some(TrackEvent::Ended {
                    status,
                    output_tail,
                }))) => {
                    let _ = events.send(job_event(&status));
                    break Err(ended_error(status, output_tail));
                }
                Ok(Ok(Some(TrackEvent::Changed(st)))) => {
                    let _ = events.send(job_event(&st));
                    last = Some(st);
                    continue;
                }
                Ok(Ok(Some(_))) => continue,
                Ok(Err(e)) => break Err(StartError::Batch(e)),
                Ok(Ok(None)) => {
                    break Err(StartError::Batch(BatchError::Controller(
                        "the job's tracking ended without a final state".into(),
                    )));
                }
            }
        }
        let deadline = match running_since {
            Some(t) => Some((t + ready_timeout, what, ready_timeout)),
            None => queue_timeout.map(|q| {
                (
                    submitted + q,
                    "the job to leave the queue (queue_timeout)",
                    q,
                )
            }),
        };
        let next = match deadline {
            Some((at, what, waited)) => {
                match tokio::time::timeout_at(at, tracker.next_event()).await {
                    Ok(r) => r,
                    Err(_) => {
                        if let (Readiness::Pattern(p), Some(_)) = (expect, running_since) {
                            if !p.required {
                                let _ = events.send(channel::pattern_not_seen(p, waited));
                                break Ok(None);
                            }
                        }
                        let output_tail = match running_since {
                            Some(_) => super::tail_lines(
                                live.slurm.runner(),
                                &live.job.output,
                                super::OUTPUT_TAIL_LINES,
                            )
                            .await
                            .unwrap_or_default(),
                            None => Vec::new(),
                        };
                        break Err(StartError::JobTimeout {
                            id: id.clone(),
                            what,
                            waited,
                            last: last.as_ref().map(|s| s.to_string()),
                            output_tail,
                        });
                    }
                }
            }
            None => tracker.next_event().await,
        };
        match next {
            Err(e) => break Err(StartError::Batch(e)),
            Ok(None) => {
                break Err(StartError::Batch(BatchError::Controller(
                    "the job's tracking ended without a final state".into(),
                )));
            }
            Ok(Some(TrackEvent::Changed(st))) => {
                let started = st.state.is_running() && running_since.is_none();
                let _ = events.send(job_event(&st));
                last = Some(st);
                if started {
                    running_since = Some(tokio::time::Instant::now());
                    if let Readiness::Running(delay) = expect {
                        match delay {
                            Delay::Wait(d) => {
                                stage(events, Stage::Delay, begun);
                                delay_until = Some(tokio::time::Instant::now() + *d);
                                continue;
                            }
                            Delay::None | Delay::UntilExit => break Ok(None),
                        }
                    }
                    let waiting = match expect {
                        Readiness::Pattern(_) => Stage::WaitPattern,
                        _ => Stage::WaitReady,
                    };
                    stage(events, waiting, begun);
                }
            }
            Ok(Some(TrackEvent::Ready { ready, .. })) => break Ok(Some(ready)),
            Ok(Some(TrackEvent::Matched { .. })) => break Ok(None),
            Ok(Some(TrackEvent::WalltimeWarning { time_left })) => {
                let _ = events.send(Event::WalltimeWarning {
                    id: id.clone(),
                    time_left,
                });
            }
            Ok(Some(TrackEvent::Ended {
                status,
                output_tail,
            })) => {
                let _ = events.send(job_event(&status));
                break Err(ended_error(status, output_tail));
            }
        }
    };
    drop(tracker);
    live.last = last;
    result
}
