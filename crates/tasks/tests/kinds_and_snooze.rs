//! Settings per kind (lease, retry policy), snooze (waits without using an attempt) and
//! retry after a given time, against a real PostgreSQL.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use holdfast_pool::Pool;
use holdfast_tasks::{KindOptions, NewTask, Queue, TaskFailure, TaskId, TaskState, Worker};
use holdfast_testkit::cluster;
use serde_json::json;
use support::{database, eventually, fast, worker_pools};
use tokio::sync::Semaphore;

const HOUR: Duration = Duration::from_secs(3600);

async fn enqueue(queue: &Queue, admin: &Pool, task: NewTask) -> TaskId {
    let conn = admin.get().await.expect("get");
    queue.enqueue(&conn, &task).await.expect("enqueue").expect("id")
}

/// Seconds from now to a task's `run_at` (negative when due), and its state and attempt.
async fn waiting(admin: &Pool, schema: &str, id: TaskId) -> (f64, String, i32) {
    let row = admin
        .get()
        .await
        .expect("get")
        .query_one(
            &format!(
                "SELECT extract(epoch FROM run_at - now())::float8, state::text, attempt
                 FROM {schema}.tasks WHERE id = $1"
            ),
            &[&id],
        )
        .await
        .expect("row");
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn a_snooze_waits_without_using_an_attempt() {
    let (url, queue, admin) = database(cluster(), "t_snooze").await;
    // One attempt allowed: a snooze that counted as one would fail the task.
    let id = enqueue(&queue, &admin, NewTask::new("upload", json!({})).max_attempts(1)).await;
    let runs = Arc::new(AtomicU32::new(0));
    let r = Arc::clone(&runs);
    let worker = Worker::new(queue.clone(), worker_pools(&url, ""), fast(1))
        .handle("upload", move |_ctx| {
            let first = r.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move {
                if first {
                    Err(TaskFailure::snooze(Duration::from_millis(300)))
                } else {
                    Ok(())
                }
            })
        })
        .spawn()
        .expect("worker");
    eventually("the snoozed task ran again and succeeded", || async {
        queue
            .get(&admin.get().await.expect("get"), id)
            .await
            .expect("get")
            .expect("task")
            .state
            == TaskState::Succeeded
    })
    .await;
    worker.shutdown().await;
    let task = queue
        .get(&admin.get().await.expect("get"), id)
        .await
        .expect("get")
        .expect("task");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "ran, snoozed, ran again");
    assert_eq!(task.attempt, 1, "the snooze did not use an attempt");
    assert_eq!(task.last_error, None, "a snooze is not an error");
}

#[tokio::test]
async fn retry_after_and_a_kinds_retry_policy_set_when_the_task_runs_again() {
    let (url, queue, admin) = database(cluster(), "t_retry_after").await;
    let told = enqueue(&queue, &admin, NewTask::new("rate_limited", json!({}))).await;
    let slow = enqueue(&queue, &admin, NewTask::new("slow_retry", json!({}))).await;
    let plain = enqueue(&queue, &admin, NewTask::new("plain", json!({}))).await;
    // The worker's own policy retries within 100 ms (fast()).
    let worker = Worker::new(queue.clone(), worker_pools(&url, ""), fast(3))
        .handle("rate_limited", |_ctx| {
            Box::pin(async { Err(TaskFailure::retry_after("429 from the API", HOUR)) })
        })
        .handle_with("slow_retry", KindOptions::new().retry(HOUR, 2 * HOUR), |_ctx| {
            Box::pin(async { Err(TaskFailure::retry("failed")) })
        })
        .handle("plain", |_ctx| {
            Box::pin(async { Err(TaskFailure::retry("failed")) })
        })
        .spawn()
        .expect("worker");
    eventually("the plain task was retried by the worker's policy", || async {
        waiting(&admin, "t_retry_after", plain).await.2 >= 2
    })
    .await;
    eventually("both others failed their first attempt", || async {
        waiting(&admin, "t_retry_after", told).await.1 == "retry_wait"
            && waiting(&admin, "t_retry_after", slow).await.1 == "retry_wait"
    })
    .await;
    worker.shutdown().await;
    let (wait, _, attempt) = waiting(&admin, "t_retry_after", told).await;
    assert!(
        wait > 3000.0 && wait <= 3600.0,
        "retry_after: waits its hour, {wait} s"
    );
    assert_eq!(attempt, 1);
    let (wait, _, attempt) = waiting(&admin, "t_retry_after", slow).await;
    // The kind's policy: 1 h doubling from the first retry, jittered over its upper half.
    assert!(wait > 1700.0 && wait <= 3600.0, "the kind's retry_base: {wait} s");
    assert_eq!(attempt, 1);
}

