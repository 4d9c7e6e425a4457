//! Certificates the TLS tests make (rcgen), written where the settings name them, and a
//! TLS client (rustls) that reports which certificate the server presented.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
#[derive(Clone)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate as a TLS peer presents it.
    pub der: Vec<u8>,
}

/// The files one side of a connection reads: a certificate, its key and the CA it trusts.
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn sign(&self, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A server certificate for 127.0.0.1, ::1 and localhost, valid for `days` from now.
    pub fn server(&self, days: i64) -> Pair {
        let mut params = leaf(
            &["localhost", "127.0.0.1", "::1"],
            "babylon",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let now = rocket::time::OffsetDateTime::now_utc();
        params.not_before = now - rocket::time::Duration::days(1);
        params.not_after = now + rocket::time::Duration::days(days);
        self.sign(params)
    }

    /// A server certificate for the given host names and addresses.
    pub fn server_for(&self, names: &[&str]) -> Pair {
        self.sign(leaf(names, names[0], ExtendedKeyUsagePurpose::ServerAuth))
    }

    /// A client certificate named `name`, valid now.
    pub fn client(&self, name: &str) -> Pair {
        self.sign(leaf(&[], name, ExtendedKeyUsagePurpose::ClientAuth))
    }

    /// A client certificate that expired in 2021.
    pub fn expired_client(&self, name: &str) -> Pair {
        let mut params = leaf(&[], name, ExtendedKeyUsagePurpose::ClientAuth);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.sign(params)
    }
}

/// The parameters of an end-entity certificate: its subject alternative names, common
/// name and one extended key usage.
fn leaf(names: &[&str], common_name: &str, usage: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![usage];
    params
}

impl Pair {
    /// Writes the certificate and key as `<name>.crt` and `<name>.key` in `dir`, and the
    /// CA `ca` as `<name>-ca.crt`.
    pub fn write(&self, dir: &Path, name: &str, ca: &Ca) -> Files {
        let files = Files {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join(format!("{name}-ca.crt")),
        };
        std::fs::write(&files.cert, &self.cert_pem).unwrap();
        std::fs::write(&files.key, &self.key_pem).unwrap();
        std::fs::write(&files.ca, ca.pem()).unwrap();
        files
    }

    /// Replaces the files in place, each by a rename, as certificate tools do.
    pub fn replace(&self, files: &Files) {
        for (path, text) in [(&files.cert, &self.cert_pem), (&files.key, &self.key_pem)] {
            let fresh = path.with_extension("new");
            std::fs::write(&fresh, text).unwrap();
            std::fs::rename(&fresh, path).unwrap();
        }
    }
}

/// Which TLS versions a client offers.
#[derive(Clone, Copy)]
pub enum Versions {
    Both,
    Tls12Only,
}

/// A client that trusts `ca` and presents `identity`, if given.
pub fn client_config(
    ca: &Ca,
    identity: Option<&Pair>,
    versions: Versions,
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.issuer.der().to_vec()))
        .unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = match versions {
        Versions::Both => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Versions::Tls12Only => &[&rustls::version::TLS12],
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(pair) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(pair.der.clone())],
                PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    Arc::new(config)
}

/// An HTTPS response, and the certificate the server presented.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
    pub server_cert: Vec<u8>,
}

/// `GET path` over a new TLS connection to 127.0.0.1:`port`, with `headers`
/// (`Name: value` lines); `Err` with rustls' or the socket's error.
pub fn get(
    port: u16,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[&str],
) -> Result<Response, String> {
    get_at(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        config,
        path,
        headers,
    )
}

/// [`get`] to any address, whose IP the server's certificate must name.
pub fn get_at(
    address: std::net::SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[&str],
) -> Result<Response, String> {
    let tcp =
        TcpStream::connect_timeout(&address, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = ServerName::from(address.ip());
    let connection =
        rustls::ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    tls.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // The server closed without close_notify after a complete response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let server_cert = tls
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.to_vec())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok(Response {
        status,
        body,
        server_cert,
    })
}
