//! Where something was written: a file, a line and a column, so every error about a
//! profile can point at the text that caused it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A position in a profile file (lines and columns count from 1, columns in characters).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SourcePos {
    /// The file the text came from.
    pub file: Arc<PathBuf>,
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub column: u32,
}

impl SourcePos {
    /// A position at line and column of `file`.
    pub fn new(file: &Arc<PathBuf>, line: u32, column: u32) -> Self {
        SourcePos {
            file: Arc::clone(file),
            line,
            column,
        }
    }

    /// The position of the byte `offset` inside `text`, the contents of `file`.
    pub fn at_offset(file: &Arc<PathBuf>, text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let mut cut = offset;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let before = &text[..cut];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        SourcePos::new(file, to_u32(line), to_u32(column))
    }

    /// The same line, `chars` characters further right.
    pub fn shifted(&self, chars: usize) -> Self {
        SourcePos {
            file: Arc::clone(&self.file),
            line: self.line,
            column: self.column.saturating_add(to_u32(chars)),
        }
    }

    /// The file name as printed in messages.
    pub fn file(&self) -> &Path {
        &self.file
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl fmt::Display for SourcePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// A value together with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub at: SourcePos,
}

impl<T> Located<T> {
    /// Pair `value` with its position.
    pub fn new(value: T, at: SourcePos) -> Self {
        Located { value, at }
    }
}

/// Something worth telling the user that does not stop the launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// Where the cause was written, if it was written somewhere.
    pub at: Option<SourcePos>,
    /// What is odd and what happens because of it.
    pub message: String,
}

impl Warning {
    /// A warning about the text at `at`.
    pub fn at(at: &SourcePos, message: impl Into<String>) -> Self {
        Warning {
            at: Some(at.clone()),
            message: message.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{at}: warning: {}", self.message),
            None => write!(f, "warning: {}", self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let file = Arc::new(PathBuf::from("p.toml"));
        let text = "ab\ncdé\nx";
        assert_eq!(
            SourcePos::at_offset(&file, text, 0).to_string(),
            "p.toml:1:1"
        );
        assert_eq!(
            SourcePos::at_offset(&file, text, 4).to_string(),
            "p.toml:2:2"
        );
        // after the two-byte é: column counts characters
        assert_eq!(
            SourcePos::at_offset(&file, text, 7).to_string(),
            "p.toml:2:4"
        );
        assert_eq!(
            SourcePos::at_offset(&file, text, 8).to_string(),
            "p.toml:3:1"
        );
    }
}
