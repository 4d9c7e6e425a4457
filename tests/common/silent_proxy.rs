//! A TCP proxy that can go silent, as a host does when it dies or its link drops: no FIN,
//! no RST, no answer. Connections it carries while silent never speak again, even after it
//! heals (their state is gone, as it would be on a replaced host); connections made after
//! it heals are forwarded. The client side of a silent connection sees nothing: no error,
//! just no reply, which is what makes such a failure hard to notice.
//!
//! Every thread polls its stop flag at least every 50 ms, so dropping the proxy ends them.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

pub struct SilentProxy {
    /// The proxy's own address on loopback, chosen by the kernel.
    pub address: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    upstream: SocketAddr,
    silent: AtomicBool,
    stop: AtomicBool,
    /// Every socket the proxy holds, shut down when it is dropped.
    sockets: Mutex<Vec<TcpStream>>,
}

impl SilentProxy {
    /// Forwards connections to `upstream` until told otherwise.
    pub fn start(upstream: SocketAddr) -> SilentProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            silent: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sockets: Mutex::new(Vec::new()),
        });
        let accepting = shared.clone();
        std::thread::spawn(move || {
            while !accepting.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => accepting.carry(client),
                    Err(error) if error.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => std::thread::sleep(POLL),
                }
            }
        });
        SilentProxy { address, shared }
    }

    /// From now on nothing is forwarded, on any connection; new ones are accepted and
    /// never answered.
    pub fn go_silent(&self) {
        self.shared.silent.store(true, Ordering::SeqCst);
    }

    /// New connections are forwarded again; those carried while silent stay dead.
    pub fn heal(&self) {
        self.shared.silent.store(false, Ordering::SeqCst);
    }

    /// `redis://` URL of the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.address)
    }
}

impl Shared {
    fn carry(self: &Arc<Self>, client: TcpStream) {
        let _ = client.set_nonblocking(false);
        let _ = client.set_read_timeout(Some(POLL));
        self.keep(&client);
        let dead = Arc::new(AtomicBool::new(self.silent.load(Ordering::SeqCst)));
        let upstream = match dead.load(Ordering::SeqCst) {
            true => None,
            false => TcpStream::connect_timeout(&self.upstream, Duration::from_secs(5)).ok(),
        };
        let Some(upstream) = upstream else {
            // Accepted and never answered.
            self.pump(client, None, dead);
            return;
        };
        let _ = upstream.set_read_timeout(Some(POLL));
        self.keep(&upstream);
        let (client_in, upstream_in) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
        self.pump(client_in, Some(upstream), dead.clone());
        self.pump(upstream_in, Some(client), dead);
    }

    fn keep(&self, socket: &TcpStream) {
        if let Ok(clone) = socket.try_clone() {
            self.sockets.lock().unwrap().push(clone);
        }
    }

    /// Copies `from` to `to` until either end closes; once the proxy has been silent, the
    /// connection is dead: what arrives is read and dropped, forever.
    fn pump(
        self: &Arc<Self>,
        mut from: TcpStream,
        mut to: Option<TcpStream>,
        dead: Arc<AtomicBool>,
    ) {
        let shared = self.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 16 * 1024];
            while !shared.stop.load(Ordering::Relaxed) {
                if shared.silent.load(Ordering::SeqCst) {
                    dead.store(true, Ordering::SeqCst);
                }
                let read = match from.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(read) => read,
                    Err(error)
                        if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                    {
                        continue
                    }
                    Err(_) => break,
                };
                if shared.silent.load(Ordering::SeqCst) {
                    dead.store(true, Ordering::SeqCst);
                }
                if dead.load(Ordering::SeqCst) {
                    continue;
                }
                if let Some(to) = to.as_mut() {
                    if to.write_all(&buffer[..read]).is_err() {
                        break;
                    }
                }
            }
            // A live connection that ended on one side ends on the other; a dead one is
            // never closed by the proxy, as a silent host never closes anything.
            if !dead.load(Ordering::SeqCst) {
                if let Some(to) = to {
                    let _ = to.shutdown(Shutdown::Both);
                }
            }
        });
    }
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for socket in self.shared.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}
