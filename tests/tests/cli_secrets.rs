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

/// A server started by hand that speaks the native handshake: pv-launch needs its token
/// (`--token-file`, checked like a password file, or `PV_LAUNCH_TOKEN`), says so clearly
/// without it, and then hands the connection to the client; having started nothing, it
/// reports no cleanup of processes. `check` takes the profile as a launch names it too.
#[test]
fn a_hand_started_native_server_takes_its_token_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let token = pv_transport::Token::generate().to_hex();
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = KillOnDrop(
        Command::new(workspace_bin("pv-demo-server"))
            .args(["--server-port", &port.to_string(), "--multi-clients"])
            .env("PV_LAUNCH_TOKEN", &token)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Its ready line says it listens.
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.0.stdout.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with("pv-launch-ready"), "{first}");
    let p = dir.path().join("manual.toml");
    std::fs::write(
        &p,
        format!("[[server]]\nname = \"by hand\"\nresource = \"cs://127.0.0.1:{port}\"\nconnect_timeout = 5\n"),
    )
    .unwrap();
    let p = p.to_str().unwrap();

    let out = pv_launch(&["check", "--profile", p]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let out = pv_launch(&["--profile", p, "--exec", "true"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--token-file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // pv-launch's own connect retries are its notes, not the server's stderr.
    let closed = dir.path().join("closed.toml");
    let closed_port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &closed,
        format!("[[server]]\nname = \"gone\"\nresource = \"cs://127.0.0.1:{closed_port}\"\nconnect_timeout = 1.5\n"),
    )
    .unwrap();
    let out = Command::new(workspace_bin("pv-launch"))
        .args(["--profile", closed.to_str().unwrap(), "--exec", "true"])
        .env("PV_LAUNCH_TOKEN", &token)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("note: connect attempt 1 to 127.0.0.1:"),
        "{err}"
    );
    assert!(!err.contains("server stderr: connect attempt"), "{err}");

    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let client = "printf 'by hand\\n' | socat -t 5 - TCP:$PV_LAUNCH_HOST:$PV_LAUNCH_PORT | grep -qx 'by hand'";
    let out = pv_launch(&[
        "--profile",
        p,
        "--token-file",
        file.to_str().unwrap(),
        "--exec",
        client,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");

    // From the environment, with a wrong token: the handshake says so.
    let out = Command::new(workspace_bin("pv-launch"))
        .args(["--profile", p, "--exec", "true"])
        .env("PV_LAUNCH_TOKEN", pv_transport::Token::generate().to_hex())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without a client, the session holds until Ctrl-C; nothing was started, so no
    // processes are stopped.
    let mut held = Command::new(workspace_bin("pv-launch"))
        .args(["--profile", p])
        .env("PV_LAUNCH_TOKEN", &token)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(held.stderr.take().unwrap()));
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let ready = line.starts_with("ready for the client: ");
        seen.push(line);
        if ready {
            break;
        }
    }
    Command::new("kill")
        .args(["-INT", &held.id().to_string()])
        .status()
        .unwrap();
    seen.extend(lines.map(|l| l.unwrap()));
    let status = held.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen:#?}");
    assert!(
        !seen.iter().any(|l| l.contains("stopping processes")),
        "{seen:#?}"
    );
    drop(server);
}

/// A child killed (and reaped) when the test ends, panicking or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
