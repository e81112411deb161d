//! The documentation kept true by running it.
//!
//! Every Markdown file of the user documentation (`README.md`, `docs/**/*.md`, the crate
//! READMEs, and the transcripts in `tests/transcripts/*.md`) is read for fenced blocks:
//!
//! - ```` ```toml ````: written to a file and given to the real `pv-launch check FILE`,
//!   which must accept it. A block whose first line is `# examples/profiles/NAME.toml` must
//!   equal that file byte for byte (the sample profiles are included, not copied).
//! - ```` ```toml,fragment ````: a piece of a profile; it must parse as TOML, nothing more.
//! - ```` ```console ````: a CLI transcript in trycmd's Markdown syntax. `$ CMD` runs `CMD`
//!   through `/bin/sh` from the repository root, with this build's binaries first on
//!   `PATH`, stdin empty, `NO_COLOR=1`, and `XDG_CONFIG_HOME`/`XDG_STATE_HOME` pointing at
//!   empty directories of the block's own (nothing of the reader's leaks in, nothing is
//!   saved). An optional `? N` (or `? failed`) line right after it gives the exit status
//!   (0 otherwise). The lines up to the next `$ ` or the end of the block are the expected
//!   output, stdout and stderr together in the order written: `[..]` in a line matches any
//!   text within that line, and a line `...` matches any number of lines.
//!
//! Any other block (```` ```sh ````, ```` ```text ````, …) is not run. An error names the
//! Markdown file and the line of the block. The test fails if README.md has no checked
//! block at all, so it cannot silently check nothing.
//!
//! Needs the workspace's binaries: `cargo build --workspace --bins` first (ci/test does).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one transcript command may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// The Markdown files whose blocks are checked, relative to the repository root.
fn documentation_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = [
        "README.md",
        "askpass/README.md",
        "transport/README.md",
        "launcher/README.md",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| root.join(p).is_file())
    .collect();
    let mut found = vec![];
    markdown_under(root, Path::new("docs"), &mut found);
    markdown_under(root, Path::new("tests/transcripts"), &mut found);
    found.sort();
    files.extend(found);
    files
}

fn markdown_under(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
        return;
    };
    for e in entries.flatten() {
        let rel = dir.join(e.file_name());
        if e.path().is_dir() {
            markdown_under(root, &rel, out);
        } else if rel.extension().is_some_and(|x| x == "md") {
            out.push(rel);
        }
    }
}

/// One fenced block: its info string, the line of its opening fence (from 1) and its
/// lines (the fence's indentation removed).
#[derive(Debug)]
struct Block {
    info: String,
    line: usize,
    lines: Vec<String>,
}

/// The fenced (```` ``` ````) blocks of a Markdown text.
fn blocks(text: &str) -> Vec<Block> {
    let mut out = vec![];
    let mut open: Option<(usize, Block)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some((
                        indent,
                        Block {
                            info: info.trim().to_string(),
                            line: i + 1,
                            lines: vec![],
                        },
                    ));
                }
            }
            Some((fence_indent, block)) => {
                if trimmed.starts_with("```") && trimmed.trim_end() == "```" {
                    out.push(open.take().unwrap().1);
                } else {
                    let cut = line
                        .char_indices()
                        .take_while(|(i, c)| *i < *fence_indent && *c == ' ')
                        .count();
                    block.lines.push(line[cut..].to_string());
                }
            }
        }
    }
    out
}

/// What was checked, for the counts the test prints.
#[derive(Default)]
struct Tally {
    toml: usize,
    fragments: usize,
    included: usize,
    transcripts: usize,
    commands: usize,
    readme: usize,
}

