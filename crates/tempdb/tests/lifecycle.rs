//! The cluster lifecycle against real PostgreSQL servers.

use std::path::PathBuf;
use std::time::Duration;

use holdfast_tempdb::{ClusterOptions, StopMode, TempCluster};

fn select_one(cluster: &TempCluster) -> String {
    cluster.psql("postgres", "SELECT 1").expect("SELECT 1")
}

/// The postmaster's start time: it changes exactly when the server really restarted.
fn started_at(cluster: &TempCluster) -> String {
    cluster
        .psql("postgres", "SELECT pg_postmaster_start_time()")
        .expect("start time")
}

#[test]
fn starts_and_accepts_connections_over_tcp_and_socket() {
    let cluster = TempCluster::start(ClusterOptions::default()).expect("start");
    assert_eq!(select_one(&cluster), "1");
    assert!(cluster
        .socket_dir()
        .join(format!(".s.PGSQL.{}", cluster.port()))
        .exists());
    assert!(cluster.url().starts_with("postgres://postgres@127.0.0.1:"));
    let fsync = cluster.psql("postgres", "SHOW fsync").expect("show");
    assert_eq!(fsync, "off", "test clusters trade durability for speed");
    let encoding = cluster.psql("postgres", "SHOW server_encoding").expect("show");
    assert_eq!(encoding, "UTF8");
}

#[test]
fn demo_clusters_are_durable() {
    let cluster = TempCluster::start(ClusterOptions::demo()).expect("start");
    assert_eq!(cluster.psql("postgres", "SHOW fsync").expect("show"), "on");
}

#[test]
fn restart_keeps_port_and_data() {
    let cluster = TempCluster::start(ClusterOptions::default()).expect("start");
    let port = cluster.port();
    cluster
        .psql(
            "postgres",
            "CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)",
        )
        .expect("setup");
    let before = started_at(&cluster);
    cluster.restart(StopMode::Fast).expect("restart");
    assert_eq!(cluster.port(), port);
    assert_ne!(started_at(&cluster), before, "a new postmaster runs");
    assert_eq!(
        cluster.psql("postgres", "SELECT x FROM kept").expect("select"),
        "7"
    );
}

#[test]
fn kill_then_start_again_recovers() {
    let cluster = TempCluster::start(ClusterOptions::default()).expect("start");
    cluster
        .psql("postgres", "CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .expect("setup");
    cluster.kill().expect("kill");
    assert!(!cluster.is_running());
    assert!(
        cluster.psql("postgres", "SELECT 1").is_err(),
        "no server after kill"
    );
    assert!(matches!(cluster.kill(), Err(holdfast_tempdb::Error::NotRunning)));
    cluster.start_again().expect("start again");
    assert!(cluster.is_running());
    assert_eq!(cluster.psql("postgres", "SELECT x FROM t").expect("select"), "1");
    assert!(matches!(
        cluster.start_again(),
        Err(holdfast_tempdb::Error::AlreadyRunning)
    ));
}

#[test]
fn stop_modes_all_stop_the_server() {
    let cluster = TempCluster::start(ClusterOptions::default()).expect("start");
    for mode in [StopMode::Smart, StopMode::Fast, StopMode::Immediate] {
        cluster.stop_with(mode).expect("stop");
        assert!(!cluster.is_running(), "{mode:?}");
        cluster.start_again().expect("start");
        assert_eq!(select_one(&cluster), "1");
    }
}

#[test]
fn parallel_clusters_are_independent() {
    let clusters: Vec<TempCluster> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| TempCluster::start(ClusterOptions::default()).expect("start")))
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let mut ports: Vec<u16> = clusters.iter().map(TempCluster::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3);
    for (i, cluster) in clusters.iter().enumerate() {
        cluster
            .psql("postgres", &format!("CREATE TABLE mine AS SELECT {i} AS n"))
            .expect("create");
    }
    for (i, cluster) in clusters.iter().enumerate() {
        assert_eq!(
            cluster.psql("postgres", "SELECT n FROM mine").expect("select"),
            i.to_string()
        );
    }
}

#[test]
fn drop_stops_the_server_and_removes_the_directory() {
    let cluster = TempCluster::start(ClusterOptions::default()).expect("start");
    let dir: PathBuf = cluster.socket_dir().to_path_buf();
    let port = cluster.port();
    drop(cluster);
    assert!(!dir.exists());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens any more"
    );
}

#[test]
fn cleanup_on_panic() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let cluster = TempCluster::start(ClusterOptions::default()).expect("start");
        tx.send((cluster.socket_dir().to_path_buf(), cluster.port()))
            .expect("send");
        panic!("a test fails while its cluster runs");
    })
    .join();
    assert!(result.is_err(), "the thread panicked");
    let (dir, port) = rx.recv_timeout(Duration::from_secs(60)).expect("cluster details");
    assert!(!dir.exists(), "directory removed during unwinding");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn watchdog_cleans_up_after_a_killed_process() {
    // A child test process starts a cluster and is SIGKILLed: no Drop runs, the watchdog must.
    if std::env::var_os("HOLDFAST_TEMPDB_ORPHAN").is_some() {
        let cluster = TempCluster::start(ClusterOptions::default()).expect("start");
        println!("ORPHAN {} {}", cluster.socket_dir().display(), cluster.port());
        std::mem::forget(cluster);
        loop {
            std::thread::park();
        }
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "watchdog_cleans_up_after_a_killed_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HOLDFAST_TEMPDB_ORPHAN", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn child test");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(stdout);
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut reader, &mut line).expect("read");
        assert!(n > 0, "child exited before reporting its cluster");
        // libtest prints "test <name> ... " on the same line first.
        if let Some(at) = line.find("ORPHAN ") {
            line.drain(..at);
            break;
        }
    }
    let mut parts = line.split_whitespace().skip(1);
    let dir = PathBuf::from(parts.next().expect("dir"));
    let port: u16 = parts.next().expect("port").parse().expect("port number");
    assert!(dir.exists());
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap");
    // Bounded wait for the watchdog: it polls the server for up to 10 s before removing.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dir.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!dir.exists(), "watchdog removed the directory");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn databases_from_templates() {
    let cluster = holdfast_tempdb::shared().expect("shared cluster");
    let template = cluster.create_database().expect("template db");
    cluster
        .psql(&template.name, "CREATE TABLE seeded AS SELECT 42 AS answer")
        .expect("seed");
    let a = cluster.create_database_from(&template.name).expect("copy a");
    let b = cluster.create_database_from(&template.name).expect("copy b");
    assert_ne!(a.name, b.name);
    cluster
        .psql(&a.name, "UPDATE seeded SET answer = 1")
        .expect("update a");
    assert_eq!(
        cluster.psql(&a.name, "SELECT answer FROM seeded").expect("a"),
        "1"
    );
    assert_eq!(
        cluster.psql(&b.name, "SELECT answer FROM seeded").expect("b"),
        "42"
    );
    let err = cluster
        .create_database_from("x; DROP DATABASE postgres")
        .expect_err("bad name");
    assert!(err.to_string().contains("invalid template name"), "{err}");
}

#[test]
fn psql_reports_sql_errors() {
    let cluster = holdfast_tempdb::shared().expect("shared cluster");
    let err = cluster
        .psql("postgres", "SELECT * FROM no_such_table")
        .expect_err("error");
    assert!(err.to_string().contains("no_such_table"), "{err}");
}
