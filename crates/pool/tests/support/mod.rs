//! The pool tests' own helper; the rest comes from holdfast-testkit.
#![allow(dead_code, unused_imports)]

use holdfast_pool::Pool;
pub use holdfast_testkit::{
    admin, app_name, assert_no_idle_in_transaction, behind_a_proxy, capture_logs, cluster, config_for,
    config_for_url, eventually, server_sessions, terminate_pool_backends, Logs, Proxied, BOUND,
};

/// The answer of a caller started by [`busy_connection`].
pub type Answer = tokio::task::JoinHandle<Result<Vec<tokio_postgres::Row>, holdfast_pool::PoolError>>;

/// Creates table `t`, locks it from another session and starts a caller whose statement
/// waits on that lock: the pool's one connection stays busy (a statement in flight) until
/// the returned session commits.
pub async fn busy_connection(pool: &Pool) -> (holdfast_pool::Connection, Answer) {
    pool.execute("CREATE TABLE t (x int)", &[]).await.expect("create");
    let locker = admin(pool).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let a = tokio::spawn({
        let pool = pool.clone();
        async move { pool.query("SELECT count(*) FROM t", &[]).await }
    });
    let app = pool.config().connect.get_application_name().to_string();
    let watcher = admin(pool).await;
    eventually("the first caller waits on the lock", || async {
        watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
                &[&app],
            )
            .await
            .expect("pg_stat_activity")
            .get::<_, i64>(0)
            == 1
    })
    .await;
    (locker, a)
}
