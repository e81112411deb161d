//! The pure-Rust ssh backend (cargo feature `russh`): one in-process ssh connection per
//! launch, with the same rules as the OpenSSH backend.
//!
//! - Host keys are checked against a known_hosts file. An unknown host's key is put to the
//!   [`Prompter`] as the host-key question (`yes` learns it into the file, anything else
//!   refuses); a changed key is refused without a question. There is no accept-all.
//! - Authentication, each method tried at most once, in OpenSSH's order: public keys
//!   (an encrypted key's passphrase is asked through the [`Prompter`]), keyboard-interactive
//!   (every round, empty rounds included), password. A wrong answer ends the launch: it is
//!   never retried (2FA lockouts).
//! - The remote command is the same wrapped command as with OpenSSH
//!   ([`wrap_remote_command`]), so the remote process group ends when the channel's stdin
//!   does: on [`RusshRemote::stop`], on drop of the connection, or when it is lost.
//! - Tunnels: `-L` as a local listener on 127.0.0.1 whose connections become
//!   `direct-tcpip` channels; `-R` as `tcpip-forward` on the remote 127.0.0.1 with port 0,
//!   the allocated port read back, each forwarded connection bridged to 127.0.0.1 here.
//!
//! Not supported here (use the OpenSSH backend): the user's `~/.ssh/config`, jump hosts,
//! ssh-agent, RSA keys (the `rsa` crate is left out, RUSTSEC-2023-0071), certificates.
//! A profile selects this backend with `backend = "russh"`; [`super::russh_plan`] maps
//! the plan's ssh options onto [`RusshOptions`] and refuses the ones this backend cannot
//! honour.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pv_askpass::PromptKind;
use pv_askpass::bridge::{PROTOCOL_VERSION, Request};
use pv_transport::launch::{ReadyLine, Secrets};
use russh::client::{self, ChannelOpenHandle, Msg};
use russh::keys::{
    HashAlg, PublicKey, PublicKeyOrCertificate, check_known_hosts_path,
    known_hosts::learn_known_hosts_path,
};
use russh::{Channel, ChannelMsg};
use tokio::sync::watch;
use zeroize::Zeroizing;

use super::askpass_bridge::prompt_option;
use super::{AskpassProgram, SshOptions, find_askpass};
use super::{
    RemoteIo, RemoteOutcome, STOP_GRACE, SshError, SshTarget, remote_start, wrap_remote_command,
};
use crate::plan::RusshSettings;
use crate::prompt::{PromptError, PromptRequest, Prompter};
use crate::startup::channel::{self as launch_channel, OutputSink, StderrTail};

mod auth;

use auth::authenticate;

/// How the russh connection is made.
#[derive(Clone)]
pub struct RusshOptions {
    /// The known_hosts file host keys are checked against (and learned into).
    pub known_hosts: PathBuf,
    /// Private keys to try, in order (OpenSSH format; ed25519 or ECDSA).
    pub identity_files: Vec<PathBuf>,
    /// Who answers the host-key question, passphrases, passwords and one-time codes.
    /// Without one, only unencrypted keys and known hosts work.
    pub prompter: Option<Arc<dyn Prompter + Send + Sync>>,
    /// How long the TCP connection may take.
    pub connect_timeout: Duration,
    /// How long the key exchange and authentication may take, prompts included.
    pub auth_timeout: Duration,
    /// Keepalive interval and how many unanswered keepalives end the connection.
    pub keepalive: (Duration, usize),
    /// The authentication methods that may be tried (OpenSSH's names: `publickey`,
    /// `keyboard-interactive`, `password`), like `PreferredAuthentications` but without
    /// its ordering: the backend's order is always the one above. `None`: all three.
    pub methods: Option<Vec<String>>,
    /// Whether an unknown host's key is put to the prompter (`StrictHostKeyChecking=ask`,
    /// the default) or refused without a question (`StrictHostKeyChecking=yes`). A changed
    /// key is always refused.
    pub ask_unknown_host: bool,
}

