//! pv-launch's TOML profile format (the reference is in the crate README).
//!
//! Loading is strict: an unknown key, a wrong type, an option default outside its range or
//! an unknown `${VARIABLE}` is an error naming file, line and column, before anything
//! starts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pv_transport::Resource;
use serde::Deserialize;
use toml::{Spanned, Value};

use super::error::ProfileError;
use super::model::*;
use super::options::{EnumEntry, OptionKind, OptionSpec, RangeDefault, check_double, check_int};
use crate::source::{Located, SourcePos};
use crate::template::{Template, Text, is_variable_name};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    paraview_version: Option<Spanned<String>>,
    vtk_hash: Option<Spanned<String>>,
    client: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    server: Vec<Spanned<RawServer>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: Spanned<String>,
    resource: Spanned<String>,
    tls: Option<bool>,
    handshake: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<Value>>,
    paraview_version: Option<Spanned<String>>,
    vtk_hash: Option<Spanned<String>>,
    startup: Option<Spanned<RawStartup>>,
    client: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    option: Vec<Spanned<RawOption>>,
    #[serde(default)]
    set: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    switch: Vec<Spanned<RawSwitch>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStartup {
    mechanism: Spanned<String>,
    argv: Option<Vec<Spanned<String>>>,
    script: Option<Spanned<String>>,
    #[serde(default)]
    args: Vec<Spanned<String>>,
    process_start_timeout: Option<Spanned<f64>>,
    delay: Option<Spanned<f64>>,
    ready_pattern: Option<Spanned<String>>,
    ssh: Option<Spanned<RawSsh>>,
    batch: Option<Spanned<RawBatch>>,
}

