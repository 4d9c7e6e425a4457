//! `metrics.export.tls.*`: the export port's certificate, key and (for mutual TLS) the
//! CA its clients' certificates must chain to, read into a rustls server configuration.
//!
//! The files are read the same way at start-up (a mistake stops it, one line per file)
//! and whenever they change while the service runs (a mistake keeps the identity in
//! use): [`ExportTlsSettings::load`] is the one reader.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use x509_cert::der::Decode;

use super::files;

/// `metrics.export.tls`: serve the export port over HTTPS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ExportTlsSettings {
    /// PEM file of the server's certificate, followed by any intermediate certificates.
    pub cert_file: PathBuf,
    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM file of the certificate authorities that sign the scrapers' client
    /// certificates. Set: every client must present a certificate signed by one of them
    /// (mutual TLS). Unset: no client certificate is asked for.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// The oldest TLS version accepted: `"1.2"` (the default) or `"1.3"`.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// What the files held when the settings were validated.
    #[serde(skip)]
    pub(crate) identity: Option<TlsIdentity>,
}

/// `metrics.export.tls.min_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl<'de> Deserialize<'de> for TlsVersion {
    /// `"1.2"` or `"1.3"`; also the numbers 1.2 and 1.3, which is what an environment
    /// variable `BABYLON_METRICS__EXPORT__TLS__MIN_VERSION=1.3` reads as.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = TlsVersion;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"1.2\" or \"1.3\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<TlsVersion, E> {
                match text {
                    "1.2" => Ok(TlsVersion::Tls12),
                    "1.3" => Ok(TlsVersion::Tls13),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(text), &self)),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, number: f64) -> Result<TlsVersion, E> {
                if number == 1.2 {
                    Ok(TlsVersion::Tls12)
                } else if number == 1.3 {
                    Ok(TlsVersion::Tls13)
                } else {
                    Err(E::invalid_value(
                        serde::de::Unexpected::Float(number),
                        &self,
                    ))
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl TlsVersion {
    fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        const TLS12_AND_13: &[&SupportedProtocolVersion] =
            &[&rustls::version::TLS13, &rustls::version::TLS12];
        const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
        match self {
            TlsVersion::Tls12 => TLS12_AND_13,
            TlsVersion::Tls13 => TLS13,
        }
    }
}

/// A certificate and key ready to serve, as read from the files at one moment.
#[derive(Debug, Clone)]
pub(crate) struct TlsIdentity {
    /// What each new connection is accepted with.
    pub(crate) config: Arc<ServerConfig>,
    /// When the server certificate (the first of `cert_file`) stops being valid.
    pub(crate) not_after: SystemTime,
    /// The files as they were just before they were read.
    pub(crate) files: Fingerprint,
}

/// Why the files cannot serve: the key of the file at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub(crate) struct TlsFileError {
    /// `metrics.export.tls.cert_file`, `.key_file` or `.client_ca_file`.
    pub(crate) key: &'static str,
    pub(crate) message: String,
}

const CERT_KEY: &str = "metrics.export.tls.cert_file";
const KEY_KEY: &str = "metrics.export.tls.key_file";
const CLIENT_CA_KEY: &str = "metrics.export.tls.client_ca_file";