impl std::fmt::Debug for RusshOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RusshOptions")
            .field("known_hosts", &self.known_hosts)
            .field("identity_files", &self.identity_files)
            .field("prompter", &self.prompter.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("auth_timeout", &self.auth_timeout)
            .field("keepalive", &self.keepalive)
            .field("methods", &self.methods)
            .field("ask_unknown_host", &self.ask_unknown_host)
            .finish()
    }
}

impl RusshOptions {
    /// `~/.ssh/known_hosts`, no identity file, no prompter, 20 s to connect, 300 s to
    /// authenticate (prompts included), a keepalive every 15 s (3 missed end the
    /// connection), every authentication method, unknown hosts asked about.
    pub fn new() -> RusshOptions {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        RusshOptions {
            known_hosts: home.join(".ssh").join("known_hosts"),
            identity_files: Vec::new(),
            prompter: None,
            connect_timeout: Duration::from_secs(20),
            auth_timeout: Duration::from_secs(300),
            keepalive: (Duration::from_secs(15), 3),
            methods: None,
            ask_unknown_host: true,
        }
    }
}

impl Default for RusshOptions {
    fn default() -> Self {
        RusshOptions::new()
    }
}

/// Ask `prompter` one question, off the async threads (prompters block).
async fn ask(
    prompter: &Option<Arc<dyn Prompter + Send + Sync>>,
    kind: PromptKind,
    prompt: String,
    echo: bool,
    host: &str,
    fingerprint: Option<String>,
) -> Result<Zeroizing<String>, SshError> {
    let cancelled = |prompt: &str| SshError::Cancelled {
        host: host.to_string(),
        prompt: prompt.lines().next().unwrap_or_default().to_string(),
    };
    let Some(prompter) = prompter.clone() else {
        return Err(SshError::Cancelled {
            host: host.to_string(),
            prompt: format!(
                "{} (no prompter to answer it)",
                prompt.lines().next().unwrap_or_default()
            ),
        });
    };
    let request = Request {
        v: PROTOCOL_VERSION,
        prompt: prompt.clone(),
        kind,
        echo,
        host: Some(host.to_string()),
        fingerprint,
    };
    let answer = tokio::task::spawn_blocking(move || {
        let option = prompt_option(&request);
        prompter.ask(&PromptRequest {
            option: &option,
            default: None,
            problem: None,
        })
    })
    .await
    .map_err(|_| cancelled(&prompt))?;
    answer.map_err(|_| cancelled(&prompt))
}

/// The russh event handler: host-key check and reverse-forward bridging.
struct Client {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    prompter: Option<Arc<dyn Prompter + Send + Sync>>,
    ask_unknown_host: bool,
    refused: Arc<Mutex<Option<String>>>,
    reverse: Arc<Mutex<HashMap<u32, u16>>>,
}

impl Client {
    fn refuse(&self, why: String) -> bool {
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        false
    }

    /// The known_hosts line and algorithm of a key of another type known for this host.
    fn known_with_other_key(&self, key: &PublicKey) -> Option<(usize, String)> {
        let known = russh::keys::known_hosts::known_host_keys_path(
            &self.host,
            self.port,
            &self.known_hosts,
        )
        .ok()?;
        known
            .into_iter()
            .find(|(_, k)| k.algorithm() != key.algorithm())
            .map(|(line, k)| (line, k.algorithm().as_str().to_string()))
    }

