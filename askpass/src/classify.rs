//! Prompt classification: what kind of answer a prompt wants, read from the
//! `SSH_ASKPASS_PROMPT` hint and the prompt text.
//!
//! ssh gives a hint only for permission questions (`confirm`) and notifications (`none`).
//! Every other prompt — passwords, passphrases, PINs, keyboard-interactive questions, the
//! host-key question, git's username and password — arrives with no hint and no echo flag,
//! so the kind has to be read from the text. The patterns below follow the prompt catalogue
//! of OpenSSH (ssh, ssh-add, ssh-agent, ssh-keygen) and git; anything they do not recognise
//! is [`PromptKind::Unknown`], which the dialogs show as a hidden entry with a "show text"
//! toggle, the safe choice for a prompt that may want a secret.
//!
//! This module is pure: no I/O, no environment, so every pattern is unit-tested.

use serde::{Deserialize, Serialize};

/// The value of `SSH_ASKPASS_PROMPT`, the only hint ssh passes besides the prompt text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// No hint (the variable is unset or has a value we do not know): read the text.
    None,
    /// `SSH_ASKPASS_PROMPT=confirm`: a yes/no permission question; exit 0 allows.
    Confirm,
    /// `SSH_ASKPASS_PROMPT=none`: a notification that ssh ends with SIGTERM.
    Notify,
}

impl Hint {
    /// Reads the hint from the value of `SSH_ASKPASS_PROMPT` (case-insensitive).
    pub fn from_env_value(value: Option<&str>) -> Hint {
        match value {
            Some(v) if v.eq_ignore_ascii_case("confirm") => Hint::Confirm,
            Some(v) if v.eq_ignore_ascii_case("none") => Hint::Notify,
            _ => Hint::None,
        }
    }
}

/// What kind of answer a prompt wants. Serialised in snake case (`"host_key"`,
/// `"one_time_code"`, …) in the bridge protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptKind {
    /// A yes/no question about a host key: ssh's unknown-host question, its
    /// "Please type 'yes'…" re-ask, the CheckHostIP mismatch warning and
    /// `UpdateHostKeys=ask`. The answer is `yes` or `no`; the safe default is no.
    HostKey,
    /// A permission question (`SSH_ASKPASS_PROMPT=confirm`): exit 0 allows, 1 denies.
    Confirm,
    /// A notification (`SSH_ASKPASS_PROMPT=none`) shown until ssh sends SIGTERM.
    Notify,
    /// A login or account password (ssh, PAM `Password:`, git's `Password for`).
    Password,
    /// A key passphrase (ssh, ssh-add, ssh-keygen).
    Passphrase,
    /// A PIN for a security key, PKCS#11 token or authenticator.
    Pin,
    /// A keyboard-interactive one-time code (verification code, OTP, passcode): typed
    /// visibly, since it is short-lived and easy to mistype.
    OneTimeCode,
    /// A user name (git's `Username for`): typed visibly.
    Username,
    /// Anything else: a hidden entry with a "show text" toggle.
    Unknown,
}

impl PromptKind {
    /// True when the answer is typed as free text (an entry field), false for yes/no
    /// questions and notifications.
    pub fn wants_text(self) -> bool {
        !matches!(
            self,
            PromptKind::HostKey | PromptKind::Confirm | PromptKind::Notify
        )
    }

    /// True when the entry should show what is typed (one-time codes, user names and
    /// yes/no answers typed on a terminal).
    pub fn echo(self) -> bool {
        matches!(
            self,
            PromptKind::OneTimeCode | PromptKind::Username | PromptKind::HostKey
        )
    }

    /// A short human title for the dialog window.
    pub fn title(self) -> &'static str {
        match self {
            PromptKind::HostKey => "Unknown SSH host key",
            PromptKind::Confirm => "SSH confirmation",
            PromptKind::Notify => "SSH notification",
            PromptKind::Password => "Password",
            PromptKind::Passphrase => "Key passphrase",
            PromptKind::Pin => "PIN",
            PromptKind::OneTimeCode => "One-time code",
            PromptKind::Username => "User name",
            PromptKind::Unknown => "Authentication",
        }
    }

    /// The snake-case name used on the wire and in diagnostics.
    pub fn as_str(self) -> &'static str {
        match self {
            PromptKind::HostKey => "host_key",
            PromptKind::Confirm => "confirm",
            PromptKind::Notify => "notify",
            PromptKind::Password => "password",
            PromptKind::Passphrase => "passphrase",
            PromptKind::Pin => "pin",
            PromptKind::OneTimeCode => "one_time_code",
            PromptKind::Username => "username",
            PromptKind::Unknown => "unknown",
        }
    }
}

