//! Tapped connections against a real PostgreSQL: the observed state through transactions,
//! dropped futures, server-side termination and shutdown; authentication; settings.

use std::sync::OnceLock;
use std::time::Duration;

use holdfast_pool::{connect, CommitState, ConnectConfig, ConnectError, Connection, Liveness, TxStatus};
use holdfast_tempdb::{ClusterOptions, TempCluster};

/// Upper bound for anything a test waits on; reaching it fails the test.
const BOUND: Duration = Duration::from_secs(20);

/// One cluster for this test binary, with md5 and scram users next to trust.
fn cluster() -> &'static TempCluster {
    static CLUSTER: OnceLock<TempCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let options = ClusterOptions::default()
            .hba_line("host all md5_user 127.0.0.1/32 md5")
            .hba_line("host all scram_user 127.0.0.1/32 scram-sha-256");
        let cluster = TempCluster::start(options).expect("start cluster");
        cluster
            .psql(
                "postgres",
                "SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD 'md5-secret-pw';
                 SET password_encryption = 'scram-sha-256'; CREATE ROLE scram_user LOGIN PASSWORD 'scram-secret-pw';",
            )
            .expect("roles");
        cluster
    })
}

async fn open(url: &str) -> Connection {
    connect(&ConnectConfig::from_url(url).expect("url"))
        .await
        .expect("connect")
}

async fn fresh() -> (Connection, String) {
    let db = cluster().create_database().expect("database");
    (open(&db.url).await, db.url)
}

/// Waits (bounded) until the tap observes `condition`.
async fn observe(conn: &Connection, what: &str, condition: impl FnMut(&holdfast_pool::WireState) -> bool) {
    tokio::time::timeout(BOUND, conn.state().wait_for(condition))
        .await
        .unwrap_or_else(|_| panic!("not observed within {BOUND:?}: {what}; state {:?}", conn.state()));
}

#[tokio::test]
async fn status_follows_transactions() {
    let (conn, _) = fresh().await;
    let s = conn.state();
    assert_eq!(s.liveness(), Liveness::Open);
    assert_eq!(s.tx_status(), TxStatus::Idle);
    assert_eq!(s.in_flight(), 0);
    assert!(s.is_clean());
    assert!(s.backend_pid().is_some());

    conn.batch_execute("BEGIN").await.expect("begin");
    assert_eq!(s.tx_status(), TxStatus::InTransaction);
    assert!(!s.is_clean());
    conn.batch_execute("CREATE TABLE t (x int)")
        .await
        .expect("create");
    assert_eq!(s.last_command_tag(), "CREATE TABLE");
    conn.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(s.tx_status(), TxStatus::Idle);
    assert_eq!(s.commit(), CommitState::Committed);

    conn.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    assert_eq!(s.last_command_tag(), "INSERT 0 1");
    assert_eq!(s.tx_status(), TxStatus::InTransaction);
    let err = conn
        .batch_execute("SELECT 1/0")
        .await
        .expect_err("division by zero");
    assert_eq!(err.code().map(|c| c.code()), Some("22012"));
    // The driver returns on the ErrorResponse; the ReadyForQuery behind it may still be on
    // its way, and the tap counts it as in flight until it arrives.
    observe(&conn, "ReadyForQuery after the error", |s| s.in_flight() == 0).await;
    assert_eq!(s.tx_status(), TxStatus::Failed);
    assert_eq!(s.snapshot().last_sqlstate.as_deref(), Some("22012"));
    conn.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(s.tx_status(), TxStatus::Idle);
    assert!(s.is_clean());
}

#[tokio::test]
async fn driver_transactions_and_raw_begin_are_both_seen() {
    let (mut conn, _) = fresh().await;
    let state = conn.state().clone();
    // tokio-postgres' own transaction API.
    let tx = conn.client_mut().transaction().await.expect("transaction");
    assert_eq!(state.tx_status(), TxStatus::InTransaction);
    tx.rollback().await.expect("rollback");
    assert_eq!(state.tx_status(), TxStatus::Idle);
    // A raw BEGIN the driver knows nothing about.
    conn.batch_execute("begin isolation level serializable")
        .await
        .expect("raw begin");
    assert_eq!(state.tx_status(), TxStatus::InTransaction);
    // Extended protocol: the status arrives with each Sync's ReadyForQuery.
    let n: i32 = conn.query_one("SELECT 1", &[]).await.expect("select").get(0);
    assert_eq!(n, 1);
    assert_eq!(state.tx_status(), TxStatus::InTransaction);
    assert_eq!(state.in_flight(), 0);
}

