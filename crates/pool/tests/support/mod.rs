//! Helpers shared by the pool's integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_pool::{ConnectConfig, Pool, PoolConfig};
use holdfast_tempdb::TempCluster;

/// Upper bound for anything a test waits on; reaching it fails the test.
pub const BOUND: Duration = Duration::from_secs(30);

/// A unique application_name per test, so server-side checks see only that test's sessions.
pub fn app_name(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("hf-{test}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A pool config for a fresh database of the shared cluster.
pub fn config_for(cluster: &TempCluster, test: &str) -> PoolConfig {
    let db = cluster.create_database().expect("database");
    config_for_url(&db.url, test)
}

pub fn config_for_url(url: &str, test: &str) -> PoolConfig {
    let connect = ConnectConfig::from_url(url)
        .expect("url")
        .application_name(&app_name(test))
        .connect_timeout(Duration::from_secs(10));
    PoolConfig::new(connect).pool_timeout(BOUND)
}

/// A fresh database of the shared cluster behind a fault proxy, and its URL through the proxy.
pub async fn behind_a_proxy() -> (holdfast_faults::ProxyHandle, String) {
    let cluster = holdfast_tempdb::shared().expect("cluster");
    let db = cluster.create_database().expect("database");
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], cluster.port()));
    let proxy = holdfast_faults::FaultProxy::start_local(upstream)
        .await
        .expect("proxy");
    let url = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port(), db.name);
    (proxy, url)
}

/// Runs SQL on a fresh, unpooled connection to the same database.
pub async fn admin(pool: &Pool) -> holdfast_pool::Connection {
    let config = pool.config().connect.clone().application_name("hf-admin");
    holdfast_pool::connect(&config).await.expect("admin connection")
}

/// Terminates every server session of this pool's application_name from another
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
        .expect("terminate")
        .get(0)
}

/// Sessions of this pool's application_name, by state, as the server sees them.
pub async fn server_sessions(pool: &Pool) -> Vec<(i32, Option<String>)> {
    let admin = admin(pool).await;
    let rows = admin
        .query(
            "SELECT pid, state FROM pg_stat_activity WHERE application_name = $1",
            &[&pool.config().connect.get_application_name()],
        )
        .await
        .expect("pg_stat_activity");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// The check every pool test ends with: no session of this pool is left idle in a
/// transaction on the server.
pub async fn assert_no_idle_in_transaction(pool: &Pool) {
    let sessions = server_sessions(pool).await;
    let stuck: Vec<_> = sessions
        .iter()
        .filter(|(_, state)| {
            state
                .as_deref()
                .is_some_and(|s| s.starts_with("idle in transaction"))
        })
        .collect();
    assert!(stuck.is_empty(), "sessions left idle in transaction: {stuck:?}");
}

/// Bounded wait until `check` holds, polling the server every few milliseconds.
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

/// Captures `tracing` output of the current thread into a buffer.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// Installs a subscriber that records every event (debug and up) into the returned buffer,
/// for the calling thread; keep the guard alive.
pub fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (logs, guard)
}

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