/// A classified prompt: the text as received, its kind, and what could be read out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The prompt exactly as received (`argv[1]`); may span several lines.
    pub text: String,
    /// What kind of answer it wants.
    pub kind: PromptKind,
    /// The host the prompt is about, when the text names it (`host (ip)` for host keys,
    /// `user@host` for passwords, the URL for git).
    pub host: Option<String>,
    /// The key fingerprint (`SHA256:…` or `MD5:…`) shown in host-key and confirm prompts.
    pub fingerprint: Option<String>,
}

/// Classifies `text` given the `SSH_ASKPASS_PROMPT` hint.
///
/// The hint wins; then host-key questions; then git's prompts; then one-time codes (before
/// passwords, so `One-time password:` is shown visibly); then passwords, passphrases and
/// PINs; anything else is [`PromptKind::Unknown`].
pub fn classify(text: &str, hint: Hint) -> Prompt {
    let kind = kind_of(text, hint);
    let host = match kind {
        PromptKind::HostKey => host_key_host(text),
        PromptKind::Confirm | PromptKind::Notify => None,
        _ => login_host(text),
    };
    let fingerprint = match kind {
        PromptKind::HostKey | PromptKind::Confirm | PromptKind::Notify => fingerprint(text),
        _ => None,
    };
    Prompt {
        text: text.to_owned(),
        kind,
        host,
        fingerprint,
    }
}

fn kind_of(text: &str, hint: Hint) -> PromptKind {
    match hint {
        Hint::Confirm => return PromptKind::Confirm,
        Hint::Notify => return PromptKind::Notify,
        Hint::None => {}
    }
    let trimmed = text.trim_end();
    let lower = trimmed.to_lowercase();
    // The last line carries the question; earlier lines are context (host-key prompts).
    let last_line = lower.lines().last().unwrap_or("").trim();

    if is_host_key_question(&lower, last_line) {
        return PromptKind::HostKey;
    }
    // git (and git-lfs, which uses double quotes and no colon).
    if last_line.starts_with("username for '") || last_line.starts_with("username for \"") {
        return PromptKind::Username;
    }
    if last_line.starts_with("password for '") || last_line.starts_with("password for \"") {
        return PromptKind::Password;
    }
    // OpenSSH's own fixed wordings, matched before any keyword search so that a path,
    // user or host name inside them (`/home/otp/.ssh/id`, `otp@gw's password:`) cannot
    // change the kind.
    if let Some(kind) = openssh_template(last_line) {
        return kind;
    }
    // Keywords, searched only in the server's part of a keyboard-interactive prompt
    // (after `(user@host) `) and outside quoted names.
    let original_last = trimmed.lines().last().unwrap_or("").trim();
    let body = unquoted(strip_login_prefix(original_last));
    let body_lower = body.to_lowercase();
    if is_one_time_code(&body_lower) {
        return PromptKind::OneTimeCode;
    }
    if body_lower.contains("password") || body_lower == "again:" {
        // `Again:` is ssh-add's second ask for the agent lock password.
        return PromptKind::Password;
    }
    if body_lower.contains("passphrase") {
        return PromptKind::Passphrase;
    }
    if contains_word(&body, "PIN") {
        return PromptKind::Pin;
    }
    PromptKind::Unknown
}

/// The kind of OpenSSH's fixed secret prompts, from their wording (`last_line` is
/// lower-cased).
fn openssh_template(last_line: &str) -> Option<PromptKind> {
    const PASSPHRASE_STARTS: [&str; 5] = [
        "enter passphrase",
        "bad passphrase, try again",
        "enter new passphrase",
        "enter same passphrase",
        "enter old passphrase",
    ];
    if PASSPHRASE_STARTS.iter().any(|p| last_line.starts_with(p)) {
        return Some(PromptKind::Passphrase);
    }
    if last_line.starts_with("enter pin ") {
        return Some(PromptKind::Pin);
    }
    let password_ends = ["'s password:", "'s old password:", "'s new password:"];
    if !last_line.starts_with('(') && password_ends.iter().any(|e| last_line.ends_with(e)) {
        return Some(PromptKind::Password);
    }
    None
}

