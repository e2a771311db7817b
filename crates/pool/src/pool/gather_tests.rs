//! Reads of callers sharing a lane, gathered into read-only transactions by the connection's
//! tap (see `holdfast_wire::Gathering`), against a real cluster.

use std::time::Duration;

use futures_util::future::join_all;

use tokio_postgres::types::ToSql;

use super::tests::lane_pool;
use super::Seat;
use crate::pool::statements::Params;
use crate::pool::Pool;

/// A pool of one connection: every caller of `query` is on its lane.
fn one_connection() -> Pool {
    lane_pool(1, |c| c)
}

/// Two seats on a lane of `pool`, which keep it shared (its reads gathered) for the
/// callers who join it, with `sql` prepared on its connection (run with `param`).
async fn shared_lane<'p>(pool: &'p Pool, sql: &str, param: &(dyn ToSql + Sync)) -> (Seat<'p>, Seat<'p>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let first = pool.seat(deadline).await.expect("first seat");
    let second = pool.seat(deadline).await.expect("second seat");
    first
        .conn
        .rows(sql, Params::Untyped(&[param]))
        .await
        .expect("prepared");
    (first, second)
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
    let sql = "SELECT $1::int * 10";
    // Prepared first, so that the eight below are written together.
    let (first, second) = shared_lane(&pool, sql, &0).await;
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
    let pool = lane_pool(1, |c| c.gather_reads(false));
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
    // Four connections: the blocker's, the lane's, and one each for the two statements to
    // run again on their own.
    let pool = lane_pool(4, |c| c);
    let blocker = pool.get().await.expect("a session of its own");
    blocker
        .execute("SELECT pg_advisory_lock(1)", &[])
        .await
        .expect("key 1 held");
    let sql = "SELECT pg_advisory_xact_lock($1::bigint)::text";
    // The callers below join the lane these two seats keep shared.
    let (first, second) = shared_lane(&pool, sql, &0i64).await;
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

/// The lane's backend is terminated while a group runs: the first caller of the group gets
/// the server's own error (57P01, passed on at once, not held with the group), the other
/// the connection's end; nobody waits.
#[tokio::test]
async fn a_backend_terminated_during_a_group_answers_its_callers_with_the_cause() {
    let pool = lane_pool(2, |c| c);
    let admin = pool.get().await.expect("a session of its own");
    let sql = "SELECT pg_sleep($1::float8)::text";
    let (first, second) = shared_lane(&pool, sql, &0.0f64).await;
    let pid = first.conn.backend_pid().expect("the lane's backend");
    let conn = &first.conn;
    let group = join_all(
        [60.0f64, 60.0]
            .iter()
            .map(|s| async move { conn.rows(sql, Params::Untyped(&[s])).await }),
    );
    let terminate = async {
        // The group is under way once the lane's backend runs the sleep.
        loop {
            let running: bool = admin
                .query_one(
                    "SELECT count(*) = 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active' \
                     AND query LIKE 'SELECT pg_sleep%'",
                    &[&pid],
                )
                .await
                .expect("activity")
                .get(0);
            if running {
                break;
            }
            tokio::task::yield_now().await;
        }
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .expect("terminated");
    };
    let (answers, ()) = tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::future::join(group, terminate),
    )
    .await
    .expect("the callers are answered, not left waiting");
    let head = answers[0]
        .as_ref()
        .expect_err("the head caller's statement was cut");
    assert_eq!(
        head.code().map(|c| c.code()),
        Some("57P01"),
        "the server's error: {head}"
    );
    let other = answers[1].as_ref().expect_err("so was the other's");
    assert!(other.is_closed(), "the connection's end: {other}");
    assert_eq!(
        first.conn.connection().gathering().gathered(),
        0,
        "no answer came from a group that never ended"
    );
    drop((first, second));
}
