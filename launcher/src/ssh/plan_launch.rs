//! Running an ssh [`Plan`] (mechanism `ssh` or `ssh-script`) with the OpenSSH backend:
//! the seam the launcher's start step calls for plans whose process has a remote part.

use std::time::Duration;

use pv_transport::launch::Secrets;
use tokio::sync::mpsc;

use super::{MasterOptions, RemoteOutput, SshError, SshLaunch, SshSession, SshTarget, TunnelMode};
use crate::plan::{Launch, Plan, Tunnel};

/// How long to wait for the ready line when the plan gives no process start timeout.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `plan` starts its server over ssh (and so belongs to [`launch_plan`]).
pub fn is_ssh_plan(plan: &Plan) -> bool {
    matches!(plan.launch(), Launch::Process(p) if p.remote.is_some())
}

/// Start `plan`'s server over ssh: our own control master started with `master` (prompts
/// through its prompter when it has one, else pv-askpass's own dialog or terminal; the
/// plan's `prompts = "batch-mode"` turns prompts off), the plan's tunnel, the remote
/// command with `secrets` on its stdin (then the ready line is awaited, up to the plan's
/// process start timeout). The session's [`SshSession::local_address`] (forward tunnel)
/// is where the client dials; its reverse tunnel reaches the plan's local port.
///
/// This is [`ssh_launch`] followed by [`SshLaunch::start`]; the launcher runs the two
/// steps itself to report the authentication as its own stage.
pub async fn launch_plan(
    plan: &Plan,
    master: MasterOptions,
    secrets: Option<&Secrets>,
    output: Option<mpsc::UnboundedSender<RemoteOutput>>,
) -> Result<SshSession, SshError> {
    let (launch, command) = ssh_launch(plan, master, secrets.is_some())?;
    launch.start(move |_| command, secrets, output).await
}

/// What [`SshLaunch`] runs `plan` (mechanism `ssh` or `ssh-script`), and the remote shell
/// command. `with_ready_line`: the server gets secrets on its stdin and answers with a
/// ready line, awaited up to the plan's process start timeout.
///
/// The plan's tunnels map as follows: `-L local:localhost:server` becomes a forward to
/// `127.0.0.1:<server port from the ready line, else the plan's>` from
/// `127.0.0.1:<local>` (local port 0: a free one); `-R server:localhost:local` becomes
/// `-R 127.0.0.1:<server>:127.0.0.1:<local>` (a plan bakes the server port into the
/// remote command, so it must be fixed; embedders wanting the remote side to choose use
/// [`SshLaunch::start`] with [`TunnelMode::Reverse`] and `remote_port: None`).
/// The plan's `delay` is not applied here: the start is over once the remote command runs
/// (and, with a ready line, once it came); the launcher waits the delay afterwards.
pub fn ssh_launch(
    plan: &Plan,
    master: MasterOptions,
    with_ready_line: bool,
) -> Result<(SshLaunch, String), SshError> {
    let Launch::Process(process) = plan.launch() else {
        return Err(SshError::Invalid(format!(
            "server {:?} starts nothing, there is nothing to run over ssh",
            plan.server()
        )));
    };
    let (target, command) = SshTarget::from_process_plan(process)?;
    let tunnels = process
        .remote
        .as_ref()
        .map(|r| r.tunnels.as_slice())
        .unwrap_or_default();
    let tunnel = match tunnels.first() {
        None => TunnelMode::None,
        Some(Tunnel::Local {
            local_port,
            remote_port,
        }) => TunnelMode::Forward {
            server_host: "127.0.0.1".to_string(),
            server_port: Some(*remote_port).filter(|p| *p != 0),
            local_port: Some(*local_port).filter(|p| *p != 0),
        },
        Some(Tunnel::Remote {
            remote_port,
            local_port,
        }) => {
            if *remote_port == 0 {
                return Err(SshError::Invalid(
                    "a reverse ssh tunnel from a profile needs a fixed server port (the resource's port)"
                        .to_string(),
                ));
            }
            TunnelMode::Reverse {
                local_port: *local_port,
                remote_port: Some(*remote_port),
            }
        }
    };
    let ready_timeout = with_ready_line.then(|| {
        plan.timeouts()
            .process_start
            .unwrap_or(DEFAULT_READY_TIMEOUT)
            .max(Duration::from_secs(1))
    });
    Ok((
        SshLaunch {
            target,
            master,
            tunnel,
            ready_timeout,
        },
        command,
    ))
}
