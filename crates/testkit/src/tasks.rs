//! Queues and workers for tests: a migrated queue in a fresh database, short leases, and
//! waits for tasks to settle.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use holdfast_pool::Pool;
use holdfast_tasks::{
    Queue, TaskContext, TaskFailure, TaskId, TaskState, Worker, WorkerConfig, WorkerHandle, WorkerPools,
};
use holdfast_tempdb::TempCluster;

/// Worker settings for tests: short leases and intervals, so that faults resolve quickly.
pub fn fast_worker(concurrency: usize) -> WorkerConfig {
    WorkerConfig::default()
        .poll_interval(Duration::from_millis(100))
        .rescue_interval(Duration::from_millis(200))
        .retry_base(Duration::from_millis(10))
        .retry_max(Duration::from_millis(100))
        .shutdown_grace(Duration::from_secs(5))
        .lease(Duration::from_millis(1500))
        .concurrency(concurrency)
}

/// A fresh database of `cluster` with the queue migrated in `schema`, tables `episodes` and
/// `effects` (for task side effects), and a small admin pool to it.
pub async fn queue_database(cluster: &TempCluster, schema: &str) -> (String, Queue, Pool) {
    let db = match cluster.create_database() {
        Ok(db) => db,
        Err(e) => panic!("create database: {e}"),
    };
    if let Err(e) = cluster.psql(
        &db.name,
        "CREATE TABLE episodes (id bigint PRIMARY KEY, task_id bigint);
         CREATE TABLE effects (task_id bigint NOT NULL, attempt int NOT NULL)",
    ) {
        panic!("tables: {e}");
    }
    let queue = match Queue::new(schema) {
        Ok(queue) => queue,
        Err(e) => panic!("queue: {e}"),
    };
    let admin = crate::pool(&db.url, "hf-task-admin", 2);
    if let Err(e) = queue.migrate(&admin).await {
        panic!("migrate: {e}");
    }
    (db.url, queue, admin)
}

/// A worker's control and work pools to `url`, two connections each, named `hf-ctl-<name>`
/// and `hf-work-<name>` (`hf-ctl` and `hf-work` when `name` is empty).
pub fn worker_pools(url: &str, name: &str) -> WorkerPools {
    let suffix = if name.is_empty() {
        String::new()
    } else {
        format!("-{name}")
    };
    WorkerPools {
        control: crate::pool(url, &format!("hf-ctl{suffix}"), 2),
        work: crate::pool(url, &format!("hf-work{suffix}"), 2),
    }
}

/// Starts a worker on `url` for `queue`, with control and work pools of two connections
/// each (named `hf-ctl-<name>` and `hf-work-<name>`), running `body` for tasks of `kind`.
pub fn start_worker<F>(
    url: &str,
    name: &str,
    queue: &Queue,
    config: WorkerConfig,
    kind: &str,
    body: F,
) -> WorkerHandle
where
    F: Fn(TaskContext) -> BoxFuture<'static, Result<(), TaskFailure>> + Send + Sync + 'static,
{
    match Worker::new(queue.clone(), worker_pools(url, name), config)
        .handle(kind, body)
        .spawn()
    {
        Ok(worker) => worker,
        Err(e) => panic!("worker: {e}"),
    }
}

/// Tasks by state.
pub async fn counts(queue: &Queue, admin: &Pool) -> HashMap<TaskState, i64> {
    let conn = admin.get().await.unwrap_or_else(|e| panic!("get: {e}"));
    queue
        .counts(&conn)
        .await
        .unwrap_or_else(|e| panic!("counts: {e}"))
}

/// Waits (bounded) until `total` tasks are in a final state; returns the counts.
pub async fn settled(queue: &Queue, admin: &Pool, total: i64) -> HashMap<TaskState, i64> {
    let deadline = tokio::time::Instant::now() + crate::BOUND;
    loop {
        let c = counts(queue, admin).await;
        let done: i64 = c.iter().filter(|(s, _)| s.is_final()).map(|(_, n)| n).sum();
        if done == total {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tasks not settled within {:?}: {c:?}",
            crate::BOUND
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The state of one task.
pub async fn state_of(queue: &Queue, admin: &Pool, id: TaskId) -> TaskState {
    let conn = admin.get().await.unwrap_or_else(|e| panic!("get: {e}"));
    match queue.get(&conn, id).await {
        Ok(Some(task)) => task.state,
        Ok(None) => panic!("task {id} does not exist"),
        Err(e) => panic!("get task: {e}"),
    }
}
