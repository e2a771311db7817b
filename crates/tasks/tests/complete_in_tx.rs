//! A body that ends its task inside its own transaction (`ctx.complete_in(tx)`): its effects
//! happen exactly once, even when the worker dies right after that COMMIT or the COMMIT's
//! reply is lost; a body whose lease was lost cannot complete the task.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use holdfast_faults::{Action, FaultProxy, Faults, MessageRule, Trigger};
use holdfast_pool::Pool;
use holdfast_tasks::{
    NewTask, Queue, Rescuer, TaskContext, TaskError, TaskFailure, TaskId, TaskState, Worker, WorkerPools,
};
use holdfast_testkit::cluster;
use holdfast_tx::{TransactionExt, TxOptions};
use serde_json::json;
use support::{database, eventually, fast, pool, settled, worker_pools};
use tokio::sync::mpsc;

/// The body: one effect row and the task's success in one transaction; then it tells the
/// test, and (when `hang`) never returns, as a worker that died after the COMMIT would.
fn ship(
    committed: mpsc::UnboundedSender<TaskId>,
    runs: Arc<AtomicU32>,
    hang: bool,
) -> impl Fn(TaskContext) -> BoxFuture<'static, Result<(), TaskFailure>> + Send + Sync + 'static {
    move |ctx| {
        let (committed, runs) = (committed.clone(), Arc::clone(&runs));
        Box::pin(async move {
            runs.fetch_add(1, Ordering::SeqCst);
            let c = &ctx;
            ctx.pool
                .transaction(TxOptions::new(), move |tx| {
                    Box::pin(async move {
                        tx.execute(
                            "INSERT INTO effects (task_id, attempt) VALUES ($1, $2)",
                            &[&c.id, &c.attempt],
                        )
                        .await?;
                        c.complete_in(tx).await?;
                        Ok::<_, TaskError>(())
                    })
                })
                .await
                .map_err(TaskFailure::retry)?;
            let _ = committed.send(ctx.id);
            if hang {
                std::future::pending::<()>().await;
            }
            Ok(())
        })
    }
}

