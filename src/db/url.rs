//! `databases.<alias>.url`: which vendor, and where a SQLite file lives.

use std::fmt;
use std::path::{Path, PathBuf};

/// The database vendors babylon runs on; the `vendor` label of the DB families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Sqlite,
    Postgresql,
}

impl Vendor {
    pub fn label(self) -> &'static str {
        match self {
            Vendor::Sqlite => "sqlite",
            Vendor::Postgresql => "postgresql",
        }
    }
}

/// A validated database URL. `Display` hides any password, so it is safe to log.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    vendor: Vendor,
    url: String,
}

impl DatabaseUrl {
    /// Accepts `sqlite://path`, `sqlite:path`, `sqlite::memory:`, `postgres://…` and
    /// `postgresql://…`. A relative SQLite path is resolved against `state_dir` when one is
    /// given (systemd's `$STATE_DIRECTORY`), else the working directory; the file is created
    /// when missing.
    pub fn parse(text: &str, state_dir: Option<&Path>) -> Result<DatabaseUrl, String> {
        let text = text.trim();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(DatabaseUrl {
                vendor: Vendor::Postgresql,
                url: text.to_string(),
            });
        }
        let Some(rest) = text.strip_prefix("sqlite:") else {
            return Err(format!(
                "`{}` is not a supported database URL (use sqlite://<file> or postgres://user@host/db)",
                redact(text)
            ));
        };
        if rest == ":memory:" || rest.starts_with(":memory:?") {
            return Ok(DatabaseUrl {
                vendor: Vendor::Sqlite,
                url: text.to_string(),
            });
        }
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() {
            return Err("a sqlite URL needs a file path, e.g. sqlite://babylon.sqlite".into());
        }
        let mut file = PathBuf::from(path);
        if file.is_relative() {
            if let Some(dir) = state_dir {
                file = dir.join(file);
            }
        }
        // Create the file when missing unless the URL chose a mode itself.
        let query = if query.split('&').any(|pair| pair.starts_with("mode=")) {
            query.to_string()
        } else if query.is_empty() {
            "mode=rwc".to_string()
        } else {
            format!("{query}&mode=rwc")
        };
        Ok(DatabaseUrl {
            vendor: Vendor::Sqlite,
            url: format!("sqlite://{}?{query}", file.display()),
        })
    }

    pub fn vendor(&self) -> Vendor {
        self.vendor
    }

    /// The URL to connect with (may hold a password: never log it).
    pub fn connect_url(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.url))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest
        .split_once('/')
        .map_or((rest, None), |(a, t)| (a, Some(t)));
    let authority = match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{credentials}@{host}"),
        },
        None => authority.to_string(),
    };
    match tail {
        Some(tail) => format!("{scheme}://{authority}/{tail}"),
        None => format!("{scheme}://{authority}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendors_and_sqlite_paths() {
        let url = DatabaseUrl::parse(
            "sqlite://babylon.sqlite",
            Some(Path::new("/var/lib/babylon")),
        )
        .unwrap();
        assert_eq!(url.vendor(), Vendor::Sqlite);
        assert_eq!(
            url.connect_url(),
            "sqlite:///var/lib/babylon/babylon.sqlite?mode=rwc"
        );
        let url =
            DatabaseUrl::parse("sqlite:/abs/x.db?mode=ro", Some(Path::new("/state"))).unwrap();
        assert_eq!(url.connect_url(), "sqlite:///abs/x.db?mode=ro");
        let url = DatabaseUrl::parse("postgresql://u:pw@h:5432/db", None).unwrap();
        assert_eq!(url.vendor(), Vendor::Postgresql);
        assert_eq!(url.to_string(), "postgresql://u:***@h:5432/db");
        assert!(!format!("{url:?}").contains("pw"));
        assert!(DatabaseUrl::parse("mysql://root:pw@h/db", None)
            .unwrap_err()
            .contains("root:***@h"));
        assert!(DatabaseUrl::parse("sqlite://", None).is_err());
    }
}
