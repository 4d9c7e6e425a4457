//! Redis for the tests: the shared server on 127.0.0.1:6379, key prefixes that no other
//! test or run uses (deleted afterwards), and private servers that a test may kill.

/// The shared Redis the tests use (never stopped or reconfigured by them).
pub const REDIS: &str = "redis://127.0.0.1:6379";

/// Whether the shared Redis answers; under CI=true it must.
pub fn redis_available() -> bool {
    let up = std::net::TcpStream::connect("127.0.0.1:6379").is_ok();
    if !up {
        let hint = "no Redis on 127.0.0.1:6379 (Debian: apt-get install -y redis-server); `bash .ci/run` starts one";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true and {hint}");
        }
        eprintln!("SKIPPED: {hint}");
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
}

impl PrivateRedis {
    pub fn start(port: u16) -> PrivateRedis {
        let mut redis = PrivateRedis {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.restart();
        redis
    }

    /// Starts the server (again) and waits, at most 10 s, until it answers.
    pub fn restart(&mut self) {
        let server = super::tool("redis-server").expect("redis-server, checked by the caller");
        let child = std::process::Command::new(server)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let url = self.url();
        loop {
            let answered = redis::Client::open(url.as_str())
                .and_then(|client| client.get_connection())
                .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection));
            if answered.is_ok() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "private Redis did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Kills the server at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
