//! Secrets on the command line: a password option refuses `--set` (a command line is
//! readable by every local user), takes `--set-from-file` from a file only the user can
//! read, and the value reaches the server's environment, never its argv.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use pv_e2e::workspace_bin;

fn profile(dir: &Path) -> std::path::PathBuf {
    let script = dir.join("start.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$PW\" = 's3cret value' ] || {{ echo \"bad PW\" >&2; exit 9; }}\nexec {} --server-port 0\n",
            workspace_bin("pv-demo-server").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = dir.join("pw.toml");
    std::fs::write(
        &p,
        format!(
            "[[server]]\nname = \"pw\"\nresource = \"cs://127.0.0.1:0\"\n\
             [[server.option]]\nname = \"PW\"\ntype = \"password\"\n\
             [server.startup]\nmechanism = \"local-script\"\nscript = {:?}\n",
            script.display().to_string()
        ),
    )
    .unwrap();
    p
}

fn pv_launch(args: &[&str]) -> std::process::Output {
    Command::new(workspace_bin("pv-launch"))
        .args(args)
        .env_remove("PV_LAUNCH_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn a_password_option_refuses_set_and_takes_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = profile(dir.path());
    let p = p.to_str().unwrap();

    let out = pv_launch(&[
        "--profile",
        p,
        "--no-prompt",
        "--set",
        "PW=s3cret value",
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--set-from-file PW=FILE"), "{err}");
    assert!(out.stdout.is_empty());

    let secret = dir.path().join("pw.txt");
    std::fs::write(&secret, "s3cret value\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let from_file = format!("PW={}", secret.display());
    let out = pv_launch(&[
        "--profile",
        p,
        "--no-prompt",
        "--set-from-file",
        &from_file,
        "--dry-run",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a file others can read: {out:?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = pv_launch(&[
        "--profile",
        p,
        "--no-prompt",
        "--set-from-file",
        &from_file,
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let dry = String::from_utf8_lossy(&out.stdout);
    assert!(dry.contains("PW=<secret>"), "{dry}");
    assert!(!dry.contains("s3cret"), "{dry}");

    // The real launch: the script checks the value it got in its environment.
    let out = pv_launch(&[
        "--profile",
        p,
        "--no-prompt",
        "--set-from-file",
        &from_file,
        "--exec",
        "test -n \"$PV_LAUNCH_URL\"",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
