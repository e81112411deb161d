//! Making the start part of a plan from resolved variables: the command line (pv-launch
//! templates or ParaView's `$VAR$` syntax), the environment, and for ssh the typed
//! [`SshPlan`]: target, tunnels, remote command and backend.

use std::collections::{BTreeMap, BTreeSet};

use pv_transport::{Direction, Endpoint, Host, Resource};

use super::ssh::{BackendPlan, RemoteCommand, SshPlan, Tunnel};
use super::ssh_target::SshTarget;
use super::{
    ClientPlan, How, LocalCommand, Place, PlanError, ProcessPlan, ReadyPattern, RusshSettings,
    Value,
};
use crate::profile::*;
use crate::source::{Located, SourcePos, Warning};
use crate::template::{Template, Text};
use crate::variables::LaunchContext;

/// Turns a server entry's start into a [`ProcessPlan`], given the resolved variables.
pub(super) struct Resolver<'a> {
    /// The launch context (pv-launch's own environment).
    pub ctx: &'a LaunchContext,
    /// Every resolved variable.
    pub vars: &'a BTreeMap<String, Value>,
    /// The names of the secret ones.
    pub secrets: &'a BTreeSet<String>,
    /// Whether the entry came from a `.pvsc` file (ParaView's rules apply).
    pub pvsc: bool,
}

/// The start, and the resource as the client sees it when an ssh tunnel changes it.
pub(super) type Start = (ProcessPlan, Option<Resource>);