/// `[server.startup.batch]`: text fields are templates; counts are numbers or templates.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    #[serde(default)]
    scheduler: crate::startup::batch::SchedulerKind,
    nodes: Option<Spanned<Value>>,
    ntasks: Option<Spanned<Value>>,
    cpus_per_task: Option<Spanned<Value>>,
    partition: Option<Spanned<String>>,
    account: Option<Spanned<String>>,
    time: Option<Spanned<String>>,
    qos: Option<Spanned<String>>,
    constraint: Option<Spanned<String>>,
    gres: Option<Spanned<String>>,
    job_name: Option<Spanned<String>>,
    output: Option<Spanned<String>>,
    #[serde(default)]
    extra_options: Vec<Spanned<String>>,
    #[serde(default)]
    in_job: crate::startup::batch::InJob,
    queue_timeout: Option<Spanned<f64>>,
    jobs_dir: Option<Spanned<String>>,
    #[serde(default)]
    reverse_via: crate::startup::batch::ReverseVia,
    reverse_host: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    host: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    port: Option<u16>,
    #[serde(default)]
    jump_hosts: Vec<String>,
    identity_file: Option<PathBuf>,
    #[serde(default)]
    options: Vec<String>,
    program: Option<String>,
    #[serde(default)]
    backend: SshBackend,
    workdir: Option<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    port_forwarding: Option<RawForwarding>,
    #[serde(default)]
    prompts: SshPrompts,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawForwarding {
    On(bool),
    Local { local_port: u16 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOption {
    name: Spanned<String>,
    label: Option<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    min: Option<Spanned<Value>>,
    max: Option<Spanned<Value>>,
    step: Option<Spanned<Value>>,
    default: Option<Spanned<Value>>,
    #[serde(rename = "true")]
    true_value: Option<String>,
    #[serde(rename = "false")]
    false_value: Option<String>,
    entries: Option<Vec<RawEntry>>,
    #[serde(default)]
    readonly: bool,
    save: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawEntry {
    Value(String),
    Full {
        value: String,
        label: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSwitch {
    variable: Spanned<String>,
    cases: BTreeMap<String, BTreeMap<String, String>>,
}

/// Load a TOML profile from `text`, the contents of `path`.
pub fn load_str(path: &Path, text: &str) -> Result<Profile, ProfileError> {
    let file = Arc::new(path.to_path_buf());
    let raw: RawProfile = toml::from_str(text).map_err(|e| {
        let at = SourcePos::at_offset(&file, text, e.span().map_or(0, |s| s.start));
        ProfileError::at(&at, e.message().trim_end().to_string())
    })?;
    let mut loader = Loader {
        file: &file,
        text,
        client: None,
    };
    loader.client = raw.client.as_ref().map(|c| loader.client(c)).transpose()?;
    let default_version = match &raw.paraview_version {
        Some(v) => loader.version(v)?,
        None => ParaViewVersion::default(),
    };
    let default_hash = match &raw.vtk_hash {
        Some(h) => loader.vtk_hash(h)?,
        None => DEFAULT_VTK_HASH.to_string(),
    };
    if raw.server.is_empty() {
        return Err(ProfileError::at(
            &SourcePos::new(&file, 1, 1),
            "the profile has no [[server]] entry",
        ));
    }
    let mut servers: Vec<ServerEntry> = Vec::new();
    for s in &raw.server {
        let entry = loader.server(s, &default_version, &default_hash)?;
        if servers.iter().any(|o| o.name == entry.name) {
            return Err(ProfileError::at(
                &entry.at,
                format!("a second server named {:?}", entry.name),
            ));
        }
        servers.push(entry);
    }
    Ok(Profile {
        path: path.to_path_buf(),
        format: ProfileFormat::Toml,
        servers,
        warnings: vec![],
    })
}

struct Loader<'a> {
    file: &'a Arc<PathBuf>,
    text: &'a str,
    /// The profile's `client`, for servers without their own.
    client: Option<Vec<Located<Template>>>,
}

impl Loader<'_> {
    fn pos<T>(&self, s: &Spanned<T>) -> SourcePos {
        SourcePos::at_offset(self.file, self.text, s.span().start)
    }

    fn err<T>(&self, s: &Spanned<T>, message: impl Into<String>) -> ProfileError {
        ProfileError::at(&self.pos(s), message)
    }

    /// Position of byte `offset` inside the string value `s` (exact when the string is
    /// written without escapes, else the string's start).
    fn pos_in_string(&self, s: &Spanned<String>, offset: usize) -> SourcePos {
        let span = s.span();
        let raw = &self.text[span.clone()];
        let start = self.pos(s);
        let inner = raw.get(1..raw.len().saturating_sub(1));
        if inner == Some(s.get_ref().as_str()) {
            start.shifted(1 + s.get_ref()[..offset].chars().count())
        } else {
            start
        }
    }

    fn template(&self, s: &Spanned<String>) -> Result<Located<Template>, ProfileError> {
        Template::parse(s.get_ref())
            .map(|t| Located::new(t, self.pos(s)))
            .map_err(|e| ProfileError::at(&self.pos_in_string(s, e.offset), e.message))
    }

    /// A `client = [...]` command: templates, not empty.
    fn client(
        &self,
        argv: &Spanned<Vec<Spanned<String>>>,
    ) -> Result<Vec<Located<Template>>, ProfileError> {
        if argv.get_ref().is_empty() {
            return Err(self.err(
                argv,
                "client = [] is empty: give the program and its arguments, or leave it out",
            ));
        }
        argv.get_ref().iter().map(|a| self.template(a)).collect()
    }

    fn version(&self, v: &Spanned<String>) -> Result<ParaViewVersion, ProfileError> {
        ParaViewVersion::parse(v.get_ref()).ok_or_else(|| {
            self.err(
                v,
                format!("{:?} is not a version like \"5.11.0\"", v.get_ref()),
            )
        })
    }

    fn vtk_hash(&self, h: &Spanned<String>) -> Result<String, ProfileError> {
        let ok = h.get_ref().len() == 32
            && h.get_ref()
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(h.get_ref().clone())
        } else {
            Err(self.err(h, "vtk_hash must be 32 lowercase hex characters"))
        }
    }

    fn server(
        &self,
        s: &Spanned<RawServer>,
        default_version: &ParaViewVersion,
        default_hash: &str,
    ) -> Result<ServerEntry, ProfileError> {
        let raw = s.get_ref();
        let at = self.pos(s);
        let name = raw.name.get_ref().clone();
        if name.is_empty() {
            return Err(self.err(&raw.name, "a server name may not be empty"));
        }
        let resource = self.resource(raw)?;
        let paraview_version = match &raw.paraview_version {
            Some(v) => self.version(v)?,
            None => default_version.clone(),
        };
        let vtk_hash = match &raw.vtk_hash {
            Some(h) => self.vtk_hash(h)?,
            None => default_hash.to_string(),
        };
        let handshake = self.handshake(raw.handshake.as_ref(), vtk_hash)?;
        let mut timeouts = Timeouts::default();
        if let Some(c) = &raw.connect_timeout {
            timeouts.connect = self.connect_timeout(c)?;
        }
        let options = raw
            .option
            .iter()
            .map(|o| self.option(o))
            .collect::<Result<Vec<_>, _>>()?;
        let assignments = self.assignments(raw)?;
        let environment = self.environment(&raw.env)?;
        let startup = match &raw.startup {
            None => Startup::Manual,
            Some(st) => self.startup(st, &mut timeouts)?,
        };
        let ready_pattern = match raw
            .startup
            .as_ref()
            .and_then(|s| s.get_ref().ready_pattern.as_ref())
        {
            Some(p) => {
                regex_lite::Regex::new(p.get_ref()).map_err(|e| {
                    self.err(p, format!("ready_pattern: not a regular expression: {e}"))
                })?;
                Some(Located::new(p.get_ref().clone(), self.pos(p)))
            }
            None => None,
        };
        let client = match &raw.client {
            Some(c) => Some(self.client(c)?),
            None => self.client.clone(),
        };
        let entry = ServerEntry {
            name,
            at,
            resource: Located::new(resource, self.pos(&raw.resource)),
            startup,
            options,
            assignments,
            environment,
            timeouts,
            handshake,
            paraview_version,
            ready_pattern,
            client,
        };
        check_variables(&entry)?;
        Ok(entry)
    }

    /// The server's `resource`, with `tls` applied.
    fn resource(&self, raw: &RawServer) -> Result<Resource, ProfileError> {
        let mut resource = Resource::parse(raw.resource.get_ref()).map_err(|e| {
            ProfileError::at(
                &self.pos_in_string(&raw.resource, e.offset),
                format!("{}\n{}", e.message, e.pointer()),
            )
        })?;
        if let Some(tls) = raw.tls {
            if resource == Resource::Builtin && tls {
                return Err(self.err(&raw.resource, "TLS does not apply to builtin:"));
            }
            let was_tls = resource.is_tls();
            resource = resource.with_tls(tls || was_tls);
        }
        Ok(resource)
    }

    fn handshake(
        &self,
        handshake: Option<&Spanned<String>>,
        vtk_hash: String,
    ) -> Result<Handshake, ProfileError> {
        match handshake.map(|h| (h, h.get_ref().as_str())) {
            None | Some((_, "native")) => Ok(Handshake::Native),
            Some((_, "paraview")) => Ok(Handshake::ParaView { vtk_hash }),
            Some((_, "none")) => Ok(Handshake::None),
            Some((h, other)) => Err(self.err(
                h,
                format!("handshake {other:?}: expected \"native\", \"paraview\" or \"none\""),
            )),
        }
    }

    /// The `set` assignments (in name order, as TOML tables are read), then the switches.
    fn assignments(&self, raw: &RawServer) -> Result<Vec<Assignment>, ProfileError> {
        let mut assignments = Vec::new();
        for (k, v) in &raw.set {
            self.check_name(k, v)?;
            assignments.push(Assignment::Set {
                name: k.clone(),
                value: v.get_ref().clone(),
                at: self.pos(v),
            });
        }
        for sw in &raw.switch {
            let r = sw.get_ref();
            let cases = r
                .cases
                .iter()
                .map(|(value, sets)| SwitchCase {
                    value: value.clone(),
                    sets: sets.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                })
                .collect();
            assignments.push(Assignment::Switch {
                variable: r.variable.get_ref().clone(),
                cases,
                at: self.pos(&r.variable),
            });
        }
        Ok(assignments)
    }

    /// An `env` table (the server's, or the remote one under `ssh`): names checked, values
    /// parsed as templates.
    fn environment(
        &self,
        env: &BTreeMap<String, Spanned<String>>,
    ) -> Result<Vec<(String, Located<Template>)>, ProfileError> {
        env.iter()
            .map(|(k, v)| {
                self.check_name(k, v)?;
                Ok((k.clone(), self.template(v)?))
            })
            .collect()
    }

    fn check_name(&self, name: &str, value: &Spanned<String>) -> Result<(), ProfileError> {
        if is_variable_name(name) {
            Ok(())
        } else {
            Err(self.err(value, format!("{name:?} is not a variable name")))
        }
    }

    fn connect_timeout(&self, c: &Spanned<Value>) -> Result<ConnectTimeout, ProfileError> {
        let secs = match c.get_ref() {
            Value::String(s) if s == "forever" => return Ok(ConnectTimeout::Forever),
            Value::Integer(i) => *i as f64,
            Value::Float(f) => *f,
            _ => {
                return Err(self.err(
                    c,
                    "connect_timeout: seconds (0 = one attempt, -1 = forever) or \"forever\"",
                ));
            }
        };
        Ok(if secs < 0.0 {
            ConnectTimeout::Forever
        } else if secs == 0.0 {
            ConnectTimeout::OneAttempt
        } else {
            ConnectTimeout::Within(self.seconds(c, secs)?)
        })
    }

    /// `secs` seconds, or an error at `at` when no [`Duration`] holds them (nan, inf, too
    /// large), which `Duration::from_secs_f64` would panic on.
    fn seconds<T>(&self, at: &Spanned<T>, secs: f64) -> Result<Duration, ProfileError> {
        Duration::try_from_secs_f64(secs)
            .map_err(|_| self.err(at, format!("{secs:?} is not a usable number of seconds")))
    }
}

/// `[server.startup]`: the timeouts it sets, then the mechanism and the fields it needs.
impl Loader<'_> {
    fn startup(
        &self,
        st: &Spanned<RawStartup>,
        timeouts: &mut Timeouts,
    ) -> Result<Startup, ProfileError> {
        let r = st.get_ref();
        self.startup_timeouts(r, timeouts)?;
        let mech = r.mechanism.get_ref().as_str();
        self.check_mechanism_fields(r, mech)?;
        let mechanism = match mech {
            "manual" => return Ok(Startup::Manual),
            "local" => Mechanism::LocalDirect {
                command: self.argv(r, mech)?,
            },
            "local-script" => {
                let (script, args) = self.script(r, mech)?;
                Mechanism::LocalScript { script, args }
            }
            "ssh" => Mechanism::SshDirect {
                ssh: self.mechanism_ssh(r)?,
                command: self.argv(r, mech)?,
            },
            "ssh-script" => {
                let (script, args) = self.script(r, mech)?;
                Mechanism::SshScript {
                    ssh: self.mechanism_ssh(r)?,
                    script,
                    args,
                }
            }
            "batch" => Mechanism::Batch {
                ssh: r.ssh.as_ref().map(|s| self.ssh(s)).transpose()?,
                command: self.argv(r, mech)?,
                batch: Box::new(self.batch(r)?),
            },
            other => {
                return Err(self.err(
                    &r.mechanism,
                    format!("mechanism {other:?}: expected \"manual\", \"local\", \"local-script\", \"ssh\", \"ssh-script\" or \"batch\""),
                ));
            }
        };
        Ok(Startup::Command(mechanism))
    }

    /// `process_start_timeout` and `delay`.
    fn startup_timeouts(
        &self,
        r: &RawStartup,
        timeouts: &mut Timeouts,
    ) -> Result<(), ProfileError> {
        if let Some(p) = &r.process_start_timeout {
            let v = *p.get_ref();
            timeouts.process_start = if v > 0.0 {
                Some(self.seconds(p, v)?)
            } else {
                None
            };
        }
        if let Some(d) = &r.delay {
            let v = *d.get_ref();
            timeouts.delay = if v == -1.0 {
                Delay::UntilExit
            } else if v < 0.0 {
                return Err(self.err(d, "delay: seconds, or -1 to wait for the command to exit"));
            } else if v == 0.0 {
                Delay::None
            } else {
                Delay::Wait(self.seconds(d, v)?)
            };
        }
        Ok(())
    }

    /// A field written for another mechanism (`argv` for a script, `ssh` for a local
    /// start, …) is an error, checked before the mechanism's own fields.
    fn check_mechanism_fields(&self, r: &RawStartup, mech: &str) -> Result<(), ProfileError> {
        let wrong = |field: &str, allowed: bool| -> Result<(), ProfileError> {
            if allowed {
                Ok(())
            } else {
                Err(self.err(
                    &r.mechanism,
                    format!("`{field}` does not apply to mechanism {mech:?}"),
                ))
            }
        };
        let is_script = mech.ends_with("script");
        wrong("argv", r.argv.is_none() || !is_script)?;
        wrong("script", r.script.is_none() || is_script)?;
        wrong("args", r.args.is_empty() || is_script)?;
        wrong(
            "ssh",
            r.ssh.is_none() || mech.starts_with("ssh") || mech == "batch",
        )?;
        wrong("batch", r.batch.is_none() || mech == "batch")
    }

    /// The `[server.startup.batch]` table the batch mechanism needs.
    fn batch(&self, r: &RawStartup) -> Result<BatchSettings, ProfileError> {
        let Some(b) = &r.batch else {
            return Err(self.err(
                &r.mechanism,
                "mechanism \"batch\" needs a [server.startup.batch] table",
            ));
        };
        let raw = b.get_ref();
        let opt = |v: &Option<Spanned<String>>| v.as_ref().map(|t| self.template(t)).transpose();
        let count = |v: &Option<Spanned<Value>>, field: &str| {
            v.as_ref()
                .map(|c| match c.get_ref() {
                    Value::Integer(i) if *i >= 1 && *i <= i64::from(u32::MAX) => Ok(Located::new(
                        Template::parse(&i.to_string()).expect("digits parse"),
                        self.pos(c),
                    )),
                    Value::String(s) => Template::parse(s)
                        .map(|t| Located::new(t, self.pos(c)))
                        .map_err(|e| self.err(c, e.message)),
                    _ => Err(self.err(
                        c,
                        format!("{field}: a number of at least 1, or a \"${{VARIABLE}}\" template"),
                    )),
                })
                .transpose()
        };
        let queue_timeout = match &raw.queue_timeout {
            None => None,
            Some(q) if *q.get_ref() > 0.0 => Some(self.seconds(q, *q.get_ref())?),
            Some(q) => {
                return Err(self.err(
                    q,
                    "queue_timeout: seconds (> 0); leave it out to wait as long as the job is pending",
                ));
            }
        };
        Ok(BatchSettings {
            at: self.pos(b),
            scheduler: raw.scheduler,
            nodes: count(&raw.nodes, "nodes")?,
            ntasks: count(&raw.ntasks, "ntasks")?,
            cpus_per_task: count(&raw.cpus_per_task, "cpus_per_task")?,
            partition: opt(&raw.partition)?,
            account: opt(&raw.account)?,
            time: opt(&raw.time)?,
            qos: opt(&raw.qos)?,
            constraint: opt(&raw.constraint)?,
            gres: opt(&raw.gres)?,
            job_name: opt(&raw.job_name)?,
            output: opt(&raw.output)?,
            extra_options: raw
                .extra_options
                .iter()
                .map(|t| self.template(t))
                .collect::<Result<_, _>>()?,
            in_job: raw.in_job,
            queue_timeout,
            jobs_dir: opt(&raw.jobs_dir)?,
            reverse_via: raw.reverse_via,
            reverse_host: opt(&raw.reverse_host)?,
        })
    }

    /// The `argv` a direct mechanism `what` needs.
    fn argv(&self, r: &RawStartup, what: &str) -> Result<CommandLine, ProfileError> {
        let Some(argv) = &r.argv else {
            return Err(self.err(
                &r.mechanism,
                format!("mechanism {what:?} needs argv = [...]"),
            ));
        };
        if argv.is_empty() {
            return Err(self.err(&r.mechanism, "argv may not be empty"));
        }
        Ok(CommandLine::Argv(
            argv.iter()
                .map(|a| self.template(a))
                .collect::<Result<_, _>>()?,
        ))
    }

    /// The `script` and `args` a script mechanism `what` needs.
    fn script(
        &self,
        r: &RawStartup,
        what: &str,
    ) -> Result<(Located<Template>, Vec<Located<Template>>), ProfileError> {
        let Some(s) = &r.script else {
            return Err(self.err(
                &r.mechanism,
                format!("mechanism {what:?} needs script = \"...\""),
            ));
        };
        Ok((
            self.template(s)?,
            r.args
                .iter()
                .map(|a| self.template(a))
                .collect::<Result<_, _>>()?,
        ))
    }

    /// The `[server.startup.ssh]` table an ssh mechanism needs.
    fn mechanism_ssh(&self, r: &RawStartup) -> Result<SshSettings, ProfileError> {
        let Some(s) = &r.ssh else {
            return Err(self.err(
                &r.mechanism,
                "an ssh mechanism needs a [server.startup.ssh] table",
            ));
        };
        self.ssh(s)
    }

    fn ssh(&self, s: &Spanned<RawSsh>) -> Result<SshSettings, ProfileError> {
        let r = s.get_ref();
        let opt = |v: &Option<Spanned<String>>| v.as_ref().map(|t| self.template(t)).transpose();
        let text = |v: &Option<Spanned<String>>| -> Result<Option<Located<Text>>, ProfileError> {
            Ok(opt(v)?.map(|t| Located::new(Text::Template(t.value), t.at)))
        };
        Ok(SshSettings {
            host: text(&r.host)?,
            user: text(&r.user)?,
            port: r.port,
            jump_hosts: r.jump_hosts.clone(),
            identity_file: r.identity_file.clone(),
            extra_options: r.options.clone(),
            program: r.program.clone(),
            backend: r.backend,
            remote_workdir: opt(&r.workdir)?,
            remote_env: self.environment(&r.env)?,
            port_forwarding: match &r.port_forwarding {
                None | Some(RawForwarding::On(false)) => None,
                Some(RawForwarding::On(true)) => Some(PortForwarding { local_port: None }),
                Some(RawForwarding::Local { local_port }) => Some(PortForwarding {
                    local_port: Some(*local_port),
                }),
            },
            prompts: r.prompts,
        })
    }
}

/// `[[server.option]]`: the checks every option gets, then one function per option type.
impl Loader<'_> {
    fn option(&self, o: &Spanned<RawOption>) -> Result<OptionSpec, ProfileError> {
        let r = o.get_ref();
        let name = r.name.get_ref().clone();
        if !is_variable_name(&name) {
            return Err(self.err(&r.name, format!("{name:?} is not a variable name")));
        }
        let ty = r.kind.get_ref().as_str();
        self.check_option_fields(r, ty)?;
        let kind = match ty {
            "int" => self.int_option(r)?,
            "double" => self.double_option(r)?,
            "string" => OptionKind::String {
                default: self.text_default(r, ty)?,
            },
            "password" => OptionKind::Password {
                default: self.text_default(r, ty)?,
            },
            "file" => OptionKind::File {
                default: self.text_default(r, ty)?,
            },
            "boolean" => self.boolean_option(r)?,
            "enumeration" => self.enumeration_option(r)?,
            other => {
                return Err(self.err(
                    &r.kind,
                    format!("option type {other:?}: expected int, double, string, password, file, boolean or enumeration"),
                ));
            }
        };
        let is_random = matches!(
            kind,
            OptionKind::Int {
                default: RangeDefault::Random,
                ..
            } | OptionKind::Double {
                default: RangeDefault::Random,
                ..
            }
        );
        let save = match &r.save {
            // ParaView's default: remember the choice. Never a password's.
            None => !kind.is_secret(),
            Some(s) if *s.get_ref() && kind.is_secret() => {
                return Err(self.err(
                    s,
                    format!(
                        "`save = true` on the password option {name}: a password is never \
                         written to disk (remove `save`, or write `save = false`)"
                    ),
                ));
            }
            Some(s) => *s.get_ref(),
        };
        Ok(OptionSpec {
            label: r.label.clone().unwrap_or_else(|| name.clone()),
            name,
            kind,
            readonly: r.readonly,
            save: save && !is_random,
            at: self.pos(o),
        })
    }

    /// A field that belongs to another option type (`min` on a string, …) is an error.
    fn check_option_fields(&self, r: &RawOption, ty: &str) -> Result<(), ProfileError> {
        let numeric = matches!(ty, "int" | "double");
        for (field, present) in [
            ("min", r.min.is_some()),
            ("max", r.max.is_some()),
            ("step", r.step.is_some()),
        ] {
            if present && !numeric {
                return Err(self.err(
                    &r.kind,
                    format!("`{field}` applies only to int and double options"),
                ));
            }
        }
        if (r.true_value.is_some() || r.false_value.is_some()) && ty != "boolean" {
            return Err(self.err(&r.kind, "`true`/`false` apply only to boolean options"));
        }
        if r.entries.is_some() && ty != "enumeration" {
            return Err(self.err(&r.kind, "`entries` applies only to enumeration options"));
        }
        Ok(())
    }

    /// The default of a text-valued option of type `what`, if one is written.
    fn text_default(&self, r: &RawOption, what: &str) -> Result<Option<String>, ProfileError> {
        match &r.default {
            None => Ok(None),
            Some(d) => match d.get_ref() {
                Value::String(s) => Ok(Some(s.clone())),
                _ => Err(self.err(d, format!("the default of a {what} option is a string"))),
            },
        }
    }

    fn int_option(&self, r: &RawOption) -> Result<OptionKind, ProfileError> {
        let int = |v: &Option<Spanned<Value>>, d: i64, what: &str| match v {
            None => Ok(d),
            Some(s) => s
                .get_ref()
                .as_integer()
                .ok_or_else(|| self.err(s, format!("{what}: an integer"))),
        };
        let (min, max, step) = (
            int(&r.min, 0, "min")?,
            int(&r.max, 99_999_999_999, "max")?,
            int(&r.step, 1, "step")?,
        );
        if min > max || step < 1 {
            return Err(self.err(&r.kind, format!("an int range needs min <= max and step >= 1 (min {min}, max {max}, step {step})")));
        }
        let default = match &r.default {
            None => RangeDefault::Value(min),
            Some(d) => match d.get_ref() {
                Value::String(s) if s == "random" => RangeDefault::Random,
                Value::Integer(v) => {
                    check_int(*v, min, max, step)
                        .map_err(|m| self.err(d, format!("default {m}")))?;
                    RangeDefault::Value(*v)
                }
                _ => {
                    return Err(self.err(
                        d,
                        "the default of an int option is an integer or \"random\"",
                    ));
                }
            },
        };
        Ok(OptionKind::Int {
            min,
            max,
            step,
            default,
        })
    }

    fn double_option(&self, r: &RawOption) -> Result<OptionKind, ProfileError> {
        let num = |v: &Option<Spanned<Value>>, d: f64, what: &str| match v {
            None => Ok(d),
            Some(s) => match s.get_ref() {
                Value::Integer(i) => Ok(*i as f64),
                Value::Float(f) => Ok(*f),
                _ => Err(self.err(s, format!("{what}: a number"))),
            },
        };
        let (min, max) = (
            num(&r.min, 0.0, "min")?,
            num(&r.max, 99_999_999_999.0, "max")?,
        );
        let step = match &r.step {
            None => None,
            Some(_) => Some(num(&r.step, 1.0, "step")?),
        };
        if min > max || step.is_some_and(|s| s <= 0.0 || !s.is_finite()) {
            return Err(self.err(&r.kind, "a double range needs min <= max and step > 0"));
        }
        let default = match &r.default {
            None => RangeDefault::Value(min),
            Some(d) => match d.get_ref() {
                Value::String(s) if s == "random" => RangeDefault::Random,
                v @ (Value::Integer(_) | Value::Float(_)) => {
                    let x = v
                        .as_float()
                        .unwrap_or_else(|| v.as_integer().unwrap_or(0) as f64);
                    check_double(x, min, max, step)
                        .map_err(|m| self.err(d, format!("default {m}")))?;
                    RangeDefault::Value(x)
                }
                _ => {
                    return Err(self.err(
                        d,
                        "the default of a double option is a number or \"random\"",
                    ));
                }
            },
        };
        Ok(OptionKind::Double {
            min,
            max,
            step,
            default,
        })
    }

    fn boolean_option(&self, r: &RawOption) -> Result<OptionKind, ProfileError> {
        let true_value = r.true_value.clone().unwrap_or_else(|| "1".into());
        let false_value = r.false_value.clone().unwrap_or_else(|| "0".into());
        let default = match &r.default {
            None => false,
            Some(d) => match d.get_ref() {
                Value::Boolean(b) => *b,
                Value::String(s) if *s == true_value => true,
                Value::String(s) if *s == false_value => false,
                _ => return Err(self.err(d, format!("the default of a boolean option is true, false, {true_value:?} or {false_value:?}"))),
            },
        };
        Ok(OptionKind::Boolean {
            true_value,
            false_value,
            default,
        })
    }

    fn enumeration_option(&self, r: &RawOption) -> Result<OptionKind, ProfileError> {
        let entries: Vec<EnumEntry> = r
            .entries
            .iter()
            .flatten()
            .map(|e| match e {
                RawEntry::Value(v) => EnumEntry {
                    value: v.clone(),
                    label: v.clone(),
                },
                RawEntry::Full { value, label } => EnumEntry {
                    value: value.clone(),
                    label: label.clone().unwrap_or_else(|| value.clone()),
                },
            })
            .collect();
        if entries.is_empty() {
            return Err(self.err(&r.kind, "an enumeration needs entries = [...]"));
        }
        let default = match (self.text_default(r, "enumeration")?, &r.default) {
            (Some(v), Some(d)) => {
                if !entries.iter().any(|e| e.value == v) {
                    return Err(self.err(
                        d,
                        format!("default {v:?} is not one of the entries' values"),
                    ));
                }
                Some(v)
            }
            _ => Some(entries[0].value.clone()),
        };
        Ok(OptionKind::Enumeration { entries, default })
    }
}

