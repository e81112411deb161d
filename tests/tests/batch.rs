//! Batch starts end to end against the real single-node Slurm of `ci/slurm` (Debian 12's
//! 22.05: munge, slurmctld, slurmd): TOML profiles with `mechanism = "batch"` run through
//! `session::launch_with` and through the `pv-launch` binary — a local submission connected
//! forward to the job's batch host, the same submitted on a "login node" over the loopback
//! sshd (both ssh backends, an `-L` tunnel to the job's node), a pending job cancelled by
//! abandoning the launch, a job that fails at start, and a job left by a SIGKILLed
//! `pv-launch` found and cancelled by `pv-launch jobs`; Debian's pvserver in a job handed
//! to pvpython by the CLI (forward and reverse, submitted here and over ssh), and a written
//! `ready_pattern` matched in the job's output or failing in time. Every test checks at
//! the end that none of its jobs is left in the queue (the pvserver ones: no pvserver
//! either).
//!
//! Needs root, the cluster (`ci/slurm`) and `SLURM_CONF` in the environment of
//! `cargo test` (run `eval "$(ci/slurm)"` first; `ci/test` does). Without them a test
//! skips with a message, except under `CI=true`, where that is a failure. The tests take
//! one lock so their jobs do not queue behind each other on the 2-CPU node (cargo runs
//! test binaries one after another, so `launcher/tests/slurm.rs` does not overlap them).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pv_e2e::prompts::Scripted;
use pv_e2e::sshd::{Sshd, TEST_USER};
use pv_e2e::{echo, workspace_bin};
use pv_launch::events::{Event, Stage};
use pv_launch::plan::Plan;
use pv_launch::session::{LaunchError, LaunchOptions, Session, launch_with};
use pv_launch::startup::ssh::AskpassProgram;
use pv_launch::{LaunchContext, NonInteractive};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(60);
const CI_SLURM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ci/slurm");

/// The cluster's config file, when the cluster runs and this process can use it; `None`
/// (the test skips) otherwise, except under `CI=true`.
fn cluster() -> Option<String> {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let skip = |why: String| {
        assert!(
            !ci,
            "CI=true but the Slurm test cluster is not usable: {why}"
        );
        eprintln!("SKIPPED: no Slurm test cluster: {why}");
        None
    };
    let uid = std::process::Command::new("id").arg("-u").output();
    if !matches!(&uid, Ok(o) if o.stdout == b"0\n") {
        return skip("ci/slurm needs root".into());
    }
    let out = match std::process::Command::new(CI_SLURM).output() {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            return skip(format!(
                "ci/slurm failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Err(e) => return skip(format!("cannot run {CI_SLURM}: {e}")),
    };
    let conf = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("export SLURM_CONF=").map(str::to_string))
        .unwrap_or_default();
    // pv-launch runs the scheduler's commands with its own environment, as a user's
    // shell would: SLURM_CONF must be there.
    match std::env::var("SLURM_CONF") {
        Ok(c) if c == conf => Some(conf),
        other => skip(format!(
            "SLURM_CONF is {other:?}, not {conf:?}: run `eval \"$(ci/slurm)\"` before cargo test"
        )),
    }
}

fn demo() -> String {
    workspace_bin("pv-demo-server").display().to_string()
}

/// One line of `squeue` for the jobs whose name starts with `pvl-<launch id>`, as
/// `id state` pairs (all states the controller still remembers).
fn queue(launch_id: &str) -> Vec<(String, String)> {
    let out = std::process::Command::new("squeue")
        .args(["-h", "--states=all", "-o", "%i %T %j"])
        .output()
        .expect("run squeue");
    assert!(
        out.status.success(),
        "squeue: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (id, state, name) = (w.next()?, w.next()?, w.next()?);
            name.starts_with(&format!("pvl-{launch_id}"))
                .then(|| (id.to_string(), state.to_string()))
        })
        .collect()
}

/// Fails unless every job of `launch_id` has ended (or been forgotten), within a bound.
fn assert_no_job_left(launch_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let active: Vec<_> = queue(launch_id)
            .into_iter()
            .filter(|(_, st)| {
                matches!(
                    st.as_str(),
                    "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "SUSPENDED"
                )
            })
            .collect();
        if active.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "jobs of launch {launch_id} still in the queue: {active:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Cancels every job of the launch when dropped (a failing test leaves nothing queued).
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        let _ = std::process::Command::new("scancel")
            .args(["--name", &format!("pvl-{}-batch", self.0)])
            .status();
    }
}

/// A fresh launch id for a test.
fn launch_id(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("e2e{}{tag}{nanos:x}", std::process::id())
}

fn plan_of(text: &str, launch: &str) -> Plan {
    let profile = pv_launch::profile::toml::load_str(Path::new("batch.toml"), text)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut ctx = LaunchContext::from_host();
    ctx.launch_id = Some(launch.to_string());
    Plan::resolve(&profile.servers[0], &ctx, &NonInteractive).unwrap_or_else(|e| panic!("{e}"))
}

/// What a launch reported, each with the time it arrived.
type Seen = Arc<Mutex<Vec<(Instant, Event)>>>;

fn collect() -> (pv_launch::events::EventSender, Seen) {
    let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            sink.lock().unwrap().push((Instant::now(), e));
        }
    });
    (events, seen)
}

fn job_states(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Job { state, .. } => Some(state.clone()),
            _ => None,
        })
        .collect()
}

/// Time from the first `RUNNING` job event to `connected`.
fn running_to_connected(seen: &Seen) -> Duration {
    let seen = seen.lock().unwrap();
    let running = seen
        .iter()
        .find_map(|(t, e)| {
            matches!(e, Event::Job { state, .. } if state == "RUNNING").then_some(*t)
        })
        .expect("a RUNNING job event");
    let connected = seen
        .iter()
        .find_map(|(t, e)| matches!(e, Event::Connected { .. }).then_some(*t))
        .expect("a connected event");
    connected - running
}

