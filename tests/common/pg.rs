//! PostgreSQL for the integration tests: throw-away databases on the shared server
//! (`.ci/run` starts it on 127.0.0.1:5432) and private clusters for tests that stop and
//! restart the server under the service.
//!
//! Everything goes through the `psql`, `initdb` and `pg_ctl` programs, so the tests need
//! no database driver of their own.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SHARED_PORT: u16 = 5432;
const SHARED_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// How long a cluster may take to accept connections after `pg_ctl start`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Skips the calling test with a loud message, except under CI=true where a missing
/// prerequisite is a failure rather than a silently green run.
fn skip(message: &str) {
    super::skip::skip(message);
}

/// The shared server, or `None` (test skipped) when it is not running here.
pub fn server_url() -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, SHARED_PORT));
    if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
        skip("PostgreSQL on 127.0.0.1:5432 is not reachable (.ci/run starts it)");
        return None;
    }
    super::tool("psql")?;
    Some(SHARED_URL.to_string())
}

/// Runs one SQL string through `psql` and returns its trimmed output, or the error text.
///
/// `-X` keeps the caller's `~/.psqlrc` out of the tests, `-w` fails instead of waiting
/// at a password prompt, `-q` drops command tags (`INSERT 0 1`) so only query results
/// remain, and `-At` prints bare values.
/// Several statements in one string run as one implicit transaction, so statements
/// that refuse a transaction block (`CREATE/DROP DATABASE`) must be sent alone.
pub fn try_psql(url: &str, sql: &str) -> Result<String, String> {
    run_psql(psql_command(url, sql), url, sql)
}

