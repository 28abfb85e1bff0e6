//! Durations written the way Nomad's Go code reads them (`time.ParseDuration`).
//!
//! Accepted: an optional sign, then one or more `<decimal><unit>` pairs with
//! units `ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h` (`1h30m`, `1.5s`, `300ms`);
//! a bare `0` is zero. Days (`d`) are not a Go unit and are rejected, exactly
//! as Nomad's docker driver rejects them at SetConfig.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A non-negative duration parsed with Go's rules; keeps the text it was
/// parsed from so messages can quote what the operator wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(Duration);

impl GoDuration {
    /// Wraps a duration (used for defaults).
    pub const fn new(duration: Duration) -> Self {
        Self(duration)
    }

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self(Duration::from_millis(millis))
    }

    /// The duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for GoDuration {
    /// Formats like Go's `Duration.String` (`1m0s`, `1.5s`, `300ms`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_go(self.0))
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() {
            return Err(serde::de::Error::custom(
                "empty duration: remove the key to use its default, or write a duration such as \"5m\"",
            ));
        }
        parse(&text)
            .map(GoDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses a Go duration string into a non-negative [`Duration`]. Error texts
/// follow Go's (`time: unknown unit "d" in duration "1d"`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration {}", quote(text));
    let mut rest = text;
    let mut negative = false;
    if let Some(stripped) = rest.strip_prefix('-') {
        negative = true;
        rest = stripped;
    } else if let Some(stripped) = rest.strip_prefix('+') {
        rest = stripped;
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    // Total in nanoseconds; u128 cannot overflow for any input we keep, and
    // Go's own limit (about 292 years) is checked at the end.
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_part, after_int) = rest.split_at(digits_end);
        let (frac_part, after_num) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let end = after_dot
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after_dot.len());
                after_dot.split_at(end)
            }
            None => ("", after_int),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_end = after_num
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after_num.len());
        let (unit, after_unit) = after_num.split_at(unit_end);
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {}", quote(text)));
        }
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    quote(unit),
                    quote(text)
                ));
            }
        };
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        // Go's limit is int64 nanoseconds; checking it before multiplying
        // keeps every step below far from u128's range.
        if whole > i64::MAX as u128 {
            return Err(invalid());
        }
        let mut nanos = whole * scale;
        // Fractional part: scale digit by digit, truncating like Go does.
        let mut place = scale;
        for digit in frac_part.bytes() {
            place /= 10;
            if place == 0 {
                break;
            }
            nanos += u128::from(digit - b'0') * place;
        }
        total = total.checked_add(nanos).ok_or_else(invalid)?;
        if total > i64::MAX as u128 {
            return Err(invalid());
        }
        rest = after_unit;
    }
    if negative && total > 0 {
        return Err(format!("negative duration {} is not allowed", quote(text)));
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Go's `%q` for the strings we quote: double quotes with escapes.
fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// Formats like Go's `time.Duration.String`.
pub fn format_go(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        let (value, unit) = if nanos < 1_000 {
            return format!("{nanos}ns");
        } else if nanos < 1_000_000 {
            (fraction(nanos, 1_000), "µs")
        } else {
            (fraction(nanos, 1_000_000), "ms")
        };
        return format!("{value}{unit}");
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let seconds = fraction(nanos % 60_000_000_000, 1_000_000_000);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{seconds}s"));
    out
}

/// `value / unit` as a decimal without trailing zeros (`1.5`, `2`).
fn fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let rest = value % unit;
    if rest == 0 {
        return whole.to_string();
    }
    let width = unit.to_string().len() - 1;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_ok(text: &str, expected: Duration) {
        assert_eq!(parse(text), Ok(expected), "parsing {text:?}");
    }

    #[test]
    fn parses_go_units_and_compounds() {
        check_ok("0", Duration::ZERO);
        check_ok("-0", Duration::ZERO);
        check_ok("5m", Duration::from_secs(300));
        check_ok("1h30m", Duration::from_secs(5400));
        check_ok("1.5s", Duration::from_millis(1500));
        check_ok(".5s", Duration::from_millis(500));
        check_ok("1.s", Duration::from_secs(1));
        check_ok("300ms", Duration::from_millis(300));
        check_ok("10us", Duration::from_micros(10));
        check_ok("10µs", Duration::from_micros(10));
        check_ok("10μs", Duration::from_micros(10));
        check_ok("7ns", Duration::from_nanos(7));
        check_ok("+2h", Duration::from_secs(7200));
        check_ok("1h1m1s1ms", Duration::from_millis(3_661_001));
    }

    #[test]
    fn rejects_what_go_rejects_with_go_messages() {
        for (text, message) in [
            ("1d", r#"time: unknown unit "d" in duration "1d""#),
            ("3", r#"time: missing unit in duration "3""#),
            ("", r#"time: invalid duration """#),
            ("m", r#"time: invalid duration "m""#),
            ("-", r#"time: invalid duration "-""#),
            (".s", r#"time: invalid duration ".s""#),
            ("1.2.3s", r#"time: missing unit in duration "1.2.3s""#),
            ("3 m", r#"time: unknown unit " m" in duration "3 m""#),
            ("9999999999h", r#"time: invalid duration "9999999999h""#),
        ] {
            assert_eq!(parse(text), Err(message.to_owned()), "parsing {text:?}");
        }
    }

    #[test]
    fn rejects_negative_durations() {
        assert_eq!(
            parse("-5m"),
            Err(r#"negative duration "-5m" is not allowed"#.to_owned())
        );
    }

    #[test]
    fn formats_like_go() {
        for (duration, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(180), "3m0s"),
            (Duration::from_secs(5400), "1h30m0s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_micros(10), "10µs"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_secs(3600), "1h0m0s"),
        ] {
            assert_eq!(format_go(duration), text);
        }
    }
}