impl Resolver<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.vars.get(name).map(|v| v.expose().to_string())
    }

    fn plain_map(&self) -> BTreeMap<String, String> {
        self.vars
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_string()))
            .collect()
    }

    fn secret_error(at: &SourcePos, name: &str, hint: &str) -> PlanError {
        PlanError::at(
            at,
            format!(
                "the secret {name} may not be placed on a command line (every local user can read it there); {hint}"
            ),
        )
    }

    fn template(&self, t: &Located<Template>) -> Result<String, PlanError> {
        for (name, _) in t.value.variables() {
            if self.secrets.contains(name) {
                return Err(Self::secret_error(
                    &t.at,
                    name,
                    &format!("the server receives it in its environment as {name}"),
                ));
            }
        }
        t.value
            .render(&|n| self.get(n), &|n| self.ctx.process_env.get(n).cloned())
            .map_err(|e| PlanError::at(&t.at, e.message))
    }

    fn text(&self, t: &Located<Text>) -> Result<String, PlanError> {
        match &t.value {
            Text::Template(tpl) => self.template(&Located::new(tpl.clone(), t.at.clone())),
            Text::ParaView(s) => {
                let vars = self.plain_map();
                crate::template::paraview_line::substitute(
                    s,
                    &crate::template::paraview_line::lookup_in(&self.ctx.process_env, &vars),
                )
                .map_err(|e| PlanError::at(&t.at, e.to_string()))
            }
        }
    }

    fn command_line(
        &self,
        command: &CommandLine,
        warnings: &mut Vec<Warning>,
    ) -> Result<Vec<String>, PlanError> {
        use crate::template::paraview_line as line;
        match command {
            CommandLine::Argv(argv) => argv.iter().map(|t| self.template(t)).collect(),
            CommandLine::ParaViewLine { exec, arguments } => {
                for a in std::iter::once(exec).chain(arguments) {
                    if let Some(s) = self
                        .secrets
                        .iter()
                        .find(|s| a.value.contains(&format!("${s}$")))
                    {
                        return Err(Self::secret_error(
                            &a.at,
                            s,
                            &format!("read it from the environment variable {s} instead"),
                        ));
                    }
                }
                let vars = self.plain_map();
                let lookup = line::lookup_in(&self.ctx.process_env, &vars);
                let args: Vec<&str> = arguments.iter().map(|a| a.value.as_str()).collect();
                let argv = line::command_argv(&exec.value, &args, &lookup)
                    .map_err(|e| PlanError::at(&exec.at, e.to_string()))?;
                for (i, note) in line::analyse_arguments(&args, &lookup) {
                    warnings.push(Warning::at(&arguments[i].at, note));
                }
                if argv.is_empty() {
                    return Err(PlanError::at(
                        &exec.at,
                        "the command line is empty after substitution",
                    ));
                }
                Ok(argv)
            }
        }
    }

    /// The local child's environment: every variable (`export_all`: scripts and ParaView
    /// commands) or only the secret ones, then the entry's `env`.
    fn local_environment(
        &self,
        entry: &ServerEntry,
        export_all: bool,
    ) -> Result<Vec<(String, Value)>, PlanError> {
        let mut env: BTreeMap<String, Value> = self
            .vars
            .iter()
            .filter(|(_, v)| export_all || v.is_secret())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, t) in &entry.environment {
            env.insert(k.clone(), Value::Plain(self.template(t)?));
        }
        Ok(env.into_iter().collect())
    }

    /// The remote command's exported environment: for a script every plain variable
    /// (never a secret: it would be on the remote command line), then the entry's `env`,
    /// then the ssh table's `env`.
    fn remote_environment(
        &self,
        entry: &ServerEntry,
        ssh: &SshSettings,
        script: bool,
        warnings: &mut Vec<Warning>,
    ) -> Result<Vec<(String, String)>, PlanError> {
        let mut env: Vec<(String, String)> = vec![];
        if script {
            for (k, v) in self.vars {
                match v {
                    Value::Plain(s) => env.push((k.clone(), s.clone())),
                    Value::Secret(_) => warnings.push(Warning::at(&entry.at, format!("the secret {k} is not exported to the remote script (it would be visible on the remote command line)"))),
                }
            }
        }
        for (k, t) in entry.environment.iter().chain(&ssh.remote_env) {
            let value = self.template(t)?;
            env.retain(|(n, _)| n != k);
            env.push((k.clone(), value));
        }
        Ok(env)
    }

    /// The start of `entry` by `mechanism`.
    pub fn process(
        &self,
        entry: &ServerEntry,
        mechanism: &Mechanism,
        resource: &Resource,
        pf_port: Option<u16>,
        warnings: &mut Vec<Warning>,
    ) -> Result<Start, PlanError> {
        let delay = entry.timeouts.delay.clone();
        let ready_pattern = ready_pattern(entry, resource)?;
        let local = |how, argv, env| ProcessPlan {
            how,
            place: Place::Local(LocalCommand {
                argv,
                env,
                workdir: None,
            }),
            delay: delay.clone(),
            ready_pattern: ready_pattern.clone(),
        };
        match mechanism {
            Mechanism::LocalDirect { command } => {
                let argv = self.command_line(command, warnings)?;
                let env = self.local_environment(entry, self.pvsc)?;
                Ok((local(How::Direct, argv, env), None))
            }
            Mechanism::LocalScript { script, args } => {
                let argv = self.script_argv(script, args)?;
                let env = self.local_environment(entry, true)?;
                Ok((local(How::Script, argv, env), None))
            }
            Mechanism::SshDirect { ssh, command } => {
                let argv = self.command_line(command, warnings)?;
                if self.pvsc {
                    shell_syntax_warnings(command, &argv, warnings);
                }
                let env = self.remote_environment(entry, ssh, false, warnings)?;
                let (plan, res) = self.ssh(entry, ssh, argv, env, resource, pf_port, warnings)?;
                Ok((ssh_start(How::Direct, plan, delay, ready_pattern), res))
            }
            Mechanism::SshScript { ssh, script, args } => {
                let argv = self.script_argv(script, args)?;
                let env = self.remote_environment(entry, ssh, true, warnings)?;
                let (plan, res) = self.ssh(entry, ssh, argv, env, resource, pf_port, warnings)?;
                Ok((ssh_start(How::Script, plan, delay, ready_pattern), res))
            }
        }
    }

    /// The entry's client command, its templates checked: no secret on its command line.
    pub fn client(&self, entry: &ServerEntry) -> Result<Option<ClientPlan>, PlanError> {
        let Some(argv) = &entry.client else {
            return Ok(None);
        };
        for t in argv {
            for (name, _) in t.value.variables() {
                if self.secrets.contains(name) {
                    return Err(Self::secret_error(
                        &t.at,
                        name,
                        "the client cannot receive it on its command line",
                    ));
                }
            }
        }
        Ok(Some(ClientPlan::new(
            argv.clone(),
            self.plain_map(),
            self.ctx.process_env.clone().into_iter().collect(),
        )))
    }

    fn script_argv(
        &self,
        script: &Located<Template>,
        args: &[Located<Template>],
    ) -> Result<Vec<String>, PlanError> {
        std::iter::once(script)
            .chain(args)
            .map(|t| self.template(t))
            .collect()
    }

    /// The typed ssh start: target, tunnels (and the resource the client then uses),
    /// remote command, backend.
    #[allow(clippy::too_many_arguments)] // each is one resolved part of the entry
    fn ssh(
        &self,
        entry: &ServerEntry,
        ssh: &SshSettings,
        remote_argv: Vec<String>,
        remote_env: Vec<(String, String)>,
        resource: &Resource,
        pf_port: Option<u16>,
        warnings: &mut Vec<Warning>,
    ) -> Result<(SshPlan, Option<Resource>), PlanError> {
        let target = self.ssh_target(entry, ssh, resource)?;
        reverse_without_tunnel_warning(entry, ssh, resource, target.host(), warnings);
        let (tunnels, client_resource) = match &ssh.port_forwarding {
            Some(_) => {
                let (t, r) = tunnel(entry, resource, pf_port)?;
                (vec![t], Some(r))
            }
            None => (vec![], None),
        };
        let workdir = ssh
            .remote_workdir
            .as_ref()
            .map(|w| self.template(w))
            .transpose()?;
        let backend = match ssh.backend {
            SshBackend::Openssh => BackendPlan::OpenSsh,
            SshBackend::Russh => {
                let refuse =
                    |m: String| PlanError::at(&entry.at, format!("server {:?}: {m}", entry.name));
                let settings = RusshSettings::for_target(&target).map_err(refuse)?;
                warnings.extend(settings.ignored.iter().map(|w| Warning::at(&entry.at, w)));
                BackendPlan::Russh(settings)
            }
        };
        let plan = SshPlan {
            target,
            tunnels,
            remote: RemoteCommand {
                argv: remote_argv,
                env: remote_env,
                workdir,
            },
            backend,
        };
        Ok((plan, client_resource))
    }

    /// The validated ssh destination with its options.
    fn ssh_target(
        &self,
        entry: &ServerEntry,
        ssh: &SshSettings,
        resource: &Resource,
    ) -> Result<SshTarget, PlanError> {
        let host = match &ssh.host {
            Some(h) => self.text(h)?,
            None => resource
                .endpoints()
                .first()
                .and_then(|(h, _)| h.map(Host::to_lookup_string))
                .unwrap_or_default(),
        };
        let host_at = ssh.host.as_ref().map_or(&entry.resource.at, |h| &h.at);
        let mut target = SshTarget::new(&host).map_err(|e| {
            PlanError::at(
                host_at,
                format!(
                    "{} (ssh connects to the resource's host unless ssh.host is given)",
                    e.0
                ),
            )
        })?;
        if let Some(u) = &ssh.user {
            let name = self.text(u)?;
            target = target
                .with_user(&name)
                .map_err(|e| PlanError::at(&u.at, e.0))?;
        }
        let at_entry = |e: super::InvalidSsh| PlanError::at(&entry.at, e.0);
        target = target.with_jump_hosts(&ssh.jump_hosts).map_err(at_entry)?;
        if let Some(p) = ssh.port {
            target = target.with_port(p);
        }
        if let Some(i) = &ssh.identity_file {
            target = target.with_identity_file(i).map_err(at_entry)?;
        }
        if let Some(program) = &ssh.program {
            target = target.with_program(program).map_err(at_entry)?;
        }
        let mut extra = ssh.extra_options.clone();
        if self.pvsc {
            if let Some(o) = self.ctx.process_env.get("PARAVIEW_SSH_OPTIONS") {
                extra.extend(crate::template::paraview_line::split_command(o));
            }
        }
        for o in extra {
            target = target.with_arg(o).map_err(at_entry)?;
        }
        Ok(target.with_batch_mode(ssh.prompts == SshPrompts::BatchMode))
    }
}

