//! Wakes the claim loop the moment a task is enqueued: a dedicated connection LISTENs on the
//! queue's channel. Where LISTEN cannot work (behind a transaction-mode pooler, unless a
//! direct connection is configured) the worker only polls; if the connection drops, it
//! reconnects with backoff.

use std::sync::Arc;
use std::time::Duration;

use holdfast_pool::{connect_listening, ConnectConfig};
use tokio::sync::Notify;

pub(crate) async fn run(config: ConnectConfig, channel: String, wake: Arc<Notify>) {
    let mut failures = 0u32;
    loop {
        match connect_listening(&config).await {
            Ok((conn, mut notifications)) => {
                if let Err(error) = conn.batch_execute(&format!("LISTEN {channel}")).await {
                    tracing::warn!(%error, "LISTEN failed: falling back to polling only");
                    return;
                }
                failures = 0;
                // Anything enqueued while we were not listening: look now.
                wake.notify_waiters();
                while notifications.recv().await.is_some() {
                    wake.notify_waiters();
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
