//! Promise 6 against a real PostgreSQL, with faults injected for real through the proxy:
//! every transaction that reports success committed exactly once, none committed twice.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use holdfast_faults::{Action, FaultProxy, Faults, MessageRule, ProxyHandle, Trigger};
use holdfast_pool::{ConnectConfig, Pool, PoolConfig};
use holdfast_testkit::{assert_no_idle_in_transaction, cluster};
use holdfast_tx::{BeginExt, RetryPolicy, TransactionExt, TxError, TxOptions};

const BOUND: Duration = Duration::from_secs(30);

/// A database with an `items` table (no unique key, so a double commit would show) and a
/// counter, plus a pool to it through a fault proxy.
struct Setup {
    pool: Pool,
    proxy: ProxyHandle,
    direct: String,
}

async fn setup(name: &str) -> Setup {
    let db = cluster().create_database().expect("database");
    cluster()
        .psql(
            &db.name,
            "CREATE TABLE items (key int NOT NULL); CREATE TABLE counter (n int NOT NULL); INSERT INTO counter VALUES (0)",
        )
        .expect("schema");
    let proxy = FaultProxy::start_local(SocketAddr::from(([127, 0, 0, 1], cluster().port())))
        .await
        .expect("proxy");
    let app = format!("hf-tx-{name}");
    let url = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port(), db.name);
    let connect = ConnectConfig::from_url(&url)
        .expect("url")
        .application_name(&app)
        .connect_timeout(Duration::from_secs(5));
    let config = PoolConfig::new(connect)
        .pool_size(2)
        .pool_timeout(Duration::from_secs(10))
        .reconnect_backoff_max(Duration::from_millis(100));
    Setup {
        pool: Pool::new(config).expect("pool"),
        proxy,
        direct: db.url,
    }
}

async fn direct(url: &str) -> holdfast_pool::Connection {
    holdfast_pool::connect(&ConnectConfig::from_url(url).expect("url"))
        .await
        .expect("direct connection")
}

/// Rows per key, and the counter, read directly from the server.
async fn ledger(url: &str) -> (Vec<(i32, i64)>, i32) {
    let conn = direct(url).await;
    let rows = conn
        .query("SELECT key, count(*) FROM items GROUP BY key ORDER BY key", &[])
        .await
        .expect("items");
    let counter: i32 = conn
        .query_one("SELECT n FROM counter", &[])
        .await
        .expect("counter")
        .get(0);
    (rows.iter().map(|r| (r.get(0), r.get(1))).collect(), counter)
}

/// The unit of work of these tests: one row with its key, one bump of the counter.
async fn insert_and_bump(tx: &holdfast_tx::Tx<'_>, key: i32) -> Result<i32, tokio_postgres::Error> {
    tx.execute("INSERT INTO items (key) VALUES ($1)", &[&key]).await?;
    tx.execute("UPDATE counter SET n = n + 1", &[]).await?;
    Ok(key)
}

fn patient() -> TxOptions {
    TxOptions::new().retry(RetryPolicy {
        max_attempts: 5,
        deadline: BOUND,
        ..RetryPolicy::default()
    })
}

/// Runs `n` transactions, re-arming `faults` before each; returns the keys that reported
/// success and how many times the closure ran in all.
async fn run_with_fault(s: &Setup, faults: Faults, n: i32) -> (Vec<i32>, u32) {
    let runs = Arc::new(AtomicU32::new(0));
    let mut committed = Vec::new();
    for key in 0..n {
        s.proxy.set(faults.clone()).expect("faults");
        let runs = Arc::clone(&runs);
        let result = s
            .pool
            .transaction(patient(), move |tx| {
                runs.fetch_add(1, Ordering::Relaxed);
                Box::pin(insert_and_bump(tx, key))
            })
            .await;
        if let Ok(k) = result {
            committed.push(k);
        }
    }
    s.proxy.clear();
    (committed, runs.load(Ordering::Relaxed))
}

fn rule(trigger: Trigger, action: Action) -> Faults {
    Faults {
        rule: Some(MessageRule {
            trigger,
            action,
            once: true,
        }),
        ..Faults::none()
    }
}