fn ssh_start(
    how: How,
    plan: SshPlan,
    delay: Delay,
    ready_pattern: Option<ReadyPattern>,
) -> ProcessPlan {
    ProcessPlan {
        how,
        place: Place::Ssh(Box::new(plan)),
        delay,
        ready_pattern,
    }
}

/// The entry's `ready_pattern`; else, for a server speaking ParaView's handshake that
/// the client dials, what pvserver prints when it listens.
fn ready_pattern(
    entry: &ServerEntry,
    resource: &Resource,
) -> Result<Option<ReadyPattern>, PlanError> {
    if let Some(p) = &entry.ready_pattern {
        let regex = regex_lite::Regex::new(&p.value).map_err(|e| {
            PlanError::at(
                &p.at,
                format!("ready_pattern: not a regular expression: {e}"),
            )
        })?;
        return Ok(Some(ReadyPattern {
            regex,
            required: true,
        }));
    }
    let paraview = matches!(entry.handshake, Handshake::ParaView { .. });
    // `delay = -1` waits for a command that detaches its server: no pattern there.
    let waits_for_exit = entry.timeouts.delay == Delay::UntilExit;
    if paraview && resource.direction() == Some(Direction::Forward) && !waits_for_exit {
        let regex = regex_lite::Regex::new(super::PVSERVER_LISTENING).expect("a valid expression");
        return Ok(Some(ReadyPattern {
            regex,
            required: false,
        }));
    }
    Ok(None)
}

