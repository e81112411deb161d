//! Measures a first ssh launch (connect and authenticate the master, start
//! `pv-demo-server` remotely, read its ready line, open the `-L` tunnel) against a second
//! launch to the same host through the same master (no new authentication).
//!
//! Needs root and openssh-server (it starts a loopback sshd and a throwaway user), and the
//! workspace's binaries built: `cargo build --release --workspace --bins`, then
//! `target/release/ssh-second-launch [ROUNDS]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pv_e2e::sshd::{Sshd, TEST_USER};
use pv_launch::startup::ssh::{
    AskpassProgram, Master, SshHost, SshLaunch, SshOptions, SshTarget, Tunnel, remote_command,
};
use pv_transport::Token;
use pv_transport::launch::Secrets;

/// A binary of this workspace, beside this one.
fn workspace_bin_beside(name: &str) -> std::path::PathBuf {
    let p = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace's binaries",
        p.display()
    );
    p
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let sshd = Sshd::start();
    let mut target = SshTarget::new("127.0.0.1")
        .unwrap()
        .with_user(TEST_USER)
        .unwrap()
        .with_port(sshd.port())
        .with_identity_file(&sshd.plain_key())
        .unwrap();
    for a in sshd.client_args(&sshd.known_hosts(), "publickey") {
        target = target.with_arg(a).unwrap();
    }
    let launch = SshLaunch {
        target,
        options: SshOptions {
            askpass: AskpassProgram::Path(workspace_bin_beside("pv-askpass")),
            ..SshOptions::default()
        },
        tunnel: Some(Tunnel::Local {
            local_port: 0,
            host: "127.0.0.1".into(),
            remote_port: 0,
        }),
        ready_timeout: Some(Duration::from_secs(20)),
        pattern: None,
    };
    let server = workspace_bin_beside("pv-demo-server").display().to_string();
    let command = |_: Option<u16>| {
        remote_command(
            &[server.clone(), "--server-port".into(), "0".into()],
            &[],
            None,
        )
    };
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let secrets = Secrets {
            token: Token::generate(),
            client_cert: None,
        };
        let t = Instant::now();
        let master = Arc::new(
            Master::connect(&launch.target, &launch.options)
                .await
                .unwrap(),
        );
        let s1 = launch
            .start_on(
                SshHost::OpenSsh(Arc::clone(&master)),
                command,
                Some(&secrets),
                None,
            )
            .await
            .unwrap();
        first.push(t.elapsed());
        let t = Instant::now();
        let s2 = launch
            .start_on(
                SshHost::OpenSsh(Arc::clone(&master)),
                command,
                Some(&secrets),
                None,
            )
            .await
            .unwrap();
        second.push(t.elapsed());
        s2.close().await;
        s1.close().await;
        Arc::try_unwrap(master).unwrap().close().await;
    }
    let (f, s) = (median(first), median(second));
    println!(
        "rounds {rounds}: first launch (connect + auth + start + ready + -L) median {:.1} ms; \
         second launch through the master median {:.1} ms = {:.0}% of the first",
        f.as_secs_f64() * 1e3,
        s.as_secs_f64() * 1e3,
        100.0 * s.as_secs_f64() / f.as_secs_f64()
    );
}
