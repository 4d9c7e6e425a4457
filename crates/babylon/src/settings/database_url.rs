//! `databases.<alias>.url`: which vendor, and where a SQLite file lives.
//!
//! A database URL may carry a password, and it is printed exactly when something went
//! wrong with it (a failed connection, a refused setting). So every way this module shows a
//! URL goes through [`redact`], which parses it with a real URL parser (the `url` crate,
//! already in the tree through sqlx): a password is found wherever the URL grammar puts
//! it, whatever characters it holds, and a text that does not parse as a URL shows nothing
//! of what stands before its last `@`.

use std::fmt;
use std::path::{Path, PathBuf};

/// systemd's per-service state directory; relative SQLite paths land there when set.
pub(crate) const STATE_DIRECTORY_ENV: &str = "STATE_DIRECTORY";

/// The state directory for relative SQLite paths, if the service manager gave one.
pub(crate) fn state_directory() -> Option<PathBuf> {
    // systemd may list several directories separated by ':'; the first is ours.
    let value = std::env::var_os(STATE_DIRECTORY_ENV)?;
    let first = value.to_str()?.split(':').next()?.to_string();
    (!first.is_empty()).then(|| PathBuf::from(first))
}

/// The database vendors babylon runs on; the `vendor` label of the DB families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// SQLite, `sqlite://` URLs.
    Sqlite,
    /// PostgreSQL, `postgres://` and `postgresql://` URLs.
    Postgresql,
}

impl Vendor {
    /// The `vendor` label value.
    pub fn label(self) -> &'static str {
        match self {
            Vendor::Sqlite => "sqlite",
            Vendor::Postgresql => "postgresql",
        }
    }
}

/// A validated database URL. `Display` and `Debug` hide any password, so it is safe to log.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    vendor: Vendor,
    url: String,
}

