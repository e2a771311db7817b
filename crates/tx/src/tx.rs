//! An open transaction on a pooled connection: the guard API (`begin`, `commit`,
//! `rollback`, savepoints), and the COMMIT logic the closure API shares.

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use holdfast_pool::PooledConnection;
use holdfast_wire::{CommitState, TxStatus, WireState};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::error::TxError;
use crate::options::TxOptions;
use crate::outcome::{resolve, Resolution};

/// How long the outcome of a COMMIT with a lost reply may take to find out.
const RESOLVE_BUDGET: Duration = Duration::from_secs(5);

/// A transaction in progress. Derefs to `tokio_postgres::Client` for queries.
///
/// Dropped without [`commit`](Tx::commit) or [`rollback`](Tx::rollback), it is rolled back
/// by the pool's return path before the connection is used again.
///
/// `'env` is how long what the transaction's work borrows must live: in
/// [`transaction`](crate::TransactionExt::transaction) it is the call's, so the closure may
/// borrow the caller's locals; a transaction begun by hand ([`Tx::begin`], [`BeginExt`])
/// borrows nothing and can be any `Tx<'env>`. Functions taking one write `&Tx<'_>` (or
/// `&Tx`).
#[derive(Debug)]
pub struct Tx<'env> {
    conn: PooledConnection,
    xid: Option<u64>,
    /// The server's WAL timeline when the transaction ran (see `Connection::timeline`).
    timeline: Option<String>,
    /// The server process running the transaction, as the server itself reported it.
    backend_pid: Option<i32>,
    read_only: bool,
    savepoints: AtomicU32,
    env: PhantomData<&'env ()>,
}

/// Why a COMMIT did not succeed.
#[derive(Debug)]
pub(crate) enum CommitFailure {
    /// Answered with tag ROLLBACK: the transaction had failed. Nothing committed.
    RolledBack,
    /// The server answered with an error, or the connection was lost before COMMIT was
    /// written, or the server says the transaction aborted: nothing committed.
    NotCommitted(tokio_postgres::Error),
    /// The server said the transaction aborted after the reply was lost.
    Aborted,
    /// Nobody can say.
    Unknown { xid: Option<u64>, reason: String },
}

