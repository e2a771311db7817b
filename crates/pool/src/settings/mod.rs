//! Reading settings from environment variables with errors that name the variable, the value
//! and what is accepted.

use std::time::Duration;

use crate::error::ConfigError;

/// Where settings come from: the process environment, or a map in tests.
pub trait Source {
    /// The raw value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<const N: usize> Source for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_string())
    }
}

/// Reads `name` as an integer in `min..=max`, `default` when unset or empty.
pub fn integer(
    source: &dyn Source,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(raw) = source.get(name).filter(|v| !v.trim().is_empty()) else {
        return Ok(default);
    };
    raw.trim()
        .parse::<u64>()
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| ConfigError::InvalidValue {
            setting: name.to_string(),
            value: raw.clone(),
            accepted: format!("a whole number from {min} to {max}"),
        })
}

/// Reads `name` as a duration in `unit`s (`name` says which: `_MS` or seconds), `0` meaning
/// "off" when `zero_is_off`.
pub fn duration(
    source: &dyn Source,
    name: &str,
    default: Duration,
    unit: Duration,
    max_units: u64,
    zero_is_off: bool,
) -> Result<Option<Duration>, ConfigError> {
    let min = u64::from(!zero_is_off);
    let default_units = (default.as_nanos() / unit.as_nanos()) as u64;
    let units = integer(source, name, default_units, min, max_units).map_err(|e| match e {
        ConfigError::InvalidValue { setting, value, .. } => ConfigError::InvalidValue {
            setting,
            value,
            accepted: format!(
                "a whole number of {} from {min} to {max_units}{}",
                unit_name(unit),
                if zero_is_off { " (0 turns it off)" } else { "" }
            ),
        },
        other => other,
    })?;
    Ok((units > 0).then(|| unit * units as u32))
}

/// Reads `name` as one of `choices` (case-insensitive), `default` when unset.
pub fn choice<'a>(
    source: &dyn Source,
    name: &str,
    default: &'a str,
    choices: &[&'a str],
) -> Result<&'a str, ConfigError> {
    let Some(raw) = source.get(name).filter(|v| !v.trim().is_empty()) else {
        return Ok(default);
    };
    choices
        .iter()
        .find(|c| c.eq_ignore_ascii_case(raw.trim()))
        .copied()
        .ok_or_else(|| ConfigError::InvalidValue {
            setting: name.to_string(),
            value: raw.clone(),
            accepted: format!("one of {}", choices.join(", ")),
        })
}

fn unit_name(unit: Duration) -> &'static str {
    if unit == Duration::from_millis(1) {
        "milliseconds"
    } else {
        "seconds"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        let env = [
            ("A", "7"),
            ("B", "abc"),
            ("C", "-1"),
            ("D", "0"),
            ("E", "99999999999999999999"),
            ("F", " "),
        ];
        assert_eq!(integer(&env, "A", 5, 1, 10), Ok(7));
        assert_eq!(integer(&env, "MISSING", 5, 1, 10), Ok(5));
        assert_eq!(integer(&env, "F", 5, 1, 10), Ok(5));
        for bad in ["B", "C", "D", "E"] {
            let err = integer(&env, bad, 5, 1, 10).expect_err(bad).to_string();
            assert!(err.starts_with(&format!("{bad}: invalid value")), "{err}");
            assert!(err.contains("a whole number from 1 to 10"), "{err}");
        }
    }

    #[test]
    fn durations_and_choices() {
        let env = [("T_MS", "250"), ("OFF", "0"), ("P", "ALWAYS"), ("Q", "sometimes")];
        let ms = Duration::from_millis(1);
        assert_eq!(
            duration(&env, "T_MS", Duration::ZERO, ms, 1000, false),
            Ok(Some(Duration::from_millis(250)))
        );
        assert_eq!(
            duration(&env, "OFF", Duration::from_secs(1), ms, 1000, true),
            Ok(None)
        );
        let err = duration(&env, "OFF", Duration::from_secs(1), ms, 1000, false).expect_err("zero");
        assert!(err.to_string().contains("milliseconds from 1 to 1000"), "{err}");
        assert_eq!(
            choice(&env, "P", "auto", &["auto", "always", "never"]),
            Ok("always")
        );
        let err = choice(&env, "Q", "auto", &["auto", "always", "never"]).expect_err("bad");
        assert!(err.to_string().contains("one of auto, always, never"), "{err}");
    }
}
