//! Unit tests of the pure parts: spec checks, time strings, the script and argv (golden),
//! and the parsers of Slurm's output.

use std::time::{Duration, UNIX_EPOCH};

use super::*;

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

fn id() -> LaunchId {
    LaunchId::new("a1b2c3").unwrap()
}

fn full_spec() -> BatchSpec {
    BatchSpec {
        nodes: Some(2),
        ntasks: Some(4),
        cpus_per_task: Some(8),
        partition: Some("viz".into()),
        account: Some("proj42".into()),
        time: Some("1-02:03:04".parse().unwrap()),
        qos: Some("interactive".into()),
        constraint: Some("gpu&a100".into()),
        gres: Some("gpu:2".into()),
        extra_options: words(&["--mem=4G", "--reservation=viz day"]),
        ..BatchSpec::default()
    }
}

#[test]
fn wall_times_in_every_slurm_form() {
    let secs = |s: &str| match s.parse::<WallTime>().unwrap() {
        WallTime::Limited(d) => d.as_secs(),
        WallTime::Unlimited => u64::MAX,
    };
    assert_eq!(secs("30"), 30 * 60);
    assert_eq!(secs("30:15"), 30 * 60 + 15);
    assert_eq!(secs("2:03:04"), 2 * 3600 + 3 * 60 + 4);
    assert_eq!(secs("1-02"), 86400 + 2 * 3600);
    assert_eq!(secs("1-02:03"), 86400 + 2 * 3600 + 3 * 60);
    assert_eq!(secs("1-02:03:04"), 86400 + 2 * 3600 + 3 * 60 + 4);
    assert_eq!(secs("364-23:59:58"), 364 * 86400 + 23 * 3600 + 59 * 60 + 58);
    assert_eq!(secs("UNLIMITED"), u64::MAX);
    assert_eq!(secs("infinite"), u64::MAX);
    assert_eq!(
        "1-02:03:04".parse::<WallTime>().unwrap().to_string(),
        "1-02:03:04"
    );
    assert_eq!("90".parse::<WallTime>().unwrap().to_string(), "01:30:00");
}

#[test]
fn bad_wall_times_say_what_and_where() {
    let e = |s: &str| s.parse::<WallTime>().unwrap_err().to_string();
    assert!(
        e("1-25:00").contains("hours 25 is out of range 0-23"),
        "{}",
        e("1-25:00")
    );
    assert!(
        e("10:61").contains("seconds 61 is out of range 0-59"),
        "{}",
        e("10:61")
    );
    assert!(
        e("1:2:3:4").contains("4 colon-separated fields"),
        "{}",
        e("1:2:3:4")
    );
    assert!(
        e("1-1:2:3:4").contains("after the days"),
        "{}",
        e("1-1:2:3:4")
    );
    assert!(
        e("ten").contains("minutes \"ten\" is not a number"),
        "{}",
        e("ten")
    );
    assert!(e("").contains("empty"));
    assert!(e("-5").contains("days \"\" is not a number"), "{}", e("-5"));
    assert!(e("1:-5").contains("seconds \"-5\""), "{}", e("1:-5"));
}

#[test]
fn spec_from_toml_and_its_errors() {
    let spec: BatchSpec = toml::from_str(
        r#"
        scheduler = "slurm"
        nodes = 2
        ntasks = 4
        time = "1-02:03:04"
        in_job = "direct"
        extra_options = ["--mem=4G"]
        "#,
    )
    .unwrap();
    assert_eq!(spec.nodes, Some(2));
    assert_eq!(spec.in_job, InJob::Direct);
    assert_eq!(
        spec.time,
        Some(WallTime::Limited(Duration::from_secs(93784)))
    );
    let e = toml::from_str::<BatchSpec>("time = \"1-99\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("hours 99 is out of range"), "{e}");
    let e = toml::from_str::<BatchSpec>("ntask = 3")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `ntask`"), "{e}");
    let e = toml::from_str::<BatchSpec>("scheduler = \"pbs\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown variant `pbs`"), "{e}");
}