/// The `[[server]]` of a batch start of `argv` with `batch` and `extra` lines.
fn profile(argv: &[String], batch: &str, extra: &str) -> String {
    let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "[[server]]\nname = \"batch\"\nresource = \"cs://localhost:0\"\nconnect_timeout = 20\n\
         [server.startup]\nmechanism = \"batch\"\nargv = [{}]\nprocess_start_timeout = 30\n\
         [server.startup.batch]\nntasks = 1\ntime = \"5\"\n{batch}{extra}",
        argv.join(", ")
    )
}

fn demo_argv(extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        demo(),
        "--server-port".into(),
        "${PV_SERVER_PORT}".into(),
        "--bind-address".into(),
        "127.0.0.1".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

async fn launch(plan: &Plan, options: &LaunchOptions) -> (Result<Session, LaunchError>, Seen) {
    let (events, seen) = collect();
    let result = tokio::time::timeout(WAIT * 2, launch_with(plan, &events, options))
        .await
        .expect("the launch ends within its deadline");
    (result, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_batch_launch_connects_forward_to_the_job_and_leaves_no_job() {
    let _serial = SERIAL.lock().await;
    let Some(_conf) = cluster() else { return };
    let id = launch_id("fwd");
    let _sweep = Sweep(id.clone());
    let plan = plan_of(&profile(&demo_argv(&[]), "", ""), &id);
    let began = Instant::now();
    let (result, seen) = launch(&plan, &LaunchOptions::default()).await;
    let mut session = result.unwrap_or_else(|e| panic!("{e}"));
    // The client dialled the job's batch host (this host's node `localhost`).
    assert!(
        session.url().starts_with("cs://localhost:"),
        "{}",
        session.url()
    );
    let job = session
        .started()
        .and_then(|s| s.batch())
        .map(|b| (b.job_id().to_string(), b.job_dir().to_string()))
        .expect("a batch server");
    assert_eq!(queue(&id), vec![(job.0.clone(), "RUNNING".to_string())]);
    assert!(
        job_states(&seen).contains(&"RUNNING".to_string()),
        "{:?}",
        job_states(&seen)
    );
    // The token file was read and deleted by the job.
    assert!(!Path::new(&job.1).join("secrets").exists());
    echo(
        session.connection().expect("a connection"),
        b"through the job",
        WAIT,
    )
    .await;
    eprintln!(
        "figures: launch to connected {:?}, RUNNING to connected {:?}",
        began.elapsed(),
        running_to_connected(&seen)
    );
    session.cleanup().await;
    assert_no_job_left(&id);
    assert!(!Path::new(&job.1).exists(), "the job directory is removed");
}

/// The `[server.startup.ssh]` table reaching the loopback sshd as the test user, with the
/// cluster's config for the scheduler's commands there.
fn ssh_table(sshd: &Sshd, conf: &str, backend: &str) -> String {
    let options: Vec<String> = sshd
        .client_args(&sshd.known_hosts(), "publickey")
        .iter()
        .map(|a| format!("{a:?}"))
        .collect();
    format!(
        "[server.startup.ssh]\nhost = \"127.0.0.1\"\nuser = \"{TEST_USER}\"\nport = {}\n\
         identity_file = {:?}\noptions = [{}]\nenv = {{ SLURM_CONF = {conf:?} }}\n{backend}",
        sshd.port(),
        sshd.plain_key().display().to_string(),
        options.join(", ")
    )
}

/// The test user's home, owned by it: a user deleted and created again by another test run
/// gets a new uid while `useradd -m` leaves the old home as it was.
fn test_user_home() -> String {
    let out = std::process::Command::new("getent")
        .args(["passwd", TEST_USER])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let home = line.split(':').nth(5).unwrap_or_default().to_string();
    assert!(home.starts_with('/'), "the test user's home: {line:?}");
    let status = std::process::Command::new("chown")
        .args([&format!("{TEST_USER}:"), &home])
        .status()
        .unwrap();
    assert!(status.success(), "chown {home}");
    home
}

/// Launch options for the loopback sshd: no prompts expected, this build's pv-askpass.
fn ssh_options() -> LaunchOptions {
    let mut options = LaunchOptions::default().with_prompter(Scripted::new(vec![]));
    options.ssh.askpass = AskpassProgram::Path(workspace_bin("pv-askpass"));
    options.ssh.auth_timeout = WAIT;
    options
}

/// Fails unless the job of launch `id` runs as the ssh test user.
fn assert_runs_as_test_user(id: &str) {
    let out = std::process::Command::new("squeue")
        .args(["-h", "-u", TEST_USER, "-o", "%j %T"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("pvl-{id}-batch RUNNING")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The demo server dialling back to the profile's client host and port.
fn reverse_demo_argv() -> Vec<String> {
    [
        demo().as_str(),
        "--reverse-connection",
        "--client-host",
        "${PV_CLIENT_HOST}",
        "--server-port",
        "${PV_SERVER_PORT}",
    ]
    .map(String::from)
    .to_vec()
}

async fn batch_over_ssh(backend: &str) {
    let _serial = SERIAL.lock().await;
    let Some(conf) = cluster() else { return };
    let sshd = Sshd::start();
    let home = test_user_home();
    let id = launch_id("ssh");
    let _sweep = Sweep(id.clone());
    let plan = plan_of(
        &profile(&demo_argv(&[]), "", &ssh_table(&sshd, &conf, backend)),
        &id,
    );
    let options = ssh_options();
    let (result, seen) = launch(&plan, &options).await;
    let mut session = result.unwrap_or_else(|e| panic!("{e}"));
    // Through the -L tunnel's local end, not the job's node.
    assert!(
        session.url().starts_with("cs://127.0.0.1:"),
        "{}",
        session.url()
    );
    let stages: Vec<Stage> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Stage { stage, .. } => Some(*stage),
            _ => None,
        })
        .collect();
    assert_eq!(
        &stages[..4],
        [
            Stage::SshConnect,
            Stage::Submit,
            Stage::WaitJob,
            Stage::WaitReady
        ],
        "{stages:?}"
    );
    let dir = session
        .started()
        .and_then(|s| s.batch())
        .map(|b| b.job_dir().to_string())
        .expect("a batch server");
    // The job directory is on the login node, under the ssh user's home.
    assert!(
        dir.starts_with(&format!("{home}/.pv-launch/jobs/")),
        "{dir}"
    );
    // The job runs as the ssh user.
    assert_runs_as_test_user(&id);
    echo(
        session.connection().expect("a connection"),
        b"through ssh and the job",
        WAIT,
    )
    .await;
    eprintln!(
        "figures ({backend:?}): RUNNING to connected {:?}",
        running_to_connected(&seen)
    );
    session.cleanup().await;
    assert_no_job_left(&id);
    assert!(!Path::new(&dir).exists(), "the job directory is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_job_submitted_over_ssh_connects_through_a_tunnel_to_its_node() {
    batch_over_ssh("").await;
}

#[cfg(feature = "russh")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn russh_a_batch_job_submitted_over_ssh_connects_through_a_tunnel_to_its_node() {
    batch_over_ssh("backend = \"russh\"\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoning_the_launch_of_a_pending_job_cancels_it() {
    let _serial = SERIAL.lock().await;
    let Some(_conf) = cluster() else { return };
    let id = launch_id("pend");
    let _sweep = Sweep(id.clone());
    // A held job stays PENDING (reason JobHeldUser) until released: it never runs.
    let plan = plan_of(
        &profile(&demo_argv(&[]), "extra_options = [\"--hold\"]\n", ""),
        &id,
    );
    let (events, seen) = collect();
    let options = LaunchOptions::default();
    let launching = launch_with(&plan, &events, &options);
    let pending = async {
        let deadline = Instant::now() + WAIT;
        loop {
            if job_states(&seen).iter().any(|s| s == "PENDING") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no PENDING job event: {:?}",
                job_states(&seen)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        r = launching => panic!("the held job's launch ended: {:?}", r.err()),
        () = pending => {}
    }
    // The select dropped the launch future as it finished: the job's cancel has begun in
    // the background, so the queue shows it pending or already cancelled.
    let queued = queue(&id);
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert!(
        ["PENDING", "CANCELLED"].contains(&queued[0].1.as_str()),
        "{queued:?}"
    );
    // The launch future is dropped: its job is cancelled in the background.
    pv_launch::startup::batch::finish_pending_cancels(WAIT).await;
    let after = queue(&id);
    assert!(
        after.iter().all(|(_, st)| st == "CANCELLED"),
        "the job is cancelled: {after:?}"
    );
    assert_no_job_left(&id);
    let dir = format!(
        "{}/.pv-launch/jobs/{id}",
        std::env::var("HOME").unwrap_or_default()
    );
    assert!(!Path::new(&dir).exists(), "{dir} is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_failing_at_start_names_its_state_and_shows_its_output() {
    let _serial = SERIAL.lock().await;
    let Some(_conf) = cluster() else { return };
    let id = launch_id("fail");
    let _sweep = Sweep(id.clone());
    let argv: Vec<String> = [
        "/bin/sh",
        "-c",
        "echo 'demo: cannot open the data set /no/such/file' >&2; exit 3",
    ]
    .map(String::from)
    .to_vec();
    let plan = plan_of(&profile(&argv, "", ""), &id);
    let (result, seen) = launch(&plan, &LaunchOptions::default()).await;
    let e = result.expect_err("the job fails").to_string();
    assert!(e.contains("ended FAILED"), "{e}");
    assert!(e.contains("exit code 3:0"), "{e}");
    assert!(
        e.contains("demo: cannot open the data set /no/such/file"),
        "{e}"
    );
    assert!(
        job_states(&seen).contains(&"FAILED".to_string()),
        "{:?}",
        job_states(&seen)
    );
    assert_no_job_left(&id);
}

/// The job's watchdog here: `sh -c <script> pv-launch-watch <job id> <dir>`.
fn watchdog_pids(job_id: &str) -> Vec<String> {
    let out = std::process::Command::new("ps")
        .args(["-e", "-o", "pid=,args="])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pv-launch-watch {job_id} ")))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// A SIGKILLed pv-launch runs no code, yet its job is cancelled: its watchdog's pipe closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_of_a_sigkilled_pv_launch_is_cancelled_by_its_watchdog() {
    killed_pv_launch(false).await;
}

/// With its watchdog killed too (say by an OOM killer), the job stays: `pv-launch jobs`
/// finds it and `--cancel` ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pv_launch_jobs_finds_and_cancels_the_job_of_a_killed_pv_launch() {
    killed_pv_launch(true).await;
}

async fn killed_pv_launch(kill_watchdog: bool) {
    let _serial = SERIAL.lock().await;
    let Some(_conf) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let profile_path = dir.path().join("batch.toml");
    // --multi-clients: the server outlives its first client, so the job keeps running
    // after pv-launch (its client) is gone.
    std::fs::write(
        &profile_path,
        profile(&demo_argv(&["--multi-clients"]), "", ""),
    )
    .unwrap();
    let bin = workspace_bin("pv-launch");
    let mut child = tokio::process::Command::new(&bin)
        .args([
            "--profile",
            profile_path.to_str().unwrap(),
            "--no-prompt",
            "--json",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    // Read events until the job runs and the client is connected.
    let mut job_id = None;
    let connected = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["event"] == "job" {
                job_id = v["id"].as_str().map(str::to_string);
            }
            if v["event"] == "connected" {
                return true;
            }
        }
        false
    })
    .await
    .expect("connected within the deadline");
    assert!(connected, "pv-launch ended before connecting");
    let job_id = job_id.expect("a job event with the id");
    let _sweep = scopeguard_cancel(&job_id);
    let watchdog = watchdog_pids(&job_id);
    assert_eq!(
        watchdog.len(),
        1,
        "one watchdog for job {job_id}: {watchdog:?}"
    );
    if kill_watchdog {
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &watchdog[0]])
            .status()
            .unwrap();
        assert!(killed.success());
    }
    // SIGKILL: pv-launch cannot cancel anything now.
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    if !kill_watchdog {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = std::process::Command::new("squeue")
                .args(["-h", "--states=all", "-j", &job_id, "-o", "%T"])
                .output()
                .unwrap();
            let st = String::from_utf8_lossy(&st.stdout).trim().to_string();
            if (st.is_empty() || st == "CANCELLED") && watchdog_pids(&job_id).is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} is {st} after its pv-launch was killed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, listed, err) = run(&["jobs"]);
    assert_eq!(code, Some(0), "{err}");
    let line = listed
        .lines()
        .find(|l| l.split_whitespace().next() == Some(job_id.as_str()))
        .unwrap_or_else(|| panic!("job {job_id} is listed:\n{listed}"));
    assert!(
        line.contains("RUNNING") && line.contains("-batch"),
        "{line}"
    );
    let (code, out, err) = run(&["jobs", "--cancel", &job_id]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("job {job_id}: CANCELLED")), "{out}");
    let (_, listed, _) = run(&["jobs"]);
    assert!(
        !listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(job_id.as_str())),
        "{listed}"
    );
    let st = std::process::Command::new("squeue")
        .args(["-h", "--states=all", "-j", &job_id, "-o", "%T"])
        .output()
        .unwrap();
    let st = String::from_utf8_lossy(&st.stdout).trim().to_string();
    assert!(st.is_empty() || st == "CANCELLED", "{st}");
}

