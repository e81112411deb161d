//! ParaView command lines: joining, `$NAME$` substitution and Qt's splitting, as a `.pvsc`
//! `<Command>` is turned into argv. Never a panic; substitution always ends; and the
//! splitting keeps the promises the quoting relies on.
//!
//! Input: NUL-separated parts. A part that starts with `=` defines a variable
//! (`=NAME=value`); the first other part is the executable, the rest are arguments.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use pv_launch::fuzzing::{
    analyse_arguments, command_argv, join_line, quote_if_spaced, split_command,
};

fuzz_target!(|input: &str| {
    let mut vars = BTreeMap::new();
    let mut words = Vec::new();
    for part in input.split('\0') {
        match part.strip_prefix('=') {
            Some(def) => {
                let (name, value) = def.split_once('=').unwrap_or((def, ""));
                vars.insert(name.to_string(), value.to_string());
            }
            None => words.push(part),
        }
    }
    let lookup = |name: &str| vars.get(name).cloned();

    // Splitting alone: empty arguments never appear, and without double quotes it is
    // splitting at whitespace.
    let split = split_command(input);
    assert!(
        split.iter().all(|a| !a.is_empty()),
        "an empty argument from {input:?}"
    );
    if !input.contains('"') {
        let plain: Vec<&str> = input.split_whitespace().collect();
        assert_eq!(split, plain, "{input:?}");
    }

    let Some((exec, arguments)) = words.split_first() else {
        return;
    };
    // A value without double quotes survives ParaView's quoting and splitting whole.
    for a in arguments {
        if !a.is_empty() && !a.contains('"') {
            assert_eq!(split_command(&quote_if_spaced(a)), [*a], "{a:?}");
        }
    }
    let _ = join_line(exec, arguments);
    // Ends, with the argv or the loop named; as in a plan, the arguments are analysed
    // one by one only when the whole line substitutes.
    if command_argv(exec, arguments, &lookup).is_ok() {
        let _ = analyse_arguments(arguments, &lookup);
    }
});