#[test]
fn spec_validation_names_the_field() {
    let check = |spec: BatchSpec| spec.validate().unwrap_err().to_string();
    let e = check(BatchSpec {
        ntasks: Some(0),
        ..BatchSpec::default()
    });
    assert_eq!(e, "batch field `ntasks`: must be at least 1");
    let e = check(BatchSpec {
        partition: Some("a\nb".into()),
        ..BatchSpec::default()
    });
    assert!(
        e.starts_with("batch field `partition`: ") && e.contains("control character"),
        "{e}"
    );
    for bad in [
        "--output=/tmp/x",
        "-o/tmp/x",
        "--wrap=hostname",
        "--job-name=x",
        "-W",
        "--parsable",
    ] {
        let e = check(BatchSpec {
            extra_options: words(&[bad]),
            ..BatchSpec::default()
        });
        assert!(e.contains("set by pv-launch itself"), "{bad}: {e}");
    }
    let e = check(BatchSpec {
        extra_options: words(&["mem=4G"]),
        ..BatchSpec::default()
    });
    assert!(e.contains("is not an option"), "{e}");
    let e = check(BatchSpec {
        output: Some("out-%j.txt".into()),
        ..BatchSpec::default()
    });
    assert!(e.contains("absolute path"), "{e}");
    let e = check(BatchSpec {
        output: Some("/tmp/out-%u.txt".into()),
        ..BatchSpec::default()
    });
    assert!(e.contains("pattern \"%u\" at byte 9"), "{e}");
    assert!(full_spec().validate().is_ok());
    // -o as a prefix of a long option is fine (--overcommit is not --output).
    assert!(
        BatchSpec {
            extra_options: words(&["--overcommit"]),
            ..BatchSpec::default()
        }
        .validate()
        .is_ok()
    );
}

#[test]
fn launch_ids_are_safe_words() {
    assert!(LaunchId::new("ok_id-1").is_ok());
    assert!(LaunchId::new("").is_err());
    assert!(
        LaunchId::new("a b")
            .unwrap_err()
            .to_string()
            .contains("' '")
    );
    assert!(LaunchId::new("x".repeat(65)).is_err());
    assert_eq!(id().job_name(), "pvl-a1b2c3");
}

#[test]
fn output_patterns_expand() {
    assert_eq!(expand_output("/o/j-%j.out", "42"), "/o/j-42.out");
    assert_eq!(expand_output("/o/100%%-%j", "7"), "/o/100%-7");
}

#[test]
fn sbatch_argv_golden() {
    let files = JobFiles::new("/home/u/.pv-launch/jobs/", &id()).unwrap();
    assert_eq!(
        sbatch_argv(&full_spec(), &id(), &files),
        words(&[
            "sbatch",
            "--parsable",
            "--job-name=pvl-a1b2c3",
            "--comment=pv-launch:a1b2c3",
            "--output=/home/u/.pv-launch/jobs/a1b2c3/job.out",
            "--no-requeue",
            "--nodes=2",
            "--ntasks=4",
            "--cpus-per-task=8",
            "--partition=viz",
            "--account=proj42",
            "--time=1-02:03:04",
            "--qos=interactive",
            "--constraint=gpu&a100",
            "--gres=gpu:2",
            "--mem=4G",
            "--reservation=viz day",
        ])
    );
    let minimal = BatchSpec {
        job_name: Some("paraview".into()),
        output: Some("/scratch/u/pv-%j.log".into()),
        ..BatchSpec::default()
    };
    assert_eq!(
        sbatch_argv(&minimal, &id(), &files),
        words(&[
            "sbatch",
            "--parsable",
            "--job-name=pvl-a1b2c3-paraview",
            "--comment=pv-launch:a1b2c3",
            "--output=/scratch/u/pv-%j.log",
            "--no-requeue",
        ])
    );
    assert_eq!(files.output_for(&minimal, "77"), "/scratch/u/pv-77.log");
}

const GOLDEN_SCRIPT: &str = r#"#!/bin/bash
# pv-launch batch job for launch a1b2c3. Written by pv-launch; it holds no secret.
# The one-time token (an empty line for a server without one) waits in a 0600 file in
# the 0700 directory below; this script opens it, deletes it, and hands it to the
# server on stdin. The server's stdout (its ready line) goes to a 0600 file beside it.
set -u
umask 077
job_dir='/home/u s/.pv-launch/jobs/a1b2c3'
if ! exec 3<"$job_dir/secrets"; then
    echo "pv-launch: $job_dir/secrets is gone: it is read once, so this job cannot start the server again" >&2
    exit 97
