//! Durable tasks: enqueued in the same transaction as the rows they are about, run by a
//! worker under a lease, never left stuck.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --example worker
//! ```

use holdfast::prelude::*;
use holdfast::tasks::{NewTask, Queue, TaskFailure, Worker, WorkerConfig, WorkerPools};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Two pools: `control` for claims, heartbeats and final writes, `work` for task bodies
    // (and, here, for the application). Keep both apart from an API's pool.
    let control = Pool::new(PoolConfig::from_env()?.pool_size(2))?;
    let work = Pool::new(PoolConfig::from_env()?.pool_size(4))?;
    let queue = Queue::new("holdfast_example")?;
    queue.migrate(&work).await?;
    work.execute(
        "CREATE TABLE IF NOT EXISTS example_greetings (task_id int8 PRIMARY KEY, text text NOT NULL)",
        &[],
    )
    .await?;

    // Enqueue inside a transaction: the task exists if and only if the transaction commits.
    let q = queue.clone();
    let id = work
        .transaction(TxOptions::new(), move |tx| {
            let q = q.clone();
            Box::pin(async move {
                let task = NewTask::new("greet", serde_json::json!({ "name": "world" }));
                q.enqueue(tx, &task).await
            })
        })
        .await?
        .ok_or("the task was not enqueued")?;

    let (done_tx, mut done) = tokio::sync::mpsc::channel::<()>(1);
    let worker = Worker::new(
        queue.clone(),
        WorkerPools {
            control,
            work: work.clone(),
        },
        WorkerConfig::default(),
    )
    .handle("greet", move |ctx| {
        let done_tx = done_tx.clone();
        Box::pin(async move {
            let name = ctx.payload["name"].as_str().unwrap_or("nobody").to_string();
            // Execution is at least once: write effects keyed by the task id.
            ctx.pool
                .execute(
                    "INSERT INTO example_greetings VALUES ($1, $2) ON CONFLICT (task_id) DO NOTHING",
                    &[&ctx.id, &format!("hello, {name}")],
                )
                .await
                .map_err(TaskFailure::retry)?;
            let _ = done_tx.send(()).await;
            Ok(())
        })
    })
    .spawn()?;

    done.recv().await;
    // Shutdown lets running tasks finish (their final writes land) and releases the rest.
    worker.shutdown().await;

    let conn = work.get().await?;
    let record = queue.get(&conn, id).await?.ok_or("the task is gone")?;
    println!("task {id}: {}", record.state.as_str());
    Ok(())
}
