//! `pv-embed`: how a desktop application embeds the launcher.
//!
//! It loads a profile, answers option prompts through its own [`Prompter`] (here: take the
//! default, log the question), launches, shows progress events as they arrive, uses the
//! handshaken connection, and cleans up.
//!
//! ```text
//! cargo build -p pv-examples --bins
//! PATH="$PWD/target/debug:$PATH" target/debug/pv-embed examples/profiles/local.toml
//! ```

use std::process::ExitCode;

use pv_launch::plan::Plan;
use pv_launch::prompt::Zeroizing;
use pv_launch::{LaunchContext, Profile, PromptError, PromptRequest, Prompter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The application's own answer to option prompts: a GUI would show a dialog here.
struct DefaultsPrompter;

impl Prompter for DefaultsPrompter {
    fn ask(&self, request: &PromptRequest<'_>) -> Result<Zeroizing<String>, PromptError> {
        eprintln!("[app] option {:?}: using its default", request.option.name);
        request
            .default
            .clone()
            .map(Zeroizing::new)
            .ok_or_else(|| PromptError::NoAnswer(format!("{} has no default", request.option.name)))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: pv-embed PROFILE [SERVER]");
        return ExitCode::from(2);
    };
    let server = std::env::args().nth(2);
    match run(&path, server.as_deref()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[app] launch failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: &str, server: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let profile = Profile::load(path.as_ref())?;
    let entry = profile.select(server)?;
    let plan = Plan::resolve(entry, &LaunchContext::from_host(), &DefaultsPrompter)?;

    // Progress arrives as typed events; a GUI would update a status line.
    let (events, mut progress) = tokio::sync::mpsc::unbounded_channel();
    let shown = tokio::spawn(async move {
        while let Some(event) = progress.recv().await {
            eprintln!(
                "[app] event: {}",
                serde_json::to_string(&event).unwrap_or_default()
            );
        }
    });

    let mut session = pv_launch::session::launch(&plan, &events).await?;
    println!("[app] connected: {}", session.url());
    for conn in session.connections() {
        conn.write_all(b"hello from the embedding application")
            .await?;
        let mut back = vec![0u8; 36];
        conn.read_exact(&mut back).await?;
        println!("[app] echoed: {}", String::from_utf8_lossy(&back));
    }
    session.cleanup().await;
    drop(events);
    let _ = shown.await;
    Ok(())
}
