//! The assembly task: load the segments, "mix" them (simulated work, one step per segment,
//! long on purpose), write transcript lines in batches, write the output path and the final
//! status. Every write is a transaction of its own through holdfast-tx, and every step can
//! run again after a crash without doubling anything (transcript lines are keyed by line
//! number; the status changes are conditional on the task that owns the episode).

use std::time::Duration;

use futures_util::future::BoxFuture;
use holdfast::tasks::{TaskContext, TaskFailure};
use holdfast::{TransactionExt, TxOptions};
use tokio_postgres::types::Type;

/// Transcript lines written per transaction.
const BATCH: usize = 50;

/// The body of `assemble` tasks, mixing each segment for `step`.
pub fn body(
    step: Duration,
) -> impl Fn(TaskContext) -> BoxFuture<'static, Result<(), TaskFailure>> + Send + Sync + 'static {
    move |ctx| Box::pin(run(ctx, step))
}

async fn run(ctx: TaskContext, step: Duration) -> Result<(), TaskFailure> {
    let result = assemble(&ctx, step).await;
    if let Err(failure) = &result {
        if !failure.retryable || ctx.attempt >= ctx.max_attempts {
            // Out of attempts: the episode says so (best effort; the task keeps the error).
            let (episode, task, message) = (episode_id(&ctx)?, ctx.id, failure.message.clone());
            let _ = ctx
                .pool
                .transaction(TxOptions::new(), move |tx| {
                    let message = message.clone();
                    Box::pin(async move {
                        tx.execute(
                            "UPDATE episodes SET status = 'failed', error = $3, updated_at = now()
                             WHERE id = $1 AND task_id = $2",
                            &[&episode, &task, &message],
                        )
                        .await
                    })
                })
                .await;
        }
    }
    result
}

fn episode_id(ctx: &TaskContext) -> Result<i64, TaskFailure> {
    ctx.payload
        .get("episode")
        .and_then(|v| v.as_i64())
        .ok_or_else(|| TaskFailure::permanent(format!("payload has no episode id: {}", ctx.payload)))
}

async fn assemble(ctx: &TaskContext, step: Duration) -> Result<(), TaskFailure> {
    let episode = episode_id(ctx)?;
    let task = ctx.id;
    let pool = &ctx.pool;
    let tx_options = TxOptions::new();

    // 1. Claim the episode for this task.
    let owned = pool
        .transaction(tx_options, move |tx| {
            Box::pin(async move {
                tx.execute(
                    "UPDATE episodes SET status = 'assembling', updated_at = now()
                     WHERE id = $1 AND task_id = $2",
                    &[&episode, &task],
                )
                .await
            })
        })
        .await?;
    if owned == 0 {
        return Err(TaskFailure::permanent(format!(
            "episode {episode} no longer belongs to task {task}"
        )));
    }

    // 2. Load the segments.
    // A read: run again on a fresh connection if its connection is lost.
    let segments: Vec<(i32, String, i32)> = pool
        .read_typed(
            "SELECT position, text, duration_ms FROM segments WHERE episode_id = $1 ORDER BY position",
            &[(&episode, Type::INT8)],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();

    // 3. Mix: the long part. Progress goes to the task (heartbeats) and to the episode.
    let total = segments.len().max(1);
    for (done, _) in segments.iter().enumerate() {
        tokio::time::sleep(step).await;
        let percent = ((done + 1) * 90 / total) as f32;
        ctx.progress(percent, format!("mixed {} of {total} segments", done + 1));
        pool.transaction(tx_options, move |tx| {
            Box::pin(async move {
                tx.execute(
                    "UPDATE episodes SET progress = $3, updated_at = now() WHERE id = $1 AND task_id = $2",
                    &[&episode, &task, &percent],
                )
                .await
            })
        })
        .await?;
    }

    // 4. Transcript lines, in batches; a rerun skips what is there.
    let mut starts = 0i64;
    let lines: Vec<(i32, i64, String)> = segments
        .iter()
        .map(|(position, text, duration)| {
            let line = (*position, starts, text.clone());
            starts += i64::from(*duration);
            line
        })
        .collect();
    for batch in lines.chunks(BATCH) {
        let numbers: Vec<i32> = batch.iter().map(|l| l.0).collect();
        let offsets: Vec<i64> = batch.iter().map(|l| l.1).collect();
        let texts: Vec<String> = batch.iter().map(|l| l.2.clone()).collect();
        pool.transaction(tx_options, move |tx| {
            let (numbers, offsets, texts) = (numbers.clone(), offsets.clone(), texts.clone());
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO transcript_lines (episode_id, line_no, starts_ms, text)
                     SELECT $1, * FROM unnest($2::int[], $3::bigint[], $4::text[])
                     ON CONFLICT (episode_id, line_no) DO NOTHING",
                    &[&episode, &numbers, &offsets, &texts],
                )
                .await
            })
        })
        .await?;
    }
    ctx.progress(95.0, "transcript written");

    // 5. The output and the final status, together.
    let path = format!("episodes/{episode}/assembled-{task}.mp3");
    pool.transaction(tx_options, move |tx| {
        let path = path.clone();
        Box::pin(async move {
            tx.execute(
                "UPDATE episodes SET status = 'assembled', progress = 100, output_path = $3, updated_at = now()
                 WHERE id = $1 AND task_id = $2",
                &[&episode, &task, &path],
            )
            .await
        })
    })
    .await?;
    Ok(())
}
