//! Where ssh goes and with which options: validated once, then used for every ssh
//! command of a launch (the master, the remote command, the forwards, the cleanup).

use std::path::Path;

use super::SshError;
use crate::plan::ProcessPlan;
use crate::plan::ssh::check_ssh_name;
use crate::profile::SshBackend;

/// An ssh destination with its options. Every value is checked when it is added: host
/// and user names may not hold control characters, whitespace or start with `-`; no
/// option may hold a control character. The destination always follows `--` on ssh's
/// command line, so it can never be read as an option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshTarget {
    program: String,
    host: String,
    user: Option<String>,
    port: Option<u16>,
    args: Vec<String>,
    batch_mode: bool,
}

fn check_arg(arg: &str) -> Result<(), SshError> {
    if arg.chars().any(char::is_control) {
        return Err(SshError::Invalid(format!(
            "the ssh option {arg:?} contains control characters"
        )));
    }
    Ok(())
}

impl SshTarget {
    /// A destination host, reached with `ssh` from `PATH` and the user's own ssh config.
    pub fn new(host: &str) -> Result<SshTarget, SshError> {
        check_ssh_name("host", host).map_err(SshError::Invalid)?;
        Ok(SshTarget {
            program: "ssh".to_string(),
            host: host.to_string(),
            user: None,
            port: None,
            args: Vec::new(),
            batch_mode: false,
        })
    }

    /// Log in as `user` (`-l user`).
    pub fn with_user(mut self, user: &str) -> Result<SshTarget, SshError> {
        check_ssh_name("user", user).map_err(SshError::Invalid)?;
        self.args.extend(["-l".to_string(), user.to_string()]);
        self.user = Some(user.to_string());
        Ok(self)
    }

    /// Connect to `port` (`-p port`).
    pub fn with_port(mut self, port: u16) -> SshTarget {
        self.args.extend(["-p".to_string(), port.to_string()]);
        self.port = Some(port);
        self
    }

    /// Run `program` instead of `ssh` (an absolute path or a name looked up on `PATH`).
    pub fn with_program(mut self, program: &str) -> Result<SshTarget, SshError> {
        check_arg(program)?;
        if program.is_empty() || program.starts_with('-') {
            return Err(SshError::Invalid(format!("bad ssh program {program:?}")));
        }
        self.program = program.to_string();
        Ok(self)
    }

    /// Go through jump hosts (`-J a,b`), each `[user@]host[:port]`.
    pub fn with_jump_hosts(mut self, hosts: &[String]) -> Result<SshTarget, SshError> {
        if hosts.is_empty() {
            return Ok(self);
        }
        for h in hosts {
            check_ssh_name("jump host", h).map_err(SshError::Invalid)?;
            if h.contains(',') {
                return Err(SshError::Invalid(format!(
                    "the jump host {h:?} contains ','"
                )));
            }
        }
        self.args.extend(["-J".to_string(), hosts.join(",")]);
        Ok(self)
    }

    /// Authenticate with this identity file (`-i path`).
    pub fn with_identity_file(mut self, path: &Path) -> Result<SshTarget, SshError> {
        let text = path.to_string_lossy().into_owned();
        check_arg(&text)?;
        self.args.extend(["-i".to_string(), text]);
        Ok(self)
    }

    /// One more argv element placed before `--` (for example `-o`, then `Key=value`).
    pub fn with_arg(mut self, arg: impl Into<String>) -> Result<SshTarget, SshError> {
        let arg = arg.into();
        check_arg(&arg)?;
        self.args.push(arg);
        Ok(self)
    }

    /// `-o key=value`.
    pub fn with_option(self, key: &str, value: &str) -> Result<SshTarget, SshError> {
        self.with_arg("-o")?.with_arg(format!("{key}={value}"))
    }

    /// Keys and agents only: `BatchMode=yes`, no prompt at all.
    pub fn with_batch_mode(mut self, on: bool) -> SshTarget {
        self.batch_mode = on;
        self
    }

