//! Following a job from queue to end: an adaptive [`PollSchedule`], the [`Tracker`] that
//! turns polls into [`TrackEvent`]s, and the walltime warning.
//!
//! Polling, not a push channel, because that is all a scheduler offers its users. The
//! schedule keeps the controller's load small: fast right after a change (a job that just
//! started usually reaches the next state soon; the server's ready line follows its start by
//! well under a second), then doubling to a cap, so a job queued for an hour costs about
//! 7-8 `squeue` calls a minute with the default 8 s cap.

use std::time::Duration;

use pv_transport::launch::ReadyLine;
use regex_lite::Regex;
use tokio::time::Instant;

use super::BatchError;
use super::runner::Runner;
use super::script::{JobFiles, ReadFileError, tail_lines};
use super::slurm::Slurm;
use super::status::{JobId, JobStatus};

/// The first poll delay after a change.
pub const DEFAULT_FIRST_POLL: Duration = Duration::from_millis(250);
/// The longest poll delay.
pub const DEFAULT_POLL_CAP: Duration = Duration::from_secs(8);
/// The longest poll delay while a running job's server is not ready yet (its ready line
/// or ready pattern awaited): that wait is short, and each poll it is late adds to the
/// time to connected.
pub const READY_POLL_CAP: Duration = Duration::from_millis(500);
/// How long before the walltime limit to warn, by default.
pub const DEFAULT_WALLTIME_LEAD: Duration = Duration::from_secs(5 * 60);
/// How many lines of the job's output an ended job reports.
pub const OUTPUT_TAIL_LINES: usize = 20;

/// Poll delays: `first`, doubling up to `cap`; back to `first` after [`PollSchedule::reset`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollSchedule {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl Default for PollSchedule {
    fn default() -> Self {
        PollSchedule::new(DEFAULT_FIRST_POLL, DEFAULT_POLL_CAP)
    }
}

impl PollSchedule {
    /// Delays from `first` doubling to `cap` (`cap` is raised to `first` when smaller).
    pub fn new(first: Duration, cap: Duration) -> Self {
        PollSchedule {
            first,
            cap: cap.max(first),
            next: first,
        }
    }

    /// The delay before the next poll; the one after it doubles (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        d
    }

    /// Something changed: poll fast again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// When to warn that a job's walltime is running out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalltimeWarning {
    lead: Duration,
    warned: bool,
}

impl Default for WalltimeWarning {
    fn default() -> Self {
        WalltimeWarning::new(DEFAULT_WALLTIME_LEAD)
    }
}

impl WalltimeWarning {
    /// Warn `lead` before the limit.
    pub fn new(lead: Duration) -> Self {
        WalltimeWarning {
            lead,
            warned: false,
        }
    }

    /// How long from a moment with `time_left` until the warning is due (zero: now).
    pub fn due_in(&self, time_left: Duration) -> Duration {
        time_left.saturating_sub(self.lead)
    }

    /// `Some(time left)` the first time a running job is within the lead; `None` otherwise
    /// (and always after the warning was given once).
    pub fn check(&mut self, status: &JobStatus) -> Option<Duration> {
        let left = status.time_left?;
        if self.warned || !status.state.is_running() || left > self.lead {
            return None;
        }
        self.warned = true;
        Some(left)
    }
}

