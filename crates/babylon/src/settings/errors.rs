//! What stops start-up: every wrong setting of one reading, each as one line that names
//! the key and where its value came from.
//!
//! figment stops at the first value that does not fit its type; [`super::Settings`] reads
//! again without it until everything parses, so one run reports every wrong setting.
//! Problems are collected without their origin ([`Problems`]) and get it at the end from
//! the figment the user gave, which knows each value's file or variable.

use std::fmt;

use figment::Figment;

/// Settings that stop start-up: every problem found in one reading.
///
/// `Display` writes one line per problem, each naming the key, where its value came from
/// and what is wrong: ``invalid setting `metrics.export.port` (from
/// BABYLON_METRICS__EXPORT__PORT): set either `port` or `port_range`, not both``.
#[derive(Debug)]
pub struct ConfigError {
    problems: Vec<Problem>,
}

/// One wrong setting.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// The dotted key (`metrics.export.port`); `None` when the settings could not be read
    /// at all (a configuration file that is not TOML).
    pub key: Option<String>,
    /// Where the value came from, ready to print after the key:
    /// ` (from BABYLON_METRICS__PATH)`, ` (in /etc/babylon/Rocket.toml)`; empty when unknown.
    pub origin: String,
    /// What is wrong with it, and what would be right; one line.
    pub message: String,
}

