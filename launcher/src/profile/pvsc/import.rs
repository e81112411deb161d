//! `pv-launch import`: write a `.pvsc` profile as an equivalent TOML profile, with
//! comments where ParaView's semantics cannot be expressed exactly.
//!
//! The one difference that matters: ParaView re-splits the substituted command line, so a
//! value with spaces becomes several arguments and an empty value disappears; TOML argv
//! elements are never re-split. `$NAME$` becomes `${NAME}` for options, sets and
//! predefined variables, and `${env:NAME}` for anything else (ParaView read pv-launch's
//! environment there, and used the bare name when the variable was unset).

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::profile::model::*;
use crate::profile::options::{EnumEntry, OptionKind, OptionSpec, RangeDefault};
use crate::template::paraview_line::{analyse_arguments, first_placeholder};
use crate::template::{Text, is_variable_name};

/// A TOML basic string.
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Convert ParaView `$NAME$` text into a `${NAME}` template source.
fn convert(text: &str, known: &BTreeSet<String>, notes: &mut Vec<String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some((range, name)) = first_placeholder(rest) {
        out.push_str(&rest[..range.start].replace('$', "$$"));
        if known.contains(name) {
            let _ = write!(out, "${{{name}}}");
        } else if is_variable_name(name) {
            notes.push(format!("${name}$ read pv-launch's environment (bare name {name:?} when unset); now ${{env:{name}}}, an error when unset"));
            let _ = write!(out, "${{env:{name}}}");
        } else {
            notes.push(format!("${name}$ is not a variable name pv-launch accepts; kept as literal text {name:?}, which is what ParaView substitutes for an unknown name"));
            out.push_str(&name.replace('$', "$$"));
        }
        rest = &rest[range.end..];
    }
    out.push_str(&rest.replace('$', "$$"));
    out
}

fn seconds(d: &std::time::Duration) -> String {
    crate::profile::options::format_double(d.as_secs_f64())
}

/// The TOML text for `profile` (loaded from a `.pvsc` file).
pub fn to_toml(profile: &Profile) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# Imported by pv-launch from {}",
        comment(&profile.path.display().to_string())
    );
    let _ = writeln!(
        w,
        "# ParaView re-split its command lines after substitution (a value with spaces became"
    );
    let _ = writeln!(
        w,
        "# several arguments, an empty value vanished); here every argv element stays one argument."
    );
    let _ = writeln!(
        w,
        "paraview_version = {}",
        toml_string(DEFAULT_PARAVIEW_VERSION)
    );
    for s in &profile.servers {
        server(w, s);
    }
    out
}

