//! The export listener: each process binds the first free port of
//! `metrics.export.port_range` (as django-prometheus does) and serves the metrics path
//! there, so Prometheus can scrape every worker process on its own port.
//!
//! Binding happens before Rocket launches, so "every port is taken" stops start-up with a
//! message naming the range; serving starts at lift-off and stops with Rocket's shutdown.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT, ALLOW, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, VARY};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::Status;
use rocket::{Orbit, Rocket};
use socket2::{Domain, Socket, Type};

use super::file_sd::TargetFile;
use super::tls::{Accepted, ExportTls};
use super::MetricsAccess;
use crate::metrics::{Format, Metrics};
use crate::observe::ApiFamilies;
use crate::request::JsonError;
use crate::settings::{canonical_ip, ExportAddress, ExportSettings, PortRange, WhenPortsTaken};

/// A slow client gets this long to send its request headers.
pub(super) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("every port of metrics.export.port_range ({range}) on {address} is taken; free one, widen the range, or set metrics.export.when_ports_taken = \"run_without_export\"")]
    AllPortsTaken {
        range: PortRange,
        address: ExportAddress,
    },
    #[error("cannot bind the metrics export listener on {address}: {source} (setting metrics.export.address / port_range)")]
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
}

/// A bound, not yet serving, export socket.
#[derive(Debug)]
pub(crate) struct ExportListener {
    listener: TcpListener,
    port: u16,
}

