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

use pv_transport::Resource;
use pv_transport::handshake::paraview::{ParaViewHandshake, VtkHash};

use super::process::Resolver;
use super::*;
use crate::profile::options::format_double;
use crate::profile::*;
use crate::prompt::{PromptError, PromptRequest, Prompter};
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
}

impl Plan {
    /// Resolve `entry` in `ctx`, asking `prompter` for the options `--set` does not answer.
    pub fn resolve(
        entry: &ServerEntry,
        ctx: &LaunchContext,
        prompter: &dyn Prompter,
    ) -> Result<Plan, PlanError> {
        let mut warnings = vec![];
        let mut resolved = Resolved::predefined(entry, ctx);
        let command_sets = command_sets(entry, ctx)?;
        for a in &entry.assignments {
            if let Assignment::Set { name, value, .. } = a {
                resolved
                    .vars
                    .set(name, Value::Plain(value.clone()), Origin::Set);
            }
        }
        let mut rng = SplitMix(ctx.seed.unwrap_or_else(SplitMix::fresh_seed));
        for option in &entry.options {
            let given = command_sets.get(option.name.as_str()).copied();
            let saved = ctx
                .saved
                .get(&option.name)
                .filter(|_| option.save && !option.readonly && !option.kind.is_secret())
                .and_then(|v| option.kind.validate(v).ok());
            let value = answer(option, given, saved, prompter, &mut rng)?;
            // A wiped copy: the value may be a secret.
            let text = Zeroizing::new(value.expose().to_string());
            resolved.vars.set(&option.name, value, Origin::Option);
            resolved.side_effects(&option.name, &text, &option.at)?;
        }
        apply_switches(entry, &mut resolved.vars, &mut warnings);
        let option_names: BTreeSet<&str> = entry.options.iter().map(|o| o.name.as_str()).collect();
        for (k, given) in &command_sets {
            let v = &given.value;
            if !option_names.contains(k) {
                resolved
                    .vars
                    .set(k, Value::Plain(v.to_string()), Origin::Command);
                resolved.side_effects(k, v, &entry.at)?;
            }
        }
        resolved.into_plan(entry, ctx, warnings)
    }
}

/// The state of a resolution: the variables, and what the special options changed.
struct Resolved {
    vars: Vars,
    resource: Resource,
    connect_id: Option<u32>,
    pf_port: Option<u16>,
    /// The ssh forwarding port the entry fixes itself (`local=`), which options cannot
    /// change.
    explicit_pf: Option<u16>,
}

impl Resolved {
    /// The predefined variables (`PV_*`) of `entry` in `ctx`.
    fn predefined(entry: &ServerEntry, ctx: &LaunchContext) -> Resolved {
        let resource = entry.resource.value.clone();
        let explicit_pf = ssh_settings(&entry.startup)
            .and_then(|s| s.port_forwarding.as_ref())
            .and_then(|f| f.local_port);
        let mut vars = Vars {
            values: BTreeMap::new(),
        };
        for (k, v) in predefined(ctx, &resource, &entry.paraview_version, explicit_pf) {
            vars.set(&k, Value::Plain(v), Origin::Predefined);
        }
        Resolved {
            vars,
            resource,
            connect_id: None,
            pf_port: explicit_pf,
            explicit_pf,
        }
    }

    /// What `name = value` changes besides the variable ([`side_effects`]).
    fn side_effects(&mut self, name: &str, value: &str, at: &SourcePos) -> Result<(), PlanError> {
        side_effects(
            name,
            value,
            at,
            &mut self.resource,
            &mut self.connect_id,
            &mut self.pf_port,
            self.explicit_pf,
        )
    }

