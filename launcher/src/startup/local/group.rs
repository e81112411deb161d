//! The process groups pv-launch starts: signalling them only while their id is known to be
//! ours, and stopping them from a destructor.
//!
//! ## Whose group is it?
//!
//! A process group's id is the pid of the process that made it, the leader. While the
//! leader exists — running, or a zombie not yet reaped — the kernel cannot hand its pid out
//! again, so the id is ours. Once the leader is reaped the id stays taken only while a
//! member of the group remains; when the last one is gone the pid is free, a later process
//! can get it and lead a group of its own with that id, and a `killpg` would reach a
//! stranger. So before every signal [`Group::alive_and_ours`] looks in /proc:
//!
//! - the leader still exists (the same pid *and* the same start time as at the spawn): ours;
//! - another process has the leader's pid (another start time): the id was reused;
//! - the leader is reaped: ours while live members remain.
//!
//! A group seen empty or reused once is forgotten for good ([`GroupStop`]), and
//! [`ServerHandle`](super::ServerHandle) looks the moment it reaps the leader. What this
//! cannot see: members that outlive the leader and all end between two looks, after which
//! their id goes to a new group whose own leader has already exited, leaving members
//! behind — it takes the pid space to wrap in between, and a group without its leader.
//!
//! ## Stopping from a destructor
//!
//! A launch can be dropped at any await point (Ctrl-C, SIGTERM, an embedder's timeout),
//! including in the middle of the start, and a destructor cannot await. [`GroupStop`] is
//! armed the moment the child exists and, when dropped armed, stops the child's whole
//! group the way [`ServerHandle::cleanup`](super::ServerHandle::cleanup) does — SIGTERM,
//! then SIGKILL after [`TERMINATE_GRACE`] — without blocking the async runtime:
//!
//! - SIGTERM goes out at once, from the destructor;
//! - the grace is watched by a small detached std thread that polls the group every 20 ms
//!   and sends SIGKILL only if something is still alive when the grace ends, then waits
//!   (up to 1 s) until nothing is. A thread rather than a tokio task, because the
//!   runtime may be shutting down (the CLI drops the launch on Ctrl-C and then returns from
//!   `block_on`), and a blocking wait in the destructor would stall every other task on
//!   that runtime thread for up to the grace;
//! - a process that exits while the thread still waits would lose the escalation, so such
//!   programs call [`wait_for_group_stops`] before they exit (the CLI does).
//!
//! ## When pv-launch dies first
//!
//! No destructor runs on SIGKILL. So each group also holds a watcher
//! ([`crate::startup::watcher`]), started right after the leader and joined to its group:
//! when pv-launch's end of its pipe closes, it stops the group the same way (SIGTERM, the
//! grace, SIGKILL) with `kill 0`, which cannot reach another group. As a member it also
//! keeps the group's id from being reused while it runs. pv-launch releases it before it
//! stops or forgets the group itself, and it never counts as one of the group's live
//! members. Not covered: a SIGKILL in the moment between the leader's spawn and the
//! watcher's.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use std::ffi::OsStr;

use super::TERMINATE_GRACE;
use crate::startup::watcher::{Watcher, WatcherGroup};

/// How often the stopping thread looks whether the group is gone.
const POLL: Duration = Duration::from_millis(20);

/// How long the stopping thread waits for the group to go after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(1);

/// Threads still watching a group's grace period.
static STOPPING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// A process group started by pv-launch: its id and who led it.
#[derive(Clone, Copy, Debug)]
struct Group {
    pgid: Pid,
    /// The leader's start time, read while it was our unreaped child (so surely ours);
    /// `None` without /proc.
    leader_start: Option<u64>,
    /// pv-launch's own watcher in the group ([`Watcher`]): not one of the server's
    /// processes, so it never makes the group count as alive.
    watcher: Option<i32>,
}

impl Group {
    /// The group led by `pid`, a child started with `process_group(0)` and not yet reaped.
    fn led_by(pid: u32) -> Option<Group> {
        // Pid 0 or a negative pid would make killpg address our own group or every
        // process: never a group for those.
        let pgid = i32::try_from(pid)
            .ok()
            .filter(|p| *p > 0)
            .map(Pid::from_raw)?;
        Some(Group {
            pgid,
            leader_start: Stat::of(pgid.as_raw()).map(|s| s.start),
            watcher: None,
        })
    }

