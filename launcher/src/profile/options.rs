//! Options: the values a user is asked for before a server starts (ParaView's `<Option>`),
//! and the rules a value must follow.

use crate::source::SourcePos;

/// One option the user is asked for. Its value becomes the variable `name`.
#[derive(Clone, Debug, PartialEq)]
pub struct OptionSpec {
    /// The variable name.
    pub name: String,
    /// The text shown when asking (defaults to the name).
    pub label: String,
    /// The type, its limits and its default.
    pub kind: OptionKind,
    /// The user may not change the default.
    pub readonly: bool,
    /// Remember the chosen value for next time (ParaView's `save`; `random` defaults are
    /// never saved).
    pub save: bool,
    /// Where it was written.
    pub at: SourcePos,
}

/// What kind of value an option holds.
#[derive(Clone, Debug, PartialEq)]
pub enum OptionKind {
    /// An integer in `min..=max`, reachable from `min` in steps of `step`.
    Int {
        /// Smallest value.
        min: i64,
        /// Largest value.
        max: i64,
        /// Step between values.
        step: i64,
        /// The default.
        default: RangeDefault<i64>,
    },
    /// A floating-point number in `min..=max`.
    Double {
        /// Smallest value.
        min: f64,
        /// Largest value.
        max: f64,
        /// When written: a value must be `min` plus a whole number of steps (within a
        /// rounding tolerance). `None`: any value in the range.
        step: Option<f64>,
        /// The default.
        default: RangeDefault<f64>,
    },
    /// Free text.
    String {
        /// The default (empty when absent).
        default: Option<String>,
    },
    /// Secret text: never printed, never placed on a command line.
    Password {
        /// The default (absent means the user must answer).
        default: Option<String>,
    },
    /// A path to a local file.
    File {
        /// The default.
        default: Option<String>,
    },
    /// On or off; the variable holds `true_value` or `false_value`.
    Boolean {
        /// The text for on (ParaView's default `1`).
        true_value: String,
        /// The text for off (ParaView's default `0`).
        false_value: String,
        /// The default state.
        default: bool,
    },
    /// One of a list of values.
    Enumeration {
        /// The entries in order.
        entries: Vec<EnumEntry>,
        /// The default value; `None` selects nothing (the variable is then empty, as in
        /// ParaView).
        default: Option<String>,
    },
}

/// One value of an enumeration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnumEntry {
    /// The value the variable gets (may be empty).
    pub value: String,
    /// The text shown (defaults to the value).
    pub label: String,
}

/// The default of a range: a value, or a uniform draw in `min..=max` at every launch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RangeDefault<T> {
    /// This value.
    Value(T),
    /// A new uniform draw each launch.
    Random,
}