    async fn check_key(&mut self, key: &PublicKey) -> bool {
        let known = if self.known_hosts.exists() {
            check_known_hosts_path(&self.host, self.port, key, &self.known_hosts)
        } else {
            Ok(false)
        };
        match known {
            Ok(true) => true,
            Err(russh::keys::Error::KeyChanged { line }) => self.refuse(format!(
                "the host key of {} changed (known_hosts {} line {line}); refusing",
                self.host,
                self.known_hosts.display()
            )),
            Err(e) => self.refuse(format!("cannot read {}: {e}", self.known_hosts.display())),
            // Known with a key of another type: a downgrade or a changed host, not an
            // unknown one. OpenSSH refuses it; so does this backend, and says why.
            Ok(false) if self.known_with_other_key(key).is_some() => {
                let (line, other) = self.known_with_other_key(key).unwrap_or_default();
                self.refuse(format!(
                    "{} offered a {} host key, but {} line {line} knows it by a {other} key; \
                     refusing (if the host really changed its keys, remove the old entry: \
                     ssh-keygen -R {})",
                    self.host,
                    key.algorithm().as_str(),
                    self.known_hosts.display(),
                    self.host
                ))
            }
            Ok(false) if !self.ask_unknown_host => self.refuse(format!(
                "the host key of {} is not in {} and StrictHostKeyChecking=yes forbids asking",
                self.host,
                self.known_hosts.display()
            )),
            Ok(false) => {
                let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
                let name = if self.port == 22 {
                    self.host.clone()
                } else {
                    format!("[{}]:{}", self.host, self.port)
                };
                let question = format!(
                    "The authenticity of host '{name}' can't be established.\n{} key fingerprint is {fingerprint}.\nThis key is not known by any other names.\nAre you sure you want to continue connecting (yes/no/[fingerprint])? ",
                    key.algorithm().as_str().to_uppercase().replace("SSH-", "")
                );
                let answer = ask(
                    &self.prompter,
                    PromptKind::HostKey,
                    question.clone(),
                    true,
                    &self.host,
                    Some(fingerprint),
                )
                .await;
                match answer {
                    Ok(a) if a.trim().eq_ignore_ascii_case("yes") => {
                        if let Err(e) =
                            learn_known_hosts_path(&self.host, self.port, key, &self.known_hosts)
                        {
                            return self.refuse(format!(
                                "cannot record the host key in {}: {e}",
                                self.known_hosts.display()
                            ));
                        }
                        true
                    }
                    _ => self.refuse(question.lines().next().unwrap_or_default().to_string()),
                }
            }
        }
    }
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => Ok(self.check_key(key).await),
            PublicKeyOrCertificate::Certificate(_) => Ok(self.refuse(
                "the server presented a host certificate, which this backend does not check"
                    .to_string(),
            )),
        }
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        _connected_address: &str,
        connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let local = self
            .reverse
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&connected_port)
            .copied();
        let Some(local) = local else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(async move {
            if let Ok(mut tcp) = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, local)).await
            {
                let mut stream = channel.into_stream();
                let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
            }
        });
        Ok(())
    }
}

