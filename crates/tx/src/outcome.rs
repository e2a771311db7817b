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
///
/// The answer is read only on the server the transaction ran on, or one that continues its
/// history on the same WAL timeline (the same server restarted): a standby promoted since
/// (a new timeline) may never have seen the transaction id and may have given it to another
/// transaction, so its answer would be a guess, and the outcome is reported unknown.
pub(crate) async fn resolve(
    pool: &Pool,
    xid: u64,
    timeline: Option<&str>,
    old_backend: Option<i32>,
    budget: Duration,
) -> Resolution {
    let mut unreachable = None;
    match tokio::time::timeout(budget, ask(pool, xid, timeline, old_backend, &mut unreachable)).await {
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
    timeline: Option<&str>,
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
            .query_one(
                "SELECT pg_xact_status($1::text::xid8), substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
                &[&xid.to_string()],
            )
            .await;
        let status: Option<String> = match status {
            Ok(row) => {
                let now: Option<String> = row.get(1);
                if let (Some(then), Some(now)) = (timeline, now.as_deref()) {
                    if then != now {
                        return Resolution::Unknown(format!(
                            "the server was promoted since the transaction ran (timeline {then}, now {now}): \
                             a transaction id it never saw may belong to another transaction there"
                        ));
                    }
                }
                row.get(0)
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_pool::{ConnectConfig, PoolConfig};
    use holdfast_tempdb::{ClusterOptions, Replication, TempCluster};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_id_asked_on_a_promoted_standby_is_unknown_not_a_guess() {
        let primary = TempCluster::start(ClusterOptions::default()).expect("primary");
        let standby = primary.start_standby(Replication::Asynchronous).expect("standby");
        let before = primary
            .psql(
                "postgres",
                "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
            )
            .expect("timeline");
        primary.kill().expect("kill");
        standby.promote().expect("promote");
        // A transaction on the promoted server: its id is one the old primary may also have
        // handed out before it died.
        let xid: u64 = standby
            .psql(
                "postgres",
                "CREATE TABLE t (x int); BEGIN; INSERT INTO t VALUES (1); SELECT pg_current_xact_id(); COMMIT",
            )
            .expect("write")
            .lines()
            .find_map(|l| l.trim().parse().ok())
            .expect("xid");
        let pool = Pool::new(PoolConfig::new(
            ConnectConfig::from_url(&standby.url()).expect("url"),
        ))
        .expect("pool");
        let now = standby
            .psql(
                "postgres",
                "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
            )
            .expect("timeline");
        assert_ne!(before, now, "a promotion starts a timeline");
        // Asked as the old primary's transaction: the promoted server's answer is not ours.
        match resolve(&pool, xid, Some(&before), None, Duration::from_secs(10)).await {
            Resolution::Unknown(reason) => assert!(reason.contains("promoted"), "{reason}"),
            other => panic!("a guess: {other:?}"),
        }
        // Asked as its own: committed.
        assert_eq!(
            resolve(&pool, xid, Some(&now), None, Duration::from_secs(10)).await,
            Resolution::Committed
        );
    }
}
