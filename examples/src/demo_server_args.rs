//! `pv-demo-server`'s command line (clap): what its `--help` and its man page are made from
//! (the man page generator `pv-man` includes this file too).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// A demo server that speaks the pv-launch transport and echoes what it receives.
#[derive(Parser, Debug)]
#[command(
    name = "pv-demo-server",
    version,
    after_help = "The token comes from the launch channel: a `pv-launch-secrets v1 token=<hex>` line on \
stdin (what pv-launch writes), or the PV_LAUNCH_TOKEN environment variable, or --token-file. \
It is never accepted on the command line, where every local user could read it."
)]
pub struct Args {
    /// Port to listen on (forward) or to dial on the client (reverse); 0 picks a free port.
    #[arg(short = 'p', long = "server-port", default_value_t = 11111)]
    pub server_port: u16,
    /// Address to listen on. Loopback unless you ask for more (e.g. 0.0.0.0).
    #[arg(long = "bind-address", default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    /// Dial the client instead of listening for it.
    #[arg(short = 'r', long = "reverse-connection", alias = "rc")]
    pub reverse_connection: bool,
    /// Host to dial in reverse mode.
    #[arg(long = "client-host", default_value = "localhost")]
    pub client_host: String,
    /// Keep accepting clients after the first (multiple-connections mode).
    #[arg(long = "multi-clients")]
    pub multi_clients: bool,
    /// Connect id both ends must agree on (0 = none).
    #[arg(long = "connect-id", default_value_t = 0)]
    pub connect_id: u64,
    /// Seconds to wait for a client (forward) or to keep dialling it (reverse); 0 = forever
    /// when listening, ParaView's 60 s default when dialling.
    #[arg(long, default_value_t = 0)]
    pub timeout: u64,
    /// Run every connection inside TLS with a fresh per-launch certificate whose
    /// fingerprint goes out on the ready line.
    #[arg(long)]
    pub tls: bool,
    /// The handshake to speak.
    #[arg(long, value_enum, default_value_t = HandshakeArg::Native)]
    pub handshake: HandshakeArg,
    /// Read the token (64 hex characters) from this file, which must not be readable by
    /// group or others. For servers started by hand.
    #[arg(long = "token-file")]
    pub token_file: Option<PathBuf>,
    /// Seconds to wait for the secrets line on stdin.
    #[arg(long = "secrets-timeout", default_value_t = 30)]
    pub secrets_timeout: u64,
    /// Run this shell command (`/bin/sh -c`) once the token is read, with the server's
    /// environment, as a server's helper processes would run; its output goes to stdout
    /// before the ready line. For tests of what descendants inherit.
    #[arg(long = "run-after-start", hide = true)]
    pub run_after_start: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HandshakeArg {
    /// pv-transport's token challenge-response.
    Native,
    /// No handshake: raw bytes.
    None,
}
