//! HTTPS on the export port (`metrics.export.tls`): each connection is accepted with the
//! identity of the moment, a handshake that fails is counted by reason, and new
//! certificate files are picked up while the listener keeps serving.
//!
//! The files are polled (one `stat` per file per second) rather than reloaded on a
//! signal: certificate tools (ACME clients, cert-manager, Vault agents) replace files
//! without knowing which process reads them. A change is read once the files have stayed
//! the same for one poll, so a certificate and a key written one after the other are read
//! together; a replacement that does not load keeps the identity in use, and is logged
//! and counted once. Connections already open keep the identity they began with.

use std::io;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rocket::tokio::net::TcpStream;
use rustls::{CertificateError, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::metrics::{counter_vec, register};
use crate::prometheus::{IntCounterVec, IntGauge, Registry};
use crate::settings::{unix_seconds, ExportTlsSettings, Fingerprint, TlsIdentity};

/// A client gets this long to complete its handshake (as long as it gets to send its
/// request headers).
const HANDSHAKE_TIMEOUT: Duration = super::listener::HEADER_READ_TIMEOUT;
/// How often the certificate files are looked at.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Why a TLS handshake on the export port failed: the `reason` label of
/// `babylon_export_tls_handshake_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeFailure {
    /// Mutual TLS is on and the client presented no certificate.
    NoClientCertificate,
    /// The client's certificate is not signed by `client_ca_file`.
    UnknownCa,
    /// The client's certificate has expired.
    Expired,
    /// The client's certificate is unusable otherwise (not yet valid, wrong usage, …).
    BadCertificate,
    /// The client spoke plain HTTP to the TLS port; it is answered with a 400.
    Plaintext,
    /// Not TLS, or no version or cipher suite in common.
    Protocol,
    /// The client ended the handshake with an alert: most often it does not trust the
    /// server's certificate.
    RefusedByClient,
    /// The client closed the connection during the handshake.
    Aborted,
    /// The handshake took longer than the header read timeout.
    Timeout,
}

impl HandshakeFailure {
    /// Every reason, so each series exists from the start.
    pub(crate) const ALL: [HandshakeFailure; 9] = [
        HandshakeFailure::NoClientCertificate,
        HandshakeFailure::UnknownCa,
        HandshakeFailure::Expired,
        HandshakeFailure::BadCertificate,
        HandshakeFailure::Plaintext,
        HandshakeFailure::Protocol,
        HandshakeFailure::RefusedByClient,
        HandshakeFailure::Aborted,
        HandshakeFailure::Timeout,
    ];

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            HandshakeFailure::NoClientCertificate => "no_client_certificate",
            HandshakeFailure::UnknownCa => "unknown_ca",
            HandshakeFailure::Expired => "expired",
            HandshakeFailure::BadCertificate => "bad_certificate",
            HandshakeFailure::Plaintext => "plaintext",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::RefusedByClient => "refused_by_client",
            HandshakeFailure::Aborted => "aborted",
            HandshakeFailure::Timeout => "timeout",
        }
    }

    /// The reason of a failed `accept`: rustls' error where there is one, else the
    /// connection broke.
    fn of(error: &io::Error) -> HandshakeFailure {
        let rustls_error = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match rustls_error {
            None => HandshakeFailure::Aborted,
            Some(rustls::Error::NoCertificatesPresented) => HandshakeFailure::NoClientCertificate,
            Some(rustls::Error::InvalidCertificate(problem)) => match problem {
                CertificateError::UnknownIssuer => HandshakeFailure::UnknownCa,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    HandshakeFailure::Expired
                }
                _ => HandshakeFailure::BadCertificate,
            },
            Some(rustls::Error::AlertReceived(_)) => HandshakeFailure::RefusedByClient,
            Some(_) => HandshakeFailure::Protocol,
        }
    }
}

/// The families of the export port's TLS, registered only when it serves TLS.
#[derive(Clone)]
struct TlsFamilies {
    handshake_errors: IntCounterVec,
    cert_expiry: IntGauge,
    reloads: IntCounterVec,
}

impl TlsFamilies {
    fn register(registry: &Registry) -> crate::prometheus::Result<TlsFamilies> {
        let handshake_errors = counter_vec(
            registry,
            "babylon_export_tls_handshake_errors_total",
            "TLS handshakes on the export port that failed, by reason.",
            &["reason"],
        )?;
        for reason in HandshakeFailure::ALL {
            handshake_errors.with_label_values(&[reason.label()]);
        }
        let reloads = counter_vec(
            registry,
            "babylon_export_tls_cert_reloads_total",
            "Changed certificate files of the export port read while serving: loaded, or refused (the identity in use stays).",
            &["result"],
        )?;
        for result in ["loaded", "refused"] {
            reloads.with_label_values(&[result]);
        }
        let cert_expiry = register(
            registry,
            IntGauge::new(
                "babylon_export_tls_cert_expiry_timestamp_seconds",
                "When the export port's certificate expires, in seconds since the Unix epoch.",
            )?,
        )?;
        Ok(TlsFamilies {
            handshake_errors,
            cert_expiry,
            reloads,
        })
    }
}

