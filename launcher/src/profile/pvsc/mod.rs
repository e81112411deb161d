//! ParaView `.pvsc` server files, loaded as they are into the profile model.
//!
//! Lenient where ParaView is lenient: unknown elements are warnings, only the first element
//! inside an `<Option>` is its type, `<Argument>` may be spelt differently. Strict where
//! ParaView silently does harm: malformed XML, a missing `<Servers>` root, an unknown option
//! type (ParaView drops the option, and `$NAME$` then expands to the bare name), a default
//! outside its range (ParaView clamps it), an enumeration without entries (ParaView offers
//! nothing to choose), a server without startup, and a self-referencing variable (ParaView
//! hangs) are errors with line and column.
//!
//! `<Terminal>` and `<Askpass>` both become pv-askpass: ssh runs with `SSH_ASKPASS` set to
//! `pv-askpass` and `SSH_ASKPASS_REQUIRE=force`, so every prompt (password, passphrase,
//! one-time code, host key) appears as a dialog, or on the terminal without a display.
//! A terminal emulator is not started: it would own ssh's standard streams, which
//! pv-launch needs for the launch channel and for supervision, and its exit status and
//! lifetime say nothing about ssh's.

pub mod import;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pv_transport::{Direction, Resource};
use roxmltree::{Document, Node};

use crate::profile::error::ProfileError;
use crate::profile::model::*;
use crate::profile::options::{
    EnumEntry, OptionKind, OptionSpec, RangeDefault, check_double, check_int,
};
use crate::source::{Located, SourcePos, Warning};
use crate::template::Text;

/// Load a `.pvsc` file from `text`, the contents of `path`.
pub fn load_str(path: &Path, text: &str) -> Result<Profile, ProfileError> {
    let file = Arc::new(path.to_path_buf());
    let doc = Document::parse(text).map_err(|e| {
        let p = e.pos();
        ProfileError::at(
            &SourcePos::new(&file, p.row, p.col),
            format!("malformed XML: {e}"),
        )
    })?;
    let loader = Loader {
        file: &file,
        doc: &doc,
        warnings: std::cell::RefCell::new(vec![]),
    };
    let root = doc.root_element();
    if !root.has_tag_name("Servers") {
        return Err(loader.err(
            root,
            format!(
                "not a ParaView server configuration file: the root element is <{}>, expected <Servers>",
                root.tag_name().name()
            ),
        ));
    }
    let mut servers: Vec<ServerEntry> = Vec::new();
    for child in root.children().filter(Node::is_element) {
        if !child.has_tag_name("Server") {
            loader.warn(
                child,
                format!("ignoring <{}> under <Servers>", child.tag_name().name()),
            );
            continue;
        }
        if let Some(entry) = loader.server(child)? {
            if let Some(i) = servers.iter().position(|s| s.name == entry.name) {
                loader.warn(
                    child,
                    format!(
                        "a second server named {:?} replaces the first, as in ParaView",
                        entry.name
                    ),
                );
                servers.remove(i);
            }
            servers.push(entry);
        }
    }
    if servers.is_empty() {
        return Err(loader.err(
            root,
            "the file defines no server that pv-launch can start (builtin: entries are skipped)",
        ));
    }
    let warnings = loader.warnings.into_inner();
    Ok(Profile {
        path: path.to_path_buf(),
        format: ProfileFormat::Pvsc,
        servers,
        warnings,
    })
}

struct Loader<'a, 'input> {
    file: &'a Arc<PathBuf>,
    doc: &'a Document<'input>,
    warnings: std::cell::RefCell<Vec<Warning>>,
}

type N<'a, 'input> = Node<'a, 'input>;

impl<'a, 'input> Loader<'a, 'input> {
    fn pos(&self, node: N) -> SourcePos {
        let p = self.doc.text_pos_at(node.range().start);
        SourcePos::new(self.file, p.row, p.col)
    }

    fn attr_pos(&self, node: N, name: &str) -> SourcePos {
        match node.attributes().find(|a| a.name() == name) {
            Some(a) => {
                let p = self.doc.text_pos_at(a.range_value().start);
                SourcePos::new(self.file, p.row, p.col)
            }
            None => self.pos(node),
        }
    }