/// `scancel ID` when dropped.
fn scopeguard_cancel(id: &str) -> impl Drop {
    struct Cancel(String);
    impl Drop for Cancel {
        fn drop(&mut self) {
            let _ = std::process::Command::new("scancel").arg(&self.0).status();
        }
    }
    Cancel(id.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_batch_job_dials_back_for_a_reverse_connection() {
    let _serial = SERIAL.lock().await;
    let Some(_conf) = cluster() else { return };
    let id = launch_id("rev");
    let _sweep = Sweep(id.clone());
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let argv: Vec<String> = [
        demo().as_str(),
        "--reverse-connection",
        "--client-host",
        "127.0.0.1",
        "--server-port",
        "${PV_SERVER_PORT}",
    ]
    .map(String::from)
    .to_vec();
    let text = profile(&argv, "", "").replace(
        "resource = \"cs://localhost:0\"",
        &format!("resource = \"csrc://localhost:{port}\""),
    );
    let plan = plan_of(&text, &id);
    let (result, _) = launch(&plan, &LaunchOptions::default()).await;
    let mut session = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(session.url(), format!("csrc://:{port}"));
    echo(
        session.connection().expect("a connection"),
        b"dialled back from the job",
        WAIT,
    )
    .await;
    session.cleanup().await;
    assert_no_job_left(&id);
}

/// The test user's relay processes (`python3` running pv-launch's relay; `ps`, one line
/// each).
fn relays() -> Vec<String> {
    let out = std::process::Command::new("ps")
        .args(["-u", TEST_USER, "-o", "pid=,args="])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            let args = l.trim_start().split_once(' ').map_or("", |(_, a)| a);
            args.starts_with("python3 ") && args.contains("pv-launch-ready")
        })
        .map(str::to_string)
        .collect()
}

