//! `Pool::query` / `Pool::execute` against a real PostgreSQL: single statements pipelined on
//! shared connections, and nothing one caller does reaches another.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use holdfast_pool::{Pool, PoolError, PrePing};
use holdfast_testkit::cluster;
use support::{admin, assert_no_idle_in_transaction, busy_connection, config_for, eventually, BOUND};
use tokio_postgres::types::Type;

fn pool_of(test: &str, size: usize) -> Pool {
    Pool::new(config_for(cluster(), test).pool_size(size).max_overflow(0)).expect("pool")
}

fn sqlstate(e: &PoolError) -> Option<String> {
    match e {
        PoolError::Database(db) => db.code().map(|c| c.code().to_string()),
        _ => None,
    }
}

#[tokio::test]
async fn a_second_caller_is_pipelined_on_the_busy_connection_instead_of_queueing() {
    let pool = pool_of("query-pipelined", 1);
    let (locker, a) = busy_connection(&pool).await;
    // B, polled once: it joins A's connection and sends its statement behind A's.
    let b = pool.query_typed("SELECT $1::int", &[(&7i32, Type::INT4)]);
    futures_util::pin_mut!(b);
    assert!(
        b.as_mut().now_or_never().is_none(),
        "B waits for A's answer first"
    );
    let status = pool.status();
    assert_eq!(
        (status.in_use, status.waiting),
        (1, 0),
        "B shares the one connection instead of queueing for it: {status}"
    );
    locker.batch_execute("COMMIT").await.expect("unlock");
    let rows = a.await.expect("A's task").expect("A");
    assert_eq!(rows[0].get::<_, i64>(0), 0);
    let rows = tokio::time::timeout(BOUND, b)
        .await
        .expect("B in time")
        .expect("B");
    assert_eq!(rows[0].get::<_, i32>(0), 7);
    assert_eq!(pool.status().in_use, 0, "the shared connection went back");
    assert_no_idle_in_transaction(&pool).await;
}

/// The statement the lane tests wait in: it holds until its key is free.
const KEYED: &str = "SELECT pg_advisory_xact_lock($1)";

/// A pool of two connections with [`KEYED`] prepared on both and no pre-ping, so that a
/// caller joining a lane or making one sends its statement at once, with no round trip of
/// its own; and another session holding advisory keys 1 to `keys`.
///
/// Reads are not gathered there: these tests follow which lane each caller takes by
/// releasing one statement's lock at a time, and a gathered group answers its callers
/// together (a read waiting for a lock fails its group instead: see
/// `a_read_waiting_for_a_lock_does_not_hold_the_reads_gathered_with_it`).
async fn keyed_pool(config: holdfast_pool::PoolConfig, keys: i64) -> (Pool, holdfast_pool::Connection) {
    let config = config
        .pool_size(2)
        .max_overflow(0)
        .pre_ping(PrePing::Never)
        .gather_reads(false);
    let pool = Pool::new(config).expect("pool");
    {
        let (a, b) = (pool.get().await.expect("a"), pool.get().await.expect("b"));
        for conn in [&a, &b] {
            conn.query_typed_cached(KEYED, &[(&0i64, Type::INT8)])
                .await
                .expect("prepared on both connections");
        }
    }
    let blocker = admin(&pool).await;
    blocker
        .execute(
            "SELECT pg_advisory_lock(k) FROM generate_series(1, $1::int8) k",
            &[&keys],
        )
        .await
        .expect("locks");
    (pool, blocker)
}