    fn err(&self, node: N, message: impl Into<String>) -> ProfileError {
        ProfileError::at(&self.pos(node), message)
    }

    fn attr_err(&self, node: N, attr: &str, message: impl Into<String>) -> ProfileError {
        ProfileError::at(&self.attr_pos(node, attr), message)
    }

    /// `secs` seconds, or an error at `attr` when no [`Duration`] holds them (NaN, infinite,
    /// too large), which `Duration::from_secs_f64` would panic on.
    fn seconds(&self, node: N, attr: &str, secs: f64) -> Result<Duration, ProfileError> {
        Duration::try_from_secs_f64(secs).map_err(|_| {
            self.attr_err(
                node,
                attr,
                format!("{attr}: {secs:?} is not a usable number of seconds"),
            )
        })
    }

    fn warn(&self, node: N, message: impl Into<String>) {
        self.warnings
            .borrow_mut()
            .push(Warning::at(&self.pos(node), message));
    }

    fn located(&self, node: N, attr: &str) -> Option<Located<String>> {
        node.attribute(attr)
            .map(|v| Located::new(v.to_string(), self.attr_pos(node, attr)))
    }

    fn number(&self, node: N, attr: &str) -> Result<Option<f64>, ProfileError> {
        node.attribute(attr)
            .map(|v| {
                v.trim()
                    .parse::<f64>()
                    .map_err(|_| self.attr_err(node, attr, format!("{attr}={v:?} is not a number")))
            })
            .transpose()
    }

    fn server(&self, node: N) -> Result<Option<ServerEntry>, ProfileError> {
        let name = match node.attribute("name") {
            Some(n) => n.to_string(),
            None => {
                self.warn(
                    node,
                    "<Server> without a name: ParaView calls it \"unknown\"",
                );
                "unknown".to_string()
            }
        };
        let Some(resource_text) = node.attribute("resource") else {
            return Err(self.err(node, format!("server {name:?} has no resource attribute")));
        };
        let resource = Resource::parse(resource_text).map_err(|e| {
            ProfileError::at(
                &self.attr_pos(node, "resource").shifted(e.offset),
                format!("{}\n{}", e.message, e.pointer()),
            )
        })?;
        if resource == Resource::Builtin {
            self.warn(node, format!("skipping server {name:?}: builtin: entries are ignored in files, as ParaView does"));
            return Ok(None);
        }
        let mut timeouts = Timeouts {
            connect: match resource.direction() {
                Some(Direction::Reverse) => ConnectTimeout::Forever,
                _ => ConnectTimeout::Within(Duration::from_secs(60)),
            },
            ..Timeouts::default()
        };
        if let Some(t) = self.number(node, "timeout")? {
            timeouts.connect = if t < 0.0 {
                ConnectTimeout::Forever
            } else if t == 0.0 {
                ConnectTimeout::OneAttempt
            } else {
                ConnectTimeout::Within(self.seconds(node, "timeout", t)?)
            };
        }
        for child in node.children().filter(Node::is_element) {
            let n = child.tag_name().name();
            if !matches!(n, "ManualStartup" | "CommandStartup" | "Hints") {
                self.warn(child, format!("ignoring <{n}> under <Server>"));
            }
        }
        let manual = first_child(node, "ManualStartup");
        let command = first_child(node, "CommandStartup");
        let (startup_node, startup) = match (manual, command) {
            (Some(m), c) => {
                if c.is_some() {
                    self.warn(m, "both <ManualStartup> and <CommandStartup>: ManualStartup wins, as in ParaView");
                }
                (m, Startup::Manual)
            }
            (None, Some(c)) => (
                c,
                Startup::Command(self.command_startup(c, &name, &mut timeouts)?),
            ),
            (None, None) => {
                return Err(self.err(
                    node,
                    format!("server {name:?} has neither <ManualStartup/> nor <CommandStartup>"),
                ));
            }
        };
        let mut options = vec![];
        let mut assignments = vec![];
        if let Some(opts) = first_child(startup_node, "Options") {
            self.options(opts, &mut options, &mut assignments)?;
        }
        Ok(Some(ServerEntry {
            name,
            at: self.pos(node),
            resource: Located::new(resource, self.attr_pos(node, "resource")),
            startup,
            options,
            assignments,
            environment: vec![],
            timeouts,
            handshake: Handshake::ParaView {
                vtk_hash: DEFAULT_VTK_HASH.to_string(),
            },
            paraview_version: ParaViewVersion::default(),
            ready_pattern: None,
            client: None,
        }))
    }

