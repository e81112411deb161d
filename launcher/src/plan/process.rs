//! Making the start part of a plan from resolved variables: the command line (pv-launch
//! templates or ParaView's `$VAR$` syntax), the environment, and for ssh the typed
//! [`SshPlan`]: target, tunnels, remote command and backend.

use std::collections::{BTreeMap, BTreeSet};

use pv_transport::{Direction, Endpoint, Host, Resource};

use super::batch::{
    BatchStart, JobsDir, REVERSE_HOST_PLACEHOLDER, REVERSE_PORT_PLACEHOLDER, ReverseBatch,
};
use super::ssh::{BackendPlan, RemoteCommand, SshPlan, Tunnel};
use super::ssh_target::SshTarget;
use super::{
    ClientPlan, How, LocalCommand, Place, PlanError, ProcessPlan, ReadyPattern, RusshSettings,
    Value,
};
use crate::profile::*;
use crate::source::{Located, SourcePos, Warning};
use crate::startup::batch::{BatchError, BatchSpec, LaunchId, ReverseVia, WallTime};
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

    /// The variables that are not secret, as plain text for substitution. Secrets stay out:
    /// every place this feeds refuses them (command lines, the client's argv), and a plain
    /// copy would outlive the wiped original (the client plan keeps its map).
    fn plain_map(&self) -> BTreeMap<String, String> {
        self.vars
            .iter()
            .filter(|(_, v)| !v.is_secret())
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
                if let Some(name) = self.secrets.iter().find(|n| s.contains(&format!("${n}$"))) {
                    return Err(Self::secret_error(
                        &t.at,
                        name,
                        "it would reach a command line (ssh's)",
                    ));
                }
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
        // The names go unquoted into the remote shell's `export` (values are quoted): a
        // name that is not a plain variable name (a `.pvsc` switch case may set any) is
        // refused rather than interpreted.
        if let Some((bad, _)) = env
            .iter()
            .find(|(k, _)| !crate::template::is_variable_name(k))
        {
            return Err(PlanError::at(
                &entry.at,
                format!(
                    "{bad:?} is not a variable name, so it cannot be exported to the remote command"
                ),
            ));
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
        if let (Handshake::Native, Delay::Wait(d)) = (&entry.handshake, &delay) {
            warnings.push(Warning::at(
                &entry.at,
                format!(
                    "delay = {} is not used: with the native handshake the server says when it \
                     is ready (its ready line on the launch channel), and pv-launch connects then",
                    crate::profile::options::format_double(d.as_secs_f64())
                ),
            ));
        }
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
                let mut argv = self.script_argv(script, args)?;
                argv[0] = beside_profile(&script.at, &argv[0]);
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
                // (A batch job's way back is the relay's business, not port_forwarding's.)
                reverse_without_tunnel_warning(entry, ssh, resource, plan.target.host(), warnings);
                Ok((ssh_start(How::Direct, plan, delay, ready_pattern), res))
            }
            Mechanism::SshScript { ssh, script, args } => {
                let argv = self.script_argv(script, args)?;
                let env = self.remote_environment(entry, ssh, true, warnings)?;
                let (plan, res) = self.ssh(entry, ssh, argv, env, resource, pf_port, warnings)?;
                // (A batch job's way back is the relay's business, not port_forwarding's.)
                reverse_without_tunnel_warning(entry, ssh, resource, plan.target.host(), warnings);
                Ok((ssh_start(How::Script, plan, delay, ready_pattern), res))
            }
            Mechanism::Batch {
                ssh,
                command,
                batch,
            } => self.batch(
                entry,
                ssh.as_ref(),
                command,
                batch,
                resource,
                pf_port,
                warnings,
            ),
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

    /// A batch start: the server's command in the job, the checked spec, the job's
    /// directory, and where the scheduler's commands run (here, or a login node with the
    /// `-L` tunnel to the job's node for a forward connection).
    ///
    /// About 100 lines, read top to bottom: each step resolves one part of the start
    /// from the ones before it (argv and env, spec, launch id, job files, place).
    #[allow(clippy::too_many_arguments)] // each is one resolved part of the entry
    fn batch(
        &self,
        entry: &ServerEntry,
        ssh: Option<&SshSettings>,
        command: &CommandLine,
        batch: &BatchSettings,
        resource: &Resource,
        pf_port: Option<u16>,
        warnings: &mut Vec<Warning>,
    ) -> Result<Start, PlanError> {
        // A reverse connection from a job submitted over ssh dials the login node at an
        // address and port known only when the launch runs (the relay's, or the -R port).
        let reverse = match (ssh, resource.direction()) {
            (Some(_), Some(Direction::Reverse)) => Some(ReverseBatch {
                via: batch.reverse_via,
                host: batch
                    .reverse_host
                    .as_ref()
                    .map(|t| self.template(t))
                    .transpose()?,
            }),
            _ => None,
        };
        let mut job_vars;
        let job_resolver;
        let job = if reverse.is_some() {
            job_vars = self.vars.clone();
            for (k, v) in [
                ("PV_CLIENT_HOST", REVERSE_HOST_PLACEHOLDER),
                ("PV_SERVER_PORT", REVERSE_PORT_PLACEHOLDER),
            ] {
                job_vars.insert(k.to_string(), Value::Plain(v.to_string()));
            }
            job_resolver = Resolver {
                vars: &job_vars,
                ..*self
            };
            &job_resolver
        } else {
            self
        };
        let server_argv = job.command_line(command, warnings)?;
        let server_env = entry
            .environment
            .iter()
            .map(|(k, t)| Ok((k.clone(), job.template(t)?)))
            .collect::<Result<Vec<_>, PlanError>>()?;
        let spec = self.batch_spec(entry, batch)?;
        let launch_id = match &self.ctx.launch_id {
            Some(id) => id.clone(),
            None => fresh_launch_id(),
        };
        let launch_id =
            LaunchId::new(launch_id).map_err(|e| PlanError::at(&batch.at, e.to_string()))?;
        let jobs_dir = match (&batch.jobs_dir, ssh) {
            (Some(t), _) => JobsDir::Path(self.template(t)?),
            (None, Some(_)) => JobsDir::RemoteHome,
            (None, None) => {
                let home = self.ctx.process_env.get("HOME").ok_or_else(|| {
                    PlanError::at(
                        &batch.at,
                        "HOME is not set: give jobs_dir (a directory the compute nodes share)",
                    )
                })?;
                JobsDir::Path(format!("{}/.pv-launch/jobs", home.trim_end_matches('/')))
            }
        };
        let port = fixed_port(entry, resource, reverse.is_some())?;
        let start = BatchStart {
            spec,
            launch_id,
            jobs_dir,
            server_argv,
            server_env,
            queue_timeout: batch.queue_timeout,
            server: entry.name.clone(),
            reverse: reverse.clone(),
            port,
        };
        // Render once now: a bad value fails here, at its place, before anything runs.
        let rendered = start
            .dry_run_plan()
            .map_err(|e| batch_error_at(batch, &entry.at, e))?;
        let delay = entry.timeouts.delay.clone();
        let ready_pattern = ready_pattern(entry, resource)?;
        let Some(ssh) = ssh else {
            let place = Place::Local(LocalCommand {
                argv: rendered.sbatch_argv,
                env: vec![],
                workdir: None,
            });
            return Ok((
                ProcessPlan {
                    how: How::Batch(Box::new(start)),
                    place,
                    delay,
                    ready_pattern,
                },
                None,
            ));
        };
        let env = self.remote_environment(entry, ssh, false, warnings)?;
        // The entry's own `env` is for the server in the job (the script exports it); the
        // scheduler's commands on the login node get the ssh table's `env` only.
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| ssh.remote_env.iter().any(|(n, _)| n == k))
            .collect();
        let (mut plan, _) = self.ssh(
            entry,
            ssh,
            rendered.sbatch_argv,
            env,
            resource,
            None,
            warnings,
        )?;
        let (tunnel, client) = batch_tunnel(entry, resource, pf_port, reverse.as_ref(), port)?;
        plan.tunnels = vec![tunnel];
        Ok((
            ProcessPlan {
                how: How::Batch(Box::new(start)),
                place: Place::Ssh(Box::new(plan)),
                delay,
                ready_pattern,
            },
            Some(client),
        ))
    }

    /// The `[server.startup.batch]` table with its templates substituted and checked.
    fn batch_spec(&self, entry: &ServerEntry, b: &BatchSettings) -> Result<BatchSpec, PlanError> {
        let text = |t: &Option<Located<Template>>| t.as_ref().map(|t| self.template(t)).transpose();
        let count =
            |t: &Option<Located<Template>>, field: &str| -> Result<Option<u32>, PlanError> {
                let Some(t) = t else { return Ok(None) };
                let v = self.template(t)?;
                match v.trim().parse::<u32>() {
                    Ok(n) if n >= 1 => Ok(Some(n)),
                    _ => Err(PlanError::at(
                        &t.at,
                        format!("{field} = {v:?}: not a whole number of at least 1"),
                    )),
                }
            };
        let time = match &b.time {
            None => None,
            Some(t) => {
                let v = self.template(t)?;
                Some(
                    v.parse::<WallTime>()
                        .map_err(|e| PlanError::at(&t.at, format!("time: {e}")))?,
                )
            }
        };
        let job_name = match text(&b.job_name)? {
            Some(n) => Some(n),
            None => Some(job_name_of(&entry.name)).filter(|n| !n.is_empty()),
        };
        let spec = BatchSpec {
            scheduler: b.scheduler,
            nodes: count(&b.nodes, "nodes")?,
            ntasks: count(&b.ntasks, "ntasks")?,
            cpus_per_task: count(&b.cpus_per_task, "cpus_per_task")?,
            partition: text(&b.partition)?,
            account: text(&b.account)?,
            time,
            qos: text(&b.qos)?,
            constraint: text(&b.constraint)?,
            gres: text(&b.gres)?,
            extra_options: b
                .extra_options
                .iter()
                .map(|t| self.template(t))
                .collect::<Result<_, _>>()?,
            in_job: b.in_job,
            job_name,
            output: text(&b.output)?,
        };
        spec.validate()
            .map_err(|e| batch_error_at(b, &entry.at, BatchError::Spec(e)))?;
        Ok(spec)
    }

    /// The script and its arguments, templates filled in. An ssh-script's path is the
    /// remote host's (a relative one is relative to the login directory there); a local
    /// script's is placed by [`beside_profile`].
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

