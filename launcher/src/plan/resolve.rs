//! Making a plan: answer the options, apply sets and switches, substitute variables,
//! build argv and environment, and work out the connection to expect.
//!
//! Order, as in ParaView: predefined variables; `set`s in file order; option answers
//! (`--set` first, else the prompter, else the default); switches on the final values;
//! then `--set` of non-option variables. Options named `PV_SERVER_PORT`,
//! `PV_DATA_SERVER_PORT`, `PV_RENDER_SERVER_PORT` change the resource's ports,
//! `PV_SSH_PF_SERVER_PORT` the ssh forwarding port and `PV_CONNECT_ID` the ParaView
//! handshake's connect id.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use pv_transport::{Direction, Host, Resource};

use super::ssh::{SshInvocation, Tunnel, check_ssh_name, remote_command};
use super::*;
use crate::profile::options::format_double;
use crate::profile::*;
use crate::prompt::{PromptError, PromptRequest, Prompter};
use crate::source::Located;
use crate::template::paraview_line as line;
use crate::template::{Template, Text};
use crate::variables::{LaunchContext, predefined};

/// Small deterministic generator for `random` defaults (not for secrets).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fresh_seed() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish()
    }
}

/// The variables while resolving, with where each came from and which are secret.
struct Vars {
    values: BTreeMap<String, (Value, Origin)>,
}

impl Vars {
    fn set(&mut self, name: &str, value: Value, origin: Origin) {
        self.values.insert(name.to_string(), (value, origin));
    }

    fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).map(|(v, _)| v.expose().to_string())
    }

    fn plain_map(&self) -> BTreeMap<String, String> {
        self.values
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.expose().to_string()))
            .collect()
    }
}

