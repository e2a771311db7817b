//! Sessions the pool gives up on. When the pool closes a connection whose server session may
//! live on (a reset that timed out or could not drain what a dropped future left in flight, a
//! request unanswered past `unanswered_timeout`, a lost request the probe found), closing the
//! socket is not enough: across a hung network or a proxy that swallows traffic, the server
//! never sees the close, and the session keeps its transaction and locks until its own
//! keepalives give up, minutes later. So the pool terminates that backend from a connection of
//! its own.
//!
//! Backend pids are ours only on a direct connection. Behind a pooler (transaction or session
//! mode) the pid a connection was given is the pooler's invention, and terminating it could end
//! some other client's session: the pool checks, on its own connection, that the pid the server
//! reports is the pid it was given, and otherwise leaves backends alone (and stops probing).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::connect::{connect, Connection};

/// Tries to terminate an abandoned backend: this many times, waiting twice as long each time
/// from `FIRST_PAUSE` (the network that lost the session may be the one the pool needs).
const ATTEMPTS: u32 = 5;
const FIRST_PAUSE: Duration = Duration::from_millis(500);

/// Terminates backend `pid` (its connection was just closed, for reason `why`) in a task of
/// its own. Nothing is done behind a transaction pooler or where pids are not the server's.
pub(crate) fn terminate(shared: &Arc<Shared>, pid: i32, why: &'static str) {
    if !shared.backends_are_ours() {
        return;
    }
    let shared = Arc::clone(shared);
    let runtime = shared.runtime.clone();
    runtime.spawn(async move {
        let mut pause = FIRST_PAUSE;
        for attempt in 1..=ATTEMPTS {
            match try_terminate(&shared, pid).await {
                Ok(terminated) => {
                    shared.metrics.terminated(terminated);
                    tracing::debug!(pool = %shared.config.name, backend_pid = pid, terminated, why, "abandoned backend ended");
                    return;
                }
                Err(error) if attempt == ATTEMPTS => {
                    tracing::warn!(pool = %shared.config.name, backend_pid = pid, why, %error, "could not terminate an abandoned backend; the server ends it when its keepalives give up");
                }
                Err(error) => {
                    tracing::debug!(pool = %shared.config.name, backend_pid = pid, attempt, %error, "terminating an abandoned backend failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
    });
}

/// One attempt: true when the backend was still there and has been told to end.
async fn try_terminate(shared: &Shared, pid: i32) -> Result<bool, String> {
    let bound = shared.config.connect.get_connect_timeout() + shared.config.ping_timeout;
    let attempt = async {
        let own = open_own(shared).await?;
        let row = own
            .client()
            .query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .map_err(|e| crate::error::pg_error_text(&e))?;
        Ok::<bool, String>(row.get(0))
    };
    tokio::time::timeout(bound, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {bound:?}")))
}

/// A connection of the pool's own (named after the pool's with " (probe)") for asking about
/// and ending its backends. Fails when the server's pid for it is not the one it was given (a
/// pooler in between): the pool then stops asking.
pub(crate) async fn open_own(shared: &Shared) -> Result<Connection, String> {
    let name = format!("{} (probe)", shared.config.connect.get_application_name());
    let config = shared.config.connect.clone().application_name(&name);
    let own = connect(&config).await.map_err(|e| e.to_string())?;
    let row = own
        .client()
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(|e| crate::error::pg_error_text(&e))?;
    let server_pid: i32 = row.get(0);
    if own.backend_pid() != Some(server_pid) {
        if !shared.foreign_pids.swap(true, Ordering::AcqRel) {
            tracing::info!(pool = %shared.config.name, "backend pids are not the server's (a pooler in between): the pool will not probe or terminate backends");
        }
        return Err("backend pids are not the server's".into());
    }
    Ok(own)
}

impl Shared {
    /// Whether the pids connections were given are the server's own: not behind a
    /// transaction pooler, and no probe found them to be someone else's.
    pub(crate) fn backends_are_ours(&self) -> bool {
        !self.config.connect.get_pooler().is_transaction() && !self.foreign_pids.load(Ordering::Acquire)
    }
}