#[tokio::test]
async fn callers_gather_on_the_busiest_lane_and_a_lane_left_with_few_goes_back() {
    // Two connections, four statements per lane; another session holds keys 1 to 6: each
    // caller's statement waits for its key.
    let config = config_for(cluster(), "query-gather")
        .pipeline_depth(4)
        .pipeline_stall(BOUND);
    let (pool, blocker) = keyed_pool(config, 6).await;
    let sql = KEYED;
    let unlock = |key: i64| {
        let blocker = &blocker;
        async move {
            blocker
                .execute("SELECT pg_advisory_unlock($1)", &[&key])
                .await
                .expect("unlock");
        }
    };
    let call = |key: i64| {
        let pool = pool.clone();
        Box::pin(async move { pool.query_typed(sql, &[(&key, Type::INT8)]).await })
    };
    // Each caller is polled once: that takes its seat and sends its statement.
    let mut first: Vec<_> = (1..=4).map(call).collect();
    for caller in first.iter_mut() {
        assert!(caller.as_mut().now_or_never().is_none(), "waits for its key");
    }
    assert_eq!(
        pool.status().in_use,
        1,
        "four callers, one lane: {}",
        pool.status()
    );
    let mut fifth = call(5);
    assert!(fifth.as_mut().now_or_never().is_none());
    assert_eq!(
        pool.status().in_use,
        2,
        "the first lane is full: a second one: {}",
        pool.status()
    );
    // The first lane's first statement ends: three callers left there, one on the second.
    unlock(1).await;
    tokio::time::timeout(BOUND, first.remove(0))
        .await
        .expect("caller 1 in time")
        .expect("caller 1");
    let mut sixth = call(6);
    assert!(sixth.as_mut().now_or_never().is_none());
    // The sixth joined the busier lane, so the second lane's only caller was its last.
    unlock(5).await;
    tokio::time::timeout(BOUND, fifth)
        .await
        .expect("caller 5 in time")
        .expect("caller 5");
    assert_eq!(
        pool.status().in_use,
        1,
        "the lane left with one caller went back when it was done: {}",
        pool.status()
    );
    for key in [2, 3, 4, 6] {
        unlock(key).await;
    }
    first.push(sixth);
    for caller in first {
        tokio::time::timeout(BOUND, caller)
            .await
            .expect("in time")
            .expect("the rest");
    }
    assert_eq!(pool.status().in_use, 0);
    assert_no_idle_in_transaction(&pool).await;
}

/// How long a lane of [`stalling_pool`] may answer nothing before it counts as stalled.
const STALL: Duration = Duration::from_millis(50);

/// A pool of two connections whose lanes count as stalled after [`STALL`].
fn stalling_pool(test: &str) -> Pool {
    Pool::new(
        config_for(cluster(), test)
            .pool_size(2)
            .max_overflow(0)
            .pipeline_stall(STALL),
    )
    .expect("pool")
}

/// A new caller's `SELECT value` is answered while A (from `busy_connection`) still waits
/// on its lock; then the lock is let go, A finishes, and no session is left in a transaction.
async fn answered_while_a_waits(
    pool: &Pool,
    value: i32,
    locker: holdfast_pool::Connection,
    a: support::Answer,
) {
    let rows = tokio::time::timeout(BOUND, pool.query_typed("SELECT $1::int", &[(&value, Type::INT4)]))
        .await
        .expect("answered while A still waits")
        .expect("the new caller");
    assert_eq!(rows[0].get::<_, i32>(0), value);
    assert!(!a.is_finished(), "A still waits on the lock");
    locker.batch_execute("COMMIT").await.expect("unlock");
    a.await.expect("A's task").expect("A");
    assert_no_idle_in_transaction(pool).await;
}

#[tokio::test]
async fn a_caller_does_not_queue_behind_a_stuck_statement_while_the_pool_has_room() {
    let pool = stalling_pool("query-stall");
    // A's statement waits on a table lock: its lane finishes nothing.
    let (locker, a) = busy_connection(&pool).await;
    // The lane was made before A was seen waiting; once `STALL` has passed since, it
    // counts as stalled. (Not a wait for another task: the time is what is under test.)
    tokio::time::sleep(STALL).await;
    // B takes (opens) the pool's other connection instead of queueing behind A; behind A
    // it would wait as long as the lock is held.
    answered_while_a_waits(&pool, 7, locker, a).await;
    assert_eq!(pool.status().in_use, 0);
}

