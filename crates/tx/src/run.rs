//! `pool.transaction(options, |tx| ...)`: BEGIN, the closure, COMMIT, and retries that are
//! safe: conflicts and lost connections run the closure again, a COMMIT whose reply was lost
//! is resolved from the server first, and nothing else is retried.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use holdfast_pool::{Pool, PooledConnection};
use holdfast_wire::TxStatus;
use tracing::field::Empty;
use tracing::Instrument;

use crate::classify::{ClassifyError, ErrorClass};
use crate::error::TxError;
use crate::options::TxOptions;
use crate::tx::Tx;

/// Transactions on a pool. SQLAlchemy users: this is `session_scope()`, done right.
pub trait TransactionExt {
    /// Runs `work` in a transaction and commits it exactly once.
    ///
    /// `work` may run more than once (after a serialization failure, a deadlock, or a
    /// connection lost before COMMIT was sent). An error it returns rolls back and is
    /// returned (retried first if its [`ErrorClass`] says so); a panic rolls back and
    /// continues unwinding.
    ///
    /// The closure may borrow the caller's locals: take the references before it and move
    /// them in (`let note = &note;` then `move |tx| Box::pin(async move { ... })`), since
    /// the closure runs once per attempt and cannot give its captures away. The future it
    /// returns is boxed (`Box::pin`) because it borrows the `Tx` it is given; the error type
    /// usually needs naming once, on the `Ok`. A function the closure calls takes
    /// `&Tx<'_>`.
    ///
    /// ```no_run
    /// # async fn example(pool: holdfast::Pool) -> Result<(), holdfast::TxError<holdfast::tokio_postgres::Error>> {
    /// use holdfast::tokio_postgres;
    /// use holdfast::{TransactionExt, TxOptions};
    /// let id = 7_i64;
    /// let note = String::from("done");
    /// let note = &note; // borrowed, not cloned per attempt
    /// pool.transaction(TxOptions::new(), move |tx| {
    ///     Box::pin(async move {
    ///         tx.execute("UPDATE episodes SET status = $2 WHERE id = $1", &[&id, note]).await?;
    ///         Ok::<_, tokio_postgres::Error>(())
    ///     })
    /// })
    /// .await?;
    /// println!("{note}"); // still ours
    /// # Ok(())
    /// # }
    /// ```
    #[doc(alias = "session_scope")]
    fn transaction<'p, T, E, F>(
        &'p self,
        options: TxOptions,
        work: F,
    ) -> BoxFuture<'p, Result<T, TxError<E>>>
    where
        T: Send + 'p,
        E: ClassifyError + Send + 'static,
        F: for<'t> FnMut(&'t Tx<'p>) -> BoxFuture<'t, Result<T, E>> + Send + 'p;

    /// Like [`transaction`](TransactionExt::transaction), with the application's own check
    /// for when the server cannot tell whether a COMMIT whose reply was lost landed (the
    /// transaction id is gone, the server cannot be reached, or a failover to an
    /// asynchronous replica lost it). `already_done` runs on a fresh connection and looks for
    /// the work's idempotency key (a unique row the transaction writes): `true` reports
    /// success, `false` runs the work again.
    fn transaction_idempotent<'p, T, E, F>(
        &'p self,
        options: TxOptions,
        already_done: DoneCheck<'p>,
        work: F,
    ) -> BoxFuture<'p, Result<T, TxError<E>>>
    where
        T: Send + 'p,
        E: ClassifyError + Send + 'static,
        F: for<'t> FnMut(&'t Tx<'p>) -> BoxFuture<'t, Result<T, E>> + Send + 'p;
}

/// An application's own check that a transaction's work is already durable, for when the
/// server cannot say (see [`TransactionExt::transaction_idempotent`]).
pub type DoneCheck<'p> = Box<
    dyn for<'c> Fn(&'c PooledConnection) -> BoxFuture<'c, Result<bool, tokio_postgres::Error>>
        + Send
        + Sync
        + 'p,
>;