/// An authenticated in-process ssh connection. Dropping it closes the connection, which
/// ends every remote command started through it (their channels' stdin ends).
pub struct RusshConnection {
    handle: Arc<client::Handle<Client>>,
    host: String,
    reverse: Arc<Mutex<HashMap<u32, u16>>>,
    forwards: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RusshConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RusshConnection")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

fn russh_err(host: &str, what: &str) -> impl FnOnce(russh::Error) -> SshError + use<> {
    let (host, what) = (host.to_string(), what.to_string());
    move |e| SshError::Connect {
        host,
        status: format!("{what}: {e}"),
        command: "(russh backend, in process)".to_string(),
        log_tail: Vec::new(),
    }
}

impl RusshConnection {
    /// Connect to `target` (its host, port and user; its other ssh options do not apply
    /// to this backend) and authenticate, asking `options.prompter` when needed.
    pub async fn connect(
        target: &SshTarget,
        options: &RusshOptions,
    ) -> Result<RusshConnection, SshError> {
        let host = target.host().to_string();
        let shown = target.display_name();
        let port = target.port().unwrap_or(22);
        let user = match target.user() {
            Some(u) => u.to_string(),
            None => std::env::var("USER").map_err(|_| {
                SshError::Invalid("no ssh user given and $USER is not set".to_string())
            })?,
        };
        let config = Arc::new(client::Config {
            keepalive_interval: Some(options.keepalive.0),
            keepalive_max: options.keepalive.1,
            inactivity_timeout: None,
            ..Default::default()
        });
        let refused = Arc::new(Mutex::new(None));
        let reverse = Arc::new(Mutex::new(HashMap::new()));
        let handler = Client {
            host: host.clone(),
            port,
            known_hosts: options.known_hosts.clone(),
            prompter: options.prompter.clone(),
            ask_unknown_host: options.ask_unknown_host,
            refused: Arc::clone(&refused),
            reverse: Arc::clone(&reverse),
        };
        let timeout = |what: &str, waited| SshError::Timeout {
            host: shown.clone(),
            what: what.to_string(),
            waited,
            log_tail: Vec::new(),
        };
        // The TCP connection within connect_timeout; the key exchange (the host-key
        // question may wait for the user) and authentication within auth_timeout.
        let tcp = tokio::time::timeout(
            options.connect_timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| timeout("connecting", options.connect_timeout))?
        .map_err(SshError::io(format!("connect to {host}:{port}")))?;
        let _ = tcp.set_nodelay(true);
        let work = async {
            let mut handle = match client::connect_stream(config, tcp, handler).await {
                Ok(h) => h,
                Err(e) => {
                    let why = refused.lock().unwrap_or_else(|e| e.into_inner()).take();
                    return Err(match why {
                        Some(prompt) => SshError::HostKeyRefused {
                            host: shown.clone(),
                            prompt,
                        },
                        None => russh_err(&shown, "connect")(e),
                    });
                }
            };
            authenticate(&mut handle, &user, &shown, options).await?;
            Ok(handle)
        };
        let handle = tokio::time::timeout(options.auth_timeout, work)
            .await
            .map_err(|_| timeout("key exchange and authentication", options.auth_timeout))??;
        Ok(RusshConnection {
            handle: Arc::new(handle),
            host: shown,
            reverse,
            forwards: Vec::new(),
        })
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// `user@host`, for messages.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Run `command` (a POSIX sh command line), wrapped for cleanup like the OpenSSH
    /// backend's ([`wrap_remote_command`]); the secrets line (or an empty line) goes in on
    /// the channel's stdin. With `ready_timeout`, wait for the ready line (a command that
    /// exits with status 0 before it has detached its server: `None`).
    pub async fn start_server(
        &self,
        command: &str,
        secrets: Option<&Secrets>,
        ready_timeout: Option<Duration>,
        output: OutputSink,
    ) -> Result<(RusshRemote, Option<ReadyLine>), SshError> {
        let io = RemoteIo {
            secrets,
            ready_timeout,
            output,
            pattern: None,
        };
        self.start(command, io).await
    }

    /// [`RusshConnection::start_server`] with the whole launch-channel exchange.
    pub(crate) async fn start(
        &self,
        command: &str,
        io: RemoteIo<'_>,
    ) -> Result<(RusshRemote, Option<ReadyLine>), SshError> {
        let (secrets, ready_timeout, output) = (io.secrets, io.ready_timeout, io.output);
        let host = self.host.clone();
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(russh_err(&host, "open a session channel"))?;
        channel
            .exec(true, wrap_remote_command(command))
            .await
            .map_err(russh_err(&host, "exec"))?;
        channel
            .data_bytes(launch_channel::secrets_line(secrets).to_vec())
            .await
            .map_err(russh_err(&host, "write the secrets line"))?;
        let (read, write) = channel.split();
        let (status_tx, status_rx) = watch::channel::<Option<Option<u32>>>(None);
        // The channel's messages become two byte streams, read by the launch channel's
        // own line readers like any process's stdout and stderr.
        let (out_w, out_r) = tokio::io::duplex(64 * 1024);
        let (err_w, err_r) = tokio::io::duplex(64 * 1024);
        let reader = tokio::spawn(pump_channel(read, out_w, err_w, status_tx));
        let mut readers = launch_channel::spawn_readers(out_r, err_r, output, true, io.pattern);
        let matched = std::mem::replace(&mut readers.matched, tokio::sync::oneshot::channel().1);
        let mut remote = RusshRemote {
            matched: io.pattern.is_some().then_some(matched),
            write: Some(write),
            pgid: None,
            host: host.clone(),
            tail: readers.tail.clone(),
            status: status_rx,
            reader,
        };
        let started = remote_start(readers, remote.exit_status(), ready_timeout).await;
        remote.pgid = started.pgid;
        match started.outcome() {
            RemoteOutcome::Started(ready) => Ok((remote, ready)),
            RemoteOutcome::EndedEarly => Err(remote.ended_early(self).await),
            RemoteOutcome::BadLine(message) => Err(SshError::BadReadyLine { host, message }),
            RemoteOutcome::TimedOut(waited) => {
                let log_tail = remote.stderr_tail();
                remote.stop(Some(self)).await;
                Err(SshError::ready_timeout(host, waited, log_tail))
            }
        }
    }

    /// Run `command` (one POSIX sh command line, no wrapper) to its end with `stdin`
    /// written to it (then end-of-file): its exit status (`None`: it sent none), stdout
    /// and stderr. For the batch scheduler's commands; `stdin` may hold a secret.
    pub async fn run_command(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
    ) -> Result<(Option<u32>, Vec<u8>, Vec<u8>), SshError> {
        let host = self.host.clone();
        let mut channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(russh_err(&host, "open a session channel"))?;
        channel
            .exec(true, command)
            .await
            .map_err(russh_err(&host, "exec"))?;
        if let Some(data) = stdin.filter(|d| !d.is_empty()) {
            channel
                .data(data)
                .await
                .map_err(russh_err(&host, "write the command's input"))?;
        }
        channel
            .eof()
            .await
            .map_err(russh_err(&host, "end the command's input"))?;
        let (mut out, mut err, mut exit) = (Vec::new(), Vec::new(), None);
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => err.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => exit = Some(exit_status),
                // Killed by a signal: an end all the same (255, as OpenSSH's client reports
                // it), not a lost connection.
                ChannelMsg::ExitSignal { .. } => exit = exit.or(Some(255)),
                _ => {}
            }
        }
        Ok((exit, out, err))
    }

