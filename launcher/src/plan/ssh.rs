//! A start over ssh, typed ([`SshPlan`]: target, tunnels, remote command, backend), and
//! the text rendered from it: POSIX-sh quoting of the remote command, validation of host
//! and user names, and the exact OpenSSH command lines ([`OpenSshCommands`]) that both
//! the runtime and `--dry-run` use.
//!
//! ssh joins its trailing arguments with spaces into one string that the remote login
//! shell parses, whatever it is (sh, bash, tcsh, fish), so pv-launch sends exactly one
//! argument, written so that every one of those shells reads it the same way
//! ([`login_shell_word`]): `exec /bin/sh -c <wrapper> pv-launch <command>`, where
//! `<command>` is POSIX sh text that quotes every remote argv element for POSIX sh. `--` ends ssh's options before the destination, and host and user names are
//! refused when they hold control characters or start with `-`.

use super::russh_options::RusshSettings;
use super::ssh_target::SshTarget;
use crate::profile::SshBackend;

/// Quote `s` for POSIX sh: unchanged when it holds only safe characters, else in single
/// quotes with each `'` written as `'\''`.
pub fn sh_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Refuse a host or user name ssh could misread: empty, control characters, whitespace,
/// a leading `-` (it would be an option).
pub fn check_ssh_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("the ssh {what} is empty"));
    }
    if name.starts_with('-') {
        return Err(format!(
            "the ssh {what} {name:?} starts with '-' and would be read as an option"
        ));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "the ssh {what} {name:?} contains whitespace or control characters"
        ));
    }
    if what == "user" && name.contains('@') {
        return Err(format!("the ssh user {name:?} contains '@'"));
    }
    // A shell metacharacter in a host or user name reaches a shell wherever the user's
    // ssh config expands `%h`/`%r` into a ProxyCommand or LocalCommand (the
    // CVE-2023-51385 class); no real name needs one.
    if let Some(c) = name.chars().find(|c| SHELL_META.contains(*c)) {
        return Err(format!(
            "the ssh {what} {name:?} contains {c:?}, which a shell would interpret; host and user names may not"
        ));
    }
    Ok(())
}

/// Characters no host, user or jump-host name may hold.
const SHELL_META: &str = "'\"`$;&|<>(){}*?!\\#~";

/// The remote shell text for `argv`, run with `env` exported, in `workdir`.
pub fn remote_command(argv: &[String], env: &[(String, String)], workdir: Option<&str>) -> String {
    let mut inner = String::new();
    if let Some(dir) = workdir {
        inner.push_str(&format!("cd -- {} && ", sh_quote(dir)));
    }
    if !env.is_empty() {
        inner.push_str("export");
        for (k, v) in env {
            inner.push_str(&format!(" {k}={}", sh_quote(v)));
        }
        inner.push_str(" && ");
    }
    inner.push_str("exec");
    for a in argv {
        inner.push(' ');
        inner.push_str(&sh_quote(a));
    }
    format!("exec /bin/sh -c {}", sh_quote(&inner))
}

/// One tunnel through the ssh connection: the plan's, the runtime's and the dry run's one
/// representation. The `-L`/`-R` text is rendered from it by [`Tunnel::spec`], never
/// parsed back.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Tunnel {
    /// `-L 127.0.0.1:<local_port>:<host>:<remote_port>`: the client dials
    /// `127.0.0.1:<local_port>` here, which reaches `<host>:<remote_port>` as seen from the
    /// ssh host.
    Local {
        /// Port on this host; 0: a free one, chosen at run time.
        local_port: u16,
        /// The server's host as seen from the ssh host (usually `127.0.0.1`; a compute
        /// node for a batch job).
        host: String,
        /// The server's port; 0: the port in the server's ready line.
        remote_port: u16,
    },
    /// `-R 127.0.0.1:<remote_port>:127.0.0.1:<local_port>`: the server dials
    /// `127.0.0.1:<remote_port>` on its host, which reaches the client listening on
    /// `127.0.0.1:<local_port>` here. With `public`, `-R 0.0.0.0:…`: other hosts (compute
    /// nodes) dial it too, if the remote sshd allows it (`GatewayPorts`).
    Remote {
        /// Port on the remote host; 0: chosen by the remote side (read back).
        remote_port: u16,
        /// Port on this host (the client's listener).
        local_port: u16,
        /// Bound on all the remote host's interfaces instead of its loopback.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        public: bool,
    },
}