impl TransactionExt for Pool {
    fn transaction<'p, T, E, F>(&'p self, options: TxOptions, work: F) -> BoxFuture<'p, Result<T, TxError<E>>>
    where
        T: Send + 'p,
        E: ClassifyError + Send + 'static,
        F: for<'t> FnMut(&'t Tx<'p>) -> BoxFuture<'t, Result<T, E>> + Send + 'p,
    {
        Box::pin(run(self, options, None, work))
    }

    fn transaction_idempotent<'p, T, E, F>(
        &'p self,
        options: TxOptions,
        already_done: DoneCheck<'p>,
        work: F,
    ) -> BoxFuture<'p, Result<T, TxError<E>>>
    where
        T: Send + 'p,
        E: ClassifyError + Send + 'static,
        F: for<'t> FnMut(&'t Tx<'p>) -> BoxFuture<'t, Result<T, E>> + Send + 'p,
    {
        Box::pin(run(self, options, Some(already_done), work))
    }
}

/// The shortest wait for a connection an attempt is given, however little budget is left.
const MIN_WAIT: Duration = Duration::from_millis(10);

/// Runs the transaction inside a `transaction` span (when a subscriber wants
/// `holdfast_tx` spans at DEBUG): its attempts, how it ended (`holdfast.tx.commit`:
/// `committed` or `failed`; `holdfast.tx.lost_reply`: how a COMMIT whose reply was lost was
/// resolved), and the error's kind. Connections it checks out trace their statements under
/// it.
async fn run<'p, T, E, F>(
    pool: &'p Pool,
    options: TxOptions,
    done: Option<DoneCheck<'_>>,
    work: F,
) -> Result<T, TxError<E>>
where
    E: ClassifyError + 'static,
    F: for<'t> FnMut(&'t Tx<'p>) -> BoxFuture<'t, Result<T, E>>,
{
    let span = tracing::debug_span!(
        target: "holdfast_tx",
        "transaction",
        otel.name = "transaction",
        otel.status_code = Empty,
        db.system.name = "postgresql",
        db.client.connection.pool.name = %pool.config().name,
        holdfast.tx.attempts = Empty,
        holdfast.tx.commit = Empty,
        holdfast.tx.lost_reply = Empty,
        error.type = Empty,
    );
    if span.is_disabled() {
        return run_attempts(pool, options, done, work).await;
    }
    let result = run_attempts(pool, options, done, work)
        .instrument(span.clone())
        .await;
    match &result {
        Ok(_) => {
            span.record("holdfast.tx.commit", "committed");
        }
        Err(error) => {
            span.record("holdfast.tx.commit", "failed");
            span.record("error.type", error.kind_name().as_str());
            span.record("otel.status_code", "ERROR");
        }
    }
    result
}

async fn run_attempts<'p, T, E, F>(
    pool: &'p Pool,
    options: TxOptions,
    done: Option<DoneCheck<'_>>,
    mut work: F,
) -> Result<T, TxError<E>>
where
    E: ClassifyError + 'static,
    F: for<'t> FnMut(&'t Tx<'p>) -> BoxFuture<'t, Result<T, E>>,
{
    let policy = options.retry;
    let started = Instant::now();
    let mut attempt = 1u32;
    loop {
        // Waiting for a connection counts against the budget too: an outage shorter than
        // what is left is waited out in the pool's queue.
        let left = policy.deadline.saturating_sub(started.elapsed());
        let wait = left.clamp(MIN_WAIT, pool.config().pool_timeout.max(MIN_WAIT));
        tracing::Span::current().record("holdfast.tx.attempts", attempt);
        let error = match attempt_once(pool, &options, done.as_ref(), &mut work, wait).await {
            Ok(value) => {
                tracing::debug!(attempt, "commit succeeded");
                return Ok(value);
            }
            Err(error) => error,
        };
        let class = error.error_class();
        if read_only_failover(&error) {
            // A read-only transaction error on a read-write transaction: we are talking to
            // a standby. Every connection opened before now is suspect.
            pool.invalidate_all();
        }
        let pause = policy.backoff(attempt + 1);
        let in_time = started.elapsed() + pause < policy.deadline;
        // Attempts bound conflicts (serialization failures, deadlocks), which another run
        // may meet again; a lost connection is retried for as long as the budget lasts.
        let conflicts_spent = class == ErrorClass::Conflict && attempt >= policy.max_attempts;
        if !class.is_retryable() || conflicts_spent || !in_time || policy.max_attempts <= 1 {
            if class.is_retryable() && policy.max_attempts > 1 {
                let stage = error.stage();
                tracing::error!(attempts = attempt, stage, error = %error, "transaction failed {stage} after {attempt} attempts");
            }
            return Err(error);
        }
        let stage = error.stage();
        let retry_in = pause.as_secs_f64();
        if class == ErrorClass::Conflict {
            tracing::warn!(
                attempt,
                max_attempts = policy.max_attempts,
                retry_in_s = retry_in,
                stage,
                error = %error,
                "serialization conflict {stage} (attempt {attempt}/{}), retrying in {retry_in:.3} s",
                policy.max_attempts,
            );
        } else {
            let left_s = policy.deadline.saturating_sub(started.elapsed()).as_secs_f64();
            tracing::warn!(
                attempt,
                budget_left_s = left_s,
                retry_in_s = retry_in,
                stage,
                error = %error,
                "connection error {stage} (attempt {attempt}, {left_s:.1} s of the budget left), retrying in {retry_in:.3} s",
            );
        }
        let what = match class {
            ErrorClass::Conflict => "conflict",
            _ => "disconnect",
        };
        metrics::counter!("holdfast_tx_retries_total", "class" => what).increment(1);
        tokio::time::sleep(pause).await;
        attempt += 1;
    }
}

