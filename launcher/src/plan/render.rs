//! Printing a plan: the `--dry-run` text (exact and deterministic, compared by golden
//! tests) and its JSON form. Secrets print as `<secret>`.

use std::fmt::Write;
use std::time::Duration;

use pv_transport::{Direction, Resource};
use serde_json::{Value as Json, json};

use super::*;
use crate::profile::SshBackend;
use crate::profile::options::format_double;

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
        ResolvedHandshake::ParaView {
            handshake,
            vtk_hash,
            ..
        } => format!("paraview {handshake:?}, VTK hash {vtk_hash}"),
        ResolvedHandshake::None => "none".into(),
    }
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
                let _ = writeln!(w, "start: {} process", p.mechanism);
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
                if let Some(r) = &p.remote {
                    let _ = writeln!(w, "  remote host: {:?}", r.host);
                    if let Some(u) = &r.user {
                        let _ = writeln!(w, "  remote user: {u:?}");
                    }
                    let _ = writeln!(w, "  remote argv:");
                    for (i, a) in r.argv.iter().enumerate() {
                        let _ = writeln!(w, "    [{i}] {a:?}");
                    }
                    let _ = writeln!(w, "  remote command (one ssh argument): {}", r.command);
                    if r.backend == SshBackend::Russh {
                        let _ = writeln!(
                            w,
                            "  ssh backend: russh (in process; the argv above is not run, its ssh options are read from it)"
                        );
                    }
                    for t in &r.tunnels {
                        let _ = match t {
                            Tunnel::Local {
                                local_port,
                                remote_port,
                            } => writeln!(
                                w,
                                "  tunnel: 127.0.0.1:{local_port} here -> localhost:{remote_port} on the remote host"
                            ),
                            Tunnel::Remote {
                                remote_port,
                                local_port,
                            } => writeln!(
                                w,
                                "  tunnel: 127.0.0.1:{remote_port} on the remote host -> localhost:{local_port} here"
                            ),
                        };
                    }
                }
                let _ = writeln!(
                    w,
                    "  process start timeout: {}",
                    self.timeouts
                        .process_start
                        .as_ref()
                        .map_or("none".to_string(), seconds)
                );
                let _ = writeln!(w, "  then: {}", delay(&p.delay));
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
            Launch::Process(p) => json!({
                "mechanism": p.mechanism,
                "argv": p.argv,
                "env": p.env.iter().map(|(k, v)| (k.clone(), value(v))).collect::<serde_json::Map<_, _>>(),
                "delay": match &p.delay { Delay::None => json!(0), Delay::Wait(d) => json!(d.as_secs_f64()), Delay::UntilExit => json!(-1) },
                "process_start_timeout": self.timeouts.process_start.map(|d| d.as_secs_f64()),
                "remote": p.remote.as_ref().map(|r| json!({
                    "host": r.host, "user": r.user, "argv": r.argv, "command": r.command, "tunnels": r.tunnels, "backend": r.backend,
                })),
            }),
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
                    ResolvedHandshake::ParaView { handshake, vtk_hash, connect_id } => json!({"kind": "paraview", "string": handshake, "vtk_hash": vtk_hash, "connect_id": connect_id}),
                    ResolvedHandshake::None => json!({"kind": "none"}),
                },
                "timeout": match &c.timeout { ConnectTimeout::OneAttempt => json!(0), ConnectTimeout::Within(d) => json!(d.as_secs_f64()), ConnectTimeout::Forever => json!(-1) },
            },
            "variables": self.variables.iter().map(|v| json!({"name": v.name, "value": value(&v.value), "origin": v.origin})).collect::<Vec<_>>(),
            "warnings": self.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
        })
    }
}
