//! The FLTK dialogs: one small window per prompt kind.
//!
//! Every dialog has a title, the window class `pv-askpass` (so window-manager rules can
//! match it), stays on top and is centred on the screen. Enter presses the default button
//! and Escape (or closing the window) cancels. The kinds:
//!
//! - entry (password, passphrase, PIN, unknown): a hidden entry, OK and Cancel; the
//!   unknown kind adds a "Show text" toggle (Alt-S);
//! - visible entry (one-time code, user name): the same with the text shown;
//! - host key: the prompt, then the host and fingerprint in bold, with **No** as the
//!   default button, so Enter rejects. Accepting takes a click on "Connect" (or Tab to it
//!   and Space), which prints `yes`; No prints `no`;
//! - confirm: Allow (default) and Deny; Allow prints nothing and exits 0;
//! - notify: the message and a Dismiss button; the window stays until ssh sends SIGTERM.
//!
//! FLTK reads `@` in labels as the start of a symbol (`alice@host` would show as
//! `alice`), so every label built from prompt text goes through [`escape_label`].
//! Scaling follows FLTK's rules (`FLTK_SCALING_FACTOR`, the `Xft.dpi` resource, Ctrl-+/-).
//!
//! Call [`ask`] only after [`crate::display::probe_x11`] succeeded: FLTK exits the process
//! when it cannot open the display.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use fltk::{app, button, enums, frame, input, prelude::*, window};
use zeroize::Zeroizing;

use crate::classify::{Prompt, PromptKind};
use crate::outcome::Outcome;

/// The X11 window class (`WM_CLASS`) of every dialog.
pub const WINDOW_CLASS: &str = "pv-askpass";

const MARGIN: i32 = 14;
const FONT_SIZE: i32 = 14;
const BUTTON_H: i32 = 30;
const BUTTON_W: i32 = 110;
/// FLTK insets labels drawn inside a box by a few pixels on each side.
const LABEL_SLACK: i32 = 12;
const INPUT_H: i32 = 30;
const MIN_W: i32 = 380;

/// Doubles every `@` so FLTK shows it literally instead of reading a symbol name.
pub fn escape_label(text: &str) -> String {
    text.replace('@', "@@")
}

