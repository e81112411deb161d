//! `${NAME}` templates: pv-launch's own variable syntax for argv elements and values.
//!
//! A template is one string with variables in it. It is rendered to exactly one string: no
//! shell runs, nothing is re-split, so a value holding spaces, quotes, `;`, `$( )` or
//! newlines reaches the server byte for byte.
//!
//! | written | becomes |
//! | --- | --- |
//! | `${NAME}` | the value of the variable `NAME` (an option, a `set`, a predefined `PV_*`) |
//! | `${env:NAME}` | the value of `NAME` in pv-launch's own environment (an error if unset) |
//! | `$$` | a single `$` |
//! | `$` before anything else | itself |
//!
//! A name is a letter or `_` followed by letters, digits and `_`. An unknown name is an
//! error that points at the `$`.
//!
//! ParaView's own `$NAME$` syntax, which `.pvsc` command lines use (substituted over the whole
//! line, then re-split into argv), is in [`paraview_line`].
//!
//! ```
//! use pv_launch::template::Template;
//! let t = Template::parse("--title=${TITLE}; echo $$HOME").unwrap();
//! let out = t.render(&|name: &str| (name == "TITLE").then(|| "a b".to_string()), &|_| None);
//! assert_eq!(out.unwrap(), "--title=a b; echo $HOME");
//! ```

pub mod paraview_line;

use std::fmt;

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Text copied as it is.
    Literal(String),
    /// `${NAME}`: a variable, and the byte offset of its `$` in the source.
    Variable {
        /// The variable's name.
        name: String,
        /// Byte offset of the `$` in the template's source.
        offset: usize,
    },
    /// `${env:NAME}`: pv-launch's own environment, and the byte offset of its `$`.
    Environment {
        /// The environment variable's name.
        name: String,
        /// Byte offset of the `$` in the template's source.
        offset: usize,
    },
}

/// A parsed `${NAME}` template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

/// A template that does not parse, or names a variable that does not exist.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// Byte offset of the problem in the template's source.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// True for names a template accepts: a letter or `_`, then letters, digits or `_`.
pub fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Template {
    /// Parse `source`.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = source.char_indices().peekable();
        while let Some((i, c)) = rest.next() {
            if c != '$' {
                literal.push(c);
                continue;
            }
            match rest.peek() {
                Some((_, '$')) => {
                    rest.next();
                    literal.push('$');
                }
                Some((_, '{')) => {
                    rest.next();
                    let start = i + 2;
                    let Some(len) = source[start..].find('}') else {
                        return Err(TemplateError {
                            offset: i,
                            message: "`${` without a closing `}` (write `$${` for a literal `${`)"
                                .into(),
                        });
                    };
                    let inner = &source[start..start + len];
                    while rest.peek().is_some_and(|(j, _)| *j <= start + len) {
                        rest.next();
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    let (name, is_env) = match inner.strip_prefix("env:") {
                        Some(n) => (n, true),
                        None => (inner, false),
                    };
                    if !is_variable_name(name) {
                        return Err(TemplateError {
                            offset: i,
                            message: format!(
                                "`${{{inner}}}` is not a variable name (letters, digits and `_`, not starting with a digit)"
                            ),
                        });
                    }
                    let name = name.to_string();
                    pieces.push(if is_env {
                        Piece::Environment { name, offset: i }
                    } else {
                        Piece::Variable { name, offset: i }
                    });
                }
                _ => literal.push('$'),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Template {
            source: source.to_string(),
            pieces,
        })
    }

    /// A template that is only `text` (with `$` escaped so it stays literal).
    pub fn literal(text: &str) -> Template {
        Template {
            source: text.replace('$', "$$"),
            pieces: if text.is_empty() {
                vec![]
            } else {
                vec![Piece::Literal(text.to_string())]
            },
        }
    }

    /// The text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The parsed pieces.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// The names of the `${NAME}` variables, in order, with the offset of each.
    pub fn variables(&self) -> impl Iterator<Item = (&str, usize)> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Variable { name, offset } => Some((name.as_str(), *offset)),
            _ => None,
        })
    }

    /// Render with `variable` answering `${NAME}` and `environment` answering `${env:NAME}`.
    pub fn render(
        &self,
        variable: &dyn Fn(&str) -> Option<String>,
        environment: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, TemplateError> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Variable { name, offset } => {
                    out.push_str(&variable(name).ok_or_else(|| TemplateError {
                        offset: *offset,
                        message: format!("unknown variable `${{{name}}}`"),
                    })?);
                }
                Piece::Environment { name, offset } => {
                    out.push_str(&environment(name).ok_or_else(|| TemplateError {
                        offset: *offset,
                        message: format!(
                            "`${{env:{name}}}`: {name} is not set in pv-launch's environment"
                        ),
                    })?);
                }
            }
        }
        Ok(out)
    }
}

/// A single value in either variable syntax: pv-launch's `${NAME}` templates, or a `.pvsc`
/// attribute in ParaView's `$NAME$` syntax (substituted with rescanning, unknown names
/// becoming their bare name; see [`paraview_line`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Text {
    /// `${NAME}` syntax.
    Template(Template),
    /// ParaView's `$NAME$` syntax.
    ParaView(String),
}

impl Text {
    /// The text as written.
    pub fn source(&self) -> &str {
        match self {
            Text::Template(t) => t.source(),
            Text::ParaView(s) => s,
        }
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "A" => Some("x y".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_escapes_and_keeps_lone_dollars() {
        let t = Template::parse("a${A}b$$c$d${EMPTY}$").unwrap();
        assert_eq!(t.render(&vars, &|_| None).unwrap(), "ax yb$c$d$");
    }

    #[test]
    fn unknown_variable_points_at_its_dollar() {
        let t = Template::parse("abc${NOPE}").unwrap();
        let e = t.render(&vars, &|_| None).unwrap_err();
        assert_eq!(e.offset, 3);
        assert!(e.message.contains("NOPE"), "{}", e.message);
    }

    #[test]
    fn malformed_templates_are_errors() {
        assert_eq!(Template::parse("x${A").unwrap_err().offset, 1);
        assert_eq!(Template::parse("${1A}").unwrap_err().offset, 0);
        assert_eq!(Template::parse("${}").unwrap_err().offset, 0);
    }

    #[test]
    fn environment_lookup() {
        let t = Template::parse("${env:HOME}/x").unwrap();
        let env = |n: &str| (n == "HOME").then(|| "/h".to_string());
        assert_eq!(t.render(&vars, &env).unwrap(), "/h/x");
        assert!(t.render(&vars, &|_| None).is_err());
    }

    proptest! {
        #[test]
        fn any_value_passes_through_unchanged(value in any::<String>()) {
            let t = Template::parse("${V}").unwrap();
            let out = t.render(&|n| (n == "V").then(|| value.clone()), &|_| None).unwrap();
            prop_assert_eq!(out, value);
        }

        #[test]
        fn literal_round_trips(text in any::<String>()) {
            let t = Template::parse(Template::literal(&text).source()).unwrap();
            prop_assert_eq!(t.render(&|_| None, &|_| None).unwrap(), text);
        }
    }
}
