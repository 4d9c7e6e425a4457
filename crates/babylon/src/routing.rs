//! Decisions on a request's path, made as Rocket's router makes them: on the
//! percent-decoded segments, empty ones dropped.
//!
//! A fairing sees the request before routing, and the raw path can be spelt many ways
//! that reach one route (`/metrics`, `//metrics`, `/%6Detrics`, `/metrics/`). A decision
//! on the raw string would treat them as different paths; these treat them as the router
//! does.

use rocket::Request;

/// A fixed path, as the router matches a static route: its segments.
#[derive(Debug, Clone)]
pub(crate) struct RoutedPath(Vec<String>);

impl RoutedPath {
    /// `path` starts with `/` (a validated `UrlPath`).
    pub(crate) fn new(path: &str) -> Self {
        RoutedPath(
            path.split('/')
                .filter(|segment| !segment.is_empty())
                .map(String::from)
                .collect(),
        )
    }

    /// Whether the router would send `request`'s path to a static route at this path.
    pub(crate) fn matches(&self, request: &Request<'_>) -> bool {
        let segments = request.uri().path().segments();
        segments.len() == self.0.len() && self.0.iter().zip(segments).all(|(a, b)| a == b)
    }

    /// Whether a route whose path is the pattern `route_path` (`/api/items/<id>`,
    /// `/files/<path..>`) would match this path too, whatever its rank.
    pub(crate) fn is_matched_by(&self, route_path: &str) -> bool {
        let mut ours = self.0.iter();
        let route_path = route_path.split('?').next().unwrap_or_default();
        for pattern in route_path.split('/').filter(|segment| !segment.is_empty()) {
            if pattern.starts_with('<') && pattern.ends_with("..>") {
                return true;
            }
            let Some(segment) = ours.next() else {
                return false;
            };
            let dynamic = pattern.starts_with('<') && pattern.ends_with('>');
            if !dynamic && pattern != segment {
                return false;
            }
        }
        ours.next().is_none()
    }
}

/// Whether the path the router sees, `/` and the decoded segments joined by `/`, starts
/// with `prefix` (which starts with `/`), as `metrics.exclude_paths` asks.
pub(crate) fn starts_with(request: &Request<'_>, prefix: &str) -> bool {
    segments_start_with(request.uri().path().segments(), prefix)
}

/// [`starts_with`] on segments, without building the joined path.
fn segments_start_with<'a>(segments: impl IntoIterator<Item = &'a str>, prefix: &str) -> bool {
    let mut rest = prefix;
    let mut any_segment = false;
    for segment in segments {
        any_segment = true;
        if rest.is_empty() {
            return true;
        }
        let Some(after_slash) = rest.strip_prefix('/') else {
            return false;
        };
        if after_slash.len() <= segment.len() {
            return segment.starts_with(after_slash);
        }
        match after_slash.strip_prefix(segment) {
            Some(after_segment) => rest = after_segment,
            None => return false,
        }
    }
    // The root path is "/", the only routed path that ends in a slash.
    rest.is_empty() || (!any_segment && rest == "/")
}

#[cfg(test)]
mod tests {
    use super::{segments_start_with, RoutedPath};
    use proptest::prelude::*;

    #[test]
    fn route_patterns_that_match_a_path() {
        let path = RoutedPath::new("/api/items/all");
        for pattern in [
            "/api/items/all",
            "/api/items/<id>",
            "/api/<kind>/all",
            "/api/<rest..>",
            "/<everything..>",
            "/api/items/all/<rest..>",
        ] {
            assert!(path.is_matched_by(pattern), "{pattern}");
        }
        for pattern in ["/api/items", "/api/items/<id>/x", "/api/other/<id>", "/"] {
            assert!(!path.is_matched_by(pattern), "{pattern}");
        }
        assert!(RoutedPath::new("/api/items").is_matched_by("/api/items?<page>&<per_page>"));
    }

    proptest! {
        /// The same answer as building the path and asking `str::starts_with`.
        #[test]
        fn prefix_of_the_routed_path(
            segments in proptest::collection::vec("[a-c/]{1,3}", 0..4),
            prefix in "/[a-c/]{0,6}",
        ) {
            let path = format!("/{}", segments.join("/"));
            prop_assert_eq!(
                segments_start_with(segments.iter().map(String::as_str), &prefix),
                path.starts_with(&prefix),
                "path {:?}, prefix {:?}", path, prefix
            );
        }
    }
}
