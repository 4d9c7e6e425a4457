//! Who may read metrics: an allow-list of client networks and an optional bearer token.
//!
//! One check serves both the main port and the export listener, so the two can never
//! disagree about who gets in.

use std::net::IpAddr;

use subtle::ConstantTimeEq;

use crate::request::BlockReason;
use crate::settings::{CidrList, ExportSettings, Token};

#[derive(Debug, Clone)]
/// Who may read metrics: `metrics.export.allow` and, when set, the bearer token.
pub struct MetricsAccess {
    allow: CidrList,
    token: Option<Token>,
}

impl MetricsAccess {
    /// The access rule of `export`'s allow-list and token.
    pub fn new(export: &ExportSettings) -> Self {
        MetricsAccess {
            allow: export.allow.clone(),
            token: export.token.clone(),
        }
    }

    /// `client` is `None` when the address is unknown, which is refused: access control
    /// fails closed. `authorization` is the raw `Authorization` header.
    pub fn check(
        &self,
        client: Option<IpAddr>,
        authorization: Option<&str>,
    ) -> Result<(), BlockReason> {
        if !client.is_some_and(|ip| self.allow.contains(ip)) {
            return Err(BlockReason::MetricsForbidden);
        }
        match &self.token {
            None => Ok(()),
            Some(expected) => {
                let presented = authorization.and_then(bearer_token).unwrap_or_default();
                if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
                    Ok(())
                } else {
                    Err(BlockReason::MetricsUnauthorized)
                }
            }
        }
    }
}

/// The credentials of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(access(None).check(local, None), Ok(()));
        assert_eq!(
            access(None).check(remote, None),
            Err(BlockReason::MetricsForbidden)
        );
        assert_eq!(
            access(None).check(None, None),
            Err(BlockReason::MetricsForbidden)
        );
        let guarded = access(Some("s3cret"));
        assert_eq!(guarded.check(local, Some("Bearer s3cret")), Ok(()));
        assert_eq!(guarded.check(local, Some("bearer s3cret")), Ok(()));
        assert_eq!(
            guarded.check(local, Some("Bearer wrong")),
            Err(BlockReason::MetricsUnauthorized)
        );
        assert_eq!(
            guarded.check(local, Some("Basic s3cret")),
            Err(BlockReason::MetricsUnauthorized)
        );
        assert_eq!(
            guarded.check(local, None),
            Err(BlockReason::MetricsUnauthorized)
        );
        assert_eq!(
            guarded.check(remote, Some("Bearer s3cret")),
            Err(BlockReason::MetricsForbidden)
        );
    }
}