    /// Run `command` as is (no wrapper), waiting at most [`STOP_GRACE`] for it.
    async fn run_briefly(&self, command: &str) {
        if let Ok(mut channel) = self.handle.channel_open_session().await {
            if channel.exec(true, command).await.is_ok() {
                let _ = tokio::time::timeout(STOP_GRACE, async {
                    while channel.wait().await.is_some() {}
                })
                .await;
            }
        }
    }

    /// `-L`: listen on a free port of 127.0.0.1 here; each connection becomes a
    /// `direct-tcpip` channel to `host:port` as seen from the ssh server. The local port.
    pub async fn forward_local_any(&mut self, host: &str, port: u16) -> Result<u16, SshError> {
        self.forward_local(0, host, port).await
    }

    /// `-L` from a given port of 127.0.0.1 here (0: a free one) to `host:port` as seen
    /// from the ssh server. The local port.
    pub async fn forward_local(
        &mut self,
        local_port: u16,
        host: &str,
        port: u16,
    ) -> Result<u16, SshError> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, local_port))
            .await
            .map_err(SshError::io(format!(
                "listen on 127.0.0.1:{local_port} for the -L tunnel"
            )))?;
        let local = listener
            .local_addr()
            .map_err(SshError::io("local port"))?
            .port();
        let handle = Arc::clone(&self.handle);
        let target = host.to_string();
        self.forwards.push(tokio::spawn(async move {
            while let Ok((mut tcp, peer)) = listener.accept().await {
                let handle = Arc::clone(&handle);
                let target = target.clone();
                tokio::spawn(async move {
                    let opened = handle
                        .channel_open_direct_tcpip(
                            target,
                            u32::from(port),
                            peer.ip().to_string(),
                            u32::from(peer.port()),
                        )
                        .await;
                    if let Ok(channel) = opened {
                        let mut stream = channel.into_stream();
                        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut stream).await;
                    }
                });
            }
        }));
        Ok(local)
    }

    /// `-R`: ask the server to listen on a port of its own choosing on its 127.0.0.1;
    /// each connection there is bridged to `127.0.0.1:<local_port>` here. The remote port.
    pub async fn forward_remote(&self, local_port: u16) -> Result<u16, SshError> {
        self.forward_remote_at(0, local_port, false).await
    }

    /// `-R` with a fixed remote port (0: the server chooses): the server listens on
    /// `127.0.0.1:<remote_port>` (`public`: `0.0.0.0`, if its sshd allows) on its host, each connection there is bridged to
    /// `127.0.0.1:<local_port>` here. The remote port.
    pub async fn forward_remote_at(
        &self,
        remote_port: u16,
        local_port: u16,
        public: bool,
    ) -> Result<u16, SshError> {
        let bind = if public { "0.0.0.0" } else { "127.0.0.1" };
        let spec = format!("-R {bind}:{remote_port}:127.0.0.1:{local_port}");
        let allocated = self
            .handle
            .tcpip_forward(bind, u32::from(remote_port))
            .await
            .map_err(|e| SshError::Forward {
                host: self.host.clone(),
                spec: spec.clone(),
                message: e.to_string(),
            })?;
        // With a fixed port the server answers 0 (RFC 4254 7.1): the port is the one asked.
        let port = if remote_port == 0 {
            allocated
        } else {
            u32::from(remote_port)
        };
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| SshError::Forward {
                host: self.host.clone(),
                spec,
                message: format!("the server allocated port {port}"),
            })?;
        self.reverse
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(u32::from(port), local_port);
        Ok(port)
    }

    /// Close the connection (the remote commands' stdin ends with it) and the listeners.
    pub async fn close(self) {
        for f in &self.forwards {
            f.abort();
        }
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

impl Drop for RusshConnection {
    fn drop(&mut self) {
        for f in &self.forwards {
            f.abort();
        }
    }
}

/// Copy a session channel's stdout and stderr into `out` and `err` until it closes; then
/// publish its exit status (`None` inside: it sent none).
async fn pump_channel(
    mut read: russh::ChannelReadHalf,
    mut out: tokio::io::DuplexStream,
    mut err: tokio::io::DuplexStream,
    status: watch::Sender<Option<Option<u32>>>,
) {
    use tokio::io::AsyncWriteExt;
    let mut exit = None;
    while let Some(msg) = read.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                let _ = out.write_all(&data).await;
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                let _ = err.write_all(&data).await;
            }
            ChannelMsg::ExitStatus { exit_status } => exit = Some(exit_status),
            // Killed by a signal: an end all the same (255, as OpenSSH's client reports
            // it), not a lost connection.
            ChannelMsg::ExitSignal { .. } => exit = exit.or(Some(255)),
            _ => {}
        }
    }
    drop((out, err));
    let _ = status.send(Some(exit));
}