/// Every `${NAME}` in a TOML entry must name a predefined variable, an option or an
/// assigned variable.
fn check_variables(entry: &ServerEntry) -> Result<(), ProfileError> {
    let mut known: BTreeSet<&str> = PREDEFINED.iter().copied().collect();
    known.extend(entry.options.iter().map(|o| o.name.as_str()));
    for a in &entry.assignments {
        match a {
            Assignment::Set { name, .. } => {
                known.insert(name);
            }
            Assignment::Switch { cases, .. } => {
                for c in cases {
                    known.extend(c.sets.iter().map(|(k, _)| k.as_str()));
                }
            }
        }
    }
    let check = |t: &Located<Template>| -> Result<(), ProfileError> {
        for (name, offset) in t.value.variables() {
            if !known.contains(name) {
                let col = t.value.source()[..offset].chars().count() + 1;
                return Err(ProfileError::at(
                    &t.at.shifted(col),
                    format!(
                        "unknown variable `${{{name}}}`: not an option, a `set` variable or a predefined PV_* variable"
                    ),
                ));
            }
        }
        Ok(())
    };
    for (_, t) in &entry.environment {
        check(t)?;
    }
    let mut client_known = known.clone();
    client_known.extend(CLIENT_VARIABLES.iter().copied());
    for t in entry.client.iter().flatten() {
        for (name, offset) in t.value.variables() {
            if !client_known.contains(name) {
                let col = t.value.source()[..offset].chars().count() + 1;
                return Err(ProfileError::at(
                    &t.at.shifted(col),
                    format!(
                        "unknown variable `${{{name}}}` in client: not an option, a `set` variable, a predefined PV_* variable or a PV_LAUNCH_* variable"
                    ),
                ));
            }
        }
    }
    if let Startup::Command(m) = &entry.startup {
        let mut templates: Vec<&Located<Template>> = vec![];
        let mut ssh_settings = None;
        match m {
            Mechanism::LocalDirect { command }
            | Mechanism::SshDirect { command, .. }
            | Mechanism::Batch { command, .. } => {
                if let CommandLine::Argv(argv) = command {
                    templates.extend(argv);
                }
            }
            Mechanism::LocalScript { script, args } | Mechanism::SshScript { script, args, .. } => {
                templates.push(script);
                templates.extend(args);
            }
        }
        if let Mechanism::SshDirect { ssh, .. } | Mechanism::SshScript { ssh, .. } = m {
            ssh_settings = Some(ssh);
        }
        if let Mechanism::Batch { ssh, batch, .. } = m {
            ssh_settings = ssh.as_ref();
            templates.extend(batch.templates().map(|(_, t)| t));
        }
        if let Some(ssh) = ssh_settings {
            templates.extend(&ssh.remote_workdir);
            for t in ssh.host.iter().chain(&ssh.user) {
                if let Text::Template(template) = &t.value {
                    check(&Located::new(template.clone(), t.at.clone()))?;
                }
            }
            templates.extend(ssh.remote_env.iter().map(|(_, t)| t));
        }
        for t in templates {
            check(t)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server `a` at `cs://h` (lines 1-3), then `rest` from line 4 on.
    fn server(rest: &str) -> String {
        format!("[[server]]\nname = \"a\"\nresource = \"cs://h\"\n{rest}")
    }

    fn entry(rest: &str) -> ServerEntry {
        let mut p = load_str(Path::new("p.toml"), &server(rest)).unwrap();
        p.servers.remove(0)
    }

    fn error(rest: &str) -> String {
        load_str(Path::new("p.toml"), &server(rest))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn an_unknown_key_in_a_nested_table_names_its_line_and_column() {
        let e = error(
            "[server.startup]\nmechanism = \"ssh\"\nargv = [\"pvserver\"]\n\
             [server.startup.ssh]\nhost = \"h\"\n  hots = \"typo\"\n",
        );
        assert!(e.starts_with("p.toml:9:3: unknown field `hots`"), "{e}");
    }

    #[test]
    fn a_default_that_does_not_fit_its_option_type_is_refused_at_the_default() {
        let option = |kind_and_default: &str| {
            error(&format!(
                "[[server.option]]\nname = \"X\"\n{kind_and_default}"
            ))
        };
        assert_eq!(
            option("type = \"boolean\"\ntrue = \"yes\"\nfalse = \"no\"\ndefault = \"1\"\n"),
            "p.toml:9:11: the default of a boolean option is true, false, \"yes\" or \"no\""
        );
        assert_eq!(
            option("type = \"enumeration\"\nentries = [\"x\", \"y\"]\ndefault = \"z\"\n"),
            "p.toml:8:11: default \"z\" is not one of the entries' values"
        );
        assert_eq!(
            option("type = \"double\"\ndefault = true\n"),
            "p.toml:7:11: the default of a double option is a number or \"random\""
        );
        assert_eq!(
            option("type = \"file\"\ndefault = 3\n"),
            "p.toml:7:11: the default of a file option is a string"
        );
        // A field of another option type is refused at `type`.
        assert_eq!(
            option("type = \"string\"\nmax = 3\n"),
            "p.toml:6:8: `max` applies only to int and double options"
        );
    }

    #[test]
    fn option_defaults_when_none_is_written() {
        let e = entry(
            "[[server.option]]\nname = \"N\"\ntype = \"int\"\nmin = 2\nmax = 9\n\
             [[server.option]]\nname = \"E\"\ntype = \"enumeration\"\nentries = [{ value = \"q\", label = \"Queue\" }, \"r\"]\n\
             [[server.option]]\nname = \"R\"\ntype = \"double\"\ndefault = \"random\"\n",
        );
        let kinds: Vec<&OptionKind> = e.options.iter().map(|o| &o.kind).collect();
        assert!(
            matches!(
                kinds[0],
                OptionKind::Int {
                    min: 2,
                    max: 9,
                    step: 1,
                    default: RangeDefault::Value(2)
                }
            ),
            "{kinds:?}"
        );
        let OptionKind::Enumeration { entries, default } = kinds[1] else {
            panic!("{kinds:?}")
        };
        assert_eq!(
            (entries[0].label.as_str(), entries[1].label.as_str()),
            ("Queue", "r")
        );
        assert_eq!(default.as_deref(), Some("q"));
        // A random default is never saved as the next run's answer.
        assert!(e.options[0].save && !e.options[2].save);
    }

    #[test]
    fn a_variable_set_only_in_a_switch_case_may_be_used() {
        let e = entry(
            "[server.startup]\nmechanism = \"local\"\nargv = [\"run\", \"--queue=${QUEUE}\"]\n\
             [[server.switch]]\nvariable = \"PV_CLIENT_PLATFORM\"\n\
             [server.switch.cases.Windows]\nQUEUE = \"win\"\n\
             [server.switch.cases.Linux]\nQUEUE = \"lin\"\nEXTRA = \"1\"\n",
        );
        let [
            Assignment::Switch {
                variable,
                cases,
                at,
            },
        ] = e.assignments.as_slice()
        else {
            panic!("{:?}", e.assignments)
        };
        assert_eq!(variable, "PV_CLIENT_PLATFORM");
        assert_eq!(at.to_string(), "p.toml:8:12");
        // Cases in name order (a TOML table), their sets in name order too.
        assert_eq!(cases[0].value, "Linux");
        assert_eq!(
            cases[0].sets,
            [("EXTRA".into(), "1".into()), ("QUEUE".into(), "lin".into())]
        );
        assert_eq!(cases[1].value, "Windows");
    }

    #[test]
    fn a_table_or_field_of_another_mechanism_is_refused_at_the_mechanism() {
        let startup = |body: &str| error(&format!("[server.startup]\n{body}"));
        assert_eq!(
            startup(
                "mechanism = \"local\"\nargv = [\"run\"]\n[server.startup.ssh]\nhost = \"h\"\n"
            ),
            "p.toml:5:13: `ssh` does not apply to mechanism \"local\""
        );
        assert_eq!(
            startup("mechanism = \"ssh-script\"\nscript = \"run.sh\"\n"),
            "p.toml:5:13: an ssh mechanism needs a [server.startup.ssh] table"
        );
        assert_eq!(
            startup("mechanism = \"local-script\"\nscript = \"run.sh\"\nargv = [\"x\"]\n"),
            "p.toml:5:13: `argv` does not apply to mechanism \"local-script\""
        );
        assert_eq!(
            startup("mechanism = \"manual\"\nargs = [\"x\"]\n"),
            "p.toml:5:13: `args` does not apply to mechanism \"manual\""
        );
        assert!(matches!(
            entry("[server.startup]\nmechanism = \"manual\"\n").startup,
            Startup::Manual
        ));
    }

    #[test]
    fn startup_timeouts() {
        let e = entry(
            "[server.startup]\nmechanism = \"local\"\nargv = [\"run\"]\nprocess_start_timeout = 0\ndelay = -1\n",
        );
        assert_eq!(e.timeouts.process_start, None);
        assert_eq!(e.timeouts.delay, Delay::UntilExit);
        assert_eq!(
            error("[server.startup]\nmechanism = \"local\"\nargv = [\"run\"]\ndelay = -2.5\n"),
            "p.toml:7:9: delay: seconds, or -1 to wait for the command to exit"
        );
    }

    #[test]
    fn environment_names_are_checked_in_both_env_tables() {
        assert_eq!(
            error("[server.env]\n\"1X\" = \"v\"\n"),
            "p.toml:5:8: \"1X\" is not a variable name"
        );
        assert_eq!(
            error(
                "[server.startup]\nmechanism = \"ssh\"\nargv = [\"run\"]\n\
                 [server.startup.ssh]\nenv = { \"A-B\" = \"v\" }\n"
            ),
            "p.toml:8:17: \"A-B\" is not a variable name"
        );
    }

    /// A batch entry: `[server.startup]` from line 4, `[server.startup.batch]` from line 7.
    fn batch(table: &str) -> String {
        format!(
            "[server.startup]\nmechanism = \"batch\"\nargv = [\"srv\", \"--port\", \"${{PV_SERVER_PORT}}\"]\n\
             [server.startup.batch]\n{table}"
        )
    }

    #[test]
    fn a_batch_table_loads_with_templates_and_numbers() {
        let e = entry(&batch(
            "nodes = 2\nntasks = \"${N}\"\npartition = \"${Q}\"\ntime = \"1:00:00\"\n\
             queue_timeout = 90\nin_job = \"direct\"\n\
             [[server.option]]\nname = \"N\"\ntype = \"int\"\n\
             [[server.option]]\nname = \"Q\"\ntype = \"string\"\n",
        ));
        let Startup::Command(Mechanism::Batch { ssh, batch, .. }) = &e.startup else {
            panic!("{:?}", e.startup)
        };
        assert!(ssh.is_none());
        assert_eq!(batch.nodes.as_ref().unwrap().value.source(), "2");
        assert_eq!(batch.ntasks.as_ref().unwrap().at.to_string(), "p.toml:9:10");
        assert_eq!(batch.queue_timeout, Some(Duration::from_secs(90)));
        assert_eq!(batch.in_job, crate::startup::batch::InJob::Direct);
    }

    #[test]
    fn batch_table_errors_name_their_place() {
        assert_eq!(
            error(&batch("ntask = 2\n")),
            "p.toml:8:1: unknown field `ntask`, expected one of `scheduler`, `nodes`, `ntasks`, `cpus_per_task`, `partition`, `account`, `time`, `qos`, `constraint`, `gres`, `job_name`, `output`, `extra_options`, `in_job`, `queue_timeout`, `jobs_dir`, `reverse_via`, `reverse_host`"
        );
        assert_eq!(
            error(&batch("nodes = 0\n")),
            "p.toml:8:9: nodes: a number of at least 1, or a \"${VARIABLE}\" template"
        );
        assert_eq!(
            error(&batch("partition = \"${NOPE}\"\n")),
            "p.toml:8:14: unknown variable `${NOPE}`: not an option, a `set` variable or a predefined PV_* variable"
        );
        assert_eq!(
            error(&batch("queue_timeout = -1\n")),
            "p.toml:8:17: queue_timeout: seconds (> 0); leave it out to wait as long as the job is pending"
        );
        assert_eq!(
            error("[server.startup]\nmechanism = \"batch\"\nargv = [\"srv\"]\n"),
            "p.toml:5:13: mechanism \"batch\" needs a [server.startup.batch] table"
        );
        assert_eq!(
            error(
                "[server.startup]\nmechanism = \"local\"\nargv = [\"srv\"]\n[server.startup.batch]\nnodes = 1\n"
            ),
            "p.toml:5:13: `batch` does not apply to mechanism \"local\""
        );
    }
}
