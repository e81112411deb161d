//! `pv-man [DIR]`: write the man pages made from the clap definitions into DIR (default
//! `target/man`): `pv-launch.1`, one `pv-launch-SUBCOMMAND.1` per subcommand, and
//! `pv-demo-server.1`. Built only with the `man` feature; `ci/man` runs it.
//!
//! The standard sections come from clap_mangen. The text `--help` ends with is laid out
//! as man sections of its own: a paragraph headed `Examples:`, `Environment:` or `Files:`
//! becomes EXAMPLES, ENVIRONMENT or FILES (its lines kept as written), one that starts
//! `Exit status:` becomes EXIT STATUS, any other paragraph goes to NOTES.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use roff::{Roff, roman};

#[allow(dead_code)] // only the definitions are used here, not the parsing helpers' callers
#[path = "../../../launcher/src/cli/args.rs"]
mod launch_args;

#[allow(dead_code)]
#[path = "../demo_server_args.rs"]
mod demo_args;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/man"));
    match write_all(&dir) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pv-man: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

fn write_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = vec![];
    let mut launch = launch_args::Cli::command().disable_help_subcommand(true);
    launch.build();
    for sub in launch.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("pv-launch-{}", sub.get_name());
        let page = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("pv-launch {}", sub.get_name()));
        written.push(write_page(dir, &name, page, None)?);
    }
    let subcommands: Vec<String> = launch
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| format!("pv-launch-{}(1)", s.get_name()))
        .collect();
    written.push(write_page(
        dir,
        "pv-launch",
        launch.clone(),
        Some(format!(
            "{}, pv-demo-server(1), pv-launch.toml(5), pv-askpass(1)",
            subcommands.join(", ")
        )),
    )?);
    written.push(write_page(
        dir,
        "pv-demo-server",
        demo_args::Args::command(),
        Some("pv-launch(1), pv-launch.toml(5)".into()),
    )?);
    Ok(written)
}

/// One page: clap_mangen's title, name, synopsis, description, options and subcommands,
/// then the after-help text as sections, the version and SEE ALSO.
fn write_page(
    dir: &Path,
    name: &str,
    cmd: clap::Command,
    see_also: Option<String>,
) -> std::io::Result<PathBuf> {
    let man = clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section("1")
        .source(format!("pv-launch {}", env!("CARGO_PKG_VERSION")))
        .manual("pv-launch manual");
    let mut out: Vec<u8> = vec![];
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut out)?;
    }
    let after = cmd
        .get_after_long_help()
        .or_else(|| cmd.get_after_help())
        .map(|t| t.to_string());
    if let Some(text) = after {
        after_help_sections(&text).to_writer(&mut out)?;
    }
    let mut tail = Roff::default();
    tail.control("SH", ["VERSION"])
        .text([roman(format!("v{}", env!("CARGO_PKG_VERSION")))]);
    if let Some(see) = see_also {
        tail.control("SH", ["SEE ALSO"]).text([roman(see)]);
    }
    tail.to_writer(&mut out)?;
    let path = dir.join(format!("{name}.1"));
    let mut file = std::fs::File::create(&path)?;
    file.write_all(&out)?;
    Ok(path)
}

/// The after-help paragraphs as man sections (see the module's header).
fn after_help_sections(text: &str) -> Roff {
    let mut roff = Roff::default();
    let mut notes: Vec<&str> = vec![];
    for paragraph in text.split("\n\n") {
        let lines: Vec<&str> = paragraph.lines().collect();
        let Some(first) = lines.first() else { continue };
        let heading = match *first {
            "Examples:" => Some("EXAMPLES"),
            "Environment:" => Some("ENVIRONMENT"),
            "Files:" => Some("FILES"),
            _ => None,
        };
        if let Some(heading) = heading {
            roff.control("SH", [heading]).control("nf", []);
            for line in &lines[1..] {
                roff.text([roman(*line)]);
            }
            roff.control("fi", []);
        } else if let Some(rest) = paragraph.strip_prefix("Exit status:") {
            roff.control("SH", ["EXIT STATUS"])
                .text([roman(rest.trim().replace('\n', " "))]);
        } else if !paragraph.starts_with("More: --help") {
            notes.push(paragraph);
        }
    }
    if !notes.is_empty() {
        roff.control("SH", ["NOTES"]);
        for (i, n) in notes.iter().enumerate() {
            if i > 0 {
                roff.control("PP", []);
            }
            roff.text([roman(n.replace('\n', " "))]);
        }
    }
    roff
}