fi
rm -f -- "$job_dir/secrets"
echo "pv-launch: job ${SLURM_JOB_ID:-?} starting the server on $(hostname)" >&2
export PV_LOG=debug
export MSG='it'\''s $HOME'
srun --input=0 /opt/pv/bin/pvserver --server-port=0 'name with space' '$(rm -rf ~)' <&3 3<&- >"$job_dir/stdout"
status=$?
echo "pv-launch: the server exited with status $status" >&2
exit "$status"
"#;

#[test]
fn job_script_golden() {
    let files = JobFiles::new("/home/u s/.pv-launch/jobs", &id()).unwrap();
    let argv = words(&[
        "/opt/pv/bin/pvserver",
        "--server-port=0",
        "name with space",
        "$(rm -rf ~)",
    ]);
    let env = vec![
        ("PV_LOG".to_string(), "debug".to_string()),
        ("MSG".to_string(), "it's $HOME".to_string()),
    ];
    let script = job_script(&full_spec(), &files, &argv, &env, &id()).unwrap();
    assert_eq!(script, GOLDEN_SCRIPT, "script:\n{script}");
    let direct = BatchSpec {
        in_job: InJob::Direct,
        ..BatchSpec::default()
    };
    let script = job_script(&direct, &files, &argv[..1], &[], &id()).unwrap();
    assert!(
        script.contains("\n/opt/pv/bin/pvserver <&3 3<&- >\"$job_dir/stdout\"\n"),
        "{script}"
    );
}

#[test]
fn job_script_refuses_secret_carriers_and_bad_argv() {
    let files = JobFiles::new("/h", &id()).unwrap();
    let spec = BatchSpec::default();
    let env = vec![("PV_LAUNCH_TOKEN".to_string(), "ab".to_string())];
    let e = job_script(&spec, &files, &words(&["srv"]), &env, &id()).unwrap_err();
    assert!(e.to_string().contains("secrets file"), "{e}");
    let env = vec![("1X".to_string(), "v".to_string())];
    assert!(job_script(&spec, &files, &words(&["srv"]), &env, &id()).is_err());
    assert!(job_script(&spec, &files, &[], &[], &id()).is_err());
    assert!(job_script(&spec, &files, &words(&["--srv"]), &[], &id()).is_err());
    assert!(JobFiles::new("relative/dir", &id()).is_err());
}

#[test]
fn quoting_for_bash() {
    assert_eq!(
        sh_quote("plain-word_1.2/x=y:z,a+b@c%d"),
        "plain-word_1.2/x=y:z,a+b@c%d"
    );
    assert_eq!(sh_quote(""), "''");
    assert_eq!(sh_quote("a b"), "'a b'");
    assert_eq!(sh_quote("it's"), r"'it'\''s'");
    assert_eq!(sh_quote("~"), "'~'");
}

#[test]
fn sbatch_output() {
    assert_eq!(parse_sbatch("123\n").unwrap().as_str(), "123");
    assert_eq!(parse_sbatch("45;cluster2\n").unwrap().as_str(), "45");
    assert_eq!(
        parse_sbatch("note: plugin says hi\n46\n").unwrap().as_str(),
        "46"
    );
    let e = parse_sbatch("Submitted batch job 9\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("sbatch output, line 1, field `job id`"),
        "{e}"
    );
    assert!(parse_sbatch("").is_err());
}

fn sq(fields: &[&str]) -> String {
    fields.join("\u{1f}")
}

