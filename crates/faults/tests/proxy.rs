//! Every fault against a real PostgreSQL and real clients, showing its observable effect.

use std::net::SocketAddr;
use std::time::Duration;

use holdfast_faults::{Action, DirectionFaults, FaultProxy, Faults, MessageRule, ProxyHandle, Trigger};
use holdfast_pool::{
    connect, CommitState, ConnectConfig, ConnectError, Connection, Liveness, Pool, PoolConfig,
};
use holdfast_testkit::cluster;

const BOUND: Duration = Duration::from_secs(20);

fn server() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], cluster().port()))
}

/// A proxy to the shared cluster and a URL for a fresh database through it.
async fn proxied() -> (ProxyHandle, String, String) {
    let db = cluster().create_database().expect("database");
    let proxy = FaultProxy::start_local(server()).await.expect("proxy");
    let via = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port(), db.name);
    (proxy, via, db.url)
}

async fn open(url: &str) -> Connection {
    let config = ConnectConfig::from_url(url)
        .expect("url")
        .connect_timeout(Duration::from_secs(5));
    connect(&config).await.expect("connect")
}

async fn dead(conn: &Connection) {
    tokio::time::timeout(BOUND, conn.state().wait_for(|s| s.liveness().is_dead()))
        .await
        .expect("the connection is seen to end");
}

#[tokio::test]
async fn passes_traffic_through_and_counts_it() {
    let (proxy, via, _) = proxied().await;
    let conn = open(&via).await;
    let n: i32 = conn.query_one("SELECT 41 + 1", &[]).await.expect("query").get(0);
    assert_eq!(n, 42);
    let c = proxy.counters();
    assert_eq!(c.connections_opened, 1);
    assert!(c.bytes_up > 0 && c.bytes_down > 0);
    assert_eq!(proxy.connections().len(), 1);
    drop(conn);
}

#[tokio::test]
async fn reset_makes_queries_fail_with_an_io_error() {
    let (proxy, via, _) = proxied().await;
    let conn = open(&via).await;
    assert_eq!(proxy.reset_all(), 1);
    dead(&conn).await;
    assert_eq!(
        conn.state().liveness(),
        Liveness::IoError,
        "a reset, not an orderly close"
    );
    let err = conn
        .query_one("SELECT 1", &[])
        .await
        .expect_err("connection is gone");
    assert!(err.is_closed() || err.as_db_error().is_none(), "{err}");
}

#[tokio::test]
async fn close_ends_connections_in_order() {
    let (proxy, via, _) = proxied().await;
    let conn = open(&via).await;
    assert_eq!(proxy.close_all(), 1);
    dead(&conn).await;
    assert_eq!(
        conn.state().liveness(),
        Liveness::Closed,
        "end of stream, not a reset"
    );
    assert!(conn.query_one("SELECT 1", &[]).await.is_err());
}

#[tokio::test]
async fn refusing_fails_new_connects_but_not_open_ones() {
    let (proxy, via, _) = proxied().await;
    let before = open(&via).await;
    proxy.update(|f| f.refuse = true).expect("set");
    let config = ConnectConfig::from_url(&via).expect("url").connect_timeout(BOUND);
    let err = connect(&config).await.expect_err("refused");
    assert!(
        matches!(err, ConnectError::Postgres { .. } | ConnectError::Io { .. }),
        "closed during start-up: {err}"
    );
    assert_eq!(proxy.counters().connections_refused, 1);
    before
        .query_one("SELECT 1", &[])
        .await
        .expect("an open connection still works");
    proxy.clear();
    open(&via)
        .await
        .query_one("SELECT 1", &[])
        .await
        .expect("accepted again");
}

#[tokio::test]
async fn a_blackholed_query_hangs_until_the_clients_own_timeout() {
    let (proxy, via, _) = proxied().await;
    let conn = open(&via).await;
    proxy
        .update(|f| {
            f.upstream.blackhole = true;
        })
        .expect("set");
    let result = tokio::time::timeout(Duration::from_millis(300), conn.query_one("SELECT 1", &[])).await;
    assert!(result.is_err(), "no answer can come through a black hole");
    assert_eq!(conn.state().liveness(), Liveness::Open, "the socket stays open");
    assert_eq!(conn.state().in_flight(), 1);
}