impl Tunnel {
    /// The ssh flag: `-L` or `-R`.
    pub fn flag(&self) -> &'static str {
        match self {
            Tunnel::Local { .. } => "-L",
            Tunnel::Remote { .. } => "-R",
        }
    }

    /// The forwarding spec after the flag, both ends bound to loopback explicitly.
    pub fn spec(&self) -> String {
        match self {
            Tunnel::Local {
                local_port,
                host,
                remote_port,
            } => {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                format!("127.0.0.1:{local_port}:{host}:{remote_port}")
            }
            Tunnel::Remote {
                remote_port,
                local_port,
                public,
            } => {
                let bind = if *public { "0.0.0.0" } else { "127.0.0.1" };
                format!("{bind}:{remote_port}:127.0.0.1:{local_port}")
            }
        }
    }
}

/// What runs on the remote host: argv, exported environment and working directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteCommand {
    /// The remote argv.
    pub argv: Vec<String>,
    /// Variables exported before the command runs (never a secret: a remote command line
    /// is visible to the remote host's users).
    pub env: Vec<(String, String)>,
    /// The remote working directory.
    pub workdir: Option<String>,
}

impl RemoteCommand {
    /// The one POSIX sh command line for it ([`remote_command`]).
    pub fn shell_text(&self) -> String {
        remote_command(&self.argv, &self.env, self.workdir.as_deref())
    }
}

/// Which ssh implementation runs the connection, with what it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendPlan {
    /// The system's OpenSSH client, through pv-launch's own control master.
    OpenSsh,
    /// The in-process russh client, with the ssh options it honours (checked when the
    /// plan was made, see [`super::russh_options`]).
    Russh(RusshSettings),
}

/// A start over ssh: where to, the tunnels, what runs there and with which backend.
#[derive(Clone, Debug)]
pub struct SshPlan {
    /// The destination and its ssh options.
    pub target: SshTarget,
    /// Tunnels through the connection (at most one per connection today).
    pub tunnels: Vec<Tunnel>,
    /// What runs on the remote host.
    pub remote: RemoteCommand,
    /// Which ssh implementation runs it.
    pub backend: BackendPlan,
}

impl SshPlan {
    /// The one string ssh hands to the remote login shell for the server (before the
    /// cleanup wrapper, [`wrap_remote_command`]).
    pub fn command(&self) -> String {
        self.remote.shell_text()
    }

    /// The backend's name.
    pub fn backend_kind(&self) -> SshBackend {
        match self.backend {
            BackendPlan::OpenSsh => SshBackend::Openssh,
            BackendPlan::Russh(_) => SshBackend::Russh,
        }
    }
}

/// `ServerAliveInterval` (seconds) and `ServerAliveCountMax` used when not set: a dead
/// connection is noticed within about 45 s.
pub const DEFAULT_SERVER_ALIVE: (u32, u32) = (15, 3);

/// The settings of the control master that are not the target's (launch options; the dry
/// run shows the defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MasterSettings {
    /// `ServerAliveInterval` (seconds) and `ServerAliveCountMax`.
    pub server_alive: (u32, u32),
    /// ssh's `ConnectTimeout`, whole seconds (at least 1).
    pub connect_timeout_secs: u64,
}

impl Default for MasterSettings {
    fn default() -> Self {
        MasterSettings {
            server_alive: DEFAULT_SERVER_ALIVE,
            connect_timeout_secs: 20,
        }
    }
}

/// Every OpenSSH command line of a launch, rendered from the typed target: the control
/// master, then its mux clients (the remote command, the forwards, checks, exit). The
/// runtime spawns exactly these; the dry run prints them with placeholders for the
/// control socket and log paths, which exist only at run time.
#[derive(Clone, Copy, Debug)]
pub struct OpenSshCommands<'a> {
    /// Where ssh goes.
    pub target: &'a SshTarget,
    /// The control socket path.
    pub control: &'a str,
    /// The master's log file (`ssh -E`).
    pub log: &'a str,
}

