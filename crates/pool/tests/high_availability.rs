//! Multi-host connection strings on a real primary and streaming standby: which server each
//! `target_session_attrs` accepts, hosts shuffled, a host that swallows connects, and the pool
//! through a failover and a switchover (never pinned to a server that cannot serve it).

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use holdfast_pool::{connect, ConnectConfig, ConnectError, Pool, PoolConfig};
use holdfast_tempdb::{ClusterOptions, Replication, StopMode, TempCluster};
use support::{app_name, eventually, BOUND};

/// A primary with a table `t`, and its synchronous standby.
fn primary_and_standby() -> (TempCluster, TempCluster) {
    let primary = TempCluster::start(ClusterOptions::default()).expect("primary");
    primary
        .psql("postgres", "CREATE TABLE t (id bigint PRIMARY KEY)")
        .expect("create");
    let standby = primary.start_standby(Replication::Synchronous).expect("standby");
    (primary, standby)
}

/// A key=value string listing `ports` in order on 127.0.0.1, with `extra` parameters.
fn hosts(ports: &[u16], extra: &str) -> String {
    let hosts = vec!["127.0.0.1"; ports.len()].join(",");
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "host={hosts} port={} user=postgres dbname=postgres application_name={} {extra}",
        ports.join(","),
        app_name("ha")
    )
}

/// A pool of `size` on those hosts, waiting at most [`BOUND`].
fn pool_of(ports: &[u16], extra: &str, size: usize) -> Pool {
    Pool::new(
        PoolConfig::new(config(ports, extra))
            .pool_size(size)
            .pool_timeout(BOUND),
    )
    .expect("pool")
}

fn config(ports: &[u16], extra: &str) -> ConnectConfig {
    ConnectConfig::from_url(&hosts(ports, extra)).expect("connection string")
}

async fn in_recovery(conn: &holdfast_pool::Connection) -> bool {
    conn.query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("pg_is_in_recovery")
        .get(0)
}