/// A remote server started through a [`RusshConnection`].
pub struct RusshRemote {
    write: Option<russh::ChannelWriteHalf<Msg>>,
    pgid: Option<u32>,
    host: String,
    tail: StderrTail,
    status: watch::Receiver<Option<Option<u32>>>,
    reader: tokio::task::JoinHandle<()>,
    /// The first output line matching the ready pattern, when one is watched for.
    matched: Option<tokio::sync::oneshot::Receiver<String>>,
}

impl std::fmt::Debug for RusshRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RusshRemote")
            .field("host", &self.host)
            .field("pgid", &self.pgid)
            .finish_non_exhaustive()
    }
}

impl RusshRemote {
    async fn ended_early(&mut self, conn: &RusshConnection) -> SshError {
        let status = tokio::time::timeout(STOP_GRACE, self.wait()).await;
        if conn.is_closed() {
            return SshError::ConnectionLost {
                host: self.host.clone(),
                log_tail: Vec::new(),
            };
        }
        SshError::RemoteExited {
            host: self.host.clone(),
            status: match status {
                Ok(Some(c)) => format!("exit code {c}"),
                Ok(None) => "no exit status".to_string(),
                Err(_) => "still running, stdout closed".to_string(),
            },
            stderr_tail: self.stderr_tail(),
        }
    }

    /// The receiver of the first line matching the ready pattern (once).
    pub(crate) fn take_matched(&mut self) -> Option<tokio::sync::oneshot::Receiver<String>> {
        self.matched.take()
    }

    /// The remote process group.
    pub fn remote_pgid(&self) -> Option<u32> {
        self.pgid
    }

