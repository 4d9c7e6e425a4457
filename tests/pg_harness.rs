//! The PostgreSQL test harness itself (tests/common/pg.rs): throw-away databases on the
//! shared server really come and go, and a private cluster really stops and restarts.

mod common;

use std::time::Instant;

use common::pg::{psql, server_url, TempCluster, TestDatabase};

fn database_count(admin_url: &str, name: &str) -> String {
    psql(
        admin_url,
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
    )
}

#[test]
fn test_database_is_private_and_dropped() {
    let Some(admin) = server_url() else { return };

    let db = TestDatabase::create(&admin);
    let other = TestDatabase::create(&admin);
    assert_ne!(db.name(), other.name());
    assert_ne!(db.url, other.url);
    assert!(db.url.ends_with(&format!("/{}", db.name())), "{}", db.url);

    assert_eq!(db.psql("SELECT current_database()"), db.name());
    db.psql("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)");
    db.psql("INSERT INTO items VALUES (1, 'one'), (2, 'two')");
    assert_eq!(db.psql("SELECT name FROM items ORDER BY id"), "one\ntwo");
    // Same table name, other database: nothing shared.
    assert_eq!(
        other.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'items'"),
        "0"
    );

    let name = db.name().to_string();
    assert_eq!(database_count(&admin, &name), "1");
    drop(db);
    assert_eq!(database_count(&admin, &name), "0");
    assert_eq!(database_count(&admin, other.name()), "1");
}

#[test]
fn test_database_is_dropped_with_connections_open() {
    let Some(admin) = server_url() else { return };
    let db = TestDatabase::create(&admin);
    let name = db.name().to_string();

    // A client still connected when the test ends, like a service's pool.
    let mut idle = std::process::Command::new("psql")
        .arg(&db.url)
        .args(["-X", "-q", "-c", "SELECT pg_sleep(60)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start psql");
    let connected = (0..100).any(|_| {
        let sessions = psql(
            &admin,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'"),
        );
        sessions != "0" || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            false
        }
    });

    drop(db);
    let status = idle.wait().expect("wait for psql");
    assert!(connected, "the idle client never connected");
    assert!(!status.success(), "the idle client's session was not ended");
    assert_eq!(database_count(&admin, &name), "0");
}

#[test]
fn temp_cluster_stops_restarts_and_cleans_up() {
    let started = Instant::now();
    let Some(cluster) = TempCluster::start() else {
        return;
    };
    eprintln!("TempCluster::start took {:?}", started.elapsed());

    assert_eq!(cluster.psql("postgres", "SELECT 1"), "1");
    assert_eq!(
        cluster.url("postgres"),
        format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port())
    );
    // Private: not the shared server, and our settings took.
    assert_ne!(cluster.port(), 5432);
    assert_eq!(cluster.psql("postgres", "SHOW fsync"), "off");
    assert_eq!(
        cluster.psql("postgres", "SHOW listen_addresses"),
        "127.0.0.1"
    );
    cluster.psql(
        "postgres",
        "CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)",
    );

    let stopping = Instant::now();
    cluster.stop();
    eprintln!("TempCluster::stop took {:?}", stopping.elapsed());
    let refused = cluster.try_psql("postgres", "SELECT 1");
    assert!(refused.is_err(), "a stopped cluster answered: {refused:?}");

    let restarting = Instant::now();
    cluster.start_again();
    eprintln!("TempCluster::start_again took {:?}", restarting.elapsed());
    assert_eq!(cluster.psql("postgres", "SELECT 1"), "1");
    // Same data directory: the table written before the stop is still there.
    assert_eq!(cluster.psql("postgres", "SELECT x FROM kept"), "7");

    let data_dir = cluster.data_dir();
    let port = cluster.port();
    assert!(data_dir.join("PG_VERSION").is_file());
    drop(cluster);
    assert!(!data_dir.exists(), "{} is left behind", data_dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something still listens on the dropped cluster's port {port}"
    );
}

#[test]
fn temp_clusters_run_side_by_side() {
    let Some(a) = TempCluster::start() else {
        return;
    };
    let Some(b) = TempCluster::start() else {
        return;
    };
    assert_ne!(a.port(), b.port());
    a.psql("postgres", "CREATE DATABASE only_in_a");
    let count = "SELECT count(*) FROM pg_database WHERE datname = 'only_in_a'";
    assert_eq!(a.psql("postgres", count), "1");
    assert_eq!(b.psql("postgres", count), "0");
}