/// Something the tracker saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackEvent {
    /// The job's status changed (state, reason, nodes, estimated start) and it still lives
    /// (or the controller does not answer: [`super::JobState::Unknown`]).
    Changed(JobStatus),
    /// The server's ready line appeared in the job's stdout file.
    Ready {
        /// The ready line.
        ready: ReadyLine,
        /// Time from the poll that first saw the job running to the poll that found the
        /// line (both rounded to the poll schedule).
        since_running: Option<Duration>,
    },
    /// A line of the server's output (its stdout file or the job's output file) matched
    /// the ready pattern: a server that prints no ready line (pvserver) listens.
    Matched {
        /// The line.
        line: String,
        /// Time from the poll that first saw the job running to the poll that found the
        /// line (both rounded to the poll schedule).
        since_running: Option<Duration>,
    },
    /// The walltime limit is near.
    WalltimeWarning {
        /// Time left when this was noticed.
        time_left: Duration,
    },
    /// The job ended: its final status and the last lines of its output (empty when the
    /// tracker was not told where the output is, or it is not readable from here).
    Ended {
        /// The final status.
        status: JobStatus,
        /// The last [`OUTPUT_TAIL_LINES`] lines of the job's output file.
        output_tail: Vec<String>,
    },
}

/// Follows one job through [`TrackEvent`]s until it ends.
///
/// ```no_run
/// # async fn f(slurm: &pv_launch::startup::batch::Slurm<pv_launch::startup::batch::LocalRunner>,
/// #            id: pv_launch::startup::batch::JobId) -> Result<(), pv_launch::startup::batch::BatchError> {
/// use pv_launch::startup::batch::{TrackEvent, Tracker};
/// let mut tracker = Tracker::new(slurm, id);
/// while let Some(event) = tracker.next_event().await? {
///     if let TrackEvent::Ended { status, .. } = event {
///         println!("{status}");
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Tracker<'a, R> {
    slurm: &'a Slurm<R>,
    id: JobId,
    schedule: PollSchedule,
    warning: WalltimeWarning,
    files: Option<(JobFiles, String)>,
    pattern: Option<Regex>,
    last: Option<JobStatus>,
    running_since: Option<Instant>,
    ready_seen: bool,
    queued: Vec<TrackEvent>,
    polled: bool,
    ended: bool,
}

impl<'a, R: Runner> Tracker<'a, R> {
    /// Track job `id` with the default schedule and walltime lead.
    pub fn new(slurm: &'a Slurm<R>, id: JobId) -> Self {
        Tracker {
            slurm,
            id,
            schedule: PollSchedule::default(),
            warning: WalltimeWarning::default(),
            files: None,
            pattern: None,
            last: None,
            running_since: None,
            ready_seen: false,
            queued: Vec::new(),
            polled: false,
            ended: false,
        }
    }