/// Shows the dialog for `prompt` and waits for the user, at most `timeout` (which
/// cancels). `stay_on_top` asks the window manager to keep the dialog above others (pass
/// [`crate::display::DisplayInfo::can_stay_on_top`]). Returns what the user did.
///
/// One long function on purpose: FLTK's widgets, their callbacks and the event loop below
/// share the window's lifetime and its state; split apart, the layout would travel
/// through structs without reading any easier.
pub fn ask(prompt: &Prompt, timeout: Option<Duration>, stay_on_top: bool) -> Outcome {
    let app = app::App::default().with_scheme(app::Scheme::Gtk);
    app::set_font_size(FONT_SIZE);
    window::Window::set_default_xclass(WINDOW_CLASS);
    let result = Rc::new(RefCell::new(Outcome::Cancelled));

    // Opening the display here (screen_size does) lets us measure the text.
    let (screen_w, screen_h) = app::screen_size();
    let max_w = ((screen_w * 0.9) as i32).max(MIN_W);

    let prompt_label = escape_label(prompt.text.trim_end());
    // ssh's VisualHostKey randomart only lines up in a fixed-width font.
    let randomart = prompt.text.lines().any(|l| {
        let l = l.trim();
        l.len() > 4 && l.starts_with("+-") && l.ends_with("-+")
    });
    let prompt_font = if randomart {
        enums::Font::Courier
    } else {
        enums::Font::Helvetica
    };
    let (text_w, text_h) = measure(&prompt_label, prompt_font);
    // A prompt taller than most of the screen is clipped rather than pushing the
    // buttons off it.
    let text_h = text_h.min((screen_h * 0.6) as i32);
    let mut width = (text_w + 2 * MARGIN + LABEL_SLACK).clamp(MIN_W, max_w);

    // The bold summary under a host-key prompt.
    let summary = (prompt.kind == PromptKind::HostKey).then(|| host_key_summary(prompt));
    let summary_size = summary
        .as_deref()
        .map(|s| measure(s, enums::Font::HelveticaBold));
    if let Some((w, _)) = summary_size {
        width = width.max((w + 2 * MARGIN + LABEL_SLACK).min(max_w));
    }

    let mut win = window::Window::new(0, 0, width, 100, None);
    win.set_label(prompt.kind.title());
    let mut y = MARGIN;

    let mut text = frame::Frame::new(MARGIN, y, width - 2 * MARGIN, text_h, None);
    text.set_label(&prompt_label);
    text.set_label_size(FONT_SIZE);
    text.set_label_font(prompt_font);
    text.set_align(
        enums::Align::Left | enums::Align::Top | enums::Align::Inside | enums::Align::Clip,
    );
    y += text_h + MARGIN;

    if let (Some(summary), Some((_, h))) = (summary.as_deref(), summary_size) {
        let mut f = frame::Frame::new(MARGIN, y, width - 2 * MARGIN, h, None);
        f.set_label(summary);
        f.set_label_font(enums::Font::HelveticaBold);
        f.set_label_size(FONT_SIZE);
        f.set_align(enums::Align::Left | enums::Align::Top | enums::Align::Inside);
        y += h + MARGIN;
    }

    // The entry, for kinds that want text.
    let entry = prompt.kind.wants_text().then(|| {
        let mut inp = input::Input::new(MARGIN, y, width - 2 * MARGIN, INPUT_H, None);
        inp.set_text_size(FONT_SIZE);
        if !prompt.kind.echo() {
            inp.set_type(input::InputType::Secret);
        }
        y += INPUT_H + MARGIN / 2;
        inp
    });
    if prompt.kind == PromptKind::Unknown {
        if let Some(inp) = entry.clone() {
            let mut show = button::CheckButton::new(MARGIN, y, 140, 24, "&Show text");
            show.set_label_size(FONT_SIZE);
            show.clear_visible_focus();
            show.set_callback(move |b| {
                let mut inp = inp.clone();
                inp.set_type(if b.is_checked() {
                    input::InputType::Normal
                } else {
                    input::InputType::Secret
                });
                inp.redraw();
                let _ = inp.take_focus();
            });
            y += 24 + MARGIN / 2;
        }
    }

    if let Some(secs) = timeout {
        let mut note = frame::Frame::new(MARGIN, y, width - 2 * MARGIN, 20, None);
        note.set_label(&format!(
            "This dialog cancels itself after {} s.",
            secs.as_secs()
        ));
        note.set_label_size(FONT_SIZE - 2);
        note.set_align(enums::Align::Left | enums::Align::Inside);
        y += 20 + MARGIN / 2;
    }

    // Buttons, right-aligned: [secondary] [default ⏎].
    let (secondary, default) = match prompt.kind {
        PromptKind::HostKey => (Some("Connect"), "No"),
        PromptKind::Confirm => (Some("Deny"), "Allow"),
        PromptKind::Notify => (None, "Dismiss"),
        _ => (Some("Cancel"), "OK"),
    };
    y += MARGIN / 2;
    let mut default_btn =
        button::ReturnButton::new(width - MARGIN - BUTTON_W, y, BUTTON_W, BUTTON_H, None);
    default_btn.set_label(default);
    default_btn.set_label_size(FONT_SIZE);
    let secondary_btn = secondary.map(|label| {
        let mut b = button::Button::new(
            width - 2 * (MARGIN + BUTTON_W) + MARGIN / 2,
            y,
            BUTTON_W,
            BUTTON_H,
            None,
        );
        b.set_label(label);
        b.set_label_size(FONT_SIZE);
        b
    });
    y += BUTTON_H + MARGIN;
    win.end();
    win.set_size(width, y);
    win.set_pos(
        ((screen_w as i32 - width) / 2).max(0),
        ((screen_h as i32 - y) / 2).max(0),
    );
    win.size_range(width, y, 0, 0);

    // What each button does.
    {
        let (result, mut win) = (result.clone(), win.clone());
        let kind = prompt.kind;
        let entry = entry.clone();
        default_btn.set_callback(move |_| {
            *result.borrow_mut() = match kind {
                PromptKind::HostKey => Outcome::answer("no"),
                PromptKind::Confirm | PromptKind::Notify => Outcome::Accepted,
                _ => match entry.clone() {
                    Some(inp) => take_secret(inp),
                    None => Outcome::Cancelled,
                },
            };
            win.hide();
        });
    }
    if let Some(mut b) = secondary_btn {
        let (result, mut win) = (result.clone(), win.clone());
        let kind = prompt.kind;
        b.set_callback(move |_| {
            *result.borrow_mut() = match kind {
                PromptKind::HostKey => Outcome::answer("yes"),
                _ => Outcome::Cancelled,
            };
            win.hide();
        });
    }
    // Escape and the window's close box end here: cancel (and wipe what was typed).
    {
        let result = result.clone();
        let entry = entry.clone();
        win.set_callback(move |w| {
            if let Some(inp) = entry.clone() {
                wipe(inp);
            }
            *result.borrow_mut() = Outcome::Cancelled;
            w.hide();
        });
    }
    if let Some(secs) = timeout {
        let result = result.clone();
        let (mut win, entry) = (win.clone(), entry.clone());
        app::add_timeout3(secs.as_secs_f64(), move |_| {
            if let Some(inp) = entry.clone() {
                wipe(inp);
            }
            *result.borrow_mut() = Outcome::Cancelled;
            win.hide();
        });
    }

    win.make_resizable(false);
    win.show();
    if stay_on_top {
        win.set_on_top();
    }
    match (&entry, prompt.kind) {
        (Some(inp), _) => {
            let _ = inp.clone().take_focus();
        }
        // Keep the keyboard focus on No, so neither Enter nor Space accepts a host key.
        (None, _) => {
            let _ = default_btn.take_focus();
        }
    }
    if app.run().is_err() {
        return Outcome::Cancelled;
    }
    result.replace(Outcome::Cancelled)
}

