//! Promises 1 and 2 against a real PostgreSQL: whatever a caller does with a connection, the
//! next caller gets an idle, clean one, and nothing the first caller left behind survives.

mod support;

use holdfast_pool::{Pool, PrePing, TxStatus};
use holdfast_testkit::cluster;
use support::{assert_no_idle_in_transaction, config_for, BOUND};

/// One connection, so the next checkout gets the very connection the last caller had.
fn single(test: &str) -> Pool {
    Pool::new(config_for(cluster(), test).pool_size(1).max_overflow(0)).expect("pool")
}

#[tokio::test]
async fn raw_begin_and_insert_then_drop_is_rolled_back() {
    let pool = single("raw-begin");
    let conn = pool.get().await.expect("get");
    conn.batch_execute("CREATE TABLE t (x int)")
        .await
        .expect("create");
    let pid = conn.backend_pid();
    conn.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .expect("raw begin");
    drop(conn);

    let conn = pool.get().await.expect("get again");
    assert_eq!(conn.backend_pid(), pid, "the same connection came back");
    assert_eq!(conn.state().tx_status(), TxStatus::Idle);
    let rows: i64 = conn
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        rows, 0,
        "the forgotten transaction was rolled back, not committed"
    );
    drop(conn);
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn failed_transaction_is_rolled_back() {
    let pool = single("failed-tx");
    let conn = pool.get().await.expect("get");
    conn.batch_execute("BEGIN").await.expect("begin");
    conn.batch_execute("SELECT 1/0").await.expect_err("error");
    drop(conn);
    let conn = pool.get().await.expect("get again");
    assert_eq!(conn.state().tx_status(), TxStatus::Idle);
    conn.query_one("SELECT 1", &[]).await.expect("usable: no 25P02");
    drop(conn);
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn query_dropped_during_pg_sleep_does_not_reach_the_next_user() {
    let pool = single("dropped-query");
    let conn = pool.get().await.expect("get");
    let pid = conn.backend_pid().expect("pid");
    let admin = support::admin(&pool).await;
    {
        let sleeping = conn.query("SELECT pg_sleep(600)", &[]);
        tokio::pin!(sleeping);
        tokio::select! {
            _ = &mut sleeping => panic!("pg_sleep(600) cannot finish"),
            _ = support::eventually("pg_sleep running", || async {
                let n: i64 = admin
                    .query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND query LIKE '%pg_sleep%' AND state = 'active'", &[&pid])
                    .await
                    .expect("activity")
                    .get(0);
                n == 1
            }) => {}
        }
    }
    assert_eq!(conn.state().in_flight(), 1);
    drop(conn);
    // The next user gets a clean connection: the abandoned query was cancelled and drained.
    let conn = tokio::time::timeout(BOUND, pool.get())
        .await
        .expect("bounded")
        .expect("get");
    assert_eq!(conn.state().in_flight(), 0);
    assert_eq!(conn.state().tx_status(), TxStatus::Idle);
    let n: i32 = conn.query_one("SELECT 7", &[]).await.expect("query").get(0);
    assert_eq!(n, 7);
    let sleeping: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND query LIKE 'SELECT pg_sleep%' AND state = 'active'",
            &[&pid],
        )
        .await
        .expect("activity")
        .get(0);
    assert_eq!(sleeping, 0, "the abandoned pg_sleep no longer runs");
    drop(conn);
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn a_panic_while_holding_a_connection_rolls_it_back() {
    let pool = single("panic");
    pool.get()
        .await
        .expect("get")
        .batch_execute("CREATE TABLE t (x int)")
        .await
        .expect("create");
    let p = pool.clone();
    let task = tokio::spawn(async move {
        let conn = p.get().await.expect("get");
        conn.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
            .await
            .expect("insert");
        panic!("the caller panics mid-transaction");
    });
    assert!(task.await.expect_err("panicked").is_panic());
    let conn = pool.get().await.expect("get after panic");
    assert_eq!(conn.state().tx_status(), TxStatus::Idle);
    let rows: i64 = conn
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 0);
    drop(conn);
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn a_clean_checkout_and_return_costs_zero_round_trips() {
    let pool = Pool::new(
        config_for(cluster(), "zero-rt")
            .pool_size(1)
            .max_overflow(0)
            .pre_ping(PrePing::Auto),
    )
    .expect("pool");
    let conn = pool.get().await.expect("get");
    conn.query_one("SELECT 1", &[]).await.expect("warm");
    let before = conn.state().snapshot();
    drop(conn);
    for _ in 0..100 {
        let conn = pool.get().await.expect("get");
        drop(conn);
    }
    let conn = pool.get().await.expect("get");
    let after = conn.state().snapshot();
    assert_eq!(
        after.messages_sent, before.messages_sent,
        "no ping, no reset, no round trip"
    );
    assert_eq!(after.bytes_received, before.bytes_received);
    support::assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn reset_query_runs_on_return() {
    let config = config_for(cluster(), "reset-query")
        .pool_size(1)
        .max_overflow(0)
        .reset_query(Some("RESET ALL".into()));
    let pool = Pool::new(config).expect("pool");
    let conn = pool.get().await.expect("get");
    conn.batch_execute("SET work_mem = '7MB'").await.expect("set");
    drop(conn);
    let conn = pool.get().await.expect("get");
    let work_mem: String = conn.query_one("SHOW work_mem", &[]).await.expect("show").get(0);
    assert_ne!(work_mem, "7MB", "session state was reset");
    support::assert_no_idle_in_transaction(&pool).await;
}