/// The ledger invariant: every success committed exactly once, nothing else committed, the
/// counter agrees with the rows.
async fn assert_exactly_once(s: &Setup, committed: &[i32]) {
    let (rows, counter) = ledger(&s.direct).await;
    let expected: Vec<(i32, i64)> = committed.iter().map(|k| (*k, 1)).collect();
    assert_eq!(rows, expected, "each success exactly one row, no other rows");
    assert_eq!(counter as usize, committed.len(), "the counter equals the rows");
    assert_no_idle_in_transaction(&s.pool).await;
}

/// Ten transactions, each meeting `trigger`/`action` once on the way: every one succeeds,
/// exactly once, and the closure ran `runs` times in all (`why`).
async fn ten_through_a_fault(name: &str, trigger: Trigger, action: Action, runs: u32, why: &str) {
    let s = setup(name).await;
    let (committed, ran) = run_with_fault(&s, rule(trigger, action), 10).await;
    assert_eq!(committed.len(), 10, "all succeed");
    assert_eq!(ran, runs, "{why}");
    assert_exactly_once(&s, &committed).await;
}

fn query(prefix: &str) -> Trigger {
    Trigger::Query {
        prefix: prefix.into(),
    }
}

fn parse(prefix: &str) -> Trigger {
    Trigger::Parse {
        prefix: prefix.into(),
    }
}

#[tokio::test]
async fn cut_before_begin_is_retried() {
    let why = "the closure never ran on the cut attempts";
    ten_through_a_fault("before-begin", query("BEGIN"), Action::CutBefore, 10, why).await;
}

#[tokio::test]
async fn cut_mid_closure_is_retried() {
    let why = "each closure ran twice: once cut, once through";
    ten_through_a_fault("mid-closure", parse("UPDATE"), Action::CutBefore, 20, why).await;
}

#[tokio::test]
async fn cut_just_before_commit_is_retried() {
    let why = "the first COMMIT never reached the server, so the work ran again";
    ten_through_a_fault("before-commit", Trigger::Commit, Action::CutBefore, 20, why).await;
}

#[tokio::test]
async fn a_lost_commit_reply_is_resolved_not_retried() {
    let why = "the server says committed: success, and the work is not run a second time";
    ten_through_a_fault("reply-dropped", Trigger::Commit, Action::DropReply, 10, why).await;
}

#[tokio::test]
async fn a_cut_after_the_reply_is_a_success() {
    let why = "the reply arrived before the cut: nothing to retry";
    ten_through_a_fault("after-reply", Trigger::Commit, Action::CutAfterReply, 10, why).await;
}

/// The closure borrows the caller's locals (no clone, no `Arc`), and runs again on a cut
/// connection with the same borrows; the locals are the caller's again afterwards.
#[tokio::test]
async fn the_closure_borrows_the_callers_locals() {
    let s = setup("borrow").await;
    let keys = vec![3, 5, 8];
    let runs = AtomicU32::new(0);
    s.proxy
        .set(rule(parse("UPDATE"), Action::CutBefore))
        .expect("faults");
    let (keys_ref, runs_ref) = (&keys, &runs);
    let inserted = s
        .pool
        .transaction(patient(), move |tx| {
            runs_ref.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                for key in keys_ref {
                    insert_and_bump(tx, *key).await?;
                }
                Ok::<_, tokio_postgres::Error>(keys_ref.len())
            })
        })
        .await
        .expect("commits");
    s.proxy.clear();
    assert_eq!(inserted, keys.len());
    assert_eq!(
        runs.into_inner(),
        2,
        "cut once, then through, with the same borrows"
    );
    assert_exactly_once(&s, &keys).await;
}

/// Warms one connection, then arms the proxy to drop the next COMMIT's reply and to refuse
/// every new connection (until the test clears it).
async fn lose_the_commit_reply_and_refuse_connections(s: &Setup) {
    drop(s.pool.get().await.expect("warm"));
    s.proxy
        .set(Faults {
            refuse: true,
            ..rule(Trigger::Commit, Action::DropReply)
        })
        .expect("faults");
}