/// A reverse connection from a job submitted over ssh: the -R tunnel stays on the login
/// node's loopback and pv-launch's relay (python3, started through the same ssh
/// connection) listens where the compute node dials; the job learns the relay's port.
/// Afterwards: no job, no relay.
async fn reverse_over_ssh(backend: &str, gateway_ports: bool) {
    let _serial = SERIAL.lock().await;
    let Some(conf) = cluster() else { return };
    let sshd = if gateway_ports {
        Sshd::start_with_gateway_ports("clientspecified")
    } else {
        Sshd::start()
    };
    let via = if gateway_ports {
        "reverse_via = \"gateway-ports\"\n"
    } else {
        ""
    };
    test_user_home();
    let id = launch_id("rrev");
    let _sweep = Sweep(id.clone());
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let argv = reverse_demo_argv();
    // Network traffic stays on loopback: the relay listens on the "login node's"
    // 127.0.0.1, which the "compute node" (this host) dials.
    let text = profile(
        &argv,
        &format!("reverse_host = \"127.0.0.1\"\n{via}"),
        &ssh_table(&sshd, &conf, backend),
    )
    .replace(
        "resource = \"cs://localhost:0\"",
        &format!("resource = \"csrc://localhost:{port}\""),
    );
    let plan = plan_of(&text, &id);
    let options = ssh_options();
    let (result, seen) = launch(&plan, &options).await;
    let mut session = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(session.url(), format!("csrc://:{port}"));
    // The job dials the relay, not the client's port (which only this host's loopback has);
    // with gateway ports, sshd's -R port bound on all interfaces (the port in the job's
    // ready line: the one it dialled).
    let running = relays();
    if gateway_ports {
        assert!(running.is_empty(), "no relay: {running:?}");
        let dialled = seen
            .lock()
            .unwrap()
            .iter()
            .find_map(|(_, e)| match e {
                Event::Ready { port, .. } => Some(*port),
                _ => None,
            })
            .expect("a ready event");
        let ss = std::process::Command::new("ss")
            .args(["-Htln", &format!("sport = :{dialled}")])
            .output()
            .unwrap();
        let ss = String::from_utf8_lossy(&ss.stdout);
        assert!(ss.contains(&format!("0.0.0.0:{dialled}")), "{ss}");
    } else {
        assert_eq!(running.len(), 1, "one relay on the login node: {running:?}");
    }
    assert_runs_as_test_user(&id);
    echo(
        session.connection().expect("a connection"),
        b"dialled back through the relay",
        WAIT,
    )
    .await;
    eprintln!(
        "figures ({backend:?}, reverse, gateway ports {gateway_ports}): RUNNING to connected {:?}",
        running_to_connected(&seen)
    );
    session.cleanup().await;
    assert_no_job_left(&id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !relays().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the relay outlived the session: {:?}",
            relays()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_submitted_over_ssh_dials_back_through_the_relay_on_the_login_node() {
    reverse_over_ssh("", false).await;
}

/// `reverse_via = "gateway-ports"` against an sshd with `GatewayPorts clientspecified`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_submitted_over_ssh_dials_back_through_a_gateway_port() {
    reverse_over_ssh("", true).await;
}

#[cfg(feature = "russh")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn russh_a_job_submitted_over_ssh_dials_back_through_a_gateway_port() {
    reverse_over_ssh("backend = \"russh\"\n", true).await;
}