    /// The plan: the start made from the final variables, the handshake, the connection.
    fn into_plan(
        self,
        entry: &ServerEntry,
        ctx: &LaunchContext,
        mut warnings: Vec<Warning>,
    ) -> Result<Plan, PlanError> {
        let values: BTreeMap<String, Value> = self
            .vars
            .values
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        let secrets: BTreeSet<String> = values
            .iter()
            .filter(|(_, v)| v.is_secret())
            .map(|(k, _)| k.clone())
            .collect();
        let resolver = Resolver {
            ctx,
            vars: &values,
            secrets: &secrets,
            pvsc: is_pvsc(entry),
        };
        let (launch, tunnels_resource) = match &entry.startup {
            Startup::Manual => (Launch::Nothing, None),
            Startup::Command(m) => {
                let (p, res) =
                    resolver.process(entry, m, &self.resource, self.pf_port, &mut warnings)?;
                (Launch::Process(Box::new(p)), res)
            }
        };
        let handshake = resolve_handshake(entry, self.connect_id)?;
        let client = resolver.client(entry)?;
        let variables = self
            .vars
            .values
            .into_iter()
            .map(|(name, (value, origin))| Variable {
                name,
                value,
                origin,
            })
            .collect();
        Ok(Plan {
            server: entry.name.clone(),
            at: entry.at.clone(),
            variables,
            launch,
            connection: ExpectedConnection {
                resource: tunnels_resource.unwrap_or(self.resource),
                handshake,
                timeout: entry.timeouts.connect.clone(),
            },
            timeouts: entry.timeouts.clone(),
            warnings,
            client,
        })
    }
}

/// `--set` values by name. Every name must be an option, an assigned variable or a
/// predefined one.
fn command_sets<'a>(
    entry: &ServerEntry,
    ctx: &'a LaunchContext,
) -> Result<BTreeMap<&'a str, Given<'a>>, PlanError> {
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
    let all = ctx
        .sets
        .iter()
        .map(|(k, v)| {
            (
                k,
                Given {
                    value: v.as_str(),
                    on_argv: true,
                },
            )
        })
        .chain(ctx.private_sets.iter().map(|(k, v)| {
            (
                k,
                Given {
                    value: v.as_str(),
                    on_argv: false,
                },
            )
        }));
    let mut sets = BTreeMap::new();
    for (k, given) in all {
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
        sets.insert(k.as_str(), given);
    }
    Ok(sets)
}

/// A value given without a prompt, and whether it was on pv-launch's command line.
#[derive(Clone, Copy)]
struct Given<'a> {
    value: &'a str,
    on_argv: bool,
}