    /// The target of an ssh [`ProcessPlan`] (mechanism `ssh` or `ssh-script`) and the one
    /// remote shell command string it runs. The plan's ssh options are kept as they are,
    /// except its fixed-port tunnels (`-L`/`-R`, which the session sets up itself on the
    /// master, with the ports the server actually uses) and `BatchMode=yes` (which
    /// becomes [`SshTarget::with_batch_mode`]).
    pub fn from_process_plan(plan: &ProcessPlan) -> Result<(SshTarget, String), SshError> {
        let remote = plan.remote.as_ref().ok_or_else(|| {
            SshError::Invalid(format!("a {} plan has no remote part", plan.mechanism))
        })?;
        let argv = &plan.argv;
        // argv = [program, options…, "--", host, command]
        let dd = argv
            .len()
            .checked_sub(3)
            .filter(|&i| i >= 1 && argv[i] == "--");
        let Some(dd) = dd else {
            return Err(SshError::Invalid(
                "the plan's ssh argv does not end with `-- host command`".to_string(),
            ));
        };
        let mut target = SshTarget::new(&remote.host)?.with_program(&argv[0])?;
        if let Some(user) = &remote.user {
            check_ssh_name("user", user).map_err(SshError::Invalid)?;
            target.user = Some(user.clone());
        }
        let mut options = argv[1..dd].iter();
        while let Some(arg) = options.next() {
            match arg.as_str() {
                "-L" | "-R" => {
                    options.next();
                }
                "-o" => match options.next().map(String::as_str) {
                    Some("BatchMode=yes") => target.batch_mode = true,
                    Some("ExitOnForwardFailure=yes") => {}
                    Some(value) => target = target.with_arg("-o")?.with_arg(value)?,
                    None => target = target.with_arg("-o")?,
                },
                "-p" => {
                    if let Some(p) = options.next() {
                        target.port = p.parse().ok();
                        target = target.with_arg("-p")?.with_arg(p.as_str())?;
                    }
                }
                other => target = target.with_arg(other)?,
            }
        }
        Ok((target, remote.command.clone()))
    }

    /// Refuse a backend this build cannot run: [`SshBackend::Russh`] needs the cargo
    /// feature `russh`; without it a profile with `backend = "russh"` fails before
    /// anything starts.
    pub fn require_backend(backend: SshBackend) -> Result<(), SshError> {
        match backend {
            SshBackend::Openssh => Ok(()),
            SshBackend::Russh if cfg!(feature = "russh") => Ok(()),
            SshBackend::Russh => Err(SshError::BackendUnavailable("russh")),
        }
    }

    /// The destination host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The remote user, if one was given.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The ssh port, if one was given.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The ssh program.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Whether ssh runs in batch mode (no prompts).
    pub fn batch_mode(&self) -> bool {
        self.batch_mode
    }

    /// The options placed before `--` on every ssh command of the launch.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// `user@host` or `host`, for messages.
    pub fn display_name(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misreadable_names_are_refused() {
        assert!(SshTarget::new("-oProxyCommand=touch /tmp/x").is_err());
        assert!(SshTarget::new("host\n").is_err());
        assert!(SshTarget::new("h").unwrap().with_user("-x").is_err());
        assert!(SshTarget::new("h").unwrap().with_user("a\tb").is_err());
        assert!(SshTarget::new("h").unwrap().with_arg("-oX=\n").is_err());
        assert!(
            SshTarget::new("h")
                .unwrap()
                .with_jump_hosts(&["-J".into()])
                .is_err()
        );
        let t = SshTarget::new("login1")
            .unwrap()
            .with_user("alice")
            .unwrap()
            .with_port(2222);
        assert_eq!(t.args(), ["-l", "alice", "-p", "2222"]);
        assert_eq!(t.display_name(), "alice@login1");
    }

    #[test]
    fn a_process_plan_keeps_its_options_but_not_its_fixed_tunnels() {
        let plan = ProcessPlan {
            mechanism: "ssh",
            argv: [
                "/usr/bin/ssh",
                "-p",
                "2222",
                "-l",
                "u",
                "-o",
                "BatchMode=yes",
                "-o",
                "ExitOnForwardFailure=yes",
                "-L",
                "127.0.0.1:8080:localhost:11111",
                "-oX=1",
                "--",
                "h",
                "exec /bin/sh -c true",
            ]
            .map(String::from)
            .to_vec(),
            env: vec![],
            workdir: None,
            delay: crate::profile::Delay::None,
            remote: Some(crate::plan::RemotePlan {
                host: "h".into(),
                user: Some("u".into()),
                argv: vec!["true".into()],
                command: "exec /bin/sh -c true".into(),
                tunnels: vec![],
                backend: SshBackend::Openssh,
            }),
        };
        let (t, command) = SshTarget::from_process_plan(&plan).unwrap();
        assert_eq!(command, "exec /bin/sh -c true");
        assert_eq!(t.program(), "/usr/bin/ssh");
        assert_eq!(t.args(), ["-p", "2222", "-l", "u", "-oX=1"]);
        assert!(t.batch_mode());
        assert_eq!(t.port(), Some(2222));
        assert_eq!(t.display_name(), "u@h");
        assert_eq!(
            SshTarget::require_backend(SshBackend::Russh).is_ok(),
            cfg!(feature = "russh")
        );
        assert!(SshTarget::require_backend(SshBackend::Openssh).is_ok());
    }
}
