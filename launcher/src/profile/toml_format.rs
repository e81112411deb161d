//! pv-launch's TOML profile format (the reference is in the crate README).
//!
//! Loading is strict: an unknown key, a wrong type, an option default outside its range or
//! an unknown `${VARIABLE}` is an error naming file, line and column, before anything
//! starts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::options::check_int;
use super::*;
use crate::template::{Template, Text, is_variable_name};
use crate::variables::PREDEFINED;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    paraview_version: Option<Spanned<String>>,
    vtk_hash: Option<Spanned<String>>,
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
    connect_timeout: Option<Spanned<toml::Value>>,
    paraview_version: Option<Spanned<String>>,
    vtk_hash: Option<Spanned<String>>,
    startup: Option<Spanned<RawStartup>>,
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
    ssh: Option<Spanned<RawSsh>>,
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
    min: Option<Spanned<toml::Value>>,
    max: Option<Spanned<toml::Value>>,
    step: Option<Spanned<toml::Value>>,
    default: Option<Spanned<toml::Value>>,
    #[serde(rename = "true")]
    true_value: Option<String>,
    #[serde(rename = "false")]
    false_value: Option<String>,
    entries: Option<Vec<RawEntry>>,
    #[serde(default)]
    readonly: bool,
    #[serde(default = "yes")]
    save: bool,
}