#[test]
fn squeue_lines() {
    let st = parse_squeue_line(
        &sq(&[
            "2",
            "PENDING",
            "Resources",
            "1796134488",
            "1:00",
            "",
            "",
            "pvl-a1b2c3",
        ]),
        1,
    )
    .unwrap();
    assert_eq!(st.id.as_str(), "2");
    assert_eq!(st.state, JobState::Pending);
    assert_eq!(st.reason.as_deref(), Some("Resources"));
    assert_eq!(
        st.estimated_start,
        Some(UNIX_EPOCH + Duration::from_secs(1796134488))
    );
    assert_eq!(
        st.time_left, None,
        "a pending job's %L is its limit, not time left"
    );
    assert_eq!(st.nodes, None);
    assert_eq!(st.name.as_deref(), Some("pvl-a1b2c3"));

    let st = parse_squeue_line(
        &sq(&[
            "7",
            "RUNNING",
            "None",
            "1796134428",
            "364-23:59:58",
            "node[01-04]",
            "node01",
            "x",
        ]),
        2,
    )
    .unwrap();
    assert_eq!(st.state, JobState::Running);
    assert_eq!(st.reason, None);
    assert_eq!(st.estimated_start, None);
    assert_eq!(st.time_left, Some(Duration::from_secs(364 * 86400 + 86398)));
    assert_eq!(st.nodes.as_deref(), Some("node[01-04]"));
    assert_eq!(st.batch_host.as_deref(), Some("node01"));

    // Odd reasons (spaces, commas, colons, parentheses) and N/A start times.
    let st = parse_squeue_line(
        &sq(&[
            "8",
            "PENDING",
            "ReqNodeNotAvail, UnavailableNodes:n[1-3],n7 (maintenance | viz)",
            "N/A",
            "UNLIMITED",
            "",
            "",
            "pvl-z",
        ]),
        3,
    )
    .unwrap();
    assert_eq!(
        st.reason.as_deref(),
        Some("ReqNodeNotAvail, UnavailableNodes:n[1-3],n7 (maintenance | viz)")
    );
    assert_eq!(st.estimated_start, None);

    let st = parse_squeue_line(
        &sq(&["9", "RUNNING", "None", "N/A", "UNLIMITED", "n1", "", "j"]),
        1,
    )
    .unwrap();
    assert_eq!(st.time_left, None);
    let st = parse_squeue_line(
        &sq(&["9", "RUNNING", "None", "N/A", "0:59", "n1", "", "j"]),
        1,
    )
    .unwrap();
    assert_eq!(st.time_left, Some(Duration::from_secs(59)));
    let st = parse_squeue_line(
        &sq(&["9", "CANCELLED", "Priority", "N/A", "1:00", "", "", "j"]),
        1,
    )
    .unwrap();
    assert!(st.state.is_final());
    assert_eq!(st.reason.as_deref(), Some("Priority"));
    let st = parse_squeue_line(
        &sq(&["9", "STAGE_OUT", "None", "N/A", "1:00", "", "", "j"]),
        1,
    )
    .unwrap();
    assert_eq!(st.state, JobState::Other("STAGE_OUT".into()));
    assert!(!st.state.is_final());
}

#[test]
fn squeue_errors_say_what_and_where() {
    let e = parse_squeue_line("1 RUNNING", 4).unwrap_err().to_string();
    assert!(e.starts_with("squeue output, line 4, field `line`"), "{e}");
    assert!(e.contains("1 fields, expected 8"), "{e}");
    let e = parse_squeue_line(&sq(&["x1", "RUNNING", "", "", "", "", "", ""]), 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("field `id` (\"x1\")"), "{e}");
    let e = parse_squeue_line(
        &sq(&["1", "PENDING", "", "2026-12-01T14:12:00", "", "", "", ""]),
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("field `start`") && e.contains("SLURM_TIME_FORMAT"),
        "{e}"
    );
    let e = parse_squeue_line(&sq(&["1", "RUNNING", "", "", "1-2-3", "", "", ""]), 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("field `time left` (\"1-2-3\")"), "{e}");
}

#[test]
fn time_left_column() {
    assert_eq!(parse_time_left("NOT_SET").unwrap(), None);
    assert_eq!(parse_time_left("INVALID").unwrap(), None);
    assert_eq!(parse_time_left("UNLIMITED").unwrap(), None);
    assert_eq!(
        parse_time_left("1:02:03").unwrap(),
        Some(Duration::from_secs(3723))
    );
    assert!(parse_time_left("soon").is_err());
}

#[test]
fn scontrol_and_sacct_output() {
    let text = "JobId=1 JobName=wrap UserId=root(0) JobState=CANCELLED Reason=None \
                ExitCode=0:15 RunTime=00:00:05 NodeList=localhost BatchHost=localhost \
                Command=(null) WorkDir=/tmp";
    let st = parse_scontrol_job(text).unwrap();
    assert_eq!(st.id.as_str(), "1");
    assert_eq!(st.state, JobState::Cancelled);
    assert_eq!(st.reason, None);
    assert_eq!(
        st.exit_code,
        Some(ExitCode {
            status: 0,
            signal: 15
        })
    );
    assert_eq!(st.nodes.as_deref(), Some("localhost"));
    let st =
        parse_scontrol_job("JobId=3 JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0").unwrap();
    assert_eq!(st.reason.as_deref(), Some("NonZeroExitCode"));
    assert_eq!(st.exit_code.unwrap().to_string(), "3:0");
    let e = parse_scontrol_job("JobName=x").unwrap_err().to_string();
    assert!(e.contains("field `JobId`"), "{e}");

    let jid = JobId::new("5").unwrap();
    let st = parse_sacct("4|COMPLETED|0:0\n5|CANCELLED by 0|0:15\n", &jid).unwrap();
    assert_eq!(st.state, JobState::Cancelled);
    assert_eq!(
        st.exit_code,
        Some(ExitCode {
            status: 0,
            signal: 15
        })
    );
    assert!(parse_sacct("", &jid).is_none());
}