#[tokio::test]
async fn a_caller_does_not_join_a_lane_whose_oldest_statement_waited_too_long_though_others_were_answered() {
    let config = config_for(cluster(), "query-head-wait").pipeline_stall(STALL);
    let (pool, blocker) = keyed_pool(config, 2).await;
    let sql = KEYED;
    let call = |key: i64| {
        let pool = pool.clone();
        Box::pin(async move { pool.query_typed(sql, &[(&key, Type::INT8)]).await })
    };
    let (mut first, mut second) = (call(1), call(2));
    for caller in [&mut first, &mut second] {
        assert!(caller.as_mut().now_or_never().is_none(), "waits for its key");
    }
    assert_eq!(pool.status().in_use, 1, "one lane: {}", pool.status());
    // (The time is what is under test, not another task.)
    tokio::time::sleep(STALL).await;
    // The lane answers its first statement: it has just made progress, but the second
    // statement, now its oldest, has waited longer than the stall.
    blocker
        .execute("SELECT pg_advisory_unlock(1)", &[])
        .await
        .expect("unlock 1");
    tokio::time::timeout(BOUND, first)
        .await
        .expect("caller 1 in time")
        .expect("caller 1");
    // A third caller with a free key takes the other connection; behind the second
    // statement it would wait as long as key 2 is held.
    tokio::time::timeout(BOUND, call(100))
        .await
        .expect("answered while the lane's oldest statement still waits")
        .expect("caller 3");
    assert!(second.as_mut().now_or_never().is_none(), "caller 2 still waits");
    blocker
        .execute("SELECT pg_advisory_unlock(2)", &[])
        .await
        .expect("unlock 2");
    tokio::time::timeout(BOUND, second)
        .await
        .expect("caller 2 in time")
        .expect("caller 2");
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn a_caller_that_gives_up_does_not_make_a_stuck_lane_look_alive() {
    let pool = stalling_pool("query-gave-up");
    // A's statement waits on a table lock: its lane answers nothing.
    let (locker, a) = busy_connection(&pool).await;
    // With the pool's other connection held, B has nowhere else to go and joins A's lane.
    let held = pool.get().await.expect("the other connection");
    let mut b = Box::pin(pool.query("SELECT 2", &[]));
    assert!(b.as_mut().now_or_never().is_none(), "B waits behind A");
    // (The time is what is under test, not another task.)
    tokio::time::sleep(STALL).await;
    // B gives up, as an API request past its timeout does; then the other connection is free.
    drop(b);
    drop(held);
    // The lane has answered nothing for longer than the stall: C takes the free connection.
    answered_while_a_waits(&pool, 3, locker, a).await;
}

#[tokio::test]
async fn callers_arriving_while_a_lane_is_made_wait_for_it_instead_of_making_their_own() {
    // Nothing open yet: the first caller's lane takes a connect, and fifteen more callers
    // arrive meanwhile. Each of them making a lane of its own opened up to the pool's size
    // at once, and those backends then competed for the server's CPUs.
    let pool = Pool::new(
        config_for(cluster(), "query-one-maker")
            .pool_size(16)
            .max_overflow(0)
            .min_idle(0)
            .pipeline_stall(BOUND),
    )
    .expect("pool");
    let calls = (0..16).map(|_| pool.query("SELECT pg_backend_pid()", &[]));
    let answers = tokio::time::timeout(BOUND, futures_util::future::join_all(calls))
        .await
        .expect("in time");
    let mut pids: Vec<i32> = answers
        .into_iter()
        .map(|rows| rows.expect("answered")[0].get(0))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 1, "one lane for all sixteen: {pids:?}");
    assert_eq!(pool.status().open, 1, "one connection opened: {}", pool.status());
}