    /// Use `schedule` for the polls.
    pub fn with_schedule(mut self, schedule: PollSchedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Warn `lead` before the walltime limit.
    pub fn with_walltime_lead(mut self, lead: Duration) -> Self {
        self.warning = WalltimeWarning::new(lead);
        self
    }

    /// Also watch `files.stdout` for the ready line while the job runs, and report the tail
    /// of `output` (the job's output file) when it ends.
    pub fn with_files(mut self, files: JobFiles, output: String) -> Self {
        self.files = Some((files, output));
        self
    }

    /// Watch for a line matching `pattern` (in the server's stdout file and the job's
    /// output file: [`TrackEvent::Matched`]) instead of the ready line, for a server that
    /// prints none. Needs [`Tracker::with_files`].
    pub fn with_pattern(mut self, pattern: Regex) -> Self {
        self.pattern = Some(pattern);
        self
    }

    /// Do not watch for the server's readiness (it was seen already: a tracker that only
    /// follows the job to its end).
    pub fn without_readiness(mut self) -> Self {
        self.ready_seen = true;
        self
    }

    /// The last status seen.
    pub fn last(&self) -> Option<&JobStatus> {
        self.last.as_ref()
    }

    /// The next event; `Ok(None)` once the job has ended. Waits (polling) as long as nothing
    /// happens: bound it with the stage's timeout. Errors are a scheduler that cannot be run
    /// at all or output that does not parse, never a controller that does not answer.
    pub async fn next_event(&mut self) -> Result<Option<TrackEvent>, BatchError> {
        loop {
            if !self.queued.is_empty() {
                return Ok(Some(self.queued.remove(0)));
            }
            if self.ended {
                return Ok(None);
            }
            if self.polled {
                let mut delay = self.schedule.next_delay();
                // A running job whose server is awaited: poll at least every
                // READY_POLL_CAP until it is ready.
                let awaited = self.files.is_some() && !self.ready_seen;
                if awaited && self.last.as_ref().is_some_and(|st| st.state.is_running()) {
                    delay = delay.min(READY_POLL_CAP);
                }
                // Poll no later than the walltime warning is due.
                if let Some(st) = &self.last {
                    if let (Some(left), true) = (st.time_left, st.state.is_running()) {
                        let due = self.warning.due_in(left);
                        if !due.is_zero() {
                            delay = delay.min(due);
                        }
                    }
                }
                tokio::time::sleep(delay).await;
            }
            self.polled = true;
            self.poll().await?;
        }
    }

    /// One poll: status, then the ready file; queue what is new.
    async fn poll(&mut self) -> Result<(), BatchError> {
        let st = self.slurm.status_one(&self.id).await?;
        let changed = self.last.as_ref().is_none_or(|l| st.differs_from(l));
        if st.state.is_running() && self.running_since.is_none() {
            self.running_since = Some(Instant::now());
        }
        // The status change first, then what it made visible (the ready line), then the end.
        if changed && !st.state.is_final() {
            self.queued.push(TrackEvent::Changed(st.clone()));
        }
        if !self.ready_seen && (st.state.is_running() || st.state.is_final()) {
            match self.pattern.clone() {
                Some(re) => self.look_for_pattern(&re).await,
                None => self.look_for_ready().await?,
            }
        }
        if st.state.is_final() {
            let output_tail = match &self.files {
                Some((_, output)) => tail_lines(self.slurm.runner(), output, OUTPUT_TAIL_LINES)
                    .await
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            self.queued.push(TrackEvent::Ended {
                status: st.clone(),
                output_tail,
            });
            self.ended = true;
        } else if let Some(time_left) = self.warning.check(&st) {
            self.queued.push(TrackEvent::WalltimeWarning { time_left });
        }
        if changed {
            self.schedule.reset();
        }
        self.last = Some(st);
        Ok(())
    }

    /// The first complete line matching `re` in the server's stdout file, else in the job's
    /// output file (its stderr). A file that cannot be read now is tried at the next poll.
    async fn look_for_pattern(&mut self, re: &Regex) {
        let Some((files, output)) = &self.files else {
            return;
        };
        for path in [&files.stdout, output] {
            let Ok(Some(bytes)) = self.slurm.runner().read_file(path).await else {
                continue;
            };
            if let Some(line) = find_matching_line(&bytes, re) {
                self.ready_seen = true;
                self.queued.push(TrackEvent::Matched {
                    line,
                    since_running: self.running_since.map(|t| t.elapsed()),
                });
                return;
            }
        }
    }

    async fn look_for_ready(&mut self) -> Result<(), BatchError> {
        let Some((files, _)) = &self.files else {
            return Ok(());
        };
        match files.ready_line(self.slurm.runner()).await {
            Ok(Some(ready)) => {
                self.ready_seen = true;
                self.queued.push(TrackEvent::Ready {
                    ready,
                    since_running: self.running_since.map(|t| t.elapsed()),
                });
                Ok(())
            }
            Ok(None) => Ok(()),
            // A file that cannot be read right now (NFS hiccup, ssh blip): try next poll.
            Err(ReadFileError::Run(_)) => Ok(()),
            Err(e @ ReadFileError::BadReadyLine { .. }) => Err(BatchError::Ready(e)),
        }
    }
}

/// The first complete line of `bytes` (one that ends in a newline: the server may be
/// halfway through writing the last) that `re` matches.
pub fn find_matching_line(bytes: &[u8], re: &Regex) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let complete = &text[..text.rfind('\n')?];
    complete
        .lines()
        .find(|l| re.is_match(l))
        .map(str::to_string)
}
