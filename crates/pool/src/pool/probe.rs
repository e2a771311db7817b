//! Asking the server about a request that gets no answer. After `probe_after` of silence on
//! a connection with requests in flight, the pool opens a connection of its own and reads
//! that backend's row in `pg_stat_activity`:
//! - running (`active`): the statement is taking its time; `statement_timeout` bounds it.
//!   Keep waiting (and ask again after another `probe_after`).
//! - idle, or idle in a transaction, for longer than an answer could take to arrive (half
//!   of `probe_after`): the request never arrived or its answer was lost (a hung network, a proxy that
//!   swallowed it). The connection is closed at once, and the backend terminated so that no
//!   session, transaction or lock outlives its client.
//! - gone: the connection is closed.
//!
//! A probe that cannot connect or get an answer decides nothing: the next maintenance pass
//! asks again, and `unanswered_timeout` stays the last bound.

use std::sync::Arc;
use std::time::Duration;

use super::unanswered::Quiet;
use super::Shared;
use crate::connect::Connection;

/// What the server said about the backend.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Running the statement, or idle too recently to tell an answer in transit from a lost
    /// one: keep waiting.
    Wait,
    /// Idle (or idle in a transaction) for longer than an answer takes to arrive: the
    /// request or its answer is lost.
    Lost,
    /// No such backend.
    Gone,
}

/// Asks about `quiet` on a connection of its own; closes it when its request is lost, then
/// terminates its backend (closed first, so that its callers see the connection closed by
/// the pool rather than the server's termination notice).
pub(crate) async fn run(shared: Arc<Shared>, quiet: Quiet, after: Duration) {
    let bound = shared.config.ping_timeout.max(after);
    let asked = tokio::time::timeout(bound, async {
        let probe = super::abandon::open_own(&shared).await?;
        let verdict = ask(&probe, &quiet, after / 2).await?;
        // An answer may have come meanwhile: then the request was not lost after all.
        if verdict == Verdict::Wait || quiet.state.bytes_received() != quiet.received {
            return Ok(Verdict::Wait);
        }
        shared.metrics.unanswered.increment(1);
        tracing::warn!(
            pool = %shared.config.name,
            conn = quiet.id,
            backend_pid = quiet.backend_pid,
            silent_for = ?quiet.silent_for,
            backend = if verdict == Verdict::Gone { "gone" } else { "idle: terminated" },
            "closed a connection whose request the server never answered: it was lost on the way"
        );
        quiet.driver.abort();
        if verdict == Verdict::Lost {
            // Its session (and any transaction and locks) must not outlive the connection.
            probe
                .client()
                .execute("SELECT pg_terminate_backend($1)", &[&quiet.backend_pid])
                .await
                .map_err(|e| crate::error::pg_error_text(&e))?;
        }
        Ok::<_, String>(verdict)
    })
    .await;
    match asked {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::debug!(pool = %shared.config.name, conn = quiet.id, %error, "probe failed; asking again later");
        }
        Err(_) => {
            tracing::debug!(pool = %shared.config.name, conn = quiet.id, "probe got no answer; asking again later");
        }
    }
    shared.watch.probed(quiet.id);
}

async fn ask(probe: &Connection, quiet: &Quiet, margin: Duration) -> Result<Verdict, String> {
    // Idle for longer than `margin`: an answer it sent would have arrived by now (or it
    // never got the request), so none is on its way.
    let row = probe
        .client()
        .query_opt(
            "SELECT state = 'active', now() - state_change > make_interval(secs => $2)
             FROM pg_stat_activity WHERE pid = $1",
            &[&quiet.backend_pid, &margin.as_secs_f64()],
        )
        .await
        .map_err(|e| crate::error::pg_error_text(&e))?;
    Ok(match row {
        None => Verdict::Gone,
        Some(row) => {
            let active: Option<bool> = row.get(0);
            let idle_long: Option<bool> = row.get(1);
            if active == Some(false) && idle_long == Some(true) {
                Verdict::Lost
            } else {
                Verdict::Wait
            }
        }
    })
}
