//! One attempt of one task: the body runs while heartbeats keep the lease; a heartbeat that
//! matches no row (lease lost), a cancel request, a lease that could not be renewed in
//! time or a body past `run_timeout` stops the body by dropping its future. Heartbeats stop
//! once the body is done, and the outcome is written with retries until it lands or the lease
//! runs out. Successes go to the worker's batched writer ([`crate::completions`]); claims
//! are made for a queue's slots by its fetcher ([`crate::feed`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::config::WorkerConfig;
use crate::context::{Link, TaskContext, TaskFailure};
use crate::error::TaskError;
use crate::queue::{Finish, Lease};
use crate::task::Claimed;
use crate::worker_state::{Handler, Shared};

/// How the body's run ended.
enum End {
    Done(Result<(), TaskFailure>),
    Cancelled,
    /// A heartbeat matched no row: another worker or the rescuer has the task.
    Lost,
    /// No heartbeat got through before the lease ran out.
    Expired,
    /// Shutdown past its grace period.
    Released,
    /// The body ran longer than `run_timeout`.
    TimedOut(Duration),
}

/// An attempt whose body is over, with the outcome still to be written.
pub(crate) struct Pending {
    task: Claimed,
    outcome: Finish,
    lease_until: Instant,
}

/// Runs one attempt's body under its lease; `hard_stop` is the slot's view of the shutdown
/// past its grace period. Returns the outcome to write, or `None` when the lease was lost
/// (nothing may be written then).
pub(crate) async fn run(
    shared: Arc<Shared>,
    task: Claimed,
    handler: Option<Handler>,
    hard_stop: &mut watch::Receiver<bool>,
) -> Option<Pending> {
    let config = shared.config_for(&task.kind);
    // Conservative: the server's expiry is its own now() + lease, taken after the claim was
    // sent (a fetched task may have waited in its feed since).
    let mut lease_until = task.claimed_at + config.lease;
    let Some(handler) = handler else {
        let error = format!("no handler registered for task kind {:?}", task.kind);
        tracing::error!(task = task.id, kind = %task.kind, "{error}");
        let outcome = Finish::Failed {
            error,
            permanent: true,
            retry_in: Duration::ZERO,
        };
        return Some(Pending {
            task,
            outcome,
            lease_until,
        });
    };
    let link = Arc::new(Link::default());
    let ctx = TaskContext {
        id: task.id,
        kind: task.kind.clone(),
        payload: task.payload.clone(),
        attempt: task.attempt,
        max_attempts: task.max_attempts,
        pool: shared.work.clone(),
        token: task.token,
        queue: shared.queue.clone(),
        link: Arc::clone(&link),
    };
    let started = Instant::now();
    let span = attempt_span(&task);
    // A boxed future: dropping it below really ends the body (and returns what it holds,
    // such as pooled connections) before the outcome is written.
    let mut work = handler(ctx.clone()).instrument(span.clone());
    let mut beat = tokio::time::interval_at(
        tokio::time::Instant::now() + config.heartbeat_interval(),
        config.heartbeat_interval(),
    );
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Armed only when the body does not finish at once (the select polls the body first).
    let overtime = async {
        match config.run_timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(overtime);
    let end = loop {
        tokio::select! {
            // The body first: one that is done at once never arms the heartbeat timer.
            biased;
            result = &mut work => break End::Done(result),
            _ = beat.tick() => {
                let sent = Instant::now();
                let renewed = tokio::time::timeout(config.heartbeat_interval(), heartbeat(&shared, &task, ctx.take_progress())).await;
                match renewed {
                    Ok(Ok(Lease::Held { cancel: false })) => lease_until = sent + config.lease,
                    Ok(Ok(Lease::Held { cancel: true })) => break End::Cancelled,
                    Ok(Ok(Lease::Lost)) => break End::Lost,
                    Ok(Err(error)) => {
                        tracing::warn!(task = task.id, %error, "heartbeat failed; still holding the lease until it runs out");
                    }
                    Err(_) => tracing::warn!(task = task.id, "heartbeat timed out"),
                }
                if Instant::now() >= lease_until {
                    break End::Expired;
                }
            }
            _ = async { hard_stop.wait_for(|stop| *stop).await.map(|_| ()) } => break End::Released,
            _ = &mut overtime => break End::TimedOut(config.run_timeout.unwrap_or_default()),
        }
    };
    // Whatever happens next, the body is over: tell whatever it left behind holding its
    // context, and drop its future.
    link.stop();
    drop(work);
    shared.metrics.run_seconds.record(started.elapsed().as_secs_f64());
    record_end(&span, &end);
    let outcome = match end {
        End::Done(Ok(())) => Finish::Succeeded,
        End::Done(Err(failure)) if failure.is_snooze() => Finish::Snoozed {
            delay: failure.retry_after.unwrap_or_default(),
        },
        End::Done(Err(failure)) => Finish::Failed {
            retry_in: failure
                .retry_after
                .unwrap_or_else(|| retry_delay(config, task.attempt)),
            permanent: !failure.retryable,
            error: failure.message,
        },
        End::TimedOut(limit) => {
            tracing::warn!(
                task = task.id,
                attempt = task.attempt,
                run_timeout_s = limit.as_secs_f64(),
                "the task ran longer than run_timeout: stopped, and failed to be retried"
            );
            Finish::Failed {
                retry_in: retry_delay(config, task.attempt),
                permanent: false,
                error: format!("ran longer than run_timeout ({limit:?}): stopped"),
            }
        }
        End::Cancelled => Finish::Cancelled,
        End::Released => Finish::Released,
        End::Lost | End::Expired => {
            shared.metrics.lost_leases.increment(1);
            tracing::warn!(
                task = task.id,
                attempt = task.attempt,
                "lease lost: the task's work was stopped and nothing more is written"
            );
            return None;
        }
    };
    Some(Pending {
        task,
        outcome,
        lease_until,
    })
}

impl Pending {
    /// Whether the attempt succeeded (its write goes to the batched writer).
    pub(crate) fn succeeded(&self) -> bool {
        matches!(self.outcome, Finish::Succeeded)
    }

    /// The success to write, for the batched writer.
    pub(crate) fn into_success(self) -> crate::completions::Success {
        crate::completions::Success {
            task: self.task,
            lease_until: self.lease_until,
        }
    }
}

/// The attempt's span (when a subscriber wants `holdfast_tasks::attempt` at DEBUG): a
/// child of the enqueuer's trace when the task carries one and a
/// [`TraceCarrier`](crate::TraceCarrier) is installed, a root otherwise. The body runs in
/// it, so its connections' statements are its children.
fn attempt_span(task: &Claimed) -> Span {
    let span = tracing::debug_span!(
        target: "holdfast_tasks::attempt",
        parent: None,
        "task attempt",
        otel.name = %format_args!("task {}", task.kind),
        otel.kind = "consumer",
        otel.status_code = Empty,
        holdfast.task.id = task.id,
        holdfast.task.kind = %task.kind,
        holdfast.task.attempt = task.attempt,
        holdfast.task.outcome = Empty,
        error.type = Empty,
    );
    if let (false, Some(carrier), Some(context)) = (
        span.is_disabled(),
        crate::trace::carrier(),
        task.trace_context.as_deref(),
    ) {
        carrier.adopt(&span, context);
    }
    span
}

/// How the attempt's body ended, on its span.
fn record_end(span: &Span, end: &End) {
    if span.is_disabled() {
        return;
    }
    let (outcome, error) = match end {
        End::Done(Ok(())) => ("succeeded", None),
        End::Done(Err(f)) if f.is_snooze() => ("snoozed", None),
        End::Done(Err(f)) if f.retryable => ("failed", Some("retryable")),
        End::Done(Err(_)) => ("failed", Some("permanent")),
        End::Cancelled => ("cancelled", None),
        End::Lost => ("lease_lost", Some("lease_lost")),
        End::Expired => ("lease_expired", Some("lease_expired")),
        End::Released => ("released", None),
        End::TimedOut(_) => ("timed_out", Some("run_timeout")),
    };
    span.record("holdfast.task.outcome", outcome);
    if let Some(error) = error {
        span.record("error.type", error);
        span.record("otel.status_code", "ERROR");
    }
}

/// Writes an attempt's outcome (see [`finish`]).
pub(crate) async fn write(shared: &Shared, pending: Pending) {
    finish(shared, &pending.task, pending.outcome, pending.lease_until).await;
}

/// Claims up to `limit` tasks of `queue`, bounded by the heartbeat interval: a connection
/// that never answers (a hung server or network) must not hold the fetcher. A claim that
/// landed but whose answer never came leaves leases that expire, and the rescuer takes the
/// tasks back.
pub(crate) async fn claim(shared: &Shared, queue: &str, limit: usize) -> Result<Vec<Claimed>, TaskError> {
    let config = &shared.config;
    let claim = async {
        let conn = shared.control.get().await?;
        let claimed = shared
            .queue
            .claim(
                &conn,
                &config.owner,
                queue,
                &shared.kinds,
                &shared.leases_ms,
                limit as i64,
            )
            .await?;
        Ok(claimed)
    };
    tokio::time::timeout(config.heartbeat_interval(), claim)
        .await
        .unwrap_or(Err(TaskError::TimedOut {
            what: "claim",
            after: config.heartbeat_interval(),
        }))
}

async fn heartbeat(
    shared: &Shared,
    task: &Claimed,
    progress: Option<(f32, String)>,
) -> Result<Lease, TaskError> {
    let conn = shared.control.get().await?;
    Ok(shared
        .queue
        .heartbeat(&conn, task, shared.config_for(&task.kind).lease, progress)
        .await?)
}

/// The delay before attempt `attempt + 1`: doubling from `retry_base`, with full jitter
/// over its upper half, at most `retry_max`.
fn retry_delay(c: &WorkerConfig, attempt: i32) -> Duration {
    let doublings = attempt.saturating_sub(1).clamp(0, 20) as u32;
    let bound = c.retry_base.saturating_mul(1u32 << doublings).min(c.retry_max);
    bound.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// Writes the outcome: one compare-and-set statement, retried on fresh connections until it
/// lands, the lease turns out lost, or the lease runs out (then the rescuer takes over).
///
/// The write is idempotent: once it has landed, running it again matches no row. So a write
/// whose reply was lost is simply sent again; if that matches nothing, the task row (which
/// keeps our lease token) says whether an earlier try landed or the lease was lost.
pub(crate) async fn finish(shared: &Shared, task: &Claimed, outcome: Finish, lease_until: Instant) {
    let mut tries = 0u32;
    let mut uncertain = false;
    loop {
        tries += 1;
        let attempt = async {
            let conn = shared.control.get().await?;
            let result = shared.queue.finish(&conn, task, &outcome).await;
            let landed = match &result {
                Ok(false) => Some(shared.queue.landed(&conn, task).await?),
                _ => None,
            };
            Ok::<_, TaskError>((result?, landed))
        };
        // Each try is bounded by what is left of the lease: a write the database never
        // answers must not hold the slot past it.
        let left = lease_until.saturating_duration_since(Instant::now());
        let written = tokio::time::timeout(left, attempt)
            .await
            .unwrap_or(Err(TaskError::TimedOut {
                what: "final write",
                after: left,
            }));
        match written {
            Ok((true, _)) => return record(shared, task, &outcome),
            Ok((false, Some(true))) => {
                // An earlier try landed and only its reply was lost.
                tracing::debug!(task = task.id, "the final write had landed; its reply was lost");
                return record(shared, task, &outcome);
            }
            Ok((false, _)) => {
                shared.metrics.lost_leases.increment(1);
                tracing::warn!(
                    task = task.id,
                    uncertain,
                    "lease lost before the outcome could be written; discarded"
                );
                return;
            }
            Err(error) => {
                uncertain = true;
                let pause = Duration::from_millis(20)
                    .saturating_mul(1 << tries.min(6))
                    .mul_f64(fastrand::f64());
                if Instant::now() + pause >= lease_until {
                    tracing::error!(task = task.id, tries, %error, "the outcome could not be written before the lease ran out; the rescuer will take the task over");
                    return;
                }
                shared.metrics.finalize_retries.increment(1);
                tracing::warn!(task = task.id, tries, %error, retry_in_s = pause.as_secs_f64(), "writing the task's outcome failed; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Counts a written outcome.
pub(crate) fn record(shared: &Shared, task: &Claimed, outcome: &Finish) {
    let m = &shared.metrics;
    match outcome {
        Finish::Succeeded => m.succeeded.increment(1),
        Finish::Failed { permanent, .. } if *permanent || task.attempt >= task.max_attempts => {
            m.failed.increment(1)
        }
        Finish::Failed { .. } => m.retried.increment(1),
        Finish::Cancelled => m.cancelled.increment(1),
        Finish::Released => m.released.increment(1),
        Finish::Snoozed { .. } => m.snoozed.increment(1),
    }
    tracing::debug!(task = task.id, attempt = task.attempt, outcome = ?outcome_name(outcome), "task attempt finished");
}

fn outcome_name(outcome: &Finish) -> &'static str {
    match outcome {
        Finish::Succeeded => "succeeded",
        Finish::Failed { .. } => "failed",
        Finish::Cancelled => "cancelled",
        Finish::Released => "released",
        Finish::Snoozed { .. } => "snoozed",
    }
}