#[tokio::test]
async fn commit_answered_with_rollback_is_recorded_as_such() {
    let (conn, _) = fresh().await;
    conn.batch_execute("CREATE TABLE t (x int PRIMARY KEY)")
        .await
        .expect("create");
    conn.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    conn.batch_execute("INSERT INTO t VALUES (1)")
        .await
        .expect_err("duplicate key");
    observe(&conn, "ReadyForQuery after the error", |s| s.in_flight() == 0).await;
    assert_eq!(conn.state().tx_status(), TxStatus::Failed);
    // The server accepts COMMIT in a failed transaction and answers with tag ROLLBACK.
    conn.batch_execute("COMMIT")
        .await
        .expect("the driver calls this a success");
    assert_eq!(conn.state().last_command_tag(), "ROLLBACK");
    assert_eq!(conn.state().commit(), CommitState::RolledBack);
    assert_eq!(conn.state().tx_status(), TxStatus::Idle);
    let rows: i64 = conn
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 0, "nothing was committed");
}

#[tokio::test]
async fn extended_protocol_commit_is_tracked() {
    let (conn, _) = fresh().await;
    conn.batch_execute("BEGIN").await.expect("begin");
    conn.execute("COMMIT", &[]).await.expect("prepared commit");
    assert_eq!(conn.state().commit(), CommitState::Committed);
    assert_eq!(conn.state().commits_written(), 1);
    conn.batch_execute("BEGIN").await.expect("begin");
    conn.query_typed("commit", &[]).await.expect("unnamed commit");
    assert_eq!(conn.state().commit(), CommitState::Committed);
    assert_eq!(conn.state().commits_written(), 2);
    // A deferred constraint fails at COMMIT: an error answer, nothing committed.
    conn.batch_execute(
        "CREATE TABLE p (id int PRIMARY KEY);
         CREATE TABLE c (p int REFERENCES p DEFERRABLE INITIALLY DEFERRED);
         BEGIN; INSERT INTO c VALUES (42);",
    )
    .await
    .expect("setup");
    let err = conn
        .execute("COMMIT", &[])
        .await
        .expect_err("deferred FK fails at commit");
    assert_eq!(err.code().map(|c| c.code()), Some("23503"));
    assert_eq!(conn.state().commit(), CommitState::Failed);
    observe(&conn, "ReadyForQuery after the error", |s| s.in_flight() == 0).await;
    assert_eq!(conn.state().tx_status(), TxStatus::Idle);
}

#[tokio::test]
async fn dropped_query_future_stays_in_flight_until_the_server_answers() {
    let (conn, url) = fresh().await;
    let blocker = open(&url).await;
    // Another session holds the lock; our query will wait on it, in flight.
    blocker
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(7)")
        .await
        .expect("lock");
    let pid = conn.backend_pid().expect("pid");
    {
        let query = conn.query("SELECT pg_advisory_xact_lock(7)", &[]);
        tokio::pin!(query);
        // Drive the query until the server runs it and waits for the lock.
        tokio::select! {
            _ = &mut query => panic!("the query cannot finish while the lock is held"),
            _ = waiting_for_lock(&blocker, pid) => {}
        }
        // The future is dropped here, mid-query.
    }
    assert_eq!(conn.state().in_flight(), 1, "the server has not answered yet");
    assert!(!conn.state().is_clean());
    blocker.batch_execute("COMMIT").await.expect("release the lock");
    observe(&conn, "answer to the dropped query", |s| s.in_flight() == 0).await;
    assert_eq!(conn.state().tx_status(), TxStatus::Idle);
    assert!(conn.state().is_clean());
    let n: i32 = conn
        .query_one("SELECT 2", &[])
        .await
        .expect("still usable")
        .get(0);
    assert_eq!(n, 2);
}

