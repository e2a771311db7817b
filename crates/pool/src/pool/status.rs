//! A snapshot of the pool's state, for health checks, logs and errors.

use std::fmt;

/// The pool at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStatus {
    /// Connections that exist (idle, in use, or being reset or checked by the pool).
    pub open: usize,
    /// Idle connections ready to hand out.
    pub idle: usize,
    /// Connections held by callers.
    pub in_use: usize,
    /// Callers waiting for a connection.
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