impl Plan {
    /// Resolve `entry` in `ctx`, asking `prompter` for the options `--set` does not answer.
    pub fn resolve(
        entry: &ServerEntry,
        ctx: &LaunchContext,
        prompter: &dyn Prompter,
    ) -> Result<Plan, PlanError> {
        let mut warnings = vec![];
        let mut rng = SplitMix(ctx.seed.unwrap_or_else(SplitMix::fresh_seed));
        let mut resource = entry.resource.value.clone();
        let forwarding = ssh_settings(&entry.startup).and_then(|s| s.port_forwarding.clone());
        let mut vars = Vars {
            values: BTreeMap::new(),
        };
        let explicit_pf = forwarding.as_ref().and_then(|f| f.local_port);
        for (k, v) in predefined(ctx, &resource, &entry.paraview_version, explicit_pf) {
            vars.set(&k, Value::Plain(v), Origin::Predefined);
        }

        // `--set` names must be known.
        let option_names: BTreeSet<&str> = entry.options.iter().map(|o| o.name.as_str()).collect();
        let mut assigned: BTreeSet<&str> = BTreeSet::new();
        for a in &entry.assignments {
            match a {
                Assignment::Set { name, .. } => {
                    assigned.insert(name);
                }
                Assignment::Switch { cases, .. } => assigned.extend(
                    cases
                        .iter()
                        .flat_map(|c| c.sets.iter().map(|(k, _)| k.as_str())),
                ),
            }
        }
        let mut command_sets: BTreeMap<&str, &str> = BTreeMap::new();
        for (k, v) in &ctx.sets {
            if !option_names.contains(k.as_str())
                && !assigned.contains(k.as_str())
                && !PREDEFINED.contains(&k.as_str())
            {
                return Err(PlanError::nowhere(format!(
                    "--set {k}=…: server {:?} has no option or variable named {k}; options: {}",
                    entry.name,
                    if option_names.is_empty() {
                        "none".to_string()
                    } else {
                        option_names.iter().copied().collect::<Vec<_>>().join(", ")
                    }
                )));
            }
            command_sets.insert(k, v);
        }

        for a in &entry.assignments {
            if let Assignment::Set { name, value, .. } = a {
                vars.set(name, Value::Plain(value.clone()), Origin::Set);
            }
        }

        let mut connect_id: Option<u32> = None;
        let mut pf_port: Option<u16> = explicit_pf;
        for option in &entry.options {
            let value = answer(
                option,
                command_sets.get(option.name.as_str()).copied(),
                prompter,
                &mut rng,
            )?;
            let text = value.expose().to_string();
            vars.set(&option.name, value, Origin::Option);
            side_effects(
                option.name.as_str(),
                &text,
                &option.at,
                &mut resource,
                &mut connect_id,
                &mut pf_port,
                explicit_pf,
            )?;
        }

        for a in &entry.assignments {
            if let Assignment::Switch {
                variable,
                cases,
                at,
            } = a
            {
                let Some(value) = vars.get(variable) else {
                    warnings.push(Warning::at(
                        at,
                        format!("switch on {variable}, which is not defined: it has no effect"),
                    ));
                    continue;
                };
                match cases.iter().find(|c| c.value == value) {
                    Some(case) => {
                        for (k, v) in &case.sets {
                            vars.set(k, Value::Plain(v.clone()), Origin::Set);
                        }
                    }
                    None => warnings.push(Warning::at(
                        at,
                        format!("no case of the switch on {variable} matches {value:?}"),
                    )),
                }
            }
        }

        for (k, v) in &command_sets {
            if !option_names.contains(k) {
                vars.set(k, Value::Plain(v.to_string()), Origin::Command);
                side_effects(
                    k,
                    v,
                    &entry.at,
                    &mut resource,
                    &mut connect_id,
                    &mut pf_port,
                    explicit_pf,
                )?;
            }
        }

        let secrets: BTreeSet<String> = vars
            .values
            .iter()
            .filter(|(_, (v, _))| v.is_secret())
            .map(|(k, _)| k.clone())
            .collect();
        let resolver = Resolver {
            ctx,
            vars: &vars,
            secrets: &secrets,
            pvsc: is_pvsc(entry),
        };

        let (launch, tunnels_resource) = match &entry.startup {
            Startup::Manual => (Launch::Nothing, None),
            Startup::Command(m) => {
                let (p, res) = resolver.process(entry, m, &resource, pf_port, &mut warnings)?;
                (Launch::Process(Box::new(p)), res)
            }
        };
        let handshake = match &entry.handshake {
            Handshake::Native => ResolvedHandshake::Native,
            Handshake::None => ResolvedHandshake::None,
            Handshake::ParaView { vtk_hash } => {
                let v = &entry.paraview_version;
                let id = connect_id.unwrap_or(0);
                let id_part = if id == 0 {
                    String::new()
                } else {
                    format!(".connect_id.{id}")
                };
                ResolvedHandshake::ParaView {
                    handshake: format!(
                        "paraview-{}.{}{id_part}.renderingbackend.opengl2",
                        v.major, v.minor
                    ),
                    vtk_hash: vtk_hash.clone(),
                    connect_id: id,
                }
            }
        };
        let variables = vars
            .values
            .iter()
            .map(|(k, (v, o))| Variable {
                name: k.clone(),
                value: v.clone(),
                origin: *o,
            })
            .collect();
        Ok(Plan {
            server: entry.name.clone(),
            at: entry.at.clone(),
            variables,
            launch,
            connection: ExpectedConnection {
                resource: tunnels_resource.unwrap_or(resource),
                handshake,
                timeout: entry.timeouts.connect.clone(),
            },
            timeouts: entry.timeouts.clone(),
            warnings,
        })
    }
}

fn is_pvsc(entry: &ServerEntry) -> bool {
    matches!(
        &entry.startup,
        Startup::Command(
            Mechanism::LocalDirect {
                command: CommandLine::ParaViewLine { .. }
            } | Mechanism::SshDirect {
                command: CommandLine::ParaViewLine { .. },
                ..
            }
        )
    )
}

fn ssh_settings(startup: &Startup) -> Option<&SshSettings> {
    match startup {
        Startup::Command(Mechanism::SshDirect { ssh, .. } | Mechanism::SshScript { ssh, .. }) => {
            Some(ssh)
        }
        _ => None,
    }
}

fn side_effects(
    name: &str,
    value: &str,
    at: &SourcePos,
    resource: &mut Resource,
    connect_id: &mut Option<u32>,
    pf_port: &mut Option<u16>,
    explicit_pf: Option<u16>,
) -> Result<(), PlanError> {
    let port = || {
        value.trim().parse::<u16>().map_err(|_| {
            PlanError::at(
                at,
                format!("{name}={value:?} is not a port number (0..=65535)"),
            )
        })
    };
    match name {
        // As ParaView: the server port exists for cs/csrc only, data and render ports for
        // cdsrs/cdsrsrc only.
        "PV_SERVER_PORT" => {
            if let Resource::ClientServer { server, .. } = resource {
                server.port = Some(port()?);
            }
        }
        "PV_DATA_SERVER_PORT" => {
            if let Resource::DataRender { data, .. } = resource {
                data.port = Some(port()?);
            }
        }
        "PV_RENDER_SERVER_PORT" => {
            if let Resource::DataRender { render, .. } = resource {
                render.port = Some(port()?);
            }
        }
        "PV_SSH_PF_SERVER_PORT" if explicit_pf.is_none() => *pf_port = Some(port()?),
        "PV_CONNECT_ID" => {
            *connect_id = Some(value.trim().parse::<u32>().map_err(|_| {
                PlanError::at(
                    at,
                    format!("PV_CONNECT_ID={value:?} is not a non-negative integer"),
                )
            })?);
        }
        _ => {}
    }
    Ok(())
}