impl<'env> Tx<'env> {
    /// Begins a transaction on `conn`. For read-write transactions the transaction id and
    /// the server process are read in the same round trip as BEGIN, so that a lost COMMIT
    /// reply can be resolved. Behind a transaction-mode pooler the pool's server settings
    /// (statement timeout and the like) are set with `SET LOCAL` in that round trip too.
    pub async fn begin(conn: PooledConnection, options: &TxOptions) -> Result<Tx<'env>, TxError> {
        let mut begin = options.begin_sql();
        let pool = conn.pool();
        let connect = &pool.config().connect;
        if let Some(settings) = connect.local_settings_sql() {
            begin.push_str("; ");
            begin.push_str(&settings);
        }
        // The server process, for terminating it if a lost COMMIT is still in progress there.
        // Direct, it is the pid of the start-up handshake; behind a pooler that one is the
        // pooler's (terminating it would hit an unrelated session), so ask the server.
        let behind_pooler = connect.get_pooler().is_transaction();
        let (xid, backend_pid, timeline) = if options.read_only || !options.resolve_lost_commits {
            conn.batch_execute(&begin).await.map_err(TxError::Database)?;
            (None, None, None)
        } else {
            // The simple query protocol answers in text: no cast is needed (casting to text
            // cost the server about 4% of a one-INSERT transaction, measured with pgbench).
            // The timeline is read once per connection (behind a pooler, every time: each
            // transaction may run on another server connection).
            let known = conn
                .connection()
                .timeline()
                .map(str::to_string)
                .filter(|_| !behind_pooler);
            let mut select = String::from("SELECT pg_current_xact_id()");
            if behind_pooler {
                select.push_str(", pg_backend_pid()");
            }
            if known.is_none() {
                select.push_str(", substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)");
            }
            let messages = conn
                .simple_query(&format!("{begin}; {select}"))
                .await
                .map_err(TxError::Database)?;
            let row = messages.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            });
            let xid = row.and_then(|r| r.get(0)).and_then(|v| v.parse().ok());
            let pid = if behind_pooler {
                row.and_then(|r| r.get(1)).and_then(|v| v.parse().ok())
            } else {
                conn.backend_pid()
            };
            let timeline = known.or_else(|| {
                let read = row.and_then(|r| r.get(if behind_pooler { 2 } else { 1 }))?;
                if !behind_pooler {
                    conn.connection().note_timeline(read);
                }
                Some(read.to_string())
            });
            (xid, pid, timeline)
        };
        Ok(Tx {
            conn,
            xid,
            timeline,
            backend_pid,
            read_only: options.read_only,
            savepoints: AtomicU32::new(0),
            env: PhantomData,
        })
    }

    /// The transaction id, for read-write transactions.
    pub fn xid(&self) -> Option<u64> {
        self.xid
    }

    /// The server process running this transaction, for read-write transactions: the
    /// connection's own, or behind a transaction pooler `pg_backend_pid()` read with BEGIN
    /// (the start-up pid there belongs to the pooler).
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_pid
    }

    /// The pooled connection underneath.
    pub fn connection(&self) -> &PooledConnection {
        &self.conn
    }

    /// What the wire tap sees on the connection.
    pub fn state(&self) -> &WireState {
        self.conn.state()
    }

    /// Commits. A COMMIT answered with ROLLBACK is an error; a COMMIT whose reply was lost
    /// is resolved from the server before anything is reported.
    pub async fn commit(self) -> Result<(), TxError> {
        self.finish().await.map_err(|f| f.into_error())
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<(), TxError> {
        self.conn
            .batch_execute("ROLLBACK")
            .await
            .map_err(TxError::Database)
    }

    /// Runs `f` inside a savepoint: released when it returns `Ok`, rolled back to when it
    /// returns `Err` (the transaction goes on either way).
    pub async fn savepoint<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: for<'s> FnOnce(&'s Tx<'env>) -> BoxFuture<'s, Result<T, E>>,
        E: From<tokio_postgres::Error>,
    {
        let name = format!(
            "holdfast_sp_{}",
            self.savepoints.fetch_add(1, Ordering::Relaxed) + 1
        );
        self.conn.batch_execute(&format!("SAVEPOINT {name}")).await?;
        match f(self).await {
            Ok(value) => {
                self.conn
                    .batch_execute(&format!("RELEASE SAVEPOINT {name}"))
                    .await?;
                Ok(value)
            }
            Err(e) => {
                self.conn
                    .batch_execute(&format!("ROLLBACK TO SAVEPOINT {name}"))
                    .await?;
                Err(e)
            }
        }
    }

    /// Rolls back if the connection can still take it; otherwise leaves it to the pool.
    pub(crate) async fn abandon(self) {
        let state = self.conn.state();
        if !state.liveness().is_dead()
            && matches!(state.tx_status(), TxStatus::InTransaction | TxStatus::Failed)
        {
            let _ = tokio::time::timeout(RESOLVE_BUDGET, self.conn.batch_execute("ROLLBACK")).await;
        }
    }

    /// COMMIT, with the outcome checked on the wire and resolved from the server when its
    /// reply was lost.
    pub(crate) async fn finish(self) -> Result<(), CommitFailure> {
        let state = self.conn.state().clone();
        let written_before = state.commits_written();
        match self.conn.batch_execute("COMMIT").await {
            Ok(()) => match state.commit() {
                CommitState::RolledBack => Err(CommitFailure::RolledBack),
                _ => Ok(()),
            },
            Err(e) if e.code().is_some() => Err(CommitFailure::NotCommitted(e)),
            Err(e) => {
                if state.commits_written() == written_before {
                    // It never left: nothing was committed.
                    return Err(CommitFailure::NotCommitted(e));
                }
                match state.commit() {
                    CommitState::Committed => Ok(()),
                    CommitState::RolledBack => Err(CommitFailure::RolledBack),
                    CommitState::Failed => Err(CommitFailure::NotCommitted(e)),
                    CommitState::InFlight | CommitState::None => self.resolve_lost_reply().await,
                }
            }
        }
    }

    async fn resolve_lost_reply(self) -> Result<(), CommitFailure> {
        if self.read_only {
            // Nothing to commit: the work was all reads, and it completed.
            return Ok(());
        }
        let Some(xid) = self.xid else {
            return Err(CommitFailure::Unknown {
                xid: None,
                reason: "the transaction id was not read (commit resolution is off)".into(),
            });
        };
        let pool = self.conn.pool();
        let backend = self.backend_pid;
        let timeline = self.timeline.clone();
        // The lost connection goes back to the pool (which closes it) before we ask.
        drop(self);
        tracing::warn!(
            xid,
            "connection lost after COMMIT was sent: asking the server whether it committed"
        );
        let resolution = resolve(&pool, xid, timeline.as_deref(), backend, RESOLVE_BUDGET).await;
        let outcome = match &resolution {
            Resolution::Committed => "committed",
            Resolution::Aborted => "aborted",
            Resolution::Unknown(_) => "unknown",
        };
        metrics::counter!("holdfast_tx_commit_outcomes_resolved_total", "outcome" => outcome).increment(1);
        // On the transaction's span, when there is one (see `run`).
        tracing::Span::current().record("holdfast.tx.lost_reply", outcome);
        match resolution {
            Resolution::Committed => {
                tracing::info!(xid, "the COMMIT whose reply was lost did commit");
                Ok(())
            }
            Resolution::Aborted => Err(CommitFailure::Aborted),
            Resolution::Unknown(reason) => Err(CommitFailure::Unknown {
                xid: Some(xid),
                reason,
            }),
        }
    }
}

impl CommitFailure {
    pub(crate) fn into_error<E>(self) -> TxError<E> {
        match self {
            CommitFailure::RolledBack => TxError::CommitRolledBack,
            CommitFailure::NotCommitted(e) => TxError::Commit(e),
            CommitFailure::Aborted => TxError::CommitAborted,
            CommitFailure::Unknown { xid, reason } => TxError::CommitOutcomeUnknown { xid, reason },
        }
    }
}

impl Deref for Tx<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.conn
    }
}

/// `conn.begin(options)` on a pooled connection.
pub trait BeginExt {
    /// Begins a transaction that takes over the connection.
    fn begin(self, options: &TxOptions) -> BoxFuture<'static, Result<Tx<'static>, TxError>>;
}

impl BeginExt for PooledConnection {
    fn begin(self, options: &TxOptions) -> BoxFuture<'static, Result<Tx<'static>, TxError>> {
        let options = *options;
        Box::pin(async move { Tx::begin(self, &options).await })
    }
}