/// Drops the `(user@host) ` that ssh puts before a keyboard-interactive prompt.
fn strip_login_prefix(line: &str) -> &str {
    line.strip_prefix('(')
        .and_then(|rest| rest.split_once(") "))
        .filter(|(inside, _)| !inside.contains(' '))
        .map_or(line, |(_, after)| after)
}

/// The line with '…' and "…" quoted parts removed (names of files, keys, URLs).
fn unquoted(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None => out.push(c),
        }
    }
    out
}

/// ssh's yes/no questions about host keys.
fn is_host_key_question(lower: &str, last_line: &str) -> bool {
    lower.contains("the authenticity of host '")
        || last_line.ends_with("(yes/no/[fingerprint])?")
        || last_line.ends_with("(yes/no)?")
        || last_line.ends_with("(yes/no):")
        || last_line.starts_with("please type 'yes'")
        || last_line.starts_with("accept updated hostkeys?")
}

/// Keyboard-interactive prompts for short-lived codes, which are typed visibly.
fn is_one_time_code(last_line: &str) -> bool {
    const MARKERS: [&str; 12] = [
        "verification code",
        "one-time",
        "one time",
        "otp",
        "passcode",
        "token code",
        "authenticator code",
        "authentication code",
        "security code",
        "2fa",
        "two-factor",
        "second factor",
    ];
    MARKERS.iter().any(|m| contains_word(last_line, m))
}

/// True when `needle` occurs in `hay` with no letter or digit right before or after it.
fn contains_word(hay: &str, needle: &str) -> bool {
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric());
    hay.match_indices(needle).any(|(i, m)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + m.len()..].chars().next();
        !is_word(before) && !is_word(after)
    })
}

/// The host named by a host-key question: `HOST (IP)` from the unknown-host question, or
/// the quoted host of the CheckHostIP warning.
fn host_key_host(text: &str) -> Option<String> {
    const OPENERS: [&str; 2] = ["The authenticity of host '", "host key for '"];
    OPENERS.iter().find_map(|opener| {
        let start = text.find(opener)? + opener.len();
        let rest = &text[start..];
        // The host part may itself contain a quote only in pathological names; ssh
        // closes it with `' can't` (or `' differs`), so look for the closing quote.
        let end = rest.find('\'')?;
        Some(rest[..end].to_owned()).filter(|h| !h.is_empty())
    })
}

/// The `user@host` of ssh's password prompts (`USER@HOST's password:`,
/// `(USER@HOST) Password:`), or the URL of git's `Password for 'URL':`.
fn login_host(text: &str) -> Option<String> {
    let last = text.trim_end().lines().last()?.trim();
    // git: `Username for 'URL': ` / `Password for 'URL': ` (git-lfs uses double quotes).
    if let Some(rest) = last
        .strip_prefix("Username for ")
        .or_else(|| last.strip_prefix("Password for "))
    {
        let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let inner = &rest[1..];
        return inner.find(quote).map(|end| inner[..end].to_owned());
    }
    if let Some(rest) = last.strip_prefix('(') {
        if let Some(end) = rest.find(") ") {
            let inner = &rest[..end];
            if inner.contains('@') {
                return Some(inner.to_owned());
            }
        }
    }
    // `[Enter |Retype ]USER@HOST's [old |new ]password:`
    if let Some(end) = last.find("'s ") {
        let head = &last[..end];
        let word = head.rsplit(' ').next().unwrap_or(head);
        if word.contains('@') {
            return Some(word.to_owned());
        }
    }
    None
}