#[tokio::test]
async fn a_kinds_lease_is_the_one_its_claims_and_heartbeats_set() {
    let (url, queue, admin) = database(cluster(), "t_kind_lease").await;
    let long = enqueue(&queue, &admin, NewTask::new("long", json!({}))).await;
    let short = enqueue(&queue, &admin, NewTask::new("short", json!({}))).await;
    // Each body holds its task until the test hands out a permit.
    let release = Arc::new(Semaphore::new(0));
    let body = |release: Arc<Semaphore>| {
        move |_ctx| {
            let release = Arc::clone(&release);
            Box::pin(async move {
                let _permit = release.acquire().await.map_err(TaskFailure::permanent)?;
                Ok(())
            }) as futures_util::future::BoxFuture<'static, Result<(), TaskFailure>>
        }
    };
    let worker = Worker::new(queue.clone(), worker_pools(&url, ""), fast(2))
        .handle_with(
            "long",
            KindOptions::new().lease(Duration::from_secs(600)),
            body(Arc::clone(&release)),
        )
        .handle("short", body(Arc::clone(&release)))
        .spawn()
        .expect("worker");
    let lease_left = |id: TaskId| {
        let admin = admin.clone();
        async move {
            let row = admin
                .get()
                .await
                .expect("get")
                .query_one(
                    "SELECT extract(epoch FROM lease_expires_at - now())::float8
                     FROM t_kind_lease.tasks WHERE id = $1 AND state = 'running'",
                    &[&id],
                )
                .await;
            row.ok().map(|r| r.get::<_, f64>(0))
        }
    };
    eventually("both running", || async {
        lease_left(long).await.is_some() && lease_left(short).await.is_some()
    })
    .await;
    let (l, s) = (
        lease_left(long).await.unwrap_or(0.0),
        lease_left(short).await.unwrap_or(0.0),
    );
    assert!(l > 500.0, "the long kind's lease of 600 s: {l} s left");
    assert!(s <= 1.5, "the worker's lease of 1.5 s: {s} s left");
    release.add_permits(2);
    eventually("both done", || async {
        waiting(&admin, "t_kind_lease", long).await.1 == "succeeded"
            && waiting(&admin, "t_kind_lease", short).await.1 == "succeeded"
    })
    .await;
    worker.shutdown().await;
}

#[tokio::test]
async fn a_kinds_invalid_settings_refuse_the_worker_naming_the_kind() {
    let (url, queue, _admin) = database(cluster(), "t_kind_bad").await;
    let err = Worker::new(queue, worker_pools(&url, ""), fast(1))
        .handle_with(
            "assemble",
            KindOptions::new().lease(Duration::from_millis(1)),
            |_ctx| Box::pin(async { Ok(()) }),
        )
        .spawn()
        .expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("\"assemble\"") && text.contains("lease"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_queue_has_its_own_slots_and_only_its_workers_claim_it() {
    let (url, queue, admin) = database(cluster(), "t_queues").await;
    let conn = admin.get().await.expect("get");
    // Bodies of kind "long" hold their task until the test hands out a permit.
    let release = Arc::new(Semaphore::new(0));
    let hold = {
        let release = Arc::clone(&release);
        move |_ctx| {
            let release = Arc::clone(&release);
            Box::pin(async move {
                let _permit = release.acquire().await.map_err(TaskFailure::permanent)?;
                Ok(())
            }) as futures_util::future::BoxFuture<'static, Result<(), TaskFailure>>
        }
    };
    let state = |id: TaskId| {
        let admin = admin.clone();
        async move { waiting(&admin, "t_queues", id).await.1 }
    };
    let ids = queue
        .enqueue_many(
            &conn,
            &[
                NewTask::new("long", json!(1)),
                NewTask::new("mail", json!({})).queue("email"),
            ],
        )
        .await
        .expect("enqueue");
    let (long, mail) = (ids[0].expect("id"), ids[1].expect("id"));
    // A worker of both kinds that serves the default queue only, with a slot to spare.
    let default_only = Worker::new(
        queue.clone(),
        worker_pools(&url, "d"),
        fast(2).owner("default-only"),
    )
    .handle("long", hold.clone())
    .handle("mail", |_ctx| Box::pin(async { Ok(()) }))
    .spawn()
    .expect("worker");
    eventually("the first long task runs", || async {
        state(long).await == "running"
    })
    .await;
    // Two more long tasks: one fills the first worker, the other will hold the second
    // worker's default slot.
    let more = queue
        .enqueue_many(
            &conn,
            &[NewTask::new("long", json!(2)), NewTask::new("long", json!(3))],
        )
        .await
        .expect("enqueue");
    eventually("the first worker is full", || async {
        state(more[0].expect("id")).await == "running" || state(more[1].expect("id")).await == "running"
    })
    .await;
    let both = Worker::new(queue.clone(), worker_pools(&url, "b"), fast(1).owner("both"))
        .queue("email", 1)
        .handle("long", hold)
        .handle("mail", |_ctx| Box::pin(async { Ok(()) }))
        .spawn()
        .expect("worker");
    eventually("all three long tasks hold their slots", || async {
        state(more[0].expect("id")).await == "running" && state(more[1].expect("id")).await == "running"
    })
    .await;
    eventually("the mail task ran on the email queue's own slot", || async {
        state(mail).await == "succeeded"
    })
    .await;
    let record = queue.get(&conn, mail).await.expect("get").expect("task");
    assert_eq!(record.queue, "email");
    let history = queue.attempts(&conn, mail).await.expect("attempts");
    assert_eq!(
        history[0].owner.as_deref(),
        Some("both"),
        "the worker that does not serve email never claimed it, free slot and all"
    );
    release.add_permits(3);
    default_only.shutdown().await;
    both.shutdown().await;
    let err = Worker::new(queue.clone(), worker_pools(&url, "x"), fast(1))
        .queue("bulk", 0)
        .handle("mail", |_ctx| Box::pin(async { Ok(()) }))
        .spawn()
        .expect_err("refused");
    assert!(err.to_string().contains("Worker::queue"), "{err}");
}
