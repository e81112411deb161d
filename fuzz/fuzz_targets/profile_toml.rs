//! TOML profiles, loaded from text as `pv-launch` loads a profile file: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pv_launch::fuzzing;

fuzz_target!(|text: &str| {
    match fuzzing::load_toml(text) {
        Ok(profile) => {
            // What `--server` does with the result.
            let _ = profile.select(None).map(|entry| entry.name.clone());
            for warning in &profile.warnings {
                let _ = warning.to_string();
            }
            if pv_launch_fuzz::verbose() {
                eprintln!("{profile:#?}");
            }
        }
        Err(e) => {
            let message = e.to_string();
            if pv_launch_fuzz::verbose() {
                eprintln!("{message}");
            }
        }
    }
});
