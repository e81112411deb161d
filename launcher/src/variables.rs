//! Predefined variables (ParaView's list) and the context a launch runs in. The names alone
//! are [`crate::profile::PREDEFINED`], beside the model the loaders check names against.
//!
//! | variable | value |
//! | --- | --- |
//! | `PV_CLIENT_HOST` | this host's name |
//! | `PV_CLIENT_PLATFORM` | `Linux`, `Apple`, `Windows`, `Unix` or `Unknown` |
//! | `PV_CONNECTION_URI` | the resource, e.g. `cs://node1:11111` |
//! | `PV_CONNECTION_SCHEME` | its scheme, e.g. `cs`, `csrc+tls` |
//! | `PV_SERVER_HOST`, `PV_SERVER_PORT` | the resource's (first) host and port (default 11111) |
//! | `PV_DATA_SERVER_HOST`, `PV_DATA_SERVER_PORT` | the data server's (`cdsrs`; default 11111) |
//! | `PV_RENDER_SERVER_HOST`, `PV_RENDER_SERVER_PORT` | the render server's (default 22221) |
//! | `PV_SSH_PF_SERVER_PORT` | the local end of ssh port forwarding, `-1` when there is none |
//! | `PV_VERSION_MAJOR`, `PV_VERSION_MINOR`, `PV_VERSION_PATCH` | from the profile's `paraview_version` (default 5.11.0) |
//! | `PV_VERSION` | `major.minor` |
//! | `PV_VERSION_FULL` | the full version text |
//! | `PV_APPLICATION_NAME` | `pv-launch` |
//! | `PV_APPLICATION_DIR` | the directory of the running pv-launch executable |
//!
//! As in ParaView, an option of the same name overrides a predefined variable.

use std::collections::BTreeMap;

use pv_transport::Resource;
use pv_transport::resource::{DEFAULT_RENDER_SERVER_PORT, DEFAULT_SERVER_PORT};

use crate::profile::ParaViewVersion;

/// The facts about this host a plan depends on. [`LaunchContext::from_host`] reads them;
/// tests and dry-run golden files build one by hand so output is deterministic.
#[derive(Clone, Debug)]
pub struct LaunchContext {
    /// This host's name (`PV_CLIENT_HOST`).
    pub client_host: String,
    /// `PV_CLIENT_PLATFORM`.
    pub client_platform: String,
    /// `PV_APPLICATION_DIR`.
    pub application_dir: String,
    /// pv-launch's own environment: `${env:NAME}` reads it, and `.pvsc` command lines see
    /// it as ParaView's do.
    pub process_env: BTreeMap<String, String>,
    /// Seed for `random` option defaults; `None` draws a fresh seed.
    pub seed: Option<u64>,
    /// `--set NAME=VALUE` assignments, in order. They were on pv-launch's command line,
    /// which every local user can read: a password option refuses them.
    pub sets: Vec<(String, String)>,
    /// Assignments whose values never were on a command line (`--set-from-file`): the
    /// only way to answer a password option without a prompt.
    pub private_sets: Vec<(String, zeroize::Zeroizing<String>)>,
    /// The launch id a batch job is tagged with; `None` draws a fresh one.
    pub launch_id: Option<String>,
    /// Values saved by an earlier launch for this server's options (`save = true`; see
    /// [`crate::saved`]): each becomes that option's default when it is still valid.
    pub saved: BTreeMap<String, String>,
}

impl LaunchContext {
    /// The context of this process on this host.
    pub fn from_host() -> Self {
        LaunchContext {
            client_host: host_name(),
            client_platform: platform().to_string(),
            application_dir: std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.display().to_string()))
                .unwrap_or_default(),
            process_env: std::env::vars().collect(),
            seed: None,
            sets: vec![],
            private_sets: vec![],
            launch_id: None,
            saved: BTreeMap::new(),
        }
    }

    /// A fixed context for tests and golden files: host `client.example`, platform
    /// `Linux`, an environment with only `HOME=/home/user` and `USER=user`, seed 1,
    /// launch id `0123456789ab`.
    pub fn fixed() -> Self {
        LaunchContext {
            client_host: "client.example".into(),
            client_platform: "Linux".into(),
            application_dir: "/opt/pv-launch/bin".into(),
            process_env: [("HOME", "/home/user"), ("USER", "user")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            seed: Some(1),
            sets: vec![],
            private_sets: vec![],
            launch_id: Some("0123456789ab".into()),
            saved: BTreeMap::new(),
        }
    }
}

