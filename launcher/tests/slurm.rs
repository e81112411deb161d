//! Batch starts against a real single-node Slurm, started by `ci/slurm` (Debian 12's 22.05:
//! munge, slurmctld, slurmd; 2 CPUs).
//!
//! Each test starts from `ci/slurm` (a quick no-op when the cluster is up). Without Slurm
//! (packages missing, not root) a test skips with a message, except under `CI=true`, where
//! that is a failure. Tests take one lock so they do not queue behind each other's jobs on
//! the 2-CPU node, and each checks at the end that none of its jobs is left in the queue.
//!
//! Run: `cargo test -p pv-launch --test slurm -- --nocapture` (the measurement test prints
//! its figures).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pv_launch::startup::batch::{
    BatchPlan, BatchSpec, CountingRunner, InJob, JobState, JobStatus, LaunchId, LocalRunner,
    PollSchedule, Runner, Slurm, Submitted, TrackEvent, WallTime,
};
use pv_transport::Token;
use pv_transport::launch::Secrets;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CI_SLURM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ci/slurm");

/// The running test cluster.
struct Cluster {
    conf: String,
}

impl Cluster {
    fn runner(&self, timeout: Duration) -> CountingRunner<LocalRunner> {
        CountingRunner::new(LocalRunner::new(timeout).with_env("SLURM_CONF", &self.conf))
    }

