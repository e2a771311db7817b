//! A throwaway PgBouncer in front of a throwaway cluster, for real.

use std::process::Command;

use holdfast_tempdb::{ClusterOptions, PgBouncerOptions, TempCluster, TempPgBouncer};

/// Runs `sql` with psql through PgBouncer's port.
fn through(cluster: &TempCluster, bouncer: &TempPgBouncer, db: &str, sql: &str) -> Result<String, String> {
    let output = Command::new(cluster.bin().program("psql"))
        .args(["-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &bouncer.port().to_string(), "-d", db, "-c", sql])
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).to_string())
    }
}

#[test]
fn forwards_in_transaction_mode_and_survives_restart_and_kill() {
    let cluster = TempCluster::start(ClusterOptions::default()).expect("cluster");
    let db = cluster.create_database().expect("database");
    let bouncer = TempPgBouncer::start(&cluster, PgBouncerOptions::default()).expect("pgbouncer");
    assert_ne!(bouncer.port(), cluster.port());
    assert_eq!(
        bouncer.url_for(&db.name),
        format!("postgres://postgres@127.0.0.1:{}/{}", bouncer.port(), db.name)
    );

    // The query reaches the cluster behind it: the database PgBouncer connected to is ours.
    assert_eq!(
        through(&cluster, &bouncer, &db.name, "SELECT current_database()").expect("query"),
        db.name
    );
    let config = bouncer.admin("SHOW CONFIG").expect("admin console");
    assert!(
        config.lines().any(|l| l.starts_with("pool_mode|transaction|")),
        "{config}"
    );
    // The server sees PgBouncer's server connection to our database.
    let servers = cluster
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}'",
                db.name
            ),
        )
        .expect("activity");
    assert_ne!(servers, "0", "PgBouncer keeps its server connection open");

    let port = bouncer.port();
    bouncer.restart().expect("restart");
    assert_eq!(bouncer.port(), port);
    assert_eq!(
        through(&cluster, &bouncer, &db.name, "SELECT 2").expect("after restart"),
        "2"
    );

    bouncer.kill().expect("kill");
    assert!(!bouncer.is_running());
    assert!(
        through(&cluster, &bouncer, &db.name, "SELECT 3").is_err(),
        "nothing listens"
    );
    bouncer
        .start_again()
        .expect("start after a kill (stale pid file)");
    assert_eq!(
        through(&cluster, &bouncer, &db.name, "SELECT 3").expect("after kill"),
        "3"
    );
}

#[test]
fn dropping_it_stops_pgbouncer_and_removes_its_directory() {
    let cluster = TempCluster::start(ClusterOptions::default()).expect("cluster");
    let bouncer = TempPgBouncer::start(&cluster, PgBouncerOptions::default()).expect("pgbouncer");
    let port = bouncer.port();
    let dir = bouncer.dir().to_path_buf();
    assert!(dir.join("pgbouncer.ini").exists());
    drop(bouncer);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens on {port} after drop"
    );
    assert!(!dir.exists(), "{} removed", dir.display());
}