#[tokio::test]
async fn an_unresolvable_commit_is_reported_with_its_xid() {
    let s = setup("unknown").await;
    // Nobody can ask the server what happened: new connections stay refused.
    lose_the_commit_reply_and_refuse_connections(&s).await;
    let err = s
        .pool
        .transaction(TxOptions::new(), |tx| Box::pin(insert_and_bump(tx, 1)))
        .await
        .expect_err("cannot be known");
    let xid = match &err {
        TxError::CommitOutcomeUnknown { xid: Some(xid), .. } => *xid,
        other => panic!("expected CommitOutcomeUnknown with an xid, got {other}"),
    };
    assert!(!err.is_retryable(), "an unknown outcome is never retried blindly");
    s.proxy.clear();
    let status: Option<String> = direct(&s.direct)
        .await
        .query_one("SELECT pg_xact_status($1::text::xid8)", &[&xid.to_string()])
        .await
        .expect("status")
        .get(0);
    assert_eq!(
        status.as_deref(),
        Some("committed"),
        "the xid is the one that committed"
    );
}

#[tokio::test]
async fn a_lost_commit_reply_is_resolved_once_the_server_can_be_reached_again() {
    let s = setup("unreachable-a-while").await;
    // New connections are refused for a while, as while a server (or a pooler in front of
    // it) restarts.
    lose_the_commit_reply_and_refuse_connections(&s).await;
    let runs = Arc::new(AtomicU32::new(0));
    let work = tokio::spawn({
        let (pool, runs) = (s.pool.clone(), Arc::clone(&runs));
        async move {
            pool.transaction(TxOptions::new(), move |tx| {
                runs.fetch_add(1, Ordering::Relaxed);
                Box::pin(insert_and_bump(tx, 7))
            })
            .await
        }
    });
    // Once the question about the COMMIT has found the server unreachable, it comes back.
    let deadline = tokio::time::Instant::now() + BOUND;
    while s.proxy.counters().connections_refused == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection was refused"
        );
        assert!(
            !work.is_finished(),
            "gave up at the first refusal: {:?}",
            work.await
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    s.proxy.clear();
    let key = tokio::time::timeout(BOUND, work)
        .await
        .expect("in time")
        .expect("task")
        .expect("the server said committed");
    assert_eq!(key, 7);
    assert_eq!(runs.load(Ordering::Relaxed), 1, "and the work did not run again");
    assert_exactly_once(&s, &[7]).await;
}

#[tokio::test]
async fn serialization_conflicts_are_retried_until_all_succeed() {
    let s = setup("serializable").await;
    let n = 6;
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let runs = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for key in 0..n as i32 {
        let pool = s.pool.clone();
        let barrier = Arc::clone(&barrier);
        let runs = Arc::clone(&runs);
        tasks.push(tokio::spawn(async move {
            let first = Arc::new(AtomicU32::new(0));
            let options = TxOptions::new().serializable().retry(RetryPolicy {
                max_attempts: 50,
                deadline: BOUND,
                ..RetryPolicy::default()
            });
            pool.transaction(options, move |tx| {
                let barrier = Arc::clone(&barrier);
                let first = Arc::clone(&first);
                runs.fetch_add(1, Ordering::Relaxed);
                Box::pin(async move {
                    let n: i32 = tx.query_one("SELECT n FROM counter", &[]).await?.get(0);
                    // Everyone takes their snapshot before anyone writes: conflicts certain.
                    if first.fetch_add(1, Ordering::Relaxed) == 0 {
                        barrier.wait().await;
                    }
                    tx.execute("INSERT INTO items (key) VALUES ($1)", &[&key]).await?;
                    tx.execute("UPDATE counter SET n = $1", &[&(n + 1)]).await?;
                    Ok::<_, tokio_postgres::Error>(key)
                })
            })
            .await
        }));
    }
    let mut committed = Vec::new();
    for t in tasks {
        committed.push(t.await.expect("task").expect("succeeds after retries"));
    }
    committed.sort_unstable();
    assert!(
        runs.load(Ordering::Relaxed) > n as u32,
        "there were conflicts to retry"
    );
    assert_exactly_once(&s, &committed).await;
}

#[tokio::test]
async fn a_failed_transactions_commit_is_an_error() {
    let s = setup("rolled-back").await;
    let err = s
        .pool
        .transaction(TxOptions::new(), |tx| {
            Box::pin(async move {
                tx.execute("INSERT INTO items (key) VALUES (1)", &[]).await?;
                // An error inside the transaction, swallowed by the closure.
                let _ = tx.execute("SELECT 1/0", &[]).await;
                Ok::<_, tokio_postgres::Error>(())
            })
        })
        .await
        .expect_err("nothing was committed, and that must not look like success");
    assert!(matches!(err, TxError::CommitRolledBack), "{err}");
    assert_exactly_once(&s, &[]).await;
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let s = setup("permanent").await;
    let runs = Arc::new(AtomicU32::new(0));
    let r = Arc::clone(&runs);
    let err = s
        .pool
        .transaction(patient(), move |tx| {
            r.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                tx.execute("INSERT INTO items (key) VALUES (NULL)", &[]).await?;
                Ok::<_, tokio_postgres::Error>(())
            })
        })
        .await
        .expect_err("not-null violation");
    match &err {
        TxError::Closure(e) => assert_eq!(e.code().map(|c| c.code()), Some("23502")),
        other => panic!("{other}"),
    }
    assert_eq!(runs.load(Ordering::Relaxed), 1);
    assert_exactly_once(&s, &[]).await;
}

