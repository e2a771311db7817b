//! The server's side of a test: unpooled connections, sessions by `application_name`, and
//! the check every fault test ends with.

use std::sync::atomic::{AtomicU32, Ordering};

use holdfast_pool::{ConnectConfig, Connection, Pool};

/// A unique `application_name` per test, so server-side checks see only that test's sessions.
pub fn app_name(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("hf-{test}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// An unpooled connection to `url`.
pub async fn connect_to(url: &str) -> Connection {
    let config = match ConnectConfig::from_url(url) {
        Ok(config) => config.application_name("hf-admin"),
        Err(e) => panic!("bad test URL: {e}"),
    };
    match holdfast_pool::connect(&config).await {
        Ok(conn) => conn,
        Err(e) => panic!("cannot connect to {}: {e}", holdfast_pool::redact_url(url)),
    }
}

/// An unpooled connection to the database `pool` uses, named `hf-admin`.
pub async fn admin(pool: &Pool) -> Connection {
    let config = pool.config().connect.clone().application_name("hf-admin");
    match holdfast_pool::connect(&config).await {
        Ok(conn) => conn,
        Err(e) => panic!("admin connection: {e}"),
    }
}

/// The sessions of `pool` (by its `application_name`), by pid and state, as the server sees
/// them.
pub async fn server_sessions(pool: &Pool) -> Vec<(i32, Option<String>)> {
    let app = pool.config().connect.get_application_name().to_string();
    let rows = admin(pool)
        .await
        .query(
            "SELECT pid, state FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap_or_else(|e| panic!("pg_stat_activity: {}", holdfast_pool::pg_error_text(&e)));
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Terminates every server session of `pool` (by its `application_name`) from another
/// connection; returns how many there were.
pub async fn terminate_pool_backends(pool: &Pool) -> i64 {
    let app = pool.config().connect.get_application_name().to_string();
    admin(pool)
        .await
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap_or_else(|e| panic!("terminate: {}", holdfast_pool::pg_error_text(&e)))
        .get(0)
}

/// The check every fault test ends with: no session of `pool` is left idle in a
/// transaction on the server.
pub async fn assert_no_idle_in_transaction(pool: &Pool) {
    let stuck: Vec<_> = server_sessions(pool)
        .await
        .into_iter()
        .filter(|(_, state)| {
            state
                .as_deref()
                .is_some_and(|s| s.starts_with("idle in transaction"))
        })
        .collect();
    assert!(stuck.is_empty(), "sessions left idle in transaction: {stuck:?}");
}