impl ConfigError {
    /// Every problem, in the order found.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// A problem found before the settings could be read (their file).
    pub(crate) fn before_reading(origin: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            problems: vec![Problem {
                key: None,
                origin: origin.to_string(),
                message: one_line(&message.into()),
            }],
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(
                f,
                "invalid setting `{key}`{}: {}",
                self.origin, self.message
            ),
            None => write!(f, "invalid configuration{}: {}", self.origin, self.message),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            problem.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Problems found so far, without their origins. The key is dotted (`cache.ttl_seconds`);
/// `suffix` is appended to a variable's name in the origin (`__…` for a whole section).
#[derive(Debug, Default)]
pub(crate) struct Problems {
    found: Vec<(Option<String>, Origin, String)>,
}

/// Where a problem's value came from: looked up in the figment, or known already.
#[derive(Debug)]
enum Origin {
    /// Looked up by key; the text is appended to a variable's name (`__…` for a section).
    Lookup(&'static str),
    Known(&'static str),
}

impl Problems {
    /// `key` holds a value that breaks a rule.
    pub(crate) fn invalid(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.found.push((
            Some(key.into()),
            Origin::Lookup(""),
            one_line(&message.into()),
        ));
    }

    /// As [`invalid`](Self::invalid), for a value whose origin figment does not record
    /// (`ROCKET_PROFILE`).
    pub(crate) fn invalid_from(
        &mut self,
        key: impl Into<String>,
        origin: &'static str,
        message: impl Into<String>,
    ) {
        self.found.push((
            Some(key.into()),
            Origin::Known(origin),
            one_line(&message.into()),
        ));
    }

    /// The settings as a whole could not be read.
    pub(crate) fn unreadable(&mut self, message: impl Into<String>) {
        self.found
            .push((None, Origin::Lookup(""), one_line(&message.into())));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// `Ok` when nothing was found; else every problem, each with where its value came
    /// from in `figment`.
    pub(crate) fn into_result(self, figment: &Figment) -> Result<(), ConfigError> {
        if self.found.is_empty() {
            return Ok(());
        }
        let problems = self
            .found
            .into_iter()
            .map(|(key, origin, message)| Problem {
                origin: match (&key, origin) {
                    (_, Origin::Known(origin)) => origin.to_string(),
                    (Some(key), Origin::Lookup(suffix)) => origin_of(figment, key, suffix),
                    (None, Origin::Lookup(_)) => file_of(figment),
                },
                key,
                message,
            })
            .collect();
        Err(ConfigError { problems })
    }
}

/// A value figment could not fit into its type: where, and why.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    /// The key path; empty when the settings as a whole could not be read.
    pub(crate) path: Vec<String>,
    pub(crate) message: String,
    /// A required key is absent (rather than present and wrong).
    pub(crate) missing: bool,
    /// Appended to a variable's name in the origin.
    pub(crate) suffix: &'static str,
}

impl Fault {
    pub(crate) fn at(path: Vec<String>, message: impl Into<String>) -> Fault {
        Fault {
            path,
            message: message.into(),
            missing: false,
            suffix: "",
        }
    }

    /// figment's first error.
    pub(crate) fn from_figment(error: figment::Error) -> Fault {
        let Some(first) = error.into_iter().next() else {
            return Fault::at(Vec::new(), "the settings cannot be read");
        };
        let missing = matches!(first.kind, figment::error::Kind::MissingField(_));
        Fault {
            message: describe(&first.kind),
            path: first.path,
            missing,
            suffix: "",
        }
    }

    /// Records this fault among `problems`.
    pub(crate) fn record(&self, problems: &mut Problems) {
        if self.path.is_empty() {
            problems.unreadable(&self.message);
        } else {
            let key = self.path.join(".");
            problems.found.push((
                Some(key),
                Origin::Lookup(self.suffix),
                one_line(&self.message),
            ));
        }
    }
}

/// figment's description of a problem, except where figment wraps a list of names in a
/// second pair of backticks (`` `one of `a`, `b`` ``): an unknown key or value.
fn describe(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    let names = |names: &[&str]| -> String {
        let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
        quoted.join(", ")
    };
    match kind {
        Kind::UnknownField(_, []) => "unknown key; this section has no keys".into(),
        Kind::UnknownField(_, expected) => {
            format!("unknown key; the keys here are {}", names(expected))
        }
        Kind::UnknownVariant(found, expected) => {
            format!(
                "unknown value `{found}`; the values here are {}",
                names(expected)
            )
        }
        other => other.to_string(),
    }
}

/// `text` as one line: a parser's message may quote the offending source over several
/// lines (`1 | root:x:0:0…`, `  |     ^`); those lines go, the others are joined.
pub(crate) fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .filter(|line| {
            let excerpt = line.starts_with('|')
                || line
                    .split_once(" |")
                    .is_some_and(|(number, _)| number.chars().all(|c| c.is_ascii_digit()))
                || line.chars().all(|c| c == '^' || c == '-' || c == ' ');
            !excerpt
        })
        .collect();
    match lines.len() {
        0 => "(no details)".to_string(),
        _ => lines.join(": "),
    }
}

/// Where the value of the dotted `key` came from, as ` (from BABYLON_A__B<suffix>)` or
/// ` (in Rocket.toml)`; empty when figment does not know.
pub(crate) fn origin_of(figment: &Figment, key: &str, suffix: &str) -> String {
    figment
        .find_metadata(key)
        .map(
            |metadata| match (env_prefix(&metadata.name), &metadata.source) {
                (Some(prefix), _) => format!(
                    " (from {prefix}{}{suffix})",
                    key.replace('.', "__").to_uppercase()
                ),
                (None, Some(source)) => format!(" (in {source})"),
                (None, None) => format!(" (in {})", metadata.name),
            },
        )
        .unwrap_or_default()
}

/// The configuration file that could not be read, as ` (in /path)`, from the error figment
/// gives when extracting everything.
fn file_of(figment: &Figment) -> String {
    let Err(error) = figment.extract::<figment::value::Dict>() else {
        return String::new();
    };
    error
        .into_iter()
        .next()
        .and_then(|first| first.metadata)
        .and_then(|metadata| metadata.source)
        .map(|source| format!(" (in {source})"))
        .unwrap_or_default()
}

/// `BABYLON_` from figment's provider name "`BABYLON_` environment variable(s)".
pub(crate) fn env_prefix(provider_name: &str) -> Option<&str> {
    let rest = provider_name.strip_suffix("` environment variable(s)")?;
    rest.strip_prefix('`')
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_parser_message_becomes_one_line_without_its_excerpt() {
        let toml = "TOML parse error at line 1, column 5\n  |\n1 | root:x:0:0:root:/root:/bin/bash\n  |     ^\nexpected `.`, `=`\n";
        assert_eq!(
            one_line(toml),
            "TOML parse error at line 1, column 5: expected `.`, `=`"
        );
        assert_eq!(one_line("plain"), "plain");
        assert_eq!(one_line("\n\n"), "(no details)");
    }
}