    fn command_startup(
        &self,
        node: N,
        server: &str,
        timeouts: &mut Timeouts,
    ) -> Result<Mechanism, ProfileError> {
        let (cmd, ssh_config) = self.command_element(node, server)?;
        let Some(exec) = self
            .located(cmd, "exec")
            .filter(|e| !e.value.trim().is_empty())
        else {
            return Err(self.err(
                cmd,
                format!(
                    "<{}> needs a non-empty exec attribute",
                    cmd.tag_name().name()
                ),
            ));
        };
        self.command_timeouts(cmd, timeouts)?;
        let arguments = self.arguments(cmd);
        let command = CommandLine::ParaViewLine { exec, arguments };
        match ssh_config {
            None => Ok(Mechanism::LocalDirect { command }),
            Some(cfg) => Ok(Mechanism::SshDirect {
                ssh: self.ssh_config(cfg)?,
                command,
            }),
        }
    }

    /// The element under `<CommandStartup>` that holds the command: `<SSHCommand>` (with
    /// its `<SSHConfig>`) when it is complete, else `<Command>`, as ParaView chooses.
    fn command_element<'n, 'i>(
        &self,
        node: N<'n, 'i>,
        server: &str,
    ) -> Result<(N<'n, 'i>, Option<N<'n, 'i>>), ProfileError> {
        for child in node.children().filter(Node::is_element) {
            let n = child.tag_name().name();
            if !matches!(n, "Options" | "Command" | "SSHCommand") {
                self.warn(child, format!("ignoring <{n}> under <CommandStartup>"));
            }
        }
        let ssh = first_child(node, "SSHCommand");
        let ssh_config = ssh.and_then(|s| first_child(s, "SSHConfig"));
        match (ssh, ssh_config, first_child(node, "Command")) {
            (Some(s), Some(cfg), _) => Ok((s, Some(cfg))),
            (Some(s), None, Some(c)) => {
                self.warn(s, "<SSHCommand> without <SSHConfig> is not treated as ssh; using <Command>, as ParaView does");
                Ok((c, None))
            }
            (Some(s), None, None) => {
                Err(self.err(s, "<SSHCommand> needs an <SSHConfig> child (ParaView: \"Could not determine command to launch the server\")"))
            }
            (None, _, Some(c)) => Ok((c, None)),
            (None, _, None) => Err(self.err(
                node,
                format!("server {server:?}: <CommandStartup> has no <Command> or <SSHCommand>"),
            )),
        }
    }

    /// The command's `process_wait` (or the deprecated `timeout`) and `delay`.
    fn command_timeouts(&self, cmd: N, timeouts: &mut Timeouts) -> Result<(), ProfileError> {
        let process_wait = match (
            self.number(cmd, "process_wait")?,
            self.number(cmd, "timeout")?,
        ) {
            (Some(w), t) => {
                if t.is_some() {
                    self.warn(
                        cmd,
                        "both process_wait and the deprecated timeout: process_wait wins",
                    );
                }
                Some(w)
            }
            (None, Some(t)) => {
                self.warn(cmd, "the timeout attribute is deprecated: it means process_wait (seconds to wait for the process to start)");
                Some(t)
            }
            (None, None) => None,
        };
        timeouts.process_start = match process_wait {
            Some(w) if w > 0.0 => Some(self.seconds(cmd, "process_wait", w)?),
            _ => None,
        };
        timeouts.delay = match self.number(cmd, "delay")? {
            None => Delay::None,
            Some(-1.0) => Delay::UntilExit,
            Some(d) if d < 0.0 => {
                self.warn(
                    cmd,
                    format!("delay={d}: only -1 has a meaning below 0; not waiting"),
                );
                Delay::None
            }
            Some(0.0) => Delay::None,
            Some(d) => Delay::Wait(self.seconds(cmd, "delay", d)?),
        };
        Ok(())
    }

