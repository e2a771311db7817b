//! An open connection: a tokio-postgres `Client` that knows its own state.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_wire::{Gathering, WireState};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::socket::Socket;
use super::tls::stream::CancelTls;
use crate::error::ConnectError;

/// One open connection: a tokio-postgres [`Client`] (it derefs to it) plus the
/// [`WireState`] its tap keeps and the task that drives it.
///
/// Dropping it closes the connection: with no reply owed, the driver ends the session with
/// `Terminate`; with a reply still owed, the socket is closed at once (see `Drop`).
#[derive(Debug)]
pub struct Connection {
    pub(super) client: Client,
    pub(super) state: WireState,
    /// Statement spans, when a subscriber wanted them as the connection opened.
    pub(super) statements: Option<Arc<super::statement_spans::StatementSpans>>,
    pub(super) driver: JoinHandle<()>,
    /// Several callers share the connection now (a lane): its driver yields once per
    /// wake-up so that their statements go out together (see `driver`).
    pub(super) shared: Arc<AtomicBool>,
    /// Its tap gathers reads while several callers share it (see `holdfast_wire::Gathering`).
    pub(super) gathering: Gathering,
    pub(super) opened_at: Instant,
    pub(super) peer: Peer,
    /// How a cancel request reaches the server: over TLS when the session uses it.
    pub(super) cancel_tls: CancelTls,
    pub(super) tls: bool,
    /// The server's role when the connection was made (reported, or asked for a
    /// `target_session_attrs` check); `None` when neither happened.
    pub(super) role: Option<super::Role>,
    /// The server's WAL timeline, once a transaction asked (see [`timeline`](Self::timeline)).
    pub(super) timeline: std::sync::OnceLock<String>,
}

/// Where the server was reached, for cancel requests (which go over a new socket).
#[derive(Debug, Clone)]
pub(super) enum Peer {
    Tcp(SocketAddr),
    Unix(std::path::PathBuf),
}

/// Bound on sending a cancel request.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

impl Connection {
    /// Statements from now on are traced as children of `parent` (the holder's span at
    /// checkout; `Span::none()` while the pool has it). Nothing when statements are not
    /// traced.
    pub(crate) fn trace_under(&self, parent: &tracing::Span) {
        if let Some(spans) = &self.statements {
            spans.set_parent(parent.clone());
        }
    }

    /// Tells the driver whether several callers share the connection now (see `driver`),
    /// and the tap whether to gather their reads meanwhile (`gather`, see
    /// `holdfast_wire::Gathering`).
    pub(crate) fn set_shared(&self, shared: bool, gather: bool) {
        self.shared.store(shared, Ordering::Relaxed);
        self.gathering.set_on(shared && gather);
    }

    /// The connection's gathering of reads (counts what it gathered).
    #[cfg(test)]
    pub(crate) fn gathering(&self) -> &Gathering {
        &self.gathering
    }

    /// Whether the driver was told that several callers share the connection.
    #[cfg(test)]
    pub(crate) fn is_shared(&self) -> bool {
        self.shared.load(Ordering::Relaxed)
    }

    /// The driver's client, for queries.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The driver's client, mutably (tokio-postgres' `transaction()` needs it).
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// What the wire tap has observed; reading it costs a few atomic loads.
    pub fn state(&self) -> &WireState {
        &self.state
    }

    /// True when the server's role has changed since the connection was made: a standby
    /// promoted (it reports `in_hot_standby` off before its next `ReadyForQuery`).
    pub(crate) fn role_changed(&self) -> bool {
        let now = self.state.server_role().in_hot_standby;
        matches!((self.role, now), (Some(then), Some(now)) if then.hot_standby != now)
    }

    /// The WAL timeline of the server (the first 8 hex digits of its WAL file names), once
    /// noted with [`note_timeline`](Self::note_timeline). A promotion starts a new timeline:
    /// holdfast-tx compares it to tell whether a transaction id it asks about can still be
    /// read on the server it reaches, since a promoted standby that never saw an id may give
    /// it to another transaction.
    pub fn timeline(&self) -> Option<&str> {
        self.timeline.get().map(String::as_str)
    }

    /// Notes the server's timeline (the first answer sticks: a server's timeline changes
    /// only at a promotion, before which a connection to it runs no read-write transaction).
    pub fn note_timeline(&self, timeline: &str) {
        let _ = self.timeline.set(timeline.to_string());
    }

    /// The server process serving this connection.
    pub fn backend_pid(&self) -> Option<i32> {
        self.state.backend_pid()
    }

    /// True when the session is encrypted with TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// When the connection finished start-up.
    pub fn opened_at(&self) -> Instant {
        self.opened_at
    }

    /// Time since the connection finished start-up.
    pub fn age(&self) -> Duration {
        self.opened_at.elapsed()
    }

    /// True when the connection can no longer be used: the wire saw it end, or the driver
    /// stopped.
    pub fn is_closed(&self) -> bool {
        self.state.liveness().is_dead() || self.client.is_closed() || self.driver.is_finished()
    }

    /// Asks the server to cancel whatever this connection is running (a cancel request over
    /// a new socket to the same server, as libpq's `PQcancel` does). The running request then
    /// ends with SQLSTATE 57014; if nothing runs, nothing happens.
    pub async fn cancel_query(&self) -> Result<(), ConnectError> {
        let target = match &self.peer {
            Peer::Tcp(addr) => addr.to_string(),
            Peer::Unix(path) => path.display().to_string(),
        };
        let send = async {
            let socket = match &self.peer {
                Peer::Tcp(addr) => Socket::Tcp(tokio::net::TcpStream::connect(addr).await?),
                Peer::Unix(path) => Socket::Unix(tokio::net::UnixStream::connect(path).await?),
            };
            Ok::<_, std::io::Error>(socket)
        };
        let socket = match tokio::time::timeout(CANCEL_TIMEOUT, send).await {
            Ok(Ok(socket)) => socket,
            Ok(Err(source)) => {
                return Err(ConnectError::Io {
                    target,
                    error: source,
                })
            }
            Err(_) => {
                return Err(ConnectError::Timeout {
                    target,
                    timeout: CANCEL_TIMEOUT,
                })
            }
        };
        let token = self.client.cancel_token();
        let cancel = token.cancel_query_raw(socket, self.cancel_tls.clone());
        match tokio::time::timeout(CANCEL_TIMEOUT, cancel).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(ConnectError::Postgres {
                target,
                error: source,
            }),
            Err(_) => Err(ConnectError::Timeout {
                target,
                timeout: CANCEL_TIMEOUT,
            }),
        }
    }

    /// A handle that ends the driver (closing the socket) from elsewhere.
    pub(crate) fn driver_handle(&self) -> tokio::task::AbortHandle {
        self.driver.abort_handle()
    }

    /// Closes the socket at once, without a `Terminate` (for connections that may be stuck).
    pub fn abort(self) {
        self.driver.abort();
    }
}

impl Drop for Connection {
    /// tokio-postgres keeps the socket open after its `Client` is dropped until every reply
    /// owed has arrived, and nobody reads them any more. If the server or the network hung,
    /// that is forever: the socket, the driver task and the server session (perhaps idle in a
    /// transaction, holding locks) would all leak. So a connection dropped while owed a reply
    /// is closed at once; the server rolls back what it had open.
    fn drop(&mut self) {
        if self.state.in_flight() > 0 {
            self.driver.abort();
        }
    }
}

impl Deref for Connection {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}