impl OpenSshCommands<'_> {
    /// The master: `ssh -M -S <ctl> -f -N …`, authenticated once (askpass prompts), going
    /// to the background when done. Program first.
    pub fn master(&self, settings: &MasterSettings) -> Vec<String> {
        let t = self.target;
        let mut argv: Vec<String> = [
            t.program(),
            "-M",
            "-S",
            self.control,
            "-f",
            "-N",
            "-T",
            "-a",
            "-x",
            "-E",
            self.log,
        ]
        .map(String::from)
        .to_vec();
        let batch = if t.batch_mode() { "yes" } else { "no" };
        let (alive_interval, alive_count) = settings.server_alive;
        for o in [
            "ControlMaster=yes".to_string(),
            "ControlPersist=yes".to_string(),
            format!("BatchMode={batch}"),
            "NumberOfPasswordPrompts=1".to_string(),
            "ExitOnForwardFailure=yes".to_string(),
            format!("ServerAliveInterval={alive_interval}"),
            format!("ServerAliveCountMax={alive_count}"),
            format!("ConnectTimeout={}", settings.connect_timeout_secs.max(1)),
            "PermitLocalCommand=no".to_string(),
        ] {
            argv.extend(["-o".to_string(), o]);
        }
        argv.extend(t.args());
        argv.extend(["--".to_string(), t.host().to_string()]);
        argv
    }

    /// A mux client of the master, program first, before its own arguments: it cannot
    /// authenticate by itself nor read the user's ssh config (`-F /dev/null`), and fails
    /// at once when the master is gone (`ProxyCommand=false`).
    pub fn client(&self) -> Vec<String> {
        let mut a: Vec<String> = [self.target.program(), "-F", "/dev/null", "-S", self.control]
            .map(String::from)
            .to_vec();
        for o in [
            "ControlMaster=no",
            "ProxyCommand=false",
            "BatchMode=yes",
            "LogLevel=ERROR",
        ] {
            a.extend(["-o".to_string(), o.to_string()]);
        }
        a
    }

    /// Run `remote` (one shell string) on the host through the master, without a tty.
    pub fn run(&self, remote: &str) -> Vec<String> {
        let mut a = self.client();
        a.extend(["-T", "--", self.target.host(), remote].map(String::from));
        a
    }

    /// A control command of the master (`-O check`, `-O exit`, `-O forward …`).
    pub fn control(&self, op: &[&str]) -> Vec<String> {
        let mut a = self.client();
        a.push("-O".to_string());
        a.extend(op.iter().map(|s| s.to_string()));
        a.extend(["--".to_string(), self.target.host().to_string()]);
        a
    }

    /// Open `tunnel` on the master (`-O forward -L|-R spec`).
    pub fn forward(&self, tunnel: &Tunnel) -> Vec<String> {
        self.control(&["forward", tunnel.flag(), &tunnel.spec()])
    }
}

/// The remote cleanup wrapper. One line, only `"` and `$` inside, so that it survives
/// any login shell's parsing once single-quoted (tcsh and fish included). What it does is
/// described in `startup::ssh`'s documentation: it prints its process group, reads the
/// launch channel's secrets line, runs the server, and kills its whole group when the
/// channel's stdin ends.
const WRAPPER: &str = concat!(
    "printf \"pv-launch-pgid %s\\n\" \"$$\"; ",
    "if [ -z \"${PV_CLIENT_HOST:-}\" ] && [ -n \"${SSH_CLIENT:-}\" ]; then ",
    "PV_CLIENT_HOST=${SSH_CLIENT%% *}; export PV_CLIENT_HOST; fi; ",
    "IFS= read -r pv_l || pv_l=; ",
    "exec 3<&0 0</dev/null; ",
    "if [ -n \"$pv_l\" ]; then printf \"%s\\n\" \"$pv_l\" | /bin/sh -c \"$1\" 3<&- & ",
    "else /bin/sh -c \"$1\" 3<&- & fi; ",
    "pv_s=$!; pv_l=; ",
    "( trap \"\" TERM; while read -r pv_x <&3; do :; done; kill -TERM 0; n=0; ",
    "while [ $n -lt 20 ] && kill -0 \"$pv_s\" 2>/dev/null; do sleep 0.1; n=$((n+1)); done; ",
    "kill -KILL 0 ) >/dev/null 2>&1 & ",
    "exec 3<&-; ",
    "wait \"$pv_s\"; exit \"$?\"",
);

/// The first stdout line of the wrapper: `pv-launch-pgid <pid>`.
pub const PGID_PREFIX: &str = "pv-launch-pgid ";

/// The one string ssh sends for `command` (itself a POSIX sh command line, e.g. from
/// [`remote_command`]): `exec /bin/sh -c '<wrapper>' pv-launch '<command>'`, the same for
/// both ssh backends.
pub fn wrap_remote_command(command: &str) -> String {
    format!(
        "exec /bin/sh -c {} pv-launch {}",
        login_shell_word(WRAPPER),
        login_shell_word(command)
    )
}