#[tokio::test]
async fn pause_holds_traffic_and_resume_delivers_it() {
    let (proxy, via, _) = proxied().await;
    let conn = open(&via).await;
    proxy.update(|f| f.paused = true).expect("pause");
    let query = conn.query_one("SELECT 5", &[]);
    tokio::pin!(query);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut query)
            .await
            .is_err(),
        "held while paused"
    );
    proxy.update(|f| f.paused = false).expect("resume");
    let n: i32 = tokio::time::timeout(BOUND, query)
        .await
        .expect("delivered")
        .expect("query")
        .get(0);
    assert_eq!(n, 5, "nothing was lost");
}

#[tokio::test]
async fn cut_after_bytes_closes_mid_conversation() {
    let (proxy, via, _) = proxied().await;
    let conn = open(&via).await;
    let used = proxy.connections()[0].bytes_up + proxy.connections()[0].bytes_down;
    proxy
        .update(|f| f.cut_after_bytes = Some(used + 100))
        .expect("set");
    let err = conn
        .query_one("SELECT repeat('x', 10000)", &[])
        .await
        .expect_err("cut before the answer is through");
    assert!(err.as_db_error().is_none(), "{err}");
    dead(&conn).await;
}

#[tokio::test]
async fn latency_and_bandwidth_still_deliver() {
    let (proxy, via, _) = proxied().await;
    let conn = open(&via).await;
    proxy
        .set(Faults {
            upstream: DirectionFaults {
                latency: Some(holdfast_faults::Latency {
                    base_ms: 5,
                    jitter_ms: 5,
                }),
                ..Default::default()
            },
            downstream: DirectionFaults {
                bandwidth_bytes_per_sec: Some(1_000_000),
                ..Default::default()
            },
            ..Faults::none()
        })
        .expect("set");
    let s: String = conn
        .query_one("SELECT repeat('y', 20000)", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(s.len(), 20000);
}

fn rule(trigger: Trigger, action: Action) -> Faults {
    Faults {
        rule: Some(MessageRule {
            trigger,
            action,
            once: true,
        }),
        ..Faults::none()
    }
}

/// Starts a transaction that inserts a row and returns its transaction id.
async fn begin_insert(conn: &Connection) -> i64 {
    conn.batch_execute("CREATE TABLE IF NOT EXISTS t (x int)")
        .await
        .expect("create");
    conn.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    conn.query_one("SELECT txid_current()", &[])
        .await
        .expect("txid")
        .get(0)
}

async fn xact_status(url: &str, txid: i64) -> String {
    let admin = open(url).await;
    let status: Option<String> = admin
        .query_one("SELECT pg_xact_status($1::text::xid8)", &[&txid.to_string()])
        .await
        .expect("pg_xact_status")
        .get(0);
    status.unwrap_or_default()
}

async fn rows(url: &str) -> i64 {
    open(url)
        .await
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test]
async fn dropping_the_commit_reply_leaves_it_committed_but_unknown_to_the_client() {
    let (proxy, via, direct) = proxied().await;
    let conn = open(&via).await;
    let txid = begin_insert(&conn).await;
    proxy.set(rule(Trigger::Commit, Action::DropReply)).expect("rule");
    let err = conn
        .batch_execute("COMMIT")
        .await
        .expect_err("the reply never comes");
    assert!(
        err.as_db_error().is_none(),
        "a lost connection, not a server error: {err}"
    );
    dead(&conn).await;
    assert!(conn.state().commit_outcome_unknown(), "{:?}", conn.state());
    assert_eq!(xact_status(&direct, txid).await, "committed");
    assert_eq!(rows(&direct).await, 1);
    assert_eq!(proxy.counters().faults_fired, 1);
}

#[tokio::test]
async fn dropping_the_reply_of_a_prepared_commit_works_the_same() {
    let (proxy, via, direct) = proxied().await;
    let conn = open(&via).await;
    let txid = begin_insert(&conn).await;
    // Prepare first (its own round trip), so that the rule fires on the execution.
    let commit = conn.prepare("COMMIT").await.expect("prepare");
    proxy.set(rule(Trigger::Commit, Action::DropReply)).expect("rule");
    conn.execute(&commit, &[]).await.expect_err("no reply");
    dead(&conn).await;
    assert!(conn.state().commit_outcome_unknown());
    assert_eq!(xact_status(&direct, txid).await, "committed");
}

#[tokio::test]
async fn cutting_before_the_commit_means_it_never_ran() {
    let (proxy, via, direct) = proxied().await;
    let conn = open(&via).await;
    let txid = begin_insert(&conn).await;
    proxy.set(rule(Trigger::Commit, Action::CutBefore)).expect("rule");
    conn.batch_execute("COMMIT").await.expect_err("connection cut");
    dead(&conn).await;
    assert_eq!(conn.state().commits_written(), 1, "the client did write it");
    // The server rolls back once it notices the client is gone.
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let status = xact_status(&direct, txid).await;
        if status == "aborted" {
            break;
        }
        assert_eq!(status, "in progress", "never committed");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never aborted it"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rows(&direct).await, 0);
}

#[tokio::test]
async fn cutting_after_the_reply_lets_the_commit_be_known() {
    let (proxy, via, direct) = proxied().await;
    let conn = open(&via).await;
    begin_insert(&conn).await;
    proxy
        .set(rule(Trigger::Commit, Action::CutAfterReply))
        .expect("rule");
    conn.batch_execute("COMMIT")
        .await
        .expect("the answer got through");
    assert_eq!(conn.state().commit(), CommitState::Committed);
    dead(&conn).await;
    assert!(!conn.state().commit_outcome_unknown());
    assert_eq!(rows(&direct).await, 1);
}

#[tokio::test]
async fn query_rules_match_by_prefix_and_fire_once() {
    let (proxy, via, _) = proxied().await;
    let conn = open(&via).await;
    conn.batch_execute("CREATE TABLE u (x int)")
        .await
        .expect("create");
    proxy
        .set(rule(
            Trigger::Query {
                prefix: "insert".into(),
            },
            Action::CutBefore,
        ))
        .expect("rule");
    conn.batch_execute("SELECT 1").await.expect("not matched");
    conn.batch_execute("  INSERT INTO u VALUES (1)")
        .await
        .expect_err("cut");
    let again = open(&via).await;
    again
        .batch_execute("INSERT INTO u VALUES (2)")
        .await
        .expect("once: the rule is spent");
}

#[tokio::test]
async fn the_pool_recovers_from_resets_through_the_proxy() {
    let (proxy, via, _) = proxied().await;
    let config = PoolConfig::new(ConnectConfig::from_url(&via).expect("url")).pool_size(3);
    let pool = Pool::new(config).expect("pool");
    let held: Vec<_> = futures_util_join(&pool, 3).await;
    drop(held);
    assert_eq!(proxy.reset_all(), 3);
    // The resets take effect asynchronously; callers after that see none of it.
    let deadline = tokio::time::Instant::now() + BOUND;
    while !proxy.connections().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "links never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..20 {
        let conn = pool.get().await.expect("get");
        conn.query_one("SELECT 1", &[])
            .await
            .expect("no caller sees the resets");
    }
}