    /// The command's `<Arguments>` values, leniently as ParaView reads them; then a warning
    /// for each other element under the command.
    fn arguments(&self, cmd: N) -> Vec<Located<String>> {
        let mut arguments = vec![];
        if let Some(args) = first_child(cmd, "Arguments") {
            for a in args.children().filter(Node::is_element) {
                if !a.has_tag_name("Argument") {
                    self.warn(a, format!("<{}> inside <Arguments>: its value is used all the same, as in ParaView", a.tag_name().name()));
                }
                if let Some(v) = self.located(a, "value") {
                    arguments.push(v);
                } else {
                    self.warn(
                        a,
                        "an argument without a value attribute is skipped, as in ParaView",
                    );
                }
            }
        }
        for child in cmd.children().filter(Node::is_element) {
            let n = child.tag_name().name();
            if !matches!(n, "Arguments" | "SSHConfig") {
                self.warn(
                    child,
                    format!("ignoring <{n}> under <{}>", cmd.tag_name().name()),
                );
            }
        }
        arguments
    }

    fn ssh_config(&self, cfg: N) -> Result<SshSettings, ProfileError> {
        let user = self
            .located(cfg, "user")
            .filter(|u| !u.value.is_empty())
            .map(|u| Located::new(Text::ParaView(u.value), u.at));
        let port = match cfg.attribute("port") {
            None => None,
            Some(p) => Some(p.trim().parse::<u16>().map_err(|_| {
                self.attr_err(cfg, "port", format!("ssh port {p:?} is not a port number"))
            })?),
        };
        let mut settings = SshSettings {
            host: None,
            user,
            port,
            jump_hosts: vec![],
            identity_file: None,
            extra_options: vec![],
            program: None,
            backend: SshBackend::Openssh,
            remote_workdir: None,
            remote_env: vec![],
            port_forwarding: None,
            prompts: SshPrompts::Askpass,
        };
        for child in cfg.children().filter(Node::is_element) {
            match child.tag_name().name() {
                "SSH" => settings.program = child.attribute("exec").filter(|e| !e.is_empty()).map(str::to_string),
                "Terminal" => self.warn(child, "<Terminal>: pv-launch does not open a terminal window; pv-askpass answers ssh's prompts instead"),
                "Askpass" => {}
                "PortForwarding" => {
                    let local = match child.attribute("local") {
                        None => None,
                        Some("$PV_SERVER_PORT$") => {
                            self.warn(child, "local=\"$PV_SERVER_PORT$\" is deprecated (ParaView 5.13.2): the local port is the resource's port");
                            None
                        }
                        Some(l) => Some(l.trim().parse::<u16>().map_err(|_| {
                            self.attr_err(child, "local", format!("local port {l:?} is not a port number"))
                        })?),
                    };
                    settings.port_forwarding = Some(PortForwarding { local_port: local });
                }
                other => self.warn(child, format!("ignoring <{other}> under <SSHConfig>")),
            }
        }
        Ok(settings)
    }

