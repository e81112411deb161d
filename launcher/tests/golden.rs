//! Golden `--dry-run` output for every server of every `.pvsc` corpus file and every sample
//! profile (each mechanism). `UPDATE_GOLDEN=1 cargo test -p pv-launch --test golden`
//! rewrites the files; review every change by hand against ParaView's rules before
//! committing it.

use std::path::{Path, PathBuf};

use pv_launch::{LaunchContext, NonInteractive, Plan, Profile};

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The dry-run text of every server in `profile_path`, checked against
/// `tests/golden/<group>/<file name>/<server>.txt`.
fn check_file(profile_path: &Path, group: &str) -> Vec<String> {
    let profile = Profile::load(profile_path).unwrap_or_else(|e| panic!("{e}"));
    let dir = Path::new("tests/golden")
        .join(group)
        .join(profile_path.file_name().unwrap());
    let mut outputs = vec![(
        dir.join("_load-warnings.txt"),
        profile
            .warnings
            .iter()
            .map(|w| format!("{w}\n"))
            .collect::<String>(),
    )];
    for server in &profile.servers {
        let plan = Plan::resolve(server, &LaunchContext::fixed(), &NonInteractive)
            .unwrap_or_else(|e| panic!("{}: {e}", server.name));
        outputs.push((
            dir.join(format!("{}.txt", slug(&server.name))),
            plan.to_dry_run_text(),
        ));
        let json = plan.to_json().to_string();
        assert!(!json.contains("hunter2"), "a secret leaked into JSON");
    }
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = vec![];
    for (path, text) in outputs {
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == text => {}
            Ok(expected) => mismatches.push(format!(
                "{}: differs\n--- expected\n{expected}\n--- actual\n{text}",
                path.display()
            )),
            Err(_) => mismatches.push(format!(
                "{}: missing (run with UPDATE_GOLDEN=1)",
                path.display()
            )),
        }
    }
    mismatches
}

fn files(dir: &str, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| keep(p))
        .collect();
    v.sort();
    v
}

#[test]
fn every_corpus_server_matches_its_golden_dry_run() {
    let corpus = files("tests/data/pvsc-corpus", |p| {
        p.extension().is_some_and(|e| e == "pvsc" || e == "in")
    });
    assert_eq!(corpus.len(), 6, "the six corpus files");
    let problems: Vec<String> = corpus.iter().flat_map(|f| check_file(f, "pvsc")).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_sample_profile_matches_its_golden_dry_run() {
    let samples = files("../examples/profiles", |p| {
        p.extension().is_some_and(|e| e == "toml")
    });
    assert!(samples.len() >= 5);
    let problems: Vec<String> = samples
        .iter()
        .flat_map(|f| check_file(f, "profiles"))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A batch server without the native handshake gets no token: its dry run does not claim
/// one waits in the job's secrets file; a native one's does.
#[test]
fn a_batch_dry_run_promises_a_token_only_to_a_native_server() {
    let text_of = |path: &str| -> Vec<(String, String)> {
        let profile = Profile::load(Path::new(path)).unwrap_or_else(|e| panic!("{e}"));
        profile
            .servers
            .iter()
            .map(|s| {
                let plan = Plan::resolve(s, &LaunchContext::fixed(), &NonInteractive)
                    .unwrap_or_else(|e| panic!("{}: {e}", s.name));
                (s.name.clone(), plan.to_dry_run_text())
            })
            .collect()
    };
    let promise = "the token waits in its 0600 `secrets` file";
    for (name, text) in text_of("../examples/profiles/pvserver-slurm.toml") {
        assert!(text.contains("handshake: paraview") || text.contains("handshake: none"));
        assert!(!text.contains(promise), "{name}: {text}");
        assert!(text.contains("holds no token"), "{name}: {text}");
    }
    for (name, text) in text_of("../examples/profiles/slurm.toml") {
        assert!(text.contains("handshake: native"), "{name}: {text}");
        assert!(text.contains(promise), "{name}: {text}");
    }
}