#[tokio::test]
async fn when_the_caller_making_a_lane_gives_up_the_next_one_makes_it() {
    // One connection, held: A queues for it to make a lane of, and B waits for A's lane.
    let pool = Pool::new(
        config_for(cluster(), "query-maker-gives-up")
            .pool_size(1)
            .max_overflow(0)
            .pool_timeout(BOUND * 10),
    )
    .expect("pool");
    let held = pool.get().await.expect("the only connection");
    let mut a = Box::pin(pool.query("SELECT 1", &[]));
    assert!(a.as_mut().now_or_never().is_none(), "A queues for the connection");
    let mut b = Box::pin(pool.query("SELECT 2", &[]));
    assert!(b.as_mut().now_or_never().is_none(), "B waits for A's lane");
    assert_eq!(
        pool.status().waiting,
        2,
        "both wait for a connection, B through A's lane: {}",
        pool.status()
    );
    // A gives up (an API request past its timeout); then the connection is free. B makes
    // the lane itself instead of waiting for a lane nobody makes until its own deadline.
    drop(a);
    drop(held);
    let rows = tokio::time::timeout(BOUND, b)
        .await
        .expect("B answered well before its deadline")
        .expect("B");
    assert_eq!(rows[0].get::<_, i32>(0), 2);
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn a_begin_never_joins_a_shared_connection() {
    for begin in ["BEGIN", "  /* comment */ begin", "-- c\nSTART TRANSACTION"] {
        let pool = pool_of("query-begin", 1);
        let (locker, a) = busy_connection(&pool).await;
        // A BEGIN and then an INSERT, each polled once while the connection is busy: had
        // the BEGIN been pipelined on it, the INSERT behind it would run inside that
        // transaction and be rolled back when the connection went back.
        let begin_f = pool.execute(begin, &[]);
        let insert_f = pool.execute("INSERT INTO t VALUES (1)", &[]);
        futures_util::pin_mut!(begin_f, insert_f);
        assert!(begin_f.as_mut().now_or_never().is_none());
        assert!(insert_f.as_mut().now_or_never().is_none());
        locker.batch_execute("COMMIT").await.expect("unlock");
        a.await.expect("A's task").expect("A");
        let (began, inserted) = tokio::time::timeout(BOUND, async { tokio::join!(begin_f, insert_f) })
            .await
            .expect("in time");
        began.expect("begin");
        inserted.expect("insert");
        let other = admin(&pool).await;
        let rows: i64 = other
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(rows, 1, "{begin:?}: the insert ran in autocommit and committed");
        assert_no_idle_in_transaction(&pool).await;
    }
}

#[tokio::test]
async fn several_statements_in_one_string_are_refused() {
    let pool = pool_of("query-multi", 1);
    let refused = pool.query("SELECT 1; BEGIN", &[]).await;
    assert_eq!(
        refused.as_ref().err().and_then(sqlstate).as_deref(),
        Some("42601"),
        "{refused:?}"
    );
    assert_eq!(pool.status().in_use, 0);
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn many_callers_on_few_connections_each_get_their_own_answer() {
    let pool = pool_of("query-many", 2);
    let mut tasks = Vec::new();
    for i in 0..400i32 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let rows = pool
                .query_typed("SELECT $1::int, pg_backend_pid()", &[(&i, Type::INT4)])
                .await
                .expect("query");
            (i, rows[0].get::<_, i32>(0))
        }));
    }
    for task in tasks {
        let (sent, got) = task.await.expect("task");
        assert_eq!(sent, got, "an answer went to the wrong caller");
    }
    let status = pool.status();
    assert!(status.open <= 2, "never more than the pool's size: {status}");
    assert_eq!(status.in_use, 0, "every shared connection went back: {status}");
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn an_error_fails_only_its_own_statement() {
    let pool = pool_of("query-errors", 1);
    let mut tasks = Vec::new();
    for i in 0..200i32 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let divisor = if i % 10 == 0 { 0 } else { 1 };
            let result = pool
                .query_typed(
                    "SELECT $1::int / $2::int",
                    &[(&i, Type::INT4), (&divisor, Type::INT4)],
                )
                .await;
            (i, result)
        }));
    }
    for task in tasks {
        let (i, result) = task.await.expect("task");
        if i % 10 == 0 {
            let code = result.as_ref().err().and_then(sqlstate);
            assert_eq!(code.as_deref(), Some("22012"), "division by zero for {i}");
        } else {
            let rows = result.unwrap_or_else(|e| panic!("statement {i} failed: {e}"));
            assert_eq!(rows[0].get::<_, i32>(0), i);
        }
    }
    assert_eq!(pool.status().in_use, 0);
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn terminated_backends_cost_callers_nothing_once_seen() {
    let pool = pool_of("query-terminate", 4);
    let mut warm = Vec::new();
    for _ in 0..64 {
        let pool = pool.clone();
        warm.push(tokio::spawn(async move { pool.query("SELECT 1", &[]).await }));
    }
    for w in warm {
        w.await.expect("task").expect("warm-up");
    }
    let killed = support::terminate_pool_backends(&pool).await;
    assert!(killed >= 1, "the pool had connections to terminate");
    eventually("the terminated sessions are gone", || async {
        support::server_sessions(&pool).await.is_empty()
    })
    .await;
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move { pool.query("SELECT 1", &[]).await }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.expect("task") {
            errors.push(e.to_string());
        }
    }
    assert!(errors.is_empty(), "callers saw errors: {errors:?}");
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn cancelled_callers_lose_no_connection_and_no_capacity() {
    let pool = pool_of("query-cancel", 2);
    let mut tasks = Vec::new();
    for i in 0..2000u64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            // Dropped at a random point: before, while or after its statement is sent.
            let give_up = Duration::from_micros(fastrand::u64(0..2000));
            let _ = tokio::time::timeout(
                give_up,
                pool.query_typed("SELECT $1::int8", &[(&(i as i64), Type::INT8)]),
            )
            .await;
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let rows = tokio::time::timeout(BOUND, pool.query("SELECT 42", &[]))
        .await
        .expect("in time")
        .expect("query after cancellations");
    assert_eq!(rows[0].get::<_, i32>(0), 42);
    eventually("every connection is back", || async {
        let s = pool.status();
        s.in_use == 0 && s.open <= 2
    })
    .await;
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn a_caller_of_get_is_served_while_shared_statements_keep_coming() {
    let pool = pool_of("query-fair", 1);
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..16 {
        let (pool, stop) = (pool.clone(), Arc::clone(&stop));
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                pool.query("SELECT 1", &[]).await.expect("shared statement");
                n += 1;
            }
            n
        }));
    }
    // Let the shared statements run before asking for the only connection.
    eventually("the shared load is running", || async {
        pool.status().in_use == 1
    })
    .await;
    let conn = pool.get().await.expect("an exclusive caller is served");
    conn.batch_execute("SELECT 1").await.expect("use it");
    drop(conn);
    stop.store(true, Ordering::Relaxed);
    let mut ran = 0;
    for l in load {
        ran += l.await.expect("load task");
    }
    assert!(ran > 0, "the shared load ran");
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn untyped_parameters_take_the_types_the_server_infers() {
    let pool = pool_of("query-untyped", 1);
    let rows = pool
        .query("SELECT $1 + 1, $2::text || '!'", &[&41i32, &"hi"])
        .await
        .expect("untyped");
    assert_eq!(rows[0].get::<_, i32>(0), 42);
    assert_eq!(rows[0].get::<_, String>(1), "hi!");
    // The server read $1 as int4: an i64 does not fit the prepared statement, said plainly.
    let err = pool
        .query("SELECT $1 + 1, $2::text || '!'", &[&41i64, &"hi"])
        .await
        .expect_err("wrong Rust type for the inferred parameter");
    let text = err.to_string();
    assert!(text.contains("i64") && text.contains("int4"), "{text}");
}