    fn options(
        &self,
        node: N,
        options: &mut Vec<OptionSpec>,
        assignments: &mut Vec<Assignment>,
    ) -> Result<(), ProfileError> {
        for child in node.children().filter(Node::is_element) {
            match child.tag_name().name() {
                "Option" => {
                    if let Some(o) = self.option(child)? {
                        if let Some(i) = options.iter().position(|p| p.name == o.name) {
                            self.warn(
                                child,
                                format!("a second option named {:?} replaces the first", o.name),
                            );
                            options.remove(i);
                        }
                        options.push(o);
                    }
                }
                "Set" => match (child.attribute("name"), child.attribute("value")) {
                    (Some(name), value) => assignments.push(Assignment::Set {
                        name: name.to_string(),
                        value: value.unwrap_or("").to_string(),
                        at: self.pos(child),
                    }),
                    (None, _) => self.warn(child, "<Set> without a name is ignored"),
                },
                "Switch" => {
                    let Some(variable) = child.attribute("name") else {
                        self.warn(child, "<Switch> without a name is ignored, as in ParaView");
                        continue;
                    };
                    let mut cases = vec![];
                    for c in child.children().filter(Node::is_element) {
                        if !c.has_tag_name("Case") {
                            self.warn(
                                c,
                                "<Switch> can only contain <Case> elements; ignoring this one",
                            );
                            continue;
                        }
                        let Some(value) = c.attribute("value") else {
                            self.warn(c, "<Case> without a value never matches");
                            continue;
                        };
                        let mut sets = vec![];
                        for s in c.children().filter(Node::is_element) {
                            if s.has_tag_name("Set") {
                                sets.push((
                                    s.attribute("name").unwrap_or("").to_string(),
                                    s.attribute("value").unwrap_or("").to_string(),
                                ));
                            } else {
                                self.warn(
                                    s,
                                    format!(
                                        "<Case> can only contain <Set> elements, not <{}>",
                                        s.tag_name().name()
                                    ),
                                );
                            }
                        }
                        cases.push(SwitchCase {
                            value: value.to_string(),
                            sets,
                        });
                    }
                    assignments.push(Assignment::Switch {
                        variable: variable.to_string(),
                        cases,
                        at: self.pos(child),
                    });
                }
                other => self.warn(child, format!("ignoring <{other}> under <Options>")),
            }
        }
        Ok(())
    }

    fn option(&self, node: N) -> Result<Option<OptionSpec>, ProfileError> {
        let Some(name) = node.attribute("name").filter(|n| !n.is_empty()) else {
            return Err(self.err(node, "<Option> needs a name attribute"));
        };
        let Some(ty) = node.children().find(Node::is_element) else {
            self.warn(
                node,
                format!("option {name:?} has no type element and is ignored, as in ParaView"),
            );
            return Ok(None);
        };
        let default = ty.attribute("default");
        let is_random = default == Some("random");
        let kind = match ty.tag_name().name() {
            "Range" => self.range(ty, default)?,
            "String" => OptionKind::String {
                default: default.map(str::to_string),
            },
            "Password" => OptionKind::Password {
                default: default.map(str::to_string),
            },
            "File" => OptionKind::File {
                default: default.map(str::to_string),
            },
            "Boolean" => {
                let true_value = ty.attribute("true").unwrap_or("1").to_string();
                let false_value = ty.attribute("false").unwrap_or("0").to_string();
                OptionKind::Boolean {
                    default: default == Some(true_value.as_str()),
                    true_value,
                    false_value,
                }
            }
            "Enumeration" => {
                let mut entries = vec![];
                for e in ty.children().filter(Node::is_element) {
                    if e.has_tag_name("Entry") {
                        let value = e.attribute("value").unwrap_or("").to_string();
                        let label = e
                            .attribute("label")
                            .map_or_else(|| value.clone(), str::to_string);
                        entries.push(EnumEntry { value, label });
                    } else {
                        self.warn(
                            e,
                            format!("ignoring <{}> inside <Enumeration>", e.tag_name().name()),
                        );
                    }
                }
                // ParaView shows an empty list and the value is always empty; a TOML
                // profile (and so `pv-launch import`) cannot express that either.
                if entries.is_empty() {
                    return Err(self.err(ty, format!("<Enumeration> of option {name:?} has no <Entry>: ParaView would offer nothing to choose and ${name}$ would always be empty")));
                }
                let default = match default {
                    Some(d) if entries.iter().any(|e| e.value == d) => Some(d.to_string()),
                    Some(d) => {
                        let hint = if entries.iter().any(|e| e.label == d) {
                            " (it is a label, not a value)"
                        } else {
                            ""
                        };
                        self.warn(ty, format!("default {d:?} matches no entry value{hint}: ParaView selects nothing and {name} is empty"));
                        None
                    }
                    None => None,
                };
                OptionKind::Enumeration { entries, default }
            }
            other => {
                return Err(self.err(ty, format!(
                    "unknown option type <{other}> for option {name:?}: expected Range, String, Password, File, Boolean or Enumeration (ParaView would drop the option and ${name}$ would expand to the bare name)"
                )));
            }
        };
        for extra in node.children().filter(Node::is_element).skip(1) {
            self.warn(
                extra,
                format!(
                    "only the first element inside <Option> is its type; ignoring <{}>",
                    extra.tag_name().name()
                ),
            );
        }
        // A password is never written to disk, whatever `save` says.
        let save =
            node.attribute("save").unwrap_or("true") == "true" && !is_random && !kind.is_secret();
        Ok(Some(OptionSpec {
            name: name.to_string(),
            label: node.attribute("label").unwrap_or(name).to_string(),
            kind,
            readonly: node.attribute("readonly") == Some("true"),
            save,
            at: self.pos(node),
        }))
    }