#[tokio::test]
async fn dropping_a_connection_that_is_owed_a_reply_closes_its_socket_at_once() {
    let (conn, url) = fresh().await;
    let blocker = open(&url).await;
    // The server notices a closed client socket within 50 ms even while a query waits.
    conn.batch_execute("SET client_connection_check_interval = '50ms'")
        .await
        .expect("set");
    blocker
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(8)")
        .await
        .expect("lock");
    let pid = conn.backend_pid().expect("pid");
    // Watches from outside any transaction (pg_stat_activity is a snapshot per transaction).
    let observer = open(&url).await;
    {
        let query = conn.query("SELECT pg_advisory_xact_lock(8)", &[]);
        tokio::pin!(query);
        tokio::select! {
            _ = &mut query => panic!("the query cannot finish while the lock is held"),
            _ = waiting_for_lock(&observer, pid) => {}
        }
    }
    // A reply is owed and will not come while the lock is held (nor ever, were the server or
    // the network hung). Dropping the connection must close the socket now, not once a reply
    // nobody will read arrives.
    drop(conn);
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let left: i64 = observer
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .await
            .expect("pg_stat_activity")
            .get(0);
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "backend {pid} still there: the socket was left open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    blocker.batch_execute("COMMIT").await.expect("release");
}

/// Bounded wait until server process `pid` waits on a lock, as `pg_stat_activity` shows it.
async fn waiting_for_lock(observer: &Connection, pid: i32) {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                &[&pid],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if waiting == 1 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "backend {pid} never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn terminated_backend_is_noticed_without_sending_anything() {
    let (conn, url) = fresh().await;
    let admin = open(&url).await;
    let pid = conn.backend_pid().expect("pid");
    let sent_before = conn.state().snapshot().bytes_sent;
    let ok: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("terminate")
        .get(0);
    assert!(ok);
    observe(&conn, "connection closed", |s| s.liveness().is_dead()).await;
    let snap = conn.state().snapshot();
    assert_eq!(snap.liveness, Liveness::Closed);
    assert_eq!(
        snap.last_sqlstate.as_deref(),
        Some("57P01"),
        "admin_shutdown sent before close"
    );
    assert_eq!(snap.bytes_sent, sent_before, "the client sent nothing");
    assert!(snap.dead_since.is_some());
    assert!(conn.is_closed());
}

#[tokio::test]
async fn immediate_server_shutdown_is_noticed() {
    let cluster = TempCluster::start(ClusterOptions::default()).expect("own cluster");
    let conn = open(&cluster.url()).await;
    conn.batch_execute("BEGIN").await.expect("begin");
    cluster.kill().expect("immediate shutdown");
    observe(&conn, "connection closed", |s| s.liveness().is_dead()).await;
    assert!(matches!(
        conn.state().liveness(),
        Liveness::Closed | Liveness::IoError
    ));
    assert!(conn.is_closed());
    // After a restart a new connection works; the old one stays dead.
    cluster.start_again().expect("start again");
    let again = open(&cluster.url()).await;
    assert!(again.state().is_clean());
    assert!(conn.query_one("SELECT 1", &[]).await.is_err());
}

#[tokio::test]
async fn copy_in_and_out_keep_the_request_count_right() {
    use futures_util::SinkExt;
    let (conn, _) = fresh().await;
    conn.batch_execute("CREATE TABLE c (x int)")
        .await
        .expect("create");
    let sink = conn.copy_in("COPY c FROM STDIN").await.expect("copy in");
    tokio::pin!(sink);
    sink.send(bytes::Bytes::from_static(b"1\n2\n3\n"))
        .await
        .expect("data");
    let rows = sink.finish().await.expect("finish");
    assert_eq!(rows, 3);
    // finish() returns on CommandComplete; the ReadyForQuery follows. The Sync that
    // tokio-postgres sent right after the COPY's Execute gets none (the server ignores Sync
    // in copy-in mode), so the count must come back to zero, not stay at one.
    observe(&conn, "copy finished", |s| s.in_flight() == 0).await;
    assert!(conn.state().is_clean());

    // A COPY that fails on bad data, then the connection is still usable and clean.
    let sink = conn.copy_in("COPY c FROM STDIN").await.expect("copy in");
    tokio::pin!(sink);
    sink.send(bytes::Bytes::from_static(b"not a number\n")).await.ok();
    assert!(sink.finish().await.is_err());
    observe(&conn, "copy error settled", |s| s.in_flight() == 0).await;
    assert!(conn.state().is_clean());

    let out = conn.copy_out("COPY c TO STDOUT").await.expect("copy out");
    tokio::pin!(out);
    let mut n = 0;
    while let Some(chunk) = futures_util::StreamExt::next(&mut out).await {
        n += chunk.expect("chunk").len();
    }
    assert_eq!(n, 6);
    assert!(conn.state().is_clean());
    let count: i64 = conn
        .query_one("SELECT count(*) FROM c", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 3);
}