impl DatabaseUrl {
    /// Accepts `sqlite://path`, `sqlite:path`, `sqlite::memory:`, `postgres://…` and
    /// `postgresql://…`. A relative SQLite path is resolved against `state_dir` when one is
    /// given (systemd's `$STATE_DIRECTORY`), else the working directory; the file is created
    /// when missing. The error names no password.
    pub fn parse(text: &str, state_dir: Option<&Path>) -> Result<DatabaseUrl, String> {
        let text = text.trim();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            // What sqlx will parse at connect time; refusing it here names the setting.
            let hint = "expected postgres://user:password@host:5432/dbname, with any of / ? # @ : % in the password written as %2F %3F %23 %40 %3A %25";
            let parsed = url::Url::parse(text).map_err(|error| {
                format!("`{}` is not a valid URL ({error}); {hint}", redact(text))
            })?;
            if parsed.path().contains('@') || parsed.query().is_some_and(|q| q.contains('@')) {
                // `user:12/x@host` parses, as host `user` and port 12: a raw `/` in the
                // password, whose rest then shows up as the database name.
                return Err(format!(
                    "`{}` has an `@` after the host, so a character of the password ended the host early; {hint}",
                    redact(text)
                ));
            }
            // Without one, libpq's defaults choose the database (named after the user): on
            // a shared server, someone else's, which migrations would then change.
            let database = parsed.path().trim_start_matches('/');
            let named_in_query = parsed
                .query_pairs()
                .any(|(key, value)| key == "dbname" && !value.is_empty());
            if database.is_empty() && !named_in_query {
                return Err(format!(
                    "`{}` names no database; name it after the host (postgres://user@host:5432/babylon), so that babylon never migrates a database libpq picks by default",
                    redact(text)
                ));
            }
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
        check_sqlite_file(&file)?;
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

    /// Which vendor the URL names.
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

/// A SQLite database file must be a regular file (a device or a directory is not a
/// database), or be creatable: its directory must exist.
fn check_sqlite_file(file: &Path) -> Result<(), String> {
    match std::fs::metadata(file) {
        Ok(metadata) if metadata.is_file() => Ok(()),
        Ok(metadata) if metadata.is_dir() => Err(format!(
            "{} is a directory; name the database file, e.g. sqlite://{}/babylon.sqlite",
            file.display(),
            file.display()
        )),
        Ok(_) => Err(format!(
            "{} is not a regular file (a device, a FIFO or a socket), so it cannot hold a database",
            file.display()
        )),
        Err(_) => {
            let directory = match file.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            if directory.is_dir() {
                Ok(())
            } else {
                Err(format!(
                    "{} cannot be created: {} is not an existing directory",
                    file.display(),
                    directory.display()
                ))
            }
        }
    }
}

/// The URL with its password replaced by `***`: `postgres://user:secret@host/db` ->
/// `postgres://user:***@host/db`. Where the grammar cannot tell where a password ends —
/// a text the URL parser refuses, or one with an `@` after its authority, as when a raw
/// `/` in the password made the parser end the authority early (`user:12/xy@host` reads
/// as host `user`, port 12) — only what follows the last `@` is kept:
/// `postgres://***@host/db`.
pub(crate) fn redact(text: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(text) else {
        return over_redacted(text);
    };
    let after_authority = [
        parsed.path(),
        parsed.query().unwrap_or(""),
        parsed.fragment().unwrap_or(""),
    ];
    if after_authority.iter().any(|part| part.contains('@')) {
        return over_redacted(text);
    }
    if parsed.password().is_some() && parsed.set_password(Some("***")).is_err() {
        // A URL that cannot hold credentials cannot have parsed with a password.
        return over_redacted(text);
    }
    parsed.to_string()
}

fn over_redacted(text: &str) -> String {
    let (scheme, rest) = text.split_once("://").unwrap_or(("", text));
    match rest.rsplit_once('@') {
        Some((_, after)) if scheme.is_empty() => format!("***@{after}"),
        Some((_, after)) => format!("{scheme}://***@{after}"),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendors_and_sqlite_paths() {
        let state = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::parse("sqlite://babylon.sqlite", Some(state.path())).unwrap();
        assert_eq!(url.vendor(), Vendor::Sqlite);
        assert_eq!(
            url.connect_url(),
            format!(
                "sqlite://{}/babylon.sqlite?mode=rwc",
                state.path().display()
            )
        );
        let absolute = format!("sqlite:{}/x.db?mode=ro", state.path().display());
        let url = DatabaseUrl::parse(&absolute, Some(Path::new("/state"))).unwrap();
        assert_eq!(
            url.connect_url(),
            format!("sqlite://{}/x.db?mode=ro", state.path().display())
        );
        let url = DatabaseUrl::parse("postgresql://u:pw@h:5432/db", None).unwrap();
        assert_eq!(url.vendor(), Vendor::Postgresql);
        assert_eq!(url.to_string(), "postgresql://u:***@h:5432/db");
        assert!(!format!("{url:?}").contains("pw"));
        assert!(DatabaseUrl::parse("mysql://root:pw@h/db", None)
            .unwrap_err()
            .contains("root:***@h"));
        assert!(DatabaseUrl::parse("sqlite://", None).is_err());
    }

    #[test]
    fn a_file_that_cannot_hold_a_database_and_a_url_without_one_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (url, problem) in [
            ("sqlite:///dev/zero".to_string(), "not a regular file"),
            (
                format!("sqlite://{}", dir.path().display()),
                "is a directory",
            ),
            (
                format!("sqlite://{}/missing/x.db", dir.path().display()),
                "is not an existing directory",
            ),
            ("postgres:///".to_string(), "names no database"),
            ("postgres://user:pw@host".to_string(), "names no database"),
        ] {
            let error = DatabaseUrl::parse(&url, None).unwrap_err();
            assert!(error.contains(problem), "{url}: {error}");
            assert!(!error.contains("pw@"), "{error}");
        }
        assert!(DatabaseUrl::parse("postgres://host/?dbname=app", None).is_ok());
        assert!(DatabaseUrl::parse("postgres://host/app", None).is_ok());
    }

    #[test]
    fn a_password_with_url_delimiters_never_shows() {
        // Written raw, `/` ends the authority: the URL does not parse, and what precedes
        // the last `@` is hidden.
        let error = DatabaseUrl::parse("postgres://user:pa/ss@host/db", None).unwrap_err();
        assert!(
            !error.contains("pa/ss") && !error.contains("ss@"),
            "{error}"
        );
        assert!(error.contains("postgres://***@host/db"), "{error}");
        // A numeric start makes it parse as host `user`, port 12: refused, and hidden.
        let error = DatabaseUrl::parse("postgres://user:12/xy@host/db", None).unwrap_err();
        assert!(!error.contains("12/xy"), "{error}");
        assert_eq!(
            redact("postgres://user:12/xy@host/db"),
            "postgres://***@host/db"
        );
        // Percent-encoded it parses, and only the password is replaced.
        let url = DatabaseUrl::parse("postgres://user:pa%2Fss@host/db", None).unwrap();
        assert_eq!(url.to_string(), "postgres://user:***@host/db");
    }
}
