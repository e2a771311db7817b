//! Successes written many at once. A slot whose task succeeded hands it here and takes its
//! next task at once; one loop per worker writes whatever has gathered meanwhile in one
//! statement (nothing waits for a batch to fill: at low load each success is written alone,
//! as soon as it comes). Each row is still checked against its own `(id, attempt, token)`:
//! a task whose lease was lost is not touched. A success the statement did not match, or a
//! statement that failed or got no answer, goes through the one-task write and its retries
//! (which ask the row whether a write whose reply was lost had landed).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_postgres::types::Type;

use crate::error::TaskError;
use crate::execution;
use crate::queue::Finish;
use crate::task::Claimed;
use crate::worker_state::Shared;

/// An attempt that succeeded, with the time its lease runs out.
#[derive(Debug)]
pub(crate) struct Success {
    pub(crate) task: Claimed,
    pub(crate) lease_until: Instant,
}

/// Writes the successes sent on `successes` until every sender is gone and all are written.
pub(crate) async fn run(shared: Arc<Shared>, mut successes: mpsc::UnboundedReceiver<Success>) {
    let most = shared.config.claim_batch.max(1);
    let mut batch = Vec::with_capacity(most);
    while successes.recv_many(&mut batch, most).await > 0 {
        write(&shared, std::mem::take(&mut batch)).await;
    }
}

/// Writes `batch` in one statement; what it does not settle goes one by one.
async fn write(shared: &Arc<Shared>, batch: Vec<Success>) {
    if batch.len() == 1 {
        for one in batch {
            execution::finish(shared, &one.task, Finish::Succeeded, one.lease_until).await;
        }
        return;
    }
    // Bounded by the earliest lease, and by a heartbeat interval like any final write: a
    // statement the database never answers must not hold the successes past their leases.
    let first_expiry = batch
        .iter()
        .map(|s| s.lease_until)
        .min()
        .unwrap_or_else(Instant::now);
    let bound = first_expiry
        .saturating_duration_since(Instant::now())
        .min(shared.config.heartbeat_interval());
    let written = tokio::time::timeout(bound, many(shared, &batch)).await;
    let landed: HashSet<i64> = match written {
        Ok(Ok(ids)) => ids.into_iter().collect(),
        Ok(Err(error)) => {
            tracing::warn!(tasks = batch.len(), %error, "writing successes together failed; writing them one by one");
            HashSet::new()
        }
        Err(_) => {
            tracing::warn!(
                tasks = batch.len(),
                "writing successes together got no answer; writing them one by one"
            );
            HashSet::new()
        }
    };
    let mut rest = Vec::new();
    for success in batch {
        if landed.contains(&success.task.id) {
            execution::record(shared, &success.task, &Finish::Succeeded);
        } else {
            rest.push(success);
        }
    }
    // Not matched: the lease was lost (the one-task write finds that out and says so), or
    // the statement's outcome is unknown. Written concurrently: each bounded by its lease.
    futures_util::future::join_all(rest.into_iter().map(|one| {
        let shared = Arc::clone(shared);
        async move { execution::finish(&shared, &one.task, Finish::Succeeded, one.lease_until).await }
    }))
    .await;
}

async fn many(shared: &Shared, batch: &[Success]) -> Result<Vec<i64>, TaskError> {
    let ids: Vec<i64> = batch.iter().map(|s| s.task.id).collect();
    let attempts: Vec<i32> = batch.iter().map(|s| s.task.attempt).collect();
    let tokens: Vec<i64> = batch.iter().map(|s| s.task.token).collect();
    let conn = shared.control.get().await?;
    let rows = conn
        .query_typed_cached(
            &shared.queue.sql.succeed_many,
            &[
                (&ids, Type::INT8_ARRAY),
                (&attempts, Type::INT4_ARRAY),
                (&tokens, Type::INT8_ARRAY),
            ],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}
