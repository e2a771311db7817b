//! Reads of callers sharing a lane, gathered into read-only transactions by the connection's
//! tap (see `holdfast_wire::Gathering`), against a real cluster.

use std::time::Duration;

use futures_util::future::join_all;

use crate::pool::statements::Params;
use crate::pool::Pool;
use crate::PoolConfig;

/// A pool of one connection: every caller of `query` is on its lane.
fn one_connection() -> Pool {
    let url = holdfast_testkit::cluster().url();
    let config = PoolConfig::from_url(&url)
        .expect("config")
        .pool_size(1)
        .max_overflow(0)
        .pipeline_stall(Duration::from_secs(60));
    Pool::new(config).expect("pool")
}

/// (statements gathered, groups failed) on the pool's one connection.
async fn gathering(pool: &Pool) -> (u64, u64) {
    let conn = pool.get().await.expect("the connection");
    let g = conn.connection().gathering();
    (g.gathered(), g.groups_failed())
}

#[tokio::test]
async fn reads_of_callers_sharing_a_lane_are_gathered_and_each_gets_its_own_answer() {
    let pool = one_connection();
    let wait = Duration::from_secs(30);
    let first = pool.seat(wait).await.expect("first seat");
    let second = pool.seat(wait).await.expect("second seat");
    let sql = "SELECT $1::int * 10";
    // Prepared first, so that the eight below are written together.
    first
        .conn
        .rows(sql, Params::Untyped(&[&0]))
        .await
        .expect("warm-up");
    let values: Vec<i32> = (1..=8).collect();
    let conn = &first.conn;
    let answers = join_all(
        values
            .iter()
            .map(|v| async move { conn.rows(sql, Params::Untyped(&[v])).await }),
    )
    .await;
    for (v, rows) in values.iter().zip(answers) {
        let rows = rows.expect("a gathered read");
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].get::<_, i32>(0),
            v * 10,
            "each caller gets its own answer"
        );
    }
    let g = first.conn.connection().gathering();
    assert_eq!(g.gathered(), 8, "the eight reads went in groups");
    assert_eq!(g.groups_failed(), 0);
    drop((first, second));
}

#[tokio::test]
async fn a_read_that_writes_is_refused_in_its_group_and_runs_once_on_its_own() {
    let pool = one_connection();
    pool.execute("CREATE TABLE gathered_notes (v int)", &[])
        .await
        .expect("table");
    pool.execute(
        "CREATE FUNCTION gathered_note(v int) RETURNS int LANGUAGE sql AS \
         'INSERT INTO gathered_notes VALUES (v) RETURNING v'",
        &[],
    )
    .await
    .expect("function");
    let sql = "SELECT gathered_note($1::int)";
    pool.query(sql, &[&0])
        .await
        .expect("prepared on the lane's connection");
    let round = |from: i32| {
        let pool = pool.clone();
        async move {
            let values: Vec<i32> = (from..from + 8).collect();
            let pool = &pool;
            let answers = join_all(values.iter().map(|v| async move { pool.query(sql, &[v]).await })).await;
            for (v, rows) in values.iter().zip(answers) {
                let rows = rows.expect("the read that writes, run on its own");
                assert_eq!(rows[0].get::<_, i32>(0), *v);
            }
        }
    };
    round(1).await;
    let (_, failed) = gathering(&pool).await;
    assert!(failed >= 1, "the read-only group refused the write");
    round(9).await;
    assert_eq!(gathering(&pool).await.1, failed, "and it is not gathered again");
    let rows = pool
        .query("SELECT count(*), count(DISTINCT v) FROM gathered_notes", &[])
        .await
        .expect("count");
    assert_eq!(rows[0].get::<_, i64>(0), 17, "every write once, none twice");
    assert_eq!(rows[0].get::<_, i64>(1), 17);
}