/// The first `SHA256:…` / `MD5:…` fingerprint in the text, with the trailing period of
/// the pre-10.1 `fingerprint is SHA256:X.` form removed.
fn fingerprint(text: &str) -> Option<String> {
    text.split_whitespace().find_map(|token| {
        let token = token.trim_end_matches(['.', ',', ')']);
        let token = token.trim_start_matches('(');
        let is_fp = token
            .strip_prefix("SHA256:")
            .map(|b64| {
                !b64.is_empty()
                    && b64
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=')
            })
            .or_else(|| {
                token.strip_prefix("MD5:").map(|hex| {
                    !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit() || c == ':')
                })
            })
            .unwrap_or(false);
        is_fp.then(|| token.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> PromptKind {
        classify(text, Hint::None).kind
    }

    const FP: &str = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";

    fn host_key_prompt_pre_10_1() -> String {
        format!(
            "The authenticity of host 'example.org (192.0.2.7)' can't be established.\n\
             ED25519 key fingerprint is {FP}.\n\
             This key is not known by any other names.\n\
             Are you sure you want to continue connecting (yes/no/[fingerprint])? "
        )
    }

    fn host_key_prompt_10_1() -> String {
        format!(
            "The authenticity of host 'example.org (192.0.2.7)' can't be established.\n\
             ED25519 key fingerprint is: {FP}\n\
             This key is not known by any other names.\n\
             Are you sure you want to continue connecting (yes/no/[fingerprint])? "
        )
    }

    #[test]
    fn hints_win_over_text() {
        let p = classify(
            "Allow use of key alice@laptop?\nKey fingerprint "
                .to_owned()
                .as_str(),
            Hint::Confirm,
        );
        assert_eq!(p.kind, PromptKind::Confirm);
        assert_eq!(
            classify(
                "Confirm user presence for key ED25519-SK SHA256:abc",
                Hint::Notify
            )
            .kind,
            PromptKind::Notify
        );
        assert_eq!(Hint::from_env_value(Some("confirm")), Hint::Confirm);
        assert_eq!(Hint::from_env_value(Some("CONFIRM")), Hint::Confirm);
        assert_eq!(Hint::from_env_value(Some("none")), Hint::Notify);
        assert_eq!(Hint::from_env_value(Some("other")), Hint::None);
        assert_eq!(Hint::from_env_value(None), Hint::None);
    }

    #[test]
    fn host_key_before_openssh_10_1() {
        let p = classify(&host_key_prompt_pre_10_1(), Hint::None);
        assert_eq!(p.kind, PromptKind::HostKey);
        assert_eq!(p.host.as_deref(), Some("example.org (192.0.2.7)"));
        assert_eq!(p.fingerprint.as_deref(), Some(FP));
    }

    #[test]
    fn host_key_from_openssh_10_1() {
        let p = classify(&host_key_prompt_10_1(), Hint::None);
        assert_eq!(p.kind, PromptKind::HostKey);
        assert_eq!(p.host.as_deref(), Some("example.org (192.0.2.7)"));
        assert_eq!(p.fingerprint.as_deref(), Some(FP));
    }

    #[test]
    fn host_key_with_other_key_types_randomart_and_other_names() {
        let text = format!(
            "The authenticity of host '[127.0.0.1]:2222 ([127.0.0.1]:2222)' can't be established\n\
             but keys of different type are already known for this host.\n\
             ECDSA key fingerprint is {FP}.\n\
             +---[ECDSA 256]---+\n|        .o+.     |\n+----[SHA256]-----+\n\
             Matching host key fingerprint found in DNS.\n\
             This host key is known by the following other names/addresses:\n\
             \x20   ~/.ssh/known_hosts:3: other.example\n\
             Are you sure you want to continue connecting (yes/no/[fingerprint])? "
        );
        let p = classify(&text, Hint::None);
        assert_eq!(p.kind, PromptKind::HostKey);
        assert_eq!(
            p.host.as_deref(),
            Some("[127.0.0.1]:2222 ([127.0.0.1]:2222)")
        );
        assert_eq!(p.fingerprint.as_deref(), Some(FP));
    }

    #[test]
    fn host_key_md5_fingerprint() {
        let text = "The authenticity of host 'h (10.0.0.1)' can't be established.\n\
                    RSA key fingerprint is MD5:9f:3c:aa:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d.\n\
                    Are you sure you want to continue connecting (yes/no/[fingerprint])? ";
        let p = classify(text, Hint::None);
        assert_eq!(
            p.fingerprint.as_deref(),
            Some("MD5:9f:3c:aa:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d")
        );
    }

    #[test]
    fn host_key_re_asks_have_no_context() {
        for text in [
            "Please type 'yes', 'no' or the fingerprint: ",
            "Please type 'yes' or 'no': ",
        ] {
            let p = classify(text, Hint::None);
            assert_eq!(p.kind, PromptKind::HostKey, "{text}");
            assert_eq!(p.host, None);
            assert_eq!(p.fingerprint, None);
        }
    }

    #[test]
    fn host_key_ip_mismatch_and_update_host_keys() {
        let text = "Warning: the ECDSA host key for 'server.example' differs from the key for the IP address '192.0.2.9'\n\
                    Offending key for IP in /home/u/.ssh/known_hosts:2\n\
                    Matching host key in /home/u/.ssh/known_hosts:1\n\
                    Are you sure you want to continue connecting (yes/no)? ";
        let p = classify(text, Hint::None);
        assert_eq!(p.kind, PromptKind::HostKey);
        assert_eq!(p.host.as_deref(), Some("server.example"));
        assert_eq!(
            kind("Accept updated hostkeys? (yes/no): "),
            PromptKind::HostKey
        );
    }

    #[test]
    fn ssh_passwords() {
        for (text, host) in [
            ("alice@example.org's password: ", "alice@example.org"),
            (
                "Enter alice@example.org's old password: ",
                "alice@example.org",
            ),
            (
                "Enter alice@example.org's new password: ",
                "alice@example.org",
            ),
            (
                "Retype alice@example.org's new password: ",
                "alice@example.org",
            ),
            ("(alice@example.org) Password: ", "alice@example.org"),
            ("(alice@host) Password for alice@host: ", "alice@host"),
        ] {
            let p = classify(text, Hint::None);
            assert_eq!(p.kind, PromptKind::Password, "{text}");
            assert_eq!(p.host.as_deref(), Some(host), "{text}");
        }
        assert_eq!(kind("Enter lock password: "), PromptKind::Password);
        assert_eq!(kind("Again: "), PromptKind::Password);
        assert_eq!(kind("Password: "), PromptKind::Password);
    }

    #[test]
    fn passphrases() {
        for text in [
            "Enter passphrase for key '/home/alice/.ssh/id_ed25519': ",
            "Enter passphrase for /home/alice/.ssh/id_ed25519: ",
            "Enter passphrase for /tmp/k (will confirm each use): ",
            "Bad passphrase, try again for /home/alice/.ssh/id_ed25519: ",
            "Enter passphrase for PKCS#11: ",
            "Enter passphrase for \"/home/alice/.ssh/id_rsa\": ",
            "Enter passphrase for \"/home/alice/.ssh/id_rsa\" (empty for no passphrase): ",
            "Enter new passphrase (empty for no passphrase): ",
            "Enter same passphrase again: ",
            "Enter old passphrase: ",
            "Enter passphrase: ",
        ] {
            assert_eq!(kind(text), PromptKind::Passphrase, "{text}");
        }
    }

    #[test]
    fn pins() {
        for text in [
            "Enter PIN for ED25519-SK key /home/alice/.ssh/id_ed25519_sk: ",
            "Enter PIN and confirm user presence for ED25519-SK key SHA256:abcd: ",
            "Enter PIN for authenticator: ",
            "Enter PIN for CA key: ",
            "Enter PIN for 'My Token': ",
        ] {
            assert_eq!(kind(text), PromptKind::Pin, "{text}");
        }
        // "PIN" must be a word: no match inside other words.
        assert_eq!(kind("SPINNER: "), PromptKind::Unknown);
    }

    #[test]
    fn one_time_codes_are_visible() {
        for text in [
            "(alice@example.org) Verification code: ",
            "Verification code: ",
            "(alice@host) One-time password (OATH) for `alice': ",
            "(alice@host) Passcode or option (1-3): ",
            "(alice@host) Enter your OTP: ",
            "(alice@host) Two-factor authentication code: ",
        ] {
            let k = kind(text);
            assert_eq!(k, PromptKind::OneTimeCode, "{text}");
            assert!(k.echo());
        }
    }

    #[test]
    fn git_prompts() {
        let p = classify("Username for 'https://git.example.org': ", Hint::None);
        assert_eq!(p.kind, PromptKind::Username);
        assert_eq!(p.host.as_deref(), Some("https://git.example.org"));
        assert!(p.kind.echo());
        let p = classify("Password for 'https://alice@git.example.org': ", Hint::None);
        assert_eq!(p.kind, PromptKind::Password);
        assert_eq!(p.host.as_deref(), Some("https://alice@git.example.org"));
        assert!(!p.kind.echo());
        // git-lfs: double quotes and no colon.
        assert_eq!(
            kind("Username for \"https://git.example.org\""),
            PromptKind::Username
        );
        assert_eq!(
            kind("Password for \"https://alice@git.example.org\""),
            PromptKind::Password
        );
    }

    #[test]
    fn confirm_prompts_keep_their_fingerprint() {
        let text = format!("Allow use of key alice@laptop?\nKey fingerprint {FP}.");
        let p = classify(&text, Hint::Confirm);
        assert_eq!(p.kind, PromptKind::Confirm);
        assert_eq!(p.fingerprint.as_deref(), Some(FP));
        for text in [
            "Add key /home/alice/.ssh/id_ed25519 (alice@laptop) to agent?",
            "Allow shared connection to example.org? ",
            "Terminate shared connection to example.org? ",
            "Open local forward on example.org?",
            "Allow forward to [localhost]:8080? ",
            "Allow forward to path /tmp/sock",
            "Disable further multiplexing on shared connection to example.org? ",
            "Allow multiplex proxy connection?",
        ] {
            assert_eq!(classify(text, Hint::Confirm).kind, PromptKind::Confirm);
        }
    }

    #[test]
    fn notifications() {
        let text = format!("Confirm user presence for key ED25519-SK {FP}");
        let p = classify(&text, Hint::Notify);
        assert_eq!(p.kind, PromptKind::Notify);
        assert_eq!(p.fingerprint.as_deref(), Some(FP));
    }

    #[test]
    fn names_inside_prompts_do_not_change_the_kind() {
        // A password prompt must never become a visible one-time-code entry because a
        // user, host or path contains a keyword.
        for (text, want) in [
            ("otp@gateway's password: ", PromptKind::Password),
            ("(otp@gateway) Password: ", PromptKind::Password),
            ("(alice@otp-gw.example) Password: ", PromptKind::Password),
            (
                "(alice@token-code.example) Password: ",
                PromptKind::Password,
            ),
            (
                "Enter passphrase for key '/home/otp/.ssh/id_password': ",
                PromptKind::Passphrase,
            ),
            (
                "Enter passphrase for /srv/passcode/id_ed25519: ",
                PromptKind::Passphrase,
            ),
            (
                "Bad passphrase, try again for /home/a/otp_key: ",
                PromptKind::Passphrase,
            ),
            ("Enter PIN for 'OTP token': ", PromptKind::Pin),
            (
                "Password for 'https://otp.example.org': ",
                PromptKind::Password,
            ),
            (
                "Enter alice@passphrase-host's old password: ",
                PromptKind::Password,
            ),
        ] {
            assert_eq!(kind(text), want, "{text}");
        }
    }

    #[test]
    fn agent_confirm_with_destination_constraint() {
        let text = format!(
            "Allow use of key alice@laptop?\nKey fingerprint {FP}.\n\
             Requested to authenticate to host \"example.org\" (alias \"ex\")"
        );
        let p = classify(&text, Hint::Confirm);
        assert_eq!(p.kind, PromptKind::Confirm);
        assert_eq!(p.fingerprint.as_deref(), Some(FP));
    }

    #[test]
    fn unknown_prompts_are_hidden_entries() {
        for text in ["", "What is your quest? ", "Token: ", "Response: "] {
            let k = kind(text);
            assert_eq!(k, PromptKind::Unknown, "{text:?}");
            assert!(k.wants_text());
            assert!(!k.echo());
        }
    }

    #[test]
    fn kinds_serialise_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&PromptKind::OneTimeCode).unwrap(),
            "\"one_time_code\""
        );
        for k in [
            PromptKind::HostKey,
            PromptKind::Confirm,
            PromptKind::Notify,
            PromptKind::Password,
            PromptKind::Passphrase,
            PromptKind::Pin,
            PromptKind::OneTimeCode,
            PromptKind::Username,
            PromptKind::Unknown,
        ] {
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
    }
}
