//! `pv-launch jobs`: this user's pv-launch batch jobs (tagged `pvl-…` by every batch
//! launch) still queued or running, and `--cancel` for the ones a launch left behind (a
//! pv-launch that was killed cannot cancel its own job) — on this host's scheduler, or with
//! `--profile P [--server S]` on the login node of a batch server submitted over ssh
//! (through one authenticated ssh connection, either backend, as the launch makes it).

use pv_launch::plan::{JobsDir, Launch, Place, Plan};
use pv_launch::startup::batch::{
    COMMENT_PREFIX, DEFAULT_CANCEL_CONFIRM, DEFAULT_COMMAND_TIMEOUT, JOB_NAME_PREFIX, JobId,
    JobStatus, LaunchId, LocalRunner, Runner, Slurm, SshRunner,
};
use pv_launch::startup::ssh::{SshHost, SshOptions, require_backend};

use crate::cli::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};

/// List (or cancel) this user's pv-launch jobs on this host's scheduler.
pub fn run(cancel: Option<Vec<String>>) -> i32 {
    let Some(runtime) = crate::cli::runtime() else {
        return EXIT_FAILURE;
    };
    runtime.block_on(async {
        let slurm = Slurm::new(LocalRunner::default());
        jobs(&slurm, &JobsDir::RemoteHome, cancel).await
    })
}

/// List (or cancel) this user's pv-launch jobs where `plan`'s batch server submits them:
/// this host, or its login node over ssh.
pub fn run_for(plan: &Plan, cancel: Option<Vec<String>>) -> i32 {
    let found = match plan.launch() {
        Launch::Process(p) => p.batch().map(|b| (b, &p.place)),
        _ => None,
    };
    let Some((batch, place)) = found else {
        eprintln!(
            "pv-launch: server {:?} is not started as a batch job (mechanism = \"batch\")",
            plan.server()
        );
        return EXIT_USAGE;
    };
    let Some(runtime) = crate::cli::runtime() else {
        return EXIT_FAILURE;
    };
    runtime.block_on(async {
        let ssh = match place {
            Place::Local(_) => {
                let slurm = Slurm::new(LocalRunner::default());
                return jobs(&slurm, &batch.jobs_dir, cancel).await;
            }
            Place::Ssh(ssh) => ssh,
        };
        let connected = match require_backend(ssh.backend_kind()) {
            Ok(()) => SshHost::connect(&ssh.target, &ssh.backend, &SshOptions::default()).await,
            Err(e) => Err(e),
        };
        let host = match connected {
            Ok(h) => h,
            Err(e) => {
                eprintln!("pv-launch: {e}");
                return EXIT_FAILURE;
            }
        };
        let runner = SshRunner::new(
            host,
            ssh.remote.env.clone(),
            ssh.remote.workdir.clone(),
            DEFAULT_COMMAND_TIMEOUT,
        );
        let slurm = Slurm::new(runner);
        let code = jobs(&slurm, &batch.jobs_dir, cancel).await;
        slurm.into_runner().close().await;
        code
    })
}

async fn jobs<R: Runner>(slurm: &Slurm<R>, dir: &JobsDir, cancel: Option<Vec<String>>) -> i32 {
    match cancel {
        None => list(slurm).await,
        Some(ids) => cancel_jobs(slurm, dir, &ids).await,
    }
}

fn time_left(st: &JobStatus) -> String {
    match st.time_left {
        Some(d) => {
            let s = d.as_secs();
            format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
        }
        None if st.state.is_running() => "unlimited".into(),
        None => "-".into(),
    }
}

async fn own<R: Runner>(slurm: &Slurm<R>) -> Result<Vec<JobStatus>, i32> {
    slurm.own_jobs(JOB_NAME_PREFIX).await.map_err(|e| {
        eprintln!("pv-launch: {e}");
        EXIT_FAILURE
    })
}

async fn list<R: Runner>(slurm: &Slurm<R>) -> i32 {
    let jobs = match own(slurm).await {
        Ok(j) => j,
        Err(code) => return code,
    };
    if jobs.is_empty() {
        eprintln!("no pv-launch jobs queued or running");
        return EXIT_OK;
    }
    println!(
        "{:<10} {:<11} {:<10} {:<20} NAME (pvl-<launch id>-<server>)",
        "JOBID", "STATE", "TIME LEFT", "REASON/NODES"
    );
    for j in &jobs {
        let where_ = j
            .nodes
            .clone()
            .or_else(|| j.reason.clone())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<10} {:<11} {:<10} {:<20} {}",
            j.id,
            j.state,
            time_left(j),
            where_,
            j.name.as_deref().unwrap_or("-")
        );
    }
    EXIT_OK
}

/// The launch id of each of this user's jobs, from the `pv-launch:<id>` comment.
async fn launch_ids<R: Runner>(slurm: &Slurm<R>) -> Vec<(String, LaunchId)> {
    let argv = ["squeue", "-h", "--me", "-o", "%i\u{1f}%k"].map(String::from);
    let Ok(out) = slurm.runner().run(&argv, None).await else {
        return Vec::new();
    };
    out.stdout_text()
        .lines()
        .filter_map(|l| {
            let (id, comment) = l.split_once('\u{1f}')?;
            let launch = LaunchId::new(comment.trim().strip_prefix(COMMENT_PREFIX)?).ok()?;
            Some((id.trim().to_string(), launch))
        })
        .collect()
}

async fn cancel_jobs<R: Runner>(slurm: &Slurm<R>, dir: &JobsDir, ids: &[String]) -> i32 {
    let jobs = match own(slurm).await {
        Ok(j) => j,
        Err(code) => return code,
    };
    let chosen: Vec<&JobStatus> = if ids.is_empty() {
        jobs.iter().collect()
    } else {
        let mut v = Vec::new();
        for id in ids {
            match jobs.iter().find(|j| j.id.as_str() == id) {
                Some(j) => v.push(j),
                None => {
                    eprintln!(
                        "pv-launch: job {id} is not a queued or running pv-launch job of yours (see `pv-launch jobs`)"
                    );
                    return EXIT_USAGE;
                }
            }
        }
        v
    };
    if chosen.is_empty() {
        eprintln!("no pv-launch jobs queued or running");
        return EXIT_OK;
    }
    let dirs = launch_ids(slurm).await;
    let mut code = EXIT_OK;
    for j in chosen {
        let Some(id) = JobId::new(j.id.as_str()) else {
            continue;
        };
        match slurm.cancel(&id, DEFAULT_CANCEL_CONFIRM).await {
            Ok(st) => println!("job {id}: {} (left the queue)", st.state),
            Err(e) => {
                eprintln!("pv-launch: {e}");
                code = EXIT_FAILURE;
                continue;
            }
        }
        // Its private directory (and a token never read, if the job never started), on
        // the host that submitted it.
        if let Some((_, launch)) = dirs.iter().find(|(jid, _)| jid == id.as_str()) {
            let argv: Vec<String> = match dir {
                JobsDir::Path(base) => vec![
                    "rm".into(),
                    "-rf".into(),
                    "--".into(),
                    format!("{}/{launch}", base.trim_end_matches('/')),
                ],
                JobsDir::RemoteHome => [
                    "sh",
                    "-c",
                    "rm -rf -- \"$HOME/.pv-launch/jobs/$1\"",
                    "pv-launch-jobs",
                    launch.as_str(),
                ]
                .map(String::from)
                .to_vec(),
            };
            let _ = slurm.runner().run(&argv, None).await;
        }
    }
    code
}
