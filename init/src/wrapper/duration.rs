//! Durations on the command line: `500ms`, `30s`, `2m`, `1h`.
//!
//! One whole number followed by one unit; no fractions, no compound forms
//! (`1m30s`), no bare numbers (a bare `5` is ambiguous between seconds and
//! milliseconds, so it is rejected rather than guessed).

use std::time::Duration;

/// Why a duration could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    /// Nothing given.
    #[error("empty duration: expected e.g. 500ms, 30s, 2m or 1h")]
    Empty,
    /// Digits without a unit.
    #[error("duration {0:?} has no unit: write e.g. {0}s or {0}ms")]
    MissingUnit(String),
    /// No digits before the unit, or non-digits in the number.
    #[error("invalid duration {0:?}: expected a whole number followed by ms, s, m or h")]
    Invalid(String),
    /// A unit other than ms, s, m, h.
    #[error("invalid duration {input:?}: unknown unit {unit:?} (use ms, s, m or h)")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unit given.
        unit: String,
    },
    /// Too large to represent.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Parses a duration; surrounding whitespace is ignored.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(DurationError::Invalid(input.to_owned()));
    }
    if unit.is_empty() {
        return Err(DurationError::MissingUnit(text.to_owned()));
    }
    let value: u64 = number
        .parse()
        .map_err(|_| DurationError::Overflow(input.to_owned()))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ if unit.starts_with(|c: char| c.is_ascii_alphabetic()) => {
            return Err(DurationError::UnknownUnit {
                input: input.to_owned(),
                unit: unit.to_owned(),
            })
        }
        _ => return Err(DurationError::Invalid(input.to_owned())),
    };
    value
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| DurationError::Overflow(input.to_owned()))
}

/// Formats a duration the way [`parse_duration`] reads it, choosing the
/// largest unit that represents it exactly (`120s` prints as `2m`).
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        "0s".to_owned()
    } else if millis % 3_600_000 == 0 {
        format!("{}h", millis / 3_600_000)
    } else if millis % 60_000 == 0 {
        format!("{}m", millis / 60_000)
    } else if millis % 1_000 == 0 {
        format!("{}s", millis / 1_000)
    } else {
        format!("{millis}ms")
    }
}

/// The form argh's `from_str_fn` wants.
pub fn parse_flag(input: &str) -> Result<Duration, String> {
    parse_duration(input).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_table() {
        let cases: &[(&str, Duration)] = &[
            ("0ms", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("1ms", Duration::from_millis(1)),
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("  2m ", Duration::from_secs(120)),
            ("007s", Duration::from_secs(7)),
            ("18446744073709551615ms", Duration::from_millis(u64::MAX)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input), Ok(*want), "{input:?}");
        }
    }

    #[test]
    fn invalid_table() {
        let cases: &[(&str, DurationError)] = &[
            ("", DurationError::Empty),
            ("   ", DurationError::Empty),
            ("5", DurationError::MissingUnit("5".into())),
            ("s", DurationError::Invalid("s".into())),
            ("-5s", DurationError::Invalid("-5s".into())),
            ("1.5s", DurationError::Invalid("1.5s".into())),
            ("5 s", DurationError::Invalid("5 s".into())),
            (
                "1m30s",
                DurationError::UnknownUnit {
                    input: "1m30s".into(),
                    unit: "m30s".into(),
                },
            ),
            (
                "5d",
                DurationError::UnknownUnit {
                    input: "5d".into(),
                    unit: "d".into(),
                },
            ),
            (
                "5S",
                DurationError::UnknownUnit {
                    input: "5S".into(),
                    unit: "S".into(),
                },
            ),
            (
                "5sec",
                DurationError::UnknownUnit {
                    input: "5sec".into(),
                    unit: "sec".into(),
                },
            ),
            (
                "18446744073709551616ms",
                DurationError::Overflow("18446744073709551616ms".into()),
            ),
            (
                "18446744073709551615h",
                DurationError::Overflow("18446744073709551615h".into()),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input).as_ref(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn format_table() {
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (1, "1ms"),
            (300, "300ms"),
            (1_500, "1500ms"),
            (30_000, "30s"),
            (90_000, "90s"),
            (120_000, "2m"),
            (3_600_000, "1h"),
            (5_400_000, "90m"),
        ];
        for (millis, want) in cases {
            let duration = Duration::from_millis(*millis);
            assert_eq!(format_duration(duration), *want);
            assert_eq!(parse_duration(want), Ok(duration), "round trip {want}");
        }
    }

    #[test]
    fn flag_form_has_readable_errors() {
        assert_eq!(parse_flag("2m"), Ok(Duration::from_secs(120)));
        let message = parse_flag("5").expect_err("no unit");
        assert!(message.contains("has no unit"), "{message}");
    }
}
