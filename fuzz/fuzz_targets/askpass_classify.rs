//! Askpass prompt classification: any prompt text ssh or git may pass, with any hint.
//! Never a panic, the hint wins, and the bridge request for the prompt round-trips.
//!
//! Input: a hint byte (0 none, 1 confirm, 2 notify, else the rest of the hint byte
//! spectrum reads as none), then the prompt text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pv_askpass::bridge::Request;
use pv_askpass::{Hint, PromptKind, classify};

fuzz_target!(|input: &[u8]| {
    let [hint, text @ ..] = input else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let hint = match hint {
        1 => Hint::Confirm,
        2 => Hint::Notify,
        _ => Hint::None,
    };
    let prompt = classify(text, hint);
    assert_eq!(prompt.text, text);
    match hint {
        Hint::Confirm => assert_eq!(prompt.kind, PromptKind::Confirm),
        Hint::Notify => assert_eq!(prompt.kind, PromptKind::Notify),
        Hint::None => assert!(!matches!(
            prompt.kind,
            PromptKind::Confirm | PromptKind::Notify
        )),
    }
    let request = Request::new(&prompt);
    assert_eq!(
        Request::from_line(&request.to_line()).expect("decodes"),
        request
    );
    let _ = Hint::from_env_value(Some(text));
});