fn yes() -> bool {
    true
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
    let loader = Loader { file: &file, text };
    let raw: RawProfile = toml::from_str(text).map_err(|e| {
        let at = SourcePos::at_offset(&file, text, e.span().map_or(0, |s| s.start));
        ProfileError::at(&at, e.message().trim_end().to_string())
    })?;
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
        let mut resource = Resource::parse(raw.resource.get_ref()).map_err(|e| {
            ProfileError::at(&self.pos_in_string(&raw.resource, e.offset), e.message)
        })?;
        if let Some(tls) = raw.tls {
            if resource == Resource::Builtin && tls {
                return Err(self.err(&raw.resource, "TLS does not apply to builtin:"));
            }
            let was_tls = resource.is_tls();
            resource = resource.with_tls(tls || was_tls);
        }
        let paraview_version = match &raw.paraview_version {
            Some(v) => self.version(v)?,
            None => default_version.clone(),
        };
        let vtk_hash = match &raw.vtk_hash {
            Some(h) => self.vtk_hash(h)?,
            None => default_hash.to_string(),
        };
        let handshake = match raw.handshake.as_ref().map(|h| (h, h.get_ref().as_str())) {
            None | Some((_, "native")) => Handshake::Native,
            Some((_, "paraview")) => Handshake::ParaView { vtk_hash },
            Some((_, "none")) => Handshake::None,
            Some((h, other)) => {
                return Err(self.err(
                    h,
                    format!("handshake {other:?}: expected \"native\", \"paraview\" or \"none\""),
                ));
            }
        };
        let mut timeouts = Timeouts::default();
        if let Some(c) = &raw.connect_timeout {
            timeouts.connect = self.connect_timeout(c)?;
        }
        let options = raw
            .option
            .iter()
            .map(|o| self.option(o))
            .collect::<Result<Vec<_>, _>>()?;
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
        let environment = raw
            .env
            .iter()
            .map(|(k, v)| {
                self.check_name(k, v)?;
                Ok((k.clone(), self.template(v)?))
            })
            .collect::<Result<Vec<_>, ProfileError>>()?;
        let startup = match &raw.startup {
            None => Startup::Manual,
            Some(st) => self.startup(st, &mut timeouts)?,
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
        };
        check_variables(&entry)?;
        Ok(entry)
    }

    fn check_name(&self, name: &str, value: &Spanned<String>) -> Result<(), ProfileError> {
        if is_variable_name(name) {
            Ok(())
        } else {
            Err(self.err(value, format!("{name:?} is not a variable name")))
        }
    }

    /// `secs` seconds, or an error at `at` when no [`Duration`] holds them (nan, inf, too
    /// large), which `Duration::from_secs_f64` would panic on.
    fn seconds<T>(&self, at: &Spanned<T>, secs: f64) -> Result<Duration, ProfileError> {
        Duration::try_from_secs_f64(secs)
            .map_err(|_| self.err(at, format!("{secs:?} is not a usable number of seconds")))
    }

    fn connect_timeout(&self, c: &Spanned<toml::Value>) -> Result<ConnectTimeout, ProfileError> {
        let secs = match c.get_ref() {
            toml::Value::String(s) if s == "forever" => return Ok(ConnectTimeout::Forever),
            toml::Value::Integer(i) => *i as f64,
            toml::Value::Float(f) => *f,
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

    fn startup(
        &self,
        st: &Spanned<RawStartup>,
        timeouts: &mut Timeouts,
    ) -> Result<Startup, ProfileError> {
        let r = st.get_ref();
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
        let mech = r.mechanism.get_ref().as_str();
        let argv = |what: &str| -> Result<CommandLine, ProfileError> {
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
        };
        let script =
            |what: &str| -> Result<(Located<Template>, Vec<Located<Template>>), ProfileError> {
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
            };
        let ssh = || -> Result<SshSettings, ProfileError> {
            let Some(s) = &r.ssh else {
                return Err(self.err(
                    &r.mechanism,
                    "an ssh mechanism needs a [server.startup.ssh] table",
                ));
            };
            self.ssh(s)
        };
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
        wrong("ssh", r.ssh.is_none() || mech.starts_with("ssh"))?;
        let mechanism = match mech {
            "manual" => return Ok(Startup::Manual),
            "local" => Mechanism::LocalDirect {
                command: argv(mech)?,
            },
            "local-script" => {
                let (script, args) = script(mech)?;
                Mechanism::LocalScript { script, args }
            }
            "ssh" => Mechanism::SshDirect {
                ssh: ssh()?,
                command: argv(mech)?,
            },
            "ssh-script" => {
                let (script, args) = script(mech)?;
                Mechanism::SshScript {
                    ssh: ssh()?,
                    script,
                    args,
                }
            }
            other => {
                return Err(self.err(
                    &r.mechanism,
                    format!("mechanism {other:?}: expected \"manual\", \"local\", \"local-script\", \"ssh\" or \"ssh-script\""),
                ));
            }
        };
        Ok(Startup::Command(mechanism))
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
            remote_env: r
                .env
                .iter()
                .map(|(k, v)| {
                    self.check_name(k, v)?;
                    Ok((k.clone(), self.template(v)?))
                })
                .collect::<Result<_, ProfileError>>()?,
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

    fn option(&self, o: &Spanned<RawOption>) -> Result<OptionSpec, ProfileError> {
        let r = o.get_ref();
        let name = r.name.get_ref().clone();
        if !is_variable_name(&name) {
            return Err(self.err(&r.name, format!("{name:?} is not a variable name")));
        }
        let ty = r.kind.get_ref().as_str();
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
        let text_default = |what: &str| -> Result<Option<String>, ProfileError> {
            match &r.default {
                None => Ok(None),
                Some(d) => match d.get_ref() {
                    toml::Value::String(s) => Ok(Some(s.clone())),
                    _ => Err(self.err(d, format!("the default of a {what} option is a string"))),
                },
            }
        };
        let kind = match ty {
            "int" => {
                let int = |v: &Option<Spanned<toml::Value>>, d: i64, what: &str| match v {
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
                        toml::Value::String(s) if s == "random" => RangeDefault::Random,
                        toml::Value::Integer(v) => {
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
                OptionKind::Int {
                    min,
                    max,
                    step,
                    default,
                }
            }
            "double" => {
                let num = |v: &Option<Spanned<toml::Value>>, d: f64, what: &str| match v {
                    None => Ok(d),
                    Some(s) => match s.get_ref() {
                        toml::Value::Integer(i) => Ok(*i as f64),
                        toml::Value::Float(f) => Ok(*f),
                        _ => Err(self.err(s, format!("{what}: a number"))),
                    },
                };
                let (min, max, step) = (
                    num(&r.min, 0.0, "min")?,
                    num(&r.max, 99_999_999_999.0, "max")?,
                    num(&r.step, 1.0, "step")?,
                );
                if min > max || step <= 0.0 {
                    return Err(self.err(&r.kind, "a double range needs min <= max and step > 0"));
                }
                let default = match &r.default {
                    None => RangeDefault::Value(min),
                    Some(d) => match d.get_ref() {
                        toml::Value::String(s) if s == "random" => RangeDefault::Random,
                        v @ (toml::Value::Integer(_) | toml::Value::Float(_)) => {
                            let x = v
                                .as_float()
                                .unwrap_or_else(|| v.as_integer().unwrap_or(0) as f64);
                            if x < min || x > max {
                                return Err(
                                    self.err(d, format!("default {x} is outside {min}..={max}"))
                                );
                            }
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
                OptionKind::Double {
                    min,
                    max,
                    step,
                    default,
                }
            }
            "string" => OptionKind::String {
                default: text_default(ty)?,
            },
            "password" => OptionKind::Password {
                default: text_default(ty)?,
            },
            "file" => OptionKind::File {
                default: text_default(ty)?,
            },
            "boolean" => {
                let true_value = r.true_value.clone().unwrap_or_else(|| "1".into());
                let false_value = r.false_value.clone().unwrap_or_else(|| "0".into());
                let default = match &r.default {
                    None => false,
                    Some(d) => match d.get_ref() {
                        toml::Value::Boolean(b) => *b,
                        toml::Value::String(s) if *s == true_value => true,
                        toml::Value::String(s) if *s == false_value => false,
                        _ => return Err(self.err(d, format!("the default of a boolean option is true, false, {true_value:?} or {false_value:?}"))),
                    },
                };
                OptionKind::Boolean {
                    true_value,
                    false_value,
                    default,
                }
            }
            "enumeration" => {
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
                let default = match (text_default(ty)?, &r.default) {
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
                OptionKind::Enumeration { entries, default }
            }
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
        Ok(OptionSpec {
            label: r.label.clone().unwrap_or_else(|| name.clone()),
            name,
            kind,
            readonly: r.readonly,
            save: r.save && !is_random,
            at: self.pos(o),
        })
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
    if let Startup::Command(m) = &entry.startup {
        let mut templates: Vec<&Located<Template>> = vec![];
        let mut ssh_settings = None;
        match m {
            Mechanism::LocalDirect { command } | Mechanism::SshDirect { command, .. } => {
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