async fn attempt_once<'p, T, E, F>(
    pool: &'p Pool,
    options: &TxOptions,
    done: Option<&DoneCheck<'_>>,
    work: &mut F,
    wait: Duration,
) -> Result<T, TxError<E>>
where
    F: for<'t> FnMut(&'t Tx<'p>) -> BoxFuture<'t, Result<T, E>>,
{
    let conn = pool.get_timeout(wait).await?;
    let tx = Tx::begin(conn, options).await.map_err(TxError::widen)?;
    let outcome = AssertUnwindSafe(work(&tx)).catch_unwind().await;
    match outcome {
        Err(panic) => {
            // The connection goes back through the pool, which rolls it back.
            drop(tx);
            std::panic::resume_unwind(panic)
        }
        Ok(Err(error)) => {
            tx.abandon().await;
            Err(TxError::Closure(error))
        }
        Ok(Ok(value)) => {
            if !matches!(tx.state().tx_status(), TxStatus::InTransaction | TxStatus::Failed) {
                let ended = tx.state().in_flight() == 0 && !tx.state().liveness().is_dead();
                if ended {
                    tx.abandon().await;
                    return Err(TxError::EndedByClosure);
                }
            }
            match tx.finish().await {
                Ok(()) => Ok(value),
                Err(failure) => match (failure.into_error(), done) {
                    (TxError::CommitOutcomeUnknown { xid, reason }, Some(check)) => {
                        settle_with_key(pool, check, xid, reason).await.map(|()| value)
                    }
                    (error, _) => Err(error),
                },
            }
        }
    }
}

/// The server could not say whether the COMMIT landed; the application's idempotency check
/// can. Done: success. Not done: nothing committed, safe to run again.
async fn settle_with_key<E>(
    pool: &Pool,
    check: &DoneCheck<'_>,
    xid: Option<u64>,
    reason: String,
) -> Result<(), TxError<E>> {
    let unknown = |why: String| TxError::CommitOutcomeUnknown { xid, reason: why };
    let conn = pool
        .get()
        .await
        .map_err(|e| unknown(format!("{reason}; idempotency check impossible: {e}")))?;
    match check(&conn).await {
        Ok(true) => {
            tracing::info!(
                ?xid,
                "the idempotency check found the work done: the lost COMMIT landed"
            );
            Ok(())
        }
        Ok(false) => Err(TxError::CommitAborted),
        Err(e) => Err(unknown(format!("{reason}; idempotency check failed: {e}"))),
    }
}

fn read_only_failover<E>(error: &TxError<E>) -> bool {
    match error {
        TxError::Database(e) => e.code().is_some_and(|c| c.code() == "25006"),
        _ => false,
    }
}
