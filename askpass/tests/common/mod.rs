//! Fixtures shared by the integration tests: a private Xvfb, child processes that are
//! killed when the test ends, waits with deadlines, xdotool and screenshots.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The helper under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_pv-askpass");

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `cond` every 20 ms until it returns `Some`, or panics after `deadline`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed (and reaped) when dropped.
pub struct ChildGuard {
    pub child: Option<Child>,
    pub name: String,
}

impl ChildGuard {
    pub fn new(name: &str, child: Child) -> ChildGuard {
        ChildGuard {
            child: Some(child),
            name: name.to_owned(),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("child still held").id()
    }

    /// Waits for the child to exit, at most `deadline`.
    pub fn wait(&mut self, deadline: Duration) -> ExitStatus {
        let name = self.name.clone();
        let child = self.child.as_mut().expect("child still held");
        wait_for(&format!("{name} to exit"), deadline, || {
            child.try_wait().expect("try_wait")
        })
    }

    /// Waits for the child and returns its status, stdout and stderr (both piped).
    pub fn finish(mut self, deadline: Duration) -> (ExitStatus, String, String) {
        let status = self.wait(deadline);
        let mut child = self.child.take().expect("child still held");
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = child.stdout.take() {
            s.read_to_string(&mut out).expect("read stdout");
        }
        if let Some(mut s) = child.stderr.take() {
            s.read_to_string(&mut err).expect("read stderr");
        }
        let _ = child.wait(); // already exited: this only reaps it
        (status, out, err)
    }

    /// Sends SIGTERM (through `kill`, so no unsafe code is needed here).
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A private X server on a display number it picks itself (`-displayfd`), no TCP.
pub struct Xvfb {
    pub display: String,
    /// The Xauthority file the test's X tools use, for a server started with `-auth`.
    pub xauthority: Option<PathBuf>,
    _guard: ChildGuard,
}

impl Xvfb {
    pub fn start() -> Xvfb {
        Xvfb::start_with_size("1024x768x24")
    }

    pub fn start_with_size(geometry: &str) -> Xvfb {
        Xvfb::start_with_args(geometry, &[])
    }

    /// Starts Xvfb with a screen `geometry` and extra arguments (e.g. `-auth FILE`).
    ///
    /// With `-noreset`: without it the server resets whenever its last client leaves
    /// (each xdotool call), and a client connecting during the reset is refused.
    pub fn start_with_args(geometry: &str, extra: &[&str]) -> Xvfb {
        let mut args = vec!["-noreset"];
        args.extend_from_slice(extra);
        Xvfb::spawn(geometry, &args)
    }

    /// Starts Xvfb as a bare X server behaves by default: resetting whenever its last
    /// client disconnects.
    pub fn start_resetting() -> Xvfb {
        Xvfb::spawn("1024x768x24", &[])
    }

    fn spawn(geometry: &str, extra: &[&str]) -> Xvfb {
        // `-displayfd 1`: Xvfb writes the display number it chose to our pipe once it is
        // ready to accept connections, so waiting for that line is waiting for the server.
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                geometry,
                "-nolisten",
                "tcp",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Xvfb (apt-get install xvfb)");
        let stdout = child.stdout.take().expect("Xvfb stdout");
        let guard = ChildGuard::new("Xvfb", child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(DEADLINE)
            .expect("Xvfb did not report its display in time");
        let number: u32 = line.trim().parse().expect("Xvfb display number");
        Xvfb {
            display: format!(":{number}"),
            xauthority: None,
            _guard: guard,
        }
    }

    /// Runs an X client tool (xdotool, xwininfo, import…) on this display.
    pub fn tool(&self, program: &str, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(program);
        if let Some(auth) = &self.xauthority {
            cmd.env("XAUTHORITY", auth);
        }
        cmd.args(args)
            .env("DISPLAY", &self.display)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"))
    }

    pub fn xdotool(&self, args: &[&str]) -> String {
        let out = self.tool("xdotool", args);
        assert!(
            out.status.success(),
            "xdotool {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until a visible window of class `pv-askpass` is mapped, moves the pointer
    /// over it (there is no window manager, so focus follows the pointer) and returns it.
    /// Fails early, with the helper's stderr, if `helper` exits before its window maps.
    pub fn wait_for_dialog(&self, helper: &mut ChildGuard) -> Window {
        self.wait_for_dialog_titled(helper, None)
    }

    /// Like [`Xvfb::wait_for_dialog`], for the dialog whose title is `title` exactly (to
    /// tell the next dialog from one that is closing: X may give both the same id).
    pub fn wait_for_dialog_titled(&self, helper: &mut ChildGuard, title: Option<&str>) -> Window {
        let id = wait_for("the dialog window to map", DEADLINE, || {
            if let Some(status) = helper.child.as_mut()?.try_wait().ok()? {
                let mut err = String::new();
                if let Some(mut s) = helper.child.as_mut()?.stderr.take() {
                    let _ = s.read_to_string(&mut err);
                }
                panic!("the helper exited ({status:?}) before its window mapped: {err}");
            }
            // `--class PATTERN`: the pattern is matched against the window class.
            let out = self.tool(
                "xdotool",
                &["search", "--onlyvisible", "--class", "pv-askpass"],
            );
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find(|id| {
                    title.is_none_or(|t| {
                        let name = self.tool("xdotool", &["getwindowname", id]);
                        String::from_utf8_lossy(&name.stdout).trim_end() == t
                    })
                })
                .map(str::to_owned)
        });
        let geometry = self.xdotool(&["getwindowgeometry", "--shell", &id]);
        let field = |name: &str| -> i32 {
            geometry
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {geometry}"))
        };
        let w = Window {
            id,
            x: field("X"),
            y: field("Y"),
            width: field("WIDTH"),
            height: field("HEIGHT"),
        };
        let (cx, cy) = (
            (w.x + w.width / 2).to_string(),
            (w.y + w.height / 2).to_string(),
        );
        self.xdotool(&["mousemove", &cx, &cy]);
        // Wait until the server reports the pointer there, so the crossing event (which
        // gives the window the keyboard) precedes any key we send. (`mousemove --sync`
        // does this too, but stalls for long when the pointer is already in place.)
        let want = format!("X={cx}\nY={cy}\n");
        wait_for("the pointer over the dialog", DEADLINE, || {
            self.xdotool(&["getmouselocation", "--shell"])
                .starts_with(&want)
                .then_some(())
        });
        w
    }

    /// Waits until no pv-askpass window is visible any more.
    pub fn wait_for_no_dialog(&self) {
        wait_for("the dialog window to go away", DEADLINE, || {
            let out = self.tool(
                "xdotool",
                &["search", "--onlyvisible", "--class", "pv-askpass"],
            );
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .is_empty()
                .then_some(())
        });
    }

    pub fn type_text(&self, text: &str) {
        self.xdotool(&["type", "--delay", "15", text]);
    }

    pub fn key(&self, key: &str) {
        self.xdotool(&["key", key]);
    }

    /// Saves a screenshot of the whole screen under the artifacts folder and checks that
    /// it is not blank (the empty Xvfb root is a single colour).
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let dir = artifacts_dir();
        let path = dir.join(format!("{name}.png"));
        let out = self.tool("import", &["-window", "root", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let colours = Command::new("identify")
            .args(["-format", "%k", path.to_str().unwrap()])
            .output()
            .expect("identify");
        let count: u32 = String::from_utf8_lossy(&colours.stdout)
            .trim()
            .parse()
            .expect("identify %k");
        assert!(
            count > 8,
            "screenshot {} looks blank ({count} colours)",
            path.display()
        );
        path
    }
}

/// How many pixels differ between two screenshots (ImageMagick `compare -metric AE`).
pub fn pixels_differing(a: &Path, b: &Path) -> u64 {
    let out = Command::new("compare")
        .args(["-metric", "AE"])
        .arg(a)
        .arg(b)
        .arg("null:")
        .output()
        .expect("compare (imagemagick)");
    // compare prints the count on stderr and exits 1 when the images differ.
    let text = String::from_utf8_lossy(&out.stderr);
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("compare said {text:?}")) as u64
}

/// A mapped dialog window and its geometry on the root window.
#[derive(Debug, Clone)]
pub struct Window {
    pub id: String,
    pub x: i32,
    pub y: i32,
    pub width: i32,
    pub height: i32,
}

/// Where screenshots go: `<target>/askpass-shots/` (kept after the run, gitignored).
pub fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("askpass-shots");
    std::fs::create_dir_all(&dir).expect("create artifacts dir");
    dir
}

/// A `Command` for the helper with a clean askpass environment: no bridge, no hint, no
/// timeout, and DISPLAY set to `display` (or removed when `None`).
pub fn helper(display: Option<&str>) -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "PV_ASKPASS_SOCKET",
        "PV_ASKPASS_TIMEOUT",
        "SSH_ASKPASS_PROMPT",
        "WAYLAND_DISPLAY",
        "FLTK_SCALING_FACTOR",
        "DISPLAY",
    ] {
        cmd.env_remove(var);
    }
    if let Some(d) = display {
        cmd.env("DISPLAY", d);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Spawns `cmd` and guards it.
pub fn spawn(name: &str, cmd: &mut Command) -> ChildGuard {
    ChildGuard::new(
        name,
        cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}")),
    )
}

/// True when running as root (needed for the loopback sshd fixture).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