async fn futures_util_join(pool: &Pool, n: usize) -> Vec<holdfast_pool::PooledConnection> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(pool.get().await.expect("get"));
    }
    held
}

#[tokio::test]
async fn an_upstream_that_refuses_shows_as_a_closed_connection() {
    let nothing = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_end = nothing.local_addr().expect("addr");
    drop(nothing);
    let proxy = FaultProxy::start_local(dead_end).await.expect("proxy");
    let config = ConnectConfig::from_url(&format!("postgres://postgres@127.0.0.1:{}/x", proxy.port()))
        .expect("url")
        .connect_timeout(BOUND);
    let err = connect(&config).await.expect_err("nothing behind the proxy");
    assert!(
        matches!(err, ConnectError::Postgres { .. } | ConnectError::Io { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn dropping_the_handle_closes_everything() {
    let (proxy, via, _) = proxied().await;
    let conn = open(&via).await;
    let port = proxy.port();
    drop(proxy);
    // At once, before this task yields to let the runtime drop the aborted accept task:
    // the listener is shut down by the drop itself.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "no longer listening"
    );
    dead(&conn).await;
}

#[tokio::test]
async fn bad_settings_are_refused_with_the_field_named() {
    let (proxy, _, _) = proxied().await;
    let err = proxy
        .update(|f| f.downstream.bandwidth_bytes_per_sec = Some(0))
        .expect_err("zero bandwidth");
    assert!(
        err.to_string().contains("downstream.bandwidth_bytes_per_sec"),
        "{err}"
    );
    assert_eq!(proxy.faults(), Faults::none(), "nothing changed");
}
