//! Server resource URIs (`cs://host:port`, `cdsrsrc+tls://a//b`, ...): parsing never
//! panics, errors point inside the input, and printing a parsed resource parses back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pv_transport::Resource;

fuzz_target!(|input: &str| {
    match Resource::parse(input) {
        Ok(resource) => {
            let printed = resource.to_string();
            let again = Resource::parse(&printed)
                .unwrap_or_else(|e| panic!("{input:?} printed as {printed:?}, which fails: {e}"));
            assert_eq!(again, resource, "{input:?} printed as {printed:?}");
            // The accessors every caller uses.
            let _ = (
                resource.scheme(),
                resource.direction(),
                resource.endpoints(),
            );
        }
        Err(e) => {
            assert!(
                e.offset <= input.len(),
                "offset {} past the end of {input:?}",
                e.offset
            );
            let _ = e.to_string();
        }
    }
});
