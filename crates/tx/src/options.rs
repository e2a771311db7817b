//! How a transaction runs: its isolation, access mode, and how failed attempts are retried.

use std::time::Duration;

/// Transaction isolation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// The server's default (normally READ COMMITTED).
    #[default]
    Default,
    /// READ COMMITTED.
    ReadCommitted,
    /// REPEATABLE READ.
    RepeatableRead,
    /// SERIALIZABLE: conflicts end in 40001, which is retried.
    Serializable,
}

/// How failed attempts are retried. A lost connection (class 08, 57P01, 57P02, 57P03, a
/// database that cannot be reached) is retried until `deadline`, so that a restart or a
/// failover shorter than the budget costs only time; serialization failures and deadlocks
/// are retried at most `max_attempts` times in all. Waiting for a connection counts against
/// the deadline. The defaults suit an API request: five seconds in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all after serialization failures and deadlocks, the first included
    /// (1 means no retry of any kind). Default 3.
    pub max_attempts: u32,
    /// Upper bound of the first pause; it doubles each retry (full jitter: the pause is a
    /// random fraction of the bound). Default 20 ms.
    pub base_backoff: Duration,
    /// Largest pause. Default 500 ms.
    pub max_backoff: Duration,
    /// The budget: no new attempt starts after this much time since the first, and an
    /// attempt waits for a connection at most what is left of it. Default 5 s.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(500),
            deadline: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Run once, never retry.
    pub fn never() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The pause before attempt `next` (2 for the first retry).
    pub fn backoff(&self, next: u32) -> Duration {
        let doublings = next.saturating_sub(2).min(16);
        let bound = self
            .base_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff);
        bound.mul_f64(fastrand::f64())
    }
}

/// Options of one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxOptions {
    /// Isolation level.
    pub isolation: Isolation,
    /// READ ONLY.
    pub read_only: bool,
    /// DEFERRABLE (meaningful with SERIALIZABLE READ ONLY).
    pub deferrable: bool,
    /// Read the transaction id with BEGIN so that a COMMIT whose reply is lost can be
    /// resolved from the server (default true). Turning it off saves the server one tiny
    /// statement per transaction; a lost reply then ends in `CommitOutcomeUnknown`.
    pub resolve_lost_commits: bool,
    /// Retries.
    pub retry: RetryPolicy,
}

impl Default for TxOptions {
    fn default() -> Self {
        TxOptions {
            isolation: Isolation::Default,
            read_only: false,
            deferrable: false,
            resolve_lost_commits: true,
            retry: RetryPolicy::default(),
        }
    }
}

impl TxOptions {
    /// Defaults: server isolation, read-write, lost commits resolved, default retries.
    pub fn new() -> TxOptions {
        TxOptions::default()
    }

    /// Do not read the transaction id; a lost COMMIT reply becomes `CommitOutcomeUnknown`.
    pub fn without_commit_resolution(mut self) -> Self {
        self.resolve_lost_commits = false;
        self
    }

    /// SERIALIZABLE.
    pub fn serializable(mut self) -> Self {
        self.isolation = Isolation::Serializable;
        self
    }

    /// Isolation level.
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// READ ONLY.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// DEFERRABLE.
    pub fn deferrable(mut self) -> Self {
        self.deferrable = true;
        self
    }

    /// Retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The BEGIN statement for these options.
    pub(crate) fn begin_sql(&self) -> String {
        let mut sql = String::from("BEGIN");
        match self.isolation {
            Isolation::Default => {}
            Isolation::ReadCommitted => sql.push_str(" ISOLATION LEVEL READ COMMITTED"),
            Isolation::RepeatableRead => sql.push_str(" ISOLATION LEVEL REPEATABLE READ"),
            Isolation::Serializable => sql.push_str(" ISOLATION LEVEL SERIALIZABLE"),
        }
        if self.read_only {
            sql.push_str(" READ ONLY");
        }
        if self.deferrable {
            sql.push_str(" DEFERRABLE");
        }
        sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_statements() {
        assert_eq!(TxOptions::new().begin_sql(), "BEGIN");
        assert_eq!(
            TxOptions::new()
                .serializable()
                .read_only()
                .deferrable()
                .begin_sql(),
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE"
        );
    }

    #[test]
    fn backoff_doubles_within_bounds() {
        let p = RetryPolicy::default();
        for next in 2..30 {
            let bound = p
                .base_backoff
                .saturating_mul(1 << (next - 2).min(16))
                .min(p.max_backoff);
            assert!(p.backoff(next) <= bound);
        }
    }
}