#[tokio::test]
async fn a_panic_in_the_closure_rolls_back() {
    let s = setup("panic").await;
    let pool = s.pool.clone();
    let task = tokio::spawn(async move {
        pool.transaction(TxOptions::new(), |tx| {
            Box::pin(async move {
                insert_and_bump(tx, 1).await?;
                panic!("the work panics mid-transaction");
            })
        })
        .await
    });
    let joined: Result<Result<(), TxError<tokio_postgres::Error>>, _> = task.await;
    assert!(joined.expect_err("panicked").is_panic());
    // The pool rolled the connection back before anyone else could use it.
    let conn = s.pool.get().await.expect("get");
    assert!(conn.state().is_clean());
    drop(conn);
    assert_exactly_once(&s, &[]).await;
}

#[tokio::test]
async fn a_closure_that_commits_itself_is_refused() {
    let s = setup("self-commit").await;
    let err = s
        .pool
        .transaction(TxOptions::new(), |tx| {
            Box::pin(async move {
                tx.batch_execute("COMMIT").await?;
                Ok::<_, tokio_postgres::Error>(())
            })
        })
        .await
        .expect_err("ended by the closure");
    assert!(matches!(err, TxError::EndedByClosure), "{err}");
}

#[tokio::test]
async fn the_guard_api_commits_rolls_back_and_nests() {
    let s = setup("guard").await;
    let tx = s
        .pool
        .get()
        .await
        .expect("get")
        .begin(&TxOptions::new())
        .await
        .expect("begin");
    assert!(tx.xid().is_some());
    insert_and_bump(&tx, 1).await.expect("work");
    tx.commit().await.expect("commit");

    let tx = s
        .pool
        .get()
        .await
        .expect("get")
        .begin(&TxOptions::new())
        .await
        .expect("begin");
    insert_and_bump(&tx, 2).await.expect("work");
    drop(tx);

    let tx = s
        .pool
        .get()
        .await
        .expect("get")
        .begin(&TxOptions::new())
        .await
        .expect("begin");
    insert_and_bump(&tx, 3).await.expect("outer work");
    let inner: Result<(), tokio_postgres::Error> = tx
        .savepoint(|tx| {
            Box::pin(async move {
                tx.execute("INSERT INTO items (key) VALUES (4)", &[]).await?;
                tx.execute("SELECT 1/0", &[]).await?;
                Ok(())
            })
        })
        .await;
    assert!(inner.is_err());
    let kept: Result<(), tokio_postgres::Error> = tx
        .savepoint(|tx| Box::pin(async move { tx.execute("UPDATE counter SET n = n", &[]).await.map(drop) }))
        .await;
    kept.expect("released savepoint");
    tx.commit()
        .await
        .expect("outer commit survives the inner rollback");
    assert_exactly_once(&s, &[1, 3]).await;
}

#[tokio::test]
async fn an_idempotency_key_settles_what_the_server_cannot() {
    let s = setup("idempotent").await;
    // Without the transaction id the server cannot be asked; the application's key can.
    s.proxy
        .set(rule(Trigger::Commit, Action::DropReply))
        .expect("rule");
    let runs = Arc::new(AtomicU32::new(0));
    let r = Arc::clone(&runs);
    let already_done: holdfast_tx::DoneCheck<'_> = Box::new(|conn| {
        Box::pin(async move {
            let n: i64 = conn
                .query_one("SELECT count(*) FROM items WHERE key = 7", &[])
                .await?
                .get(0);
            Ok(n == 1)
        })
    });
    let key = s
        .pool
        .transaction_idempotent(
            TxOptions::new().without_commit_resolution(),
            already_done,
            move |tx| {
                r.fetch_add(1, Ordering::Relaxed);
                Box::pin(insert_and_bump(tx, 7))
            },
        )
        .await
        .expect("the key shows the work is done");
    assert_eq!((key, runs.load(Ordering::Relaxed)), (7, 1));
    assert_exactly_once(&s, &[7]).await;
}

