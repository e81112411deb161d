//! The command line's definition (clap): what `--help`, the completions and the man pages
//! are made from. It depends only on clap and `pv_launch`, so the man page generator
//! (`pv-examples`' `pv-man`, feature `man`) includes this file as it is.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit status: everything went well.
pub const EXIT_OK: i32 = 0;
/// Exit status: the server failed to start, or the connection failed.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status: bad usage, or a profile that does not load or resolve.
pub const EXIT_USAGE: i32 = 2;
/// Exit status: interrupted (Ctrl-C, SIGTERM).
pub const EXIT_INTERRUPTED: i32 = 130;

/// The examples, lookup and exit status lines `-h` and `--help` both end with.
macro_rules! after_help_text {
    () => {
        "\
Examples:
  pv-launch --profile examples/profiles/local.toml
      start the demo server locally and connect to it
  pv-launch --profile cluster.toml --server gpu --set NODES=4 --dry-run
      print the resolved plan, start nothing
  pv-launch --profile servers.pvsc --server 'ORNL andes'
      use a ParaView server file as it is
  pv-launch --profile local.pvsc --exec 'pvpython client.py \"$PV_LAUNCH_URL\"'
      start the server, then run a client; $PV_LAUNCH_URL says what it dials (cs://)
      or where it listens for the server (csrc://)
  pv-launch import servers.pvsc -o servers.toml
  pv-launch jobs --cancel
      cancel batch jobs a killed pv-launch left queued or running

Profiles are found by path, or by name in $XDG_CONFIG_HOME/pv-launch/ (else
~/.config/pv-launch/) as NAME, NAME.toml or NAME.pvsc.

Exit status: 0 success; 1 the server or the connection failed; 2 bad usage or a
profile error; 130 interrupted; with a client, the client's own status."
    };
}

/// `-h` ends with examples, the lookup rule and the exit statuses.
const AFTER_HELP: &str = concat!(after_help_text!(), "\n\nMore: --help (environment, files).");

/// `--help` (and the man page) add the environment pv-launch reads and gives, and its files.
pub const AFTER_LONG_HELP: &str = concat!(
    after_help_text!(),
    "

Environment:
  XDG_CONFIG_HOME       where profiles are found by name (pv-launch/ in it; else
                        ~/.config)
  XDG_STATE_HOME        where option values saved with `save = true` are kept
                        (pv-launch/ in it; else ~/.local/state)
  XDG_RUNTIME_DIR       where the private relay socket's directory is made (else the
                        temporary directory)
  NO_COLOR              no colour in the terminal display
  PARAVIEW_SSH_OPTIONS  extra ssh options for .pvsc servers, as ParaView reads them
  PV_LAUNCH_TOKEN       the token of a hand-started native server (see --token-file)
  SLURM_CONF            read by the Slurm commands of a batch launch (sbatch, squeue,
                        scancel) and by `jobs`
  A client (--exec or the profile's `client`) is given:
  PV_LAUNCH_URL         what it must do: cs://HOST:PORT dial, csrc://HOST:PORT listen,
                        cdsrs:// and cdsrsrc:// for a data + render pair
  PV_LAUNCH_HOST, PV_LAUNCH_PORT
                        the same endpoint, parsed (PV_LAUNCH_DATA_HOST/PORT and
                        PV_LAUNCH_RENDER_HOST/PORT for a pair)
  PV_LAUNCH_SOCKET      for a relayed server: the Unix socket that reaches it

Files:
  $XDG_CONFIG_HOME/pv-launch/NAME, NAME.toml, NAME.pvsc
                        profiles found by name (`pv-launch list` shows them)
  $XDG_STATE_HOME/pv-launch/saved-options.json
                        option values remembered for next time (mode 0600; never a
                        password)
  $XDG_RUNTIME_DIR/pv-launch-*/
                        a session's private relay directory (removed on exit)
  ~/.ssh/config         read by ssh as usual for ssh launches"
);

/// Start a server (locally, through a script, over ssh) and connect to it.
#[derive(Debug, Parser)]
#[command(name = "pv-launch", version, after_help = AFTER_HELP, after_long_help = AFTER_LONG_HELP, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; without a subcommand, launch.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Launch options.
    #[command(flatten)]
    pub launch: LaunchArgs,
}

/// Options of a launch.
#[derive(Debug, clap::Args)]
pub struct LaunchArgs {
    /// Profile file (TOML or ParaView .pvsc), or a profile name in the config directory.
    #[arg(long, short = 'p', value_name = "FILE")]
    pub profile: Option<String>,
    /// Server entry to launch (optional when the profile has only one).
    #[arg(long, short = 's', value_name = "NAME")]
    pub server: Option<String>,
    /// Answer an option, or override a variable, without asking. Not for a password
    /// option: a command line is readable by every local user (use --set-from-file).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_assignment)]
    pub sets: Vec<(String, String)>,
    /// Answer an option with the contents of FILE (one trailing newline dropped): the way
    /// to give a password option without a prompt. FILE must be yours and not readable by
    /// others (mode 0600).
    #[arg(long = "set-from-file", value_name = "NAME=FILE", value_parser = parse_assignment)]
    pub set_files: Vec<(String, String)>,
    /// Print the resolved plan (argv, environment, tunnels, connection) and start nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print progress events (or, with --dry-run, the plan) as JSON, one object per line.
    #[arg(long)]
    pub json: bool,
    /// Once the server is ready, run this client command through /bin/sh, then clean up
    /// and exit with its status. PV_LAUNCH_URL says what it must do, in ParaView's forms:
    /// cs://127.0.0.1:PORT dial there; csrc://127.0.0.1:PORT listen there (the server
    /// dials; the client is started first); cdsrs:// and cdsrsrc:// for a data + render
    /// pair. PV_LAUNCH_HOST and PV_LAUNCH_PORT (PV_LAUNCH_DATA_*, PV_LAUNCH_RENDER_*)
    /// spare it the parsing. The command runs in its own process group, stopped with the
    /// session. Overrides the profile's `client`.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// Do not run the profile's `client`: hold the session until Ctrl-C and let a client
    /// you start yourself use PV_LAUNCH_URL's endpoint.
    #[arg(long, conflicts_with = "exec")]
    pub no_client: bool,
    /// For a server you started by hand that speaks pv-launch's native handshake: the
    /// file holding its one-time token (hex; owned by you, mode 0600). Else
    /// PV_LAUNCH_TOKEN is read.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Seed for `random` option defaults (reproducible dry runs).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Never ask: options take their defaults or --set values.
    #[arg(long)]
    pub no_prompt: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the servers of a profile, or the profiles in the config directory.
    List {
        /// Profile file or name.
        #[arg(long, short = 'p', value_name = "FILE")]
        profile: Option<String>,
    },
    /// Load a profile, resolve every server with defaults, and print warnings.
    Check {
        /// Profile file or name.
        #[arg(value_name = "FILE", required_unless_present = "profile_flag")]
        profile: Option<String>,
        /// The same, written as a launch names it.
        #[arg(
            long = "profile",
            short = 'p',
            value_name = "FILE",
            conflicts_with = "profile"
        )]
        profile_flag: Option<String>,
    },
    /// Convert a ParaView .pvsc file into a TOML profile.
    Import {
        /// The .pvsc file.
        #[arg(value_name = "FILE.pvsc")]
        pvsc: PathBuf,
        /// Where to write the TOML (standard output by default).
        #[arg(long, short = 'o', value_name = "OUT.toml")]
        output: Option<PathBuf>,
    },
    /// List your pv-launch batch jobs still queued or running (on this host's Slurm, or with
    /// --profile on the login node of a profile's batch server), or cancel them.
    ///
    /// Every batch launch tags its job (name `pvl-<launch id>-<server>`, comment
    /// `pv-launch:<launch id>`); a launch cancels its job when it ends, fails, times out or
    /// is interrupted, but a pv-launch that was killed (kill -9, a crash, a lost machine)
    /// cannot: find such jobs here and cancel them with --cancel.
    Jobs {
        /// Cancel the given job ids (only pv-launch jobs of yours), or all of them when none
        /// is given; waits until each has left the queue.
        #[arg(long, value_name = "ID", num_args = 0.., value_delimiter = ',')]
        cancel: Option<Vec<String>>,
        /// Ask where this profile's batch server submits its jobs: its login node over
        /// ssh (the profile's `[server.startup.ssh]`, options at their defaults), or here.
        #[arg(long, short = 'p', value_name = "FILE")]
        profile: Option<String>,
        /// The batch server of the profile (needed when it has several).
        #[arg(long, short = 's', value_name = "NAME", requires = "profile")]
        server: Option<String>,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn parse_assignment(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if pv_launch::template::is_variable_name(k) => {
            Ok((k.to_string(), v.to_string()))
        }
        Some((k, _)) => Err(format!("{k:?} is not a variable name")),
        None => Err("expected NAME=VALUE".to_string()),
    }
}