impl ExportTlsSettings {
    /// The files this identity is read from, for noticing that they changed.
    pub(crate) fn files(&self) -> impl Iterator<Item = &std::path::Path> {
        [
            Some(&self.cert_file),
            Some(&self.key_file),
            self.client_ca_file.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
    }

    /// Reads the files into a server configuration: every certificate parses, the key
    /// matches the first certificate, which is valid now, and the client CAs (if any)
    /// are certificates a verifier takes.
    pub(crate) fn load(&self) -> Result<TlsIdentity, TlsFileError> {
        let files = Fingerprint::of(self.files());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = read_certificates(CERT_KEY, &self.cert_file)?;
        let not_after = not_after(&chain[0]).map_err(|message| TlsFileError {
            key: CERT_KEY,
            message: format!("{}: {message}", self.cert_file.display()),
        })?;
        if not_after <= SystemTime::now() {
            return Err(TlsFileError {
                key: CERT_KEY,
                message: format!(
                    "{}: the certificate expired at {} (Unix time); renew it",
                    self.cert_file.display(),
                    unix_seconds(not_after)
                ),
            });
        }
        let key = read_key(&self.key_file)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(self.min_version.versions())
            .expect("ring supports TLS 1.2 and 1.3");
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|error| TlsFileError {
                key: KEY_KEY,
                message: match error {
                    rustls::Error::InconsistentKeys(_) => format!(
                        "{} is not the key of the certificate in {}",
                        self.key_file.display(),
                        self.cert_file.display()
                    ),
                    other => format!("{}: {other}", self.key_file.display()),
                },
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsIdentity {
            config: Arc::new(config),
            not_after,
            files,
        })
    }
}

/// Seconds since the Unix epoch, as the expiry gauge shows them.
pub(crate) fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

fn read_pem(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, TlsFileError> {
    files::read_bounded(path, files::DOCUMENT_LIMIT)
        .map_err(|message| TlsFileError { key, message })
}

/// Every certificate of a PEM file, in order; at least one.
fn read_certificates(
    key: &'static str,
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = read_pem(key, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsFileError {
            key,
            message: format!("{}: not a PEM certificate file: {error}", path.display()),
        })?;
    if certificates.is_empty() {
        return Err(TlsFileError {
            key,
            message: format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        });
    }
    Ok(certificates)
}

fn read_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let pem = read_pem(KEY_KEY, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| TlsFileError {
        key: KEY_KEY,
        message: match error {
            rustls_pki_types::pem::Error::NoItemsFound => format!(
                "{} holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
                path.display()
            ),
            other => format!("{}: not a PEM private key: {other}", path.display()),
        },
    })
}

fn client_verifier(
    path: &std::path::Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(CLIENT_CA_KEY, path)? {
        roots.add(certificate).map_err(|error| TlsFileError {
            key: CLIENT_CA_KEY,
            message: format!("{}: not a CA certificate: {error}", path.display()),
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|error| TlsFileError {
            key: CLIENT_CA_KEY,
            message: format!("{}: {error}", path.display()),
        })
}

/// When `certificate` stops being valid.
fn not_after(certificate: &CertificateDer<'_>) -> Result<SystemTime, String> {
    let parsed = x509_cert::Certificate::from_der(certificate)
        .map_err(|error| format!("the first certificate does not parse as X.509: {error}"))?;
    Ok(UNIX_EPOCH + parsed.tbs_certificate.validity.not_after.to_unix_duration())
}

/// What `stat` says of each file: a replaced, rewritten or re-linked file changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint(Vec<Option<FileStamp>>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64),
    #[cfg(unix)]
    changed: (i64, i64),
}

impl Fingerprint {
    pub(crate) fn of<'a>(paths: impl Iterator<Item = &'a Path>) -> Fingerprint {
        Fingerprint(
            paths
                .map(|path| {
                    let metadata = std::fs::metadata(path).ok()?;
                    #[cfg(unix)]
                    use std::os::unix::fs::MetadataExt;
                    Some(FileStamp {
                        len: metadata.len(),
                        modified: metadata.modified().ok(),
                        #[cfg(unix)]
                        inode: (metadata.dev(), metadata.ino()),
                        #[cfg(unix)]
                        changed: (metadata.ctime(), metadata.ctime_nsec()),
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    struct Written {
        dir: tempfile::TempDir,
        settings: ExportTlsSettings,
    }

    fn ca() -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    fn server(
        ca: &CertifiedIssuer<'static, KeyPair>,
        not_after: (i32, u8, u8),
    ) -> (String, String) {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Settings naming `cert`, `key` and, when given, `client_ca`, written to files.
    fn written(cert: &str, key: &str, client_ca: Option<&str>) -> Written {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let settings = ExportTlsSettings {
            cert_file: path("server.crt", cert),
            key_file: path("server.key", key),
            client_ca_file: client_ca.map(|text| path("clients.crt", text)),
            min_version: TlsVersion::default(),
            identity: None,
        };
        Written { dir, settings }
    }

    #[test]
    fn a_matching_pair_loads_with_its_expiry() {
        let ca = ca();
        let (cert, key) = server(&ca, (2999, 1, 1));
        let written = written(&cert, &key, Some(&ca.pem()));
        let identity = written.settings.load().unwrap();
        assert_eq!(
            unix_seconds(identity.not_after),
            32_472_144_000,
            "2999-01-01T00:00:00Z"
        );
        assert_eq!(identity.config.alpn_protocols, [b"http/1.1".to_vec()]);
        assert_eq!(identity.files, Fingerprint::of(written.settings.files()));
        assert_eq!(written.settings.files().count(), 3);
        drop(written.dir);
    }

    #[test]
    fn each_unusable_file_is_named_with_what_is_wrong() {
        let ca = ca();
        let (cert, key) = server(&ca, (2999, 1, 1));
        let (_, other_key) = server(&ca, (2999, 1, 1));
        let (expired, expired_key) = server(&ca, (2021, 1, 1));
        let cases: [(Written, &str, &str); 8] = [
            (
                written(&cert, &other_key, None),
                KEY_KEY,
                "is not the key of the certificate",
            ),
            (
                written(&key, &key, None),
                CERT_KEY,
                "holds no PEM certificate",
            ),
            (
                written("", &key, None),
                CERT_KEY,
                "holds no PEM certificate",
            ),
            (
                written(
                    "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
                    &key,
                    None,
                ),
                CERT_KEY,
                "not a PEM certificate file",
            ),
            (
                written(&cert, &cert, None),
                KEY_KEY,
                "holds no PEM private key",
            ),
            (
                written(&expired, &expired_key, None),
                CERT_KEY,
                "expired at 1609459200",
            ),
            (
                written(&cert, &key, Some("garbage")),
                CLIENT_CA_KEY,
                "holds no PEM certificate",
            ),
            (
                written(&cert, &key, Some(&key)),
                CLIENT_CA_KEY,
                "holds no PEM certificate",
            ),
        ];
        for (written, key, message) in cases {
            let error = written.settings.load().unwrap_err();
            assert_eq!(error.key, key, "{error}");
            assert!(error.message.contains(message), "{error}");
            assert!(!error.message.contains('\n'), "{error}");
        }
        let mut missing = written(&cert, &key, None);
        missing.settings.key_file = PathBuf::from("/nonexistent/server.key");
        let error = missing.settings.load().unwrap_err();
        assert_eq!(error.key, KEY_KEY);
        assert!(
            error
                .message
                .contains("cannot read /nonexistent/server.key"),
            "{error}"
        );
    }

    #[test]
    fn min_version_takes_1_2_and_1_3_as_text_or_number() {
        let parse = |value: serde_json::Value| serde_json::from_value::<TlsVersion>(value);
        assert_eq!(parse("1.2".into()).unwrap(), TlsVersion::Tls12);
        assert_eq!(parse("1.3".into()).unwrap(), TlsVersion::Tls13);
        assert_eq!(parse(1.3.into()).unwrap(), TlsVersion::Tls13);
        assert_eq!(parse(1.2.into()).unwrap(), TlsVersion::Tls12);
        for wrong in [
            serde_json::json!("1.1"),
            serde_json::json!(1.0),
            serde_json::json!("TLS13"),
        ] {
            let error = parse(wrong.clone()).unwrap_err().to_string();
            assert!(error.contains("\"1.2\" or \"1.3\""), "{wrong}: {error}");
        }
    }

    #[test]
    fn a_rewritten_or_replaced_file_changes_the_fingerprint() {
        let ca = ca();
        let (cert, key) = server(&ca, (2999, 1, 1));
        let written = written(&cert, &key, None);
        let before = Fingerprint::of(written.settings.files());
        assert_eq!(before, Fingerprint::of(written.settings.files()));
        let fresh = written.dir.path().join("fresh");
        std::fs::write(&fresh, &key).unwrap();
        std::fs::rename(&fresh, &written.settings.key_file).unwrap();
        let replaced = Fingerprint::of(written.settings.files());
        assert_ne!(before, replaced, "same contents, new inode");
        std::fs::remove_file(&written.settings.cert_file).unwrap();
        assert_ne!(replaced, Fingerprint::of(written.settings.files()));
    }
}