    /// Whether the id still names our group (see the module's documentation) and a live
    /// (not zombie) process is in it: whether signalling it is both safe and useful.
    fn alive_and_ours(&self) -> bool {
        if killpg(self.pgid, None) == Err(Errno::ESRCH) {
            return false; // nobody has this group id
        }
        let Some(start) = self.leader_start else {
            return true; // no /proc at the spawn: trust killpg
        };
        match Stat::of(self.pgid.as_raw()) {
            // The leader exists, so its pid, and with it the group id, is still ours.
            Some(leader) if leader.start == start => {
                (leader.live() && leader.pgrp == self.pgid.as_raw())
                    || live_member(self.pgid, self.watcher)
            }
            // Someone else has the leader's pid: the id was reused.
            Some(_) => false,
            // The leader is reaped: ours while live members remain.
            None => live_member(self.pgid, self.watcher),
        }
    }
}

/// What pv-launch reads of `/proc/PID/stat`.
struct Stat {
    state: char,
    pgrp: i32,
    /// Clock ticks after boot (field 22).
    start: u64,
}

impl Stat {
    fn of(pid: i32) -> Option<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the ")" that closes the command name: state (field 3), ppid, pgrp, …
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(Stat {
            state: fields.first()?.chars().next()?,
            pgrp: fields.get(2)?.parse().ok()?,
            start: fields.get(19)?.parse().ok()?,
        })
    }

    /// Not a zombie (nor dead).
    fn live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Whether a live (not zombie) process other than `except` is in group `pgid`.
///
/// `killpg(pgid, 0)` alone also counts a leader that exited but is not reaped yet (tokio
/// reaps dropped children lazily, and not at all once its runtime is gone), which would
/// make every stop wait out the whole grace; so /proc decides.
fn live_member(pgid: Pid, except: Option<i32>) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true; // no /proc: trust killpg
    };
    entries.flatten().any(|entry| {
        entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .filter(|pid| Some(*pid) != except)
            .and_then(Stat::of)
            .is_some_and(|s| s.live() && s.pgrp == pgid.as_raw())
    })
}

/// The group of a started process: signals it while it is known to be ours, and stops it
/// when dropped, unless [`disarm`](Self::disarm)ed or seen gone before.
#[derive(Debug)]
pub(super) struct GroupStop {
    group: Option<Group>,
    /// Set once the group was stopped another way, seen empty or seen reused: from then
    /// on its id is never signalled again.
    forgotten: AtomicBool,
    /// Stops the group if pv-launch dies before it did (see [`Watcher`]); released as
    /// soon as pv-launch stops or forgets the group itself.
    watcher: Mutex<Option<Watcher>>,
}

/// The local watcher's action once pv-launch is gone: the same stop as a [`GroupStop`]'s
/// — SIGTERM to the group, SIGKILL after the grace (`$1` seconds) — sent from inside the
/// group (`kill 0`), so it can only reach the group it belongs to. The watcher ignores
/// SIGTERM itself and goes with the SIGKILL.
const STOP_GROUP: &str = "trap '' TERM; kill -TERM 0; sleep \"$1\"; kill -KILL 0";

impl GroupStop {
    /// Guard the group led by `pid` (a child started with `process_group(0)`, not yet
    /// reaped), and start the watcher that stops the group if pv-launch dies first. The
    /// guard is returned even when the watcher could not start (so that dropping it stops
    /// the group), with the error.
    pub(super) fn new(pid: u32) -> (GroupStop, std::io::Result<()>) {
        let mut group = Group::led_by(pid);
        let watcher = match group {
            Some(g) => Watcher::spawn(
                STOP_GROUP,
                &[OsStr::new(&TERMINATE_GRACE.as_secs().max(1).to_string())],
                WatcherGroup::Join(g.pgid.as_raw() as u32),
            )
            .map(Some),
            None => Ok(None),
        };
        let (watcher, spawned) = match watcher {
            Ok(w) => (w, Ok(())),
            Err(e) => (None, Err(e)),
        };
        if let (Some(g), Some(w)) = (group.as_mut(), watcher.as_ref()) {
            g.watcher = w.pid().and_then(|p| i32::try_from(p).ok());
        }
        let stop = GroupStop {
            forgotten: AtomicBool::new(group.is_none()),
            group,
            watcher: Mutex::new(watcher),
        };
        (stop, spawned)
    }