/// A fresh launch id: 12 hex digits from a random token (not a secret, only unique).
fn fresh_launch_id() -> String {
    pv_transport::Token::generate().to_hex()[..12].to_string()
}

/// The server's name as a job name part: letters, digits, `-`, `_`, `.` (others become `_`).
fn job_name_of(server: &str) -> String {
    server
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A batch error at the place of the field it names (else the table, else the entry).
fn batch_error_at(b: &BatchSettings, entry_at: &SourcePos, e: BatchError) -> PlanError {
    let field = match &e {
        BatchError::Spec(s) => Some(s.field),
        _ => None,
    };
    let at = field
        .and_then(|f| {
            b.templates()
                .find(|(n, _)| *n == f)
                .map(|(_, t)| t.at.clone())
        })
        .unwrap_or_else(|| {
            if field == Some("server argv") || field == Some("env") {
                entry_at.clone()
            } else {
                b.at.clone()
            }
        });
    PlanError::at(&at, e.to_string())
}

/// The port a batch job's server listens on when it prints no ready line to report the
/// one it chose (ParaView's handshake, or none: pvserver): the resource's, which must not
/// be 0. `None` for a server that prints one (the native handshake), and for a reverse
/// connection from a job submitted over ssh (it dials a port chosen at run time).
fn fixed_port(
    entry: &ServerEntry,
    resource: &Resource,
    reverse_over_ssh: bool,
) -> Result<Option<u16>, PlanError> {
    let Resource::ClientServer { server, .. } = resource else {
        return Ok(None);
    };
    if matches!(entry.handshake, Handshake::Native) || reverse_over_ssh {
        return Ok(None);
    }
    match server.port_or(pv_transport::resource::DEFAULT_SERVER_PORT) {
        0 => Err(PlanError::at(
            &entry.resource.at,
            format!(
                "{resource}: port 0 in a batch job whose server prints no pv-launch ready line \
                 (handshake = \"{}\"): pv-launch cannot learn the port it chose; give the \
                 resource a port (e.g. {}://localhost:11111) and pass ${{PV_SERVER_PORT}} to \
                 the server",
                match entry.handshake {
                    Handshake::None => "none",
                    _ => "paraview",
                },
                resource.scheme()
            ),
        )),
        p => Ok(Some(p)),
    }
}

/// The `-L` tunnel to the job's node for a batch job submitted over ssh: to
/// `<batch host>:<port>`, the host known only once the job runs, the port from the ready
/// line then too (or `fixed`, for a server that prints none); the client dials its local
/// end.
fn batch_tunnel(
    entry: &ServerEntry,
    resource: &Resource,
    pf_port: Option<u16>,
    reverse: Option<&ReverseBatch>,
    fixed: Option<u16>,
) -> Result<(Tunnel, Resource), PlanError> {
    let Resource::ClientServer { tls, server, .. } = resource else {
        return Err(PlanError::at(
            &entry.resource.at,
            "a batch job reaches its client through one ssh tunnel: use a cs:// or csrc:// resource",
        ));
    };
    if let Some(reverse) = reverse {
        // The client listens on the resource's port here; the -R port on the login node is
        // chosen there (the job learns it, or the relay's, when the launch runs).
        let local = server.port_or(pv_transport::resource::DEFAULT_SERVER_PORT);
        return Ok((
            Tunnel::Remote {
                remote_port: 0,
                local_port: local,
                public: reverse.via == ReverseVia::GatewayPorts,
            },
            Resource::ClientServer {
                direction: Direction::Reverse,
                tls: *tls,
                server: Endpoint {
                    host: server.host.clone(),
                    port: Some(local),
                },
            },
        ));
    }
    let local = pf_port.unwrap_or(0);
    let client = Resource::ClientServer {
        direction: Direction::Forward,
        tls: *tls,
        server: Endpoint {
            host: Some(Host::Name("localhost".into())),
            port: Some(local),
        },
    };
    let _ = server;
    Ok((
        Tunnel::Local {
            local_port: local,
            host: BATCH_HOST_PLACEHOLDER.to_string(),
            remote_port: fixed.unwrap_or(0),
        },
        client,
    ))
}

/// The `-L` target's host in a batch plan: the job's batch host, known once it runs.
pub const BATCH_HOST_PLACEHOLDER: &str = "<the job's batch host>";

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
                public: false,
            },
            client(server.host.clone()),
        ),
    })
}

/// Where a local script written as `path` in the profile file `at.file` is: an absolute
/// path as it is; a relative path with a `/` relative to the profile's directory (so a
/// profile in `~/.config/pv-launch/` works from any directory); a bare name next to the
/// profile when a file of that name is there, else found on `PATH` as a program is.
fn beside_profile(at: &crate::source::SourcePos, path: &str) -> String {
    let p = std::path::Path::new(path);
    if p.is_absolute() || path.is_empty() {
        return path.to_string();
    }
    let dir = at.file.parent().unwrap_or(std::path::Path::new(""));
    let rel = p.strip_prefix(".").unwrap_or(p);
    let joined = if dir.as_os_str().is_empty() {
        std::path::Path::new(".").join(rel)
    } else {
        dir.join(rel)
    };
    if !path.contains('/') && !joined.is_file() {
        return path.to_string();
    }
    joined.to_string_lossy().into_owned()
}
