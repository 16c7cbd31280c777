//! Durations as Istio's API writes them.
//!
//! Owns [`Duration`], a non-negative span of time that deserializes from the
//! Go duration syntax Istio accepts in its CRDs (`"1m"`, `"1h30m"`, `"500ms"`,
//! `"10us"`, `"0"`) as well as the protobuf JSON form (`"1.5s"`), and always
//! serializes back to the protobuf JSON form: whole seconds with a trimmed
//! fractional part (`"90s"`, `"0.5s"`, `"0.0000001s"`).
//!
//! This module does no I/O and knows nothing about Istio resources; the
//! validation rules Istio applies to specific duration fields (for example
//! "at least 1ms") live with those fields in `crate::model::istio`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest duration the protobuf `google.protobuf.Duration` type can carry
/// (about 10,000 years); anything larger is rejected as an overflow.
const MAX_SECONDS: u64 = 315_576_000_000;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// A non-negative duration, as used by Istio's API (`google.protobuf.Duration`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

/// Why a duration string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The input was the empty string.
    #[error("empty duration")]
    Empty,
    /// The input described a negative span of time.
    #[error("negative duration {0:?} is not allowed")]
    Negative(String),
    /// A number was malformed or missing (e.g. `"."`, `"s"`, `"1..5s"`).
    #[error(
        "invalid duration {0:?}: expected a number followed by a unit, like \"1.5s\" or \"1h30m\""
    )]
    Invalid(String),
    /// A number was not followed by a unit (e.g. `"10"`).
    #[error(
        "missing unit in duration {0:?}: valid units are \"ns\", \"us\", \"ms\", \"s\", \"m\", \"h\""
    )]
    MissingUnit(String),
    /// A number was followed by a unit that is not known.
    #[error(
        "unknown unit {unit:?} in duration {input:?}: valid units are \"ns\", \"us\", \"ms\", \"s\", \"m\", \"h\""
    )]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole input.
        input: String,
    },
    /// The value does not fit in a protobuf duration.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

impl Duration {
    /// The zero duration.
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    /// A duration of `secs` whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Duration(std::time::Duration::from_millis(millis))
    }

    /// A duration of `nanos` nanoseconds.
    pub const fn from_nanos(nanos: u64) -> Self {
        Duration(std::time::Duration::from_nanos(nanos))
    }

    /// The standard library duration this wraps.
    pub const fn as_std(&self) -> std::time::Duration {
        self.0
    }

    /// Whether this is the zero duration.
    pub const fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    /// Parses a duration in Go syntax (`"1h30m"`, `"500ms"`, `"1.5s"`,
    /// `"10us"`, `"0"`), which includes the protobuf JSON form (`"1.5s"`).
    ///
    /// Units: `ns`, `us` (also `µs`/`μs`), `ms`, `s`, `m`, `h`. Negative
    /// durations are rejected (`"-0s"` is accepted, being zero).
    pub fn parse(input: &str) -> Result<Duration, DurationError> {
        if input.is_empty() {
            return Err(DurationError::Empty);
        }
        let (negative, body) = match input.as_bytes()[0] {
            b'-' => (true, &input[1..]),
            b'+' => (false, &input[1..]),
            _ => (false, input),
        };
        let nanos = if body == "0" {
            0
        } else {
            parse_unsigned_nanos(body, input)?
        };
        if negative && nanos != 0 {
            return Err(DurationError::Negative(input.to_owned()));
        }
        let secs = u64::try_from(nanos / NANOS_PER_SECOND)
            .map_err(|_| DurationError::Overflow(input.to_owned()))?;
        if secs > MAX_SECONDS {
            return Err(DurationError::Overflow(input.to_owned()));
        }
        // The remainder is below one billion, so it always fits.
        let subsec = u32::try_from(nanos % NANOS_PER_SECOND).unwrap_or(0);
        Ok(Duration(std::time::Duration::new(secs, subsec)))
    }
}

/// Nanoseconds per unit, for every unit Go's `time.ParseDuration` knows.
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SECOND,
        "m" => 60 * NANOS_PER_SECOND,
        "h" => 3_600 * NANOS_PER_SECOND,
        _ => return None,
    })
}