/// The port of the server a connection reached.
async fn server_port(client: &tokio_postgres::Client) -> u16 {
    let port: i32 = client
        .query_one("SELECT inet_server_port()", &[])
        .await
        .expect("port")
        .get(0);
    u16::try_from(port).expect("port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_target_gets_the_server_it_asks_for_and_refusals_name_every_host() {
    let (primary, standby) = primary_and_standby();
    let (p, s) = (primary.port(), standby.port());
    let both = [s, p];
    for (extra, want_standby) in [
        ("target_session_attrs=read-write", false),
        ("target_session_attrs=primary", false),
        ("target_session_attrs=read-only", true),
        ("target_session_attrs=standby", true),
        ("target_session_attrs=prefer-standby", true),
    ] {
        // Each order: the first host is the wrong one for half of them.
        for order in [[s, p], [p, s]] {
            let conn = connect(&config(&order, extra)).await.expect(extra);
            assert_eq!(in_recovery(&conn).await, want_standby, "{extra} with {order:?}");
        }
    }
    let conn = connect(&config(&both, "")).await.expect("any");
    assert_eq!(server_port(conn.client()).await, s, "any: the first host");

    // A primary alone does not qualify for read-only or standby: the error names each host
    // and what it is.
    for extra in ["target_session_attrs=read-only", "target_session_attrs=standby"] {
        let error = connect(&config(&[p], extra)).await.expect_err(extra);
        let text = error.to_string();
        assert!(
            matches!(error, ConnectError::NoHostQualified { .. })
                && text.contains(&format!("127.0.0.1:{p} is a primary")),
            "{text}"
        );
        assert!(!error.is_permanent(), "a failover can change a server's role");
    }
    // Two hosts that fail differently: both are named.
    let gone = holdfast_tempdb::TempCluster::start(ClusterOptions::default()).expect("third");
    let gone_port = gone.port();
    drop(gone);
    let error = connect(&config(&[gone_port, p], "target_session_attrs=standby"))
        .await
        .expect_err("no standby");
    let text = error.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{gone_port}"))
            && text.contains(&format!("127.0.0.1:{p} is a primary")),
        "{text}"
    );
    // prefer-standby falls back to the primary when no host is a standby.
    let conn = connect(&config(&[p], "target_session_attrs=prefer-standby"))
        .await
        .expect("fallback");
    assert!(!in_recovery(&conn).await);
    // A value libpq does not know is refused at start-up, naming what is accepted.
    let error = ConnectConfig::from_url(&hosts(&[p], "target_session_attrs=readwrite")).expect_err("refused");
    assert!(error.to_string().contains("prefer-standby"), "{error}");
    drop(standby);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balance_hosts_random_spreads_connects_over_both_hosts() {
    let (primary, standby) = primary_and_standby();
    let config = config(&[primary.port(), standby.port()], "load_balance_hosts=random");
    let mut by_port: HashMap<u16, usize> = HashMap::new();
    for _ in 0..200 {
        let conn = connect(&config).await.expect("connect");
        *by_port.entry(server_port(conn.client()).await).or_default() += 1;
    }
    assert_eq!(by_port.len(), 2, "both hosts got connects: {by_port:?}");
    // As listed otherwise: every connect goes to the first host.
    let config = config_listed(&[primary.port(), standby.port()]);
    for _ in 0..20 {
        let conn = connect(&config).await.expect("connect");
        assert_eq!(server_port(conn.client()).await, primary.port());
    }
}

fn config_listed(ports: &[u16]) -> ConnectConfig {
    config(ports, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_host_that_swallows_connects_leaves_the_second_its_whole_timeout() {
    let cluster = holdfast_testkit::cluster();
    let upstream = SocketAddr::from(([127, 0, 0, 1], cluster.port()));
    let proxy = holdfast_faults::FaultProxy::start_local(upstream)
        .await
        .expect("proxy");
    proxy
        .update(|f| {
            f.upstream.blackhole = true;
            f.downstream.blackhole = true;
        })
        .expect("blackhole");
    // Each host gets the whole connect_timeout: the hung first one spends its 2 s, and the
    // second still gets its own.
    let config = config(&[proxy.port(), cluster.port()], "connect_timeout=2");
    let conn = tokio::time::timeout(BOUND, connect(&config))
        .await
        .expect("not hung")
        .expect("the second host serves");
    assert_eq!(server_port(conn.client()).await, cluster.port());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_standby_tells_its_sessions_and_the_pool_lets_them_go() {
    let (primary, standby) = primary_and_standby();
    // A prefer-standby pool lands on the standby.
    let pool = pool_of(
        &[primary.port(), standby.port()],
        "target_session_attrs=prefer-standby",
        1,
    );
    let conn = pool.get().await.expect("get");
    assert_eq!(server_port(&conn).await, standby.port());
    assert_eq!(conn.state().server_role().in_hot_standby, Some(true));
    drop(conn);

    primary.stop_with(StopMode::Fast).expect("stop primary");
    standby.promote().expect("promote");
    // The idle connection's next statement carries the news (a ParameterStatus before its
    // ReadyForQuery): the tap sees the standby became a primary, and the pool closes the
    // connection when it comes back, so the next connect looks for a standby again.
    let conn = pool.get().await.expect("get");
    conn.batch_execute("SELECT 1")
        .await
        .expect("the promoted server answers");
    assert_eq!(conn.state().server_role().in_hot_standby, Some(false));
    let before = pool.status().open;
    drop(conn);
    eventually("the connection to the promoted server is closed", || async {
        pool.status().open < before
    })
    .await;
}

/// Inserts ids from `from`, one autocommit statement each, until `stop`; returns the ids
/// whose insert was acknowledged, and how many failed.
async fn write_until(pool: Pool, stop: Arc<tokio::sync::Notify>, from: i64) -> (Vec<i64>, usize) {
    let mut acknowledged = Vec::new();
    let mut failed = 0;
    let stopped = stop.notified();
    tokio::pin!(stopped);
    for id in from.. {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
        tokio::select! {
            result = pool.execute("INSERT INTO t VALUES ($1)", &params) => match result {
                Ok(_) => acknowledged.push(id),
                Err(_) => failed += 1,
            },
            _ = &mut stopped => break,
        }
    }
    (acknowledged, failed)
}

async fn rows(cluster: &TempCluster) -> Vec<i64> {
    let conn = holdfast_testkit::connect_to(&cluster.url()).await;
    conn.query("SELECT id FROM t ORDER BY id", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_after_a_failover_and_nothing_acknowledged_is_lost() {
    let (primary, standby) = primary_and_standby();
    let pool = pool_of(
        &[primary.port(), standby.port()],
        "target_session_attrs=read-write connect_timeout=2",
        2,
    );
    let stop = Arc::new(tokio::sync::Notify::new());
    let writer = tokio::spawn(write_until(pool.clone(), Arc::clone(&stop), 1));
    eventually("writes go through", || async { rows(&primary).await.len() >= 50 }).await;

    tokio::task::block_in_place(|| {
        primary.kill().expect("kill the primary");
        standby.promote().expect("promote the standby");
    });
    let promoted_at = rows(&standby).await.len();
    eventually("writes resume on the promoted standby", || async {
        rows(&standby).await.len() >= promoted_at + 50
    })
    .await;
    stop.notify_one();
    let (acknowledged, _failed) = writer.await.expect("writer");
    let present = rows(&standby).await;
    let lost: Vec<i64> = acknowledged
        .iter()
        .filter(|id| present.binary_search(id).is_err())
        .copied()
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_with_the_demoted_primary_listed_first_does_not_pin_the_pool() {
    let (primary, standby) = primary_and_standby();
    let pool = pool_of(
        &[primary.port(), standby.port()],
        "target_session_attrs=read-write",
        2,
    );
    pool.execute("INSERT INTO t VALUES (1)", &[])
        .await
        .expect("before");

    // Switchover: the primary stops, the standby is promoted, the old primary comes back
    // as a standby of the new one, still first in the list.
    tokio::task::block_in_place(|| {
        primary.stop_with(StopMode::Fast).expect("stop");
        standby.promote().expect("promote");
        primary
            .rejoin_as_standby_of(&standby, Replication::Asynchronous)
            .expect("rejoin");
    });
    // Writes go to the new primary: a connect that lands on the old one is refused for its
    // role, and the next host is tried.
    for id in 2..=20_i64 {
        pool.execute("INSERT INTO t VALUES ($1)", &[&id])
            .await
            .unwrap_or_else(|e| panic!("write {id} after the switchover: {e}"));
    }
    assert_eq!(rows(&standby).await.len(), 20);
    let conn = pool.get().await.expect("get");
    assert_eq!(server_port(&conn).await, standby.port());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_error_on_a_writing_pool_closes_the_connection() {
    // A primary set read-only by default stands for a server that turned read-only under
    // the pool: the connection that met 25006 is not kept.
    let cluster = TempCluster::start(ClusterOptions::default()).expect("cluster");
    cluster
        .psql("postgres", "CREATE TABLE t (id bigint PRIMARY KEY)")
        .expect("create");
    let pool = pool_of(&[cluster.port()], "target_session_attrs=primary", 1);
    let conn = pool.get().await.expect("get");
    conn.batch_execute("SET default_transaction_read_only = on")
        .await
        .expect("set");
    let refused = conn.execute("INSERT INTO t VALUES (1)", &[]).await;
    assert_eq!(
        refused.expect_err("read-only").code().map(|c| c.code()),
        Some("25006")
    );
    drop(conn);
    eventually("the connection is closed", || async { pool.status().open == 0 }).await;
    pool.execute("INSERT INTO t VALUES (1)", &[])
        .await
        .expect("a new connection writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_further_behind_than_the_bound_does_not_qualify() {
    let (primary, standby) = primary_and_standby();
    let bounded = config(
        &[standby.port(), primary.port()],
        "target_session_attrs=prefer-standby",
    )
    .max_standby_lag(Some(Duration::from_millis(1)));
    let conn = connect(&bounded).await.expect("caught up");
    assert!(
        in_recovery(&conn).await,
        "a standby with nothing left to replay qualifies"
    );
    drop(conn);

    // Replay paused while the primary commits: the standby falls behind.
    standby
        .psql("postgres", "SELECT pg_wal_replay_pause()")
        .expect("pause replay");
    holdfast_testkit::eventually_blocking("replay paused", || {
        standby
            .psql("postgres", "SELECT pg_get_wal_replay_pause_state()")
            .is_ok_and(|s| s == "paused")
    });
    primary
        .psql("postgres", "INSERT INTO t VALUES (1)")
        .expect("insert");
    let conn = connect(&bounded).await.expect("the primary, as the fallback");
    assert!(!in_recovery(&conn).await, "the lagging standby is skipped");
    let error = connect(
        &config(&[standby.port()], "target_session_attrs=standby")
            .max_standby_lag(Some(Duration::from_millis(1))),
    )
    .await
    .expect_err("only a lagging standby");
    assert!(
        error
            .to_string()
            .contains("behind its primary, more than max_standby_lag"),
        "{error}"
    );
    // Without a bound it still serves.
    let conn = connect(&config(&[standby.port()], "target_session_attrs=standby"))
        .await
        .expect("no bound");
    assert!(in_recovery(&conn).await);
    standby
        .psql("postgres", "SELECT pg_wal_replay_resume()")
        .expect("resume replay");
}