#[tokio::test]
async fn authentication_trust_md5_scram() {
    let c = cluster();
    let port = c.port();
    let trust = open(&format!("postgres://postgres@127.0.0.1:{port}/postgres")).await;
    assert!(trust.state().is_clean());
    for (user, pw) in [("md5_user", "md5-secret-pw"), ("scram_user", "scram-secret-pw")] {
        let conn = open(&format!("postgres://{user}:{pw}@127.0.0.1:{port}/postgres")).await;
        let who: String = conn
            .query_one("SELECT current_user::text", &[])
            .await
            .expect("who")
            .get(0);
        assert_eq!(who, user);
        let config = ConnectConfig::from_url(&format!(
            "postgres://{user}:wrong-password-xyz@127.0.0.1:{port}/postgres"
        ))
        .expect("url");
        let err = connect(&config).await.expect_err("wrong password");
        assert_eq!(err.sqlstate().map(|s| s.code()), Some("28P01"), "{err}");
        let shown = format!("{err} {err:?} {config:?}");
        assert!(!shown.contains("wrong-password-xyz"), "password leaked: {shown}");
    }
}

#[tokio::test]
async fn unix_socket_connections() {
    let c = cluster();
    let url = format!(
        "host={} port={} user=postgres dbname=postgres",
        c.socket_dir().display(),
        c.port()
    );
    let conn = open(&url).await;
    assert!(conn.state().is_clean());
    let local: Option<String> = conn
        .query_one("SELECT inet_client_addr()::text", &[])
        .await
        .expect("addr")
        .get(0);
    assert_eq!(local, None, "a unix socket has no client address");
}

#[tokio::test]
async fn startup_settings_and_application_name() {
    let db = cluster().create_database().expect("database");
    let config = ConnectConfig::from_url(&db.url)
        .expect("url")
        .application_name("holdfast-test-settings")
        .statement_timeout(Some(Duration::from_secs(300)))
        .idle_in_transaction_session_timeout(Some(Duration::from_secs(60)))
        .lock_timeout(Some(Duration::from_millis(1500)));
    let conn = connect(&config).await.expect("connect");
    let row = conn
        .query_one(
            "SELECT current_setting('statement_timeout'), current_setting('idle_in_transaction_session_timeout'),
                    current_setting('lock_timeout'), current_setting('application_name')",
            &[],
        )
        .await
        .expect("settings");
    let got: (String, String, String, String) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        got,
        (
            "5min".into(),
            "1min".into(),
            "1500ms".into(),
            "holdfast-test-settings".into()
        )
    );
}

#[tokio::test]
async fn whole_connect_is_bounded_by_connect_timeout() {
    // A server that accepts TCP and then says nothing, like a hung proxy.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let config = ConnectConfig::from_url(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
        .expect("url")
        .connect_timeout(Duration::from_millis(300));
    let result = tokio::time::timeout(BOUND, connect(&config))
        .await
        .expect("connect returns");
    match result {
        Err(ConnectError::Timeout { target, .. }) => assert_eq!(target, format!("127.0.0.1:{port}")),
        other => panic!("expected a timeout, got {other:?}"),
    }
    hold.abort();
}

#[tokio::test]
async fn refused_connection_is_an_io_error_naming_the_target() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let config = ConnectConfig::from_url(&format!("postgres://u:pw-in-url@127.0.0.1:{port}/d")).expect("url");
    let err = connect(&config).await.expect_err("nothing listens");
    assert!(matches!(err, ConnectError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!format!("{err:?}").contains("pw-in-url"));
}
