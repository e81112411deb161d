//! The `pv-launch` command: see `pv-launch --help`.
#![forbid(unsafe_code)]

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use pv_launch::profile::find;
use pv_launch::prompt::{NonInteractive, Prompter, TerminalPrompter};
use pv_launch::{LaunchContext, Plan, Profile};
use pv_transport::launch::read_private_file;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "pv-launch",
                &mut std::io::stdout(),
            );
            EXIT_OK
        }
        Some(Command::List { profile }) => list(profile.as_deref()),
        Some(Command::Check {
            profile,
            profile_flag,
        }) => check(&profile.or(profile_flag).unwrap_or_default()),
        Some(Command::Import { pvsc, output }) => import(&pvsc, output.as_deref()),
        Some(Command::Jobs {
            cancel,
            profile: None,
            ..
        }) => cli::jobs::run(cancel),
        Some(Command::Jobs {
            cancel,
            profile: Some(profile),
            server,
        }) => jobs_for(&profile, server.as_deref(), cancel),
        None => launch(&cli.launch),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Set by a launch with `--json`: its errors before the launch are also a `failed` event
/// on stdout, so a reader of the JSON lines learns why nothing follows.
static JSON_FAILURES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn fail(message: impl std::fmt::Display, code: i32) -> i32 {
    eprintln!("pv-launch: {message}");
    if JSON_FAILURES.load(std::sync::atomic::Ordering::Relaxed) {
        let event = pv_launch::events::Event::Failed {
            message: message.to_string(),
        };
        if let Ok(line) = serde_json::to_string(&event) {
            // A reader already gone is no reason to panic.
            let _ = writeln!(std::io::stdout(), "{line}");
        }
    }
    code
}

fn load(name: &str) -> Result<Profile, i32> {
    let path = find::locate(name).map_err(|e| fail(e, EXIT_USAGE))?;
    Profile::load(&path).map_err(|e| fail(e, EXIT_USAGE))
}

fn list(profile: Option<&str>) -> i32 {
    let Some(name) = profile else {
        let Some(dir) = find::config_dir() else {
            return fail(
                "no config directory (set HOME or XDG_CONFIG_HOME)",
                EXIT_USAGE,
            );
        };
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| find::is_profile_file_name(n))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        if names.is_empty() {
            eprintln!("no profiles in {}", dir.display());
        }
        for n in names {
            println!("{}", dir.join(n).display());
        }
        return EXIT_OK;
    };
    let profile = match load(name) {
        Ok(p) => p,
        Err(code) => return code,
    };
    for s in &profile.servers {
        let start = match &s.startup {
            pv_launch::profile::Startup::Manual => "manual",
            pv_launch::profile::Startup::Command(m) => m.kind_name(),
        };
        println!("{}\t{}\t{}", s.name, s.resource.value, start);
    }
    EXIT_OK
}

/// `pv-launch jobs --profile P [--server S]`: the server's plan with its options at their
/// defaults says where its jobs are submitted.
fn jobs_for(name: &str, server: Option<&str>, cancel: Option<Vec<String>>) -> i32 {
    let profile = match load(name) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let entry = match profile.select(server) {
        Ok(e) => e,
        Err(e) => return fail(e, EXIT_USAGE),
    };
    match Plan::resolve(entry, &LaunchContext::from_host(), &NonInteractive) {
        Ok(plan) => cli::jobs::run_for(&plan, cancel),
        Err(e) => fail(e, EXIT_USAGE),
    }
}

fn check(name: &str) -> i32 {
    let profile = match load(name) {
        Ok(p) => p,
        Err(code) => return code,
    };
    for w in &profile.warnings {
        eprintln!("{w}");
    }
    let mut code = EXIT_OK;
    for s in &profile.servers {
        match Plan::resolve(s, &LaunchContext::from_host(), &NonInteractive) {
            Ok(plan) => {
                for w in plan.warnings() {
                    eprintln!("{w}");
                }
                println!("ok: {}", s.name);
            }
            Err(e) => code = fail(e, EXIT_USAGE),
        }
    }
    code
}

fn import(pvsc: &std::path::Path, output: Option<&std::path::Path>) -> i32 {
    let text = match std::fs::read_to_string(pvsc) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot read {}: {e}", pvsc.display()), EXIT_USAGE),
    };
    let profile = match pv_launch::profile::pvsc::load_str(pvsc, &text) {
        Ok(p) => p,
        Err(e) => return fail(e, EXIT_USAGE),
    };
    for w in &profile.warnings {
        eprintln!("{w}");
    }
    let toml = pv_launch::profile::pvsc::import::to_toml(&profile);
    match output {
        None => {
            print!("{toml}");
            EXIT_OK
        }
        Some(out) => match std::fs::write(out, toml) {
            Ok(()) => EXIT_OK,
            Err(e) => fail(format!("cannot write {}: {e}", out.display()), EXIT_FAILURE),
        },
    }
}