    /// The last lines of the remote stderr.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.tail.lines()
    }

    /// [`RusshRemote::wait`] as a process exit status: no status (a signal, a lost
    /// channel) reads as 255, as OpenSSH's client reports it.
    pub async fn exit_status(&mut self) -> std::process::ExitStatus {
        use std::os::unix::process::ExitStatusExt;
        let code = self.wait().await.unwrap_or(255) & 0xff;
        std::process::ExitStatus::from_raw((code as i32) << 8)
    }

    /// Wait until the channel closes: the remote exit status, if it sent one.
    pub async fn wait(&mut self) -> Option<u32> {
        loop {
            if let Some(s) = *self.status.borrow() {
                return s;
            }
            if self.status.changed().await.is_err() {
                return None;
            }
        }
    }

    /// End the remote process group: send end-of-file on the channel (the wrapper's
    /// watcher kills the group) and wait for the channel to close; past twice the grace,
    /// kill the group explicitly over `conn` and close the channel.
    pub async fn stop(&mut self, conn: Option<&RusshConnection>) {
        if let Some(w) = &self.write {
            let _ = w.eof().await;
        }
        if tokio::time::timeout(STOP_GRACE * 2, self.wait())
            .await
            .is_err()
        {
            if let (Some(c), Some(pgid)) = (conn, self.pgid.filter(|p| *p > 1)) {
                c.run_briefly(&format!("kill -KILL -- -{pgid}")).await;
            }
            if let Some(w) = &self.write {
                let _ = w.close().await;
            }
        }
        self.write = None;
    }
}

impl Drop for RusshRemote {
    fn drop(&mut self) {
        // Best effort without an async context: end-of-file from a task; the connection
        // closing ends the channel in any case.
        if let (Some(w), Ok(rt)) = (self.write.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                let _ = w.eof().await;
            });
        }
        self.reader.abort();
    }
}

/// The address of a `-L` tunnel's local end.
pub fn local_address(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

impl RusshOptions {
    /// The connection options for a plan's `settings` (checked when the plan was made)
    /// and the launch's `options`: prompts go to `options.prompter`; without one, to the
    /// askpass helper run as ssh runs it (the prompt as its argument, the answer on its
    /// stdout, a non-zero exit cancels); in batch mode, nowhere.
    pub fn for_launch(
        settings: &RusshSettings,
        batch_mode: bool,
        options: &SshOptions,
    ) -> RusshOptions {
        let prompter: Option<Arc<dyn Prompter + Send + Sync>> = if batch_mode {
            None
        } else {
            Some(
                options
                    .prompter
                    .clone()
                    .unwrap_or_else(|| Arc::new(AskpassProgramPrompter(options.askpass.clone()))),
            )
        };
        let defaults = RusshOptions::new();
        RusshOptions {
            known_hosts: settings.known_hosts.clone().unwrap_or(defaults.known_hosts),
            identity_files: settings.identity_files.clone(),
            prompter,
            connect_timeout: settings.connect_timeout.unwrap_or(options.connect_timeout),
            auth_timeout: options.auth_timeout,
            keepalive: (
                Duration::from_secs(
                    settings
                        .alive_interval
                        .unwrap_or(options.server_alive.0)
                        .into(),
                ),
                settings.alive_count.unwrap_or(options.server_alive.1) as usize,
            ),
            methods: settings.methods.clone(),
            ask_unknown_host: !settings.refuse_unknown_hosts,
        }
    }
}

/// Asks like OpenSSH does without a prompter: the askpass helper runs with the prompt
/// as its argument and prints the answer on stdout; a non-zero exit cancels.
struct AskpassProgramPrompter(AskpassProgram);

impl Prompter for AskpassProgramPrompter {
    fn ask(&self, request: &PromptRequest<'_>) -> Result<Zeroizing<String>, PromptError> {
        let program = match &self.0 {
            AskpassProgram::Path(p) => p.clone(),
            AskpassProgram::Auto => {
                find_askpass().map_err(|e| PromptError::NoAnswer(e.to_string()))?
            }
        };
        let out = std::process::Command::new(&program)
            .arg(&request.option.label)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| PromptError::NoAnswer(format!("{}: {e}", program.display())))?;
        let mut answer = Zeroizing::new(out.stdout);
        if !out.status.success() {
            return Err(PromptError::Cancelled);
        }
        while matches!(answer.last(), Some(b'\n' | b'\r')) {
            answer.pop();
        }
        // Moved, not copied, into the String; invalid UTF-8 is wiped with the error.
        match String::from_utf8(std::mem::take(&mut *answer)) {
            Ok(text) => Ok(Zeroizing::new(text)),
            Err(e) => {
                drop(Zeroizing::new(e.into_bytes()));
                Err(PromptError::NoAnswer(format!(
                    "{} answered with invalid UTF-8",
                    program.display()
                )))
            }
        }
    }
}