/// `s` as one word for whichever login shell the remote user has: POSIX sh, bash, tcsh
/// and fish all read a backslash before a character as that character, so every
/// character special to any of them is backslash-escaped (single quotes would not do:
/// fish reads `\'` inside them as an escaped quote, tcsh expands `!` in them). A control
/// character is single-quoted instead, since a backslash would make a newline a line
/// continuation and fish reads `\t` as an escape; every shell but tcsh accepts that (tcsh
/// refuses a newline in any quotes: the one known limit).
pub fn login_shell_word(s: &str) -> String {
    if s.is_empty() {
        return "''".to_string();
    }
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || "_./=+-,:@%".contains(c) {
            out.push(c);
        } else if c.is_control() {
            out.push('\'');
            out.push(c);
            out.push('\'');
        } else {
            out.push('\\');
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::process::Command;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("abc-1.2/x"), "abc-1.2/x");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote("$(x);"), "'$(x);'");
    }

    #[test]
    fn names_that_ssh_could_misread_are_refused() {
        assert!(check_ssh_name("host", "-oProxyCommand=x").is_err());
        assert!(check_ssh_name("host", "a\nb").is_err());
        assert!(check_ssh_name("user", "a@b").is_err());
        assert!(check_ssh_name("host", "").is_err());
        assert!(check_ssh_name("host", "login1.example.org").is_ok());
        for bad in ["a;id", "$(id)", "`id`", "a|b", "h'x", "a&b", "x>y"] {
            let e = check_ssh_name("host", bad).unwrap_err();
            assert!(e.contains("a shell would interpret"), "{bad}: {e}");
        }
        assert!(check_ssh_name("user", "o'brien").is_err());
        assert!(check_ssh_name("jump host", "alice@gw.example.org:2222").is_ok());
        assert!(check_ssh_name("host", "::1").is_ok());
    }

    /// Run the remote command through a real `sh -c`, as sshd would with a POSIX login
    /// shell, and check the argv arrives unchanged.
    fn run_remote(argv: &[String]) -> Vec<String> {
        let mut full: Vec<String> = ["sh", "-c", "for a; do printf '%s\\0' \"$a\"; done", "sh"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        full.extend(argv.iter().cloned());
        let cmd = remote_command(&full, &[("PV_X".into(), "a 'b'".into())], Some("/"));
        let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
        assert!(out.status.success(), "{cmd}");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut parts: Vec<String> = text.split('\0').map(str::to_string).collect();
        parts.pop();
        parts
    }

    /// Every login shell installed here reads a wrapped command's words back exactly.
    #[test]
    fn login_shell_words_survive_sh_bash_tcsh_and_fish() {
        let words = [
            "a b", "it's", "$(id)", "`id`", "x;y", "", "\"q\"", "*", "a\\b", "q\\'", "bang!",
            "{a,b}", "#hash", "~", "<>", "a\tb", "é", "%s", "a'b\"c$d", "!!", "(x)", "[x]", "^x",
            "&", "|", "?",
        ];
        let shells: Vec<&str> = ["/bin/sh", "/bin/bash", "/usr/bin/tcsh", "/usr/bin/fish"]
            .into_iter()
            .filter(|s| std::path::Path::new(s).exists())
            .collect();
        assert!(
            shells.len() == 4 || std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but a login shell to check is missing: {shells:?}"
        );
        for shell in shells {
            for w in words {
                let line = format!(
                    "/usr/bin/printf {} {}",
                    login_shell_word("[%s]"),
                    login_shell_word(w)
                );
                let out = Command::new(shell).arg("-c").arg(&line).output().unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&out.stdout),
                    format!("[{w}]"),
                    "{shell} read {line:?} otherwise: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    #[test]
    fn remote_command_survives_a_real_shell() {
        let argv: Vec<String> = [
            "a b",
            "it's",
            "$(touch /tmp/x)",
            "`id`",
            "x;y",
            "",
            "\n",
            "\"q\"",
            "*",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(run_remote(&argv), argv);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn any_argv_survives_a_real_shell(argv in proptest::collection::vec("[^\\x00]{0,12}", 0..4)) {
            prop_assert_eq!(run_remote(&argv), argv);
        }
    }

    #[test]
    fn openssh_commands_put_options_before_the_double_dash() {
        let target = SshTarget::new("h")
            .unwrap()
            .with_user("u")
            .unwrap()
            .with_port(2222)
            .with_jump_hosts(&["j1".into(), "j2".into()])
            .unwrap()
            .with_arg("-oX=1")
            .unwrap();
        let c = OpenSshCommands {
            target: &target,
            control: "/t/c",
            log: "/t/log",
        };
        let master = c.master(&MasterSettings::default());
        assert_eq!(&master[..5], ["ssh", "-M", "-S", "/t/c", "-f"]);
        assert_eq!(
            &master[master.len() - 11..],
            [
                "-o",
                "PermitLocalCommand=no",
                "-l",
                "u",
                "-p",
                "2222",
                "-J",
                "j1,j2",
                "-oX=1",
                "--",
                "h"
            ]
        );
        let forward = c.forward(&Tunnel::Local {
            local_port: 8080,
            host: "127.0.0.1".into(),
            remote_port: 11111,
        });
        assert_eq!(
            &forward[forward.len() - 6..],
            [
                "-O",
                "forward",
                "-L",
                "127.0.0.1:8080:127.0.0.1:11111",
                "--",
                "h"
            ]
        );
        assert_eq!(
            Tunnel::Remote {
                remote_port: 0,
                local_port: 5,
                public: false,
            }
            .spec(),
            "127.0.0.1:0:127.0.0.1:5"
        );
        let run = c.run("true");
        assert_eq!(&run[run.len() - 4..], ["-T", "--", "h", "true"]);
        assert_eq!(&run[1..5], ["-F", "/dev/null", "-S", "/t/c"]);
    }
}
