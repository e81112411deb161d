//! ParaView's command-line semantics for `.pvsc` files, implemented exactly.
//!
//! ParaView builds one string from `exec` and the `Argument` values, wrapping a value that
//! contains whitespace in double quotes (no other escaping). It then replaces every
//! `$NAME$` (a name is any run of characters other than `$` and space) with the variable's
//! value — or with the bare `NAME` when no such variable exists — replacing every
//! occurrence of that placeholder at once and re-scanning the whole line from the start
//! until no placeholder is left. Finally the line is split into argv the way Qt's
//! `QProcess::splitCommand` does: whitespace separates arguments outside double quotes,
//! a double quote toggles quoting, three consecutive double quotes make one literal quote,
//! and empty arguments never appear. No shell is involved.
//!
//! Consequences an author may not expect, which [`analyse_arguments`] reports as warnings:
//! a placeholder whose value is empty makes its argument vanish; a value with spaces
//! becomes several arguments; a value with `"` changes the grouping. ParaView loops
//! forever on a self-referencing variable; here that is an error.

use std::collections::{BTreeMap, BTreeSet};

/// A substitution that would never finish in ParaView.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("variable substitution never ends (ParaView would hang): {}", cycle_text(.cycle))]
pub struct EndlessSubstitution {
    /// The variables that keep re-introducing each other, in order.
    pub cycle: Vec<String>,
}

fn cycle_text(cycle: &[String]) -> String {
    if cycle.len() == 1 {
        format!("${0}$ contains ${0}$ again", cycle[0])
    } else {
        let mut names: Vec<String> = cycle.iter().map(|n| format!("${n}$")).collect();
        names.push(format!("${}$", cycle[0]));
        format!("{} refer to each other in a loop", names.join(" -> "))
    }
}

/// `exec` and `arguments` joined as ParaView joins them (before substitution).
pub fn join_line(exec: &str, arguments: &[&str]) -> String {
    let mut line = exec.to_string();
    for a in arguments {
        line.push(' ');
        line.push_str(&quote_if_spaced(a));
    }
    line
}

/// A value wrapped in double quotes when it contains whitespace, as ParaView does.
pub fn quote_if_spaced(value: &str) -> String {
    if value.chars().any(char::is_whitespace) {
        format!("\"{value}\"")
    } else {
        value.to_string()
    }
}

/// The first `$NAME$` placeholder in `s`: its byte range and the name.
pub fn first_placeholder(s: &str) -> Option<(std::ops::Range<usize>, &str)> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let rest = &s[i + 1..];
            let end = rest.find(['$', ' ']).map(|j| (j, rest.as_bytes()[j]));
            if let Some((j, b'$')) = end {
                return Some((i..i + j + 2, &rest[..j]));
            }
        }
        i += 1;
    }
    None
}

