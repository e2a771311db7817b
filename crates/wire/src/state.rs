//! The observed state of one connection, shared between the tap (one writer) and any number
//! of readers, with atomics only: reading it never blocks the connection and never asks the
//! server anything.

use std::fmt;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::{instant_of, since};

use crate::tag_cell::TagCell;

/// Transaction status from the server's last `ReadyForQuery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxStatus {
    /// No `ReadyForQuery` yet: the connection is still starting up.
    Unknown,
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block; queries are rejected until it ends.
    Failed,
}

impl TxStatus {
    fn from_byte(b: u8) -> TxStatus {
        match b {
            b'I' => TxStatus::Idle,
            b'T' => TxStatus::InTransaction,
            b'E' => TxStatus::Failed,
            _ => TxStatus::Unknown,
        }
    }
}

/// Whether the connection can still carry traffic, as far as the wire shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// Start-up and authentication are under way.
    Starting,
    /// Start-up finished; the stream is open.
    Open,
    /// The client sent `Terminate`.
    Terminated,
    /// The server closed the stream: end of file, or a FATAL error, after which the server
    /// always closes.
    Closed,
    /// A read or write failed with an I/O error.
    IoError,
    /// The bytes stopped making sense as PostgreSQL messages.
    Malformed,
    /// The stream was dropped by its owner (the driver task ended or was aborted).
    Dropped,
}

impl Liveness {
    fn from_byte(b: u8) -> Liveness {
        match b {
            0 => Liveness::Starting,
            1 => Liveness::Open,
            2 => Liveness::Terminated,
            3 => Liveness::Closed,
            4 => Liveness::IoError,
            5 => Liveness::Malformed,
            _ => Liveness::Dropped,
        }
    }

    pub(crate) fn byte(self) -> u8 {
        match self {
            Liveness::Starting => 0,
            Liveness::Open => 1,
            Liveness::Terminated => 2,
            Liveness::Closed => 3,
            Liveness::IoError => 4,
            Liveness::Malformed => 5,
            Liveness::Dropped => 6,
        }
    }

    /// True once nothing more can be sent or received.
    pub fn is_dead(self) -> bool {
        !matches!(self, Liveness::Starting | Liveness::Open)
    }
}

/// What the wire showed of the most recent `COMMIT` (simple `COMMIT`/`END` query, or the
/// execution of a prepared one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommitState {
    /// No COMMIT was written on this connection yet.
    None,
    /// A COMMIT was written and its reply has not arrived. If the connection is dead now,
    /// the outcome is unknown and must be resolved from the server.
    InFlight,
    /// The server answered with tag `COMMIT`: the transaction is durable.
    Committed,
    /// The server answered with tag `ROLLBACK`: the transaction had failed and was rolled
    /// back. Not a success.
    RolledBack,
    /// The server answered with an error: nothing was committed.
    Failed,
}

impl CommitState {
    fn from_byte(b: u8) -> CommitState {
        match b {
            1 => CommitState::InFlight,
            2 => CommitState::Committed,
            3 => CommitState::RolledBack,
            4 => CommitState::Failed,
            _ => CommitState::None,
        }
    }

    pub(crate) fn byte(self) -> u8 {
        match self {
            CommitState::None => 0,
            CommitState::InFlight => 1,
            CommitState::Committed => 2,
            CommitState::RolledBack => 3,
            CommitState::Failed => 4,
        }
    }
}

/// What a server reports of its role in `ParameterStatus` messages (PostgreSQL 14 and later
/// report both at start-up and on change; `None`: not reported, as by older servers or a
/// pooler that passes on only some parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerRole {
    /// `in_hot_standby`: the server is a standby in recovery (read-only).
    pub in_hot_standby: Option<bool>,
    /// `default_transaction_read_only`: transactions are read-only unless they say otherwise.
    pub default_read_only: Option<bool>,
}

impl ServerRole {
    const HOT_STANDBY_KNOWN: u8 = 1;
    const HOT_STANDBY: u8 = 2;
    const READ_ONLY_KNOWN: u8 = 4;
    const READ_ONLY: u8 = 8;

    pub(crate) fn from_bits(bits: u8) -> ServerRole {
        let flag = |known: u8, on: u8| (bits & known != 0).then_some(bits & on != 0);
        ServerRole {
            in_hot_standby: flag(Self::HOT_STANDBY_KNOWN, Self::HOT_STANDBY),
            default_read_only: flag(Self::READ_ONLY_KNOWN, Self::READ_ONLY),
        }
    }

    /// The bits of `bits` updated with parameter `name` reported as `value`; `None` for a
    /// parameter that says nothing of the role.
    pub(crate) fn update(bits: u8, name: &[u8], value: &[u8]) -> Option<u8> {
        let (known, on) = match name {
            b"in_hot_standby" => (Self::HOT_STANDBY_KNOWN, Self::HOT_STANDBY),
            b"default_transaction_read_only" => (Self::READ_ONLY_KNOWN, Self::READ_ONLY),
            _ => return None,
        };
        let value = matches!(value, b"on" | b"true" | b"1");
        Some((bits & !on) | known | if value { on } else { 0 })
    }
}

