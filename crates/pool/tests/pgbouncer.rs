//! The pool through a real PgBouncer in transaction mode: what breaks without the pooler
//! setting, what the setting changes, and that the wire tap and the return policy still work
//! (PgBouncer passes ReadyForQuery and its status through to the client).

mod support;

use std::time::Duration;

use holdfast_pool::{ConnectConfig, Pool, PoolConfig, PoolError, Pooler, TxStatus};
use holdfast_tempdb::{Database, PgBouncerOptions, TempPgBouncer};
use holdfast_testkit::cluster;
use support::{app_name, eventually, BOUND};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

/// A fresh database and a PgBouncer of this test's own in front of the shared cluster, with
/// two server connections per database (so that which one a client gets is deterministic:
/// PgBouncer reuses the most recently released one first).
fn bouncer() -> (Database, TempPgBouncer) {
    let db = cluster().create_database().expect("database");
    let bouncer =
        TempPgBouncer::start(cluster(), PgBouncerOptions::default().default_pool_size(2)).expect("pgbouncer");
    (db, bouncer)
}

/// No start-up statement timeout: PgBouncer refuses start-up options (the first test shows
/// it), and the tests without the pooler setting are about what breaks after connecting.
fn config(bouncer: &TempPgBouncer, db: &Database, test: &str, pooler: Pooler) -> PoolConfig {
    let connect = ConnectConfig::from_url(&bouncer.url_for(&db.name))
        .expect("url")
        .application_name(&app_name(test))
        .statement_timeout(None)
        .pooler(pooler);
    PoolConfig::new(connect).pool_timeout(BOUND)
}

/// Sessions of database `db` that the server shows idle in a transaction.
fn idle_in_transaction(db: &Database) -> String {
    cluster()
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND state LIKE 'idle in transaction%'",
                db.name
            ),
        )
        .expect("pg_stat_activity")
}

/// PgBouncer's server connections to `db`: (active, that is linked to a client; idle).
fn server_connections(bouncer: &TempPgBouncer, db: &Database) -> (String, String) {
    let pools = bouncer.admin_rows("SHOW POOLS").expect("show pools");
    let column = |row: &Vec<(String, String)>, name: &str| {
        row.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    pools
        .iter()
        .find(|row| column(row, "database") == db.name)
        .map(|row| (column(row, "sv_active"), column(row, "sv_idle")))
        .unwrap_or_else(|| panic!("no pool for {} in {pools:?}", db.name))
}

#[tokio::test]
async fn start_up_options_are_refused_by_pgbouncer_and_not_sent_behind_a_pooler() {
    let (db, bouncer) = bouncer();
    let timeout = Some(Duration::from_secs(5));
    let mut direct = config(&bouncer, &db, "options", Pooler::None).pool_timeout(Duration::from_secs(2));
    direct.connect = direct.connect.statement_timeout(timeout);
    let err = Pool::new(direct)
        .expect("pool")
        .get()
        .await
        .expect_err("options refused");
    assert!(
        err.to_string().contains("unsupported startup parameter"),
        "PgBouncer refuses the start-up options a direct connection carries: {err}"
    );

    let mut pooled = config(&bouncer, &db, "options", Pooler::Transaction);
    pooled.connect = pooled.connect.statement_timeout(timeout);
    let pool = Pool::new(pooled).expect("pool");
    let conn = pool.get().await.expect("no options sent behind the pooler");
    conn.batch_execute("SELECT 1").await.expect("query");
    assert_eq!(
        pool.config().connect.local_settings_sql().as_deref(),
        Some("SET LOCAL statement_timeout = 5000"),
        "the timeout moves into each transaction (holdfast-tx sends it with BEGIN)"
    );
}

#[tokio::test]
async fn named_statements_break_across_server_connections_and_query_cached_does_not() {
    let (db, bouncer) = bouncer();

    // Without the setting: a statement prepared on one server connection is executed on
    // another as soon as someone else holds the first one.
    let pool = Pool::new(config(&bouncer, &db, "named", Pooler::None)).expect("pool");
    let a = pool.get().await.expect("a");
    let b = pool.get().await.expect("b");
    let statement = a.prepare_cached("SELECT $1::int").await.expect("prepare");
    // B takes the server connection A just released (the most recent one) and keeps it.
    b.batch_execute("BEGIN; SELECT 1").await.expect("b begins");
    let err = a
        .query(&statement, &[&7i32])
        .await
        .expect_err("the statement is on the server connection B holds");
    assert_eq!(err.code(), Some(&SqlState::INVALID_SQL_STATEMENT_NAME), "{err}");
    b.batch_execute("ROLLBACK").await.expect("b ends");
    drop((a, b, statement));
    pool.close().await;

    // With it: unnamed statements, parsed where they run.
    let pool = Pool::new(config(&bouncer, &db, "named", Pooler::Transaction)).expect("pool");
    let a = pool.get().await.expect("a");
    let b = pool.get().await.expect("b");
    let first = a
        .query_typed_cached("SELECT $1::int", &[(&7i32, Type::INT4)])
        .await
        .expect("first");
    assert_eq!(first[0].get::<_, i32>(0), 7);
    b.batch_execute("BEGIN; SELECT 1").await.expect("b begins");
    let second = a
        .query_typed_cached("SELECT $1::int", &[(&8i32, Type::INT4)])
        .await
        .expect("runs on the other server connection");
    assert_eq!(second[0].get::<_, i32>(0), 8);
    b.batch_execute("ROLLBACK").await.expect("b ends");

    a.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2), (3)")
        .await
        .expect("setup");
    let updated = a
        .execute_typed_cached("UPDATE t SET x = x + $1", &[(&1i32, Type::INT4)])
        .await
        .expect("update");
    assert_eq!(
        updated, 3,
        "rows affected, counted from the unnamed statement's reply"
    );

    // Untyped: the types are learned once (a prepare inside a rolled-back transaction), then
    // it runs unnamed like the typed form, on whichever server connection it gets.
    b.batch_execute("BEGIN; SELECT 1").await.expect("b begins");
    for n in [5i32, 6] {
        let rows = a
            .query_cached("SELECT $1 + 1", &[&n])
            .await
            .expect("untyped through the pooler");
        assert_eq!(rows[0].get::<_, i32>(0), n + 1);
    }
    b.batch_execute("ROLLBACK").await.expect("b ends");
    let updated = pool
        .execute("UPDATE t SET x = x + $1", &[&1i32])
        .await
        .expect("pool.execute untyped");
    assert_eq!(updated, 3);
    assert_eq!(
        a.state().named_statements_outside_transactions(),
        0,
        "no named statement outlived its transaction"
    );

    match a.prepare_cached("SELECT 1").await {
        Err(PoolError::NotThroughPooler { feature, instead }) => {
            assert_eq!(feature, "prepare_cached");
            assert!(instead.contains("query_cached"), "{instead}");
        }
        other => panic!("prepare_cached behind a transaction pooler must be refused: {other:?}"),
    }
}

