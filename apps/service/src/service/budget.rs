//! One budget per API request (`API_REQUEST_TIMEOUT_MS`), shared by everything the request
//! does with the database: the wait for a connection, each retry of a transaction, each
//! repeat of a read. The middleware opens the budget; handlers ask what is left of it. So a
//! restart or a terminated backend shorter than the budget costs a request only time, and a
//! request is never answered later than its budget, whatever it waits on.

use std::future::Future;
use std::time::Duration;

use holdfast::{RetryPolicy, TxOptions};
use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// The budget of a request's database work within its request timeout: a little less, so
/// that work that runs out of it is answered with its cause (the database down, say) before
/// the request timeout cuts it off without one.
pub fn for_work(request_timeout: Duration) -> Duration {
    request_timeout.saturating_sub((request_timeout / 10).min(Duration::from_millis(250)))
}

/// Runs `request` with `budget` from now.
pub async fn within<F: Future>(budget: Duration, request: F) -> F::Output {
    DEADLINE.scope(Instant::now() + budget, request).await
}

/// What is left of the current request's budget; `otherwise` outside a request.
pub fn left_or(otherwise: Duration) -> Duration {
    DEADLINE
        .try_with(|deadline| deadline.saturating_duration_since(Instant::now()))
        .unwrap_or(otherwise)
}

/// Transaction options whose retries end with the request's budget (the default policy's
/// deadline outside a request).
pub fn tx_options() -> TxOptions {
    let retry = RetryPolicy::default();
    TxOptions::new().retry(RetryPolicy {
        deadline: left_or(retry.deadline),
        ..retry
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_budget_is_the_requests_inside_it_and_the_defaults_outside() {
        let budget = Duration::from_secs(10);
        assert_eq!(left_or(Duration::from_secs(7)), Duration::from_secs(7));
        within(budget, async {
            let left = left_or(Duration::ZERO);
            assert!(left <= budget && left > Duration::from_secs(9), "{left:?}");
            let deadline = tx_options().retry.deadline;
            assert!(deadline <= left, "{deadline:?} after {left:?}");
        })
        .await;
        assert_eq!(tx_options().retry.deadline, RetryPolicy::default().deadline);
        assert_eq!(for_work(Duration::from_secs(10)), Duration::from_millis(9750));
        assert_eq!(for_work(Duration::from_secs(1)), Duration::from_millis(900));
    }
}