/// The `psql` command of [`try_psql`].
fn psql_command(url: &str, sql: &str) -> Command {
    let mut command = Command::new("psql");
    command
        .arg(url)
        .args(["-X", "-w", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        // A server that accepts TCP but never answers must not hang the test run.
        .env("PGCONNECT_TIMEOUT", "10");
    command
}

fn run_psql(mut command: Command, url: &str, sql: &str) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(format!(
            "psql {url} -c {sql:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Like [`try_psql`], for statements that are expected to succeed.
pub fn psql(url: &str, sql: &str) -> String {
    try_psql(url, sql).unwrap_or_else(|e| panic!("{e}"))
}

/// `url` pointing at database `name` instead (any `?query` is kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A database of its own for one test, dropped (with any connections left open to it)
/// when this value is.
pub struct TestDatabase {
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates a fresh, uniquely named database on the server at `admin_url`.
    pub fn create(admin_url: &str) -> TestDatabase {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        // pid + counter is unique within a run; the clock guards against a database
        // left behind by an earlier run that died before its Drop (same pid reused).
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "babylon_t_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        // Interpolated into SQL below: it must stay a plain identifier (max 63 bytes).
        assert!(
            name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "unsafe database name {name}"
        );
        psql(admin_url, &format!("CREATE DATABASE \"{name}\""));
        TestDatabase {
            url: with_database(admin_url, &name),
            name,
            admin_url: admin_url.to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `sql` on this database; panics with psql's error text on failure.
    pub fn psql(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = &self.name;
        // A pool inside the service under test may still hold connections, and DROP
        // DATABASE refuses while any exist. FORCE (PG >= 13) covers that too; the
        // explicit terminate keeps older servers working with the plain DROP below.
        let _ = try_psql(
            &self.admin_url,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ),
        );
        let dropped = try_psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        )
        .or_else(|_| {
            try_psql(
                &self.admin_url,
                &format!("DROP DATABASE IF EXISTS \"{name}\""),
            )
        });
        // No panic here: Drop may run while a failing test unwinds, and a panic then
        // would abort the whole test binary and hide the real failure.
        if let Err(e) = dropped {
            eprintln!("warning: test database {name} was not dropped: {e}");
        }
    }
}

/// A directory holding the server programs: `/usr/lib/postgresql/<version>/bin`, newest
/// version first (Debian keeps them off PATH), then PATH.
fn server_bin_dir() -> Option<PathBuf> {
    let has_server = |dir: &Path| ["initdb", "pg_ctl"].iter().all(|p| dir.join(p).is_file());
    let mut versioned: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            // "15", "9.6": compared numerically, so 10 sorts above 9.6.
            let version = name
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versioned.sort_by(|a, b| b.0.cmp(&a.0));
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    versioned
        .into_iter()
        .map(|(_, dir)| dir)
        .chain(on_path)
        .find(|dir| has_server(dir))
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

/// A private PostgreSQL cluster on its own port, for tests that take the server away.
/// Dropping it stops the server and deletes its files.
pub struct TempCluster {
    bin: PathBuf,
    /// Held for the cluster's lifetime, so no other test's server can take the port
    /// while this one is stopped.
    port: super::ports::PortBlock,
    /// Holds the data directory, the socket and the log; removed when dropped, which
    /// happens after `Drop::drop` below has stopped the server.
    dir: tempfile::TempDir,
    /// initdb refuses to run as root, so as root the cluster belongs to `postgres`.
    run_as_postgres: bool,
    /// Whether a commit is acknowledged only once its WAL is written (see [`Self::start_durable`]).
    durable: bool,
    /// The test-network host it runs on, listening on the host's address too; `None`:
    /// loopback of the test's own namespace.
    host: Option<super::netns::Host>,
}

impl TempCluster {
    /// Creates and starts a cluster, or `None` (test skipped) when the server programs
    /// are not installed. Built for speed: no fsync, and commits acknowledged before their
    /// WAL is written, so a crash of this server may lose acknowledged commits.
    pub fn start() -> Option<TempCluster> {
        Self::start_with(false, &std::env::temp_dir())
    }

    /// Like [`Self::start`], but a commit is acknowledged only after its WAL is written
    /// (`synchronous_commit = on`): it survives [`Self::crash`]. (Still no fsync: nothing
    /// here survives a power loss, which no test can produce anyway.)
    pub fn start_durable() -> Option<TempCluster> {
        Self::start_with(true, &std::env::temp_dir())
    }

    /// Like [`Self::start_durable`], with the cluster's files (data, WAL, log) inside
    /// `parent`: a small file system, for a test that fills the server's storage.
    pub fn start_durable_in(parent: &Path) -> Option<TempCluster> {
        Self::start_with(true, parent)
    }

    /// Like [`Self::start`], on `host` of a test network: the server listens on the
    /// host's address (and its loopback), and trusts every client of the test subnet.
    pub fn start_on(host: &super::netns::Host) -> Option<TempCluster> {
        Self::start_with_host(false, &std::env::temp_dir(), Some(host.clone()))
    }

    fn start_with(durable: bool, parent: &Path) -> Option<TempCluster> {
        Self::start_with_host(durable, parent, None)
    }

    fn start_with_host(
        durable: bool,
        parent: &Path,
        host: Option<super::netns::Host>,
    ) -> Option<TempCluster> {
        let Some(bin) = server_bin_dir() else {
            skip(
                "PostgreSQL server programs (initdb, pg_ctl) are not installed \
                 (Debian: apt-get install -y postgresql); `bash .ci/run` installs them",
            );
            return None;
        };
        super::tool("psql")?;

        let dir = tempfile::Builder::new()
            .prefix("babylon-pg-")
            .tempdir_in(parent)
            .expect("create a temp dir for the cluster");
        // The new directory is owned by our effective uid: that tells whether we are root.
        let run_as_postgres = dir.path().metadata().expect("stat temp dir").uid() == 0;
        if run_as_postgres {
            let Some((uid, gid)) = postgres_ids() else {
                skip("running as root and there is no `postgres` user to own a test cluster");
                return None;
            };
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the cluster dir to postgres");
        }

        // From here on the guard stops and removes whatever exists if anything fails.
        let cluster = TempCluster {
            bin,
            port: super::ports::PortBlock::reserve(1),
            dir,
            run_as_postgres,
            durable,
            host,
        };
        cluster.init();
        cluster
            .pg_ctl_start()
            .unwrap_or_else(|e| panic!("test cluster did not start: {e}"));
        cluster.wait_ready();
        Some(cluster)
    }

    pub fn port(&self) -> u16 {
        self.port.first()
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port())
    }

    /// The URL other hosts of its test network use (the loopback URL without one).
    pub fn network_url(&self, database: &str) -> String {
        match &self.host {
            Some(host) => format!(
                "postgres://postgres@{}:{}/{database}",
                host.address,
                self.port()
            ),
            None => self.url(database),
        }
    }

    /// The cluster's data directory (removed when the cluster is dropped).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs `sql` on `database`; panics with psql's error text on failure.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        self.try_psql(database, sql)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Like [`TempCluster::psql`], but a failure (server down) is returned.
    pub fn try_psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let url = self.url(database);
        let command = psql_command(&url, sql);
        match &self.host {
            Some(host) => run_psql(host.wrap(&command), &url, sql),
            None => run_psql(command, &url, sql),
        }
    }

    /// A clean shutdown (clients disconnected, checkpoint written); returns once the
    /// server is gone.
    pub fn stop(&self) {
        let output = self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "30"]);
        assert!(
            output.status.success(),
            "pg_ctl stop failed: {}",
            describe(&output)
        );
    }

    /// Kills the server as a crash would (`pg_ctl stop -m immediate`: no checkpoint, no
    /// goodbye to clients); [`Self::start_again`] then runs crash recovery.
    pub fn crash(&self) {
        let output = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"]);
        assert!(
            output.status.success(),
            "pg_ctl stop -m immediate failed: {}",
            describe(&output)
        );
    }

    /// Starts the stopped cluster again on the same port and waits until it accepts
    /// connections.
    pub fn start_again(&self) {
        self.pg_ctl_start()
            .unwrap_or_else(|e| panic!("test cluster did not start again: {e}"));
        self.wait_ready();
    }

    /// A command running `program` from the server bin dir as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        // The postgres user may not be allowed into the test's working directory.
        command.current_dir(self.dir.path());
        match &self.host {
            Some(host) => host.wrap(&command),
            None => command,
        }
    }

    fn init(&self) {
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            // --no-sync: nothing here has to survive a machine crash, and syncing is
            // most of initdb's time. C locale: same behaviour whatever LANG says.
            .args(["--auth=trust", "-U", "postgres", "--no-sync", "--locale=C"])
            .args(["--encoding=UTF8"])
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            describe(&output)
        );

        // Appended settings win over initdb's, and live in the data dir so that
        // start_again() gets the same ones.
        let socket_dir = self.dir.path().display();
        let listen = match &self.host {
            Some(host) => format!("127.0.0.1, {}", host.address),
            None => "127.0.0.1".to_string(),
        };
        if let Some(host) = &self.host {
            let octets = host.address.octets();
            let subnet = format!("{}.{}.{}.0/24", octets[0], octets[1], octets[2]);
            self.append("pg_hba.conf", &format!("host all all {subnet} trust\n"));
        }
        self.append_conf(&format!(
            "\n# babylon test cluster\n\
             listen_addresses = '{listen}'\n\
             unix_socket_directories = '{socket_dir}'\n\
             fsync = off\n\
             synchronous_commit = {}\n\
             full_page_writes = off\n\
             port = {}\n",
            if self.durable { "on" } else { "off" },
            self.port()
        ));
    }

    fn append_conf(&self, text: &str) {
        self.append("postgresql.conf", text);
    }

    /// Appends `text` to the data directory's `file`.
    fn append(&self, file: &str, text: &str) {
        use std::io::Write;
        // Appending (as root, too) keeps the file's owner and mode unchanged.
        let path = self.data_dir().join(file);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        // With -l the postmaster's output goes to the log file, so it does not hold
        // these pipes open and output() returns when pg_ctl does.
        self.command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.path().join("postgres.log"))
            .args(args)
            .output()
            .expect("run pg_ctl")
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let output = self.pg_ctl(&["start", "-w", "-t", "30"]);
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("{}\nlog:\n{}", describe(&output), self.log_tail()))
        }
    }

    /// `pg_ctl -w` already waits, but through the unix socket: make sure TCP, which is
    /// what the service uses, answers a query too.
    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.try_psql("postgres", "SELECT 1") {
                Ok(out) if out == "1" => return,
                Ok(out) if Instant::now() >= deadline => {
                    panic!("test cluster answered SELECT 1 with {out:?}")
                }
                Err(e) if Instant::now() >= deadline => panic!(
                    "test cluster on port {} not ready after {READY_TIMEOUT:?}: {e}\nlog:\n{}",
                    self.port(),
                    self.log_tail()
                ),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        // Only a started server leaves a pid file; without it there is nothing to stop
        // (never started, stopped by the test, or initdb failed).
        if !self.data_dir().join("postmaster.pid").exists() {
            return;
        }
        // Immediate: no checkpoint, the files are about to be deleted anyway.
        let output = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"]);
        if !output.status.success() {
            eprintln!(
                "warning: test cluster in {} did not stop: {}",
                self.dir.path().display(),
                describe(&output)
            );
        }
    }
}

/// uid and gid of the `postgres` user (through `id`, so NSS sources count too).
fn postgres_ids() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let output = Command::new("id").args([flag, "postgres"]).output().ok()?;
        if !output.status.success() {
            return None;
        }
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}
