//! Promise 5 and disconnect generations against real faults: backends terminated, the server
//! restarted, the database stopped and started again (callers wait it out within their
//! deadline), load shed past `max_waiting`.

mod support;

use std::time::Duration;

use holdfast_pool::{ConnectError, Pool, PoolError, PrePing, UnansweredTimeout};
use holdfast_tempdb::{ClusterOptions, StopMode, TempCluster};
use holdfast_testkit::cluster;
use support::{assert_no_idle_in_transaction, config_for, config_for_url, eventually, BOUND};

/// Opens `n` connections at once and returns them all to the idle set.
async fn warm(pool: &Pool, n: usize) {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(pool.get().await.expect("warm up"));
    }
    drop(held);
    assert_eq!(pool.status().idle, n);
}

/// The proxy swallows every byte both ways; connects through it hang.
fn swallow_everything(proxy: &holdfast_faults::ProxyHandle) {
    proxy
        .update(|f| {
            f.upstream.blackhole = true;
            f.downstream.blackhole = true;
        })
        .expect("blackhole");
}

/// A `get()` on its own task, the connection dropped once it comes.
fn get_in_background(pool: &Pool) -> tokio::task::JoinHandle<Result<(), PoolError>> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.get().await.map(drop) })
}

/// From the next request starting with `prefix` on, the proxy swallows everything that
/// connection's client sends, its close included (a request lost on a hung network); once.
fn swallow_from(proxy: &holdfast_faults::ProxyHandle, prefix: &str) {
    proxy
        .set(holdfast_faults::Faults {
            rule: Some(holdfast_faults::MessageRule {
                trigger: holdfast_faults::Trigger::Query {
                    prefix: prefix.into(),
                },
                action: holdfast_faults::Action::SwallowFrom,
                once: true,
            }),
            ..holdfast_faults::Faults::none()
        })
        .expect("rule");
}

/// Waits until backend `pid` is gone from `pg_stat_activity`.
async fn backend_gone(admin: &holdfast_pool::Connection, pid: i32) {
    eventually("the backend is gone", || async {
        admin
            .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .await
            .expect("pg_stat_activity")
            .is_none()
    })
    .await;
}

/// Whether advisory lock `key` can be taken (nobody holds it).
async fn lock_is_free(admin: &holdfast_pool::Connection, key: i64) -> bool {
    admin
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
        .expect("try lock")
        .get(0)
}

