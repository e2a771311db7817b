//! Settings as data: each one is a constant that knows its environment variable, its builder
//! name, its default, what it accepts, its unit and its documentation. The defaults, the
//! reading of the environment, the checks of values set in code, the README's settings
//! tables and the reference service's command-line flags all come from these constants, so
//! a setting is stated once.
//!
//! The pool's own settings are in [`table`]; holdfast-tasks and the reference service
//! declare theirs the same way.
//!
//! ```
//! use holdfast::pool::settings::{table, Describe};
//! assert_eq!(table::POOL_SIZE.env(), "DB_POOL_SIZE");
//! assert_eq!(table::POOL_SIZE.default_text(), "5");
//! ```

pub mod table;

use std::collections::HashMap;
use std::time::Duration;

use crate::error::ConfigError;

/// Where settings come from: the process environment, or a map in tests and command lines.
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

impl Source for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_string())
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// What every setting tells about itself, for tables, help texts and errors.
pub trait Describe: Sync {
    /// The environment variable, for example `DB_POOL_SIZE`.
    fn env(&self) -> &'static str;
    /// The builder method and field, for example `pool_size`.
    fn name(&self) -> &'static str;
    /// The default, as it would be written in the environment (`5`, `auto`), or a phrase in
    /// parentheses when there is none (`(required)`, `(none)`).
    fn default_text(&self) -> String;
    /// What values are accepted, as error messages and tables say it.
    fn accepted(&self) -> String;
    /// The unit of numbers: `s`, `ms` or nothing.
    fn unit(&self) -> &'static str {
        ""
    }
    /// What the setting does, in one or two sentences.
    fn doc(&self) -> &'static str;
    /// True for settings whose values must never be shown (passwords, URLs with passwords).
    fn secret(&self) -> bool {
        false
    }
}

/// The value of `env` in `source`, trimmed; `None` when unset or blank.
fn raw(source: &dyn Source, env: &str) -> Option<(String, String)> {
    let value = source.get(env)?;
    let trimmed = value.trim().to_string();
    (!trimmed.is_empty()).then_some((value, trimmed))
}

fn invalid(setting: &str, value: impl Into<String>, accepted: String) -> ConfigError {
    ConfigError::InvalidValue {
        setting: setting.to_string(),
        value: value.into(),
        accepted,
    }
}

/// A whole number in a range.
#[derive(Debug, Clone, Copy)]
pub struct Count {
    /// Environment variable.
    pub env: &'static str,
    /// Builder name.
    pub name: &'static str,
    /// Value when unset.
    pub default: u64,
    /// Smallest accepted.
    pub min: u64,
    /// Largest accepted.
    pub max: u64,
    /// What it does.
    pub doc: &'static str,
}

impl Count {
    /// The default as a `usize`.
    pub const fn default_usize(&self) -> usize {
        self.default as usize
    }

    /// Reads it from `source`: the default when unset or blank, an error naming the
    /// variable when out of range or not a number.
    pub fn read(&self, source: &dyn Source) -> Result<u64, ConfigError> {
        let Some((value, trimmed)) = raw(source, self.env) else {
            return Ok(self.default);
        };
        trimmed
            .parse::<u64>()
            .ok()
            .filter(|v| (self.min..=self.max).contains(v))
            .ok_or_else(|| invalid(self.env, value, self.accepted()))
    }

    /// Checks a value set in code, naming the setting as `setting`.
    pub fn check(&self, setting: &str, value: usize) -> Result<(), ConfigError> {
        let ok = u64::try_from(value).is_ok_and(|v| (self.min..=self.max).contains(&v));
        if ok {
            Ok(())
        } else {
            Err(invalid(setting, value.to_string(), self.accepted()))
        }
    }
}

impl Describe for Count {
    fn env(&self) -> &'static str {
        self.env
    }
    fn name(&self) -> &'static str {
        self.name
    }
    fn default_text(&self) -> String {
        self.default.to_string()
    }
    fn accepted(&self) -> String {
        format!("a whole number from {} to {}", self.min, self.max)
    }
    fn doc(&self) -> &'static str {
        self.doc
    }
}

