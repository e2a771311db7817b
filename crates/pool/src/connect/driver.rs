//! The task that drives a connection: it sends what the client queued and reads what the
//! server answered, handing notifications on (notices are dropped).
//!
//! While several callers share the connection (a lane of `Pool::query`), the driver lets
//! the tasks that were ready before it run first each time it is woken: woken by the first
//! caller that queued a statement, tokio would run it next on the same worker (the worker's
//! LIFO slot, which the other worker cannot take), so it sent statements one at a time, and
//! while that worker was preempted (it is, for milliseconds, on a machine whose CPUs the
//! server shares) every caller on the lane waited for it. Yielding once puts it at the back
//! of the worker's queue: the callers ready meanwhile queue their statements and it sends
//! them together, and a worker that runs out of tasks can take it from a preempted one.
//! Measured with `holdfast-bench pools --sections select` (docs/benchmarks.md): at 64
//! callers on shared CPUs, `Pool::query`'s p999 came down from above `get()`'s to about
//! `get()`'s (below it in some runs, above in others), its p99 well below.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Notification};

/// Spawns the driver of `connection`. While `shared` is set, each wake-up yields once
/// before the connection is driven (see the module's documentation).
pub(super) fn spawn<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notify: Option<mpsc::UnboundedSender<Notification>>,
    shared: Arc<AtomicBool>,
) -> JoinHandle<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        // Set when the connection had nothing more to do: the next poll is a wake-up.
        let mut idle = false;
        loop {
            let message = poll_fn(|cx| {
                if idle && shared.load(Ordering::Relaxed) {
                    idle = false;
                    // Woken during its own poll, a tokio task goes to the back of the queue.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let polled = connection.poll_message(cx);
                idle = polled.is_pending();
                polled
            })
            .await;
            match message {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if let Some(tx) = &notify {
                        let _ = tx.send(n);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::debug!(error = %crate::pg_error_text(&error), "connection ended with an error");
                    break;
                }
                None => break,
            }
        }
    })
}