/// Runs blocking cluster control (stop, start) without stalling the runtime.
async fn control(cluster: &TempCluster, f: impl FnOnce(&TempCluster) -> holdfast_tempdb::Result<()>) {
    tokio::task::block_in_place(|| f(cluster)).expect("cluster control");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_every_backend_costs_callers_nothing() {
    let cluster = cluster();
    let pool = Pool::new(config_for(cluster, "terminate-all").pool_size(5)).expect("pool");
    warm(&pool, 5).await;
    let killed = support::terminate_pool_backends(&pool).await;
    assert_eq!(killed, 5);
    eventually("terminated backends gone", || async {
        support::server_sessions(&pool).await.is_empty()
    })
    .await;

    let mut errors = 0;
    for _ in 0..200 {
        match pool.get().await {
            Ok(conn) => {
                if conn.query_one("SELECT 1", &[]).await.is_err() {
                    errors += 1;
                }
            }
            Err(_) => errors += 1,
        }
    }
    assert_eq!(errors, 0, "no caller saw the terminated connections");
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_costs_callers_nothing_once_it_is_back() {
    let cluster = TempCluster::start(ClusterOptions::default()).expect("own cluster");
    let pool = Pool::new(config_for_url(&cluster.url(), "restart").pool_size(5)).expect("pool");
    warm(&pool, 5).await;
    control(&cluster, |c| c.restart(StopMode::Fast)).await;

    let mut errors = Vec::new();
    for _ in 0..100 {
        match pool.get().await {
            Ok(conn) => {
                if let Err(e) = conn.query_one("SELECT 1", &[]).await {
                    errors.push(e.to_string());
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    assert!(
        errors.is_empty(),
        "caller-visible errors after the restart: {errors:?}"
    );
    assert_no_idle_in_transaction(&pool).await;
}

/// Runs `get()` + `SELECT 1` in `n` tasks at once; returns each one's outcome.
fn many_selects(pool: &Pool, n: usize) -> tokio::task::JoinSet<Result<(), String>> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let pool = pool.clone();
        set.spawn(async move {
            let conn = pool.get().await.map_err(|e| e.to_string())?;
            conn.query_one("SELECT 1", &[])
                .await
                .map_err(|e| holdfast_pool::pg_error_text(&e))?;
            Ok(())
        });
    }
    set
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_wait_out_a_stopped_database_in_order_and_are_served_when_it_is_back() {
    let cluster = TempCluster::start(ClusterOptions::default()).expect("own cluster");
    // The defaults a user gets: pool_timeout 30 s, longer than the outage below.
    let connect = holdfast_pool::ConnectConfig::from_url(&cluster.url())
        .expect("url")
        .application_name("holdfast-test-outage");
    let pool = Pool::new(holdfast_pool::PoolConfig::new(connect).pool_size(5)).expect("pool");
    warm(&pool, 5).await;
    control(&cluster, |c| c.stop()).await;

    let mut callers = many_selects(&pool, 200);
    // Every caller is queued (none failed at the first refused connect), and the pool
    // knows the database is down.
    eventually("200 callers waiting on a down database", || async {
        let s = pool.status();
        s.waiting == 200 && s.database_down
    })
    .await;
    control(&cluster, |c| c.start_again()).await;

    let mut errors = Vec::new();
    while let Some(outcome) = callers.join_next().await {
        if let Err(e) = outcome.expect("caller task") {
            errors.push(e);
        }
    }
    assert!(errors.is_empty(), "callers saw the outage: {errors:?}");
    assert!(!pool.status().database_down);
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_deadline_fails_at_the_deadline_with_the_cause() {
    let cluster = TempCluster::start(ClusterOptions::default()).expect("own cluster");
    let config = config_for_url(&cluster.url(), "down")
        .pool_size(3)
        .min_idle(2)
        .reconnect_backoff_max(Duration::from_millis(200));
    let pool = Pool::new(config).expect("pool");
    eventually("warm-up to min_idle", || async { pool.status().idle == 2 }).await;
    control(&cluster, |c| c.stop()).await;

    let err = pool
        .get_timeout(Duration::from_millis(500))
        .await
        .expect_err("database is down");
    match &err {
        PoolError::Unavailable { cause, .. } => match cause.as_ref() {
            ConnectError::Io { error, .. } => {
                assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused, "{err}")
            }
            other => panic!("expected connection refused, got {other}"),
        },
        other => panic!("expected Unavailable with the cause, got {other}"),
    }
    assert!(err.to_string().contains("database unavailable"), "{err}");
    assert!(pool.status().database_down);

    // Nobody asks; the pool reconnects by itself (min_idle) once the server is back.
    control(&cluster, |c| c.start_again()).await;
    eventually("reconnected without a caller", || async {
        pool.run_maintenance().await;
        let s = pool.status();
        s.idle == 2 && !s.database_down
    })
    .await;
    let conn = pool.get().await.expect("serves again");
    conn.query_one("SELECT 1", &[]).await.expect("query");
    drop(conn);
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_waiting_a_new_caller_is_shed_at_once() {
    let config = config_for(cluster(), "shed").pool_size(2).max_waiting(3);
    let pool = Pool::new(config).expect("pool");
    // Every connection the pool may open (pool_size + max_overflow) is held.
    let mut held = Vec::new();
    while held.len() < pool.status().max {
        held.push(pool.get().await.expect("a connection"));
    }
    let mut waiting = many_selects(&pool, 3);
    eventually("three callers waiting", || async { pool.status().waiting == 3 }).await;
    let err = tokio::time::timeout(BOUND, pool.get())
        .await
        .expect("answered at once, not at pool_timeout")
        .expect_err("shed");
    assert!(
        matches!(err, PoolError::Overloaded { waiting: 3, .. }),
        "expected Overloaded, got {err}"
    );
    assert!(err.to_string().contains("DB_MAX_WAITING"), "{err}");
    drop(held);
    while let Some(outcome) = waiting.join_next().await {
        outcome
            .expect("caller task")
            .expect("the waiting callers are served");
    }
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn authentication_failure_fails_fast_without_secrets() {
    let cluster = TempCluster::start(
        ClusterOptions::default().hba_line("host all scram_user 127.0.0.1/32 scram-sha-256"),
    )
    .expect("cluster");
    cluster
        .psql(
            "postgres",
            "SET password_encryption = 'scram-sha-256'; CREATE ROLE scram_user LOGIN PASSWORD 'right'",
        )
        .expect("role");
    let url = format!(
        "postgres://scram_user:wrong-pw-9f3k@127.0.0.1:{}/postgres",
        cluster.port()
    );
    let config = config_for_url(&url, "auth").pool_timeout(Duration::from_secs(60));
    let pool = Pool::new(config).expect("pool");
    let err = tokio::time::timeout(BOUND, pool.get())
        .await
        .expect("fast")
        .expect_err("wrong password");
    assert_eq!(
        err.connect_error().and_then(|e| e.sqlstate()).map(|s| s.code()),
        Some("28P01"),
        "{err}"
    );
    let shown = format!("{err} {err:?} {:?} {:?}", pool, pool.config());
    assert!(!shown.contains("wrong-pw-9f3k"), "secret leaked: {shown}");
    // The callers after it are told at once too, while no new attempt is due (the pool's
    // own wait is a minute: only an answer at once comes back within the bound).
    for _ in 0..3 {
        let again = tokio::time::timeout(Duration::from_secs(10), pool.get())
            .await
            .expect("told at once, not after a wait")
            .expect_err("still the wrong password");
        assert_eq!(
            again.connect_error().and_then(|e| e.sqlstate()).map(|s| s.code()),
            Some("28P01"),
            "{again}"
        );
    }
}

#[tokio::test]
async fn connections_older_than_a_disconnect_are_verified_before_use() {
    let cluster = cluster();
    // Never pre-ping on its own: any ping seen below comes from the generation check.
    let config = config_for(cluster, "generation")
        .pool_size(2)
        .pre_ping(PrePing::Never);
    let pool = Pool::new(config).expect("pool");
    let a = pool.get().await.expect("a");
    let b = pool.get().await.expect("b");
    let b_pid = b.backend_pid();
    let answered = b.state().snapshot().ready_for_query;
    drop(b);
    // `a` sees its backend terminated while in use: a disconnect-class event.
    let admin = support::admin(&pool).await;
    let pid = a.backend_pid().expect("pid");
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("terminate");
    tokio::time::timeout(BOUND, a.state().wait_for(|s| s.liveness().is_dead()))
        .await
        .expect("noticed");
    drop(a);

    // `b` predates that event, so it is pinged before it is handed out again.
    let b = pool.get().await.expect("b again");
    assert_eq!(b.backend_pid(), b_pid);
    assert_eq!(
        b.state().snapshot().ready_for_query,
        answered + 1,
        "verified with one ping"
    );
    drop(b);
    let b = pool.get().await.expect("b, current");
    assert_eq!(
        b.state().snapshot().ready_for_query,
        answered + 1,
        "no ping once verified"
    );
    drop(b);
    pool.invalidate_all();
    let b = pool.get().await.expect("b after invalidate_all");
    assert_eq!(
        b.state().snapshot().ready_for_query,
        answered + 2,
        "one ping after invalidate_all"
    );
    support::assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_sent_into_a_hung_network_do_not_hold_the_pool_once_it_heals() {
    let support::Proxied { proxy, url, .. } = support::behind_a_proxy().await;
    // Connects into the hole hang until connect_timeout, far beyond the pool timeout.
    swallow_everything(&proxy);
    let mut config = config_for_url(&url, "hung-connect")
        .pool_size(2)
        .max_connecting(1)
        .pool_timeout(Duration::from_secs(30));
    config.connect = config.connect.connect_timeout(Duration::from_secs(120));
    let pool = Pool::new(config).expect("pool");
    let waiter = get_in_background(&pool);
    eventually("a connect is under way through the proxy", || async {
        proxy.counters().connections_opened >= 1
    })
    .await;
    // The network heals; the connect already sent stays hung (its bytes were swallowed).
    proxy.clear();
    // Served by a fresh attempt, not left waiting for the hung one's connect_timeout.
    let served = waiter.await.expect("task");
    assert!(served.is_ok(), "{served:?}");
    assert!(proxy.counters().connections_opened >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_server_never_gets_ends_in_an_error_instead_of_a_wait_forever() {
    let support::Proxied { proxy, url, .. } = support::behind_a_proxy().await;
    let mut config = config_for_url(&url, "unanswered")
        .pool_size(2)
        .unanswered_timeout(UnansweredTimeout::After(Duration::from_millis(800)));
    config.connect = config.connect.statement_timeout(Some(Duration::from_millis(300)));
    let pool = Pool::new(config).expect("pool");
    let stuck = pool.get().await.expect("first connection");
    let quiet = pool.get().await.expect("second connection");
    // Simple queries: `query_one` would also close its prepared statement afterwards, a
    // request that could reach the proxy only once the fault below is on.
    stuck.batch_execute("SELECT 1").await.expect("through the proxy");
    quiet.batch_execute("SELECT 1").await.expect("through the proxy");

    // The proxy swallows what clients send (its kernel still acknowledges the bytes, so TCP
    // sees nothing wrong and the server never sees the statement: no statement_timeout).
    proxy.update(|f| f.upstream.blackhole = true).expect("blackhole");
    let answer = tokio::time::timeout(BOUND, stuck.query_one("SELECT 2", &[]))
        .await
        .expect("the swallowed request ends instead of waiting forever");
    let error = answer.expect_err("no answer can have come");
    assert!(error.is_closed(), "{error}");
    assert!(stuck.is_closed());
    drop(stuck);

    // A connection with nothing in flight is not closed for its silence.
    proxy.clear();
    let row = quiet
        .query_one("SELECT 3", &[])
        .await
        .expect("the quiet one still works");
    assert_eq!(row.get::<_, i32>(0), 3);
    drop(quiet);
    let fresh = pool.get().await.expect("served after the fault");
    fresh.query_one("SELECT 4", &[]).await.expect("fresh");
    drop(fresh);

    // The same for a statement on a connection the pool shares (`Pool::query`).
    pool.query("SELECT 5", &[]).await.expect("shared, before");
    proxy.update(|f| f.upstream.blackhole = true).expect("blackhole");
    let answer = tokio::time::timeout(BOUND, pool.query("SELECT 6", &[]))
        .await
        .expect("the swallowed shared statement ends instead of waiting forever");
    assert!(answer.is_err(), "{answer:?}");
    proxy.clear();
    pool.query("SELECT 7", &[]).await.expect("shared, after");
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connects_give_up_once_a_newer_one_gets_through() {
    let support::Proxied { proxy, url, .. } = support::behind_a_proxy().await;
    let mut config = config_for_url(&url, "stalled-give-up")
        .pool_size(8)
        .max_overflow(0)
        .max_connecting(1);
    // Hung connects would otherwise hold their places for two minutes.
    config.connect = config.connect.connect_timeout(Duration::from_secs(120));
    let pool = Pool::new(config).expect("pool");
    let held = pool.get().await.expect("first connection");
    swallow_everything(&proxy);
    let waiter = get_in_background(&pool);
    // A connect goes into the hole, stalls, and a second follows it there.
    eventually("two connects sent into the hole", || async {
        proxy.counters().connections_opened >= 3
    })
    .await;
    proxy.clear();
    waiter
        .await
        .expect("task")
        .expect("served once the network heals");
    // The attempts still hanging were outrun by the one that got through: they give up
    // instead of holding their places until connect_timeout.
    eventually("stalled connects given up", || async {
        pool.status().opening == 0
    })
    .await;
    assert_eq!(pool.status().open, 2, "{}", pool.status());
    drop(held);
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_declared_repeatable_survive_every_backend_being_terminated() {
    let pool = Pool::new(config_for(cluster(), "read-terminate").pool_size(5)).expect("pool");
    warm(&pool, 5).await;
    let mut readers = tokio::task::JoinSet::new();
    for i in 0..200i32 {
        let pool = pool.clone();
        readers.spawn(async move {
            // Long enough that the terminations below land while statements are running.
            let rows = pool
                .read("SELECT $1::int4 + 1 FROM pg_sleep(0.2)", &[&i])
                .await
                .map_err(|e| e.to_string())?;
            let got: i32 = rows[0].get(0);
            if got == i + 1 {
                Ok(())
            } else {
                Err(format!("read {i} answered {got}"))
            }
        });
    }
    eventually("reads running on the server", || async {
        support::server_sessions(&pool)
            .await
            .iter()
            .any(|(_, state)| state.as_deref() == Some("active"))
    })
    .await;
    let killed = support::terminate_pool_backends(&pool).await;
    assert!(killed > 0, "backends were running the reads");
    let mut errors = Vec::new();
    while let Some(outcome) = readers.join_next().await {
        if let Err(e) = outcome.expect("reader task") {
            errors.push(e);
        }
    }
    assert!(errors.is_empty(), "{} reads failed: {errors:?}", errors.len());
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_with_a_side_effect_through_query_is_not_run_again_after_a_cut() {
    let pool = Pool::new(config_for(cluster(), "query-once").pool_size(2)).expect("pool");
    let sequence = format!("hf_query_once_{}", std::process::id());
    pool.execute(&format!("CREATE SEQUENCE {sequence}"), &[])
        .await
        .expect("sequence");
    let call = tokio::spawn({
        let (pool, sql) = (
            pool.clone(),
            format!("SELECT nextval('{sequence}') FROM pg_sleep(30)"),
        );
        async move { pool.query(&sql, &[]).await }
    });
    eventually("the statement is running", || async {
        support::server_sessions(&pool)
            .await
            .iter()
            .any(|(_, state)| state.as_deref() == Some("active"))
    })
    .await;
    support::terminate_pool_backends(&pool).await;
    let err = call.await.expect("task").expect_err("its connection was cut");
    assert_eq!(err.code().map(|c| c.code()), Some("57P01"), "{err}");
    let conn = pool.get().await.expect("conn");
    let last: i64 = conn
        .query_one(&format!("SELECT last_value FROM {sequence}"), &[])
        .await
        .expect("sequence")
        .get(0);
    assert_eq!(last, 1, "nextval ran once: the statement was not sent again");
    conn.execute(&format!("DROP SEQUENCE {sequence}"), &[])
        .await
        .expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_request_is_found_by_asking_the_server_while_a_long_statement_is_left_alone() {
    let support::Proxied { proxy, url, db } = support::behind_a_proxy().await;
    // No statement timeout and the default unanswered bound: only the probe can find the
    // lost request below.
    let config = config_for_url(&url, "probe")
        .pool_size(2)
        .probe_after(Some(Duration::from_millis(300)));
    let pool = Pool::new(config).expect("pool");

    // A long statement on a healthy connection: the server says it is running it.
    let slow = pool.get().await.expect("slow");
    let row = slow
        .query_one("SELECT 7 FROM pg_sleep(2)", &[])
        .await
        .expect("left alone: probed as active, answered in its time");
    assert_eq!(row.get::<_, i32>(0), 7);
    drop(slow);

    // A request lost on its way on one connection; every other connection works.
    let lost = pool.get().await.expect("lost");
    let pid = lost.backend_pid().expect("pid");
    lost.batch_execute("SELECT 1").await.expect("through the proxy");
    swallow_from(&proxy, "SELECT 'lost'");
    let answer = tokio::time::timeout(BOUND, lost.batch_execute("SELECT 'lost'"))
        .await
        .expect("the lost request ends instead of waiting for the unanswered bound");
    let error = answer.expect_err("no answer can have come");
    assert!(error.is_closed(), "{}", holdfast_pool::pg_error_text(&error));
    drop(lost);

    // Its backend, idle and abandoned, was terminated: nothing of it outlives the client.
    let admin = holdfast_testkit::connect_to(&cluster().url_for(&db.name)).await;
    backend_gone(&admin, pid).await;
    let conn = pool.get().await.expect("served after");
    conn.batch_execute("SELECT 1").await.expect("works");
    drop(conn);
    assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_reset_hangs_is_terminated_and_its_locks_freed() {
    let support::Proxied { proxy, url, db } = support::behind_a_proxy().await;
    // No probe and no silence bound: only the reset's own bound ends the wait below.
    let config = config_for_url(&url, "abandoned")
        .pool_size(2)
        .probe_after(None)
        .unanswered_timeout(UnansweredTimeout::Off)
        .reset_timeout(Duration::from_millis(300));
    let pool = Pool::new(config).expect("pool");
    let conn = pool.get().await.expect("get");
    let pid = conn.backend_pid().expect("pid");
    conn.batch_execute("BEGIN; SELECT pg_advisory_xact_lock(4242)")
        .await
        .expect("a transaction holding a lock");
    // The network swallows the rollback the pool sends when the connection comes back, and
    // (as a hung network does) the close after it: the server never hears from the client.
    swallow_from(&proxy, "ROLLBACK");
    drop(conn);

    // The reset gives up after its bound; the session it leaves behind is ended from the
    // pool's own connection, and the lock is free again.
    let admin = holdfast_testkit::connect_to(&cluster().url_for(&db.name)).await;
    backend_gone(&admin, pid).await;
    assert!(
        lock_is_free(&admin, 4242).await,
        "the abandoned transaction's lock is released"
    );
    assert_eq!(pool.status().open, 0, "the connection was closed, not kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_closed_for_its_silence_is_terminated() {
    let support::Proxied { proxy, url, db } = support::behind_a_proxy().await;
    let mut config = config_for_url(&url, "silenced")
        .pool_size(2)
        .probe_after(None)
        .unanswered_timeout(UnansweredTimeout::After(Duration::from_millis(800)));
    config.connect = config.connect.statement_timeout(Some(Duration::from_millis(300)));
    let pool = Pool::new(config).expect("pool");
    let conn = pool.get().await.expect("get");
    let pid = conn.backend_pid().expect("pid");
    conn.batch_execute("BEGIN; SELECT pg_advisory_xact_lock(4343)")
        .await
        .expect("a transaction holding a lock");
    swallow_from(&proxy, "SELECT 'lost'");
    let answer = tokio::time::timeout(BOUND, conn.batch_execute("SELECT 'lost'"))
        .await
        .expect("the silence bound ends the wait");
    assert!(answer.is_err(), "no answer can have come");
    drop(conn);
    let admin = holdfast_testkit::connect_to(&cluster().url_for(&db.name)).await;
    backend_gone(&admin, pid).await;
    assert!(
        lock_is_free(&admin, 4343).await,
        "the silenced transaction's lock is released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_get_never_waits() {
    let pool = Pool::new(config_for(cluster(), "try-get").pool_size(1)).expect("pool");
    let held = match pool.try_get().await {
        Err(PoolError::Timeout { waited, .. }) => {
            assert_eq!(waited, Duration::ZERO);
            // Nothing was idle; a connection was opened for the next caller.
            eventually("a connection opened for later", || async {
                pool.status().idle == 1
            })
            .await;
            pool.try_get().await.expect("now idle")
        }
        other => panic!("an empty pool answers try_get at once with a timeout: {other:?}"),
    };
    match pool.try_get().await {
        Err(PoolError::Timeout { status, .. }) => assert_eq!(status.in_use, 1),
        other => panic!("every connection in use: {other:?}"),
    }
    drop(held);
    pool.try_get().await.expect("returned connection");
}
