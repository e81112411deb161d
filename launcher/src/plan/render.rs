//! Printing a plan: the `--dry-run` text (exact and deterministic, compared by golden
//! tests) and its JSON form. Secrets print as `<secret>`.

use std::fmt::Write;
use std::time::Duration;

use pv_transport::{Direction, Resource};
use serde_json::{Value as Json, json};

use super::ssh::{MasterSettings, OpenSshCommands, remote_command, wrap_remote_command};
use super::*;
use crate::profile::options::format_double;
use crate::startup::batch::{ReverseVia, describe_reverse, relay_argv};

/// Seconds as a user writes them: `5 s`, `0.5 s`.
pub fn seconds(d: &Duration) -> String {
    format!("{} s", format_double(d.as_secs_f64()))
}

fn connect_timeout(t: &ConnectTimeout) -> String {
    match t {
        ConnectTimeout::OneAttempt => "one attempt".into(),
        ConnectTimeout::Within(d) => format!("keep trying for {}", seconds(d)),
        ConnectTimeout::Forever => "forever".into(),
    }
}

fn delay(d: &Delay) -> String {
    match d {
        Delay::None => "connect as soon as the process has started".into(),
        Delay::Wait(d) => format!("wait {} after the start, then connect", seconds(d)),
        Delay::UntilExit => {
            "wait for the command to exit (exit 0: the server detached; other: failure)".into()
        }
    }
}

/// How the client reaches the server, in words.
pub fn connection_summary(c: &ExpectedConnection) -> String {
    let transport = if c.resource.is_tls() {
        "TLS"
    } else {
        "plain TCP"
    };
    let ports: Vec<String> = c
        .resource
        .endpoints()
        .iter()
        .map(|(h, p)| match h {
            Some(h) => format!("{h}:{p}"),
            None => format!("port {p}"),
        })
        .collect();
    match c.resource.direction() {
        None => "builtin (in-process)".into(),
        Some(Direction::Forward) => format!(
            "forward: the client dials {}, {transport}",
            ports.join(" and ")
        ),
        Some(Direction::Reverse) => {
            let ports: Vec<String> = c
                .resource
                .endpoints()
                .iter()
                .map(|(_, p)| p.to_string())
                .collect();
            format!(
                "reverse: the client listens on port {} for the server, {transport}",
                ports.join(" and ")
            )
        }
    }
}

fn handshake(h: &ResolvedHandshake) -> String {
    match h {
        ResolvedHandshake::Native => {
            "native (token challenge-response; the token goes to the server on its stdin)".into()
        }
        ResolvedHandshake::ParaView(hs) => format!(
            "paraview {:?}, VTK hash {}",
            hs.handshake_string(),
            hs.vtk_hash().as_str()
        ),
        ResolvedHandshake::None => "none".into(),
    }
}

/// The placeholders the dry run prints for paths that exist only at run time.
const CONTROL_PLACEHOLDER: &str = "<control socket>";
const LOG_PLACEHOLDER: &str = "<ssh log>";

fn local_text(w: &mut String, p: &LocalCommand) {
    let _ = writeln!(w, "  argv:");
    for (i, a) in p.argv.iter().enumerate() {
        let _ = writeln!(w, "    [{i}] {a:?}");
    }
    if p.env.is_empty() {
        let _ = writeln!(w, "  environment: pv-launch's own, unchanged");
    } else {
        let _ = writeln!(w, "  environment: pv-launch's own, plus:");
        for (k, v) in &p.env {
            let _ = writeln!(w, "    {k}={v}");
        }
    }
}

/// The environment the OpenSSH master gets: pv-askpass answers ssh's prompts (its path,
/// found at run time, is shown as `pv-askpass`).
fn askpass_env(ssh: &SshPlan) -> Vec<(&'static str, &'static str)> {
    if ssh.target.batch_mode() || ssh.backend != BackendPlan::OpenSsh {
        return vec![];
    }
    vec![
        ("SSH_ASKPASS", "pv-askpass"),
        ("SSH_ASKPASS_REQUIRE", "force"),
    ]
}