    /// Release the watcher: pv-launch stops (or forgets) the group itself from now on.
    fn release_watcher(&self) {
        let watcher = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(w) = watcher {
            w.release();
        }
    }

    /// The group's id while it is ours and has live members; once it is not, the group
    /// is forgotten.
    fn pgid(&self) -> Option<Pid> {
        let group = self
            .group
            .filter(|_| !self.forgotten.load(Ordering::SeqCst))?;
        if group.alive_and_ours() {
            Some(group.pgid)
        } else {
            self.disarm();
            None
        }
    }

    /// Send `signal` to the group; `ESRCH` once it is gone (or was never valid).
    pub(super) fn signal(&self, signal: Signal) -> nix::Result<()> {
        let pgid = self.pgid().ok_or(Errno::ESRCH)?;
        let sent = killpg(pgid, signal);
        if sent == Err(Errno::ESRCH) {
            self.disarm();
        }
        sent
    }

    /// Whether the group still has live members (and is ours).
    pub(super) fn alive(&self) -> bool {
        self.pgid().is_some()
    }

    /// The leader was just reaped: if nothing of the group is left, forget it now, before
    /// its id can go to another process.
    pub(super) fn leader_reaped(&self) {
        let _ = self.pgid();
    }

    /// Forget the group: it was stopped another way, is gone, or must outlive us.
    pub(super) fn disarm(&self) {
        self.forgotten.store(true, Ordering::SeqCst);
        self.release_watcher();
    }

    /// pv-launch stops the group itself from now on (a cleanup): the watcher goes first,
    /// so that the group's signals and liveness are the server's alone.
    pub(super) fn stopping(&self) {
        self.release_watcher();
    }
}

impl Drop for GroupStop {
    fn drop(&mut self) {
        self.release_watcher();
        if let Some(group) = self.group.take() {
            if !self.forgotten.load(Ordering::SeqCst) {
                stop_in_background(group);
            }
        }
    }
}

/// SIGTERM now; SIGKILL from a detached thread if anything is left after the grace.
fn stop_in_background(group: Group) {
    let pgid = group.pgid;
    if !group.alive_and_ours() || killpg(pgid, Signal::SIGTERM) == Err(Errno::ESRCH) {
        return; // nothing left in the group
    }
    let spawned = std::thread::Builder::new()
        .name("pv-launch-stop".into())
        .spawn(move || {
            let end = Instant::now() + TERMINATE_GRACE;
            while Instant::now() < end {
                if !group.alive_and_ours() {
                    // Gone (or its id reused): do not signal again.
                    return;
                }
                std::thread::sleep(POLL);
            }
            if !group.alive_and_ours() {
                return;
            }
            let _ = killpg(pgid, Signal::SIGKILL);
            // SIGKILL takes a moment to take effect: whoever waits for this thread
            // (`wait_for_group_stops`) may then say that the processes are stopped.
            let end = Instant::now() + KILL_WAIT;
            while Instant::now() < end && group.alive_and_ours() {
                std::thread::sleep(POLL);
            }
        });
    match spawned {
        Ok(thread) => {
            let mut stopping = STOPPING.lock().unwrap_or_else(|e| e.into_inner());
            // Forget threads that are done, so the list does not grow in a long-lived
            // embedder that launches many times.
            stopping.retain(|t| !t.is_finished());
            stopping.push(thread);
        }
        // No thread: no grace either. Stopping now beats leaving the group running.
        Err(_) => {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// Block until every process group that a dropped launch or [`ServerHandle`] is still
/// stopping is stopped: gone, or sent SIGKILL at the end of its grace
/// ([`TERMINATE_GRACE`], 2 s) and given up to 1 s more to go.
///
/// Call it before the process exits after dropping a launch, or a server that ignores
/// SIGTERM may outlive it. Not from async code: it blocks the calling thread.
///
/// [`ServerHandle`]: super::ServerHandle
pub fn wait_for_group_stops() {
    let threads = std::mem::take(&mut *STOPPING.lock().unwrap_or_else(|e| e.into_inner()));
    for thread in threads {
        let _ = thread.join();
    }
}
