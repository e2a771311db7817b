//! The task life cycle against a real PostgreSQL: enqueue (also inside a transaction), claim,
//! run, retry, fail, cancel, progress, leases, shutdown.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use holdfast_tasks::{NewTask, TaskFailure, TaskState, Worker};
use holdfast_testkit::cluster;
use holdfast_tx::{TransactionExt, TxOptions};
use serde_json::json;
use support::{counts, database, eventually, fast, pool, settled, state_of, worker_pools};

#[tokio::test]
async fn migrations_are_versioned_and_idempotent_across_concurrent_starters() {
    let db = cluster().create_database().expect("database");
    let queue = holdfast_tasks::Queue::new("concurrent_mig").expect("queue");
    let p = pool(&db.url, "hf-mig", 4);
    let (a, b) = tokio::join!(queue.migrate(&p), queue.migrate(&p));
    let mut applied = a.expect("a");
    applied.extend(b.expect("b"));
    applied.sort_unstable();
    assert_eq!(
        applied,
        vec![1, 2, 3, 4],
        "each version applied by exactly one starter"
    );
    assert_eq!(queue.migrate(&p).await.expect("again"), Vec::<i64>::new());
    assert!(holdfast_tasks::Queue::new("bad-name").is_err());
}

#[tokio::test]
async fn a_schema_made_by_the_older_task_migrator_is_taken_over_as_it_is() {
    let db = cluster().create_database().expect("database");
    let queue = holdfast_tasks::Queue::new("older_mig").expect("queue");
    let p = pool(&db.url, "hf-older-mig", 2);
    assert_eq!(queue.migrate(&p).await.expect("migrate"), vec![1, 2, 3, 4]);
    // What the task queue's own migrator (before 0.3) left: integer versions, no names,
    // and a task already waiting.
    let conn = p.get().await.expect("get");
    conn.batch_execute(
        "ALTER TABLE older_mig.migrations DROP COLUMN name, ALTER COLUMN version TYPE integer",
    )
    .await
    .expect("the older layout");
    let id = queue
        .enqueue(&conn, &NewTask::new("echo", json!({})))
        .await
        .expect("enqueue")
        .expect("id");
    drop(conn);
    assert_eq!(
        queue.migrate(&p).await.expect("taken over"),
        Vec::<i64>::new(),
        "nothing applied again"
    );
    let recorded: Vec<(i64, String)> = p
        .query_as(
            "SELECT version, name FROM older_mig.migrations ORDER BY version",
            &[],
        )
        .await
        .expect("recorded");
    assert_eq!(
        recorded,
        vec![
            (1, "tasks".to_string()),
            (2, "tasks_finished_index".to_string()),
            (3, "queues_periodic_attempts".to_string()),
            (4, "task_trace_context".to_string())
        ],
        "the versions now carry their names"
    );
    assert_eq!(state_of(&queue, &p, id).await, TaskState::Available);
}