    fn ci_slurm(&self, what: &str) {
        let out = std::process::Command::new(CI_SLURM)
            .arg(what)
            .output()
            .expect("run ci/slurm");
        assert!(
            out.status.success(),
            "ci/slurm {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Start (or find) the cluster; `None` (test skipped) when Slurm is not available here.
fn cluster() -> Option<Cluster> {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let skip = |why: String| {
        if ci {
            panic!("CI=true but the Slurm test cluster is not available: {why}");
        }
        eprintln!(
            "SKIPPED: no Slurm test cluster: {why} (run `ci/slurm` as root after `apt-get install slurmctld slurmd slurm-client munge`)"
        );
        None
    };
    let uid = std::process::Command::new("id").arg("-u").output();
    if !matches!(&uid, Ok(o) if o.stdout == b"0\n") {
        return skip("ci/slurm needs root".into());
    }
    let out = match std::process::Command::new(CI_SLURM).output() {
        Ok(out) => out,
        Err(e) => return skip(format!("cannot run {CI_SLURM}: {e}")),
    };
    if !out.status.success() {
        return skip(format!(
            "ci/slurm failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let conf = stdout
        .lines()
        .find_map(|l| l.strip_prefix("export SLURM_CONF="))
        .unwrap_or("/etc/slurm/slurm.conf")
        .to_string();
    Some(Cluster { conf })
}

/// A fake server: reports its task, reads the secrets line (task 0), says what it got
/// without the token, prints a ready line, then sleeps `$1` seconds (or fails with `$2`).
const FAKE_SERVER: &str = r#"#!/bin/sh
echo "task ${SLURM_PROCID:-0} of ${SLURM_NTASKS:-1}"
if [ "${SLURM_PROCID:-0}" != 0 ]; then sleep "$1"; exit 0; fi
if ! IFS= read -r line; then echo "fake-server: no secrets line on stdin" >&2; exit 3; fi
case "$line" in
"pv-launch-secrets v1 token="*) ;;
*) echo "fake-server: not a secrets line" >&2; exit 4 ;;
esac
tok=${line#*token=}
tok=${tok%% *}
echo "secrets-ok len=${#tok} last4=$(printf %s "$tok" | cut -c61-64)"
if [ -n "${2:-}" ]; then echo "fake-server: giving up: configuration missing" >&2; exit "$2"; fi
echo "pv-launch-ready v1 port=4242 handshake=native protocol=1"
sleep "$1"
"#;

/// A test's private files and fake server; when dropped (also on a failed assertion) it
/// cancels every job it planned, so a failing test leaves nothing queued for the next one.
struct Fixture {
    dir: tempfile::TempDir,
    server: PathBuf,
    conf: String,
    names: std::cell::RefCell<Vec<String>>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for name in self.names.borrow().iter() {
            let _ = std::process::Command::new("scancel")
                .args(["--name", name])
                .env("SLURM_CONF", &self.conf)
                .status();
        }
    }
}

fn fixture(cluster: &Cluster) -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("pv-slurm-test-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let server = dir.path().join("fake-server.sh");
    std::fs::write(&server, FAKE_SERVER).unwrap();
    std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755)).unwrap();
    Fixture {
        dir,
        server,
        conf: cluster.conf.clone(),
        names: Default::default(),
    }
}

impl Fixture {
    fn jobs_dir(&self) -> String {
        self.dir.path().join("jobs").to_string_lossy().into_owned()
    }

    fn plan(&self, spec: BatchSpec, tag: &str, args: &[&str]) -> BatchPlan {
        let id = LaunchId::new(format!("t{}-{tag}", std::process::id())).unwrap();
        let mut argv = vec![self.server.to_string_lossy().into_owned()];
        argv.extend(args.iter().map(|a| a.to_string()));
        let plan = BatchPlan::new(spec, id, &self.jobs_dir(), &argv, &[]).unwrap();
        self.names
            .borrow_mut()
            .push(plan.spec.job_name_for(&plan.launch_id));
        plan
    }
}

fn secrets() -> (Token, String) {
    let token = Token::generate();
    let line = Secrets {
        token: token.clone(),
        client_cert: None,
    }
    .to_line();
    (token, line)
}

/// Follow the job until it ends (bounded); every event in order.
async fn follow<R: Runner>(
    plan: &BatchPlan,
    slurm: &Slurm<R>,
    job: &Submitted,
    within: Duration,
) -> Vec<TrackEvent> {
    let mut tracker = plan
        .tracker(slurm, job)
        .with_walltime_lead(Duration::from_secs(50));
    let mut events = Vec::new();
    let run = async {
        while let Some(ev) = tracker.next_event().await.expect("tracking") {
            eprintln!("  event: {ev:?}");
            events.push(ev);
        }
    };
    if tokio::time::timeout(within, run).await.is_err() {
        let _ = slurm.cancel(&job.job_id, Duration::from_secs(20)).await;
        panic!("job {} did not end within {within:?}", job.job_id);
    }
    events
}

fn states(events: &[TrackEvent]) -> Vec<JobState> {
    let mut v: Vec<JobState> = Vec::new();
    for ev in events {
        let st = match ev {
            TrackEvent::Changed(st) => &st.state,
            TrackEvent::Ended { status, .. } => &status.state,
            _ => continue,
        };
        if v.last() != Some(st) {
            v.push(st.clone());
        }
    }
    v
}

fn ended(events: &[TrackEvent]) -> (&JobStatus, &[String]) {
    match events.last() {
        Some(TrackEvent::Ended {
            status,
            output_tail,
        }) => (status, output_tail),
        other => panic!("last event is not the end: {other:?}"),
    }
}

/// No job of this plan is left in the queue (pending or running).
async fn assert_no_job_left<R: Runner>(slurm: &Slurm<R>, plan: &BatchPlan) {
    let name = plan.spec.job_name_for(&plan.launch_id);
    let left = slurm.own_jobs(&name).await.unwrap();
    assert!(left.is_empty(), "jobs left in the queue: {left:?}");
}

/// Poll `what` (bounded) until it gives `Some`.
async fn wait_until<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    let mut schedule = PollSchedule::new(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(schedule.next_delay()).await;
    }
}

fn mode(path: &str) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn tiny_job_goes_pending_running_completed_with_its_ready_line() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = cluster() else { return };
    let fx = fixture(&cluster);
    let slurm = Slurm::new(cluster.runner(Duration::from_secs(30)));
    // --begin holds the job PENDING for 2 s so the tracker surely sees that state.
    let spec = BatchSpec {
        in_job: InJob::Direct,
        extra_options: vec!["--begin=now+2".into()],
        ..BatchSpec::default()
    };
    let plan = fx.plan(spec, "tiny", &["2"]);
    let (_, line) = secrets();
    let job = plan.submit(&slurm, line.as_bytes()).await.unwrap();
    assert_eq!(mode(&plan.files.dir), 0o700);
    assert_eq!(mode(&plan.files.secrets), 0o600);
    let events = follow(&plan, &slurm, &job, Duration::from_secs(60)).await;
    // COMPLETING may show between RUNNING and COMPLETED, or not: a poll may miss it.
    let mut seen = states(&events);
    seen.retain(|s| *s != JobState::Completing);
    assert_eq!(
        seen,
        [JobState::Pending, JobState::Running, JobState::Completed],
        "{events:?}"
    );
    let (status, _) = ended(&events);
    assert_eq!(status.exit_code.map(|e| (e.status, e.signal)), Some((0, 0)));
    let ready = events
        .iter()
        .find_map(|e| match e {
            TrackEvent::Ready { ready, .. } => Some(ready.clone()),
            _ => None,
        })
        .expect("a ready event");
    assert_eq!(ready.port, 4242);
    let running = events
        .iter()
        .find_map(|e| match e {
            TrackEvent::Changed(st) if st.state == JobState::Running => Some(st.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        running.batch_host.as_deref(),
        Some("localhost"),
        "{running}"
    );
    // The job consumed the secrets file; the ready file is private.
    assert!(
        !Path::new(&plan.files.secrets).exists(),
        "secrets file still there"
    );
    assert_eq!(mode(&plan.files.stdout), 0o600);
    let stdout = std::fs::read_to_string(&plan.files.stdout).unwrap();
    assert!(stdout.contains("secrets-ok len=64"), "{stdout}");
    assert_no_job_left(&slurm, &plan).await;
    plan.files.remove(slurm.runner()).await.unwrap();
    assert!(!Path::new(&plan.files.dir).exists());
}

#[tokio::test]
async fn held_job_is_pending_with_a_reason_and_cancels_pending_and_running() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = cluster() else { return };
    let fx = fixture(&cluster);
    let slurm = Slurm::new(cluster.runner(Duration::from_secs(30)));
    // The blocker takes both CPUs for at most 1 minute, so the backfill planner can give the
    // second job an estimated start.
    let blocker = fx.plan(
        BatchSpec {
            ntasks: Some(2),
            time: Some("1".parse().unwrap()),
            in_job: InJob::Direct,
            ..BatchSpec::default()
        },
        "blocker",
        &["120"],
    );
    let held = fx.plan(
        BatchSpec {
            ntasks: Some(1),
            time: Some("1".parse().unwrap()),
            in_job: InJob::Direct,
            ..BatchSpec::default()
        },
        "held",
        &["120"],
    );
    let b = blocker
        .submit(&slurm, secrets().1.as_bytes())
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "the blocker to run", || async {
        let st = slurm.status_one(&b.job_id).await.unwrap();
        st.state.is_running().then_some(())
    })
    .await;
    let h = held.submit(&slurm, secrets().1.as_bytes()).await.unwrap();
    let started = Instant::now();
    let pending = wait_until(Duration::from_secs(45), "an estimated start", || async {
        let st = slurm.status_one(&h.job_id).await.unwrap();
        assert_eq!(st.state, JobState::Pending, "{st}");
        // Reason is "None" until the first scheduling pass looks at the job.
        (st.reason.is_some() && st.estimated_start.is_some()).then_some(st)
    })
    .await;
    eprintln!(
        "pending: {pending} (estimate after {:.1}s)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        matches!(pending.reason.as_deref(), Some("Resources" | "Priority")),
        "{pending}"
    );

