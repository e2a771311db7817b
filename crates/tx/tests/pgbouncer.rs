//! Transactions through a real PgBouncer in transaction mode: the pool's timeouts arrive
//! with BEGIN (PgBouncer refuses start-up options), the server process that runs the
//! transaction is the one the server names, and a lost COMMIT reply is still resolved, not
//! retried. The chain is pool -> fault proxy -> PgBouncer -> PostgreSQL.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use holdfast_faults::{Action, FaultProxy, Faults, MessageRule, ProxyHandle, Trigger};
use holdfast_pool::{ConnectConfig, Pool, PoolConfig, Pooler};
use holdfast_tempdb::{Database, PgBouncerOptions, TempPgBouncer};
use holdfast_testkit::cluster;
use holdfast_tx::{RetryPolicy, TransactionExt, TxError, TxOptions};
use tokio_postgres::error::SqlState;

const BOUND: Duration = Duration::from_secs(30);

struct Setup {
    db: Database,
    pool: Pool,
    proxy: ProxyHandle,
    _bouncer: TempPgBouncer,
}

async fn setup(statement_timeout: Option<Duration>) -> Setup {
    let db = cluster().create_database().expect("database");
    cluster()
        .psql(
            &db.name,
            "CREATE TABLE items (key int NOT NULL); CREATE TABLE counter (n int NOT NULL); INSERT INTO counter VALUES (0)",
        )
        .expect("schema");
    let bouncer = TempPgBouncer::start(cluster(), PgBouncerOptions::default()).expect("pgbouncer");
    let proxy = FaultProxy::start_local(SocketAddr::from(([127, 0, 0, 1], bouncer.port())))
        .await
        .expect("proxy");
    let url = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port(), db.name);
    let connect = ConnectConfig::from_url(&url)
        .expect("url")
        .application_name("hf-tx-bouncer")
        .connect_timeout(Duration::from_secs(5))
        .statement_timeout(statement_timeout)
        .pooler(Pooler::Transaction);
    let config = PoolConfig::new(connect)
        .pool_size(2)
        .pool_timeout(Duration::from_secs(10))
        .reconnect_backoff_max(Duration::from_millis(100));
    Setup {
        db,
        pool: Pool::new(config).expect("pool"),
        proxy,
        _bouncer: bouncer,
    }
}

fn psql(s: &Setup, sql: &str) -> String {
    cluster().psql(&s.db.name, sql).expect("psql")
}

#[tokio::test]
async fn the_pools_timeouts_arrive_with_begin_and_the_real_backend_is_known() {
    let s = setup(Some(Duration::from_millis(150))).await;
    let (timeout, pid, sleep_code) = s
        .pool
        .transaction(TxOptions::new(), |tx| {
            Box::pin(async move {
                let timeout: String = tx.query_one("SHOW statement_timeout", &[]).await?.get(0);
                let pid: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
                assert_eq!(tx.backend_pid(), Some(pid), "read with BEGIN, from the server");
                assert_ne!(
                    tx.connection().backend_pid(),
                    Some(pid),
                    "the start-up pid is PgBouncer's, not the server process's"
                );
                // The timeout ends a long statement inside the transaction.
                let sleep = tx.batch_execute("SAVEPOINT s; SELECT pg_sleep(30)").await;
                let code = sleep.err().and_then(|e| e.code().cloned());
                tx.batch_execute("ROLLBACK TO SAVEPOINT s").await?;
                Ok::<_, tokio_postgres::Error>((timeout, pid, code))
            })
        })
        .await
        .expect("transaction");
    assert_eq!(timeout, "150ms", "SET LOCAL statement_timeout came with BEGIN");
    assert!(pid > 0);
    assert_eq!(sleep_code, Some(SqlState::QUERY_CANCELED));
}

#[tokio::test]
async fn a_lost_commit_reply_through_pgbouncer_is_resolved_not_retried() {
    let s = setup(None).await;
    let runs = Arc::new(AtomicU32::new(0));
    let mut committed = Vec::new();
    for key in 0..10 {
        s.proxy
            .set(Faults {
                rule: Some(MessageRule {
                    trigger: Trigger::Commit,
                    action: Action::DropReply,
                    once: true,
                }),
                ..Faults::none()
            })
            .expect("faults");
        let runs = Arc::clone(&runs);
        let options = TxOptions::new().retry(RetryPolicy {
            max_attempts: 5,
            deadline: BOUND,
            ..RetryPolicy::default()
        });
        let result: Result<i32, TxError<tokio_postgres::Error>> = s
            .pool
            .transaction(options, move |tx| {
                runs.fetch_add(1, Ordering::Relaxed);
                Box::pin(async move {
                    tx.execute("INSERT INTO items (key) VALUES ($1)", &[&key]).await?;
                    tx.execute("UPDATE counter SET n = n + 1", &[]).await?;
                    Ok(key)
                })
            })
            .await;
        committed.push(result.expect("resolved as committed"));
    }
    s.proxy.clear();
    assert_eq!(runs.load(Ordering::Relaxed), 10, "no closure ran twice");
    assert_eq!(
        psql(&s, "SELECT count(*), count(DISTINCT key) FROM items"),
        "10|10"
    );
    assert_eq!(psql(&s, "SELECT n FROM counter"), "10");
    assert_eq!(
        psql(
            &s,
            "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'"
        ),
        "0"
    );
}
