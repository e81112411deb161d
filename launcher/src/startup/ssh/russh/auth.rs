//! Authentication on a russh connection, as OpenSSH does it: each method the server
//! allows and the profile permits is tried at most once, in OpenSSH's order — public keys
//! (an encrypted key's passphrase asked through the prompter), keyboard-interactive
//! (every round, empty rounds included), password. A wrong answer ends the launch: it is
//! never retried (2FA lockouts).

use std::path::Path;
use std::sync::Arc;

use pv_askpass::PromptKind;
use russh::MethodKind;
use russh::client::{self, KeyboardInteractiveAuthResponse};
use russh::keys::{PrivateKeyWithHashAlg, load_secret_key};
use zeroize::Zeroizing;

use super::{Client, RusshOptions, ask, russh_err};
use crate::startup::ssh::SshError;

/// How one method ended: authenticated, or the methods the server still allows.
enum Step {
    Done,
    Remaining(Vec<MethodKind>),
}

fn remaining(methods: &russh::MethodSet) -> Step {
    Step::Remaining(methods.iter().cloned().collect())
}

/// Authenticate once with each method the server allows, in OpenSSH's order.
pub(super) async fn authenticate(
    handle: &mut client::Handle<Client>,
    user: &str,
    shown: &str,
    options: &RusshOptions,
) -> Result<(), SshError> {
    let mut allowed = match handle
        .authenticate_none(user)
        .await
        .map_err(russh_err(shown, "authenticate"))?
    {
        client::AuthResult::Success => return Ok(()),
        client::AuthResult::Failure {
            remaining_methods, ..
        } => remaining_methods.iter().cloned().collect::<Vec<_>>(),
    };
    // `PreferredAuthentications`: only the methods the profile permits.
    let permitted = |name: &str| {
        options
            .methods
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == name))
    };
    let mut tried = Vec::new();
    if allowed.contains(&MethodKind::PublicKey) && permitted("publickey") {
        for path in &options.identity_files {
            tried.push("publickey");
            match public_key(handle, user, shown, options, path).await? {
                Step::Done => return Ok(()),
                Step::Remaining(m) => allowed = m,
            }
        }
    }
    if allowed.contains(&MethodKind::KeyboardInteractive) && permitted("keyboard-interactive") {
        tried.push("keyboard-interactive");
        match keyboard_interactive(handle, user, shown, options).await? {
            Step::Done => return Ok(()),
            Step::Remaining(m) => allowed = m,
        }
    }
    if allowed.contains(&MethodKind::Password)
        && permitted("password")
        && !tried.contains(&"keyboard-interactive")
    {
        tried.push("password");
        if password(handle, user, shown, options).await? {
            return Ok(());
        }
    }
    Err(SshError::Connect {
        host: shown.to_string(),
        status: format!("Permission denied (tried: {})", tried.join(", ")),
        command: "(russh backend, in process)".to_string(),
        log_tail: Vec::new(),
    })
}

/// Read the private key at `path`, asking for its passphrase when it is encrypted.
async fn load_key(
    path: &Path,
    shown: &str,
    options: &RusshOptions,
) -> Result<russh::keys::PrivateKey, SshError> {
    match load_secret_key(path, None) {
        Ok(k) => Ok(k),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            let prompt = format!("Enter passphrase for key '{}': ", path.display());
            let pass = ask(
                &options.prompter,
                PromptKind::Passphrase,
                prompt,
                false,
                shown,
                None,
            )
            .await?;
            load_secret_key(path, Some(pass.as_str())).map_err(|e| SshError::Connect {
                host: shown.to_string(),
                status: format!("cannot decrypt {}: {e}", path.display()),
                command: "(russh backend, in process)".to_string(),
                log_tail: Vec::new(),
            })
        }
        Err(e) => Err(SshError::Invalid(format!(
            "cannot read the identity file {}: {e}",
            path.display()
        ))),
    }
}

async fn public_key(
    handle: &mut client::Handle<Client>,
    user: &str,
    shown: &str,
    options: &RusshOptions,
    path: &Path,
) -> Result<Step, SshError> {
    let key = load_key(path, shown, options).await?;
    let key = PrivateKeyWithHashAlg::new(Arc::new(key), None);
    match handle
        .authenticate_publickey(user, key)
        .await
        .map_err(russh_err(shown, "publickey"))?
    {
        client::AuthResult::Success => Ok(Step::Done),
        client::AuthResult::Failure {
            remaining_methods, ..
        } => Ok(remaining(&remaining_methods)),
    }
}

/// Every round of keyboard-interactive, each prompt put to the prompter (an empty round,
/// as OpenSSH's PAM sends, is answered with nothing).
async fn keyboard_interactive(
    handle: &mut client::Handle<Client>,
    user: &str,
    shown: &str,
    options: &RusshOptions,
) -> Result<Step, SshError> {
    let err = || russh_err(shown, "keyboard-interactive");
    let mut reply = handle
        .authenticate_keyboard_interactive_start(user, None)
        .await
        .map_err(err())?;
    loop {
        let prompts = match reply {
            KeyboardInteractiveAuthResponse::Success => return Ok(Step::Done),
            KeyboardInteractiveAuthResponse::Failure {
                remaining_methods, ..
            } => return Ok(remaining(&remaining_methods)),
            KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => prompts,
        };
        let mut answers: Vec<Zeroizing<String>> = Vec::with_capacity(prompts.len());
        for p in &prompts {
            let kind = if p.echo {
                PromptKind::OneTimeCode
            } else {
                PromptKind::Password
            };
            let a = ask(
                &options.prompter,
                kind,
                format!("({shown}) {}", p.prompt),
                p.echo,
                shown,
                None,
            )
            .await?;
            answers.push(a);
        }
        reply = handle
            .authenticate_keyboard_interactive_respond(
                // russh takes plain Strings and drops them unwiped: the one copy of each
                // answer out of our reach (its API has no zeroizing form).
                answers.iter().map(|a| a.as_str().to_owned()).collect(),
            )
            .await
            .map_err(err())?;
    }
}

/// One password, asked once: whether it was accepted.
async fn password(
    handle: &mut client::Handle<Client>,
    user: &str,
    shown: &str,
    options: &RusshOptions,
) -> Result<bool, SshError> {
    let password = ask(
        &options.prompter,
        PromptKind::Password,
        format!("{shown}'s password: "),
        false,
        shown,
        None,
    )
    .await?;
    Ok(handle
        .authenticate_password(user, password.as_str())
        .await
        .map_err(russh_err(shown, "password"))?
        .success())
}