#[cfg(feature = "russh")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn russh_a_job_submitted_over_ssh_dials_back_through_the_relay_on_the_login_node() {
    reverse_over_ssh("backend = \"russh\"\n", false).await;
}

/// `pv-launch jobs --profile P` asks the profile's login node over ssh: a pv-launch job of
/// the ssh user there (tagged as a launch tags it, held so it stays queued) is listed and
/// cancelled, and its job directory on the login node removed — a job that `pv-launch jobs`
/// on this host (another user) does not see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pv_launch_jobs_with_a_profile_lists_and_cancels_on_the_login_node_over_ssh() {
    let _serial = SERIAL.lock().await;
    let Some(conf) = cluster() else { return };
    let sshd = Sshd::start();
    let home = test_user_home();
    let id = launch_id("rjobs");
    let _sweep = Sweep(id.clone());
    // A job as a killed launch leaves it: tagged, with its private directory.
    let job_dir = format!("{home}/.pv-launch/jobs/{id}");
    let staged = std::process::Command::new("runuser")
        .args([
            "-u",
            TEST_USER,
            "--",
            "sh",
            "-c",
            "umask 077; mkdir -p \"$1\"",
            "sh",
            &job_dir,
        ])
        .status()
        .unwrap();
    assert!(staged.success());
    let out = std::process::Command::new("runuser")
        .args([
            "-u",
            TEST_USER,
            "--",
            "sbatch",
            "--parsable",
            "--hold",
            &format!("--job-name=pvl-{id}-batch"),
            &format!("--comment=pv-launch:{id}"),
            "--output=/dev/null",
            "--wrap=sleep 300",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let _cancel = scopeguard_cancel(&job_id);
    let dir = tempfile::tempdir().unwrap();
    let profile_path = dir.path().join("cluster.toml");
    std::fs::write(
        &profile_path,
        profile(&demo_argv(&[]), "", &ssh_table(&sshd, &conf, "")),
    )
    .unwrap();
    let bin = workspace_bin("pv-launch");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let listed_in = |listing: &str| {
        listing
            .lines()
            .find(|l| l.split_whitespace().next() == Some(job_id.as_str()))
            .map(str::to_string)
    };
    let p = profile_path.to_str().unwrap();
    let (code, listed, err) = run(&["jobs", "--profile", p]);
    assert_eq!(code, Some(0), "{err}");
    let line = listed_in(&listed).unwrap_or_else(|| panic!("job {job_id} listed:\n{listed}{err}"));
    assert!(
        line.contains("PENDING") && line.contains(&format!("pvl-{id}-batch")),
        "{line}"
    );
    // This host's user (root) has no such job: the listing came from the login node.
    let (_, here, _) = run(&["jobs"]);
    assert!(listed_in(&here).is_none(), "{here}");
    let (code, out, err) = run(&[
        "jobs",
        "--profile",
        p,
        "--server",
        "batch",
        "--cancel",
        &job_id,
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!("job {job_id}: CANCELLED")),
        "{out}{err}"
    );
    assert_no_job_left(&id);
    assert!(
        !Path::new(&job_dir).exists(),
        "the job directory is removed"
    );
    let (code, listed, err) = run(&["jobs", "--profile", p]);
    assert_eq!(code, Some(0), "{err}");
    assert!(listed_in(&listed).is_none(), "{listed}");
}

/// A session dropped without `cleanup`, without `finish_pending_cancels`, and with its
/// runtime shut down at once (an embedder that forgets both, a process that exits): the
/// job's watchdog (an `sh` here, or on the login node in the cleanup wrapper) cancels the
/// job anyway, with no code of pv-launch's running any more.
fn dropped_session_cancels(ssh: Option<&str>) {
    let _serial = SERIAL.blocking_lock();
    let Some(conf) = cluster() else { return };
    let sshd = ssh.map(|_| Sshd::start());
    if sshd.is_some() {
        test_user_home();
    }
    let id = launch_id("drop");
    let _sweep = Sweep(id.clone());
    let table = match (&sshd, ssh) {
        (Some(sshd), Some(backend)) => ssh_table(sshd, &conf, backend),
        _ => String::new(),
    };
    let plan = plan_of(&profile(&demo_argv(&[]), "", &table), &id);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let session = runtime.block_on(async {
        let options = ssh_options();
        let (result, _) = launch(&plan, &options).await;
        result.unwrap_or_else(|e| panic!("{e}"))
    });
    let running: Vec<_> = queue(&id)
        .into_iter()
        .filter(|(_, st)| st == "RUNNING")
        .collect();
    assert_eq!(running.len(), 1, "{running:?}");
    drop(session);
    drop(runtime);
    assert_no_job_left(&id);
}

#[test]
fn a_dropped_local_session_cancels_its_job_without_any_call() {
    dropped_session_cancels(None);
}

#[test]
fn a_dropped_session_over_ssh_cancels_its_job_without_any_call() {
    dropped_session_cancels(Some(""));
}

#[cfg(feature = "russh")]
#[test]
fn russh_a_dropped_session_over_ssh_cancels_its_job_without_any_call() {
    dropped_session_cancels(Some("backend = \"russh\"\n"));
}

/// A login node without python3 (a PATH that has only `sh` and `uname`): the relay cannot
/// run, and the launch says so, naming the other ways, before anything is submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_node_without_python3_is_refused_before_the_submission() {
    let _serial = SERIAL.lock().await;
    let Some(conf) = cluster() else { return };
    let sshd = Sshd::start();
    test_user_home();
    let id = launch_id("nopy");
    let _sweep = Sweep(id.clone());
    let bin = tempfile::Builder::new()
        .prefix("pvl-nopy")
        .tempdir_in("/tmp")
        .unwrap();
    for tool in ["sh", "uname"] {
        let real = which(tool);
        std::os::unix::fs::symlink(&real, bin.path().join(tool)).unwrap();
    }
    std::fs::set_permissions(
        bin.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let table = ssh_table(&sshd, &conf, "").replace(
        "env = {",
        &format!("env = {{ PATH = {:?},", bin.path().display().to_string()),
    );
    let argv = reverse_demo_argv();
    let text = profile(&argv, "", &table).replace(
        "resource = \"cs://localhost:0\"",
        "resource = \"csrc://localhost:0\"",
    );
    let plan = plan_of(&text, &id);
    let options = ssh_options();
    let (result, _) = launch(&plan, &options).await;
    let e = result.expect_err("no python3, no relay").to_string();
    assert!(
        e.contains("needs python3 on the login node") && e.contains("gateway-ports"),
        "{e}"
    );
    assert!(queue(&id).is_empty(), "nothing was submitted");
}

/// `reverse_via = "gateway-ports"` against an sshd with OpenSSH's default
/// `GatewayPorts no`: sshd binds the -R port on its loopback, which no compute node
/// reaches; the launch says so, naming both fixes, before anything is submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_ports_refused_by_the_login_nodes_sshd_fail_before_the_submission() {
    let _serial = SERIAL.lock().await;
    let Some(conf) = cluster() else { return };
    let sshd = Sshd::start_with_gateway_ports("no");
    test_user_home();
    let id = launch_id("gwno");
    let _sweep = Sweep(id.clone());
    let argv = reverse_demo_argv();
    let text = profile(
        &argv,
        "reverse_host = \"127.0.0.1\"\nreverse_via = \"gateway-ports\"\n",
        &ssh_table(&sshd, &conf, ""),
    )
    .replace(
        "resource = \"cs://localhost:0\"",
        "resource = \"csrc://localhost:0\"",
    );
    let plan = plan_of(&text, &id);
    let options = ssh_options();
    let (result, _) = launch(&plan, &options).await;
    let e = result
        .expect_err("a loopback-only gateway port")
        .to_string();
    assert!(
        e.contains("loopback only")
            && e.contains("GatewayPorts clientspecified")
            && e.contains("reverse_via = \"relay\""),
        "{e}"
    );
    assert!(queue(&id).is_empty(), "nothing was submitted");
}

