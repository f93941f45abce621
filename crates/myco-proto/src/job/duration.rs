//! The `[restart]` section's durations and factor as people write them.
//!
//! The record keeps milliseconds (`delay_ms`) and a whole factor
//! (`backoff`), and postcard, which is not self-describing, reads them as
//! such. A job file may also say `delay = "15s"` (Nomad's form), `delay =
//! 1500` (milliseconds, like every `_ms` key) or `backoff = 2.0`: human
//! formats (TOML, JSON) take a number of milliseconds, or a string of a
//! number and a unit (`ms`, `s`, `m`, `h`); a factor may be written as a
//! float if it is whole. Anything else is refused with what to write.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Milliseconds from a number of milliseconds or a string with a unit.
pub(super) fn ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    if !d.is_human_readable() {
        return u64::deserialize(d);
    }
    d.deserialize_any(Millis)
}

/// A whole factor of at least 1, from an integer or a whole float.
pub(super) fn factor<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    if !d.is_human_readable() {
        return u32::deserialize(d);
    }
    d.deserialize_any(Factor)
}

struct Millis;

impl Visitor<'_> for Millis {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            r#"milliseconds (1500) or a duration with a unit ("1.5s", "500ms", "2m", "1h")"#,
        )
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom("a duration cannot be negative"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v.is_finite() && v >= 0.0 && v < u64::MAX as f64 {
            Ok(v.round() as u64)
        } else {
            Err(E::custom(
                "a duration must be a finite number of milliseconds, at least 0",
            ))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse(v).ok_or_else(|| {
            E::custom(format!(
                r#"{v:?} is not a duration: write milliseconds (1500) or a number and a unit ("1.5s", "500ms", "2m", "1h")"#
            ))
        })
    }
}

/// `"1.5s"`, `"500ms"`, `"2m"`, `"1h"`, or bare digits (milliseconds).
fn parse(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    let ms = number * scale;
    (ms.is_finite() && ms < u64::MAX as f64).then(|| ms.round() as u64)
}

struct Factor;

impl Visitor<'_> for Factor {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole factor: 1 keeps the delay constant, 2 doubles it")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::custom("backoff is too large"))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::custom("backoff must be 1 or more"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u32, E> {
        if v.fract() == 0.0 && v >= 0.0 && v <= f64::from(u32::MAX) {
            Ok(v as u32)
        } else {
            Err(E::custom(format!(
                "backoff {v} is not a whole factor: write 1 (a constant delay), 2 (doubling) or 3"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse("1500"), Some(1500));
        assert_eq!(parse("500ms"), Some(500));
        assert_eq!(parse("1.5s"), Some(1500));
        assert_eq!(parse("2m"), Some(120_000));
        assert_eq!(parse("1h"), Some(3_600_000));
        assert_eq!(parse(" 3 s "), Some(3000));
        for bad in ["", "s", "1d", "fast", "-1s", "1..5s", "1e400s"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