impl OptionKind {
    /// The type's name as written in a TOML profile: `int`, `double`, `string`, …
    pub fn type_name(&self) -> &'static str {
        match self {
            OptionKind::Int { .. } => "int",
            OptionKind::Double { .. } => "double",
            OptionKind::String { .. } => "string",
            OptionKind::Password { .. } => "password",
            OptionKind::File { .. } => "file",
            OptionKind::Boolean { .. } => "boolean",
            OptionKind::Enumeration { .. } => "enumeration",
        }
    }

    /// Whether the value is a secret.
    pub fn is_secret(&self) -> bool {
        matches!(self, OptionKind::Password { .. })
    }

    /// Check a value given as text (from `--set`, a prompt or a default) and return it in
    /// its canonical text form, or say what is wrong.
    pub fn validate(&self, text: &str) -> Result<String, String> {
        match self {
            OptionKind::Int { min, max, step, .. } => {
                let v: i64 = text
                    .trim()
                    .parse()
                    .map_err(|_| format!("{text:?} is not an integer"))?;
                check_int(v, *min, *max, *step)?;
                Ok(v.to_string())
            }
            OptionKind::Double { min, max, step, .. } => {
                let v: f64 = text
                    .trim()
                    .parse()
                    .map_err(|_| format!("{text:?} is not a number"))?;
                check_double(v, *min, *max, *step)?;
                Ok(format_double(v))
            }
            OptionKind::String { .. } | OptionKind::Password { .. } | OptionKind::File { .. } => {
                Ok(text.to_string())
            }
            OptionKind::Boolean {
                true_value,
                false_value,
                ..
            } => {
                if text == true_value || text == false_value {
                    Ok(text.to_string())
                } else {
                    match text.to_ascii_lowercase().as_str() {
                        "true" | "yes" | "on" => Ok(true_value.clone()),
                        "false" | "no" | "off" => Ok(false_value.clone()),
                        _ => Err(format!(
                            "{text:?} is not {true_value:?} or {false_value:?} (or true/false)"
                        )),
                    }
                }
            }
            OptionKind::Enumeration { entries, .. } => {
                if let Some(e) = entries.iter().find(|e| e.value == text) {
                    Ok(e.value.clone())
                } else if let Some(e) = entries.iter().find(|e| e.label == text) {
                    Ok(e.value.clone())
                } else {
                    Err(format!(
                        "{text:?} is not one of {}",
                        entries
                            .iter()
                            .map(|e| format!("{:?}", e.value))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            }
        }
    }
}

/// Check an integer against a range and its step.
pub fn check_int(v: i64, min: i64, max: i64, step: i64) -> Result<(), String> {
    if v < min || v > max {
        return Err(format!("{v} is outside {min}..={max}"));
    }
    if step > 1 && (v - min) % step != 0 {
        return Err(format!(
            "{v} is not {min} plus a multiple of the step {step}"
        ));
    }
    Ok(())
}

/// Check a number against a range and, when one is given, its step: `v` must be `min`
/// plus a whole number of steps, to within a millionth of a step (so `0.1` steps from `0`
/// reach `0.3` although `0.3 / 0.1` is not exactly 3 in binary floating point).
pub fn check_double(v: f64, min: f64, max: f64, step: Option<f64>) -> Result<(), String> {
    if !v.is_finite() || v < min || v > max {
        return Err(format!("{v} is outside {min}..={max}"));
    }
    if let Some(step) = step {
        let steps = (v - min) / step;
        if (steps - steps.round()).abs() > 1e-6 {
            return Err(format!(
                "{v} is not {min} plus a multiple of the step {step}"
            ));
        }
    }
    Ok(())
}

/// Print a double the way a user would write it (`2`, `0.5`).
pub fn format_double(v: f64) -> String {
    let s = format!("{v}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(min: i64, max: i64, step: i64) -> OptionKind {
        OptionKind::Int {
            min,
            max,
            step,
            default: RangeDefault::Random,
        }
    }

    #[test]
    fn integers_respect_range_and_step() {
        let k = int(5, 1440, 5);
        assert_eq!(k.validate("20").unwrap(), "20");
        assert!(k.validate("21").unwrap_err().contains("step"));
        assert!(k.validate("0").unwrap_err().contains("outside"));
        assert!(k.validate("x").is_err());
    }

    #[test]
    fn booleans_accept_their_strings_and_true_false() {
        let k = OptionKind::Boolean {
            true_value: "on-gpu".into(),
            false_value: "".into(),
            default: false,
        };
        assert_eq!(k.validate("on-gpu").unwrap(), "on-gpu");
        assert_eq!(k.validate("true").unwrap(), "on-gpu");
        assert_eq!(k.validate("no").unwrap(), "");
        assert!(k.validate("maybe").is_err());
    }

    #[test]
    fn enumerations_accept_values_then_labels() {
        let k = OptionKind::Enumeration {
            entries: vec![
                EnumEntry {
                    value: "".into(),
                    label: "none".into(),
                },
                EnumEntry {
                    value: "interact".into(),
                    label: "Interactive".into(),
                },
            ],
            default: None,
        };
        assert_eq!(k.validate("none").unwrap(), "");
        assert_eq!(k.validate("Interactive").unwrap(), "interact");
        assert!(k.validate("batch").is_err());
    }

    #[test]
    fn doubles() {
        let k = OptionKind::Double {
            min: 0.5,
            max: 2.0,
            step: Some(0.1),
            default: RangeDefault::Value(1.0),
        };
        assert_eq!(k.validate("1.0").unwrap(), "1");
        assert_eq!(k.validate("0.8").unwrap(), "0.8");
        assert!(k.validate("3").is_err());
        assert!(k.validate("NaN").is_err());
        assert!(k.validate("0.75").unwrap_err().contains("step 0.1"));
        let free = OptionKind::Double {
            min: 0.0,
            max: 1.0,
            step: None,
            default: RangeDefault::Value(0.0),
        };
        assert_eq!(free.validate("0.333").unwrap(), "0.333");
    }
}
