//! Watchers: what undoes pv-launch's work when pv-launch dies without cleaning up.
//!
//! A destructor does not run when pv-launch is killed with SIGKILL (or by the OOM
//! killer, or aborts): the local server's process group, the `--exec` client, the ssh
//! control master and the private directories would outlive it. So each of them gets a
//! watcher: a tiny `/bin/sh` that blocks reading a pipe whose only write end pv-launch
//! holds (close-on-exec, so no other program inherits it). The kernel closes that end when
//! pv-launch dies, however it dies; the shell's `read` then returns and it runs its
//! action (stop the group, `ssh -O exit`, remove a directory). The remote side works the
//! same way: its wrapper stops its group when the ssh channel's stdin ends.
//!
//! When pv-launch cleans up itself, it first *releases* the watcher: SIGKILL to the
//! watcher's pid (our unreaped child, so the pid is surely ours), a wait, and only then
//! the pipe is closed — the action never runs.
//!
//! A watcher can join a process group instead of leading its own: a member keeps the
//! group's id from being reused, so its `kill 0` always reaches the group it was meant
//! for, never a stranger's (see [`crate::startup::local`]'s group notes).

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The shell that runs a watcher's action.
const SHELL: &str = "/bin/sh";

/// The name a watcher shows as `$0` (in `ps`).
const NAME: &str = "pv-launch-watch";

/// Which process group a watcher is in.
#[derive(Clone, Copy, Debug)]
pub enum WatcherGroup {
    /// Its own: a signal to pv-launch's group (a shell's `kill -9 %1`) must not reach it.
    Own,
    /// The group with this id (a group pv-launch started and that still has a member,
    /// possibly an unreaped zombie leader).
    Join(u32),
}

/// A watcher process: runs its action if pv-launch dies without releasing it; dropping
/// it releases it.
#[derive(Debug)]
pub struct Watcher {
    child: Option<Child>,
}

impl Watcher {
    /// Start a watcher that runs `action` (a `/bin/sh` script; `args` are its `$1`…,
    /// never interpolated into the script) once pv-launch is gone, with no stdio of
    /// pv-launch's.
    pub fn spawn(action: &str, args: &[&OsStr], group: WatcherGroup) -> io::Result<Watcher> {
        // `read` returns at end of file, that is when pv-launch is gone: nothing else
        // ever writes the pipe.
        let script = format!("read -r _; {action}");
        let mut command = Command::new(SHELL);
        command
            .arg("-c")
            .arg(script)
            .arg(NAME)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command.process_group(match group {
            WatcherGroup::Own => 0,
            WatcherGroup::Join(pgid) => i32::try_from(pgid)
                .ok()
                .filter(|p| *p > 1)
                .ok_or_else(|| io::Error::other(format!("no process group {pgid} to join")))?,
        });
        Ok(Watcher {
            child: Some(command.spawn()?),
        })
    }

    /// A watcher (in its own group) that removes `dir` and everything in it.
    pub fn remove_dir(dir: &Path) -> io::Result<Watcher> {
        Watcher::spawn("rm -rf -- \"$1\"", &[dir.as_os_str()], WatcherGroup::Own)
    }

    /// The watcher's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stop the watcher without running its action: pv-launch does the cleanup itself
    /// (or there is none left to do).
    pub fn release(mut self) {
        self.stop();
    }

    /// Run the action now, as when pv-launch dies (its pipe closes), without waiting: a
    /// thread reaps the watcher when it is done.
    pub fn fire(mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            reap_in_background(child);
        }
    }

    /// Run the action now and wait for it, at most `within`; `false` if it still runs
    /// then (a thread reaps it later).
    pub async fn fire_and_wait(mut self, within: std::time::Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        drop(child.stdin.take());
        let deadline = std::time::Instant::now() + within;
        loop {
            match child.try_wait() {
                Ok(None) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Ok(None) => {
                    reap_in_background(child);
                    return false;
                }
                Ok(Some(_)) | Err(_) => return true,
            }
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Killed and reaped while its pipe is still open: it cannot see end of file
            // first. The pid is ours until the wait, so the signal cannot go astray.
            let _ = child.kill();
            let _ = child.wait();
            drop(child.stdin.take());
        }
    }
}

/// Wait for `child` from a thread (which needs no runtime), so it does not linger as a
/// zombie.
fn reap_in_background(mut child: Child) {
    if let Ok(None) = child.try_wait() {
        std::thread::spawn(move || {
            let _ = child.wait();
        });
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn eventually(mut cond: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while !cond() {
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    #[test]
    fn the_action_runs_when_the_pipe_closes_and_never_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let (fired, released) = (dir.path().join("fired"), dir.path().join("released"));
        let touch = "echo done > \"$1\"";
        // Released: killed and reaped before its pipe closes, so the action never runs.
        let w = Watcher::spawn(touch, &[released.as_os_str()], WatcherGroup::Own).unwrap();
        let pid = w.pid().unwrap();
        w.release();
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        // Its pipe closed as when pv-launch dies: the action runs.
        let mut w = Watcher::spawn(touch, &[fired.as_os_str()], WatcherGroup::Own).unwrap();
        drop(w.child.as_mut().unwrap().stdin.take());
        assert!(eventually(
            || std::fs::read_to_string(&fired).is_ok_and(|s| s == "done\n")
        ));
        drop(w);
        assert!(!released.exists());
    }

    #[test]
    fn a_group_id_of_one_or_less_is_never_joined() {
        for pgid in [0, 1] {
            let e = Watcher::spawn(":", &[], WatcherGroup::Join(pgid)).unwrap_err();
            assert!(e.to_string().contains("no process group"), "{e}");
        }
    }
}