#[tokio::test]
async fn the_same_sql_with_other_parameter_types_gets_its_own_statement() {
    // One connection: both calls meet the same statement cache. Keyed by text alone, the
    // second call would reuse the int4 statement and fail to bind the text.
    let pool = pool_of("query-keyed-by-types", 1);
    let rows = pool
        .query_typed("SELECT $1::text", &[(&7i32, Type::INT4)])
        .await
        .expect("int4");
    assert_eq!(rows[0].get::<_, String>(0), "7");
    let rows = pool
        .query_typed("SELECT $1::text", &[(&"seven", Type::TEXT)])
        .await
        .expect("text, on the same connection");
    assert_eq!(rows[0].get::<_, String>(0), "seven");
    let conn = pool.get().await.expect("get");
    let rows = conn
        .query_typed_cached("SELECT $1::text", &[(&8i64, Type::INT8)])
        .await
        .expect("int8 through the connection's cache");
    assert_eq!(rows[0].get::<_, String>(0), "8");
}

#[tokio::test]
async fn a_wait_too_long_for_the_clock_waits_instead_of_panicking() {
    // `Duration::MAX` from now is past what an Instant can hold: a caller who means "as long
    // as it takes" gets that, not a panic in the pool.
    let pool = pool_of("query-wait-forever", 1);
    let held = pool.get().await.expect("the only connection");
    let get = pool.get_timeout(Duration::MAX);
    let read = pool.read_within(Duration::MAX, "SELECT 1::int4", &[]);
    futures_util::pin_mut!(get, read);
    assert!(
        get.as_mut().now_or_never().is_none(),
        "get() waits for the connection"
    );
    assert!(
        read.as_mut().now_or_never().is_none(),
        "the read waits for it too"
    );
    assert_eq!(pool.status().waiting, 2, "both queued: {}", pool.status());
    drop(held);
    let conn = tokio::time::timeout(BOUND, get)
        .await
        .expect("in time")
        .expect("get()");
    drop(conn);
    let rows = tokio::time::timeout(BOUND, read)
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(rows[0].get::<_, i32>(0), 1);
}

#[tokio::test]
async fn a_lane_kept_for_the_next_statement_is_the_pools_to_hand_out_and_to_close() {
    // A lone caller's lane stays parked with the pool's only connection for the next
    // statement. It counts as idle, a caller who will not wait takes it, and closing the
    // pool closes it at once instead of waiting `close_timeout` for it.
    let pool = pool_of("query-parked", 1);
    let rows = pool.query("SELECT 1::int4", &[]).await.expect("a lone query");
    assert_eq!(rows[0].get::<_, i32>(0), 1);
    let status = pool.status();
    assert_eq!((status.open, status.idle, status.in_use), (1, 1, 0), "{status}");
    let conn = pool
        .try_get()
        .await
        .expect("try_get takes the parked lane's connection");
    conn.batch_execute("SELECT 1").await.expect("use it");
    drop(conn);
    pool.query("SELECT 1", &[]).await.expect("a lone query again");
    assert_eq!(pool.close().await, 0, "nothing left in use");
    eventually("no server session left", || async {
        support::server_sessions(&pool).await.is_empty()
    })
    .await;
}