#[test]
fn every_toml_block_and_transcript_in_the_documentation_holds() {
    let root = repo_root();
    let pv_launch = pv_e2e::workspace_bin("pv-launch");
    pv_e2e::workspace_bin("pv-demo-server");
    let scratch = tempfile::tempdir().unwrap();
    let mut tally = Tally::default();
    let mut problems = vec![];
    for file in documentation_files(&root) {
        let text = std::fs::read_to_string(root.join(&file)).unwrap();
        for (n, block) in blocks(&text).into_iter().enumerate() {
            let at = format!("{}:{}", file.display(), block.line);
            let kind = block.info.split_whitespace().next().unwrap_or("");
            let result = match kind {
                "toml" => {
                    tally.toml += 1;
                    check_profile(&root, &pv_launch, scratch.path(), n, &block, &mut tally)
                }
                "toml,fragment" => {
                    tally.fragments += 1;
                    block
                        .lines
                        .join("\n")
                        .parse::<toml::Table>()
                        .map(|_| ())
                        .map_err(|e| format!("not TOML: {e}"))
                }
                "console" => {
                    tally.transcripts += 1;
                    run_transcript(&root, scratch.path(), n, &block, &mut tally)
                }
                _ => continue,
            };
            if file == Path::new("README.md") {
                tally.readme += 1;
            }
            if let Err(e) = result {
                problems.push(format!("{at}: {kind} block: {e}"));
            }
        }
    }
    eprintln!(
        "docs: {} toml blocks ({} equal to a sample profile), {} toml fragments, {} transcripts \
         ({} commands); {} of the checked blocks in README.md",
        tally.toml,
        tally.included,
        tally.fragments,
        tally.transcripts,
        tally.commands,
        tally.readme
    );
    assert!(problems.is_empty(), "\n{}", problems.join("\n\n"));
    assert!(
        tally.readme > 0,
        "README.md has no ```toml or ```console block: the documentation test checks nothing there"
    );
    assert!(tally.transcripts > 0 && tally.toml > 0);
}

/// A ```toml block: `pv-launch check` accepts it; one that names a sample profile on its
/// first line equals that file.
fn check_profile(
    root: &Path,
    pv_launch: &Path,
    scratch: &Path,
    n: usize,
    block: &Block,
    tally: &mut Tally,
) -> Result<(), String> {
    let mut body = block.lines.join("\n");
    body.push('\n');
    if let Some(sample) = block
        .lines
        .first()
        .and_then(|l| l.strip_prefix("# "))
        .filter(|p| p.starts_with("examples/profiles/") && p.ends_with(".toml"))
    {
        tally.included += 1;
        let original = std::fs::read_to_string(root.join(sample))
            .map_err(|e| format!("names {sample}, which cannot be read: {e}"))?;
        // The block starts with the path line, then the file itself.
        let shown = body.split_once('\n').map_or("", |(_, rest)| rest);
        if shown != original {
            return Err(format!(
                "differs from {sample}: include the file as it is (first difference at line {})",
                first_difference(shown, &original) + 1
            ));
        }
    }
    let file = scratch.join(format!("block-{n}-line-{}.toml", block.line));
    std::fs::write(&file, &body).unwrap();
    let out = Command::new(pv_launch)
        .arg("check")
        .arg(&file)
        .current_dir(root)
        .env("XDG_CONFIG_HOME", scratch.join("config"))
        .env("XDG_STATE_HOME", scratch.join("state"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`pv-launch check` refuses it ({}; BLOCK:L:C is line L of the block, the \
             Markdown file's line {} + L):\n{}",
            out.status,
            block.line,
            String::from_utf8_lossy(&out.stderr).replace(&file.display().to_string(), "BLOCK")
        ))
    }
}

fn first_difference(a: &str, b: &str) -> usize {
    a.lines()
        .zip(b.lines())
        .position(|(x, y)| x != y)
        .unwrap_or_else(|| a.lines().count().min(b.lines().count()))
}

/// One `$ CMD` of a transcript, what it should print and how it should end.
struct Step {
    command: String,
    line: usize,
    status: Expected,
    output: Vec<String>,
}

enum Expected {
    Code(i32),
    Failed,
}

fn parse_transcript(block: &Block) -> Result<Vec<Step>, String> {
    let mut steps: Vec<Step> = vec![];
    for (i, line) in block.lines.iter().enumerate() {
        let at = block.line + 1 + i;
        if let Some(cmd) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: cmd.to_string(),
                line: at,
                status: Expected::Code(0),
                output: vec![],
            });
            continue;
        }
        let Some(step) = steps.last_mut() else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(format!("line {at}: output before any `$ ` command"));
        };
        if let Some(status) = line.strip_prefix("? ").filter(|_| step.output.is_empty()) {
            step.status = match status.trim() {
                "failed" => Expected::Failed,
                n => Expected::Code(
                    n.parse()
                        .map_err(|_| format!("line {at}: `? {n}`: not an exit status"))?,
                ),
            };
            continue;
        }
        step.output.push(line.clone());
    }
    if steps.is_empty() {
        return Err("no `$ ` command in the block".into());
    }
    Ok(steps)
}

