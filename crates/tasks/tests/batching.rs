//! Claims of several tasks per statement (fetched ahead for the slots) and successes written
//! several per statement, against a real PostgreSQL: each row still checked against its own
//! attempt and token, nothing fetched ahead of slow tasks, and fetched tasks that will not
//! start in time or at all given back without using an attempt.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use holdfast_pool::Pool;
use holdfast_tasks::{NewTask, Queue, TaskState, Worker, WorkerHandle};
use holdfast_testkit::cluster;
use serde_json::json;
use support::{counts, database, eventually, fast, settled, worker_pools};
use tokio::sync::Semaphore;

async fn enqueue(queue: &Queue, admin: &Pool, kind: &str, n: usize, priority: i16) {
    let conn = admin.get().await.expect("get");
    let tasks: Vec<NewTask> = (0..n)
        .map(|_| NewTask::new(kind, json!({})).priority(priority))
        .collect();
    queue.enqueue_many(&conn, &tasks).await.expect("enqueue");
}

async fn count(queue: &Queue, admin: &Pool, state: TaskState) -> i64 {
    counts(queue, admin).await.get(&state).copied().unwrap_or(0)
}

async fn scalar(admin: &Pool, sql: &str) -> i64 {
    let conn = admin.get().await.expect("get");
    conn.query_one(sql, &[]).await.expect(sql).get(0)
}

/// Runs `n` no-op tasks through `worker`'s queue, so that it knows its slots' pace.
async fn learn_pace(queue: &Queue, admin: &Pool, n: usize) {
    enqueue(queue, admin, "noop", n, 0).await;
    eventually("the no-op tasks succeeded", || async {
        count(queue, admin, TaskState::Succeeded).await == n as i64
    })
    .await;
}

