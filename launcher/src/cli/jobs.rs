//! `pv-launch jobs`: this user's pv-launch batch jobs (tagged `pvl-…` by every batch
//! launch) still queued or running, and `--cancel` for the ones a launch left behind (a
//! pv-launch that was killed cannot cancel its own job).

use pv_launch::startup::batch::{
    COMMENT_PREFIX, DEFAULT_CANCEL_CONFIRM, JOB_NAME_PREFIX, JobId, JobStatus, LaunchId,
    LocalRunner, Runner, Slurm,
};

use crate::cli::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};

/// List (or cancel) this user's pv-launch jobs on this host's scheduler.
pub fn run(cancel: Option<Vec<String>>) -> i32 {
    let Some(runtime) = crate::cli::runtime() else {
        return EXIT_FAILURE;
    };
    runtime.block_on(async {
        let slurm = Slurm::new(LocalRunner::default());
        match cancel {
            None => list(&slurm).await,
            Some(ids) => cancel_jobs(&slurm, &ids).await,
        }
    })
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

async fn own(slurm: &Slurm<LocalRunner>) -> Result<Vec<JobStatus>, i32> {
    slurm.own_jobs(JOB_NAME_PREFIX).await.map_err(|e| {
        eprintln!("pv-launch: {e}");
        EXIT_FAILURE
    })
}

async fn list(slurm: &Slurm<LocalRunner>) -> i32 {
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
async fn launch_ids(slurm: &Slurm<LocalRunner>) -> Vec<(String, LaunchId)> {
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

async fn cancel_jobs(slurm: &Slurm<LocalRunner>, ids: &[String]) -> i32 {
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
    let home = std::env::var("HOME").ok();
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
        // Its private directory (and a token never read, if the job never started).
        if let (Some(home), Some((_, launch))) =
            (&home, dirs.iter().find(|(jid, _)| jid == id.as_str()))
        {
            let dir = format!("{home}/.pv-launch/jobs/{launch}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    code
}