    // Cancel while pending: CANCELLED, and the job never started (secrets untouched).
    let st = held.cancel(&slurm, &h).await.unwrap();
    assert_eq!(st.state, JobState::Cancelled, "{st}");
    assert!(
        !Path::new(&held.files.dir).exists(),
        "cancel removes the job directory"
    );
    // Cancel while running.
    let st = blocker.cancel(&slurm, &b).await.unwrap();
    assert_eq!(st.state, JobState::Cancelled, "{st}");
    assert_no_job_left(&slurm, &held).await;
    assert_no_job_left(&slurm, &blocker).await;
}

#[tokio::test]
async fn job_failing_at_start_reports_failed_exit_code_and_output() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = cluster() else { return };
    let fx = fixture(&cluster);
    let slurm = Slurm::new(cluster.runner(Duration::from_secs(30)));
    let plan = fx.plan(
        BatchSpec {
            in_job: InJob::Direct,
            ..BatchSpec::default()
        },
        "fail",
        &["1", "3"],
    );
    let job = plan.submit(&slurm, secrets().1.as_bytes()).await.unwrap();
    let events = follow(&plan, &slurm, &job, Duration::from_secs(60)).await;
    let (status, tail) = ended(&events);
    assert_eq!(status.state, JobState::Failed, "{events:?}");
    assert_eq!(status.exit_code.map(|e| e.status), Some(3), "{status}");
    assert_eq!(
        status.reason.as_deref(),
        Some("NonZeroExitCode"),
        "{status}"
    );
    assert!(
        tail.iter()
            .any(|l| l.contains("giving up: configuration missing")),
        "{tail:?}"
    );
    assert!(
        tail.iter()
            .any(|l| l.contains("the server exited with status 3")),
        "{tail:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, TrackEvent::Ready { .. })));
    assert_no_job_left(&slurm, &plan).await;
}