/// The atomics behind a [`WireState`], laid out so that a round trip touches two cache
/// lines: the first holds everything a request and its answer update, the second the last
/// command tag; the rest is cold.
#[derive(Default)]
#[repr(C, align(64))]
pub(crate) struct Cells {
    // Line 1: updated on every request and every answer.
    pub(crate) tx_status: AtomicU8,
    pub(crate) liveness: AtomicU8,
    pub(crate) commit: AtomicU8,
    pub(crate) in_flight: AtomicU32,
    /// Tasks waiting in [`WireState::wait_for`]; the tap only wakes anyone when this is
    /// non-zero, so the data path takes no lock while nobody waits.
    pub(crate) watchers: AtomicU32,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) last_received: AtomicU64,
    pub(crate) ready_for_query: AtomicU64,
    // Line 2: every CommandComplete.
    pub(crate) last_tag: TagCell,
    pub(crate) command_completes: AtomicU64,
    pub(crate) commits_written: AtomicU64,
    // Cold.
    pub(crate) errors: AtomicU64,
    pub(crate) named_outside_transactions: AtomicU64,
    pub(crate) last_sqlstate: AtomicU64,
    pub(crate) dead_since: AtomicU64,
    pub(crate) backend_pid: AtomicU32,
    /// What the server reported of its role (see [`ServerRole`]), as `ServerRole::bits`.
    pub(crate) role: AtomicU8,
    pub(crate) changed: tokio::sync::Notify,
}

impl Cells {
    /// Called by the tap after it updated the state: wakes waiters, if there are any.
    pub(crate) fn wake_watchers(&self) {
        // Pairs with the fence in `wait_for`: either the waiter sees our stores, or we see
        // its registration.
        fence(Ordering::SeqCst);
        if self.watchers.load(Ordering::Relaxed) > 0 {
            self.changed.notify_waiters();
        }
    }
}

/// Adds `n` to a counter that only the tap writes: a plain load and store, no locked
/// read-modify-write on the data path.
pub(crate) fn bump(cell: &AtomicU64, n: u64) {
    cell.store(cell.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// A cheap, cloneable handle on what the tap has observed on one connection.
///
/// Every accessor is a few atomic loads; none of them touches the network.
#[derive(Clone, Default)]
pub struct WireState {
    pub(crate) cells: Arc<Cells>,
}

impl WireState {
    /// A fresh state: starting, status unknown, nothing in flight.
    pub fn new() -> WireState {
        WireState::default()
    }

    /// Transaction status from the last `ReadyForQuery`.
    pub fn tx_status(&self) -> TxStatus {
        TxStatus::from_byte(self.cells.tx_status.load(Ordering::Acquire))
    }

    /// Requests written (`Query`, `Sync`, `FunctionCall`) that have not had their
    /// `ReadyForQuery` yet. Zero during start-up.
    pub fn in_flight(&self) -> u32 {
        self.cells.in_flight.load(Ordering::Acquire)
    }

    /// Whether the stream is starting, open or dead (and why).
    pub fn liveness(&self) -> Liveness {
        Liveness::from_byte(self.cells.liveness.load(Ordering::Acquire))
    }

    /// True when the connection is open, idle outside a transaction and nothing is in
    /// flight: the state a pool may hand out.
    pub fn is_clean(&self) -> bool {
        self.liveness() == Liveness::Open && self.in_flight() == 0 && self.tx_status() == TxStatus::Idle
    }

    /// What the wire showed of the most recent COMMIT.
    pub fn commit(&self) -> CommitState {
        CommitState::from_byte(self.cells.commit.load(Ordering::Acquire))
    }

    /// True when a COMMIT was written, its reply never came, and the stream is dead: the
    /// transaction may or may not have committed.
    pub fn commit_outcome_unknown(&self) -> bool {
        self.commit() == CommitState::InFlight && self.liveness().is_dead()
    }

    /// How many COMMITs were written on this connection.
    pub fn commits_written(&self) -> u64 {
        self.cells.commits_written.load(Ordering::Acquire)
    }

    /// The tag of the last `CommandComplete` (at most 32 bytes), for example `INSERT 0 1`.
    pub fn last_command_tag(&self) -> String {
        self.cells.last_tag.read()
    }

    /// `ErrorResponse` messages received so far.
    pub fn errors(&self) -> u64 {
        self.cells.errors.load(Ordering::Acquire)
    }

    /// Named statements prepared (`Parse` with a name) while the connection was idle
    /// outside a transaction with nothing in flight. Behind a transaction-mode pooler such a
    /// statement may be executed on another server connection, where it does not exist.
    pub fn named_statements_outside_transactions(&self) -> u64 {
        self.cells.named_outside_transactions.load(Ordering::Acquire)
    }

    /// SQLSTATE of the last `ErrorResponse`, if any.
    pub fn last_sqlstate(&self) -> Option<String> {
        let packed = self.cells.last_sqlstate.load(Ordering::Acquire);
        (packed != 0).then(|| unpack_sqlstate(packed))
    }

    /// The server process serving this connection (from `BackendKeyData`), once known.
    pub fn backend_pid(&self) -> Option<i32> {
        let pid = self.cells.backend_pid.load(Ordering::Acquire);
        (pid != 0).then_some(pid as i32)
    }

    /// What the server has reported of its role (`in_hot_standby`,
    /// `default_transaction_read_only`), at start-up and whenever it changed since (a
    /// standby promoted tells its sessions with their next `ReadyForQuery`).
    pub fn server_role(&self) -> ServerRole {
        ServerRole::from_bits(self.cells.role.load(Ordering::Acquire))
    }

    /// Waits until `condition` holds, re-checking it each time the tap reads from the server
    /// or sees the stream die (writes do not wake waiters). Never polls the server; wrap it
    /// in a timeout to bound it.
    pub async fn wait_for(&self, mut condition: impl FnMut(&WireState) -> bool) {
        let cells = &self.cells;
        cells.watchers.fetch_add(1, Ordering::SeqCst);
        let _registered = WatcherGuard(&cells.watchers);
        loop {
            let notified = cells.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            fence(Ordering::SeqCst);
            if condition(self) {
                return;
            }
            notified.await;
        }
    }

    /// A point-in-time copy of everything observed.
    pub fn snapshot(&self) -> Snapshot {
        let c = &self.cells;
        let sqlstate = c.last_sqlstate.load(Ordering::Acquire);
        Snapshot {
            liveness: self.liveness(),
            tx_status: self.tx_status(),
            in_flight: self.in_flight(),
            commit: self.commit(),
            commits_written: c.commits_written.load(Ordering::Acquire),
            command_completes: c.command_completes.load(Ordering::Acquire),
            last_command_tag: c.last_tag.read(),
            errors: c.errors.load(Ordering::Acquire),
            last_sqlstate: (sqlstate != 0).then(|| unpack_sqlstate(sqlstate)),
            ready_for_query: c.ready_for_query.load(Ordering::Acquire),
            backend_pid: self.backend_pid(),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            bytes_received: c.bytes_received.load(Ordering::Relaxed),
            messages_sent: c.messages_sent.load(Ordering::Relaxed),
            messages_received: c.messages_received.load(Ordering::Relaxed),
            last_received: instant_of(c.last_received.load(Ordering::Relaxed)),
            dead_since: instant_of(c.dead_since.load(Ordering::Acquire)),
        }
    }

    /// When the server last sent bytes (`None` before its first byte): the last time the
    /// connection was proven alive.
    pub fn last_received(&self) -> Option<Instant> {
        instant_of(self.cells.last_received.load(Ordering::Relaxed))
    }

    /// Bytes read from the server so far.
    pub fn bytes_received(&self) -> u64 {
        self.cells.bytes_received.load(Ordering::Relaxed)
    }

    /// Time since the server last sent bytes (to within a few milliseconds), or `None`
    /// before its first byte.
    pub fn idle_for(&self) -> Option<Duration> {
        since(self.cells.last_received.load(Ordering::Relaxed))
    }
}

impl fmt::Debug for WireState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.snapshot(), f)
    }
}