/// `text` made fit for a TOML comment, which ends at a newline and may hold no other
/// control character: those are written as escapes (`\n`, `\u{7f}`).
fn comment(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn server(w: &mut String, s: &ServerEntry) {
    let known = known_names(s);
    let mut notes = vec![];
    let _ = writeln!(w, "\n[[server]]");
    let _ = writeln!(w, "name = {}", toml_string(&s.name));
    let _ = writeln!(
        w,
        "resource = {}",
        toml_string(&s.resource.value.to_string())
    );
    let _ = writeln!(w, "handshake = \"paraview\"");
    let _ = writeln!(
        w,
        "connect_timeout = {}",
        match &s.timeouts.connect {
            ConnectTimeout::OneAttempt => "0".to_string(),
            ConnectTimeout::Within(d) => seconds(d),
            ConnectTimeout::Forever => "\"forever\"".to_string(),
        }
    );
    // The body is written first because converting it collects the notes, which go
    // above it.
    let mut body = String::new();
    if let Startup::Command(m) = &s.startup {
        let defaults = default_values(s);
        let lookup = |name: &str| {
            defaults
                .get(name)
                .cloned()
                .unwrap_or_else(|| name.to_string())
        };
        startup(&mut body, m, &s.timeouts, &known, &lookup, &mut notes);
    }
    sets(&mut body, &s.assignments);
    for o in &s.options {
        option(&mut body, o);
    }
    switches(&mut body, &s.assignments);
    notes.sort();
    notes.dedup();
    for n in &notes {
        let _ = writeln!(w, "# note: {}", comment(n));
    }
    w.push_str(&body);
}

/// What ParaView substitutes with nobody changing anything: the `set` values and the
/// options' fixed defaults (not `random` ones, nor a switch's choice). Names not here
/// (pv-launch's environment, predefined ports) are looked up as their bare name, as
/// ParaView does for an unset variable, so that only the profile's own values are judged.
fn default_values(s: &ServerEntry) -> std::collections::BTreeMap<String, String> {
    let mut values = std::collections::BTreeMap::new();
    for a in &s.assignments {
        if let Assignment::Set { name, value, .. } = a {
            values.insert(name.clone(), value.clone());
        }
    }
    for o in &s.options {
        let text = match &o.kind {
            OptionKind::Int {
                default: RangeDefault::Value(v),
                ..
            } => Some(v.to_string()),
            OptionKind::Double {
                default: RangeDefault::Value(v),
                ..
            } => Some(crate::profile::options::format_double(*v)),
            OptionKind::String { default } | OptionKind::File { default } => {
                Some(default.clone().unwrap_or_default())
            }
            OptionKind::Boolean {
                true_value,
                false_value,
                default,
            } => Some(if *default { true_value } else { false_value }.clone()),
            OptionKind::Enumeration { default, .. } => Some(default.clone().unwrap_or_default()),
            _ => None,
        };
        if let Some(text) = text {
            values.insert(o.name.clone(), text);
        }
    }
    values
}

/// The variable names a `${NAME}` may refer to in `s`: predefined ones, options, and
/// the variables sets and switches assign (those pv-launch accepts as names).
fn known_names(s: &ServerEntry) -> BTreeSet<String> {
    let mut known: BTreeSet<String> = PREDEFINED.iter().map(|p| p.to_string()).collect();
    known.extend(s.options.iter().map(|o| o.name.clone()));
    for a in &s.assignments {
        match a {
            Assignment::Set { name, .. } => {
                known.insert(name.clone());
            }
            // Only the first case of a value can match: the others are not written.
            Assignment::Switch { cases, .. } => known.extend(
                cases
                    .iter()
                    .enumerate()
                    .filter(|(i, c)| !cases[..*i].iter().any(|e| e.value == c.value))
                    .flat_map(|(_, c)| c.sets.iter().map(|(k, _)| k.clone())),
            ),
        }
    }
    known.retain(|k| is_variable_name(k));
    known
}

/// `[server.startup]` (and its `ssh` table) for a `.pvsc` command.
fn startup(
    b: &mut String,
    m: &Mechanism,
    timeouts: &Timeouts,
    known: &BTreeSet<String>,
    static_values: &dyn Fn(&str) -> String,
    notes: &mut Vec<String>,
) {
    let _ = writeln!(b, "\n[server.startup]");
    let (command, ssh) = match m {
        Mechanism::LocalDirect { command } => (command, None),
        Mechanism::SshDirect { command, ssh } => (command, Some(ssh)),
        _ => unreachable!("a .pvsc file only yields local and ssh commands"),
    };
    let _ = writeln!(
        b,
        "mechanism = {}",
        if ssh.is_some() {
            "\"ssh\""
        } else {
            "\"local\""
        }
    );
    if let CommandLine::ParaViewLine { exec, arguments } = command {
        let args: Vec<&str> = arguments.iter().map(|a| a.value.as_str()).collect();
        let mut resplit: Vec<Vec<String>> = vec![vec![]; args.len()];
        for (i, note) in analyse_arguments(&args, &|name| Some(static_values(name))) {
            resplit[i].push(note);
        }
        let _ = writeln!(b, "argv = [");
        let _ = writeln!(b, "  {},", toml_string(&convert(&exec.value, known, notes)));
        for (a, resplit) in arguments.iter().zip(&resplit) {
            for note in resplit {
                let _ = writeln!(
                    b,
                    "  # ParaView, with the defaults: {} (here it stays one argument)",
                    comment(note)
                );
            }
            let _ = writeln!(b, "  {},", toml_string(&convert(&a.value, known, notes)));
        }
        let _ = writeln!(b, "]");
    }
    let _ = writeln!(
        b,
        "process_start_timeout = {}",
        timeouts
            .process_start
            .as_ref()
            .map_or("0".to_string(), seconds)
    );
    let _ = writeln!(
        b,
        "delay = {}",
        match &timeouts.delay {
            Delay::None => "0".to_string(),
            Delay::Wait(d) => seconds(d),
            Delay::UntilExit => "-1".to_string(),
        }
    );
    if let Some(ssh) = ssh {
        ssh_table(b, ssh, known, notes);
    }
}

/// `[server.startup.ssh]`.
fn ssh_table(b: &mut String, ssh: &SshSettings, known: &BTreeSet<String>, notes: &mut Vec<String>) {
    let _ = writeln!(b, "\n[server.startup.ssh]");
    let _ = writeln!(b, "# host: the resource's host, as in ParaView");
    if let Some(u) = &ssh.user {
        let _ = writeln!(
            b,
            "user = {}",
            toml_string(&convert(u.value.source(), known, notes))
        );
        if let Text::Template(_) = u.value {
            unreachable!("a .pvsc user is ParaView text");
        }
    }
    if let Some(p) = ssh.port {
        let _ = writeln!(b, "port = {p}");
    }
    if let Some(p) = &ssh.program {
        let _ = writeln!(b, "program = {}", toml_string(p));
    }
    match &ssh.port_forwarding {
        None => {}
        Some(PortForwarding { local_port: None }) => {
            let _ = writeln!(b, "port_forwarding = true");
        }
        Some(PortForwarding {
            local_port: Some(p),
        }) => {
            let _ = writeln!(b, "port_forwarding = {{ local_port = {p} }}");
        }
    }
    let _ = writeln!(
        b,
        "prompts = \"askpass\"  # <Terminal>/<Askpass>: pv-askpass answers ssh's prompts"
    );
}

/// `[server.set]`, from ParaView's `<Set>`s.
fn sets(body: &mut String, assignments: &[Assignment]) {
    for (i, a) in assignments.iter().enumerate() {
        if let Assignment::Set { name, value, .. } = a {
            // A later <Set> of the same name overrides this one, and TOML allows a key once.
            let later = |b: &Assignment| matches!(b, Assignment::Set { name: n, .. } if n == name);
            if assignments[i + 1..].iter().any(later) {
                continue;
            }
            if !body.contains("\n[server.set]") {
                body.push_str("\n[server.set]\n");
            }
            if is_variable_name(name) {
                let _ = writeln!(body, "{name} = {}", toml_string(value));
            } else {
                let _ = writeln!(
                    body,
                    "# {name:?} is not a variable name pv-launch accepts; dropped"
                );
            }
        }
    }
}

/// One `[[server.switch]]` per ParaView `<Switch>`.
fn switches(body: &mut String, assignments: &[Assignment]) {
    for a in assignments {
        if let Assignment::Switch {
            variable, cases, ..
        } = a
        {
            let _ = writeln!(body, "\n[[server.switch]]");
            let _ = writeln!(body, "variable = {}", toml_string(variable));
            if cases.is_empty() {
                // A switch without cases sets nothing, but TOML needs the key.
                let _ = writeln!(body, "cases = {{}}");
            }
            for (i, c) in cases.iter().enumerate() {
                // Only the first case of a value can match, and TOML allows a table once.
                if cases[..i].iter().any(|earlier| earlier.value == c.value) {
                    continue;
                }
                let _ = writeln!(body, "[server.switch.cases.{}]", toml_string(&c.value));
                for (j, (k, v)) in c.sets.iter().enumerate() {
                    // A later <Set> of the same name overrides this one.
                    if c.sets[j + 1..].iter().any(|(later, _)| later == k) {
                        continue;
                    }
                    // A name that is no bare TOML key (`a.b`, `a b`) is quoted.
                    let key = if is_variable_name(k) {
                        k.clone()
                    } else {
                        toml_string(k)
                    };
                    let _ = writeln!(body, "{key} = {}", toml_string(v));
                }
            }
        }
    }
}

fn option(w: &mut String, o: &OptionSpec) {
    if !is_variable_name(&o.name) {
        let _ = writeln!(
            w,
            "\n# option {:?} dropped: not a variable name pv-launch accepts",
            o.name
        );
        return;
    }
    let _ = writeln!(w, "\n[[server.option]]");
    let _ = writeln!(w, "name = {}", toml_string(&o.name));
    if o.label != o.name {
        let _ = writeln!(w, "label = {}", toml_string(&o.label));
    }
    let _ = writeln!(w, "type = {}", toml_string(o.kind.type_name()));
    kind_fields(w, &o.kind);
    if o.readonly {
        let _ = writeln!(w, "readonly = true");
    }
    if !o.save && !o.kind.is_secret() {
        let _ = writeln!(w, "save = false");
    }
}

/// The fields of an option that depend on its type.
fn kind_fields(w: &mut String, kind: &OptionKind) {
    match kind {
        OptionKind::Int {
            min,
            max,
            step,
            default,
        } => {
            let _ = writeln!(w, "min = {min}\nmax = {max}\nstep = {step}");
            let _ = match default {
                RangeDefault::Value(v) => writeln!(w, "default = {v}"),
                RangeDefault::Random => writeln!(w, "default = \"random\""),
            };
        }
        OptionKind::Double {
            min,
            max,
            step,
            default,
        } => {
            let f = |x: f64| format!("{x:?}");
            let _ = writeln!(w, "min = {}\nmax = {}", f(*min), f(*max));
            if let Some(step) = step {
                let _ = writeln!(w, "step = {}", f(*step));
            }
            let _ = match default {
                RangeDefault::Value(v) => writeln!(w, "default = {}", f(*v)),
                RangeDefault::Random => writeln!(w, "default = \"random\""),
            };
        }
        OptionKind::String { default }
        | OptionKind::Password { default }
        | OptionKind::File { default } => {
            if let Some(d) = default {
                if d.contains('"') {
                    let _ = writeln!(
                        w,
                        "# ParaView's command-line splitting removed these double quotes; here they stay"
                    );
                }
                let _ = writeln!(w, "default = {}", toml_string(d));
            }
        }
        OptionKind::Boolean {
            true_value,
            false_value,
            default,
        } => {
            let _ = writeln!(
                w,
                "true = {}\nfalse = {}\ndefault = {default}",
                toml_string(true_value),
                toml_string(false_value)
            );
        }
        OptionKind::Enumeration { entries, default } => enumeration_fields(w, entries, default),
    }
}

fn enumeration_fields(w: &mut String, entries: &[EnumEntry], default: &Option<String>) {
    let _ = writeln!(w, "entries = [");
    for e in entries {
        let _ = writeln!(
            w,
            "  {{ value = {}, label = {} }},",
            toml_string(&e.value),
            toml_string(&e.label)
        );
    }
    let _ = writeln!(w, "]");
    match default {
        Some(d) => {
            let _ = writeln!(w, "default = {}", toml_string(d));
        }
        None => {
            let _ = writeln!(
                w,
                "# ParaView selected no entry (the value was empty); the first entry is the default here"
            );
        }
    }
}
