//! ParaView `.pvsc` server files, loaded from text as `pv-launch` loads them: never a
//! panic; and `pv-launch import` turns every file that loads into TOML that loads too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pv_launch::fuzzing;

fuzz_target!(|text: &str| {
    match fuzzing::load_pvsc(text) {
        Ok(profile) => {
            let _ = profile.select(None).map(|entry| entry.name.clone());
            for warning in &profile.warnings {
                let _ = warning.to_string();
            }
            let toml = fuzzing::import_to_toml(&profile);
            if pv_launch_fuzz::verbose() {
                eprintln!("{profile:#?}\n{toml}");
            }
            let imported = fuzzing::load_toml(&toml).unwrap_or_else(|e| {
                panic!("the import of a loadable .pvsc does not load: {e}\n{toml}")
            });
            assert_eq!(
                imported.servers.len(),
                profile.servers.len(),
                "the import has another number of servers:\n{toml}"
            );
        }
        Err(e) => {
            let message = e.to_string();
            if pv_launch_fuzz::verbose() {
                eprintln!("{message}");
            }
        }
    }
});
