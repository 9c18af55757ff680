//! Values as people write them, in the config file and on the command line:
//! durations ("120s", "10m"), byte sizes ("64MiB"), and strings that may be left
//! empty. Serde helpers (`#[serde(with = "crate::units::duration")]`) and their
//! parsers. The ground floor: imports nothing of the crate.

use serde::Deserialize;

/// A value a section's check refused: its key within the config (`health.url`), and
/// why. The config file's loader adds the path and the line.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// An empty string as `None`.
pub fn empty_as_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    Ok((!text.is_empty()).then_some(text))
}

/// Durations written as humans do: "120s", "10m", "1h 30m".
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    /// The longest duration any setting takes: a year. Longer ones are typing errors,
    /// and would overflow the clock arithmetic of deadlines.
    pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

    const HINT: &str = "write a number and a unit, like \"120s\" or \"10m\"";

    pub fn parse(text: &str) -> Result<Duration, String> {
        // humantime panics when the terms' sum overflows (`1s18446744073709551611.2s…`):
        // at most 9 digits a number and 64 characters keep any sum far below that.
        let trimmed = text.trim();
        if trimmed.len() > 64 {
            return Err(format!(
                "invalid duration `{}…`: over 64 characters; {HINT}",
                trimmed.chars().take(64).collect::<String>().escape_debug()
            ));
        }
        // humantime reads a number's digits across whitespace (`1 000s` is 1000 s).
        let unspaced: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
        let longest_number = unspaced
            .split(|c: char| !c.is_ascii_digit())
            .map(|digits| digits.trim_start_matches('0').len())
            .max()
            .unwrap_or(0);
        if longest_number > 9 {
            return Err(format!(
                "duration `{}` has a number of over 9 digits; no setting takes more than the one-year maximum (31536000s)",
                trimmed.escape_debug()
            ));
        }
        let duration = humantime::parse_duration(trimmed)
            .map_err(|_| format!("invalid duration `{}`: {HINT}", text.escape_debug()))?;
        if duration > MAX {
            return Err(format!(
                "duration `{}` is longer than the one-year maximum",
                text.escape_debug()
            ));
        }
        Ok(duration)
    }
}

/// A duration that may be left empty (`""`) for its computed default.
pub mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        super::duration::parse(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// Byte sizes as humans write them: 65536, "64KiB", "64MiB", "1GiB", "1GB".
pub mod size {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Number(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Written::deserialize(d)? {
            Written::Number(n) => Ok(n),
            Written::Text(text) => parse(&text).map_err(serde::de::Error::custom),
        }
    }

    pub fn parse(text: &str) -> Result<u64, String> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => {
                return Err(format!(
                    "invalid size `{text}`: write a number and a unit, like \"64MiB\""
                ));
            }
        };
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .ok_or_else(|| format!("invalid size `{text}`: write a number and a unit, like \"64MiB\""))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::duration::parse;

    #[test]
    fn durations_past_what_the_clock_can_add_are_refused_with_a_reason() {
        assert_eq!(parse("0000000000120s"), Ok(Duration::from_secs(120)));
        let long = parse("18446744073709551615s").unwrap_err();
        assert!(
            long.contains("over 9 digits") && long.contains("one-year maximum"),
            "{long}"
        );
        let wide = parse(&"1s".repeat(40)).unwrap_err();
        assert!(wide.contains("over 64 characters"), "{wide}");
        assert!(parse("1s18446744073709551611.2s1.6s").is_err());
        let spaced = parse("18446744\n0737095\n51611.6s2.2s2.2s1.264").unwrap_err();
        assert!(
            spaced.contains("over 9 digits") && !spaced.contains('\n'),
            "{spaced}"
        );
        assert_eq!(parse("1 000s"), Ok(Duration::from_secs(1000)));
        let year = parse("400d").unwrap_err();
        assert!(year.contains("one-year maximum"), "{year}");
    }
}