impl ExportListener {
    /// Binds the first free port of the configured range. `Ok(None)` when every port is
    /// taken and the settings say to run without export.
    pub(crate) fn bind(settings: &ExportSettings) -> Result<Option<ExportListener>, ExportError> {
        let range = settings.ports();
        for port in range.ports() {
            match bind_port(settings.address, port) {
                Ok(listener) => return Ok(Some(ExportListener { listener, port })),
                Err(error) if error.kind() == io::ErrorKind::AddrInUse => continue,
                Err(source) => {
                    return Err(ExportError::Bind {
                        address: socket_addr(settings.address, port),
                        source,
                    })
                }
            }
        }
        match settings.when_ports_taken {
            WhenPortsTaken::Fail => Err(ExportError::AllPortsTaken {
                range,
                address: settings.address,
            }),
            WhenPortsTaken::RunWithoutExport => {
                rocket::warn!("metrics export disabled: every port of {range} is taken");
                Ok(None)
            }
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The bound address (`[::]:8001` for every interface).
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

fn socket_addr(address: ExportAddress, port: u16) -> SocketAddr {
    match address {
        ExportAddress::EveryInterface => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        ExportAddress::Ip(ip) => SocketAddr::new(ip, port),
    }
}

/// Binds one port. "Every interface" is one dual-stack IPv6 socket (IPv4 peers appear as
/// `::ffff:a.b.c.d`), falling back to IPv4 only where the kernel has no IPv6.
fn bind_port(address: ExportAddress, port: u16) -> io::Result<TcpListener> {
    let addr = socket_addr(address, port);
    match listen(addr, address == ExportAddress::EveryInterface) {
        Err(error)
            if address == ExportAddress::EveryInterface
                && error.kind() != io::ErrorKind::AddrInUse =>
        {
            listen(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                false,
            )
        }
        result => result,
    }
}

fn listen(addr: SocketAddr, dual_stack: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    // A worker restarted right after serving scrapes finds its port held by connections
    // in TIME_WAIT; without SO_REUSEADDR it would move to the next port of the range (or
    // fail with a one-port range). A port another process listens on stays refused.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// What the export listener needs to answer a scrape.
pub(crate) struct Scrapes {
    /// What is served.
    pub(crate) metrics: Metrics,
    /// Where refused scrapes are counted (`api_requests_blocked_total`).
    pub(crate) api: ApiFamilies,
    /// The one path served.
    pub(crate) path: String,
    /// Who may read. The client is the socket's peer: the export port sits behind no
    /// proxy, so no header may name another client (`blocking.trusted_proxies` is for
    /// the main port).
    pub(crate) access: MetricsAccess,
}

/// Serves a bound [`ExportListener`] from lift-off until Rocket shuts down.
pub(crate) struct ExportFairing {
    listener: std::sync::Mutex<Option<ExportListener>>,
    scrapes: Arc<Scrapes>,
    /// Set: the port speaks only HTTPS.
    tls: Option<Arc<ExportTls>>,
    /// Removed at shutdown (or when the fairing is dropped after a failed launch).
    target_file: std::sync::Mutex<Option<TargetFile>>,
}

impl ExportFairing {
    pub(crate) fn new(
        listener: ExportListener,
        target_file: Option<TargetFile>,
        scrapes: Scrapes,
        tls: Option<Arc<ExportTls>>,
    ) -> Self {
        ExportFairing {
            listener: std::sync::Mutex::new(Some(listener)),
            target_file: std::sync::Mutex::new(target_file),
            scrapes: Arc::new(scrapes),
            tls,
        }
    }
}

#[rocket::async_trait]
impl Fairing for ExportFairing {
    fn info(&self) -> Info {
        Info {
            name: "babylon metrics export listener",
            kind: Kind::Liftoff | Kind::Shutdown,
        }
    }

    async fn on_shutdown(&self, _: &Rocket<Orbit>) {
        // Dropping the target file removes it: Prometheus stops scraping this worker.
        drop(self.target_file.lock().expect("not poisoned").take());
    }

    async fn on_liftoff(&self, rocket: &Rocket<Orbit>) {
        let Some(bound) = self.listener.lock().expect("not poisoned").take() else {
            return;
        };
        let listener = match rocket::tokio::net::TcpListener::from_std(bound.listener) {
            Ok(listener) => listener,
            Err(error) => {
                rocket::error!("metrics export listener failed: {error}");
                return;
            }
        };
        let scrapes = self.scrapes.clone();
        let tls = self.tls.clone();
        if let Some(tls) = &tls {
            rocket::tokio::spawn(tls.clone().watch(rocket.shutdown()));
        }
        let mut shutdown = rocket.shutdown();
        rocket::tokio::spawn(async move {
            loop {
                rocket::tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) => serve_connection(stream, peer, scrapes.clone(), tls.clone()),
                        // Out of file descriptors and the like: wait instead of spinning.
                        Err(_) => rocket::tokio::time::sleep(Duration::from_millis(50)).await,
                    },
                    _ = &mut shutdown => break,
                }
            }
        });
    }
}

fn serve_connection(
    stream: rocket::tokio::net::TcpStream,
    peer: SocketAddr,
    scrapes: Arc<Scrapes>,
    tls: Option<Arc<ExportTls>>,
) {
    // A scrape's answer leaves in a few writes (over TLS: the session tickets, then the
    // response's records); with Nagle's algorithm each waits for the ACK of the one
    // before, which the client delays by up to 40 ms.
    let _ = stream.set_nodelay(true);
    rocket::tokio::spawn(async move {
        let service = service_fn(move |request| {
            let scrapes = scrapes.clone();
            async move { Ok::<_, Infallible>(scrapes.answer(&request, peer).await) }
        });
        let Some(tls) = tls else {
            return serve_http(TokioIo::new(stream), service).await;
        };
        match tls.accept(stream).await {
            Accepted::Tls(stream) => serve_http(TokioIo::new(stream), service).await,
            Accepted::Plaintext(stream) => {
                let refusal = service_fn(|_| async {
                    Ok::<_, Infallible>(json_error(JsonError::new(
                        Status::BadRequest,
                        "https_required",
                        "this port speaks only HTTPS (metrics.export.tls is set): scrape it with https://",
                    )))
                });
                serve_http(TokioIo::new(stream), refusal).await
            }
            Accepted::Nothing => {}
        }
    });
}

/// Serves HTTP/1 on one connection until the client closes it or stalls.
async fn serve_http<I, S>(io: I, service: S)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Full<Bytes>>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(io, service)
        .await;
}

impl Scrapes {
    async fn answer(&self, request: &Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        if request.uri().path() != self.path {
            return json_error(JsonError::new(
                Status::NotFound,
                "not_found",
                format!("this port serves only {}", self.path),
            ));
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = json_error(JsonError::new(
                Status::MethodNotAllowed,
                "method_not_allowed",
                "use GET or HEAD",
            ));
            // RFC 9110 §15.5.6: a 405 names the methods the resource supports.
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let client = canonical_ip(peer.ip());
        let authorization = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Err(reason) = self.access.check(Some(client), authorization).await {
            self.api.blocked(reason);
            return json_error(JsonError::new(
                reason.status(),
                reason.label(),
                reason.message(),
            ));
        }
        let accept = request.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
        let format = Format::negotiate(accept, request.uri().query());
        let body = if request.method() == Method::HEAD {
            Vec::new()
        } else {
            self.metrics.render_as(format)
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        headers.insert(VARY, HeaderValue::from_static("Accept"));
        response
    }
}

fn json_error(error: JsonError) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(error.body())));
    *response.status_mut() =
        StatusCode::from_u16(error.status.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(secs) = error.retry_after_secs {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}
