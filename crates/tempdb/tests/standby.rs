//! Streaming replication between throwaway clusters: a synchronous standby sees the primary's
//! commits, is promoted, and the old primary rejoins as a standby of the new one.

use std::time::{Duration, Instant};

use holdfast_tempdb::{ClusterOptions, Replication, TempCluster};

/// Polls `check` until it holds (replay on a standby is asynchronous even when the commit
/// waited for the flush).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "not within 60 s: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn count(cluster: &TempCluster) -> String {
    cluster
        .psql("postgres", "SELECT count(*) FROM t")
        .unwrap_or_default()
}

#[test]
fn a_synchronous_standby_follows_is_promoted_and_the_old_primary_rejoins() {
    let primary = TempCluster::start(ClusterOptions::default()).expect("primary");
    primary
        .psql("postgres", "CREATE TABLE t (x int)")
        .expect("create");
    let standby = primary.start_standby(Replication::Synchronous).expect("standby");
    assert!(standby.is_in_recovery().expect("recovery"));
    assert!(!primary.is_in_recovery().expect("recovery"));
    let sync = primary
        .psql("postgres", "SELECT sync_state FROM pg_stat_replication")
        .expect("replication");
    assert_eq!(sync, "sync");
    primary
        .psql("postgres", "INSERT INTO t VALUES (1)")
        .expect("insert");
    eventually("the standby replays the insert", || count(&standby) == "1");
    let refused = standby.psql("postgres", "INSERT INTO t VALUES (2)");
    assert!(refused.is_err(), "a standby refuses writes");

    // Failover: the primary goes away, the standby is promoted and takes writes.
    primary.kill().expect("kill the primary");
    standby.promote().expect("promote");
    assert!(!standby.is_in_recovery().expect("recovery"));
    standby
        .psql("postgres", "INSERT INTO t VALUES (2)")
        .expect("writes after promotion");

    // The old primary comes back as a standby of the new one, on its old port.
    let port = primary.port();
    primary
        .rejoin_as_standby_of(&standby, Replication::Asynchronous)
        .expect("rejoin");
    assert_eq!(primary.port(), port);
    assert!(primary.is_in_recovery().expect("recovery"));
    eventually("the rejoined standby has every row", || count(&primary) == "2");
}
