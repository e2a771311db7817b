//! What holdfast's own tests share, so that each test file says only what it tests: the
//! shared throwaway cluster, bounded waits instead of sleeps, log capture, a database behind
//! a fault proxy, server-side session checks (the no-idle-in-transaction assertion every
//! fault test ends with), span recording, and pool and worker set-up.
//!
//! A dev-dependency only; nothing here is for users (holdfast-tasks has its own test helpers
//! for them).
#![deny(missing_docs)]

mod logs;
mod pools;
mod proxy;
mod sessions;
mod spans;
mod tasks;

use std::time::Duration;

pub use logs::{capture_logs, capture_logs_everywhere, Logs};
pub use pools::{config_for, config_for_url, pool};
pub use proxy::{behind_a_proxy, Proxied};
pub use sessions::{
    admin, app_name, assert_no_idle_in_transaction, connect_to, server_sessions, terminate_pool_backends,
};
pub use spans::{record_spans, SeenSpan, Spans};
pub use tasks::{counts, fast_worker, queue_database, settled, start_worker, state_of, worker_pools};

/// Upper bound for anything a test waits on; reaching it fails the test.
pub const BOUND: Duration = Duration::from_secs(60);

/// The cluster shared by every test of this process (its own database per test:
/// `cluster().create_database()`). Tests that stop, restart or kill the server start their
/// own.
pub fn cluster() -> &'static holdfast_tempdb::TempCluster {
    match holdfast_tempdb::shared() {
        Ok(cluster) => cluster,
        Err(e) => panic!("the shared test cluster could not start: {e}"),
    }
}

/// Waits until `check` holds, looking every 10 ms, for at most [`BOUND`]; fails the test
/// naming `what` otherwise.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + BOUND;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {BOUND:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`eventually`] for tests without a runtime (those that drive other processes).
pub fn eventually_blocking(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + BOUND;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "not within {BOUND:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
