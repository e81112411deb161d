//! The ssh command line a plan runs: POSIX-sh quoting of the remote command, validation of
//! host and user names, and the exact argv of the local `ssh`.
//!
//! ssh joins its trailing arguments with spaces into one string that the remote login
//! shell parses (tcsh and fish included), so pv-launch sends exactly one argument:
//! `exec /bin/sh -c '<command>'`, where `<command>` quotes every remote argv element for
//! POSIX sh. `--` ends ssh's options before the destination, and host and user names are
//! refused when they hold control characters or start with `-`.

use crate::profile::SshPrompts;

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
    Ok(())
}

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

/// One tunnel through the ssh connection.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Tunnel {
    /// `-L 127.0.0.1:local:localhost:remote`: the client dials `127.0.0.1:local`.
    Local {
        /// Port on this host.
        local_port: u16,
        /// Port on the remote host.
        remote_port: u16,
    },
    /// `-R 127.0.0.1:remote:localhost:local`: the server dials `localhost:remote` on its
    /// host, which reaches the client listening on `local` here.
    Remote {
        /// Port on the remote host.
        remote_port: u16,
        /// Port on this host.
        local_port: u16,
    },
}

impl Tunnel {
    /// The ssh arguments for this tunnel.
    pub fn ssh_args(&self) -> [String; 2] {
        match self {
            Tunnel::Local {
                local_port,
                remote_port,
            } => [
                "-L".into(),
                format!("127.0.0.1:{local_port}:localhost:{remote_port}"),
            ],
            Tunnel::Remote {
                remote_port,
                local_port,
            } => [
                "-R".into(),
                format!("127.0.0.1:{remote_port}:localhost:{local_port}"),
            ],
        }
    }
}

/// Everything that decides the local ssh argv.
#[derive(Clone, Debug)]
pub struct SshInvocation<'a> {
    /// The ssh program.
    pub program: &'a str,
    /// Destination host (validated).
    pub host: &'a str,
    /// Remote user (validated).
    pub user: Option<&'a str>,
    /// ssh port.
    pub port: Option<u16>,
    /// Jump hosts (validated).
    pub jump_hosts: &'a [String],
    /// Identity file.
    pub identity_file: Option<&'a std::path::Path>,
    /// Tunnels.
    pub tunnels: &'a [Tunnel],
    /// How prompts are answered.
    pub prompts: SshPrompts,
    /// Extra options, verbatim, before `--`.
    pub extra_options: &'a [String],
    /// The remote command (one argument).
    pub remote_command: &'a str,
}

impl SshInvocation<'_> {
    /// The argv, program first.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = vec![self.program.to_string()];
        if let Some(p) = self.port {
            argv.extend(["-p".to_string(), p.to_string()]);
        }
        if let Some(u) = self.user {
            argv.extend(["-l".to_string(), u.to_string()]);
        }
        if !self.jump_hosts.is_empty() {
            argv.extend(["-J".to_string(), self.jump_hosts.join(",")]);
        }
        if let Some(i) = self.identity_file {
            argv.extend(["-i".to_string(), i.display().to_string()]);
        }
        if self.prompts == SshPrompts::BatchMode {
            argv.extend(["-o".to_string(), "BatchMode=yes".to_string()]);
        }
        if !self.tunnels.is_empty() {
            argv.extend(["-o".to_string(), "ExitOnForwardFailure=yes".to_string()]);
        }
        for t in self.tunnels {
            argv.extend(t.ssh_args());
        }
        argv.extend(self.extra_options.iter().cloned());
        argv.push("--".to_string());
        argv.push(self.host.to_string());
        argv.push(self.remote_command.to_string());
        argv
    }
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
    fn argv_puts_options_before_the_double_dash() {
        let tunnels = [Tunnel::Local {
            local_port: 8080,
            remote_port: 11111,
        }];
        let inv = SshInvocation {
            program: "ssh",
            host: "h",
            user: Some("u"),
            port: Some(2222),
            jump_hosts: &["j1".into(), "j2".into()],
            identity_file: None,
            tunnels: &tunnels,
            prompts: SshPrompts::Askpass,
            extra_options: &["-oX=1".into()],
            remote_command: "exec /bin/sh -c true",
        };
        assert_eq!(
            inv.argv(),
            [
                "ssh",
                "-p",
                "2222",
                "-l",
                "u",
                "-J",
                "j1,j2",
                "-o",
                "ExitOnForwardFailure=yes",
                "-L",
                "127.0.0.1:8080:localhost:11111",
                "-oX=1",
                "--",
                "h",
                "exec /bin/sh -c true"
            ]
        );
    }
}