/// The value of one option: `--set`, else the prompter, else the default.
fn answer(
    option: &OptionSpec,
    given: Option<&str>,
    prompter: &dyn Prompter,
    rng: &mut SplitMix,
) -> Result<Value, PlanError> {
    let wrap = |s: String| {
        if option.kind.is_secret() {
            Value::Secret(Zeroizing::new(s))
        } else {
            Value::Plain(s)
        }
    };
    let default = default_value(&option.kind, rng);
    if let Some(given) = given {
        if option.readonly {
            return Err(PlanError::at(
                &option.at,
                format!(
                    "option {} is read-only: --set cannot change it",
                    option.name
                ),
            ));
        }
        return option
            .kind
            .validate(given)
            .map(wrap)
            .map_err(|m| PlanError::at(&option.at, format!("--set {}: {m}", option.name)));
    }
    if option.readonly {
        return Ok(wrap(default.unwrap_or_default()));
    }
    let mut problem = None;
    for _ in 0..5 {
        let request = PromptRequest {
            option,
            default: default.clone(),
            problem: problem.take(),
        };
        let text = match prompter.ask(&request) {
            Ok(t) => t,
            Err(PromptError::Cancelled) => return Err(PlanError::Cancelled(option.name.clone())),
            Err(PromptError::NoAnswer(m)) => return Err(PlanError::at(&option.at, m)),
        };
        // The default stands as it is (an enumeration default that selects nothing is empty).
        if Some(&text) == default.as_ref() {
            return Ok(wrap(text));
        }
        match option.kind.validate(&text) {
            Ok(v) => return Ok(wrap(v)),
            Err(m) if prompter.interactive() => problem = Some(m),
            Err(m) => {
                return Err(PlanError::at(
                    &option.at,
                    format!("option {}: {m}", option.name),
                ));
            }
        }
    }
    Err(PlanError::at(
        &option.at,
        format!("option {}: no valid answer after 5 tries", option.name),
    ))
}

fn default_value(kind: &OptionKind, rng: &mut SplitMix) -> Option<String> {
    Some(match kind {
        OptionKind::Int {
            min,
            max,
            step,
            default,
        } => match default {
            RangeDefault::Value(v) => v.to_string(),
            RangeDefault::Random => {
                let count = ((max - min) / step) as u64 + 1;
                (min + (rng.next() % count) as i64 * step).to_string()
            }
        },
        OptionKind::Double {
            min, max, default, ..
        } => match default {
            RangeDefault::Value(v) => format_double(*v),
            RangeDefault::Random => {
                format_double(min + (max - min) * (rng.next() >> 11) as f64 / (1u64 << 53) as f64)
            }
        },
        OptionKind::String { default } | OptionKind::File { default } => {
            default.clone().unwrap_or_default()
        }
        OptionKind::Password { default } => return default.clone(),
        OptionKind::Boolean {
            true_value,
            false_value,
            default,
        } => {
            if *default {
                true_value.clone()
            } else {
                false_value.clone()
            }
        }
        OptionKind::Enumeration { default, .. } => default.clone().unwrap_or_default(),
    })
}

struct Resolver<'a> {
    ctx: &'a LaunchContext,
    vars: &'a Vars,
    secrets: &'a BTreeSet<String>,
    pvsc: bool,
}