/// The unit a duration setting is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Whole seconds (variables without a suffix).
    Seconds,
    /// Whole milliseconds (variables ending in `_MS`).
    Milliseconds,
}

impl Unit {
    fn word(self) -> &'static str {
        match self {
            Unit::Seconds => "seconds",
            Unit::Milliseconds => "milliseconds",
        }
    }

    /// The short form: `s` or `ms`.
    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Seconds => "s",
            Unit::Milliseconds => "ms",
        }
    }
}

/// A duration in whole seconds or milliseconds. With `zero_is_off`, 0 means "off" and reads
/// as `None`; otherwise 0 is a value like any other, if `min` allows it.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    /// Environment variable.
    pub env: &'static str,
    /// Builder name.
    pub name: &'static str,
    /// The unit of the number.
    pub unit: Unit,
    /// Value when unset, in units (0 with `zero_is_off`: off).
    pub default: u64,
    /// Smallest accepted, in units (besides 0 when `zero_is_off`).
    pub min: u64,
    /// Largest accepted, in units.
    pub max: u64,
    /// 0 turns the behaviour off.
    pub zero_is_off: bool,
    /// What it does.
    pub doc: &'static str,
}

impl Span {
    /// The default: `None` when it is off.
    pub const fn default_value(&self) -> Option<Duration> {
        if self.zero_is_off && self.default == 0 {
            return None;
        }
        Some(self.duration(self.default))
    }

    /// The default of a setting that cannot be off.
    pub const fn default_duration(&self) -> Duration {
        self.duration(self.default)
    }

    const fn duration(&self, units: u64) -> Duration {
        match self.unit {
            Unit::Seconds => Duration::from_secs(units),
            Unit::Milliseconds => Duration::from_millis(units),
        }
    }

    /// Reads it from `source`: `None` for off.
    pub fn read(&self, source: &dyn Source) -> Result<Option<Duration>, ConfigError> {
        let Some((value, trimmed)) = raw(source, self.env) else {
            return Ok(self.default_value());
        };
        let units = trimmed
            .parse::<u64>()
            .ok()
            .filter(|v| self.allows(*v))
            .ok_or_else(|| invalid(self.env, value, self.accepted()))?;
        Ok(if self.zero_is_off && units == 0 {
            None
        } else {
            Some(self.duration(units))
        })
    }

    /// Reads a setting that cannot be off.
    pub fn read_duration(&self, source: &dyn Source) -> Result<Duration, ConfigError> {
        Ok(self.read(source)?.unwrap_or_else(|| self.default_duration()))
    }

    fn allows(&self, units: u64) -> bool {
        (self.zero_is_off && units == 0) || (self.min..=self.max).contains(&units)
    }

    /// Checks a value set in code (`None`: off), naming the setting as `setting`. Code may
    /// use a finer unit than the variable (a pool timeout of 500 ms): any duration above
    /// zero up to the maximum is accepted, zero only where the variable accepts 0 as a value.
    pub fn check(&self, setting: &str, value: Option<Duration>) -> Result<(), ConfigError> {
        let ok = match value {
            None => self.zero_is_off,
            Some(d) if d.is_zero() => self.min == 0 && !self.zero_is_off,
            Some(d) => d <= self.duration(self.max),
        };
        if ok {
            return Ok(());
        }
        let shown = match value {
            None => "off".to_string(),
            Some(d) => format!("{d:?}"),
        };
        Err(invalid(setting, shown, self.accepted()))
    }
}

impl Describe for Span {
    fn env(&self) -> &'static str {
        self.env
    }
    fn name(&self) -> &'static str {
        self.name
    }
    fn default_text(&self) -> String {
        self.default.to_string()
    }
    fn accepted(&self) -> String {
        let min = if self.zero_is_off {
            self.min.max(1)
        } else {
            self.min
        };
        format!(
            "a whole number of {} from {} to {}{}",
            self.unit.word(),
            if self.zero_is_off { 0 } else { min },
            self.max,
            if self.zero_is_off { " (0 turns it off)" } else { "" }
        )
    }
    fn unit(&self) -> &'static str {
        self.unit.symbol()
    }
    fn doc(&self) -> &'static str {
        self.doc
    }
}

