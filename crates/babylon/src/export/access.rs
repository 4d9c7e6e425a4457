//! Who may read metrics: an allow-list of client networks, then, when either is set, a
//! bearer token or a user of `basic_auth_users` (bcrypt hashes, as the Prometheus exporter
//! toolkit has them).
//!
//! One check serves both the main port and the export listener, so the two can never
//! disagree about who gets in.
//!
//! bcrypt is slow on purpose (tens to hundreds of milliseconds a check): it runs on the
//! blocking pool, never on a worker that serves requests, and credentials it accepted are
//! remembered as a keyed SHA-256 digest, so a scraper pays for it once per process, not
//! once per scrape. Only clients of the allow-list get as far as a password.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::request::BlockReason;
use crate::settings::{BasicAuthUsers, CidrList, ExportSettings, Token};

/// A bcrypt hash of a password nobody has, checked for unknown users so that a wrong
/// user name costs what a wrong password does.
const NOBODY: &str = "$2b$10$4VO0ucYPAwNfSyV6tB5hqeNB8dFDnVXLR9cbgr5m6Ry7nFaTe9RTS";

#[derive(Debug, Clone)]
/// Who may read metrics: `metrics.export.allow` and, when set, the bearer token or the
/// basic-auth users.
pub struct MetricsAccess {
    allow: CidrList,
    token: Option<Token>,
    users: BasicAuthUsers,
    /// Per user, the digest of the credentials bcrypt last accepted.
    accepted: Arc<Mutex<HashMap<String, [u8; 32]>>>,
    /// Keys the digests, so that they say nothing outside this process.
    key: [u8; 32],
}

impl MetricsAccess {
    /// The access rule of `export`'s allow-list, token and users.
    pub fn new(export: &ExportSettings) -> Self {
        let key: [u8; 32] = Sha256::digest(uuid::Uuid::new_v4().as_bytes()).into();
        MetricsAccess {
            allow: export.allow.clone(),
            token: export.token.clone(),
            users: export.basic_auth_users.clone(),
            accepted: Arc::default(),
            key,
        }
    }

    /// `client` is `None` when the address is unknown, which is refused: access control
    /// fails closed. `authorization` is the raw `Authorization` header.
    pub async fn check(
        &self,
        client: Option<IpAddr>,
        authorization: Option<&str>,
    ) -> Result<(), BlockReason> {
        if !client.is_some_and(|ip| self.allow.contains(ip)) {
            return Err(BlockReason::MetricsForbidden);
        }
        if self.token.is_none() && self.users.is_empty() {
            return Ok(());
        }
        let granted = match authorization.and_then(credentials) {
            Some(Credentials::Bearer(presented)) => self.token.as_ref().is_some_and(|expected| {
                bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
            }),
            Some(Credentials::Basic { user, password }) if !self.users.is_empty() => {
                self.basic(user, password).await
            }
            _ => false,
        };
        match granted {
            true => Ok(()),
            false => Err(BlockReason::MetricsUnauthorized),
        }
    }