async fn effects_and_state(queue: &Queue, admin: &Pool, id: TaskId) -> (i64, TaskState, i32) {
    let conn = admin.get().await.expect("get");
    let effects: i64 = conn
        .query_one("SELECT count(*) FROM effects WHERE task_id = $1", &[&id])
        .await
        .expect("effects")
        .get(0);
    let task = queue.get(&conn, id).await.expect("get").expect("task");
    (effects, task.state, task.attempt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_right_after_the_commit_leaves_nothing_to_run_again() {
    let (url, queue, admin) = database(cluster(), "t_complete_die").await;
    let id = queue
        .enqueue(&admin.get().await.expect("get"), &NewTask::new("ship", json!({})))
        .await
        .expect("enqueue")
        .expect("id");
    let (committed, mut heard) = mpsc::unbounded_channel();
    let runs = Arc::new(AtomicU32::new(0));
    let first = Worker::new(queue.clone(), worker_pools(&url, "a"), fast(1).rescue(false))
        .handle("ship", ship(committed.clone(), Arc::clone(&runs), true))
        .spawn()
        .expect("worker");
    assert_eq!(heard.recv().await, Some(id), "the body committed");
    first.abort();
    // Past the lease the crashed attempt held (1.5 s), a rescuer pass: a task still running
    // would be handed to the next worker now.
    let conn = admin.get().await.expect("get");
    let aborted: std::time::SystemTime = conn.query_one("SELECT now()", &[]).await.expect("now").get(0);
    eventually("the crashed attempt's lease would have run out", || async {
        conn.query_one(
            "SELECT clock_timestamp() > $1::timestamptz + interval '2 seconds'",
            &[&aborted],
        )
        .await
        .is_ok_and(|r| r.get::<_, bool>(0))
    })
    .await;
    drop(conn);
    Rescuer::new(queue.clone(), pool(&url, "rescue", 1))
        .run_once()
        .await
        .expect("rescue");
    let second = Worker::new(queue.clone(), worker_pools(&url, "b"), fast(1))
        .handle("ship", ship(committed, Arc::clone(&runs), false))
        .spawn()
        .expect("worker");
    settled(&queue, &admin, 1).await;
    second.shutdown().await;
    assert_eq!(
        effects_and_state(&queue, &admin, id).await,
        (1, TaskState::Succeeded, 1),
        "one effect, the task succeeded with its first attempt"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the body ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_reply_of_the_completing_transaction_is_resolved_once() {
    let cluster = cluster();
    let (url, queue, admin) = database(cluster, "t_complete_lost").await;
    let proxy = FaultProxy::start_local(SocketAddr::from(([127, 0, 0, 1], cluster.port())))
        .await
        .expect("proxy");
    let db = url.rsplit('/').next().expect("db name");
    let via = format!("postgres://postgres@127.0.0.1:{}/{db}", proxy.port());
    let id = queue
        .enqueue(&admin.get().await.expect("get"), &NewTask::new("ship", json!({})))
        .await
        .expect("enqueue")
        .expect("id");
    // Only the body's COMMIT goes through the proxy: its reply is dropped.
    proxy
        .set(Faults {
            rule: Some(MessageRule {
                trigger: Trigger::Commit,
                action: Action::DropReply,
                once: true,
            }),
            ..Faults::default()
        })
        .expect("faults");
    let (committed, mut heard) = mpsc::unbounded_channel();
    let runs = Arc::new(AtomicU32::new(0));
    let pools = WorkerPools {
        control: pool(&url, "ctl", 2),
        work: pool(&via, "work", 2),
    };
    let worker = Worker::new(queue.clone(), pools, fast(1))
        .handle("ship", ship(committed, Arc::clone(&runs), false))
        .spawn()
        .expect("worker");
    assert_eq!(heard.recv().await, Some(id), "the transaction reported success");
    settled(&queue, &admin, 1).await;
    worker.shutdown().await;
    proxy.clear();
    assert_eq!(
        effects_and_state(&queue, &admin, id).await,
        (1, TaskState::Succeeded, 1)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_attempt_that_lost_its_lease_cannot_complete_the_task() {
    let (url, queue, admin) = database(cluster(), "t_complete_lost_lease").await;
    let id = queue
        .enqueue(&admin.get().await.expect("get"), &NewTask::new("ship", json!({})))
        .await
        .expect("enqueue")
        .expect("id");
    let (held, mut running) = mpsc::unbounded_channel();
    let (go, proceed) = mpsc::unbounded_channel::<()>();
    let proceed = Arc::new(tokio::sync::Mutex::new(Some(proceed)));
    let result = Arc::new(std::sync::Mutex::new(None));
    let r = Arc::clone(&result);
    let worker = Worker::new(queue.clone(), worker_pools(&url, ""), fast(1))
        .handle("ship", move |ctx| {
            let (held, proceed, r) = (held.clone(), Arc::clone(&proceed), Arc::clone(&r));
            Box::pin(async move {
                let _ = held.send(());
                if let Some(mut p) = proceed.lock().await.take() {
                    let _ = p.recv().await;
                }
                // Whatever happens to this future, try to complete through the work pool.
                let conn = ctx.pool.get().await?;
                let outcome = ctx.complete_in(&conn).await;
                *r.lock().expect("result") = Some(outcome.map_err(|e| e.to_string()));
                Ok(())
            })
        })
        .spawn()
        .expect("worker");
    running.recv().await.expect("running");
    // Another owner takes the task over (as the rescuer and a new claim would).
    admin
        .get()
        .await
        .expect("get")
        .execute(
            "UPDATE t_complete_lost_lease.tasks SET lease_token = lease_token + 1 WHERE id = $1",
            &[&id],
        )
        .await
        .expect("take over");
    let _ = go.send(());
    eventually("the body tried to complete", || async {
        result.lock().expect("result").is_some()
    })
    .await;
    worker.abort();
    let outcome = result.lock().expect("result").take();
    assert!(
        matches!(&outcome, Some(Err(text)) if text.contains("no longer holds")),
        "{outcome:?}"
    );
    let task = queue
        .get(&admin.get().await.expect("get"), id)
        .await
        .expect("get")
        .expect("task");
    assert_ne!(
        task.state,
        TaskState::Succeeded,
        "the stale attempt wrote nothing"
    );
}
