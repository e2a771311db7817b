//! What the proxy has done, as plain counters.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Totals since the proxy started.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) opened: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) bytes_up: AtomicU64,
    pub(crate) bytes_down: AtomicU64,
    pub(crate) faults_fired: AtomicU64,
    pub(crate) encrypted: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct CounterSnapshot {
    /// Client connections accepted and relayed.
    pub connections_opened: u64,
    /// Relayed connections that ended.
    pub connections_closed: u64,
    /// Client connections refused.
    pub connections_refused: u64,
    /// Bytes forwarded client to server.
    pub bytes_up: u64,
    /// Bytes forwarded server to client.
    pub bytes_down: u64,
    /// Resets, closes, cuts and message rules carried out.
    pub faults_fired: u64,
    /// Relayed connections that switched to TLS: connection faults apply to them, message
    /// rules cannot (the proxy cannot read them).
    pub encrypted_sessions: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            connections_opened: self.opened.load(Ordering::Relaxed),
            connections_closed: self.closed.load(Ordering::Relaxed),
            connections_refused: self.refused.load(Ordering::Relaxed),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            faults_fired: self.faults_fired.load(Ordering::Relaxed),
            encrypted_sessions: self.encrypted.load(Ordering::Relaxed),
        }
    }
}