/// Switches on the final values: each sets the variables of its matching case.
fn apply_switches(entry: &ServerEntry, vars: &mut Vars, warnings: &mut Vec<Warning>) {
    for a in &entry.assignments {
        let Assignment::Switch {
            variable,
            cases,
            at,
        } = a
        else {
            continue;
        };
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

/// The handshake the entry asks for, configured as transport runs it.
fn resolve_handshake(
    entry: &ServerEntry,
    connect_id: Option<u32>,
) -> Result<ResolvedHandshake, PlanError> {
    Ok(match &entry.handshake {
        Handshake::Native => ResolvedHandshake::Native,
        Handshake::None => ResolvedHandshake::None,
        Handshake::ParaView { vtk_hash } => {
            let bad = |m: String| PlanError::at(&entry.at, m);
            let v = &entry.paraview_version;
            let version = |n: u32| {
                u16::try_from(n)
                    .map_err(|_| bad(format!("ParaView version number {n} is too large")))
            };
            let id = connect_id.unwrap_or(0);
            let hash =
                VtkHash::parse(vtk_hash).map_err(|e| bad(format!("VTK hash {vtk_hash:?}: {e}")))?;
            let hs = ParaViewHandshake::builder()
                .version(version(v.major)?, version(v.minor)?)
                .connect_id(
                    i32::try_from(id)
                        .map_err(|_| bad(format!("PV_CONNECT_ID={id} is too large")))?,
                )
                .vtk_hash(hash)
                .build()
                .map_err(|e| bad(format!("ParaView handshake: {e}")))?;
            ResolvedHandshake::ParaView(hs)
        }
    })
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
        Startup::Command(Mechanism::Batch { ssh, .. }) => ssh.as_ref(),
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

/// The value of one option: `--set`, else the prompter, else the default (the value
/// `saved` from an earlier launch, when there is one, else the profile's).
fn answer(
    option: &OptionSpec,
    given: Option<Given<'_>>,
    saved: Option<String>,
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
    let drawn = default_value(&option.kind, rng);
    let default = saved.or(drawn);
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
        if option.kind.is_secret() && given.on_argv {
            return Err(PlanError::at(
                &option.at,
                format!(
                    "--set {name}=… would put the password on pv-launch's command line, which \
                     every local user can read (ps): use --set-from-file {name}=FILE (a file only \
                     you can read), or let pv-launch ask",
                    name = option.name
                ),
            ));
        }
        return option
            .kind
            .validate(given.value)
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
        if Some(&*text) == default.as_ref() {
            return Ok(wrap(text.to_string()));
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
        plan_of(&text)
    }

    /// The plan of a one-server profile, resolved in the fixed context.
    fn plan_of(text: &str) -> Result<Plan, PlanError> {
        let profile = load_str(Path::new("p.toml"), text).unwrap();
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
        assert_eq!(p.ssh().unwrap().backend_kind(), SshBackend::Russh);
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
        plan_of(&text).unwrap()
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

    fn batch_plan(table: &str, extra: &str) -> Result<Plan, PlanError> {
        let text = format!(
            "[[server]]\nname = \"viz job\"\nresource = \"cs://localhost:0\"\n\
             [server.startup]\nmechanism = \"batch\"\nargv = [\"pvserver\"]\n\
             [server.startup.batch]\n{table}{extra}"
        );
        plan_of(&text)
    }

    #[test]
    fn a_batch_plan_substitutes_its_table_and_checks_it_at_its_place() {
        let plan = batch_plan(
            "ntasks = \"${N}\"\ntime = \"${T}\"\n",
            "[[server.option]]\nname = \"N\"\ntype = \"int\"\ndefault = 4\n\
             [[server.option]]\nname = \"T\"\ntype = \"string\"\ndefault = \"30\"\n",
        )
        .unwrap();
        let Launch::Process(p) = plan.launch() else {
            panic!("a process")
        };
        let b = p.batch().expect("a batch start");
        assert_eq!(b.spec.ntasks, Some(4));
        assert_eq!(b.spec.job_name.as_deref(), Some("viz_job"));
        assert_eq!(
            b.jobs_dir,
            JobsDir::Path("/home/user/.pv-launch/jobs".into())
        );
        let Place::Local(submit) = &p.place else {
            panic!("submitted here")
        };
        assert!(
            submit.argv.contains(&"--time=00:30:00".to_string()),
            "{:?}",
            submit.argv
        );
        // Bad values after substitution: the error points at the field.
        let e = |table: &str| batch_plan(table, "").unwrap_err().to_string();
        assert_eq!(
            e("time = \"1-99\"\n"),
            "p.toml:8:8: time: time \"1-99\": hours 99 is out of range 0-23 (expected minutes, minutes:seconds, hours:minutes:seconds, days-hours, days-hours:minutes, days-hours:minutes:seconds or UNLIMITED)"
        );
        assert!(
            e("extra_options = [\"--output=/tmp/x\"]\n")
                .starts_with("p.toml:8:18: batch field `extra_options`: \"--output=/tmp/x\" is set by pv-launch itself"),
            "{}",
            e("extra_options = [\"--output=/tmp/x\"]\n")
        );
        assert_eq!(
            e("ntasks = \"many\"\n"),
            "p.toml:8:10: ntasks = \"many\": not a whole number of at least 1"
        );
    }

    /// pvserver (ParaView's handshake) in a job: it prints no ready line, so the plan fixes
    /// its port, waits for its "Accepting connection(s)" line, and refuses port 0.
    #[test]
    fn a_batch_job_without_a_ready_line_has_a_fixed_port_and_a_ready_pattern() {
        let text = |resource: &str, ssh: &str| {
            format!(
                "[[server]]\nname = \"pv\"\nresource = \"{resource}\"\nhandshake = \"paraview\"\n\
                 [server.startup]\nmechanism = \"batch\"\n\
                 argv = [\"pvserver\", \"--server-port=${{PV_SERVER_PORT}}\"]\n{ssh}\
                 [server.startup.batch]\nin_job = \"direct\"\n"
            )
        };
        let e = plan_of(&text("cs://localhost:0", ""))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("p.toml:3:12: cs://localhost:0: port 0 in a batch job whose server prints no pv-launch ready line (handshake = \"paraview\")")
                && e.contains("give the resource a port"),
            "{e}"
        );
        let process = |t: String| match plan_of(&t).unwrap().launch {
            Launch::Process(p) => p,
            Launch::Nothing => panic!("a process"),
        };
        let p = process(text("cs://localhost:11111", ""));
        assert_eq!(p.batch().and_then(|b| b.port), Some(11111));
        let pattern = p.ready_pattern.as_ref().expect("pvserver's listening line");
        assert!(
            pattern
                .regex
                .is_match("Accepting connection(s): node7:11111")
        );
        assert!(!pattern.required);
        // Over ssh the -L tunnel leads to the fixed port on the job's node.
        let login = "[server.startup.ssh]\nhost = \"login1\"\n";
        let p = process(text("cs://localhost:11111", login));
        assert_eq!(
            p.ssh().unwrap().tunnels,
            [Tunnel::Local {
                local_port: 0,
                host: crate::plan::BATCH_HOST_PLACEHOLDER.to_string(),
                remote_port: 11111
            }]
        );
        // Reverse from a job submitted over ssh: the port is the relay's, chosen at run time.
        let p = process(text("csrc://localhost:0", login));
        assert_eq!(p.batch().and_then(|b| b.port), None);
        // The native handshake's ready line names the port: 0 is fine.
        let native = text("cs://localhost:0", "").replace("\"paraview\"", "\"native\"");
        assert!(plan_of(&native).is_ok());
    }

    fn reverse_batch(table: &str) -> Plan {
        let text = format!(
            "[[server]]\nname = \"r\"\nresource = \"csrc://localhost:11111\"\n\
             [server.startup]\nmechanism = \"batch\"\n\
             argv = [\"pvserver\", \"--client-host=${{PV_CLIENT_HOST}}\", \"--server-port=${{PV_SERVER_PORT}}\"]\n\
             [server.startup.ssh]\nhost = \"login1\"\n[server.startup.batch]\n{table}"
        );
        plan_of(&text).unwrap()
    }

    #[test]
    fn a_reverse_batch_job_over_ssh_dials_the_login_node_through_a_relay_by_default() {
        let plan = reverse_batch("");
        let Launch::Process(p) = plan.launch() else {
            panic!("a process")
        };
        let b = p.batch().expect("a batch start");
        let r = b.reverse.as_ref().expect("a way back");
        assert_eq!(r.via, crate::startup::batch::ReverseVia::Relay);
        assert_eq!(r.host, None);
        // The job's host and port are filled in when the launch runs.
        assert_eq!(
            b.server_argv,
            [
                "pvserver",
                "--client-host=<login node host>",
                "--server-port=<login node port>"
            ]
        );
        assert_eq!(
            b.dialling("login1-ib", 40123).server_argv[1..],
            ["--client-host=login1-ib", "--server-port=40123"]
        );
        let Place::Ssh(ssh) = &p.place else {
            panic!("over ssh")
        };
        // The -R tunnel stays on the login node's loopback; it leads to the client's port.
        assert_eq!(
            ssh.tunnels,
            [Tunnel::Remote {
                remote_port: 0,
                local_port: 11111,
                public: false
            }]
        );
        let gw = reverse_batch("reverse_via = \"gateway-ports\"\nreverse_host = \"login1-ib\"\n");
        let Launch::Process(p) = gw.launch() else {
            panic!("a process")
        };
        assert_eq!(
            p.batch().and_then(|b| b.reverse.clone()),
            Some(crate::plan::ReverseBatch {
                via: crate::startup::batch::ReverseVia::GatewayPorts,
                host: Some("login1-ib".into())
            })
        );
        let Place::Ssh(ssh) = &p.place else {
            panic!("over ssh")
        };
        assert_eq!(ssh.tunnels[0].spec(), "0.0.0.0:0:127.0.0.1:11111");
    }
}