/// ParaView's platform names.
pub fn platform() -> &'static str {
    if cfg!(windows) {
        "Windows"
    } else if cfg!(target_os = "macos") {
        "Apple"
    } else if cfg!(target_os = "linux") {
        "Linux"
    } else if cfg!(unix) {
        "Unix"
    } else {
        "Unknown"
    }
}

/// This host's name, from the kernel (falls back to `localhost`).
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The predefined variables for `resource`, with ssh forwarding port `ssh_pf_port`.
pub fn predefined(
    ctx: &LaunchContext,
    resource: &Resource,
    version: &ParaViewVersion,
    ssh_pf_port: Option<u16>,
) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    let mut put = |k: &str, val: String| {
        v.insert(k.to_string(), val);
    };
    let host = |h: Option<&pv_transport::Host>| h.map(|h| h.to_string()).unwrap_or_default();
    put("PV_CLIENT_HOST", ctx.client_host.clone());
    put("PV_CLIENT_PLATFORM", ctx.client_platform.clone());
    put("PV_CONNECTION_URI", resource.to_string());
    put("PV_CONNECTION_SCHEME", resource.scheme().to_string());
    // As ParaView's resource accessors: the server host/port belong to cs/csrc only, the
    // data and render ones to cdsrs/cdsrsrc only; the others read empty and default.
    let none = (String::new(), DEFAULT_SERVER_PORT);
    let no_render = (String::new(), DEFAULT_RENDER_SERVER_PORT);
    let (server, data, render) = match resource {
        Resource::Builtin => (none.clone(), none, no_render),
        Resource::ClientServer { server, .. } => (
            (
                host(server.host.as_ref()),
                server.port_or(DEFAULT_SERVER_PORT),
            ),
            none,
            no_render,
        ),
        Resource::DataRender { data, render, .. } => (
            none,
            (host(data.host.as_ref()), data.port_or(DEFAULT_SERVER_PORT)),
            (
                host(render.host.as_ref()),
                render.port_or(DEFAULT_RENDER_SERVER_PORT),
            ),
        ),
    };
    put("PV_SERVER_HOST", server.0);
    put("PV_SERVER_PORT", server.1.to_string());
    put("PV_DATA_SERVER_HOST", data.0);
    put("PV_DATA_SERVER_PORT", data.1.to_string());
    put("PV_RENDER_SERVER_HOST", render.0);
    put("PV_RENDER_SERVER_PORT", render.1.to_string());
    put(
        "PV_SSH_PF_SERVER_PORT",
        ssh_pf_port.map_or_else(|| "-1".to_string(), |p| p.to_string()),
    );
    put("PV_VERSION_MAJOR", version.major.to_string());
    put("PV_VERSION_MINOR", version.minor.to_string());
    put("PV_VERSION_PATCH", version.patch.to_string());
    put("PV_VERSION", format!("{}.{}", version.major, version.minor));
    put("PV_VERSION_FULL", version.full.clone());
    put("PV_APPLICATION_NAME", "pv-launch".to_string());
    put("PV_APPLICATION_DIR", ctx.application_dir.clone());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::PREDEFINED;

    #[test]
    fn every_predefined_name_gets_a_value() {
        let r = Resource::parse("cdsrs://ds:1//rs").unwrap();
        let v = predefined(
            &LaunchContext::fixed(),
            &r,
            &ParaViewVersion::default(),
            None,
        );
        for name in PREDEFINED {
            assert!(v.contains_key(*name), "{name}");
        }
        assert_eq!(v.len(), PREDEFINED.len());
        assert_eq!(v["PV_DATA_SERVER_PORT"], "1");
        assert_eq!(v["PV_RENDER_SERVER_PORT"], "22221");
        assert_eq!(v["PV_RENDER_SERVER_HOST"], "rs");
        assert_eq!(v["PV_SERVER_HOST"], "");
        assert_eq!(v["PV_SERVER_PORT"], "11111");
        let cs = Resource::parse("cs://h:5").unwrap();
        let v = predefined(
            &LaunchContext::fixed(),
            &cs,
            &ParaViewVersion::default(),
            None,
        );
        assert_eq!(
            (v["PV_SERVER_HOST"].as_str(), v["PV_SERVER_PORT"].as_str()),
            ("h", "5")
        );
        assert_eq!(
            (
                v["PV_DATA_SERVER_HOST"].as_str(),
                v["PV_DATA_SERVER_PORT"].as_str()
            ),
            ("", "11111")
        );
        assert_eq!(v["PV_VERSION"], "5.11");
        assert_eq!(v["PV_SSH_PF_SERVER_PORT"], "-1");
    }
}
