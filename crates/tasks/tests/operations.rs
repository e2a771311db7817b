//! Operating a queue against a real PostgreSQL: the attempt history (every way an attempt
//! ends), listing with filters and pages, retry and redrive, delete, prune and statistics.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use holdfast_pool::Pool;
use holdfast_tasks::{NewTask, Queue, Rescuer, TaskFailure, TaskFilter, TaskId, TaskState, Worker};
use holdfast_testkit::cluster;
use serde_json::json;
use support::{database, eventually, fast, pool, settled, state_of, worker_pools};

async fn enqueue(queue: &Queue, admin: &Pool, task: NewTask) -> TaskId {
    let conn = admin.get().await.expect("get");
    queue.enqueue(&conn, &task).await.expect("enqueue").expect("id")
}

fn outcomes(attempts: &[holdfast_tasks::AttemptRecord]) -> Vec<(i32, &str)> {
    attempts.iter().map(|a| (a.attempt, a.outcome.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ended_attempt_is_in_the_history() {
    let (url, queue, admin) = database(cluster(), "t_history").await;
    let flaky = enqueue(&queue, &admin, NewTask::new("flaky", json!({}))).await;
    let runs = Arc::new(AtomicU32::new(0));
    let r = Arc::clone(&runs);
    let worker = Worker::new(queue.clone(), worker_pools(&url, "h"), fast(1).owner("worker-h"))
        .handle("flaky", move |_ctx| {
            let n = r.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match n {
                    0 => Err(TaskFailure::snooze(Duration::from_millis(50))),
                    1 => Err(TaskFailure::retry("first try failed")),
                    _ => Ok(()),
                }
            })
        })
        .spawn()
        .expect("worker");
    settled(&queue, &admin, 1).await;
    worker.shutdown().await;
    let conn = admin.get().await.expect("get");
    let history = queue.attempts(&conn, flaky).await.expect("attempts");
    assert_eq!(
        outcomes(&history),
        [(1, "snoozed"), (1, "failed"), (2, "succeeded")]
    );
    assert_eq!(history[1].error.as_deref(), Some("first try failed"));
    assert!(history.iter().all(|a| a.owner.as_deref() == Some("worker-h")));
    assert!(history
        .iter()
        .all(|a| a.started_at.is_some_and(|s| s <= a.finished_at)));

    // A worker that vanishes mid-task: the rescuer ends the attempt as lease_expired.
    let stuck = enqueue(&queue, &admin, NewTask::new("hang", json!({}))).await;
    let crashed = Worker::new(
        queue.clone(),
        worker_pools(&url, "c"),
        fast(1).owner("worker-c").rescue(false),
    )
    .handle("hang", |_ctx| Box::pin(std::future::pending()))
    .spawn()
    .expect("worker");
    eventually("running", || async {
        state_of(&queue, &admin, stuck).await == TaskState::Running
    })
    .await;
    crashed.abort();
    let rescuer = Rescuer::new(queue.clone(), pool(&url, "rescue", 1));
    eventually("rescued once its lease ran out", || async {
        rescuer.run_once().await.expect("rescue") > 0
    })
    .await;
    let history = queue.attempts(&conn, stuck).await.expect("attempts");
    assert_eq!(outcomes(&history), [(1, "lease_expired")]);
    assert_eq!(history[0].owner.as_deref(), Some("worker-c"));
}

#[tokio::test]
async fn list_filters_and_pages_newest_first() {
    let (_url, queue, admin) = database(cluster(), "t_list").await;
    let mut a = Vec::new();
    for i in 0..5 {
        a.push(enqueue(&queue, &admin, NewTask::new("a", json!(i))).await);
    }
    let b = enqueue(&queue, &admin, NewTask::new("b", json!({}))).await;
    let conn = admin.get().await.expect("get");
    queue.cancel(&conn, a[0]).await.expect("cancel");
    let ids = |tasks: Vec<holdfast_tasks::TaskRecord>| tasks.iter().map(|t| t.id).collect::<Vec<_>>();
    let page1 = ids(queue
        .list(&conn, &TaskFilter::new().kind("a").limit(2))
        .await
        .expect("list"));
    assert_eq!(page1, [a[4], a[3]]);
    let page2 = ids(queue
        .list(&conn, &TaskFilter::new().kind("a").limit(2).before(page1[1]))
        .await
        .expect("list"));
    assert_eq!(page2, [a[2], a[1]]);
    let cancelled = ids(queue
        .list(&conn, &TaskFilter::new().state(TaskState::Cancelled))
        .await
        .expect("list"));
    assert_eq!(cancelled, [a[0]]);
    assert_eq!(
        ids(queue.list(&conn, &TaskFilter::new()).await.expect("all")).len(),
        6
    );
    assert_eq!(
        ids(queue.list(&conn, &TaskFilter::new().kind("b")).await.expect("b")),
        [b]
    );
    let err = queue
        .list(&conn, &TaskFilter::new().limit(0))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("TaskFilter::limit"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_redrive_run_failed_tasks_again() {
    let (url, queue, admin) = database(cluster(), "t_retry").await;
    let single = enqueue(&queue, &admin, NewTask::new("job", json!(1)).max_attempts(1)).await;
    let keyed_old = enqueue(&queue, &admin, NewTask::new("job", json!(2)).unique_key("k")).await;
    let fail_now = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = Arc::clone(&fail_now);
    let worker = Worker::new(queue.clone(), worker_pools(&url, ""), fast(2))
        .handle("job", move |_ctx| {
            let fail = f.load(Ordering::SeqCst);
            Box::pin(async move {
                if fail {
                    Err(TaskFailure::permanent("broken"))
                } else {
                    Ok(())
                }
            })
        })
        .spawn()
        .expect("worker");
    settled(&queue, &admin, 2).await;
    let conn = admin.get().await.expect("get");
    assert_eq!(state_of(&queue, &admin, single).await, TaskState::Failed);
    // A second failed task with key k, then an active one holding k (no worker runs its
    // kind).
    let keyed_new = enqueue(&queue, &admin, NewTask::new("job", json!(3)).unique_key("k")).await;
    settled(&queue, &admin, 3).await;
    let keyed_active = enqueue(&queue, &admin, NewTask::new("other", json!(4)).unique_key("k")).await;
    fail_now.store(false, Ordering::SeqCst);
    let succeeded = |id: TaskId| {
        let (queue, admin) = (queue.clone(), admin.clone());
        async move { state_of(&queue, &admin, id).await == TaskState::Succeeded }
    };
    assert!(queue.retry(&conn, single).await.expect("retry"));
    eventually("the retried task succeeded", || succeeded(single)).await;
    let task = queue.get(&conn, single).await.expect("get").expect("task");
    assert_eq!(
        (task.attempt, task.max_attempts),
        (2, 2),
        "one more attempt was given"
    );
    assert!(
        !queue.retry(&conn, single).await.expect("retry"),
        "a succeeded task is not retried"
    );
    assert_eq!(
        queue.retry_failed(&conn, None).await.expect("redrive"),
        0,
        "k is held"
    );
    assert!(queue.cancel(&conn, keyed_active).await.expect("cancel"));
    assert_eq!(
        queue.retry_failed(&conn, Some("job")).await.expect("redrive"),
        1,
        "the newest of k"
    );
    eventually("the redriven task succeeded", || succeeded(keyed_new)).await;
    worker.shutdown().await;
    assert_eq!(state_of(&queue, &admin, keyed_new).await, TaskState::Succeeded);
    assert_eq!(state_of(&queue, &admin, keyed_old).await, TaskState::Failed);
}

#[tokio::test]
async fn delete_prune_and_stats() {
    let (_url, queue, admin) = database(cluster(), "t_ops").await;
    let conn = admin.get().await.expect("get");
    let waiting = enqueue(&queue, &admin, NewTask::new("a", json!(1))).await;
    let later = enqueue(
        &queue,
        &admin,
        NewTask::new("a", json!(2)).run_at(std::time::SystemTime::now() + Duration::from_secs(3600)),
    )
    .await;
    let b = enqueue(&queue, &admin, NewTask::new("b", json!(3))).await;
    // Two finished tasks, one of them long ago.
    conn.batch_execute(&format!(
        "UPDATE t_ops.tasks SET state = 'running' WHERE id = {b};
         INSERT INTO t_ops.tasks (kind, state, finished_at) VALUES
             ('a', 'succeeded', now() - interval '2 days'), ('a', 'succeeded', now())"
    ))
    .await
    .expect("setup");
    let stats = queue.stats(&conn).await.expect("stats");
    let by_kind: Vec<_> = stats
        .iter()
        .map(|k| (k.kind.as_str(), k.available, k.running))
        .collect();
    assert_eq!(by_kind, [("a", 2, 0), ("b", 0, 1)]);
    assert!(stats[0].oldest_due.is_some(), "a's due task has waited");
    assert_eq!(stats[1].oldest_due, None, "b has nothing due");
    assert!(
        !queue.delete(&conn, b).await.expect("delete"),
        "a running task is not deleted"
    );
    assert!(queue.delete(&conn, later).await.expect("delete"));
    assert!(queue.get(&conn, later).await.expect("get").is_none());
    let pruned = queue
        .prune(&conn, TaskState::Succeeded, Duration::from_secs(86_400))
        .await
        .expect("prune");
    assert_eq!(pruned, 1, "only the one finished two days ago");
    let err = queue
        .prune(&conn, TaskState::Available, Duration::ZERO)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("final state"), "{err}");
    assert!(queue.get(&conn, waiting).await.expect("get").is_some());
}

#[tokio::test]
async fn drain_runs_a_queue_until_nothing_is_left_for_the_worker() {
    let (url, queue, admin) = database(cluster(), "t_drain").await;
    let conn = admin.get().await.expect("get");
    let tasks: Vec<NewTask> = (0..5).map(|i| NewTask::new("send", json!(i))).collect();
    queue.enqueue_many(&conn, &tasks).await.expect("enqueue");
    let later =
        NewTask::new("send", json!("later")).run_at(std::time::SystemTime::now() + Duration::from_secs(3600));
    let later = queue.enqueue(&conn, &later).await.expect("enqueue").expect("id");
    let other = enqueue(&queue, &admin, NewTask::new("unhandled", json!({}))).await;
    let tries = Arc::new(AtomicU32::new(0));
    let t = Arc::clone(&tries);
    let drained = Worker::new(queue.clone(), worker_pools(&url, ""), fast(2))
        .handle("send", move |ctx| {
            // Payload 0 fails once, then succeeds: drain waits for its retry.
            let fail = ctx.payload == json!(0) && t.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move {
                if fail {
                    Err(TaskFailure::retry("once"))
                } else {
                    Ok(())
                }
            })
        })
        .drain(Duration::from_secs(30))
        .await
        .expect("drained");
    assert_eq!((drained.succeeded, drained.failed), (5, 1));
    assert_eq!(
        state_of(&queue, &admin, later).await,
        TaskState::Available,
        "scheduled for later"
    );
    assert_eq!(
        state_of(&queue, &admin, other).await,
        TaskState::Available,
        "not its kind"
    );
    let listed = queue
        .list(&conn, &TaskFilter::new().state(TaskState::Succeeded))
        .await
        .expect("list");
    assert_eq!(listed.len(), 5);
}
