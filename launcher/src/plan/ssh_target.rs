//! Where ssh goes and with which options, as typed values: validated once when the plan
//! is made (or when an embedder builds one), then rendered into every ssh command of a
//! launch (the master, the remote command, the forwards, the cleanup) and into the dry
//! run. Nothing ever parses an ssh argv back into a target.

use std::path::{Path, PathBuf};

use super::ssh::check_ssh_name;

/// An ssh setting that ssh could misread (a control character, a leading `-`, …).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid ssh setting: {0}")]
pub struct InvalidSsh(pub String);

/// An ssh destination with its options. Every value is checked when it is set: host,
/// user and jump-host names may not hold control characters or whitespace nor start with
/// `-`; no option may hold a control character. The destination always follows `--` on
/// ssh's command line, so it can never be read as an option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshTarget {
    program: String,
    host: String,
    user: Option<String>,
    port: Option<u16>,
    jump_hosts: Vec<String>,
    identity_file: Option<PathBuf>,
    options: Vec<String>,
    batch_mode: bool,
}

fn check_arg(arg: &str) -> Result<(), InvalidSsh> {
    if arg.chars().any(char::is_control) {
        return Err(InvalidSsh(format!(
            "the ssh option {arg:?} contains control characters"
        )));
    }
    Ok(())
}

impl SshTarget {
    /// A destination host, reached with `ssh` from `PATH` and the user's own ssh config.
    pub fn new(host: &str) -> Result<SshTarget, InvalidSsh> {
        check_ssh_name("host", host).map_err(InvalidSsh)?;
        Ok(SshTarget {
            program: "ssh".to_string(),
            host: host.to_string(),
            user: None,
            port: None,
            jump_hosts: Vec::new(),
            identity_file: None,
            options: Vec::new(),
            batch_mode: false,
        })
    }

    /// Log in as `user` (`-l user`).
    pub fn with_user(mut self, user: &str) -> Result<SshTarget, InvalidSsh> {
        check_ssh_name("user", user).map_err(InvalidSsh)?;
        self.user = Some(user.to_string());
        Ok(self)
    }

    /// Connect to `port` (`-p port`).
    pub fn with_port(mut self, port: u16) -> SshTarget {
        self.port = Some(port);
        self
    }

    /// Run `program` instead of `ssh` (an absolute path or a name looked up on `PATH`).
    pub fn with_program(mut self, program: &str) -> Result<SshTarget, InvalidSsh> {
        check_arg(program)?;
        if program.is_empty() || program.starts_with('-') {
            return Err(InvalidSsh(format!("bad ssh program {program:?}")));
        }
        self.program = program.to_string();
        Ok(self)
    }

    /// Go through jump hosts (`-J a,b`), each `[user@]host[:port]`.
    pub fn with_jump_hosts(mut self, hosts: &[String]) -> Result<SshTarget, InvalidSsh> {
        for h in hosts {
            check_ssh_name("jump host", h).map_err(InvalidSsh)?;
            if h.contains(',') {
                return Err(InvalidSsh(format!("the jump host {h:?} contains ','")));
            }
        }
        self.jump_hosts = hosts.to_vec();
        Ok(self)
    }

    /// Authenticate with this identity file (`-i path`).
    pub fn with_identity_file(mut self, path: &Path) -> Result<SshTarget, InvalidSsh> {
        check_arg(&path.to_string_lossy())?;
        self.identity_file = Some(path.to_path_buf());
        Ok(self)
    }

    /// One more argv element placed, verbatim, before `--` (for example `-o`, then
    /// `Key=value`).
    pub fn with_arg(mut self, arg: impl Into<String>) -> Result<SshTarget, InvalidSsh> {
        let arg = arg.into();
        check_arg(&arg)?;
        self.options.push(arg);
        Ok(self)
    }

    /// `-o key=value`.
    pub fn with_option(self, key: &str, value: &str) -> Result<SshTarget, InvalidSsh> {
        self.with_arg("-o")?.with_arg(format!("{key}={value}"))
    }

    /// Keys and agents only: `BatchMode=yes`, no prompt at all.
    pub fn with_batch_mode(mut self, on: bool) -> SshTarget {
        self.batch_mode = on;
        self
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

    /// The jump hosts, in order.
    pub fn jump_hosts(&self) -> &[String] {
        &self.jump_hosts
    }

    /// The identity file, if one was given.
    pub fn identity_file(&self) -> Option<&Path> {
        self.identity_file.as_deref()
    }

    /// The extra options, verbatim (the profile's `options`, `PARAVIEW_SSH_OPTIONS`).
    pub fn extra_options(&self) -> &[String] {
        &self.options
    }

    /// Whether ssh runs in batch mode (no prompts).
    pub fn batch_mode(&self) -> bool {
        self.batch_mode
    }

    /// The options placed before `--` on every ssh command of the launch: `-l`, `-p`,
    /// `-J`, `-i`, then the extra options.
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(u) = &self.user {
            args.extend(["-l".to_string(), u.clone()]);
        }
        if let Some(p) = self.port {
            args.extend(["-p".to_string(), p.to_string()]);
        }
        if !self.jump_hosts.is_empty() {
            args.extend(["-J".to_string(), self.jump_hosts.join(",")]);
        }
        if let Some(i) = &self.identity_file {
            args.extend(["-i".to_string(), i.display().to_string()]);
        }
        args.extend(self.options.iter().cloned());
        args
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
    fn typed_settings_render_in_one_order() {
        let t = SshTarget::new("h")
            .unwrap()
            .with_arg("-oX=1")
            .unwrap()
            .with_identity_file(Path::new("/k/id"))
            .unwrap()
            .with_jump_hosts(&["j1".into(), "j2".into()])
            .unwrap()
            .with_port(2222)
            .with_user("u")
            .unwrap();
        assert_eq!(
            t.args(),
            [
                "-l", "u", "-p", "2222", "-J", "j1,j2", "-i", "/k/id", "-oX=1"
            ]
        );
        assert_eq!(t.extra_options(), ["-oX=1"]);
    }
}