#[tokio::test]
async fn one_minute_walltime_warns_then_times_out() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = cluster() else { return };
    let fx = fixture(&cluster);
    let slurm = Slurm::new(cluster.runner(Duration::from_secs(30)));
    let plan = fx.plan(
        BatchSpec {
            time: Some(WallTime::Limited(Duration::from_secs(60))),
            in_job: InJob::Direct,
            ..BatchSpec::default()
        },
        "walltime",
        &["600"],
    );
    let job = plan.submit(&slurm, secrets().1.as_bytes()).await.unwrap();
    let t0 = Instant::now();
    // follow() warns 50 s before the limit.
    let events = follow(&plan, &slurm, &job, Duration::from_secs(150)).await;
    let (status, _) = ended(&events);
    assert_eq!(status.state, JobState::Timeout, "{events:?}");
    assert_eq!(status.reason.as_deref(), Some("TimeLimit"), "{status}");
    let warned = events
        .iter()
        .find_map(|e| match e {
            TrackEvent::WalltimeWarning { time_left } => Some(*time_left),
            _ => None,
        })
        .expect("a walltime warning");
    assert!(warned <= Duration::from_secs(50), "{warned:?}");
    eprintln!(
        "walltime: warned with {warned:?} left; TIMEOUT seen after {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    assert_no_job_left(&slurm, &plan).await;
}

#[tokio::test]
async fn srun_runs_two_tasks_and_only_task_zero_gets_the_secrets() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = cluster() else { return };
    let fx = fixture(&cluster);
    let slurm = Slurm::new(cluster.runner(Duration::from_secs(30)));
    let plan = fx.plan(
        BatchSpec {
            ntasks: Some(2),
            in_job: InJob::Srun,
            ..BatchSpec::default()
        },
        "srun",
        &["1"],
    );
    let job = plan.submit(&slurm, secrets().1.as_bytes()).await.unwrap();
    let events = follow(&plan, &slurm, &job, Duration::from_secs(60)).await;
    let (status, _) = ended(&events);
    assert_eq!(status.state, JobState::Completed, "{events:?}");
    let stdout = std::fs::read_to_string(&plan.files.stdout).unwrap();
    assert!(stdout.contains("task 0 of 2"), "{stdout}");
    assert!(stdout.contains("task 1 of 2"), "{stdout}");
    assert_eq!(stdout.matches("secrets-ok").count(), 1, "{stdout}");
    assert!(events.iter().any(|e| matches!(e, TrackEvent::Ready { .. })));
    assert_no_job_left(&slurm, &plan).await;
}

#[tokio::test]
async fn token_is_neither_in_the_job_script_nor_in_the_job_record() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = cluster() else { return };
    let fx = fixture(&cluster);
    let slurm = Slurm::new(cluster.runner(Duration::from_secs(30)));
    let plan = fx.plan(
        BatchSpec {
            in_job: InJob::Srun,
            ..BatchSpec::default()
        },
        "token",
        &["30"],
    );
    let (token, line) = secrets();
    let hex = token.to_hex();
    assert!(!plan.script.contains(&hex));
    assert!(!plan.sbatch_argv.iter().any(|a| a.contains(&hex)));
    let job = plan.submit(&slurm, line.as_bytes()).await.unwrap();
    let id = job.job_id.as_str().to_string();
    // While it runs, with the server holding the token.
    wait_until(Duration::from_secs(30), "the server's report", || async {
        let s = std::fs::read_to_string(&plan.files.stdout).unwrap_or_default();
        s.contains("secrets-ok").then_some(())
    })
    .await;
    let stdout = std::fs::read_to_string(&plan.files.stdout).unwrap();
    assert!(
        stdout.contains(&format!("secrets-ok len=64 last4={}", &hex[60..])),
        "the server got this launch's token: {stdout}"
    );
    let mut seen = Vec::new();
    for argv in [
        vec!["scontrol", "write", "batch_script", &id, "-"],
        vec!["scontrol", "show", "job", &id],
        vec!["scontrol", "show", "job", "-d", &id],
        vec!["squeue", "-h", "-j", &id, "-o", "%all"],
    ] {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let out = slurm.runner().run(&argv, None).await.unwrap();
        assert!(out.success(), "{argv:?}: {}", out.stderr_text());
        let text = out.stdout_text();
        assert!(!text.contains(&hex), "{argv:?} shows the token:\n{text}");
        seen.push(text);
    }
    assert!(
        seen[0].contains("pv-launch batch job"),
        "the stored script: {}",
        seen[0]
    );
    // The controller's saved state (what backups keep) does not hold it either.
    let state_dir = Path::new(&cluster.conf).parent().unwrap().join("ctld");
    let mut files = vec![state_dir];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if let Ok(bytes) = std::fs::read(&p) {
            let found = bytes.windows(hex.len()).any(|w| w == hex.as_bytes());
            assert!(!found, "{} holds the token", p.display());
        }
    }
    let st = plan.cancel(&slurm, &job).await.unwrap();
    assert_eq!(st.state, JobState::Cancelled);
    assert_no_job_left(&slurm, &plan).await;
}