    /// Whether `password` is `user`'s, by the digest of an earlier success or by bcrypt.
    async fn basic(&self, user: String, password: String) -> bool {
        let digest: [u8; 32] = Sha256::new()
            .chain_update(self.key)
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        let known = self.lock().get(&user).copied();
        if known.is_some_and(|known| bool::from(known.ct_eq(&digest))) {
            return true;
        }
        let stored = self.users.hash_of(&user);
        let is_user = stored.is_some();
        let hash = stored.unwrap_or(NOBODY).to_string();
        let verified = rocket::tokio::task::spawn_blocking(move || {
            bcrypt::verify(password.as_bytes(), &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        let granted = verified && is_user;
        if granted {
            self.lock().insert(user, digest);
        }
        granted
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, [u8; 32]>> {
        self.accepted
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// What an `Authorization` header carries.
enum Credentials<'a> {
    /// `Bearer <token>` (scheme case-insensitive).
    Bearer(&'a str),
    /// `Basic <base64 of user:password>`.
    Basic { user: String, password: String },
}

fn credentials(header: &str) -> Option<Credentials<'_>> {
    let (scheme, value) = header.trim().split_once(' ')?;
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Credentials::Bearer(value));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some(Credentials::Basic {
        user: user.to_string(),
        password: password.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        access: &MetricsAccess,
        client: Option<IpAddr>,
        header: Option<&str>,
    ) -> Result<(), BlockReason> {
        rocket::tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(access.check(client, header))
    }

    fn access(token: Option<&str>) -> MetricsAccess {
        let dir = tempfile::tempdir().unwrap();
        let mut export = ExportSettings::default();
        if let Some(token) = token {
            let path = dir.path().join("token");
            std::fs::write(&path, format!("{token}\n")).unwrap();
            export.token_file = Some(path);
            let mut problems = crate::settings::Problems::default();
            export.validate(&mut problems);
            assert!(problems.is_empty(), "{problems:?}");
        }
        MetricsAccess::new(&export)
    }

    #[test]
    fn allow_list_then_token() {
        let local = Some("127.0.0.1".parse().unwrap());
        let remote = Some("192.0.2.1".parse().unwrap());
        assert_eq!(check(&access(None), local, None), Ok(()));
        assert_eq!(
            check(&access(None), remote, None),
            Err(BlockReason::MetricsForbidden)
        );
        assert_eq!(
            check(&access(None), None, None),
            Err(BlockReason::MetricsForbidden)
        );
        let guarded = access(Some("s3cret"));
        assert_eq!(check(&guarded, local, Some("Bearer s3cret")), Ok(()));
        assert_eq!(check(&guarded, local, Some("bearer s3cret")), Ok(()));
        assert_eq!(
            check(&guarded, local, Some("Bearer wrong")),
            Err(BlockReason::MetricsUnauthorized)
        );
        assert_eq!(
            check(&guarded, local, Some("Basic s3cret")),
            Err(BlockReason::MetricsUnauthorized)
        );
        assert_eq!(
            check(&guarded, local, None),
            Err(BlockReason::MetricsUnauthorized)
        );
        assert_eq!(
            check(&guarded, remote, Some("Bearer s3cret")),
            Err(BlockReason::MetricsForbidden)
        );
    }

    fn with_users(token: Option<&str>) -> MetricsAccess {
        let dir = tempfile::tempdir().unwrap();
        let mut export = ExportSettings::default();
        let hash = bcrypt::hash("correct horse", 4).unwrap();
        export.basic_auth_users =
            serde_json::from_value(serde_json::json!({ "prometheus": hash })).unwrap();
        if let Some(token) = token {
            let path = dir.path().join("token");
            std::fs::write(&path, token).unwrap();
            export.token_file = Some(path);
        }
        let mut problems = crate::settings::Problems::default();
        export.validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        MetricsAccess::new(&export)
    }

    fn basic(user_and_password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_and_password)
        )
    }

    #[test]
    fn a_users_password_gets_in_and_nothing_else_does() {
        let local = Some("127.0.0.1".parse().unwrap());
        let remote = Some("192.0.2.1".parse().unwrap());
        let access = with_users(None);
        let right = basic("prometheus:correct horse");
        assert_eq!(check(&access, local, Some(&right)), Ok(()));
        // Again, from the digest of the first success.
        assert_eq!(check(&access, local, Some(&right)), Ok(()));
        for wrong in [
            basic("prometheus:correct horsE"),
            basic("prometheus:"),
            basic("grafana:correct horse"),
            basic("prometheus"),
            "Basic !!!".to_string(),
            "Bearer correct horse".to_string(),
            right.replace("Basic", "Digest"),
        ] {
            assert_eq!(
                check(&access, local, Some(&wrong)),
                Err(BlockReason::MetricsUnauthorized),
                "{wrong}"
            );
        }
        assert_eq!(
            check(&access, local, None),
            Err(BlockReason::MetricsUnauthorized)
        );
        assert_eq!(
            check(&access, remote, Some(&right)),
            Err(BlockReason::MetricsForbidden)
        );
        // With a token too, either credential gets in.
        let both = with_users(Some("s3cret"));
        assert_eq!(check(&both, local, Some("Bearer s3cret")), Ok(()));
        assert_eq!(check(&both, local, Some(&right)), Ok(()));
    }

    #[test]
    fn the_hash_of_unknown_users_is_a_bcrypt_hash() {
        let parts: bcrypt::HashParts = NOBODY.parse().expect("a bcrypt hash");
        assert_eq!(parts.get_cost(), 10);
    }
}
