//! Finding out whether a COMMIT whose reply was lost committed: ask the server about the
//! transaction id on another connection, instead of guessing.

use std::time::Duration;

use holdfast_pool::Pool;

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
/// the answer is then final. Bounded by `budget`.
pub(crate) async fn resolve(pool: &Pool, xid: u64, old_backend: Option<i32>, budget: Duration) -> Resolution {
    match tokio::time::timeout(budget, ask(pool, xid, old_backend)).await {
        Ok(resolution) => resolution,
        Err(_) => Resolution::Unknown(format!("no answer within {budget:?}")),
    }
}

async fn ask(pool: &Pool, xid: u64, old_backend: Option<i32>) -> Resolution {
    let mut terminated = false;
    loop {
        let conn = match pool.get().await {
            Ok(conn) => conn,
            Err(e) => return Resolution::Unknown(format!("cannot reach the server: {e}")),
        };
        let status = conn
            .query_one("SELECT pg_xact_status($1::text::xid8)", &[&xid.to_string()])
            .await;
        let status: Option<String> = match status {
            Ok(row) => row.get(0),
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