#[tokio::test]
async fn own_jobs_finds_tagged_jobs() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = cluster() else { return };
    let fx = fixture(&cluster);
    let slurm = Slurm::new(cluster.runner(Duration::from_secs(30)));
    let plan = fx.plan(
        BatchSpec {
            job_name: Some("viz".into()),
            in_job: InJob::Direct,
            extra_options: vec!["--hold".into()],
            ..BatchSpec::default()
        },
        "own",
        &["30"],
    );
    let job = plan.submit(&slurm, secrets().1.as_bytes()).await.unwrap();
    let all = slurm
        .own_jobs(pv_launch::startup::batch::JOB_NAME_PREFIX)
        .await
        .unwrap();
    let mine = all
        .iter()
        .find(|j| j.id == job.job_id)
        .unwrap_or_else(|| panic!("job {} not among {all:?}", job.job_id));
    assert_eq!(
        mine.name.as_deref(),
        Some(format!("pvl-{}-viz", plan.launch_id).as_str())
    );
    assert_eq!(mine.state, JobState::Pending);
    assert_eq!(mine.reason.as_deref(), Some("JobHeldUser"));
    let other = slurm.own_jobs("pvl-no-such-launch").await.unwrap();
    assert!(other.is_empty(), "{other:?}");
    let st = plan.cancel(&slurm, &job).await.unwrap();
    assert_eq!(st.state, JobState::Cancelled);
    assert_no_job_left(&slurm, &plan).await;
}

/// Starts slurmctld again if a test stopped it and then failed.
struct CtldGuard<'a>(&'a Cluster);

impl Drop for CtldGuard<'_> {
    fn drop(&mut self) {
        self.0.ci_slurm("ctld-start");
    }
}

#[tokio::test]
async fn controller_stopped_for_a_few_seconds_is_unknown_then_recovers() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = cluster() else { return };
    let fx = fixture(&cluster);
    // Short command timeout: an unreachable controller costs 3 s per poll, not 18.
    let slurm = Slurm::new(cluster.runner(Duration::from_secs(3)));
    let plan = fx.plan(
        BatchSpec {
            in_job: InJob::Direct,
            ..BatchSpec::default()
        },
        "ctld",
        &["25"],
    );
    let job = plan.submit(&slurm, secrets().1.as_bytes()).await.unwrap();
    let mut tracker = plan.tracker(&slurm, &job);
    let mut guard = None;
    let mut stopped = false;
    let mut seen = Vec::new();
    let mut stopped_at = None;
    let run = async {
        while let Some(ev) = tracker.next_event().await.unwrap() {
            eprintln!("  event: {ev:?}");
            match &ev {
                TrackEvent::Changed(st) if st.state == JobState::Running && !stopped => {
                    cluster.ci_slurm("ctld-stop");
                    stopped = true;
                    stopped_at = Some(Instant::now());
                    guard = Some(CtldGuard(&cluster));
                }
                TrackEvent::Changed(st) if st.state == JobState::Unknown && guard.is_some() => {
                    // Down for a few seconds in all, then back (the guard starts it).
                    let down = stopped_at.unwrap().elapsed();
                    if down < Duration::from_secs(5) {
                        tokio::time::sleep(Duration::from_secs(5) - down).await;
                    }
                    drop(guard.take());
                }
                _ => {}
            }
            seen.push(ev);
        }
    };
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("job tracked to its end within 120 s");
    drop(guard);
    let states = states(&seen);
    let unknown_at = states
        .iter()
        .position(|s| *s == JobState::Unknown)
        .expect("UNKNOWN while the controller was down");
    assert_eq!(
        &states[unknown_at..],
        [JobState::Unknown, JobState::Running, JobState::Completed],
        "the job recovers and completes: {states:?}"
    );
    assert_no_job_left(&slurm, &plan).await;
}