#[tokio::test]
async fn the_tap_sees_through_pgbouncer_and_a_dirty_return_is_rolled_back() {
    let (db, bouncer) = bouncer();
    let pool = Pool::new(
        config(&bouncer, &db, "dirty", Pooler::Transaction)
            .pool_size(1)
            .max_overflow(0),
    )
    .expect("pool");
    let conn = pool.get().await.expect("get");
    conn.batch_execute("CREATE TABLE t (x int)")
        .await
        .expect("create");
    conn.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .expect("raw begin");
    assert_eq!(
        conn.state().tx_status(),
        TxStatus::InTransaction,
        "PgBouncer forwards ReadyForQuery 'T'"
    );
    assert_eq!(
        idle_in_transaction(&db),
        "1",
        "PgBouncer's server connection holds it"
    );
    assert_eq!(
        server_connections(&bouncer, &db),
        ("1".to_string(), "0".to_string()),
        "linked to our client while the transaction is open"
    );
    drop(conn);

    let conn = pool.get().await.expect("get again");
    assert_eq!(conn.state().tx_status(), TxStatus::Idle);
    let rows: i64 = conn
        .query_cached("SELECT count(*) FROM t", &[])
        .await
        .expect("count")[0]
        .get(0);
    assert_eq!(
        rows, 0,
        "the insert was rolled back before the connection was reused"
    );
    assert_eq!(idle_in_transaction(&db), "0");
    assert_eq!(
        server_connections(&bouncer, &db),
        ("0".to_string(), "1".to_string()),
        "the server connection went back to PgBouncer's idle set"
    );
}

#[tokio::test]
async fn a_pgbouncer_restart_is_seen_without_a_round_trip_and_the_pool_serves_again() {
    let (db, bouncer) = bouncer();
    let pool = Pool::new(config(&bouncer, &db, "restart", Pooler::Transaction)).expect("pool");
    let a = pool.get().await.expect("a");
    let b = pool.get().await.expect("b");
    a.batch_execute("SELECT 1").await.expect("a works");
    b.batch_execute("SELECT 1").await.expect("b works");

    bouncer.restart().expect("restart pgbouncer");
    eventually("the tap sees both connections closed by PgBouncer", || async {
        a.state().liveness().is_dead() && b.state().liveness().is_dead()
    })
    .await;
    drop((a, b));

    for i in 0..5 {
        let conn = pool
            .get()
            .await
            .expect("a new connection through the new PgBouncer");
        let n: i32 = conn
            .query_typed_cached("SELECT $1::int", &[(&i, Type::INT4)])
            .await
            .expect("query")[0]
            .get(0);
        assert_eq!(n, i);
    }
    assert_eq!(idle_in_transaction(&db), "0");
}