    fn range(&self, ty: N, default: Option<&str>) -> Result<OptionKind, ProfileError> {
        let is_int = match ty.attribute("type").unwrap_or("int") {
            "int" => true,
            "double" => false,
            other => {
                self.warn(
                    ty,
                    format!("Range type {other:?} is treated as double, as in ParaView"),
                );
                false
            }
        };
        let text = |a: &str, d: &str| ty.attribute(a).unwrap_or(d).trim().to_string();
        if is_int {
            let int = |a: &str, d: &str| -> Result<i64, ProfileError> {
                text(a, d).parse::<i64>().map_err(|_| {
                    self.attr_err(ty, a, format!("{a}={:?} is not an integer", text(a, d)))
                })
            };
            let (min, max, step) = (
                int("min", "0")?,
                int("max", "99999999999")?,
                int("step", "1")?,
            );
            if min > max || step < 1 {
                return Err(self.err(ty, format!("an int Range needs min <= max and step >= 1 (min {min}, max {max}, step {step})")));
            }
            let default = match default {
                None => RangeDefault::Value(min),
                Some("random") => RangeDefault::Random,
                Some(d) => {
                    let v = d.trim().parse::<i64>().map_err(|_| {
                        self.attr_err(
                            ty,
                            "default",
                            format!("default {d:?} is not an integer or \"random\""),
                        )
                    })?;
                    check_int(v, min, max, step).map_err(|m| {
                        self.attr_err(
                            ty,
                            "default",
                            format!("default {m} (ParaView would silently clamp it)"),
                        )
                    })?;
                    RangeDefault::Value(v)
                }
            };
            Ok(OptionKind::Int {
                min,
                max,
                step,
                default,
            })
        } else {
            let num = |a: &str, d: &str| -> Result<f64, ProfileError> {
                text(a, d).parse::<f64>().map_err(|_| {
                    self.attr_err(ty, a, format!("{a}={:?} is not a number", text(a, d)))
                })
            };
            let (min, max) = (num("min", "0")?, num("max", "99999999999")?);
            // ParaView steps a double only in its widget: a written step is kept (and
            // checked, as an int's is); none means any value in the range.
            let step = match ty.attribute("step") {
                None => None,
                Some(_) => Some(num("step", "1")?),
            };
            if min > max || step.is_some_and(|s| s <= 0.0 || !s.is_finite()) {
                return Err(self.err(ty, "a double Range needs min <= max and step > 0"));
            }
            let default = match default {
                None => RangeDefault::Value(min),
                Some("random") => RangeDefault::Random,
                Some(d) => {
                    let v = d.trim().parse::<f64>().map_err(|_| {
                        self.attr_err(
                            ty,
                            "default",
                            format!("default {d:?} is not a number or \"random\""),
                        )
                    })?;
                    if v < min || v > max {
                        return Err(self.attr_err(ty, "default", format!("default {v} is outside {min}..={max} (ParaView would silently clamp it)")));
                    }
                    check_double(v, min, max, step)
                        .map_err(|m| self.attr_err(ty, "default", format!("default {m}")))?;
                    RangeDefault::Value(v)
                }
            };
            Ok(OptionKind::Double {
                min,
                max,
                step,
                default,
            })
        }
    }
}

fn first_child<'a, 'input>(node: N<'a, 'input>, name: &str) -> Option<N<'a, 'input>> {
    node.children()
        .find(|c| c.is_element() && c.has_tag_name(name))
}