/// The OpenSSH commands a launch runs, in order, with what each does: the master, a
/// reverse tunnel (before the server, which dials it), the server, a forward tunnel (once
/// the server's port is known). The same functions render them for the runtime.
fn openssh_commands(ssh: &SshPlan) -> Vec<(&'static str, Vec<String>)> {
    let c = OpenSshCommands {
        target: &ssh.target,
        control: CONTROL_PLACEHOLDER,
        log: LOG_PLACEHOLDER,
    };
    let mut out = vec![(
        "control master (authenticates once)",
        c.master(&MasterSettings::default()),
    )];
    let reverse = ssh
        .tunnels
        .iter()
        .filter(|t| matches!(t, Tunnel::Remote { .. }));
    let forward = ssh
        .tunnels
        .iter()
        .filter(|t| matches!(t, Tunnel::Local { .. }));
    out.extend(reverse.map(|t| ("reverse tunnel", c.forward(t))));
    out.push((
        "server (the remote command in pv-launch's cleanup wrapper)",
        c.run(&wrap_remote_command(&ssh.command())),
    ));
    out.extend(forward.map(|t| ("forward tunnel", c.forward(t))));
    out
}

fn tunnel_text(t: &Tunnel) -> String {
    match t {
        Tunnel::Local {
            local_port,
            host,
            remote_port,
        } => {
            let local = match local_port {
                0 => "a free port".to_string(),
                p => format!("127.0.0.1:{p}"),
            };
            let remote = match remote_port {
                0 => format!("{host}:<the port in the server's ready line>"),
                p => format!("{host}:{p}"),
            };
            format!("{local} here -> {remote} as seen from the remote host")
        }
        Tunnel::Remote {
            remote_port,
            local_port,
            public,
        } => {
            let bind = if *public {
                "0.0.0.0 (all interfaces: needs GatewayPorts in its sshd)"
            } else {
                "127.0.0.1"
            };
            let remote = match remote_port {
                0 => format!("{bind}:<a free port>"),
                p => format!("{bind}:{p}"),
            };
            format!(
                "{remote} on the remote host -> 127.0.0.1:{local_port} here (the port the client listens on)"
            )
        }
    }
}

fn ssh_text(w: &mut String, ssh: &SshPlan) {
    let t = &ssh.target;
    let _ = writeln!(w, "  remote host: {:?}", t.host());
    if let Some(u) = t.user() {
        let _ = writeln!(w, "  remote user: {u:?}");
    }
    let _ = writeln!(w, "  remote argv:");
    for (i, a) in ssh.remote.argv.iter().enumerate() {
        let _ = writeln!(w, "    [{i}] {a:?}");
    }
    if !ssh.remote.env.is_empty() {
        let _ = writeln!(w, "  remote environment (exported by the remote command):");
        for (k, v) in &ssh.remote.env {
            let _ = writeln!(w, "    {k}={v:?}");
        }
    }
    let _ = writeln!(w, "  remote command (one ssh argument): {}", ssh.command());
    for tunnel in &ssh.tunnels {
        let _ = writeln!(w, "  tunnel: {}", tunnel_text(tunnel));
    }
    let commands = match &ssh.backend {
        BackendPlan::OpenSsh => openssh_commands(ssh),
        BackendPlan::Russh(_) => vec![],
    };
    backend_text(w, ssh, ", in order", commands);
}