#[tokio::test]
async fn without_resolution_a_lost_reply_is_unknown_not_retried() {
    let s = setup("no-resolution").await;
    s.proxy
        .set(rule(Trigger::Commit, Action::DropReply))
        .expect("rule");
    let err = s
        .pool
        .transaction(patient().without_commit_resolution(), |tx| {
            Box::pin(insert_and_bump(tx, 1))
        })
        .await
        .expect_err("unknown");
    assert!(
        matches!(err, TxError::CommitOutcomeUnknown { xid: None, .. }),
        "{err}"
    );
    // It did commit; running it again would have doubled it.
    assert_exactly_once(&s, &[1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_begun_while_the_server_is_stopped_commits_once_it_is_back() {
    let cluster =
        holdfast_tempdb::TempCluster::start(holdfast_tempdb::ClusterOptions::default()).expect("own cluster");
    cluster
        .psql("postgres", "CREATE TABLE items (key int NOT NULL)")
        .expect("schema");
    let connect = ConnectConfig::from_url(&cluster.url())
        .expect("url")
        .application_name("hf-tx-stopped");
    // The defaults a user gets: a 5 s budget, a 30 s pool_timeout.
    let pool = Pool::new(PoolConfig::new(connect).pool_size(2)).expect("pool");
    drop(pool.get().await.expect("warm"));
    tokio::task::block_in_place(|| cluster.stop()).expect("stop");

    let runs = Arc::new(AtomicU32::new(0));
    let work = tokio::spawn({
        let (pool, runs) = (pool.clone(), Arc::clone(&runs));
        async move {
            pool.transaction(TxOptions::new(), move |tx| {
                runs.fetch_add(1, Ordering::Relaxed);
                Box::pin(async move { tx.execute("INSERT INTO items VALUES (1)", &[]).await })
            })
            .await
        }
    });
    // It has begun: it found the server gone and waits for it within its budget.
    holdfast_testkit::eventually("the transaction waits on the stopped server", || async {
        pool.status().database_down && !work.is_finished()
    })
    .await;
    tokio::task::block_in_place(|| cluster.start_again()).expect("start");
    let inserted = work
        .await
        .expect("task")
        .expect("committed once the server was back, within the budget");
    assert_eq!(inserted, 1);
    let conn = pool.get().await.expect("conn");
    let rows: i64 = conn
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 1, "exactly one row");
    drop(conn);
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_statement_a_migration_made_stale_runs_the_transaction_again() {
    let db = cluster().create_database().expect("database");
    let pool = Pool::new(
        PoolConfig::new(ConnectConfig::from_url(&db.url).expect("url"))
            .pool_size(1)
            .pool_timeout(Duration::from_secs(30)),
    )
    .expect("pool");
    pool.execute("CREATE TABLE t (a int)", &[]).await.expect("create");
    pool.execute("INSERT INTO t VALUES (1)", &[]).await.expect("row");
    let attempts = Arc::new(AtomicU32::new(0));
    let columns = |pool: Pool, attempts: Arc<AtomicU32>| async move {
        pool.transaction(TxOptions::new(), move |tx| {
            let attempts = Arc::clone(&attempts);
            Box::pin(async move {
                attempts.fetch_add(1, Ordering::Relaxed);
                // Prepared once on the pool's one connection, reused by the next transaction.
                let rows = tx.connection().query_cached("SELECT * FROM t", &[]).await?;
                Ok::<_, tokio_postgres::Error>(rows[0].len())
            })
        })
        .await
    };
    assert_eq!(
        columns(pool.clone(), Arc::clone(&attempts)).await.expect("first"),
        1
    );
    direct(&db.url)
        .await
        .batch_execute("ALTER TABLE t ADD COLUMN b int")
        .await
        .expect("migrate");
    attempts.store(0, Ordering::Relaxed);
    let after = columns(pool.clone(), Arc::clone(&attempts))
        .await
        .expect("the stale statement costs one more attempt, not an error");
    assert_eq!(after, 2, "the new column is seen");
    assert_eq!(attempts.load(Ordering::Relaxed), 2, "run again once");
}