/// ParaView lets the remote login shell interpret a `.pvsc` command; pv-launch passes
/// each argument literally, and says so where that differs.
fn shell_syntax_warnings(command: &CommandLine, argv: &[String], warnings: &mut Vec<Warning>) {
    if let CommandLine::ParaViewLine { exec, .. } = command {
        for a in argv {
            if a.chars().any(|c| ";&|<>()$`*?[]{}~!#'\"\\".contains(c)) {
                warnings.push(Warning::at(&exec.at, format!(
                    "remote argument {a:?} contains shell syntax: ParaView lets the remote login shell interpret it, pv-launch passes it literally"
                )));
            }
        }
    }
}

/// A reverse connection to another host without a tunnel cannot reach a client that
/// listens on 127.0.0.1 only.
fn reverse_without_tunnel_warning(
    entry: &ServerEntry,
    ssh: &SshSettings,
    resource: &Resource,
    host: &str,
    warnings: &mut Vec<Warning>,
) {
    let loopback_host = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if ssh.port_forwarding.is_none()
        && resource.direction() == Some(Direction::Reverse)
        && !loopback_host
    {
        warnings.push(Warning::at(
            &entry.resource.at,
            format!(
                "a reverse connection over ssh without port_forwarding: pv-launch listens on \
                 127.0.0.1 only, which a server on {host} cannot reach unless it runs on this \
                 machine; set port_forwarding = true (or <PortForwarding/> in a .pvsc file)"
            ),
        ));
    }
}

/// The tunnel for `resource` (ParaView's `<PortForwarding>`), and the resource the client
/// then uses: forward `-L local:127.0.0.1:server` (the client dials `localhost:local`),
/// reverse `-R server:127.0.0.1:local` (the client listens on `local`).
fn tunnel(
    entry: &ServerEntry,
    resource: &Resource,
    pf_port: Option<u16>,
) -> Result<(Tunnel, Resource), PlanError> {
    let Resource::ClientServer {
        direction,
        tls,
        server,
    } = resource
    else {
        return Err(PlanError::at(
            &entry.resource.at,
            "ssh port forwarding works only with cs:// and csrc:// resources; set up the tunnels of a data/render pair by hand",
        ));
    };
    let server_port = server.port_or(pv_transport::resource::DEFAULT_SERVER_PORT);
    let local = pf_port.unwrap_or(server_port);
    let client = |host| Resource::ClientServer {
        direction: *direction,
        tls: *tls,
        server: Endpoint {
            host,
            port: Some(local),
        },
    };
    Ok(match direction {
        Direction::Forward => (
            Tunnel::Local {
                local_port: local,
                host: "127.0.0.1".to_string(),
                remote_port: server_port,
            },
            client(Some(Host::Name("localhost".into()))),
        ),
        Direction::Reverse => (
            Tunnel::Remote {
                remote_port: server_port,
                local_port: local,
            },
            client(server.host.clone()),
        ),
    })
}