#[test]
fn states_and_changes() {
    assert_eq!(
        JobState::from_slurm("CANCELLED by 1000"),
        JobState::Cancelled
    );
    assert_eq!(JobState::from_slurm("OUT_OF_MEMORY"), JobState::OutOfMemory);
    assert!(JobState::from_slurm("SPECIAL_EXIT").is_final());
    assert!(!JobState::Unknown.is_final());
    assert!(JobState::Gone.is_final());
    assert!(JobState::Completing.is_running());
    let id = JobId::new("1").unwrap();
    let a = JobStatus::bare(id.clone(), JobState::Unknown, Some("timeout".into()));
    let b = JobStatus::bare(id.clone(), JobState::Unknown, Some("refused".into()));
    assert!(!a.differs_from(&b), "two unknowns are the same");
    let mut r1 = JobStatus::bare(id.clone(), JobState::Running, None);
    r1.time_left = Some(Duration::from_secs(60));
    let mut r2 = r1.clone();
    r2.time_left = Some(Duration::from_secs(50));
    assert!(!r1.differs_from(&r2), "time left alone is no change");
    assert!(r1.differs_from(&a));
    assert!(JobId::new("12_3").is_some());
    assert!(JobId::new("x").is_none());
    assert!(JobId::new("1;rm").is_none());
}

#[test]
fn poll_schedule_doubles_to_the_cap_and_resets() {
    let mut s = PollSchedule::new(Duration::from_millis(250), Duration::from_secs(8));
    let delays: Vec<u128> = (0..8).map(|_| s.next_delay().as_millis()).collect();
    assert_eq!(delays, [250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
    s.reset();
    assert_eq!(s.next_delay(), Duration::from_millis(250));
}

#[test]
fn walltime_warning_once_within_the_lead() {
    let id = JobId::new("1").unwrap();
    let mut w = WalltimeWarning::default();
    assert_eq!(w.due_in(Duration::from_secs(600)), Duration::from_secs(300));
    assert_eq!(w.due_in(Duration::from_secs(100)), Duration::ZERO);
    let mut st = JobStatus::bare(id, JobState::Running, None);
    st.time_left = Some(Duration::from_secs(301));
    assert_eq!(w.check(&st), None);
    st.time_left = Some(Duration::from_secs(299));
    assert_eq!(w.check(&st), Some(Duration::from_secs(299)));
    st.time_left = Some(Duration::from_secs(200));
    assert_eq!(w.check(&st), None, "only once");
    let mut w = WalltimeWarning::new(Duration::from_secs(60));
    st.state = JobState::Pending;
    st.time_left = Some(Duration::from_secs(30));
    assert_eq!(w.check(&st), None, "not while pending");
}

#[test]
fn ready_line_only_when_complete() {
    let full = b"log line\npv-launch-ready v1 port=4242 handshake=native protocol=1\nmore\n";
    let r = find_ready_line(full, "/x/stdout").unwrap().unwrap();
    assert_eq!(r.port, 4242);
    let partial = b"log line\npv-launch-ready v1 port=42";
    assert!(find_ready_line(partial, "/x/stdout").unwrap().is_none());
    let bad = b"a\npv-launch-ready v1 port=99999 handshake=native\n";
    let e = find_ready_line(bad, "/x/stdout").unwrap_err().to_string();
    assert!(e.starts_with("/x/stdout, line 2: "), "{e}");
}

#[test]
fn ready_pattern_on_complete_lines_only() {
    let re = regex_lite::Regex::new(r"^Accepting connection\(s\): ").unwrap();
    let out = b"Waiting for client...\nConnection URL: cs://n1:11111\nAccepting connection(s): n1:11111\n";
    assert_eq!(
        find_matching_line(out, &re).as_deref(),
        Some("Accepting connection(s): n1:11111")
    );
    assert_eq!(
        find_matching_line(b"Accepting connection(s): n1:1", &re),
        None
    );
    assert_eq!(find_matching_line(b"Waiting for client...\n", &re), None);
}