impl Resolver<'_> {
    fn template(&self, t: &Located<Template>) -> Result<String, PlanError> {
        for (name, _) in t.value.variables() {
            if self.secrets.contains(name) {
                return Err(PlanError::at(
                    &t.at,
                    format!(
                        "the secret {name} may not be placed on a command line (every local user can read it there); the server receives it in its environment as {name}"
                    ),
                ));
            }
        }
        t.value
            .render(&|n| self.vars.get(n), &|n| {
                self.ctx.process_env.get(n).cloned()
            })
            .map_err(|e| PlanError::at(&t.at, e.message))
    }

    fn text(&self, t: &Located<Text>) -> Result<String, PlanError> {
        match &t.value {
            Text::Template(tpl) => self.template(&Located::new(tpl.clone(), t.at.clone())),
            Text::ParaView(s) => {
                let vars = self.vars.plain_map();
                line::substitute(s, &line::lookup_in(&self.ctx.process_env, &vars))
                    .map_err(|e| PlanError::at(&t.at, e.to_string()))
            }
        }
    }

    fn command_line(
        &self,
        command: &CommandLine,
        warnings: &mut Vec<Warning>,
    ) -> Result<Vec<String>, PlanError> {
        match command {
            CommandLine::Argv(argv) => argv.iter().map(|t| self.template(t)).collect(),
            CommandLine::ParaViewLine { exec, arguments } => {
                for a in std::iter::once(exec).chain(arguments) {
                    for s in self.secrets.iter() {
                        if a.value.contains(&format!("${s}$")) {
                            return Err(PlanError::at(
                                &a.at,
                                format!(
                                    "the secret {s} may not be placed on a command line (every local user can read it there); read it from the environment variable {s} instead"
                                ),
                            ));
                        }
                    }
                }
                let vars = self.vars.plain_map();
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

    /// Every variable, for a script's (or ParaView command's) environment.
    fn all_variables(&self) -> Vec<(String, Value)> {
        self.vars
            .values
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }

    fn secret_variables(&self) -> Vec<(String, Value)> {
        self.vars
            .values
            .iter()
            .filter(|(_, (v, _))| v.is_secret())
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }

    fn environment(
        &self,
        entry: &ServerEntry,
        export_all: bool,
    ) -> Result<Vec<(String, Value)>, PlanError> {
        let mut env: BTreeMap<String, Value> = if export_all {
            self.all_variables()
        } else {
            self.secret_variables()
        }
        .into_iter()
        .collect();
        for (k, t) in &entry.environment {
            env.insert(k.clone(), Value::Plain(self.template(t)?));
        }
        Ok(env.into_iter().collect())
    }

    fn process(
        &self,
        entry: &ServerEntry,
        mechanism: &Mechanism,
        resource: &Resource,
        pf_port: Option<u16>,
        warnings: &mut Vec<Warning>,
    ) -> Result<(ProcessPlan, Option<Resource>), PlanError> {
        let delay = entry.timeouts.delay.clone();
        match mechanism {
            Mechanism::LocalDirect { command } => {
                let argv = self.command_line(command, warnings)?;
                Ok((
                    ProcessPlan {
                        mechanism: "local",
                        argv,
                        env: self.environment(entry, self.pvsc)?,
                        workdir: None,
                        delay,
                        remote: None,
                    },
                    None,
                ))
            }
            Mechanism::LocalScript { script, args } => {
                let mut argv = vec![self.template(script)?];
                for a in args {
                    argv.push(self.template(a)?);
                }
                Ok((
                    ProcessPlan {
                        mechanism: "local-script",
                        argv,
                        env: self.environment(entry, true)?,
                        workdir: None,
                        delay,
                        remote: None,
                    },
                    None,
                ))
            }
            Mechanism::SshDirect { ssh, command } => {
                let remote_argv = self.command_line(command, warnings)?;
                if self.pvsc {
                    if let CommandLine::ParaViewLine { exec, .. } = command {
                        for a in &remote_argv {
                            if a.chars().any(|c| ";&|<>()$`*?[]{}~!#'\"\\".contains(c)) {
                                warnings.push(Warning::at(&exec.at, format!(
                                    "remote argument {a:?} contains shell syntax: ParaView lets the remote login shell interpret it, pv-launch passes it literally"
                                )));
                            }
                        }
                    }
                }
                let env: Vec<(String, String)> = ssh
                    .remote_env
                    .iter()
                    .map(|(k, t)| Ok((k.clone(), self.template(t)?)))
                    .collect::<Result<_, PlanError>>()?;
                self.ssh(
                    entry,
                    "ssh",
                    ssh,
                    remote_argv,
                    env,
                    resource,
                    pf_port,
                    delay,
                    warnings,
                )
            }
            Mechanism::SshScript { ssh, script, args } => {
                let mut remote_argv = vec![self.template(script)?];
                for a in args {
                    remote_argv.push(self.template(a)?);
                }
                let mut env: Vec<(String, String)> = vec![];
                for (k, (v, _)) in &self.vars.values {
                    match v {
                        Value::Plain(s) => env.push((k.clone(), s.clone())),
                        Value::Secret(_) => warnings.push(Warning::at(&entry.at, format!("the secret {k} is not exported to the remote script (it would be visible on the remote command line)"))),
                    }
                }
                for (k, t) in &ssh.remote_env {
                    env.retain(|(n, _)| n != k);
                    env.push((k.clone(), self.template(t)?));
                }
                self.ssh(
                    entry,
                    "ssh-script",
                    ssh,
                    remote_argv,
                    env,
                    resource,
                    pf_port,
                    delay,
                    warnings,
                )
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn ssh(
        &self,
        entry: &ServerEntry,
        mechanism: &'static str,
        ssh: &SshSettings,
        remote_argv: Vec<String>,
        remote_env: Vec<(String, String)>,
        resource: &Resource,
        pf_port: Option<u16>,
        delay: Delay,
        warnings: &mut Vec<Warning>,
    ) -> Result<(ProcessPlan, Option<Resource>), PlanError> {
        let host = match &ssh.host {
            Some(h) => self.text(h)?,
            None => resource
                .endpoints()
                .first()
                .and_then(|(h, _)| h.map(Host::to_lookup_string))
                .unwrap_or_default(),
        };
        let host_at = ssh.host.as_ref().map_or(&entry.resource.at, |h| &h.at);
        check_ssh_name("host", &host).map_err(|m| {
            PlanError::at(
                host_at,
                format!("{m} (ssh connects to the resource's host unless ssh.host is given)"),
            )
        })?;
        let user = match &ssh.user {
            Some(u) => {
                let name = self.text(u)?;
                check_ssh_name("user", &name).map_err(|m| PlanError::at(&u.at, m))?;
                Some(name)
            }
            None => None,
        };
        for j in &ssh.jump_hosts {
            check_ssh_name("jump host", j).map_err(|m| PlanError::at(&entry.at, m))?;
        }
        let mut tunnels = vec![];
        let mut client_resource = None;
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
        if ssh.port_forwarding.is_some() {
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
            match direction {
                Direction::Forward => {
                    tunnels.push(Tunnel::Local {
                        local_port: local,
                        remote_port: server_port,
                    });
                    client_resource = Some(Resource::ClientServer {
                        direction: *direction,
                        tls: *tls,
                        server: pv_transport::Endpoint {
                            host: Some(Host::Name("localhost".into())),
                            port: Some(local),
                        },
                    });
                }
                Direction::Reverse => {
                    tunnels.push(Tunnel::Remote {
                        remote_port: server_port,
                        local_port: local,
                    });
                    client_resource = Some(Resource::ClientServer {
                        direction: *direction,
                        tls: *tls,
                        server: pv_transport::Endpoint {
                            host: server.host.clone(),
                            port: Some(local),
                        },
                    });
                }
            }
        }
        let mut extra = ssh.extra_options.clone();
        if self.pvsc {
            if let Some(o) = self.ctx.process_env.get("PARAVIEW_SSH_OPTIONS") {
                extra.extend(line::split_command(o));
            }
        }
        let workdir = ssh
            .remote_workdir
            .as_ref()
            .map(|w| self.template(w))
            .transpose()?;
        let command = remote_command(&remote_argv, &remote_env, workdir.as_deref());
        let program = ssh.program.clone().unwrap_or_else(|| "ssh".to_string());
        let argv = SshInvocation {
            program: &program,
            host: &host,
            user: user.as_deref(),
            port: ssh.port,
            jump_hosts: &ssh.jump_hosts,
            identity_file: ssh.identity_file.as_deref(),
            tunnels: &tunnels,
            prompts: ssh.prompts,
            extra_options: &extra,
            remote_command: &command,
        }
        .argv();
        let mut env = vec![];
        if ssh.prompts == SshPrompts::Askpass {
            env.push((
                "SSH_ASKPASS".to_string(),
                Value::Plain("pv-askpass".to_string()),
            ));
            env.push((
                "SSH_ASKPASS_REQUIRE".to_string(),
                Value::Plain("force".to_string()),
            ));
        }
        let plan = ProcessPlan {
            mechanism,
            argv,
            env,
            workdir: None::<PathBuf>,
            delay,
            remote: Some(RemotePlan {
                host,
                user,
                argv: remote_argv,
                command,
                tunnels,
                backend: ssh.backend,
            }),
        };
        if ssh.backend == SshBackend::Russh {
            russh_check(entry, ssh, &plan, warnings)?;
        }
        Ok((plan, client_resource))
    }
}

/// A `backend = "russh"` plan: refuse, at the entry, the ssh settings the in-process
/// client cannot honour (a program, jump hosts, OpenSSH-only options), and warn about
/// the ones it ignores. Whether this build has the backend is checked at launch.
fn russh_check(
    entry: &ServerEntry,
    ssh: &SshSettings,
    plan: &ProcessPlan,
    warnings: &mut Vec<Warning>,
) -> Result<(), PlanError> {
    let refuse = |m: String| PlanError::at(&entry.at, format!("server {:?}: {m}", entry.name));
    if ssh.program.is_some() {
        return Err(refuse(
            "ssh.program has no meaning with backend = \"russh\" (no ssh program runs)".into(),
        ));
    }
    let (target, _) =
        crate::ssh::SshTarget::from_process_plan(plan).map_err(|e| refuse(e.to_string()))?;
    let settings = crate::ssh::RusshSettings::from_args(target.args()).map_err(refuse)?;
    warnings.extend(
        settings
            .ignored
            .into_iter()
            .map(|w| Warning::at(&entry.at, w)),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::profile::toml::load_str;

    fn resolve(ssh_extra: &str) -> Result<Plan, PlanError> {
        let text = format!(
            "[[server]]\nname = \"r\"\nresource = \"cs://127.0.0.1:0\"\n\
             [server.startup]\nmechanism = \"ssh\"\nargv = [\"pvserver\"]\n\
             [server.startup.ssh]\nhost = \"login1\"\nbackend = \"russh\"\n{ssh_extra}"
        );
        let profile = load_str(Path::new("p.toml"), &text).unwrap();
        Plan::resolve(
            &profile.servers[0],
            &LaunchContext::fixed(),
            &crate::prompt::NonInteractive,
        )
    }

    #[test]
    fn a_russh_plan_carries_its_backend_and_says_so() {
        let plan = resolve("options = [\"-o\", \"UserKnownHostsFile=/k\"]\n").unwrap();
        let Launch::Process(p) = plan.launch() else {
            panic!("a process")
        };
        assert_eq!(p.remote.as_ref().unwrap().backend, SshBackend::Russh);
        assert!(
            plan.to_dry_run_text()
                .contains("  ssh backend: russh (in process;"),
            "{}",
            plan.to_dry_run_text()
        );
        assert_eq!(plan.to_json()["launch"]["remote"]["backend"], "russh");
    }

    #[test]
    fn what_russh_cannot_honour_is_refused_at_the_entry() {
        for (extra, why) in [
            ("jump_hosts = [\"gw\"]\n", "jump hosts"),
            (
                "options = [\"-o\", \"ProxyCommand=nc %h %p\"]\n",
                "ProxyCommand",
            ),
            ("program = \"/opt/ssh\"\n", "ssh.program"),
        ] {
            let e = resolve(extra).unwrap_err().to_string();
            assert!(e.starts_with("p.toml:1:1: server \"r\": "), "{e}");
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn what_russh_ignores_is_a_warning() {
        let plan = resolve("options = [\"-o\", \"GlobalKnownHostsFile=/etc/k\"]\n").unwrap();
        assert_eq!(plan.warnings().len(), 1, "{:?}", plan.warnings());
        assert!(plan.warnings()[0].message.contains("GlobalKnownHostsFile"));
    }

    fn reverse_over_ssh(host: &str, ssh_extra: &str) -> Plan {
        let text = format!(
            "[[server]]\nname = \"r\"\nresource = \"csrc://{host}:11111\"\n\
             [server.startup]\nmechanism = \"ssh\"\nargv = [\"pvserver\"]\n\
             [server.startup.ssh]\n{ssh_extra}"
        );
        let profile = load_str(Path::new("p.toml"), &text).unwrap();
        Plan::resolve(
            &profile.servers[0],
            &LaunchContext::fixed(),
            &crate::prompt::NonInteractive,
        )
        .unwrap()
    }

    #[test]
    fn a_reverse_connection_over_ssh_without_a_tunnel_is_warned_about_unless_local() {
        let plan = reverse_over_ssh("login1.example.org", "");
        assert_eq!(plan.warnings().len(), 1, "{:?}", plan.warnings());
        let w = plan.warnings()[0].to_string();
        assert!(
            w.contains("p.toml:3:12") && w.contains("port_forwarding"),
            "{w}"
        );
        assert!(
            reverse_over_ssh("login1.example.org", "port_forwarding = true\n")
                .warnings()
                .is_empty()
        );
        assert!(reverse_over_ssh("127.0.0.1", "").warnings().is_empty());
    }
}