/// One of a few words (compared without regard to case).
#[derive(Debug, Clone, Copy)]
pub struct Choice {
    /// Environment variable.
    pub env: &'static str,
    /// Builder name.
    pub name: &'static str,
    /// Value when unset.
    pub default: &'static str,
    /// Accepted values.
    pub choices: &'static [&'static str],
    /// What it does.
    pub doc: &'static str,
}

impl Choice {
    /// Reads it from `source`, as one of `choices`.
    pub fn read(&self, source: &dyn Source) -> Result<&'static str, ConfigError> {
        let Some((value, trimmed)) = raw(source, self.env) else {
            return Ok(self.default);
        };
        self.choices
            .iter()
            .find(|c| c.eq_ignore_ascii_case(&trimmed))
            .copied()
            .ok_or_else(|| invalid(self.env, value, self.accepted()))
    }
}

impl Describe for Choice {
    fn env(&self) -> &'static str {
        self.env
    }
    fn name(&self) -> &'static str {
        self.name
    }
    fn default_text(&self) -> String {
        self.default.to_string()
    }
    fn accepted(&self) -> String {
        format!("one of {}", self.choices.join(", "))
    }
    fn doc(&self) -> &'static str {
        self.doc
    }
}

/// Free text: a name, a query, a path, a URL or a secret.
#[derive(Debug, Clone, Copy)]
pub struct Text {
    /// Environment variable.
    pub env: &'static str,
    /// Builder name.
    pub name: &'static str,
    /// Value when unset, or a phrase in parentheses saying what happens without one.
    pub default: &'static str,
    /// What is accepted.
    pub accepted: &'static str,
    /// Never shown anywhere (a password, or a URL that may carry one).
    pub secret: bool,
    /// What it does.
    pub doc: &'static str,
}

impl Text {
    /// Reads it from `source`: `None` when unset or empty.
    pub fn read(&self, source: &dyn Source) -> Option<String> {
        source.get(self.env).filter(|v| !v.trim().is_empty())
    }

    /// Reads it, or the default when unset (for settings whose default is a value).
    pub fn read_or_default(&self, source: &dyn Source) -> String {
        self.read(source).unwrap_or_else(|| self.default.to_string())
    }
}

impl Describe for Text {
    fn env(&self) -> &'static str {
        self.env
    }
    fn name(&self) -> &'static str {
        self.name
    }
    fn default_text(&self) -> String {
        self.default.to_string()
    }
    fn accepted(&self) -> String {
        self.accepted.to_string()
    }
    fn doc(&self) -> &'static str {
        self.doc
    }
    fn secret(&self) -> bool {
        self.secret
    }
}

/// A duration that may also be `auto` (worked out from other settings), and 0 (off) where
/// `zero_is_off`.
#[derive(Debug, Clone, Copy)]
pub struct AutoSpan {
    /// Environment variable.
    pub env: &'static str,
    /// Builder name.
    pub name: &'static str,
    /// The unit of the number.
    pub unit: Unit,
    /// Largest accepted, in units.
    pub max: u64,
    /// 0 turns the behaviour off; otherwise 0 is refused.
    pub zero_is_off: bool,
    /// What it does, and what `auto` means.
    pub doc: &'static str,
}

/// The value of an [`AutoSpan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoValue {
    /// `auto`, or unset.
    Auto,
    /// `0`.
    Off,
    /// A number of units.
    Set(Duration),
}

impl AutoSpan {
    /// Reads it from `source`.
    pub fn read(&self, source: &dyn Source) -> Result<AutoValue, ConfigError> {
        let Some((value, trimmed)) = raw(source, self.env) else {
            return Ok(AutoValue::Auto);
        };
        if trimmed.eq_ignore_ascii_case("auto") {
            return Ok(AutoValue::Auto);
        }
        match trimmed.parse::<u64>() {
            Ok(0) if self.zero_is_off => Ok(AutoValue::Off),
            Ok(n) if n > 0 && n <= self.max => Ok(AutoValue::Set(match self.unit {
                Unit::Seconds => Duration::from_secs(n),
                Unit::Milliseconds => Duration::from_millis(n),
            })),
            _ => Err(invalid(self.env, value, self.accepted())),
        }
    }
}

