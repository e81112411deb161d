//! The launcher's end of the askpass bridge: ssh runs `pv-askpass`, which hands each prompt
//! over a private Unix socket (`PV_ASKPASS_SOCKET`) to this thread, which asks the
//! embedding application's [`Prompter`] and sends the answer back. The message format is
//! `pv_askpass::bridge`'s, shared with the helper.
//!
//! An ssh prompt reaches the [`Prompter`] as an ordinary option question
//! ([`prompt_option`]): passwords, passphrases and PINs as a `password` option (never
//! echoed), one-time codes as `string`, host-key and confirm questions as an enumeration
//! `yes`/`no` whose default is `no`. The option's name says what it is (`ssh-password`,
//! `ssh-host-key`, …) and its label is ssh's prompt text.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use pv_askpass::PromptKind;
use pv_askpass::bridge::{self, Reply, Request};

use super::SshError;
use crate::profile::{EnumEntry, OptionKind, OptionSpec};
use crate::prompt::{PromptRequest, Prompter};
use crate::source::SourcePos;

/// The socket's file name inside the session's private directory.
const SOCKET_NAME: &str = "a";

/// The option an ssh prompt is asked as. Its `name` is `ssh-` followed by the prompt's
/// kind (`ssh-password`, `ssh-passphrase`, `ssh-host-key`, `ssh-one-time-code`, …), its
/// `label` the prompt text as ssh wrote it.
pub fn prompt_option(request: &Request) -> OptionSpec {
    let kind_name = serde_json::to_value(request.kind)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', "-")))
        .unwrap_or_else(|| "unknown".to_string());
    let kind = match request.kind {
        PromptKind::HostKey | PromptKind::Confirm => OptionKind::Enumeration {
            entries: ["yes", "no"]
                .iter()
                .map(|v| EnumEntry {
                    value: v.to_string(),
                    label: v.to_string(),
                })
                .collect(),
            default: Some("no".to_string()),
        },
        _ if request.echo => OptionKind::String { default: None },
        _ => OptionKind::Password { default: None },
    };
    OptionSpec {
        name: format!("ssh-{kind_name}"),
        label: request.prompt.trim_end().to_string(),
        kind,
        readonly: false,
        save: false,
        at: SourcePos::new(&Arc::new(PathBuf::from("<ssh>")), 1, 1),
    }
}

/// What happened on the bridge, for the error messages of a failed connection.
#[derive(Default)]
struct Outcome {
    /// The first line of the prompt the user cancelled.
    cancelled: Option<String>,
    /// The first line of the host-key question the user answered "no".
    refused_host_key: Option<String>,
}

/// A running bridge: a 0600 socket in a 0700 directory and the thread that answers on it.
/// Dropping it stops the thread and removes the socket.
pub struct AskpassBridge {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    outcome: Arc<Mutex<Outcome>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AskpassBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AskpassBridge")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_string()
}

impl AskpassBridge {
    /// Bind the socket in `dir` (created 0700 if needed; it must be private) and answer
    /// every prompt that arrives with `prompter`, one at a time.
    pub fn start(
        dir: &Path,
        prompter: Arc<dyn Prompter + Send + Sync>,
    ) -> Result<AskpassBridge, SshError> {
        let (listener, path) =
            bridge::bind_private(dir, SOCKET_NAME).map_err(|e| SshError::Io {
                what: "askpass bridge socket".to_string(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let outcome = Arc::new(Mutex::new(Outcome::default()));
        let thread = {
            let (stop, answered, outcome) = (stop.clone(), answered.clone(), outcome.clone());
            std::thread::Builder::new()
                .name("pv-askpass-bridge".to_string())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        // A connection that sends garbage or nothing is dropped: the helper
                        // then exits non-zero, which ssh treats as a cancel.
                        let Ok(request) = bridge::read_request(&stream) else {
                            continue;
                        };
                        let reply = answer(&*prompter, &request, &outcome);
                        if bridge::write_reply(&stream, &reply).is_ok() {
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
                .map_err(SshError::io("start the askpass bridge thread"))?
        };
        Ok(AskpassBridge {
            path,
            stop,
            answered,
            outcome,
            thread: Some(thread),
        })
    }

    /// The socket path, for `PV_ASKPASS_SOCKET`.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// How many prompts were answered (or cancelled) so far.
    pub fn prompts_answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// The first line of the prompt the user cancelled, if any.
    pub fn cancelled_prompt(&self) -> Option<String> {
        self.outcome.lock().ok()?.cancelled.clone()
    }

    /// The first line of the host-key question the user refused, if any.
    pub fn refused_host_key(&self) -> Option<String> {
        self.outcome.lock().ok()?.refused_host_key.clone()
    }
}

/// Ask `prompter` for `request` and turn its answer into the bridge's reply.
fn answer(prompter: &dyn Prompter, request: &Request, outcome: &Mutex<Outcome>) -> Reply {
    if request.kind == PromptKind::Notify {
        // Nothing to answer: the helper sees end-of-file and exits.
        return Reply::Cancel;
    }
    let option = prompt_option(request);
    let asked = PromptRequest {
        option: &option,
        default: None,
        problem: None,
    };
    let result = prompter.ask(&asked);
    let mut outcome = outcome.lock().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(text) => match request.kind {
            PromptKind::HostKey | PromptKind::Confirm => {
                if text.trim().eq_ignore_ascii_case("yes") {
                    Reply::answer("yes")
                } else {
                    outcome.refused_host_key = Some(first_line(&request.prompt));
                    Reply::answer("no")
                }
            }
            _ => Reply::Answer(text),
        },
        Err(_) => {
            outcome.cancelled = Some(first_line(&request.prompt));
            Reply::Cancel
        }
    }
}

impl Drop for AskpassBridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop; it sees the flag and ends.
        // Not joined: a prompter may still be waiting for its user; the thread ends on
        // its own when the prompter returns.
        let _ = UnixStream::connect(&self.path);
        self.thread.take();
        let _ = std::fs::remove_file(&self.path);
    }
}