struct WatcherGuard<'a>(&'a AtomicU32);

impl Drop for WatcherGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Packs a five-character SQLSTATE into an integer (0 means none).
pub(crate) fn pack_sqlstate(code: &[u8]) -> u64 {
    code.iter()
        .take(5)
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

fn unpack_sqlstate(packed: u64) -> String {
    let bytes = packed.to_be_bytes();
    bytes
        .iter()
        .filter(|b| **b != 0)
        .map(|b| char::from(*b))
        .collect()
}

/// Everything the tap observed, copied out at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Open, starting or dead.
    pub liveness: Liveness,
    /// Status from the last `ReadyForQuery`.
    pub tx_status: TxStatus,
    /// Requests awaiting their `ReadyForQuery`.
    pub in_flight: u32,
    /// The most recent COMMIT as the wire showed it.
    pub commit: CommitState,
    /// COMMITs written so far.
    pub commits_written: u64,
    /// `CommandComplete` messages received.
    pub command_completes: u64,
    /// Tag of the last `CommandComplete` (bounded to 32 bytes).
    pub last_command_tag: String,
    /// `ErrorResponse` messages received.
    pub errors: u64,
    /// SQLSTATE of the last `ErrorResponse`, if any.
    pub last_sqlstate: Option<String>,
    /// `ReadyForQuery` messages received (including the one that ends start-up).
    pub ready_for_query: u64,
    /// The server process id, from `BackendKeyData`.
    pub backend_pid: Option<i32>,
    /// Bytes written to the server.
    pub bytes_sent: u64,
    /// Bytes read from the server.
    pub bytes_received: u64,
    /// Messages written to the server.
    pub messages_sent: u64,
    /// Messages read from the server.
    pub messages_received: u64,
    /// When the server last sent bytes.
    pub last_received: Option<Instant>,
    /// When the stream was first seen dead.
    pub dead_since: Option<Instant>,
}

impl Snapshot {
    /// The same snapshot without the wall-clock fields, for comparing two observations of
    /// the same bytes.
    pub fn without_times(mut self) -> Snapshot {
        self.last_received = None;
        self.dead_since = None;
        self
    }
}