fn noop_and(worker: Worker) -> Worker {
    worker.handle("noop", |_| Box::pin(async { Ok(()) }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successes_written_together_only_touch_attempts_that_still_hold_their_tasks() {
    let (url, queue, admin) = database(cluster(), "b_fenced").await;
    let gate = Arc::new(Semaphore::new(0));
    let g = Arc::clone(&gate);
    let worker = Worker::new(queue.clone(), worker_pools(&url, "fenced"), fast(8))
        .handle("gated", move |_| {
            let g = Arc::clone(&g);
            Box::pin(async move {
                let _permit = g.acquire().await;
                Ok(())
            })
        })
        .spawn()
        .expect("spawn");
    enqueue(&queue, &admin, "gated", 8, 0).await;
    eventually("all 8 running", || async {
        count(&queue, &admin, TaskState::Running).await == 8
    })
    .await;
    // Another claimer takes four of them over (as a rescue after an expired lease would).
    let stolen = scalar(
        &admin,
        "WITH s AS (UPDATE b_fenced.tasks SET lease_token = -1
                    WHERE id IN (SELECT id FROM b_fenced.tasks ORDER BY id LIMIT 4) RETURNING 1)
         SELECT count(*) FROM s",
    )
    .await;
    assert_eq!(stolen, 4);
    // All eight bodies end at once: their successes go to the writer together.
    gate.add_permits(8);
    eventually("the four still held succeeded", || async {
        count(&queue, &admin, TaskState::Succeeded).await == 4
    })
    .await;
    worker.shutdown().await;
    assert_eq!(
        scalar(
            &admin,
            "SELECT count(*) FROM b_fenced.tasks WHERE lease_token = -1 AND state = 'running'"
        )
        .await,
        4,
        "the tasks taken over were not written by the attempts that lost them"
    );
    assert_eq!(count(&queue, &admin, TaskState::Succeeded).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_fetched_ahead_of_slow_tasks() {
    let (url, queue, admin) = database(cluster(), "b_slow").await;
    let worker = Worker::new(queue.clone(), worker_pools(&url, "slow"), fast(2))
        .handle("slow", |_| {
            Box::pin(async {
                // The work itself: a task that takes a while.
                tokio::time::sleep(Duration::from_millis(150)).await;
                Ok(())
            })
        })
        .spawn()
        .expect("spawn");
    enqueue(&queue, &admin, "slow", 2, 0).await;
    settled(&queue, &admin, 2).await;
    // The slots' pace is now 150 ms a task: a claim takes what idle slots start, no more.
    enqueue(&queue, &admin, "slow", 6, 0).await;
    let mut most_running = 0;
    loop {
        let c = counts(&queue, &admin).await;
        let running = c.get(&TaskState::Running).copied().unwrap_or(0);
        most_running = most_running.max(running);
        if c.get(&TaskState::Succeeded).copied().unwrap_or(0) == 8 {
            break;
        }
        tokio::task::yield_now().await;
    }
    worker.shutdown().await;
    // Held: one task per slot, plus at most one success per slot on its way to the table
    // (running there until written). Fetching ahead would hold all six at once.
    assert!(
        most_running <= 4,
        "at most a task per slot and a success per slot held, saw {most_running}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_fetched_ahead_are_given_back_at_shutdown_without_using_an_attempt() {
    let (url, queue, admin) = database(cluster(), "b_back").await;
    let config = fast(1).shutdown_grace(Duration::from_millis(100));
    let worker: WorkerHandle = noop_and(Worker::new(queue.clone(), worker_pools(&url, "back"), config))
        .handle("stuck", |_| Box::pin(std::future::pending()))
        .spawn()
        .expect("spawn");
    learn_pace(&queue, &admin, 20).await;
    // One slot, and a pace of microseconds: a claim takes all thirty at once, one runs.
    enqueue(&queue, &admin, "stuck", 30, 0).await;
    eventually("thirty held by one slot", || async {
        count(&queue, &admin, TaskState::Running).await == 30
    })
    .await;
    worker.shutdown().await;
    assert_eq!(count(&queue, &admin, TaskState::Available).await, 30);
    assert_eq!(
        scalar(
            &admin,
            "SELECT count(*) FROM b_back.tasks WHERE kind = 'stuck' AND attempt = 0"
        )
        .await,
        30,
        "no attempt used"
    );
    assert_eq!(
        scalar(
            &admin,
            "SELECT count(*) FROM b_back.task_attempts WHERE outcome = 'released'"
        )
        .await,
        30
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_fetched_ahead_that_waited_too_long_to_start_is_given_back_and_runs_later() {
    let (url, queue, admin) = database(cluster(), "b_late").await;
    // Lease 600 ms, heartbeat every 200 ms: a fetched task that waited past 200 ms has less
    // than two heartbeats of its lease left and must not start on it.
    let config = fast(1).lease(Duration::from_millis(600));
    let ran = Arc::new(AtomicU32::new(0));
    let r = Arc::clone(&ran);
    let worker = noop_and(Worker::new(queue.clone(), worker_pools(&url, "late"), config))
        .handle("slow", |_| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok(())
            })
        })
        .handle("quick", move |_| {
            r.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        })
        .spawn()
        .expect("spawn");
    learn_pace(&queue, &admin, 20).await;
    enqueue(&queue, &admin, "slow", 1, 0).await;
    eventually("the slow task running", || async {
        count(&queue, &admin, TaskState::Running).await == 1
    })
    .await;
    // Fetched ahead while the only slot is busy for 500 ms.
    enqueue(&queue, &admin, "quick", 5, 0).await;
    settled(&queue, &admin, 26).await;
    worker.shutdown().await;
    assert_eq!(count(&queue, &admin, TaskState::Succeeded).await, 26);
    assert_eq!(ran.load(Ordering::SeqCst), 5, "each quick task ran once");
    assert_eq!(
        scalar(
            &admin,
            "SELECT count(*) FROM b_late.tasks WHERE kind = 'quick' AND attempt = 1"
        )
        .await,
        5,
        "giving back used no attempt"
    );
    assert!(
        scalar(
            &admin,
            "SELECT count(*) FROM b_late.task_attempts a JOIN b_late.tasks t ON t.id = a.task_id
             WHERE t.kind = 'quick' AND a.outcome = 'released'"
        )
        .await
            >= 1,
        "the quick tasks fetched during the slow one were given back, not started late"
    );
}