#[tokio::test]
async fn behind_a_transaction_pooler_pool_query_takes_a_connection_of_its_own() {
    // Pipelining other callers' statements on one client connection is not done through a
    // transaction pooler: a second caller queues for a connection instead of joining a busy
    // one (directly, `pool_query.rs` shows it joining).
    let (db, bouncer) = bouncer();
    cluster()
        .psql(&db.name, "CREATE TABLE t (x int)")
        .expect("create");
    let locker = holdfast_pool::connect(&ConnectConfig::from_url(&db.url).expect("url"))
        .await
        .expect("direct connection");
    locker
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let pool = Pool::new(
        config(&bouncer, &db, "query-pooler", Pooler::Transaction)
            .pool_size(1)
            .max_overflow(0),
    )
    .expect("pool");
    let a = tokio::spawn({
        let pool = pool.clone();
        async move { pool.query("SELECT count(*) FROM t", &[]).await }
    });
    // Watched from outside the locker's transaction (which sees one snapshot of the view).
    let watcher = holdfast_pool::connect(&ConnectConfig::from_url(&db.url).expect("url"))
        .await
        .expect("watcher");
    eventually("the first caller waits on the lock", || async {
        watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .get::<_, i64>(0)
            == 1
    })
    .await;
    let b = tokio::spawn({
        let pool = pool.clone();
        async move { pool.query_typed("SELECT $1::int", &[(&7i32, Type::INT4)]).await }
    });
    eventually("the second caller queues for the connection", || async {
        pool.status().waiting == 1
    })
    .await;
    assert_eq!(pool.status().in_use, 1);
    locker.batch_execute("COMMIT").await.expect("unlock");
    let rows = a.await.expect("A's task").expect("A");
    assert_eq!(rows[0].get::<_, i64>(0), 0);
    let rows = tokio::time::timeout(BOUND, b)
        .await
        .expect("B in time")
        .expect("B's task")
        .expect("B");
    assert_eq!(rows[0].get::<_, i32>(0), 7);
    assert_eq!(idle_in_transaction(&db), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_session_pooler_the_probe_leaves_a_long_statement_alone() {
    // In session mode the pool needs no pooler setting, but the backend pid a connection is
    // given is PgBouncer's invention: a probe that looked it up would find no such backend
    // and close a connection whose statement is running fine (or terminate a stranger).
    let db = cluster().create_database().expect("database");
    let bouncer = TempPgBouncer::start(
        cluster(),
        PgBouncerOptions::default()
            .default_pool_size(2)
            .pool_mode(holdfast_tempdb::PoolMode::Session),
    )
    .expect("pgbouncer");
    let pool = Pool::new(
        config(&bouncer, &db, "session-probe", Pooler::None)
            .pool_size(1)
            .probe_after(Some(Duration::from_millis(200))),
    )
    .expect("pool");
    // Maintenance looks once a second: two looks see the statement silent past 200 ms.
    let conn = pool.get().await.expect("get");
    let row = conn
        .query_one("SELECT 7 FROM pg_sleep(2.5)", &[])
        .await
        .expect("a running statement is left alone");
    assert_eq!(row.get::<_, i32>(0), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_each_target_is_judged_by_the_servers_role() {
    // PgBouncer passes the server's role parameters on to its clients: the role is known
    // without a query, and judged as on a direct connection.
    let (db, bouncer) = bouncer();
    let url = bouncer.url_for(&db.name);
    for (target, qualifies) in [
        ("read-write", true),
        ("primary", true),
        ("standby", false),
        ("read-only", false),
    ] {
        let connect = ConnectConfig::from_url(&format!("{url}?target_session_attrs={target}"))
            .expect("url")
            .application_name(&app_name("bouncer-role"))
            .statement_timeout(None)
            .pooler(Pooler::Transaction);
        let result = holdfast_pool::connect(&connect).await;
        match (result, qualifies) {
            (Ok(conn), true) => {
                assert_eq!(conn.state().server_role().in_hot_standby, Some(false), "{target}");
            }
            (Err(error), false) => assert!(error.to_string().contains("is a primary"), "{target}: {error}"),
            (Ok(_), false) => panic!("{target}: a primary qualified"),
            (Err(error), true) => panic!("{target}: {error}"),
        }
    }
}