#[tokio::test]
async fn measure_ready_latency_and_squeue_rate_while_queued() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = cluster() else { return };
    let fx = fixture(&cluster);
    let slurm = Slurm::new(cluster.runner(Duration::from_secs(30)));

    // 1. RUNNING -> ready file, for a trivial server (median of 3): as the tracker sees it
    //    (first poll showing RUNNING -> poll finding the line), from submission, and from
    //    Slurm's StartTime (1 s resolution) to the stdout file's last write.
    let mut latencies = Vec::new();
    let mut from_submit = Vec::new();
    let mut start_to_file = Vec::new();
    for i in 0..3 {
        let plan = fx.plan(
            BatchSpec {
                in_job: InJob::Srun,
                ..BatchSpec::default()
            },
            &format!("lat{i}"),
            &["3"],
        );
        let t0 = Instant::now();
        let job = plan.submit(&slurm, secrets().1.as_bytes()).await.unwrap();
        let mut tracker = plan.tracker(&slurm, &job);
        let mut events = Vec::new();
        while let Some(ev) = tokio::time::timeout(Duration::from_secs(60), tracker.next_event())
            .await
            .expect("job events within 60 s")
            .unwrap()
        {
            if matches!(ev, TrackEvent::Ready { .. }) {
                from_submit.push(t0.elapsed());
            }
            events.push(ev);
        }
        let argv: Vec<String> = [
            "env",
            "SLURM_TIME_FORMAT=%s",
            "scontrol",
            "show",
            "job",
            "-o",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([job.job_id.to_string()])
        .collect();
        let out = slurm.runner().run(&argv, None).await.unwrap();
        let start: u64 = out
            .stdout_text()
            .split_whitespace()
            .find_map(|w| w.strip_prefix("StartTime="))
            .and_then(|v| v.parse().ok())
            .expect("StartTime in epoch seconds");
        let written = std::fs::metadata(&plan.files.stdout)
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        start_to_file.push(written.as_secs_f64() - start as f64);
        let since = events
            .iter()
            .find_map(|e| match e {
                TrackEvent::Ready { since_running, .. } => *since_running,
                _ => None,
            })
            .expect("ready after running");
        latencies.push(since);
        assert_no_job_left(&slurm, &plan).await;
    }
    latencies.sort();
    from_submit.sort();
    start_to_file.sort_by(f64::total_cmp);

    // 2. squeue calls per minute while a job stays queued (held), over 30 s.
    let plan = fx.plan(
        BatchSpec {
            in_job: InJob::Direct,
            extra_options: vec!["--hold".into()],
            ..BatchSpec::default()
        },
        "rate",
        &["1"],
    );
    let job = plan.submit(&slurm, secrets().1.as_bytes()).await.unwrap();
    let before = slurm.runner().count("squeue");
    let window = Duration::from_secs(30);
    let mut tracker = plan.tracker(&slurm, &job);
    let _ = tokio::time::timeout(window, async {
        while let Some(ev) = tracker.next_event().await.unwrap() {
            assert!(matches!(ev, TrackEvent::Changed(_)), "{ev:?}");
        }
    })
    .await;
    let calls = slurm.runner().count("squeue") - before;
    plan.cancel(&slurm, &job).await.unwrap();
    assert_no_job_left(&slurm, &plan).await;

    eprintln!(
        "MEASURED: tracker, first RUNNING poll -> ready line seen: median {:?} (min {:?}, max {:?})",
        latencies[1], latencies[0], latencies[2]
    );
    eprintln!(
        "MEASURED: submit -> ready line seen: median {:?} (min {:?}, max {:?})",
        from_submit[1], from_submit[0], from_submit[2]
    );
    eprintln!(
        "MEASURED: Slurm StartTime (whole seconds) -> ready file written: median {:.2}s (min {:.2}s, max {:.2}s)",
        start_to_file[1], start_to_file[0], start_to_file[2]
    );
    eprintln!(
        "MEASURED: squeue calls while queued: {calls} in {window:?} (~{:.1}/min; steady state 60/8 = 7.5/min)",
        calls as f64 * 60.0 / window.as_secs_f64()
    );
    // 0, 0.25, 0.75, 1.75, 3.75, 7.75, 15.75, 23.75 s: 8 polls in 30 s.
    assert!((6..=10).contains(&calls), "{calls} squeue calls in 30 s");
    assert!(latencies[1] < Duration::from_secs(5), "{latencies:?}");
}
