//! A scripted [`Prompter`]: answers from a list, in order, and records every question, so
//! tests can answer ssh's prompts (passwords, passphrases, host keys) without a person.

use std::sync::{Arc, Mutex};

use pv_launch::prompt::{PromptError, PromptRequest, Prompter, Zeroizing};

/// Answers prompts from a script and records (option name, label) of each question.
pub struct Scripted {
    answers: Mutex<Vec<Result<String, PromptError>>>,
    asked: Mutex<Vec<(String, String)>>,
}

impl Scripted {
    /// A prompter giving `answers` in order; once they run out, every question gets
    /// [`PromptError::NoAnswer`].
    pub fn new(answers: Vec<Result<&str, PromptError>>) -> Arc<Scripted> {
        Arc::new(Scripted {
            answers: Mutex::new(
                answers
                    .into_iter()
                    .rev()
                    .map(|a| a.map(str::to_string))
                    .collect(),
            ),
            asked: Mutex::new(Vec::new()),
        })
    }

    /// (option name, label) of every question asked so far.
    pub fn asked(&self) -> Vec<(String, String)> {
        self.asked.lock().unwrap().clone()
    }
}

impl Prompter for Scripted {
    fn ask(&self, request: &PromptRequest<'_>) -> Result<Zeroizing<String>, PromptError> {
        self.asked
            .lock()
            .unwrap()
            .push((request.option.name.clone(), request.option.label.clone()));
        self.answers
            .lock()
            .unwrap()
            .pop()
            .map(|a| a.map(Zeroizing::new))
            .unwrap_or(Err(PromptError::NoAnswer(
                "the script has no more answers".into(),
            )))
    }
}