/// The ssh backend part of a dry run: for OpenSSH the `commands` that run and the
/// master's environment; for russh what the in-process client uses.
fn backend_text(
    w: &mut String,
    ssh: &SshPlan,
    order: &str,
    commands: Vec<(&'static str, Vec<String>)>,
) {
    match &ssh.backend {
        BackendPlan::OpenSsh => {
            let _ = writeln!(
                w,
                "  ssh backend: openssh; these commands run{order} ({CONTROL_PLACEHOLDER} and {LOG_PLACEHOLDER} are in a private directory made at run time):"
            );
            for (what, argv) in commands {
                let _ = writeln!(w, "    {what}:");
                for (i, a) in argv.iter().enumerate() {
                    let _ = writeln!(w, "      [{i}] {a:?}");
                }
            }
            let env = askpass_env(ssh);
            if !env.is_empty() {
                let _ = writeln!(
                    w,
                    "    the control master's environment: pv-launch's own, plus:"
                );
                for (k, v) in env {
                    let _ = writeln!(w, "      {k}={v}");
                }
            }
        }
        BackendPlan::Russh(settings) => {
            let _ = writeln!(
                w,
                "  ssh backend: russh (in process; no ssh program runs): {}",
                russh_summary(&ssh.target, settings)
            );
        }
    }
}

/// What the russh backend uses, in words.
fn russh_summary(t: &SshTarget, s: &RusshSettings) -> String {
    let mut parts = vec![format!("port {}", t.port().unwrap_or(22))];
    parts.push(match &s.known_hosts {
        Some(k) => format!("known hosts {}", k.display()),
        None => "known hosts ~/.ssh/known_hosts".to_string(),
    });
    if !s.identity_files.is_empty() {
        let files: Vec<String> = s
            .identity_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        parts.push(format!("identity files {}", files.join(", ")));
    }
    parts.push(
        if t.batch_mode() {
            "no prompts (batch mode)"
        } else if s.refuse_unknown_hosts {
            "unknown hosts refused"
        } else {
            "unknown hosts asked about"
        }
        .to_string(),
    );
    parts.join("; ")
}

/// The batch part of a dry run: the job, its script and `sbatch` argv exactly as they are
/// submitted, and where the scheduler's commands run.
fn batch_text(
    w: &mut String,
    b: &BatchStart,
    place: &Place,
    direction: Option<Direction>,
    native: bool,
) {
    let rendered = match b.dry_run_plan() {
        Ok(r) => r,
        Err(e) => {
            // The plan was checked when it was made; this cannot happen.
            let _ = writeln!(w, "  (cannot render the job: {e})");
            return;
        }
    };
    let home_note = match (&b.jobs_dir, place) {
        (JobsDir::RemoteHome, _) => {
            format!(" ({REMOTE_HOME_PLACEHOLDER} is read on the login node when the launch runs)")
        }
        _ => String::new(),
    };
    let _ = writeln!(
        w,
        "  scheduler: slurm, the job submitted {}",
        match place {
            Place::Local(_) => "on this host".to_string(),
            Place::Ssh(ssh) => format!("on {:?} over ssh", ssh.target.host()),
        }
    );
    let _ = writeln!(
        w,
        "  launch id: {} (job name {}, comment pv-launch:{})",
        b.launch_id,
        b.spec.job_name_for(&b.launch_id),
        b.launch_id
    );
    let _ = writeln!(w, "  job directory: {}{home_note}", rendered.files.dir);
    let _ = writeln!(
        w,
        "    made 0700 before submitting; {}",
        if native {
            "the token waits in its 0600 `secrets` file (written through stdin), which the job reads once and deletes"
        } else {
            "its 0600 `secrets` file holds no token (the server has no native handshake), only an empty line that lets the job start once: the job reads and deletes it"
        }
    );
    let _ = writeln!(w, "  server argv in the job:");
    for (i, a) in b.server_argv.iter().enumerate() {
        let _ = writeln!(w, "    [{i}] {a:?}");
    }
    let _ = writeln!(w, "  submit command (the job script goes on its stdin):");
    for (i, a) in rendered.sbatch_argv.iter().enumerate() {
        let _ = writeln!(w, "    [{i}] {a:?}");
    }
    let _ = writeln!(w, "  job script:");
    for line in rendered.script.lines() {
        let _ = writeln!(w, "    | {line}");
    }
    let _ = writeln!(
        w,
        "  queue timeout: {}",
        b.queue_timeout.as_ref().map_or(
            "none (wait as long as the job is pending; Ctrl-C cancels it)".to_string(),
            seconds
        )
    );
    match place {
        Place::Ssh(ssh) => batch_ssh_text(w, ssh, b.reverse.as_ref()),
        Place::Local(_) if direction == Some(Direction::Reverse) => {
            let _ = writeln!(
                w,
                "  the server in the job dials the client, which listens on this host's 127.0.0.1 (a job on another node cannot reach it: submit over ssh for the relay)"
            );
        }
        Place::Local(_) => {
            let _ = writeln!(
                w,
                "  the client dials the job's batch host (squeue %B) at {}",
                match b.port {
                    Some(p) => format!("port {p} (fixed: the server prints no ready line)"),
                    None => "the port in the server's ready line".to_string(),
                }
            );
        }
    }
}

/// How a batch job submitted over ssh is reached: the login node, the commands run there,
/// the tunnel to the job's node.
fn batch_ssh_text(w: &mut String, ssh: &SshPlan, reverse: Option<&ReverseBatch>) {
    let t = &ssh.target;
    if let Some(u) = t.user() {
        let _ = writeln!(w, "  login node user: {u:?}");
    }
    if !ssh.remote.env.is_empty() {
        let _ = writeln!(
            w,
            "  the scheduler commands' environment on the login node:"
        );
        for (k, v) in &ssh.remote.env {
            let _ = writeln!(w, "    {k}={v:?}");
        }
    }
    let _ = writeln!(
        w,
        "  every scheduler command runs as one ssh argument, e.g. the submission: {}",
        ssh.command()
    );
    for tunnel in &ssh.tunnels {
        let _ = writeln!(w, "  tunnel: {}", tunnel_text(tunnel));
    }
    let c = OpenSshCommands {
        target: &ssh.target,
        control: CONTROL_PLACEHOLDER,
        log: LOG_PLACEHOLDER,
    };
    let mut commands = vec![
        (
            "control master (authenticates once)",
            c.master(&MasterSettings::default()),
        ),
        (
            "the submission (squeue, scancel and cat run the same way)",
            c.run(&ssh.command()),
        ),
    ];
    if let Some(r) = reverse {
        let _ = writeln!(
            w,
            "  the way back: {}",
            describe_reverse(r.via, r.host.as_deref())
        );
        let _ = writeln!(
            w,
            "    the job's {REVERSE_HOST_PLACEHOLDER} and {REVERSE_PORT_PLACEHOLDER} are filled in before the submission"
        );
    }
    let relay = reverse.filter(|r| r.via == ReverseVia::Relay).map(|r| {
        let mut argv = relay_argv(r.host.as_deref().unwrap_or(""), 0);
        if let Some(port) = argv.last_mut() {
            *port = "<the -R tunnel's port>".to_string();
        }
        argv
    });
    if let Some(argv) = &relay {
        let _ = writeln!(w, "  relay argv on the login node:");
        for (i, a) in argv.iter().enumerate() {
            let _ = writeln!(w, "    [{i}] {a:?}");
        }
    }
    for t in &ssh.tunnels {
        match t {
            Tunnel::Local { .. } => {
                commands.push(("forward tunnel, once the job runs", c.forward(t)));
            }
            Tunnel::Remote { .. } => {
                commands.insert(1, ("reverse tunnel, before the submission", c.forward(t)));
            }
        }
    }
    if let Some(argv) = &relay {
        commands.insert(
            2,
            (
                "the relay (in pv-launch's cleanup wrapper), before the submission",
                c.run(&wrap_remote_command(&remote_command(
                    argv,
                    &ssh.remote.env,
                    None,
                ))),
            ),
        );
    }
    if matches!(ssh.backend, BackendPlan::Russh(_)) {
        commands.clear();
    }
    backend_text(w, ssh, "", commands);
}

impl Plan {
    /// The `--dry-run` text: exact and deterministic for a given plan.
    pub fn to_dry_run_text(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(w, "server: {:?}", self.server);
        let _ = writeln!(w, "defined at: {}", self.at);
        match &self.launch {
            Launch::Nothing => {
                let _ = writeln!(w, "start: nothing (manual startup)");
            }
            Launch::Process(p) => {
                let _ = writeln!(w, "start: {} process", p.mechanism());
                if let How::Batch(b) = &p.how {
                    batch_text(
                        w,
                        b,
                        &p.place,
                        self.connection.resource.direction(),
                        matches!(self.connection.handshake, ResolvedHandshake::Native),
                    );
                    let timeout = self
                        .timeouts
                        .process_start
                        .as_ref()
                        .map_or("none".to_string(), seconds);
                    let native = matches!(self.connection.handshake, ResolvedHandshake::Native);
                    let _ = match (&p.ready_pattern, native) {
                        (_, true) => {
                            writeln!(w, "  ready line timeout once the job runs: {timeout}")
                        }
                        (Some(r), false) => writeln!(
                            w,
                            "  ready (no ready line; pv-launch never connects to the server): once the job runs, when a line of the server's stdout file or the job's output file matches {:?}, within {timeout}{}",
                            r.regex.as_str(),
                            match r.required {
                                true => "",
                                false =>
                                    " (ParaView's default; if none does in time, hand over anyway)",
                            }
                        ),
                        (None, false) => writeln!(
                            w,
                            "  ready (no ready line; pv-launch never connects to the server): once the job runs{} (the client listens first; the server dials it)",
                            match &p.delay {
                                Delay::Wait(d) => format!(
                                    " and then {} more (delay; the job ending meanwhile is a failure)",
                                    seconds(d)
                                ),
                                _ => String::new(),
                            }
                        ),
                    };
                } else {
                    match &p.place {
                        Place::Local(local) => local_text(w, local),
                        Place::Ssh(ssh) => ssh_text(w, ssh),
                    }
                    let _ = writeln!(
                        w,
                        "  process start timeout: {}",
                        self.timeouts
                            .process_start
                            .as_ref()
                            .map_or("none".to_string(), seconds)
                    );
                    match &p.ready_pattern {
                        Some(r) => {
                            let _ = writeln!(
                                w,
                                "  then (without a ready line): ready when the output matches {:?}{}",
                                r.regex.as_str(),
                                match (&p.delay, r.required) {
                                    (_, true) => String::new(),
                                    (Delay::Wait(d), false) => format!(
                                        " or after {} (ParaView's delay), whichever comes first",
                                        seconds(d)
                                    ),
                                    (_, false) => {
                                        " (ParaView's default; if none does in time, hand over anyway)"
                                            .to_string()
                                    }
                                }
                            );
                        }
                        // A native server is given its token and says it is ready
                        // (port, TLS fingerprint) on the launch channel: that line, not
                        // `delay`, starts the connection.
                        None if matches!(self.connection.handshake, ResolvedHandshake::Native) => {
                            let _ = writeln!(
                                w,
                                "  then: wait for the server's ready line on the launch channel, then connect (delay does not apply)"
                            );
                        }
                        None => {
                            let _ = writeln!(w, "  then: {}", delay(&p.delay));
                        }
                    }
                }
            }
        }
        if let Some(client) = &self.client {
            let _ = writeln!(
                w,
                "client (unless --exec or --no-client; started once the server is ready, or first when it listens for the server):"
            );
            for (i, a) in client.written().iter().enumerate() {
                let _ = writeln!(w, "    [{i}] {a:?}");
            }
        }
        let c = &self.connection;
        let _ = writeln!(w, "connection: {}", connection_summary(c));
        let _ = writeln!(w, "  resource: {}", c.resource);
        let _ = writeln!(w, "  handshake: {}", handshake(&c.handshake));
        let _ = writeln!(w, "  timeout: {}", connect_timeout(&c.timeout));
        if !self.warnings.is_empty() {
            let _ = writeln!(w, "warnings:");
            for warning in &self.warnings {
                let _ = writeln!(w, "  {warning}");
            }
        }
        out
    }

    /// The plan as JSON (the `--dry-run --json` output).
    pub fn to_json(&self) -> Json {
        let value = |v: &Value| match v {
            Value::Plain(s) => Json::String(s.clone()),
            Value::Secret(_) => json!({"secret": true}),
        };
        let launch = match &self.launch {
            Launch::Nothing => json!({"mechanism": "manual"}),
            Launch::Process(p) => {
                let (argv, env, remote) = match &p.place {
                    Place::Local(l) => (
                        l.argv.clone(),
                        l.env
                            .iter()
                            .map(|(k, v)| (k.clone(), value(v)))
                            .collect::<serde_json::Map<_, _>>(),
                        None,
                    ),
                    Place::Ssh(ssh) => {
                        let commands = openssh_commands(ssh);
                        let env = askpass_env(ssh)
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), Json::String(v.to_string())))
                            .collect();
                        let remote = json!({
                            "host": ssh.target.host(), "user": ssh.target.user(), "argv": ssh.remote.argv,
                            "env": ssh.remote.env.iter().map(|(k, v)| (k.clone(), Json::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
                            "command": ssh.command(), "tunnels": ssh.tunnels, "backend": ssh.backend_kind(),
                            "commands": commands.iter().map(|(_, argv)| argv).collect::<Vec<_>>(),
                        });
                        (
                            commands.first().map(|(_, a)| a.clone()).unwrap_or_default(),
                            env,
                            Some(remote),
                        )
                    }
                };
                let batch = p.batch().and_then(|b| {
                    let r = b.dry_run_plan().ok()?;
                    Some(json!({
                        "launch_id": b.launch_id.as_str(),
                        "job_name": b.spec.job_name_for(&b.launch_id),
                        "job_dir": r.files.dir,
                        "jobs_dir_on_login_node_home": b.jobs_dir == JobsDir::RemoteHome,
                        "server_argv": b.server_argv,
                        "sbatch_argv": r.sbatch_argv,
                        "script": r.script,
                        "queue_timeout": b.queue_timeout.map(|d| d.as_secs_f64()),
                    }))
                    .map(|mut j| {
                        if let Some(r) = &b.reverse {
                            j["reverse"] = json!({"via": r.via.as_str(), "host": r.host});
                        }
                        j
                    })
                });
                let mut launch = json!({
                    "mechanism": p.mechanism(),
                    "argv": argv,
                    "env": env,
                    "delay": match &p.delay { Delay::None => json!(0), Delay::Wait(d) => json!(d.as_secs_f64()), Delay::UntilExit => json!(-1) },
                    "process_start_timeout": self.timeouts.process_start.map(|d| d.as_secs_f64()),
                    "ready_pattern": p.ready_pattern.as_ref().map(|r| json!({"regex": r.regex.as_str(), "required": r.required})),
                    "remote": remote,
                });
                if let Some(b) = batch {
                    launch["batch"] = b;
                }
                launch
            }
        };
        let c = &self.connection;
        json!({
            "server": self.server,
            "defined_at": self.at.to_string(),
            "launch": launch,
            "connection": {
                "resource": c.resource.to_string(),
                "direction": match c.resource.direction() { Some(Direction::Forward) => "forward", Some(Direction::Reverse) => "reverse", None => "builtin" },
                "tls": c.resource.is_tls(),
                "data_render_pair": matches!(c.resource, Resource::DataRender { .. }),
                "handshake": match &c.handshake {
                    ResolvedHandshake::Native => json!({"kind": "native"}),
                    ResolvedHandshake::ParaView(hs) => json!({"kind": "paraview", "string": hs.handshake_string(), "vtk_hash": hs.vtk_hash().as_str(), "connect_id": hs.connect_id()}),
                    ResolvedHandshake::None => json!({"kind": "none"}),
                },
                "timeout": match &c.timeout { ConnectTimeout::OneAttempt => json!(0), ConnectTimeout::Within(d) => json!(d.as_secs_f64()), ConnectTimeout::Forever => json!(-1) },
            },
            "variables": self.variables.iter().map(|v| json!({"name": v.name, "value": value(&v.value), "origin": v.origin})).collect::<Vec<_>>(),
            "client": self.client.as_ref().map(|c| c.written()),
            "warnings": self.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
        })
    }
}