/// Substitute every `$NAME$` in `line` the way ParaView does; `lookup` answers a name
/// (pv-launch's environment, then predefined variables, options and sets).
pub fn substitute(
    line: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, EndlessSubstitution> {
    let mut line = line.to_string();
    let max_len = line.len().saturating_mul(64).max(1 << 20);
    // Every round reads the whole line, so the rounds are bounded by the bytes they read
    // too: far more than any finite substitution of a real command line needs.
    let max_work = max_len.saturating_mul(2);
    let mut rounds = 0usize;
    let mut work = 0usize;
    while let Some((range, name)) = first_placeholder(&line) {
        let placeholder = line[range].to_string();
        let name = name.to_string();
        let value = lookup(&name).unwrap_or_else(|| name.clone());
        // The length of the next line, known before it is made (it may be huge).
        let count = line.matches(&placeholder).count();
        let next_len = (line.len() - count * placeholder.len())
            .saturating_add(count.saturating_mul(value.len()));
        rounds += 1;
        work = work.saturating_add(line.len());
        // A finite set of variables can only need so many rounds; far beyond that, or a
        // line that keeps growing, means a loop.
        if rounds > 10_000 || next_len > max_len || work > max_work {
            return Err(EndlessSubstitution {
                cycle: find_cycle(&line, lookup).unwrap_or_else(|| vec![name]),
            });
        }
        line = line.replace(&placeholder, &value);
    }
    Ok(line)
}

/// Find variables whose values refer to each other in a loop, starting from those in `text`.
fn find_cycle(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Option<Vec<String>> {
    fn placeholders(s: &str) -> Vec<String> {
        let mut out = vec![];
        let mut rest = s;
        while let Some((range, name)) = first_placeholder(rest) {
            out.push(name.to_string());
            rest = &rest[range.end - 1..];
        }
        out
    }
    fn visit(
        name: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == name) {
            return Some(path[at..].to_vec());
        }
        if !done.insert(name.to_string()) {
            return None;
        }
        let value = lookup(name)?;
        path.push(name.to_string());
        for next in placeholders(&value) {
            if let Some(c) = visit(&next, lookup, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    placeholders(text)
        .iter()
        .find_map(|n| visit(n, lookup, &mut vec![], &mut done))
}

/// Split a command line into argv exactly as Qt's `QProcess::splitCommand` does.
pub fn split_command(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut quotes = 0u32;
    let mut in_quote = false;
    for c in line.chars() {
        if c == '"' {
            quotes += 1;
            if quotes == 3 {
                quotes = 0;
                current.push('"');
            }
            continue;
        }
        if quotes > 0 {
            if quotes == 1 {
                in_quote = !in_quote;
            }
            quotes = 0;
        }
        if !in_quote && c.is_whitespace() {
            if !current.is_empty() {
                args.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    if !current.is_empty() {
        args.push(current);
    }
    args
}

/// The whole ParaView pipeline: join, substitute, split.
pub fn command_argv(
    exec: &str,
    arguments: &[&str],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, EndlessSubstitution> {
    Ok(split_command(&substitute(
        &join_line(exec, arguments),
        lookup,
    )?))
}

/// Look at each argument on its own and describe where ParaView's rules probably do
/// something other than what the author meant. `index` in the messages counts from 1.
pub fn analyse_arguments(
    arguments: &[&str],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Vec<(usize, String)> {
    let mut notes = Vec::new();
    for (i, arg) in arguments.iter().enumerate() {
        let unknown = std::cell::RefCell::new(BTreeSet::new());
        let recording = |name: &str| {
            let v = lookup(name);
            if v.is_none() {
                unknown.borrow_mut().insert(name.to_string());
            }
            v
        };
        let words = match substitute(&quote_if_spaced(arg), &recording) {
            Ok(s) => split_command(&s),
            Err(_) => continue,
        };
        for name in unknown.borrow().iter() {
            notes.push((
                i,
                format!("`${name}$` is not a defined variable: ParaView replaces it with the bare name {name:?}"),
            ));
        }
        if words.is_empty() && !arg.is_empty() {
            notes.push((i, format!("argument {arg:?} is empty after substitution and disappears from the command line")));
        } else if words.len() > 1 {
            notes.push((
                i,
                format!("argument {arg:?} becomes {} arguments ({words:?}) because a substituted value contains whitespace or quotes", words.len()),
            ));
        } else if arg.contains('"') && !arg.contains("$") {
            notes.push((i, format!("argument {arg:?} contains a double quote, which ParaView's splitting removes or reinterprets")));
        }
    }
    notes
}

/// Variables visible to a ParaView command line: `env` overlaid by `vars`.
pub fn lookup_in<'a>(
    env: &'a BTreeMap<String, String>,
    vars: &'a BTreeMap<String, String>,
) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| vars.get(name).or_else(|| env.get(name)).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn split_follows_qt() {
        assert_eq!(split_command(r#"a "b c" d"#), ["a", "b c", "d"]);
        assert_eq!(split_command(r#"a """b""" c"#), ["a", "\"b\"", "c"]);
        assert_eq!(split_command(r#"  a   ""  b  "#), ["a", "b"]);
        assert_eq!(split_command("a\tb\nc"), ["a", "b", "c"]);
        assert_eq!(split_command(r#"x"y z"w"#), ["xy zw"]);
        assert_eq!(split_command(r#"a""b"#), ["ab"]);
        assert_eq!(split_command(r#""unterminated arg"#), ["unterminated arg"]);
        assert!(split_command("").is_empty());
    }

    #[test]
    fn quoting_happens_before_substitution() {
        let v = vars(&[("ARGS", "-n4 -pdebug"), ("EMPTY", ""), ("T", "a b")]);
        let none = BTreeMap::new();
        let look = lookup_in(&none, &v);
        let argv = command_argv("srun", &["$ARGS$", "$EMPTY$", "x y", "--t=$T$"], &look).unwrap();
        assert_eq!(argv, ["srun", "-n4", "-pdebug", "x y", "--t=a", "b"]);
    }

    #[test]
    fn unknown_becomes_bare_name_and_rescans() {
        let v = vars(&[("A", "$B$"), ("B", "end")]);
        let none = BTreeMap::new();
        let look = lookup_in(&none, &v);
        assert_eq!(substitute("x$A$y $NOPE$ $$", &look).unwrap(), "xendy NOPE ");
    }

    #[test]
    fn placeholder_names_stop_at_spaces() {
        assert_eq!(
            first_placeholder("a$b c$d$").map(|(r, n)| (r, n.to_string())),
            Some((5..8, "d".to_string()))
        );
        assert_eq!(
            first_placeholder("$a\tb$").map(|(_, n)| n.to_string()),
            Some("a\tb".to_string())
        );
    }

    #[test]
    fn self_reference_is_an_error_not_a_hang() {
        let v = vars(&[("A", "x$A$")]);
        let e = substitute("$A$", &lookup_in(&BTreeMap::new(), &v)).unwrap_err();
        assert_eq!(e.cycle, ["A"]);
        let v = vars(&[("A", "$B$"), ("B", "($A$)")]);
        let e = substitute("go $A$", &lookup_in(&BTreeMap::new(), &v)).unwrap_err();
        let mut names = e.cycle.clone();
        names.sort();
        assert_eq!(names, ["A", "B"]);
        assert!(
            e.to_string().contains("refer to each other in a loop"),
            "{e}"
        );
    }

    /// Found by fuzzing (target `command_line`): an empty name (`$$`) whose value brings
    /// back `$$` and another placeholder grew the line round after round; the old limits
    /// (10 000 rounds, 1 MiB) let that take seconds to minutes before the error.
    #[test]
    fn a_growing_substitution_gives_up_after_bounded_work() {
        let v = vars(&[("A", "$$B"), ("", "A=$$B\u{10}B=$A$")]);
        let lookups = std::cell::Cell::new(0usize);
        let counting = |name: &str| {
            lookups.set(lookups.get() + 1);
            lookup_in(&BTreeMap::new(), &v)(name)
        };
        assert!(substitute("run $A$", &counting).is_err());
        // A round is one lookup; each round reads the whole line, so the work stays
        // bounded only if the rounds do while the line is long.
        assert!(lookups.get() < 2_000, "{} lookups", lookups.get());
    }

    #[test]
    fn variables_override_environment() {
        let env = vars(&[("USER", "envuser"), ("HOME", "/h")]);
        let v = vars(&[("USER", "optuser")]);
        let look = lookup_in(&env, &v);
        assert_eq!(substitute("$USER$@$HOME$", &look).unwrap(), "optuser@/h");
    }

    #[test]
    fn analysis_names_vanishing_and_splitting_arguments() {
        let v = vars(&[("E", ""), ("S", "a b")]);
        let none = BTreeMap::new();
        let look = lookup_in(&none, &v);
        let notes = analyse_arguments(&["$E$", "$S$", "plain", "$U$"], &look);
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert_eq!(notes[0].0, 0);
        assert!(notes[0].1.contains("disappears"));
        assert_eq!(notes[1].0, 1);
        assert!(notes[1].1.contains("2 arguments"));
        assert_eq!(notes[2].0, 3);
        assert!(notes[2].1.contains("bare name"));
    }
}
