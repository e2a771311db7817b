//! Promises 3 and 4 against a real PostgreSQL: the size limit, overflow, FIFO waiting,
//! timeouts that explain themselves, cancelled acquires that lose nothing, warm-up, idle
//! timeout, recycling, close.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use holdfast_pool::{Pool, PoolError};
use holdfast_testkit::cluster;
use support::{assert_no_idle_in_transaction, config_for, eventually, BOUND};

#[tokio::test]
async fn overflow_connections_close_when_they_come_back() {
    let pool = Pool::new(config_for(cluster(), "overflow").pool_size(2).max_overflow(3)).expect("pool");
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(pool.get().await.expect("get"));
    }
    assert_eq!(pool.status().open, 5);
    assert_eq!(support::server_sessions(&pool).await.len(), 5);
    drop(held);
    let s = pool.status();
    assert_eq!((s.open, s.idle, s.in_use), (2, 2, 0), "{s}");
    eventually("server sees two sessions", || async {
        support::server_sessions(&pool).await.len() == 2
    })
    .await;
    support::assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn never_more_than_the_maximum_counting_connects_in_progress() {
    let pool = Pool::new(config_for(cluster(), "max").pool_size(2).max_overflow(1)).expect("pool");
    let peak = Arc::new(Mutex::new(0usize));
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let pool = pool.clone();
        let peak = Arc::clone(&peak);
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let conn = pool.get().await.expect("get");
                let s = pool.status();
                {
                    let mut p = peak.lock().expect("peak");
                    *p = (*p).max(s.open + s.opening);
                }
                conn.query_one("SELECT 1", &[]).await.expect("query");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(*peak.lock().expect("peak"), 3);
    assert!(support::server_sessions(&pool).await.len() <= 3);
    support::assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn waiters_are_served_first_come_first_served() {
    let pool = Pool::new(config_for(cluster(), "fifo").pool_size(1).max_overflow(0)).expect("pool");
    let held = pool.get().await.expect("get");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let p = pool.clone();
        let order = Arc::clone(&order);
        tasks.push(tokio::spawn(async move {
            let conn = p.get().await.expect("get");
            order.lock().expect("order").push(i);
            drop(conn);
        }));
        // Queue them in a known order: wait until this one is waiting.
        eventually("queued", || {
            let p = pool.clone();
            async move { p.status().waiting == i + 1 }
        })
        .await;
    }
    drop(held);
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(*order.lock().expect("order"), vec![0, 1, 2, 3, 4, 5]);
    support::assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn a_timeout_says_why() {
    let config = config_for(cluster(), "timeout")
        .pool_size(1)
        .max_overflow(0)
        .pool_timeout(Duration::from_millis(200));
    let pool = Pool::new(config).expect("pool");
    let _held = pool.get().await.expect("get");
    let err = pool.get().await.expect_err("the only connection is held");
    assert!(matches!(err, PoolError::Timeout { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("timed out after"), "{text}");
    assert!(text.contains("open 1, idle 0, in use 1"), "{text}");
    assert!(text.contains("max 1"), "{text}");
    assert_eq!(pool.status().waiting, 0, "the timed-out caller left the queue");
    support::assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_cancelled_acquires_lose_nothing() {
    let pool = Pool::new(config_for(cluster(), "cancel").pool_size(3).max_overflow(2)).expect("pool");
    let mut tasks = Vec::new();
    for t in 0..40u64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut served = 0u32;
            for i in 0..250u64 {
                match (t * 7 + i) % 4 {
                    // Polled once, then dropped.
                    0 => {
                        if let Some(Ok(conn)) = pool.get().now_or_never() {
                            served += 1;
                            drop(conn);
                        }
                    }
                    // Dropped after a short, random wait (often while queued).
                    1 | 2 => {
                        let wait = Duration::from_micros(fastrand::u64(0..2000));
                        if let Ok(Ok(conn)) = tokio::time::timeout(wait, pool.get()).await {
                            served += 1;
                            drop(conn);
                        }
                    }
                    // Completed, with a query, sometimes dropped mid-query.
                    _ => {
                        let conn = pool.get().await.expect("get");
                        served += 1;
                        let q = conn.query_one("SELECT 1", &[]);
                        let _ = tokio::time::timeout(Duration::from_micros(fastrand::u64(0..1500)), q).await;
                    }
                }
            }
            served
        }));
    }
    let mut served = 0;
    for t in tasks {
        served += t.await.expect("task");
    }
    assert!(served > 0);
    eventually("every connection back or closed", || async {
        let s = pool.status();
        s.in_use == 0 && s.waiting == 0 && s.opening == 0 && s.open == s.idle
    })
    .await;
    let s = pool.status();
    assert!(s.open <= 5, "{s}");
    // Every slot of capacity is still usable: take the maximum at once.
    let mut all = Vec::new();
    for _ in 0..5 {
        all.push(
            tokio::time::timeout(BOUND, pool.get())
                .await
                .expect("bounded")
                .expect("get"),
        );
    }
    for c in &all {
        assert!(c.state().is_clean());
    }
    drop(all);
    eventually("server agrees with the pool", || async {
        support::server_sessions(&pool).await.len() == pool.status().open
    })
    .await;
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn min_idle_warms_up_and_idle_timeout_trims_above_it() {
    let config = config_for(cluster(), "idle")
        .pool_size(4)
        .min_idle(2)
        .idle_timeout(Some(Duration::from_millis(1)));
    let pool = Pool::new(config).expect("pool");
    eventually("warm-up", || async { pool.status().idle == 2 }).await;
    let held: Vec<_> = futures_util::future::join_all((0..4).map(|_| pool.get())).await;
    // All four in use and none idle: the warm-up does not reach into overflow (those would
    // be closed again as soon as they came back).
    pool.run_maintenance().await;
    eventually("no connect in progress", || async { pool.status().opening == 0 }).await;
    assert_eq!(pool.status().open, 4);
    drop(held);
    assert_eq!(pool.status().idle, 4);
    // Idle longer than idle_timeout: trimmed back to min_idle, never below.
    eventually("trimmed to min_idle", || async {
        pool.run_maintenance().await;
        pool.status().idle == 2
    })
    .await;
    pool.run_maintenance().await;
    assert_eq!(pool.status().open, 2);
    support::assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn connections_past_their_age_are_replaced() {
    let config = config_for(cluster(), "recycle")
        .pool_size(1)
        .max_overflow(0)
        .recycle(Some(Duration::from_millis(1)));
    let pool = Pool::new(config).expect("pool");
    let first = pool.get().await.expect("get").backend_pid();
    // Past 1 ms (on the pool's coarse clock, a tick of 1 to 4 ms) the connection must not
    // come back; until then it may.
    eventually("the old connection was replaced", || async {
        pool.get().await.expect("get").backend_pid() != first
    })
    .await;
    let s = pool.status();
    assert_eq!(s.open, 1, "replaced, not added: {s}");
    support::assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn close_fails_waiters_and_closes_everything() {
    let pool = Pool::new(config_for(cluster(), "close").pool_size(1).max_overflow(0)).expect("pool");
    let held = pool.get().await.expect("get");
    let waiter = {
        let p = pool.clone();
        tokio::spawn(async move { p.get().await.map(drop) })
    };
    eventually("queued", || async { pool.status().waiting == 1 }).await;
    let closing = {
        let p = pool.clone();
        tokio::spawn(async move { p.close().await })
    };
    let err = waiter.await.expect("task").expect_err("closed");
    assert!(matches!(err, PoolError::Closed { .. }), "{err}");
    drop(held);
    assert_eq!(closing.await.expect("close"), 0, "nothing left in use");
    assert_eq!(pool.status().open, 0);
    assert!(matches!(pool.get().await, Err(PoolError::Closed { .. })));
    eventually("server sessions gone", || async {
        support::server_sessions(&pool).await.is_empty()
    })
    .await;
    support::assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn a_dropped_pool_leaves_no_task_behind() {
    // Maintenance, the deadline keeper and every connection's driver end with the pool.
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    // A wait far longer than the test: only being told of the drop ends the keeper in time.
    let pool =
        Pool::new(config_for(cluster(), "dropped").pool_timeout(Duration::from_secs(3600))).expect("pool");
    pool.get()
        .await
        .expect("get")
        .batch_execute("SELECT 1")
        .await
        .expect("query");
    // A lone `pool.query` leaves its lane parked, holding the pool: maintenance gives it
    // back at the end of its term.
    pool.query("SELECT 1", &[]).await.expect("pool.query");
    assert!(metrics.num_alive_tasks() > before, "the pool runs tasks");
    drop(pool);
    eventually("every task of the pool ended", || async {
        metrics.num_alive_tasks() == before
    })
    .await;
}
