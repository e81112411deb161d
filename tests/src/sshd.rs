//! A real OpenSSH `sshd` on a loopback port, started per test: its own host key, its own
//! config (`-D -e -f`), a throwaway user with a password, a plain and an encrypted client
//! key, and a known_hosts file that either already trusts the host or is empty (for the
//! host-key question). Killed, with every process it started, when dropped.
//!
//! Needs root (it creates the user and runs sshd) and the `openssh-server` package
//! (`ci/apt-packages.txt`). The same steps by hand: `/work/shared/research/rust-ssh.md` §2.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The throwaway login the tests use (created if missing; login shell `/bin/sh`, which
/// reads no rc files, so every ssh command is fast).
pub const TEST_USER: &str = "pvsshtest";
/// Its password.
pub const TEST_PASSWORD: &str = "Pv-Test-Pass-123";
/// The passphrase of the encrypted client key.
pub const KEY_PASSPHRASE: &str = "pv key passphrase";

/// A running sshd and its files.
pub struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    host_key_line: String,
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("run a fixture command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run `cmd` until it succeeds; `useradd` and `chpasswd` fail while another test binary
/// holds the password-file lock.
fn run_retrying(mut make: impl FnMut() -> Command, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = make().output().expect(what);
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn user_exists() -> bool {
    Command::new("id")
        .args(["-u", TEST_USER])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Create the test user if missing and (re)set its password.
pub fn ensure_test_user() {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !user_exists() {
        let _ = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", TEST_USER])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if user_exists() {
            break;
        }
        assert!(Instant::now() < deadline, "cannot create user {TEST_USER}");
        std::thread::sleep(Duration::from_millis(50));
    }
    run_retrying(
        || {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("echo '{TEST_USER}:{TEST_PASSWORD}' | chpasswd"));
            c
        },
        "chpasswd",
    );
}

/// Create the throwaway login `name` with `shell` as its login shell if missing (or give an
/// existing one that shell), and set its password to [`TEST_PASSWORD`] (sshd refuses a locked
/// account even for a key). Every [`Sshd`] accepts its plain and encrypted keys for any user,
/// so this login reaches it the way [`TEST_USER`] does: for tests of other login shells
/// (tcsh, fish) parsing the remote command.
pub fn ensure_user_with_shell(name: &str, shell: &str) {
    assert!(Path::new(shell).exists(), "no login shell {shell}");
    let exists = || {
        Command::new("id")
            .args(["-u", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !exists() {
        let _ = Command::new("useradd")
            .args(["-m", "-s", shell, name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if exists() {
            break;
        }
        assert!(Instant::now() < deadline, "cannot create user {name}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let entry = run(Command::new("getent").args(["passwd", name])).stdout;
    let current = String::from_utf8_lossy(&entry)
        .trim_end()
        .rsplit(':')
        .next()
        .map(str::to_owned);
    if current.as_deref() != Some(shell) {
        run_retrying(
            || {
                let mut c = Command::new("usermod");
                c.args(["-s", shell, name]);
                c
            },
            "usermod -s",
        );
    }
    run_retrying(
        || {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("echo '{name}:{TEST_PASSWORD}' | chpasswd"));
            c
        },
        "chpasswd",
    );
    // Two useradd racing (parallel tests) can leave the home owned by a uid that lost;
    // fish needs to write there.
    let home = String::from_utf8_lossy(&entry)
        .trim_end()
        .split(':')
        .nth(5)
        .map(str::to_owned)
        .expect("a home directory");
    run(Command::new("chown").args(["-R", &format!("{name}:"), &home]));
}

fn keygen(path: &Path, passphrase: &str) {
    run(Command::new("ssh-keygen")
        .args([
            "-q", "-t", "ed25519", "-N", passphrase, "-C", "pv-test", "-f",
        ])
        .arg(path));
}

impl Sshd {
    /// Start an sshd on a free loopback port, ready to accept connections (no PAM:
    /// public keys and passwords).
    pub fn start() -> Sshd {
        Sshd::start_with(false)
    }

    /// Start an sshd; with `pam`, PAM is on and keyboard-interactive offered (Debian's
    /// `/etc/pam.d/sshd` asks one `Password:` round, then an empty one).
    pub fn start_with(pam: bool) -> Sshd {
        Sshd::start_configured(pam, "no")
    }

    /// Start an sshd (no PAM) whose `GatewayPorts` is `gateway_ports` (`no`, `yes`,
    /// `clientspecified`): whether a client's `-R` may bind other than loopback.
    pub fn start_with_gateway_ports(gateway_ports: &str) -> Sshd {
        Sshd::start_configured(false, gateway_ports)
    }

    fn start_configured(pam: bool, gateway_ports: &str) -> Sshd {
        ensure_test_user();
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        // Short path (control sockets may live nearby); readable by the test user, since
        // sshd reads the authorized keys as that user.
        let dir = tempfile::Builder::new()
            .prefix("pvs-")
            .tempdir_in("/tmp")
            .expect("sshd dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.path();
        keygen(&d.join("host"), "");
        keygen(&d.join("id_plain"), "");
        keygen(&d.join("id_enc"), KEY_PASSPHRASE);
        let mut auth = std::fs::read_to_string(d.join("id_plain.pub")).unwrap();
        auth.push_str(&std::fs::read_to_string(d.join("id_enc.pub")).unwrap());
        std::fs::write(d.join("authorized_keys"), auth).unwrap();
        std::fs::set_permissions(
            d.join("authorized_keys"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let host_pub = std::fs::read_to_string(d.join("host.pub")).unwrap();
        let host_key = host_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let config = format!(
            "ListenAddress 127.0.0.1\n\
             HostKey {dir}/host\n\
             PidFile none\n\
             AuthorizedKeysFile {dir}/authorized_keys\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication yes\n\
             KbdInteractiveAuthentication {yes_no}\n\
             UsePAM {yes_no}\n\
             StrictModes no\n\
             AllowTcpForwarding yes\n\
             GatewayPorts {gateway_ports}\n\
             PermitRootLogin no\n\
             MaxSessions 50\n\
             MaxStartups 100\n\
             LogLevel VERBOSE\n",
            dir = d.display(),
            yes_no = if pam { "yes" } else { "no" },
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        std::fs::write(d.join("known_hosts_empty"), "").unwrap();

        // A free port can be taken by another test between choosing and binding: retry.
        for _ in 0..10 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let mut child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(d.join("sshd_config"))
                .args(["-o", &format!("Port={port}")])
                .arg("-E")
                .arg(d.join("sshd.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start /usr/sbin/sshd (install openssh-server)");
            let deadline = Instant::now() + Duration::from_secs(10);
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // bind failed: try another port
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    let host_key_line = format!("[127.0.0.1]:{port} {host_key}\n");
                    std::fs::write(d.join("known_hosts"), &host_key_line).unwrap();
                    return Sshd {
                        child,
                        dir,
                        port,
                        host_key_line,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "sshd did not accept connections within 10 s: {}",
                        Sshd::log_of(d)
                    );
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        panic!("sshd could not bind a port: {}", Sshd::log_of(d));
    }

    fn log_of(d: &Path) -> String {
        std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        Sshd::log_of(self.dir.path())
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The fixture directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The unencrypted client key.
    pub fn plain_key(&self) -> PathBuf {
        self.dir.path().join("id_plain")
    }

    /// The client key encrypted with [`KEY_PASSPHRASE`].
    pub fn encrypted_key(&self) -> PathBuf {
        self.dir.path().join("id_enc")
    }

    /// A known_hosts file that trusts this sshd's host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// This sshd's known_hosts line.
    pub fn host_key_line(&self) -> &str {
        &self.host_key_line
    }

    /// A new, empty known_hosts file (for the unknown-host question).
    pub fn fresh_known_hosts(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::File::create(&p).unwrap().flush().unwrap();
        p
    }

    /// ssh client options (each one argv element) that reach this sshd without reading
    /// the user's ssh config: `-F /dev/null`, the port, `known_hosts`, no agent, and only
    /// the authentication `methods` given (e.g. `publickey`, `password`).
    pub fn client_args(&self, known_hosts: &Path, methods: &str) -> Vec<String> {
        let mut a: Vec<String> = vec!["-F".into(), "/dev/null".into()];
        for o in [
            format!("UserKnownHostsFile={}", known_hosts.display()),
            "GlobalKnownHostsFile=/dev/null".to_string(),
            "StrictHostKeyChecking=ask".to_string(),
            "IdentitiesOnly=yes".to_string(),
            "IdentityAgent=none".to_string(),
            format!("PreferredAuthentications={methods}"),
        ] {
            a.extend(["-o".to_string(), o]);
        }
        a
    }
}

/// Pids of every descendant of `pid` (children first found through /proc).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let children =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

/// Pids of the processes in process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for pid in crate::pids() {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the ")" closing the command name: state ppid pgrp …
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            continue;
        }
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) {
            out.push(pid);
        }
    }
    out
}

/// Wait up to `deadline` until process group `pgid` is empty; the members left.
pub fn wait_group_gone(pgid: u32, deadline: Duration) -> Vec<u32> {
    let end = Instant::now() + deadline;
    loop {
        let left = group_members(pgid);
        if left.is_empty() || Instant::now() > end {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let pids = descendants(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !pids.is_empty() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(pids.iter().map(u32::to_string))
                .stderr(Stdio::null())
                .status();
        }
    }
}