/// Parses a sequence of `<number><unit>` terms (no sign) into nanoseconds.
fn parse_unsigned_nanos(body: &str, input: &str) -> Result<u128, DurationError> {
    // Enough to reject anything a protobuf duration cannot carry, while
    // keeping every intermediate value far from u128 overflow.
    const LIMIT: u128 = (MAX_SECONDS as u128 + 1) * NANOS_PER_SECOND;
    // Fractional digits past this many cannot change the result by a whole
    // nanosecond for any unit up to hours.
    const MAX_FRACTION_DIGITS: usize = 20;

    let invalid = || DurationError::Invalid(input.to_owned());
    let overflow = || DurationError::Overflow(input.to_owned());
    let mut rest = body;
    let mut total: u128 = 0;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        // Integer part.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after_int) = rest.split_at(int_len);
        let mut whole: u128 = 0;
        for d in int_digits.bytes() {
            whole = whole * 10 + u128::from(d - b'0');
            if whole > LIMIT {
                return Err(overflow());
            }
        }
        // Optional fractional part.
        let mut frac: u128 = 0;
        let mut scale: u128 = 1;
        let mut frac_len = 0;
        let after_frac = match after_int.strip_prefix('.') {
            Some(stripped) => {
                frac_len = stripped.bytes().take_while(u8::is_ascii_digit).count();
                for d in stripped[..frac_len].bytes().take(MAX_FRACTION_DIGITS) {
                    frac = frac * 10 + u128::from(d - b'0');
                    scale *= 10;
                }
                &stripped[frac_len..]
            }
            None => after_int,
        };
        if int_len == 0 && frac_len == 0 {
            return Err(invalid());
        }
        // Unit: everything up to the next digit or dot.
        let unit_len = after_frac
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after_frac.len(), |(i, _)| i);
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(input.to_owned()));
        }
        let (unit, after_unit) = after_frac.split_at(unit_len);
        let per_unit = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            unit: unit.to_owned(),
            input: input.to_owned(),
        })?;
        total += whole * per_unit + frac * per_unit / scale;
        if total > LIMIT {
            return Err(overflow());
        }
        rest = after_unit;
    }
    Ok(total)
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Duration::parse(s)
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl fmt::Display for Duration {
    /// Canonical protobuf-JSON-style form: whole seconds, then the
    /// fractional part with trailing zeros trimmed, then `s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        if nanos == 0 {
            write!(f, "{secs}s")
        } else {
            let frac = format!("{nanos:09}");
            write!(f, "{secs}.{}s", frac.trim_end_matches('0'))
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string such as \"1.5s\", \"500ms\" or \"1h30m\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        Duration::parse(v).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_go_syntax() {
        let nanos = Duration::from_nanos;
        let secs = Duration::from_secs;
        for (text, parsed) in [
            ("1m", secs(60)),
            ("1h30m", secs(5400)),
            ("500ms", ms(500)),
            ("1.5s", ms(1500)),
            ("10us", nanos(10_000)),
            ("10µs", nanos(10_000)),
            ("10μs", nanos(10_000)),
            ("100ns", nanos(100)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("-0s", Duration::ZERO),
            ("+5s", secs(5)),
            ("1.5h", secs(5400)),
            (".5s", ms(500)),
            ("1.s", secs(1)),
            ("2h45m30.5s", ms(9_930_500)),
            ("24h", secs(86_400)),
            ("7200s", secs(7200)),
            ("0.000000001s", nanos(1)),
            // Digits past nanosecond precision are truncated, as Go does.
            ("1.0000000019s", nanos(1_000_000_001)),
        ] {
            assert_eq!(Duration::parse(text), Ok(parsed), "{text:?}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for (text, error) in [
            ("", DurationError::Empty),
            ("-1s", DurationError::Negative("-1s".into())),
            ("10", DurationError::MissingUnit("10".into())),
            ("s", DurationError::Invalid("s".into())),
            (".", DurationError::Invalid(".".into())),
            (".s", DurationError::Invalid(".s".into())),
            ("-", DurationError::Invalid("-".into())),
        ] {
            assert_eq!(Duration::parse(text), Err(error), "{text:?}");
        }
        for (text, unit) in [("10d", "d"), ("1 s", " s")] {
            assert!(
                matches!(
                    Duration::parse(text),
                    Err(DurationError::UnknownUnit { unit: u, .. }) if u == unit
                ),
                "{text:?}"
            );
        }
        assert!(matches!(
            Duration::parse("1..5s"),
            Err(DurationError::MissingUnit(_) | DurationError::Invalid(_))
        ));
        assert!(matches!(
            Duration::parse("99999999999999999999999999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            Duration::parse("315576000001s"),
            Err(DurationError::Overflow(_))
        ));
        assert!(Duration::parse("315576000000s").is_ok());
    }

    #[test]
    fn error_messages_are_clear() {
        assert_eq!(
            Duration::parse("10").unwrap_err().to_string(),
            "missing unit in duration \"10\": valid units are \"ns\", \"us\", \"ms\", \"s\", \"m\", \"h\""
        );
        assert_eq!(
            Duration::parse("-3m").unwrap_err().to_string(),
            "negative duration \"-3m\" is not allowed"
        );
    }

    #[test]
    fn displays_canonically() {
        assert_eq!(Duration::from_secs(90).to_string(), "90s");
        assert_eq!(ms(500).to_string(), "0.5s");
        assert_eq!(ms(1500).to_string(), "1.5s");
        assert_eq!(Duration::from_nanos(100).to_string(), "0.0000001s");
        assert_eq!(Duration::ZERO.to_string(), "0s");
        assert_eq!(Duration::parse("1h30m").unwrap().to_string(), "5400s");
    }

    #[test]
    fn serde_round_trip() {
        let d: Duration = serde_json::from_str("\"1m30.25s\"").unwrap();
        assert_eq!(d, ms(90_250));
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"90.25s\"");
        let again: Duration = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(again, d);
        let yaml: Duration = serde_saphyr::from_str("15m").unwrap();
        assert_eq!(yaml, Duration::from_secs(900));
        assert!(serde_json::from_str::<Duration>("\"-1s\"").is_err());
        assert!(serde_json::from_str::<Duration>("5").is_err());
    }

    #[test]
    fn converts_to_and_from_std() {
        let std = std::time::Duration::from_millis(1234);
        let d = Duration::from(std);
        assert_eq!(d.as_std(), std);
        assert_eq!(std::time::Duration::from(d), std);
        assert!(Duration::ZERO.is_zero());
        assert!(ms(1) > Duration::ZERO);
    }
}