fn run_transcript(
    root: &Path,
    scratch: &Path,
    n: usize,
    block: &Block,
    tally: &mut Tally,
) -> Result<(), String> {
    let steps = parse_transcript(block)?;
    let home = scratch.join(format!("transcript-{n}"));
    std::fs::create_dir_all(home.join("config")).unwrap();
    std::fs::create_dir_all(home.join("state")).unwrap();
    let path = format!(
        "{}:{}",
        pv_e2e::target_bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for step in steps {
        tally.commands += 1;
        let (code, output) = run_command(root, &home, &path, &step.command)?;
        let status_ok = match step.status {
            Expected::Code(c) => code == Some(c),
            Expected::Failed => code.is_some_and(|c| c != 0),
        };
        let actual: Vec<&str> = output.lines().collect();
        let expected: Vec<&str> = step.output.iter().map(String::as_str).collect();
        let output_ok = lines_match(&expected, &actual);
        if !status_ok || !output_ok {
            return Err(format!(
                "line {}: `{}`\n{}{}--- expected\n{}\n--- got\n{}",
                step.line,
                step.command,
                if status_ok {
                    String::new()
                } else {
                    format!(
                        "exit status {code:?}, expected {}\n",
                        match step.status {
                            Expected::Code(c) => c.to_string(),
                            Expected::Failed => "a failure".into(),
                        }
                    )
                },
                if output_ok {
                    ""
                } else {
                    "the output differs\n"
                },
                expected.join("\n"),
                output.trim_end()
            ));
        }
    }
    Ok(())
}

/// Run `command` through /bin/sh with stderr joined to stdout, bounded by
/// [`COMMAND_DEADLINE`] (its whole process group is killed past it).
fn run_command(
    root: &Path,
    home: &Path,
    path: &str,
    command: &str,
) -> Result<(Option<i32>, String), String> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec 2>&1\n{command}"))
        .current_dir(root)
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env_remove("PV_LAUNCH_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run /bin/sh: {e}"))?;
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut bytes = vec![];
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > COMMAND_DEADLINE {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            return Err(format!(
                "`{command}` did not end within {COMMAND_DEADLINE:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let bytes = reader.join().unwrap();
    Ok((status.code(), String::from_utf8_lossy(&bytes).into_owned()))
}

/// Whether `actual` matches the `expected` lines: `...` alone matches any number of lines,
/// `[..]` within a line any text in that line.
fn lines_match(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"...", rest)) => (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..])),
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(a, more)| line_matches(first, a) && lines_match(rest, more)),
    }
}

fn line_matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split("[..]");
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

#[test]
fn the_matcher_follows_the_transcript_syntax() {
    assert!(line_matches("a[..]c", "abbbc"));
    assert!(line_matches("[..]", ""));
    assert!(line_matches("x [..] y [..]", "x 1 y 2"));
    assert!(!line_matches("a[..]c", "abbbd"));
    assert!(!line_matches("abc", "abcd"));
    assert!(line_matches("[..]:1:2: e", "f.toml:1:2: e"));
    assert!(lines_match(&["a", "...", "z"], &["a", "b", "c", "z"]));
    assert!(lines_match(&["a", "...", "z"], &["a", "z"]));
    assert!(lines_match(&["..."], &[]));
    assert!(!lines_match(&["a", "...", "z"], &["a", "b"]));
    assert!(!lines_match(&["a"], &["a", "b"]));
    let b = blocks("text\n```console\n$ true\n? 2\nout\n```\n  ```toml\n  a = 1\n  ```\n");
    assert_eq!(b.len(), 2);
    assert_eq!((b[0].info.as_str(), b[0].line), ("console", 2));
    assert_eq!(b[1].lines, ["a = 1"]);
    let steps = parse_transcript(&b[0]).unwrap();
    assert!(matches!(steps[0].status, Expected::Code(2)));
    assert_eq!(steps[0].output, ["out"]);
}
