//! Launch-channel lines: a server's ready line and the launcher's secrets line. Parsing
//! never panics, and a parsed line printed again parses back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pv_transport::launch::{ReadyLine, Secrets};

fuzz_target!(|input: &str| {
    if let Some(Ok(ready)) = ReadyLine::parse(input) {
        let printed = ready.to_string();
        match ReadyLine::parse(&printed) {
            Some(Ok(again)) => assert_eq!(again, ready, "{input:?} printed as {printed:?}"),
            other => panic!("{input:?} printed as {printed:?}, which parses as {other:?}"),
        }
    }
    if let Some(Ok(secrets)) = Secrets::parse(input) {
        let printed = secrets.to_line();
        match Secrets::parse(&printed) {
            Some(Ok(again)) => assert_eq!(again, secrets, "{input:?} printed as {printed:?}"),
            other => panic!("{input:?} printed as {printed:?}, which parses as {other:?}"),
        }
    }
});
