//! `redis.url`: where the shared Redis is. Like a database URL it may carry a password, so
//! `Display` and `Debug` show it redacted, through the same parser.

use std::fmt;

use super::database_url::redact;

/// A validated Redis URL: `redis://[user:password@]host[:port][/db]`, `rediss://…` (TLS),
/// or `unix:///path/to/redis.sock` (`redis+unix://` too). `Display` and `Debug` hide the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Checks the scheme and that the Redis client can read the URL; the problem, with the
    /// URL redacted, otherwise.
    pub fn parse(text: &str) -> Result<RedisUrl, String> {
        let scheme = text.split_once("://").map(|(scheme, _)| scheme);
        match scheme {
            Some("redis" | "rediss" | "unix" | "redis+unix") => {}
            _ => {
                return Err(format!(
                    "`{}` is not a Redis URL (use redis://host:6379, rediss://host:6380 or unix:///path/to/redis.sock)",
                    redact(text)
                ))
            }
        }
        // The client reads `#insecure` as "do not verify the server's certificate".
        if text.contains('#') {
            return Err(format!(
                "`{}`: a fragment (`#…`) is not accepted; to trust a private CA, set redis.tls_ca_file",
                redact(text)
            ));
        }
        // The error's kind only: its detail may quote the URL.
        redis::Client::open(text).map_err(|error| {
            format!(
                "`{}` is not a valid Redis URL: {:?}",
                redact(text),
                error.kind()
            )
        })?;
        Ok(RedisUrl(text.to_string()))
    }

    /// The URL itself, password included: for the Redis client only, never for messages.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the connection is TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.0.starts_with("rediss://")
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_every_form_parse_and_hide_their_password() {
        for text in [
            "redis://127.0.0.1:6379",
            "redis://:s3cr3t@127.0.0.1:6379/2",
            "redis://user:s3cr3t@redis.internal",
            "rediss://:s3cr3t@redis.internal:6380/1",
            "unix:///run/redis/redis.sock",
        ] {
            let url = RedisUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(!url.to_string().contains("s3cr3t"), "{url}");
            assert!(!format!("{url:?}").contains("s3cr3t"), "{url:?}");
            assert_eq!(url.expose(), text);
        }
    }

    #[test]
    fn other_schemes_are_refused_without_the_password() {
        for text in [
            "rediss://:s3cr3t@host:6380/#insecure",
            "http://:s3cr3t@host",
            "127.0.0.1:6379",
        ] {
            let problem = RedisUrl::parse(text).unwrap_err();
            assert!(!problem.contains("s3cr3t"), "{problem}");
        }
    }
}