fn which(tool: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", "command -v \"$1\"", "sh", tool])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const PVSERVER: &str = "/usr/bin/pvserver";
const PVPYTHON: &str = "/usr/bin/pvpython";

/// The pvpython client: ParaView's handshake end to end, as in `handoff_clients.rs`. It
/// dials (`cs://`) or listens (`csrc://`) where its `--url=` says, prints `connected`
/// once the server is its, then the point count of a sphere the server computed.
fn pvpython_client(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("client.py");
    std::fs::write(
        &path,
        r#"import sys
from paraview.simple import *
url = [a[len("--url="):] for a in sys.argv[1:] if a.startswith("--url=")][0]
scheme, rest = url.split("://", 1)
host, port = rest.rsplit(":", 1)
if scheme == "csrc":
    ReverseConnect(port)
else:
    Connect(host, int(port))
assert servermanager.ActiveConnection.IsRemote(), "not connected"
print("connected", flush=True)
s = Sphere(ThetaResolution=16, PhiResolution=16)
s.UpdatePipeline()
print("points", s.GetDataInformation().GetNumberOfPoints(), flush=True)
"#,
    )
    .unwrap();
    path
}

/// Processes (pid, argv) whose environment holds `PVL_TEST_MARK=<mark>`: the job's
/// pvserver carries it (the profile's `env`), whoever runs it.
fn marked_processes(mark: &str) -> Vec<(u32, String)> {
    let needle = format!("PVL_TEST_MARK={mark}");
    let mut out = vec![];
    for pid in pv_e2e::pids() {
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) && pv_e2e::running(pid) {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            out.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    out
}

/// What a `pv-launch --json` run printed, each line with the time it arrived.
#[derive(Default)]
struct Transcript {
    events: Vec<(Instant, serde_json::Value)>,
    stderr: Vec<(Instant, String)>,
}

impl Transcript {
    fn event(&self, name: &str) -> Option<&serde_json::Value> {
        self.events
            .iter()
            .map(|(_, e)| e)
            .find(|e| e["event"] == name)
    }

    fn context(&self) -> String {
        let events: Vec<String> = self.events.iter().map(|(_, e)| e.to_string()).collect();
        let stderr: Vec<&str> = self.stderr.iter().map(|(_, l)| l.as_str()).collect();
        format!(
            "events:\n{}\nstderr:\n{}",
            events.join("\n"),
            stderr.join("\n")
        )
    }

    /// From the job event saying RUNNING to the hand-off event, and to the client's
    /// `connected` line.
    fn running_to_handoff_and_client_connected(&self) -> (Duration, Duration) {
        let at = |what: &str, pred: &dyn Fn(&serde_json::Value) -> bool| {
            self.events
                .iter()
                .find(|(_, e)| pred(e))
                .map(|(t, _)| *t)
                .unwrap_or_else(|| panic!("{what}: {}", self.context()))
        };
        let running = at("a RUNNING job event", &|e| {
            e["event"] == "job" && e["state"] == "RUNNING"
        });
        let handoff = at("a handoff event", &|e| e["event"] == "handoff");
        let connected = self
            .stderr
            .iter()
            .find(|(_, l)| l.trim() == "connected")
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("the client's connected line: {}", self.context()));
        (handoff - running, connected - running)
    }
}

