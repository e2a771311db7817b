//! Helpers for the task tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use holdfast_pool::{ConnectConfig, Pool, PoolConfig};
use holdfast_tasks::{Queue, TaskId, TaskState, WorkerConfig};

/// Upper bound for anything a test waits on.
pub const BOUND: Duration = Duration::from_secs(60);

/// A pool to `url`, named for server-side checks.
pub fn pool(url: &str, app: &str, size: usize) -> Pool {
    let connect = ConnectConfig::from_url(url)
        .expect("url")
        .application_name(app)
        .connect_timeout(Duration::from_secs(5));
    let config = PoolConfig::new(connect)
        .pool_size(size)
        .max_overflow(size)
        .pool_timeout(Duration::from_secs(10))
        .reconnect_backoff_max(Duration::from_millis(200));
    Pool::new(config).expect("pool")
}

/// Worker settings for tests: short leases and intervals so that faults resolve quickly.
pub fn fast(concurrency: usize) -> WorkerConfig {
    WorkerConfig::default()
        .poll_interval(Duration::from_millis(100))
        .rescue_interval(Duration::from_millis(200))
        .retry_base(Duration::from_millis(10))
        .retry_max(Duration::from_millis(100))
        .shutdown_grace(Duration::from_secs(5))
        .lease(Duration::from_millis(1500))
        .concurrency(concurrency)
}

/// A fresh database with the queue migrated and an `effects` table for task side effects.
pub async fn database(cluster: &holdfast_tempdb::TempCluster, schema: &str) -> (String, Queue, Pool) {
    let db = cluster.create_database().expect("database");
    cluster
        .psql(
            &db.name,
            "CREATE TABLE episodes (id bigint PRIMARY KEY, task_id bigint);
             CREATE TABLE effects (task_id bigint NOT NULL, attempt int NOT NULL)",
        )
        .expect("tables");
    let queue = Queue::new(schema).expect("queue");
    let admin = pool(&db.url, "hf-task-admin", 2);
    queue.migrate(&admin).await.expect("migrate");
    (db.url, queue, admin)
}

/// Tasks by state.
pub async fn counts(queue: &Queue, admin: &Pool) -> HashMap<TaskState, i64> {
    let conn = admin.get().await.expect("get");
    queue.counts(&conn).await.expect("counts")
}

/// Waits (bounded) until every task is in a final state; returns the counts.
pub async fn settled(queue: &Queue, admin: &Pool, total: i64) -> HashMap<TaskState, i64> {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let c = counts(queue, admin).await;
        let done: i64 = c.iter().filter(|(s, _)| s.is_final()).map(|(_, n)| n).sum();
        if done == total {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tasks not settled within {BOUND:?}: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The state of one task.
pub async fn state_of(queue: &Queue, admin: &Pool, id: TaskId) -> TaskState {
    let conn = admin.get().await.expect("get");
    queue
        .get(&conn, id)
        .await
        .expect("get task")
        .expect("task exists")
        .state
}

/// Bounded wait until `check` holds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + BOUND;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {BOUND:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
