//! A connection the pool owns, with what the pool knows about it, and why the pool closes
//! one.

use holdfast_wire::CoarseInstant;

use crate::connect::Connection;

/// A connection owned by the pool, with what the pool knows about it.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) conn: Connection,
    /// Unique within the pool, for leak tracking and logs.
    pub(crate) id: u64,
    /// The pool's disconnect generation when this connection was opened or last verified.
    pub(crate) generation: u64,
    /// When to replace it (age limit plus jitter), if ever.
    pub(crate) recycle_at: Option<CoarseInstant>,
    /// When it last came back to the idle set.
    pub(crate) idle_since: CoarseInstant,
    /// Statements prepared on this connection, by SQL text and parameter types.
    pub(crate) statements: std::sync::Mutex<super::statements::StatementCache>,
}

impl Slot {
    /// True when it must not be handed out: the wire says dead, or it is past its age.
    pub(crate) fn expired(&self, now: CoarseInstant) -> Option<CloseReason> {
        if self.conn.is_closed() {
            Some(CloseReason::Broken)
        } else if self.recycle_at.is_some_and(|at| now >= at) {
            Some(CloseReason::Recycled)
        } else {
            None
        }
    }
}

/// Why the pool closed a connection (a metric label and a log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    Recycled,
    Idle,
    Broken,
    Overflow,
    ResetFailed,
    PingFailed,
    PoolClosed,
    /// The server is no longer what `target_session_attrs` asked for: a standby promoted,
    /// or a read-only error on a pool that wants writes.
    WrongRole,
}

impl CloseReason {
    pub(crate) fn label(self) -> &'static str {
        match self {
            CloseReason::Recycled => "recycled",
            CloseReason::Idle => "idle",
            CloseReason::Broken => "broken",
            CloseReason::Overflow => "overflow",
            CloseReason::ResetFailed => "reset_failed",
            CloseReason::PingFailed => "ping_failed",
            CloseReason::PoolClosed => "pool_closed",
            CloseReason::WrongRole => "wrong_role",
        }
    }
}
