//! Redis for the tests: the shared server on 127.0.0.1:6379, key prefixes that no other
//! test or run uses (deleted afterwards), and private servers that a test may kill.

/// The shared Redis the tests use (never stopped or reconfigured by them).
pub const REDIS: &str = "redis://127.0.0.1:6379";

/// Whether the shared Redis answers; under CI=true it must.
pub fn redis_available() -> bool {
    let up = std::net::TcpStream::connect("127.0.0.1:6379").is_ok();
    if !up {
        super::skip::skip(
            "no Redis on 127.0.0.1:6379 (Debian: apt-get install -y redis-server); `bash .ci/run` starts one",
        );
    }
    up
}

/// A key prefix no other test or run uses.
pub fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("babylon-test-{test}-{}-{nanos}", std::process::id())
}

/// Deletes every key under `prefix` when dropped.
pub struct Keys(pub String);

impl Drop for Keys {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(REDIS) else {
            return;
        };
        let Ok(mut connection) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.0))
            .query(&mut connection)
            .unwrap_or_default();
        for key in keys {
            let _: Result<(), _> = redis::cmd("DEL").arg(key).query(&mut connection);
        }
    }
}

/// A private `redis-server` on a port of its own, in a directory of its own, stopped
/// when dropped. Never the shared server: this one is killed on purpose.
pub struct PrivateRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    /// With TLS only (no plain port): the CA that signed its certificate.
    tls: Option<std::path::PathBuf>,
}

impl PrivateRedis {
    pub fn start(port: u16) -> PrivateRedis {
        Self::start_with(port, false)
    }

    /// A server that speaks TLS only, with a certificate for 127.0.0.1 and the CA that
    /// signed it, made by `openssl` (the caller checks that it is installed).
    pub fn start_tls(port: u16) -> PrivateRedis {
        Self::start_with(port, true)
    }

    fn start_with(port: u16, tls: bool) -> PrivateRedis {
        let dir = tempfile::tempdir().unwrap();
        let tls = tls.then(|| {
            // A CA, and a certificate for 127.0.0.1 that it signs: a self-signed one is
            // a CA used as an end entity, which rustls refuses.
            let openssl = |args: &[&str]| {
                let program = super::tool("openssl").expect("openssl, checked by the caller");
                let output = std::process::Command::new(program)
                    .args(args)
                    .current_dir(dir.path())
                    .output()
                    .unwrap();
                assert!(
                    output.status.success(),
                    "openssl {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr)
                );
            };
            let key = [
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ];
            openssl(
                &[
                    &["req", "-x509"][..],
                    &key,
                    &["-days", "2", "-subj", "/CN=babylon test CA"],
                    &["-keyout", "ca-key.pem", "-out", "ca.pem"],
                ]
                .concat(),
            );
            openssl(
                &[
                    &["req"][..],
                    &key,
                    &["-subj", "/CN=127.0.0.1", "-keyout", "key.pem"],
                    &["-out", "request.pem"],
                ]
                .concat(),
            );
            std::fs::write(
                dir.path().join("extensions.cnf"),
                "basicConstraints = critical, CA:FALSE\nsubjectAltName = IP:127.0.0.1\n",
            )
            .unwrap();
            openssl(&[
                "x509",
                "-req",
                "-in",
                "request.pem",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "extensions.cnf",
                "-out",
                "certificate.pem",
            ]);
            dir.path().join("ca.pem")
        });
        let mut redis = PrivateRedis {
            port,
            dir,
            child: None,
            tls,
        };
        redis.restart();
        redis
    }

    /// Starts the server (again) and waits, at most 10 s, until it answers.
    pub fn restart(&mut self) {
        let server = super::tool("redis-server").expect("redis-server, checked by the caller");
        let mut command = std::process::Command::new(server);
        command.args(["--bind", "127.0.0.1"]);
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some(_) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(self.dir.path().join("certificate.pem"))
                .arg("--tls-key-file")
                .arg(self.dir.path().join("key.pem"))
                .args(["--tls-auth-clients", "no"]),
        };
        let child = command
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let answer = self.ping();
            if answer.is_ok() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "private Redis did not start: {answer:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn ping(&self) -> redis::RedisResult<String> {
        let url = self.url();
        let client = match &self.tls {
            None => redis::Client::open(url.as_str())?,
            Some(ca) => redis::Client::build_with_tls(
                url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(ca).unwrap()),
                },
            )?,
        };
        redis::cmd("PING").query(&mut client.get_connection()?)
    }

    /// Kills the server at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://…` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The certificate authority that signed the server's certificate.
    pub fn ca_file(&self) -> &std::path::Path {
        self.tls.as_deref().expect("a TLS server")
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