#[tokio::test]
async fn an_error_in_a_group_reaches_its_own_caller_only() {
    let pool = one_connection();
    let sql = "SELECT 100 / $1::int";
    pool.query(sql, &[&1]).await.expect("prepared");
    let divisors: Vec<i32> = vec![1, 0, 2, 4, 0, 5, 10, 20];
    let pool = &pool;
    let answers = join_all(
        divisors
            .iter()
            .map(|d| async move { pool.query(sql, &[d]).await }),
    )
    .await;
    for (d, answer) in divisors.iter().zip(answers) {
        match (d, answer) {
            (0, Err(e)) => {
                let db = e.as_db_error().expect("the server's error");
                assert_eq!(db.code().code(), "22012", "{e}");
                assert!(e.to_string().contains("division by zero"), "{e}");
            }
            (0, Ok(_)) => panic!("dividing by zero succeeded"),
            (d, answer) => {
                let rows = answer.expect("a division that works");
                assert_eq!(rows[0].get::<_, i32>(0), 100 / d);
            }
        }
    }
    let (_, failed) = gathering(pool).await;
    assert!(failed >= 1, "the errors came from groups");
}

#[tokio::test]
async fn nothing_is_gathered_when_gather_reads_is_off() {
    let url = holdfast_testkit::cluster().url();
    let config = PoolConfig::from_url(&url)
        .expect("config")
        .pool_size(1)
        .max_overflow(0)
        .gather_reads(false);
    let pool = Pool::new(config).expect("pool");
    let sql = "SELECT $1::int + 1";
    pool.query(sql, &[&0]).await.expect("prepared");
    let values: Vec<i32> = (0..8).collect();
    let pool = &pool;
    let answers = join_all(values.iter().map(|v| async move { pool.query(sql, &[v]).await })).await;
    for (v, rows) in values.iter().zip(answers) {
        assert_eq!(rows.expect("a read")[0].get::<_, i32>(0), v + 1);
    }
    assert_eq!(gathering(pool).await, (0, 0), "the setting is honoured");
}

/// A read waiting for a lock fails its group at the group's `lock_timeout` instead of
/// holding it: the read gathered with it is answered while the lock is still held.
#[tokio::test]
async fn a_read_waiting_for_a_lock_does_not_hold_the_reads_gathered_with_it() {
    let url = holdfast_testkit::cluster().url();
    let config = PoolConfig::from_url(&url)
        .expect("config")
        .pool_size(4)
        .max_overflow(0)
        .pipeline_stall(Duration::from_secs(60));
    let pool = Pool::new(config).expect("pool");
    let blocker = pool.get().await.expect("a session of its own");
    blocker
        .execute("SELECT pg_advisory_lock(1)", &[])
        .await
        .expect("key 1 held");
    let wait = Duration::from_secs(30);
    // Two seats keep the lane shared (gathering on); the callers below join it. (Four
    // connections: the blocker's, the lane's, and one each for the two statements to run
    // again on their own.)
    let first = pool.seat(wait).await.expect("first seat");
    let second = pool.seat(wait).await.expect("second seat");
    let sql = "SELECT pg_advisory_xact_lock($1::bigint)::text";
    first
        .conn
        .rows(sql, Params::Untyped(&[&0i64]))
        .await
        .expect("prepared");
    let call = |key: i64| {
        let pool = pool.clone();
        tokio::spawn(async move { pool.query(sql, &[&key]).await.map(|_| key) })
    };
    let (locked, free) = (call(1), call(2));
    let answered = tokio::time::timeout(Duration::from_secs(10), free)
        .await
        .expect("the free read is answered while key 1 is held")
        .expect("task");
    assert_eq!(answered.expect("the free read"), 2);
    assert!(!locked.is_finished(), "the other still waits for key 1");
    assert!(
        first.conn.connection().gathering().groups_failed() >= 1,
        "the two were gathered, and the lock wait failed their group"
    );
    blocker
        .execute("SELECT pg_advisory_unlock(1)", &[])
        .await
        .expect("key 1 released");
    let locked = tokio::time::timeout(Duration::from_secs(10), locked)
        .await
        .expect("answered once key 1 is free")
        .expect("task");
    assert_eq!(locked.expect("the read that waited"), 1);
    drop((first, second));
}
