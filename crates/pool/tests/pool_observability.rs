//! What the pool tells: leak warnings with the borrower's location, quiet logs without
//! secrets, a status snapshot.

mod support;

use std::time::Duration;

use holdfast_pool::{ConnectConfig, Pool, PoolConfig};
use holdfast_testkit::cluster;
use support::{capture_logs, config_for};

#[tokio::test(flavor = "current_thread")]
async fn a_connection_held_too_long_is_reported_with_where_it_was_taken() {
    let (logs, _guard) = capture_logs();
    let cluster = cluster();
    let config = config_for(cluster, "leak").leak_threshold(Some(Duration::from_millis(1)));
    let pool = Pool::new(config).expect("pool");
    let line = line!() + 1;
    let held = pool.get().await.expect("get");
    // Held past 1 ms (the pool's coarse clock ticks every 1 to 4 ms): reported.
    support::eventually("leak reported", || async {
        pool.run_maintenance().await;
        logs.text().contains("leak threshold")
    })
    .await;
    let text = logs.text();
    assert!(
        text.contains("connection held longer than the leak threshold"),
        "{text}"
    );
    assert!(
        text.contains(&format!("pool_observability.rs:{line}")),
        "the borrower's location is named: {text}"
    );
    // Reported once, not on every pass.
    pool.run_maintenance().await;
    assert_eq!(logs.text().matches("leak threshold").count(), 1);
    drop(held);
    support::assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test(flavor = "current_thread")]
async fn connections_serving_pool_query_are_not_reported_as_leaks() {
    let (logs, _guard) = capture_logs();
    let cluster = cluster();
    let config = config_for(cluster, "lane-leak").leak_threshold(Some(Duration::from_millis(1)));
    let pool = Pool::new(config).expect("pool");
    // A lane whose statement waits for a table lock until this test lets it go.
    let (locker, lane) = support::busy_connection(&pool).await;
    // Taken after the lane, so reported no later than the lane would be.
    let line = line!() + 1;
    let held = pool.get().await.expect("get");
    support::eventually("the held connection is reported", || async {
        pool.run_maintenance().await;
        logs.text().contains("leak threshold")
    })
    .await;
    let text = logs.text();
    assert_eq!(
        text.matches("leak threshold").count(),
        1,
        "only the connection a caller holds is reported, not the lane: {text}"
    );
    assert!(text.contains(&format!("pool_observability.rs:{line}")), "{text}");
    locker.batch_execute("COMMIT").await.expect("unlock");
    lane.await.expect("lane task").expect("the lane's statement");
    drop(held);
    drop(locker);
    support::assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test(flavor = "current_thread")]
async fn secrets_stay_out_of_logs_debug_and_errors() {
    let (logs, _guard) = capture_logs();
    let cluster = cluster();
    // trust authentication ignores the password, so the pool works and logs normally.
    let url = format!(
        "postgres://postgres:hunter2-s3cret@127.0.0.1:{}/postgres",
        cluster.port()
    );
    let config = PoolConfig::new(
        ConnectConfig::from_url(&url)
            .expect("url")
            .application_name("hf-secrets"),
    );
    let pool = Pool::new(config).expect("pool");
    let conn = pool.get().await.expect("get");
    conn.batch_execute("BEGIN").await.expect("begin");
    let shown = format!("{pool:?} {conn:?} {:?} {}", pool.config(), pool.status());
    drop(conn);
    pool.run_maintenance().await;
    let err = PoolConfig::from_source(&[(
        "DATABASE_URL",
        "postgres://postgres:hunter2-s3cret@127.0.0.1:notaport/x",
    )])
    .expect_err("bad url")
    .to_string();
    for text in [shown, err, logs.text()] {
        assert!(!text.contains("hunter2-s3cret"), "secret leaked: {text}");
    }
    support::assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn status_counts_what_is_happening() {
    let cluster = cluster();
    let pool = Pool::new(config_for(cluster, "status").pool_size(2)).expect("pool");
    let s = pool.status();
    assert_eq!(
        (s.open, s.idle, s.in_use, s.waiting, s.opening, s.max),
        (0, 0, 0, 0, 0, 12)
    );
    let a = pool.get().await.expect("a");
    let b = pool.get().await.expect("b");
    assert_eq!((pool.status().open, pool.status().in_use), (2, 2));
    drop(a);
    assert_eq!((pool.status().idle, pool.status().in_use), (1, 1));
    drop(b);
    assert_eq!(
        pool.status().to_string(),
        "open 2, idle 2, in use 0, waiting 0, opening 0, max 12"
    );
    support::assert_no_idle_in_transaction(&pool).await;
}
