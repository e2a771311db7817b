//! Wakes the claim loop the moment a task is enqueued: a dedicated connection LISTENs on the
//! queue's channel. Where LISTEN cannot work (behind a transaction-mode pooler, unless a
//! direct connection is configured) the worker only polls; if the connection drops, it
//! reconnects with backoff.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use holdfast_pool::{connect_listening, ConnectConfig};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// Tells idle slots that tasks were enqueued. The epoch lets a slot register for a wake-up
/// only when it is about to wait (and see one that came while it was claiming), instead of
/// before every claim.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    epoch: AtomicU64,
    notify: Notify,
}

impl Wake {
    /// Wake-ups so far: read before claiming, compared after registering to wait.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Wakes every waiting slot; slots that are claiming see the new epoch.
    pub(crate) fn wake_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// A wake-up to wait for; `enable` it, then check the epoch, then wait.
    pub(crate) fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }
}

pub(crate) async fn run(config: ConnectConfig, channel: String, wake: Arc<Wake>) {
    let mut failures = 0u32;
    loop {
        match connect_listening(&config).await {
            Ok((conn, mut notifications)) => {
                if let Err(error) = conn.batch_execute(&format!("LISTEN {channel}")).await {
                    tracing::warn!(error = %holdfast_pool::pg_error_text(&error), "LISTEN failed: falling back to polling only");
                    return;
                }
                failures = 0;
                // Anything enqueued while we were not listening: look now.
                wake.wake_all();
                while notifications.recv().await.is_some() {
                    wake.wake_all();
                }
                tracing::debug!("notification connection ended; reconnecting");
            }
            Err(error) => {
                failures += 1;
                tracing::debug!(%error, failures, "notification connection failed");
            }
        }
        let pause = Duration::from_millis(100)
            .saturating_mul(1 << failures.min(6))
            .min(Duration::from_secs(5));
        tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64() * 0.5)).await;
    }
}