/// What a connection to the TLS port turned out to be.
pub(crate) enum Accepted {
    /// A completed handshake.
    Tls(Box<TlsStream<TcpStream>>),
    /// Plain HTTP: answer it with a 400 that says to use HTTPS.
    Plaintext(TcpStream),
    /// Nothing to serve (counted, unless the client sent nothing at all).
    Nothing,
}

/// The export port's TLS: the identity in use, the files it comes from, and its
/// families.
pub(crate) struct ExportTls {
    settings: ExportTlsSettings,
    current: RwLock<Arc<ServerConfig>>,
    /// The files as they were when the identity in use at start-up was read.
    files_at_start: Fingerprint,
    families: TlsFamilies,
}

impl ExportTls {
    /// Registers the TLS families and starts from the identity read when the settings
    /// were validated.
    pub(crate) fn new(
        settings: &ExportTlsSettings,
        registry: &Registry,
    ) -> crate::prometheus::Result<ExportTls> {
        let identity = settings
            .identity
            .clone()
            .expect("validated settings hold the identity");
        let families = TlsFamilies::register(registry)?;
        families
            .cert_expiry
            .set(expiry_gauge_value(identity.not_after));
        Ok(ExportTls {
            settings: settings.clone(),
            current: RwLock::new(identity.config),
            files_at_start: identity.files,
            families,
        })
    }

    /// Accepts one connection: a TLS handshake completed within the timeout (its first
    /// byte included), or a refusal counted by reason.
    pub(crate) async fn accept(&self, stream: TcpStream) -> Accepted {
        rocket::tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(stream))
            .await
            .unwrap_or_else(|_| self.failed(HandshakeFailure::Timeout))
    }

    async fn handshake(&self, stream: TcpStream) -> Accepted {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            // Closed before sending anything (a port check): not a handshake.
            Ok(0) | Err(_) => return Accepted::Nothing,
            Ok(_) => {}
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            return match first[0].is_ascii_uppercase() {
                // An HTTP method: GET, HEAD, …
                true => {
                    self.count(HandshakeFailure::Plaintext);
                    Accepted::Plaintext(stream)
                }
                false => self.failed(HandshakeFailure::Protocol),
            };
        }
        match TlsAcceptor::from(self.config()).accept(stream).await {
            Err(error) => self.failed(HandshakeFailure::of(&error)),
            Ok(stream) => Accepted::Tls(Box::new(stream)),
        }
    }

    fn count(&self, failure: HandshakeFailure) {
        self.families
            .handshake_errors
            .with_label_values(&[failure.label()])
            .inc();
    }

    fn failed(&self, failure: HandshakeFailure) -> Accepted {
        self.count(failure);
        Accepted::Nothing
    }

    fn config(&self) -> Arc<ServerConfig> {
        self.current.read().expect("not poisoned").clone()
    }

    /// Watches the files until `shutdown`, swapping in each replacement that loads.
    pub(crate) async fn watch(self: Arc<Self>, shutdown: rocket::Shutdown) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut in_use = self.files_at_start.clone();
        let mut pending: Option<Fingerprint> = None;
        loop {
            rocket::tokio::select! {
                _ = rocket::tokio::time::sleep(POLL_INTERVAL) => {}
                _ = &mut shutdown => return,
            }
            let now = Fingerprint::of(self.settings.files());
            if now == in_use {
                pending = None;
                continue;
            }
            // Changed: read it once it has stayed the same for one poll.
            if pending.as_ref() != Some(&now) {
                pending = Some(now);
                continue;
            }
            pending = None;
            in_use = now;
            let settings = self.settings.clone();
            let loaded = rocket::tokio::task::spawn_blocking(move || settings.load())
                .await
                .expect("loading does not panic");
            self.swap_in(loaded);
        }
    }

    fn swap_in(&self, loaded: Result<TlsIdentity, crate::settings::TlsFileError>) {
        match loaded {
            Ok(identity) => {
                *self.current.write().expect("not poisoned") = identity.config;
                self.families
                    .cert_expiry
                    .set(expiry_gauge_value(identity.not_after));
                self.families.reloads.with_label_values(&["loaded"]).inc();
                rocket::info!("metrics export: new TLS certificate files loaded");
            }
            Err(error) => {
                self.families.reloads.with_label_values(&["refused"]).inc();
                rocket::error!(
                    "metrics export: the changed TLS files are not used, the certificate in use stays: {error}"
                );
            }
        }
    }
}

fn expiry_gauge_value(not_after: SystemTime) -> i64 {
    i64::try_from(unix_seconds(not_after)).unwrap_or(i64::MAX)
}
