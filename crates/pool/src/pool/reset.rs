//! Returning a connection that is not clean: cancel and drain requests still in flight, roll
//! back an open or failed transaction, run the reset query; each step bounded by
//! `reset_timeout`. Whatever fails, the connection is closed rather than handed out.

use std::sync::Arc;

use holdfast_wire::TxStatus;

use super::metrics::ResetKind;
use super::slot::{CloseReason, Slot};
use super::Shared;

/// How long a returned connection's outstanding reply may take before the request counts
/// as abandoned and is cancelled.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(5);

/// Holds a connection during its reset; if the task is dropped unfinished (the runtime shuts
/// down), the connection is closed and the books stay right.
struct Resetting {
    shared: Arc<Shared>,
    slot: Option<Box<Slot>>,
}

impl Drop for Resetting {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.shared.discard(slot, CloseReason::ResetFailed, false);
        }
    }
}

/// Resets `slot` in a task of its own, then places it or closes it.
pub(crate) fn spawn(shared: Arc<Shared>, slot: Box<Slot>) {
    let runtime = shared.runtime.clone();
    let resetting = Resetting {
        shared,
        slot: Some(slot),
    };
    runtime.spawn(run(resetting));
}

async fn run(mut job: Resetting) {
    let outcome = match job.slot.as_ref() {
        Some(slot) => reset(&job.shared, slot).await,
        None => return,
    };
    let Some(slot) = job.slot.take() else {
        return;
    };
    let shared = Arc::clone(&job.shared);
    match outcome {
        Ok(()) => shared.put(slot),
        Err(reason) => {
            // Not known dead: its session may live on (a hung network never tells the server
            // the socket closed), holding what the caller left open.
            let abandoned = (reason == CloseReason::ResetFailed && !slot.conn.is_closed())
                .then(|| slot.conn.backend_pid())
                .flatten();
            shared.discard(slot, reason, false);
            if let Some(pid) = abandoned {
                super::abandon::terminate(&shared, pid, "reset failed");
            }
        }
    }
}

async fn reset(shared: &Shared, slot: &Slot) -> Result<(), CloseReason> {
    let config = &shared.config;
    let conn = &slot.conn;
    let state = conn.state();
    let drained = |s: &holdfast_wire::WireState| s.in_flight() == 0 || s.liveness().is_dead();
    if state.in_flight() > 0 {
        // Usually the ReadyForQuery of a finished query is just behind its rows (the driver
        // hands rows over before it): give it a moment before calling the query abandoned.
        let _ = tokio::time::timeout(SETTLE, state.wait_for(drained)).await;
    }
    if state.in_flight() > 0 {
        // A future was dropped mid-query: nobody wants the answer. Ask the server to stop,
        // then wait for the ReadyForQuery of everything outstanding.
        shared.metrics.reset(ResetKind::Drain);
        let cancel = async {
            if let Err(error) = conn.cancel_query().await {
                tracing::debug!(pool = %config.name, conn = slot.id, %error, "cancel request failed");
            }
            std::future::pending::<()>().await
        };
        // The cancel request and the drain share one bound: a server or network that answers
        // neither holds the connection, and its place in the pool, no longer than that.
        let drain = async {
            tokio::select! {
                _ = state.wait_for(drained) => {}
                _ = cancel => {}
            }
        };
        if tokio::time::timeout(config.reset_timeout, drain).await.is_err() {
            tracing::warn!(pool = %config.name, conn = slot.id, "requests still in flight after reset_timeout: closing");
            return Err(CloseReason::ResetFailed);
        }
    }
    if conn.is_closed() {
        return Err(CloseReason::Broken);
    }
    if matches!(state.tx_status(), TxStatus::InTransaction | TxStatus::Failed) {
        shared.metrics.reset(ResetKind::Rollback);
        tracing::debug!(pool = %config.name, conn = slot.id, status = ?state.tx_status(), "rolling back a returned connection");
        bounded(shared, conn.batch_execute("ROLLBACK")).await?;
    }
    if let Some(query) = &config.reset_query {
        shared.metrics.reset(ResetKind::Query);
        bounded(shared, conn.batch_execute(query)).await?;
        // DISCARD ALL and friends deallocate prepared statements: forget the cached ones.
        slot.statements.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
    if state.is_clean() {
        Ok(())
    } else {
        Err(CloseReason::ResetFailed)
    }
}

async fn bounded(
    shared: &Shared,
    step: impl std::future::Future<Output = Result<(), tokio_postgres::Error>>,
) -> Result<(), CloseReason> {
    match tokio::time::timeout(shared.config.reset_timeout, step).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => {
            tracing::debug!(pool = %shared.config.name, error = %crate::pg_error_text(&error), "reset failed: closing");
            Err(CloseReason::ResetFailed)
        }
        Err(_) => {
            tracing::warn!(pool = %shared.config.name, "reset timed out: closing");
            Err(CloseReason::ResetFailed)
        }
    }
}
