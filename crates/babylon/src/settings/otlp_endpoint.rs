//! `tracing.otlp.endpoint`: where spans are sent, an OTLP/gRPC collector's address.

use std::fmt;

use serde::Deserialize;

/// A collector's OTLP/gRPC address: `http://host:port` or `https://host:port`, nothing
/// after the port. gRPC calls name their service in the path themselves, so a path here
/// would be ignored, and credentials in the URL would not be sent: both are refused
/// rather than dropped (send a token with `OTEL_EXPORTER_OTLP_HEADERS`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct OtlpEndpoint(String);

impl OtlpEndpoint {
    /// The address as the exporter takes it, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether spans travel over TLS.
    pub fn is_tls(&self) -> bool {
        self.0.starts_with("https://")
    }
}

impl TryFrom<String> for OtlpEndpoint {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        const EXAMPLE: &str = "e.g. \"http://127.0.0.1:4317\", the collector's OTLP/gRPC port";
        if text.trim().is_empty() {
            return Err(format!(
                "is empty: leave the key out to export no spans, or give the collector, {EXAMPLE}"
            ));
        }
        if !text.contains("://") {
            return Err(format!(
                "`{text}` has no scheme: write http:// (or https://) before the address; {EXAMPLE}"
            ));
        }
        let url = url::Url::parse(&text)
            .map_err(|error| format!("`{text}` is not a URL ({error}); {EXAMPLE}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "`{text}`: the scheme must be http or https (OTLP over gRPC); {EXAMPLE}"
            ));
        }
        if url.host().is_none() {
            return Err(format!("`{text}` names no host; {EXAMPLE}"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // The URL is not repeated: it holds a credential.
            return Err(format!(
                "credentials in the URL are not sent to the collector; give them in OTEL_EXPORTER_OTLP_HEADERS (e.g. \"authorization=Bearer …\") and write the endpoint without them, {EXAMPLE}"
            ));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "`{text}`: an OTLP/gRPC endpoint has nothing after the port (gRPC names its own path); {EXAMPLE}"
            ));
        }
        Ok(OtlpEndpoint(text.trim_end_matches('/').to_string()))
    }
}

impl fmt::Display for OtlpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for OtlpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OtlpEndpoint({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OtlpEndpoint, String> {
        OtlpEndpoint::try_from(text.to_string())
    }

    #[test]
    fn collector_addresses_are_taken_as_written() {
        for (text, written, tls) in [
            ("http://127.0.0.1:4317", "http://127.0.0.1:4317", false),
            ("http://collector:4317/", "http://collector:4317", false),
            ("https://otlp.example.com", "https://otlp.example.com", true),
            ("http://[::1]:4317", "http://[::1]:4317", false),
        ] {
            let endpoint = parse(text).unwrap();
            assert_eq!(endpoint.as_str(), written);
            assert_eq!(endpoint.is_tls(), tls, "{text}");
        }
    }

    #[test]
    fn anything_the_exporter_would_ignore_or_misread_is_refused_in_one_line() {
        for (text, says) in [
            ("127.0.0.1:4317", "no scheme"),
            ("collector:4317", "no scheme"),
            ("grpc://collector:4317", "scheme"),
            ("", "leave the key out"),
            (" ", "leave the key out"),
            ("http://", "not a URL"),
            ("http://collector:4317/v1/traces", "nothing after the port"),
            ("http://collector:4317?x=1", "nothing after the port"),
            ("http://collector:4317#x", "nothing after the port"),
            ("http://collector:99999", "not a URL"),
        ] {
            let problem = parse(text).unwrap_err();
            assert!(problem.contains(says), "{text}: {problem}");
            assert!(!problem.contains('\n'), "{problem}");
        }
        let secret = parse("https://user:s3cr3t@otlp.example.com").unwrap_err();
        assert!(secret.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{secret}");
        assert!(!secret.contains("s3cr3t"), "{secret}");
    }
}