#[tokio::test]
async fn a_task_runs_and_succeeds_with_its_payload() {
    let (url, queue, admin) = database(cluster(), "t_basic").await;
    let conn = admin.get().await.expect("get");
    let id = queue
        .enqueue(&conn, &NewTask::new("echo", json!({"episode": 7})))
        .await
        .expect("enqueue")
        .expect("id");
    drop(conn);
    // What the body saw, and its context kept beyond the body (as work it spawned would).
    let seen = Arc::new(std::sync::Mutex::new(None));
    let s = Arc::clone(&seen);
    let worker = Worker::new(queue.clone(), worker_pools(&url, ""), fast(2))
        .handle("echo", move |ctx| {
            let s = Arc::clone(&s);
            Box::pin(async move {
                let saw = (ctx.payload.clone(), ctx.attempt, ctx.should_stop());
                ctx.progress(50.0, "half way");
                *s.lock().expect("seen") = Some((saw, ctx));
                Ok(())
            })
        })
        .spawn()
        .expect("worker");
    settled(&queue, &admin, 1).await;
    assert_eq!(state_of(&queue, &admin, id).await, TaskState::Succeeded);
    let (saw, kept) = seen.lock().expect("seen").take().expect("the body ran");
    assert_eq!(saw, (json!({"episode": 7}), 1, false));
    assert!(
        kept.should_stop(),
        "once the attempt is over, what the body left behind is told to stop"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn enqueue_inside_a_transaction_is_atomic_with_its_rows() {
    let (url, queue, admin) = database(cluster(), "t_atomic").await;
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    for commit in [true, false] {
        let q = queue.clone();
        let result = admin
            .transaction(TxOptions::new(), move |tx| {
                let q = q.clone();
                Box::pin(async move {
                    let id = q
                        .enqueue(tx, &NewTask::new("assemble", json!({})))
                        .await?
                        .ok_or("no id")?;
                    tx.execute("INSERT INTO episodes (id, task_id) VALUES (1, $1)", &[&id])
                        .await?;
                    if !commit {
                        // An error after both writes: neither may survive.
                        tx.execute("SELECT 1/0", &[]).await?;
                    }
                    Ok::<_, BoxError>(id)
                })
            })
            .await;
        assert_eq!(result.is_ok(), commit);
    }
    let c = counts(&queue, &admin).await;
    assert_eq!(
        c.values().sum::<i64>(),
        1,
        "only the committed transaction's task exists: {c:?}"
    );
    let conn = admin.get().await.expect("get");
    let rows: i64 = conn
        .query_one("SELECT count(*) FROM episodes", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 1);
    let _ = url;
}

#[tokio::test]
async fn unique_keys_and_run_at_are_respected() {
    let (_url, queue, admin) = database(cluster(), "t_unique").await;
    let conn = admin.get().await.expect("get");
    let first = queue
        .enqueue(&conn, &NewTask::new("x", json!(1)).unique_key("episode-1"))
        .await
        .expect("enqueue");
    let second = queue
        .enqueue(&conn, &NewTask::new("x", json!(2)).unique_key("episode-1"))
        .await
        .expect("enqueue");
    assert!(first.is_some());
    assert_eq!(second, None, "an active task with that key exists");
    let err = queue
        .enqueue(&conn, &NewTask::new("x", json!(3)).max_attempts(0))
        .await;
    assert!(err.is_err_and(|e| e.to_string().contains("max_attempts")));
}

#[tokio::test]
async fn tasks_in_the_future_wait_for_their_time() {
    let (url, queue, admin) = database(cluster(), "t_later").await;
    let conn = admin.get().await.expect("get");
    let later = SystemTime::now() + Duration::from_secs(3600);
    let id = queue
        .enqueue(&conn, &NewTask::new("x", json!(null)).run_at(later))
        .await
        .expect("enqueue")
        .expect("id");
    let now_id = queue
        .enqueue(&conn, &NewTask::new("x", json!(null)))
        .await
        .expect("enqueue")
        .expect("id");
    let worker = Worker::new(queue.clone(), worker_pools(&url, ""), fast(2))
        .handle("x", |_| Box::pin(async { Ok(()) }))
        .spawn()
        .expect("worker");
    eventually("the due task ran", || async {
        state_of(&queue, &admin, now_id).await == TaskState::Succeeded
    })
    .await;
    assert_eq!(state_of(&queue, &admin, id).await, TaskState::Available);
    worker.shutdown().await;
}

#[tokio::test]
async fn failures_retry_with_backoff_then_fail_keeping_the_last_error() {
    let (url, queue, admin) = database(cluster(), "t_retry").await;
    let conn = admin.get().await.expect("get");
    let flaky = queue
        .enqueue(&conn, &NewTask::new("flaky", json!(null)).max_attempts(5))
        .await
        .expect("enqueue")
        .expect("id");
    let doomed = queue
        .enqueue(&conn, &NewTask::new("doomed", json!(null)).max_attempts(3))
        .await
        .expect("enqueue")
        .expect("id");
    let permanent = queue
        .enqueue(&conn, &NewTask::new("bad_input", json!(null)).max_attempts(5))
        .await
        .expect("enqueue")
        .expect("id");
    let unknown = queue
        .enqueue(&conn, &NewTask::new("nobody", json!(null)))
        .await
        .expect("enqueue")
        .expect("id");
    let worker = Worker::new(queue.clone(), worker_pools(&url, ""), fast(4))
        .handle("flaky", |ctx| {
            Box::pin(async move {
                if ctx.attempt < 3 {
                    Err(TaskFailure::retry(format!("flaky attempt {}", ctx.attempt)))
                } else {
                    Ok(())
                }
            })
        })
        .handle("doomed", |ctx| {
            Box::pin(async move { Err(TaskFailure::retry(format!("boom {}", ctx.attempt))) })
        })
        .handle("bad_input", |_| {
            Box::pin(async { Err(TaskFailure::permanent("payload is not an episode")) })
        })
        .spawn()
        .expect("worker");
    settled(&queue, &admin, 3).await;
    let get = |id| {
        let (queue, admin) = (queue.clone(), admin.clone());
        async move {
            queue
                .get(&admin.get().await.expect("get"), id)
                .await
                .expect("get")
                .expect("task")
        }
    };
    let f = get(flaky).await;
    assert_eq!((f.state, f.attempt), (TaskState::Succeeded, 3));
    let d = get(doomed).await;
    assert_eq!(
        (d.state, d.attempt, d.last_error.as_deref()),
        (TaskState::Failed, 3, Some("boom 3"))
    );
    let p = get(permanent).await;
    assert_eq!(
        (p.state, p.attempt),
        (TaskState::Failed, 1),
        "a permanent error is not retried"
    );
    // A kind no handler of this worker knows is left for a worker that knows it.
    let u = get(unknown).await;
    assert_eq!((u.state, u.attempt), (TaskState::Available, 0));
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_added_by_a_rolling_deploy_waits_for_a_worker_that_knows_it() {
    let (url, queue, admin) = database(cluster(), "t_rolling").await;
    let ran_b = Arc::new(AtomicU32::new(0));
    // The old version: handles `a` only.
    let old = Worker::new(queue.clone(), worker_pools(&url, "old"), fast(2))
        .handle("a", |_| Box::pin(async { Ok(()) }))
        .spawn()
        .expect("old worker");
    let conn = admin.get().await.expect("get");
    // `b` first: a claim takes the oldest ready task first, so by the time `a` has run the
    // old worker has passed `b` over.
    let b = queue
        .enqueue(&conn, &NewTask::new("b", json!(null)))
        .await
        .expect("enqueue")
        .expect("id");
    let a = queue
        .enqueue(&conn, &NewTask::new("a", json!(null)))
        .await
        .expect("enqueue")
        .expect("id");
    drop(conn);
    holdfast_testkit::eventually("the old worker runs a", || async {
        state_of(&queue, &admin, a).await == TaskState::Succeeded
    })
    .await;
    // The old worker left `b` alone (without the kinds in its claim it would have failed it
    // for having no handler).
    assert_eq!(state_of(&queue, &admin, b).await, TaskState::Available);
    // The new version starts beside it: `b` runs there, once, and nothing failed.
    let new = {
        let ran_b = Arc::clone(&ran_b);
        Worker::new(queue.clone(), worker_pools(&url, "new"), fast(2))
            .handle("a", |_| Box::pin(async { Ok(()) }))
            .handle("b", move |_| {
                let ran_b = Arc::clone(&ran_b);
                Box::pin(async move {
                    ran_b.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
            })
            .spawn()
            .expect("new worker")
    };
    holdfast_testkit::eventually("the new worker runs b", || async {
        state_of(&queue, &admin, b).await == TaskState::Succeeded
    })
    .await;
    assert_eq!(ran_b.load(Ordering::SeqCst), 1, "exactly once");
    let counts = holdfast_testkit::settled(&queue, &admin, 2).await;
    assert_eq!(counts.get(&TaskState::Failed).copied().unwrap_or(0), 0);
    old.shutdown().await;
    new.shutdown().await;
}

/// Sets a flag when dropped: shows that a task's future was really dropped.
struct Dropped(Arc<AtomicU32>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A task body that signals it started and then never finishes on its own; counts how
/// often its future was dropped.
#[derive(Clone, Default)]
struct Endless {
    started: Arc<tokio::sync::Notify>,
    dropped: Arc<AtomicU32>,
}

impl Endless {
    fn body(
        &self,
    ) -> impl Fn(
        holdfast_tasks::TaskContext,
    ) -> futures_util::future::BoxFuture<'static, Result<(), TaskFailure>>
           + Send
           + Sync
           + 'static {
        let this = self.clone();
        move |_| {
            let guard = Dropped(Arc::clone(&this.dropped));
            let started = Arc::clone(&this.started);
            Box::pin(async move {
                let _guard = guard;
                started.notify_one();
                std::future::pending::<()>().await;
                Ok(())
            })
        }
    }

    async fn started(&self) {
        tokio::time::timeout(support::BOUND, self.started.notified())
            .await
            .expect("the task started");
    }

    fn dropped(&self) -> u32 {
        self.dropped.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn cancelling_stops_waiting_and_running_tasks() {
    let (url, queue, admin) = database(cluster(), "t_cancel").await;
    let conn = admin.get().await.expect("get");
    let waiting = queue
        .enqueue(
            &conn,
            &NewTask::new("slow", json!(null)).run_at(SystemTime::now() + Duration::from_secs(3600)),
        )
        .await
        .expect("enqueue")
        .expect("id");
    assert!(queue.cancel(&conn, waiting).await.expect("cancel"));
    assert_eq!(state_of(&queue, &admin, waiting).await, TaskState::Cancelled);
    assert!(
        !queue.cancel(&conn, waiting).await.expect("cancel again"),
        "already final"
    );

    let running = queue
        .enqueue(&conn, &NewTask::new("slow", json!(null)))
        .await
        .expect("enqueue")
        .expect("id");
    let body = Endless::default();
    let worker = Worker::new(queue.clone(), worker_pools(&url, ""), fast(1))
        .handle("slow", body.body())
        .spawn()
        .expect("worker");
    body.started().await;
    assert!(queue.cancel(&conn, running).await.expect("cancel"));
    eventually("cancelled at the next heartbeat", || async {
        state_of(&queue, &admin, running).await == TaskState::Cancelled
    })
    .await;
    assert_eq!(body.dropped(), 1, "the body's future was dropped");
    worker.shutdown().await;
}

#[tokio::test]
async fn a_heartbeat_that_matches_no_row_cancels_the_work() {
    let (url, queue, admin) = database(cluster(), "t_lost").await;
    let conn = admin.get().await.expect("get");
    let id = queue
        .enqueue(&conn, &NewTask::new("slow", json!(null)))
        .await
        .expect("enqueue")
        .expect("id");
    let body = Endless::default();
    let mut config = fast(1);
    config = config.rescue(false);
    let worker = Worker::new(queue.clone(), worker_pools(&url, ""), config)
        .handle("slow", body.body())
        .spawn()
        .expect("worker");
    body.started().await;
    // Someone else now holds this task (a new token): our next heartbeat matches no row.
    conn.execute(
        &format!(
            "UPDATE {}.tasks SET lease_token = lease_token + 1 WHERE id = $1",
            queue.schema()
        ),
        &[&id],
    )
    .await
    .expect("steal the lease");
    eventually("work dropped", || async { body.dropped() == 1 }).await;
    assert_eq!(
        state_of(&queue, &admin, id).await,
        TaskState::Running,
        "nothing written by the loser"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn progress_is_stored_with_the_task() {
    let (url, queue, admin) = database(cluster(), "t_progress").await;
    let conn = admin.get().await.expect("get");
    let id = queue
        .enqueue(&conn, &NewTask::new("long", json!(null)))
        .await
        .expect("enqueue")
        .expect("id");
    let release = Arc::new(tokio::sync::Notify::new());
    let r = Arc::clone(&release);
    let worker = Worker::new(queue.clone(), worker_pools(&url, ""), fast(1))
        .handle("long", move |ctx| {
            let r = Arc::clone(&r);
            Box::pin(async move {
                ctx.progress(42.0, "mixing segments");
                r.notified().await;
                Ok(())
            })
        })
        .spawn()
        .expect("worker");
    eventually("progress stored by a heartbeat", || async {
        let t = queue
            .get(&admin.get().await.expect("get"), id)
            .await
            .expect("get")
            .expect("task");
        t.progress_percent == Some(42.0) && t.progress_message.as_deref() == Some("mixing segments")
    })
    .await;
    release.notify_one();
    settled(&queue, &admin, 1).await;
    worker.shutdown().await;
}

#[tokio::test]
async fn shutdown_releases_leases_without_counting_the_attempt() {
    let (url, queue, admin) = database(cluster(), "t_shutdown").await;
    let conn = admin.get().await.expect("get");
    let id = queue
        .enqueue(&conn, &NewTask::new("forever", json!(null)))
        .await
        .expect("enqueue")
        .expect("id");
    let body = Endless::default();
    let mut config = fast(1);
    config = config.shutdown_grace(Duration::from_millis(50));
    let worker = Worker::new(queue.clone(), worker_pools(&url, ""), config)
        .handle("forever", body.body())
        .spawn()
        .expect("worker");
    body.started().await;
    worker.shutdown().await;
    assert_eq!(body.dropped(), 1, "stopped after the grace period");
    let t = queue.get(&conn, id).await.expect("get").expect("task");
    assert_eq!(
        (t.state, t.attempt, t.lease_owner),
        (TaskState::Available, 0, None)
    );
}

#[tokio::test]
async fn notifications_wake_workers_without_waiting_for_the_poll() {
    let (url, queue, admin) = database(cluster(), "t_listen").await;
    let mut config = fast(1);
    config = config.poll_interval(Duration::from_secs(3600));
    let ran = Arc::new(tokio::sync::Notify::new());
    let r = Arc::clone(&ran);
    let worker = Worker::new(queue.clone(), worker_pools(&url, ""), config)
        .handle("ping", move |_| {
            let r = Arc::clone(&r);
            Box::pin(async move {
                r.notify_one();
                Ok(())
            })
        })
        .spawn()
        .expect("worker");
    // Wait until the worker listens (it looks once on (re)connect), then enqueue.
    eventually("listening", || async {
        let conn = admin.get().await.expect("get");
        let n: i64 = conn
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'",
                &[],
            )
            .await
            .expect("activity")
            .get(0);
        n >= 1
    })
    .await;
    let conn = admin.get().await.expect("get");
    queue
        .enqueue(&conn, &NewTask::new("ping", json!(null)))
        .await
        .expect("enqueue");
    // With an hour-long poll interval only the notification can start it within the bound.
    tokio::time::timeout(support::BOUND, ran.notified())
        .await
        .expect("woken by NOTIFY");
    worker.shutdown().await;
}