/// The bold lines under a host-key prompt.
fn host_key_summary(prompt: &Prompt) -> String {
    let host = prompt
        .host
        .as_deref()
        .unwrap_or("(not named in this prompt)");
    let fp = prompt
        .fingerprint
        .as_deref()
        .unwrap_or("(not shown in this prompt)");
    escape_label(&format!(
        "Host: {host}\nFingerprint: {fp}\nConnect only if this fingerprint is the server's."
    ))
}

/// Measures a label in the dialog's font, with an estimate if FLTK reports nothing.
fn measure(label: &str, font: enums::Font) -> (i32, i32) {
    fltk::draw::set_font(font, FONT_SIZE);
    let (w, h) = fltk::draw::measure(label, true);
    if w > 0 && h > 0 {
        (w, h)
    } else {
        let lines = label.lines().count().max(1) as i32;
        let longest = label.lines().map(|l| l.chars().count()).max().unwrap_or(0) as i32;
        (longest * FONT_SIZE * 6 / 10, lines * (FONT_SIZE + 4))
    }
}

/// Takes the entry's text as the answer and overwrites the widget's copy.
fn take_secret(inp: input::Input) -> Outcome {
    let answer = Zeroizing::new(inp.value());
    wipe(inp);
    Outcome::Answer(answer)
}

/// Overwrites the entry's text in place before clearing it: a best effort to leave no
/// copy of the secret in FLTK's buffer (FLTK may still have reallocated it earlier).
fn wipe(mut inp: input::Input) {
    let len = Zeroizing::new(inp.value()).len();
    if len > 0 {
        inp.set_value(&" ".repeat(len));
        inp.set_value("");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_signs_are_doubled() {
        assert_eq!(
            escape_label("alice@host's password: "),
            "alice@@host's password: "
        );
        assert_eq!(escape_label("@@"), "@@@@");
        assert_eq!(escape_label("no at"), "no at");
    }
}
