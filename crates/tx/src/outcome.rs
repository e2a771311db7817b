//! Finding out whether a COMMIT whose reply was lost committed: ask the server about the
//! transaction id on another connection, instead of guessing.

use std::time::Duration;

use holdfast_pool::{Pool, PoolError};

use crate::classify::{classify, ErrorClass};

/// What the server says about a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// Durable: report success, do not run again.
    Committed,
    /// Rolled back: safe to run again.
    Aborted,
    /// The server could not say.
    Unknown(String),
}

/// Asks `pg_xact_status(xid)` on a new connection. While the old backend still works on it
/// ("in progress", it has not noticed its client is gone), it is terminated by its pid and
/// the question asked again; interrupts are held off while a commit is being recorded, so
/// the answer is then final. A server that cannot be reached (restarting, or a pooler in
/// front of it restarting) is asked again until it answers. Bounded by `budget`.
pub(crate) async fn resolve(pool: &Pool, xid: u64, old_backend: Option<i32>, budget: Duration) -> Resolution {
    let mut unreachable = None;
    match tokio::time::timeout(budget, ask(pool, xid, old_backend, &mut unreachable)).await {
        Ok(resolution) => resolution,
        Err(_) => Resolution::Unknown(match unreachable {
            Some(e) => format!("cannot reach the server within {budget:?}: {e}"),
            None => format!("no answer within {budget:?}"),
        }),
    }
}

async fn ask(
    pool: &Pool,
    xid: u64,
    old_backend: Option<i32>,
    unreachable: &mut Option<String>,
) -> Resolution {
    let mut terminated = false;
    let mut pause = Duration::from_millis(10);
    loop {
        let conn = match pool.get().await {
            Ok(conn) => conn,
            // The connection was just lost: the server (or a pooler in front of it) may be
            // restarting. Keep asking within the budget, which `resolve` enforces; the
            // error is the answer only when the budget runs out.
            Err(e @ (PoolError::Unavailable { .. } | PoolError::Timeout { .. })) => {
                tracing::debug!(xid, error = %e, "cannot reach the server yet to ask about the COMMIT");
                *unreachable = Some(e.to_string());
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
                continue;
            }
            Err(e) => return Resolution::Unknown(format!("cannot reach the server: {e}")),
        };
        let status = conn
            .query_one("SELECT pg_xact_status($1::text::xid8)", &[&xid.to_string()])
            .await;
        let status: Option<String> = match status {
            Ok(row) => row.get(0),
            // Lost again on the way (a restart still going on): ask on another connection.
            Err(e) if classify(&e) == ErrorClass::Disconnected => {
                *unreachable = Some(e.to_string());
                drop(conn);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
                continue;
            }
            Err(e) => return Resolution::Unknown(format!("pg_xact_status failed: {e}")),
        };
        match status.as_deref() {
            Some("committed") => return Resolution::Committed,
            Some("aborted") => return Resolution::Aborted,
            Some("in progress") => {
                if let (Some(pid), false) = (old_backend, terminated) {
                    terminated = true;
                    tracing::info!(
                        xid,
                        backend_pid = pid,
                        "commit still in progress on the lost connection: terminating its backend"
                    );
                    if let Err(e) = conn.execute("SELECT pg_terminate_backend($1)", &[&pid]).await {
                        return Resolution::Unknown(format!("could not terminate backend {pid}: {e}"));
                    }
                }
                // Bounded by `resolve`'s timeout; the terminated backend ends within moments.
                drop(conn);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Some(other) => return Resolution::Unknown(format!("pg_xact_status said {other:?}")),
            None => return Resolution::Unknown("the server no longer knows the transaction id".into()),
        }
    }
}