/// Run `pv-launch --json --profile <profile>` to its end (bounded): its exit code and
/// transcript.
async fn run_cli(profile: &Path) -> (Option<i32>, Transcript) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(workspace_bin("pv-launch"))
        .args(["--json", "--no-prompt", "--profile"])
        .arg(profile)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Transcript::default();
    let ran = tokio::time::timeout(WAIT * 3, async {
        let (mut out_open, mut err_open) = (true, true);
        while out_open || err_open {
            tokio::select! {
                l = out.next_line(), if out_open => match l.unwrap() {
                    Some(l) => seen.events.push((Instant::now(), serde_json::from_str(&l)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))),
                    None => out_open = false,
                },
                l = err.next_line(), if err_open => match l.unwrap() {
                    Some(l) => seen.stderr.push((Instant::now(), l)),
                    None => err_open = false,
                },
            }
        }
        child.wait().await.unwrap()
    })
    .await;
    match ran {
        Ok(status) => (status.code(), seen),
        Err(_) => panic!("pv-launch ran on: {}", seen.context()),
    }
}

/// Debian's pvserver in a batch job (run directly in the job: under `srun` its MPI_Init
/// finds no PMI on this cluster), handed to pvpython by the CLI: forward (the client dials
/// the job's batch host, or the `-L` tunnel's local end over ssh) or reverse (pvserver
/// dials the client, or over ssh the relay on the login node). pv-launch waits for
/// pvserver's "Accepting connection(s)" line in the job's stdout file (forward) or for the
/// job to run (reverse) and never connects itself; pvpython gets the sphere computed on
/// the server. Afterwards: no job in the queue, no pvserver.
async fn pvserver_in_a_job(reverse: bool, ssh: Option<&str>) {
    let _serial = SERIAL.lock().await;
    let Some(conf) = cluster() else { return };
    if !pv_e2e::have_parts(&[PVSERVER, PVPYTHON], true) {
        return;
    }
    let sshd = ssh.map(|_| Sshd::start());
    if sshd.is_some() {
        test_user_home();
    }
    let tag = if reverse { "pvrev" } else { "pvfwd" };
    let id = launch_id(tag);
    let _sweep = Sweep(id.clone());
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // Locally the client listens on 127.0.0.1, which the job on this node dials; over ssh
    // the job dials the relay (the login node's host and port, filled in at run time).
    let (scheme, dial_back) = match (reverse, ssh) {
        (true, None) => (
            "csrc",
            "\"--reverse-connection\", \"--client-host=127.0.0.1\", ",
        ),
        (true, Some(_)) => (
            "csrc",
            "\"--reverse-connection\", \"--client-host=${PV_CLIENT_HOST}\", ",
        ),
        (false, _) => ("cs", ""),
    };
    let (table, batch) = match (&sshd, ssh) {
        (Some(sshd), Some(backend)) => (
            ssh_table(sshd, &conf, backend),
            "reverse_host = \"127.0.0.1\"\n",
        ),
        _ => (String::new(), ""),
    };
    let client = pvpython_client(dir.path()).display().to_string();
    let text = format!(
        "client = [\"{PVPYTHON}\", {client:?}, \"--url=${{PV_LAUNCH_URL}}\"]\n\
         [[server]]\nname = \"batch\"\nresource = \"{scheme}://localhost:{port}\"\n\
         handshake = \"paraview\"\nconnect_timeout = 30\n\
         env = {{ PVL_TEST_MARK = \"{id}\" }}\n\
         [server.startup]\nmechanism = \"batch\"\n\
         argv = [\"{PVSERVER}\", {dial_back}\"--server-port=${{PV_SERVER_PORT}}\"]\n\
         process_start_timeout = 60\n\
         [server.startup.batch]\nntasks = 1\ntime = \"5\"\nin_job = \"direct\"\n{batch}{table}",
    );
    let profile_path = dir.path().join("pvserver-slurm.toml");
    std::fs::write(&profile_path, &text).unwrap();
    let (code, seen) = run_cli(&profile_path).await;
    assert_eq!(code, Some(0), "{text}\n{}", seen.context());
    assert!(
        seen.stderr.iter().any(|(_, l)| l.contains("points 226")),
        "{}",
        seen.context()
    );
    assert!(
        seen.event("connected").is_none(),
        "pv-launch connected itself: {}",
        seen.context()
    );
    // Forward, pvserver's "Accepting connection(s)" line was awaited; reverse, the job
    // running was enough.
    let waited_for_pattern = seen
        .events
        .iter()
        .any(|(_, e)| e["event"] == "stage" && e["stage"] == "wait-pattern");
    assert_eq!(waited_for_pattern, !reverse, "{}", seen.context());
    let url = seen.event("handoff").expect("a handoff event")["url"]
        .as_str()
        .unwrap()
        .to_string();
    // Forward locally: the job's batch host (this host's node `localhost`, resolved) and
    // the fixed port; over ssh the tunnel's local end; reverse: where the client listens.
    let expected = match (reverse, &sshd) {
        (false, Some(_)) => "cs://127.0.0.1:".to_string(),
        _ => format!("{scheme}://127.0.0.1:{port}"),
    };
    assert!(url.starts_with(&expected), "{url} vs {expected}");
    let (handoff, connected) = seen.running_to_handoff_and_client_connected();
    eprintln!(
        "figures (pvserver, {scheme}, {}): RUNNING to hand-off {handoff:?}, to pvpython \
         connected {connected:?}",
        ssh.map_or("local".to_string(), |b| format!("ssh {b:?}")),
    );
    assert!(seen.event("cleaned-up").is_some(), "{}", seen.context());
    assert_no_job_left(&id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marked_processes(&id).is_empty() {
        assert!(
            Instant::now() < deadline,
            "pvserver outlived the session: {:?}",
            marked_processes(&id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pvpython_drives_a_pvserver_in_a_local_batch_job_forward() {
    pvserver_in_a_job(false, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pvpython_drives_a_pvserver_in_a_local_batch_job_reverse() {
    pvserver_in_a_job(true, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pvpython_drives_a_pvserver_in_a_job_submitted_over_ssh_forward() {
    pvserver_in_a_job(false, Some("")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pvpython_drives_a_pvserver_in_a_job_submitted_over_ssh_reverse() {
    pvserver_in_a_job(true, Some("")).await;
}

/// A reverse server without a ready line (`handshake = "none"`) is ready once its job runs
/// and then `delay` has passed, as with a local start: a server that stays is handed over
/// no sooner (the client, listening first, gets its bytes); one whose job ends within the
/// delay fails the launch and is never handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverse_server_without_a_ready_line_waits_its_delay_once_the_job_runs() {
    let _serial = SERIAL.lock().await;
    let Some(_conf) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Listens, takes one connection, prints what came until it closed.
    let client = dir.path().join("client.py");
    std::fs::write(
        &client,
        "import socket, sys\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', int(sys.argv[1])))\n\
         s.listen(1)\n\
         c, _ = s.accept()\n\
         got = b''\n\
         while True:\n\
         \x20   d = c.recv(100)\n\
         \x20   if not d:\n\
         \x20       break\n\
         \x20   got += d\n\
         print('client got', got.decode().strip(), file=sys.stderr)\n",
    )
    .unwrap();
    for works in [true, false] {
        let id = launch_id(if works { "dly" } else { "dlyx" });
        let _sweep = Sweep(id.clone());
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        // The server dials the client and stays 15 s (well past the delay); the failing
        // one exits 2 s after its start, within the delay.
        let (script, delay) = if works {
            (
                format!("(echo hi; sleep 15) | socat - TCP:127.0.0.1:{port}"),
                3,
            )
        } else {
            ("sleep 2; exit 3".to_string(), 10)
        };
        let text = format!(
            "client = [\"python3\", {client:?}, \"{port}\"]\n\
             [[server]]\nname = \"batch\"\nresource = \"csrc://localhost:{port}\"\n\
             handshake = \"none\"\nconnect_timeout = 10\n\
             [server.startup]\nmechanism = \"batch\"\n\
             argv = [\"/bin/sh\", \"-c\", {script:?}]\n\
             process_start_timeout = 30\ndelay = {delay}\n\
             [server.startup.batch]\nntasks = 1\ntime = \"5\"\nin_job = \"direct\"\n",
            client = client.display().to_string(),
        );
        let path = dir.path().join(format!("{id}.toml"));
        std::fs::write(&path, &text).unwrap();
        let (code, seen) = run_cli(&path).await;
        if works {
            assert_eq!(code, Some(0), "{text}\n{}", seen.context());
            let at = |pred: &dyn Fn(&serde_json::Value) -> bool| {
                seen.events
                    .iter()
                    .find(|(_, e)| pred(e))
                    .map(|(t, _)| *t)
                    .unwrap_or_else(|| panic!("{}", seen.context()))
            };
            let running = at(&|e| e["event"] == "job" && e["state"] == "RUNNING");
            let handoff = at(&|e| e["event"] == "handoff");
            assert!(
                handoff - running >= Duration::from_secs(delay),
                "handed over {:?} after RUNNING, before the delay: {}",
                handoff - running,
                seen.context()
            );
            assert!(
                seen.stderr.iter().any(|(_, l)| l.contains("client got hi")),
                "{}",
                seen.context()
            );
        } else {
            assert_eq!(code, Some(1), "{}", seen.context());
            assert!(seen.event("failed").is_some(), "{}", seen.context());
            assert!(seen.event("handoff").is_none(), "{}", seen.context());
        }
        assert_no_job_left(&id);
    }
}

/// A server without a ready line and a written `ready_pattern` (`handshake = "none"`): a
/// line on its stderr (the job's output file) that matches hands it to the client; one
/// that never comes fails within `process_start_timeout` once the job runs, naming the
/// pattern's wait and showing the job's output, and the job is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_written_ready_pattern_is_matched_in_the_jobs_output_or_fails_in_time() {
    let _serial = SERIAL.lock().await;
    let Some(_conf) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (pattern, works) in [("^listening on [0-9]+$", true), ("^never printed$", false)] {
        let id = launch_id(if works { "pat" } else { "nopat" });
        let _sweep = Sweep(id.clone());
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let text = format!(
            "client = [\"/bin/sh\", \"-c\", \"echo client got $PV_LAUNCH_URL\"]\n\
             [[server]]\nname = \"batch\"\nresource = \"cs://localhost:{port}\"\n\
             handshake = \"none\"\nconnect_timeout = 10\n\
             [server.startup]\nmechanism = \"batch\"\n\
             argv = [\"/bin/sh\", \"-c\", \"echo listening on $0 >&2; exec sleep 120\", \"${{PV_SERVER_PORT}}\"]\n\
             process_start_timeout = 3\nready_pattern = {pattern:?}\n\
             [server.startup.batch]\nntasks = 1\ntime = \"5\"\nin_job = \"direct\"\n"
        );
        let path = dir.path().join(format!("{id}.toml"));
        std::fs::write(&path, &text).unwrap();
        let (code, seen) = run_cli(&path).await;
        if works {
            assert_eq!(code, Some(0), "{text}\n{}", seen.context());
            assert!(
                seen.stderr
                    .iter()
                    .any(|(_, l)| l.contains(&format!("client got cs://127.0.0.1:{port}"))),
                "{}",
                seen.context()
            );
        } else {
            assert_eq!(code, Some(1), "{}", seen.context());
            let failed = seen.event("failed").expect("a failed event")["message"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(
                failed.contains(
                    "waited 3 s for a line of the server's output matching the ready pattern"
                ) && failed.contains("the job was cancelled")
                    && failed.contains(&format!("listening on {port}")),
                "{failed}"
            );
            assert!(seen.event("client").is_none(), "{}", seen.context());
        }
        assert_no_job_left(&id);
    }
}