fn launch(args: &cli::LaunchArgs) -> i32 {
    JSON_FAILURES.store(args.json, std::sync::atomic::Ordering::Relaxed);
    let Some(name) = &args.profile else {
        return fail("no profile: use --profile FILE (see --help)", EXIT_USAGE);
    };
    let profile = match load(name) {
        Ok(p) => p,
        Err(code) => return code,
    };
    for w in &profile.warnings {
        eprintln!("{w}");
    }
    let entry = match profile.select(args.server.as_deref()) {
        Ok(e) => e,
        Err(e) => return fail(e, EXIT_USAGE),
    };
    let mut ctx = LaunchContext::from_host();
    let saved_file = pv_launch::saved::state_dir().map(|d| d.join(pv_launch::saved::FILE_NAME));
    let mut saved = saved_file
        .as_deref()
        .map(pv_launch::saved::SavedOptions::load);
    if let Some(Err(e)) = &saved {
        eprintln!("pv-launch: warning: saved option values not used: {e}");
    }
    if let Some(Ok(store)) = &saved {
        ctx.saved = store.values(&profile.path, &entry.name);
    }
    ctx.seed = args.seed;
    ctx.sets = args.sets.clone();
    for (name, file) in &args.set_files {
        match read_private_file(std::path::Path::new(file), "--set-from-file") {
            Ok(mut text) => {
                if text.ends_with('\n') {
                    text.pop();
                }
                ctx.private_sets.push((name.clone(), text));
            }
            Err(e) => return fail(e, EXIT_USAGE),
        }
    }
    let prompter: &dyn Prompter = if !args.no_prompt && TerminalPrompter::available() {
        &TerminalPrompter
    } else {
        &NonInteractive
    };
    let plan = match Plan::resolve(entry, &ctx, prompter) {
        Ok(p) => p,
        Err(pv_launch::PlanError::Cancelled(_)) => {
            return fail("cancelled", cli::EXIT_INTERRUPTED);
        }
        Err(e) => return fail(e, EXIT_USAGE),
    };
    if args.dry_run {
        if args.json {
            println!("{}", plan.to_json());
        } else {
            print!("{}", plan.to_dry_run_text());
        }
        return EXIT_OK;
    }
    if let (Some(file), Some(Ok(store))) = (&saved_file, &mut saved) {
        remember_options(store, file, &profile, entry, &plan);
    }
    // ParaView's `builtin:` is a server inside the client's own process: nothing to start,
    // nothing to connect to, nothing to hand over (an embedding program gets an in-process
    // connection pair from the library instead).
    if plan.connection().resource == pv_transport::Resource::Builtin {
        return fail(
            "this server is `builtin:`: ParaView runs it inside the client's own process, so there is \
             nothing for pv-launch to start or connect: run the client (paraview, pvpython) \
             without it",
            EXIT_USAGE,
        );
    }
    let mut options = pv_launch::session::LaunchOptions::default();
    if matches!(plan.launch(), pv_launch::plan::Launch::Nothing)
        && pv_launch::session::needs_token(plan.connection())
    {
        match manual_token(args) {
            Ok(Some(t)) => options.token = Some(t),
            Ok(None) => {
                return fail(
                    "this server is started by hand and speaks pv-launch's native handshake: give \
                     the token it was started with (--token-file FILE, or PV_LAUNCH_TOKEN in the \
                     environment)",
                    EXIT_USAGE,
                );
            }
            Err(e) => return fail(e, EXIT_USAGE),
        }
    }
    cli::run::run(plan, args, options)
}

/// Save the values of the entry's `save = true` options for the next launch, once the
/// launch is about to run (a dry run changes nothing). A failure to write is a warning:
/// the launch goes on.
fn remember_options(
    store: &mut pv_launch::saved::SavedOptions,
    file: &std::path::Path,
    profile: &Profile,
    entry: &pv_launch::ServerEntry,
    plan: &Plan,
) {
    let values: pv_launch::saved::Values = entry
        .options
        .iter()
        .filter(|o| o.save && !o.readonly && !o.kind.is_secret())
        .filter_map(|o| {
            let v = plan.variables().iter().find(|v| v.name == o.name)?;
            match &v.value {
                pv_launch::plan::Value::Plain(text) => Some((o.name.clone(), text.clone())),
                pv_launch::plan::Value::Secret(_) => None,
            }
        })
        .collect();
    if !values.is_empty() && store.remember(&profile.path, &entry.name, values) {
        if let Err(e) = store.store(file) {
            eprintln!("pv-launch: warning: option values not saved: {e}");
        }
    }
}

/// The token of a hand-started native server: `--token-file` (owned by the user, not
/// readable by others: checked on the open file), else `PV_LAUNCH_TOKEN`.
fn manual_token(args: &cli::LaunchArgs) -> Result<Option<pv_transport::Token>, String> {
    let text = match &args.token_file {
        Some(path) => read_private_file(path, "--token-file")?,
        None => match std::env::var(pv_transport::launch::TOKEN_ENV) {
            Ok(t) => zeroize::Zeroizing::new(t),
            Err(_) => return Ok(None),
        },
    };
    pv_transport::Token::from_hex(&text)
        .map(Some)
        .map_err(|e| format!("the token of the hand-started server: {e}"))
}