impl Describe for AutoSpan {
    fn env(&self) -> &'static str {
        self.env
    }
    fn name(&self) -> &'static str {
        self.name
    }
    fn default_text(&self) -> String {
        "auto".into()
    }
    fn accepted(&self) -> String {
        if self.zero_is_off {
            format!(
                "auto, or a whole number of {} from 0 to {} (0 turns it off)",
                self.unit.word(),
                self.max
            )
        } else {
            format!(
                "auto, or a whole number of {} from 1 to {}",
                self.unit.word(),
                self.max
            )
        }
    }
    fn unit(&self) -> &'static str {
        self.unit.symbol()
    }
    fn doc(&self) -> &'static str {
        self.doc
    }
}

/// A settings table in Markdown, as the READMEs show it: variable, setter, default, unit,
/// accepted values and meaning, one row per setting.
pub fn markdown_table(settings: &[&dyn Describe]) -> String {
    let mut out = String::from(
        "| variable | setter | default | unit | accepted | meaning |\n|---|---|---|---|---|---|\n",
    );
    for s in settings {
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} | {} | {} |\n",
            s.env(),
            s.name(),
            escape(&s.default_text()),
            s.unit(),
            escape(&s.accepted()),
            escape(s.doc())
        ));
    }
    out
}

/// Brackets escaped, so that Markdown (and rustdoc, which reads the READMEs) shows them as
/// written instead of taking them for links.
fn escape(text: &str) -> String {
    text.replace('[', "\\[").replace(']', "\\]")
}

/// Checks that `readme` holds `table` between the lines `<!-- settings:{name} -->` and
/// `<!-- /settings:{name} -->`; the error says what the table should be.
pub fn check_readme_table(readme: &str, name: &str, table: &str) -> Result<(), String> {
    let start = format!("<!-- settings:{name} -->\n");
    let end = format!("<!-- /settings:{name} -->");
    let found = readme
        .split_once(&start)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(inside, _)| inside);
    match found {
        Some(inside) if inside == table => Ok(()),
        Some(_) => Err(format!(
            "the README's settings table `{name}` differs from the settings in code; replace it with:\n{start}{table}{end}"
        )),
        None => Err(format!("the README has no settings table `{name}` ({start}...{end})")),
    }
}

