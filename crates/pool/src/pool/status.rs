//! A snapshot of the pool's state, for health checks, logs and errors.

use std::fmt;

/// The pool at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStatus {
    /// Connections that exist (idle, in use, or being reset or checked by the pool).
    pub open: usize,
    /// Idle connections ready to hand out (a `Pool::query` lane parked with no caller, kept
    /// for the next statement, included: a checkout that finds no other takes it back).
    pub idle: usize,
    /// Connections held by callers (lanes serving `Pool::query` callers included).
    pub in_use: usize,
    /// Callers waiting for a connection (callers of `query`/`execute` waiting for the lane
    /// another caller is making included).
    pub waiting: usize,
    /// Connects in progress.
    pub opening: usize,
    /// The most connections allowed (`pool_size + max_overflow`).
    pub max: usize,
    /// True while the last connect attempt failed and none has succeeded since.
    pub database_down: bool,
}

impl fmt::Display for PoolStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "open {}, idle {}, in use {}, waiting {}, opening {}, max {}{}",
            self.open,
            self.idle,
            self.in_use,
            self.waiting,
            self.opening,
            self.max,
            if self.database_down { ", database down" } else { "" }
        )
    }
}

/// Why the pool cannot reach the database, from [`Pool::down`](crate::Pool::down): the
/// last connect attempt's error, since when and after how many attempts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DatabaseDown {
    /// The last connect attempt's error (the server's message and SQLSTATE when it
    /// answered; never a password).
    pub cause: std::sync::Arc<crate::ConnectError>,
    /// How long the database has been unreachable.
    pub for_how_long: std::time::Duration,
    /// Connect attempts that failed in a row.
    pub failures: u32,
}