/// Checks that `source` (a file's text) has a setter `pub fn <name>(` for each setting,
/// documented with "Defaults to", and, for numbers, the default itself: the setters' docs
/// cannot drift from the table unnoticed.
pub fn check_setter_docs(source: &str, settings: &[&dyn Describe]) -> Result<(), String> {
    let lines: Vec<&str> = source.lines().collect();
    for s in settings {
        let signature = format!("pub fn {}(", s.name());
        let Some(at) = lines.iter().position(|l| l.trim_start().starts_with(&signature)) else {
            return Err(format!("no setter `{}` for {}", s.name(), s.env()));
        };
        let doc: Vec<&str> = lines[..at]
            .iter()
            .rev()
            .take_while(|l| l.trim_start().starts_with("///"))
            .map(|l| l.trim_start().trim_start_matches("///").trim())
            .collect();
        let doc = doc.into_iter().rev().collect::<Vec<_>>().join(" ");
        let default = s.default_text();
        let numeric = default.chars().all(|c| c.is_ascii_digit());
        let states_default = match doc.split_once("Defaults to") {
            Some(_) if numeric && default == "0" => true,
            Some((_, rest)) if numeric => rest.split(|c: char| !c.is_ascii_digit()).any(|w| w == default),
            Some(_) => true,
            None => false,
        };
        if !states_default {
            return Err(format!(
                "the setter `{}` must say \"Defaults to {default}{}\" ({}), as the table does",
                s.name(),
                if s.unit().is_empty() {
                    String::new()
                } else {
                    format!(" {}", s.unit())
                },
                s.env()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Count = Count {
        env: "C",
        name: "c",
        default: 5,
        min: 1,
        max: 10,
        doc: "",
    };
    const MS: Span = Span {
        env: "T_MS",
        name: "t",
        unit: Unit::Milliseconds,
        default: 0,
        min: 1,
        max: 1000,
        zero_is_off: true,
        doc: "",
    };

    #[test]
    fn counts() {
        let env = [
            ("C", "7"),
            ("B", "abc"),
            ("N", "-1"),
            ("Z", "0"),
            ("E", "99999999999999999999"),
            ("F", " "),
        ];
        assert_eq!(C.read(&env), Ok(7));
        assert_eq!(C.read(&[("C", " ")]), Ok(5));
        assert_eq!(C.read(&[("X", "1")]), Ok(5));
        for bad in ["abc", "-1", "0", "99999999999999999999", "11"] {
            let err = C.read(&[("C", bad)]).expect_err(bad).to_string();
            assert!(err.starts_with(&format!("C: invalid value \"{bad}\"")), "{err}");
            assert!(err.contains("a whole number from 1 to 10"), "{err}");
        }
        assert!(C.check("c", 10).is_ok());
        assert!(C
            .check("c", 0)
            .expect_err("0")
            .to_string()
            .starts_with("c: invalid value \"0\""));
    }

    #[test]
    fn spans_and_choices() {
        assert_eq!(MS.read(&[("T_MS", "250")]), Ok(Some(Duration::from_millis(250))));
        assert_eq!(MS.read(&[("T_MS", "0")]), Ok(None));
        assert_eq!(MS.read(&[("X", "0")]), Ok(None), "default off");
        let err = MS.read(&[("T_MS", "1001")]).expect_err("max").to_string();
        assert!(
            err.contains("milliseconds from 0 to 1000 (0 turns it off)"),
            "{err}"
        );
        assert!(MS.check("t", None).is_ok());
        assert!(MS.check("t", Some(Duration::from_millis(2000))).is_err());
        assert!(
            MS.check("t", Some(Duration::from_micros(500))).is_ok(),
            "finer than the unit"
        );
        let strict = Span {
            zero_is_off: false,
            default: 10,
            ..MS
        };
        assert!(strict.check("t", None).is_err());
        assert!(strict.check("t", Some(Duration::ZERO)).is_err());
        let err = strict.read(&[("T_MS", "0")]).expect_err("zero").to_string();
        assert!(err.contains("milliseconds from 1 to 1000"), "{err}");
        let choice = Choice {
            env: "P",
            name: "p",
            default: "auto",
            choices: &["auto", "always", "never"],
            doc: "",
        };
        assert_eq!(choice.read(&[("P", "ALWAYS")]), Ok("always"));
        let err = choice.read(&[("P", "sometimes")]).expect_err("bad");
        assert!(err.to_string().contains("one of auto, always, never"), "{err}");
    }

    #[test]
    fn auto_spans() {
        let s = AutoSpan {
            env: "A_MS",
            name: "a",
            unit: Unit::Milliseconds,
            max: 100,
            zero_is_off: true,
            doc: "",
        };
        assert_eq!(s.read(&[("X", "")]), Ok(AutoValue::Auto));
        assert_eq!(s.read(&[("A_MS", "AUTO")]), Ok(AutoValue::Auto));
        assert_eq!(s.read(&[("A_MS", "0")]), Ok(AutoValue::Off));
        assert_eq!(
            s.read(&[("A_MS", "7")]),
            Ok(AutoValue::Set(Duration::from_millis(7)))
        );
        assert!(s.read(&[("A_MS", "101")]).is_err());
        let never_off = AutoSpan {
            zero_is_off: false,
            ..s
        };
        assert!(never_off.read(&[("A_MS", "0")]).is_err());
    }

    #[test]
    fn readme_tables_are_checked() {
        let table = markdown_table(&[&C]);
        let readme = format!("intro\n<!-- settings:x -->\n{table}<!-- /settings:x -->\nrest");
        assert_eq!(check_readme_table(&readme, "x", &table), Ok(()));
        let stale = readme.replace("| 5 |", "| 6 |");
        assert!(check_readme_table(&stale, "x", &table)
            .expect_err("stale")
            .contains("replace it with"));
        assert!(check_readme_table("", "x", &table).is_err());
    }
}
