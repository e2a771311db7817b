//! What deploys do to a pool, against a real server with password authentication: a rotated
//! password through a credentials provider and through a password file, and the
//! `after_connect` hook on every new connection.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_pool::{ConnectConfig, ConnectError, Credentials, Pool, PoolConfig, PoolError};
use holdfast_tempdb::{ClusterOptions, TempCluster};
use support::{app_name, eventually, BOUND};

/// A cluster where `rotating` logs in with a SCRAM password (`first`).
fn scram_cluster() -> TempCluster {
    let cluster = TempCluster::start(
        ClusterOptions::default().hba_line("host all rotating 127.0.0.1/32 scram-sha-256"),
    )
    .expect("cluster");
    cluster
        .psql(
            "postgres",
            "SET password_encryption = 'scram-sha-256'; CREATE ROLE rotating LOGIN PASSWORD 'first'; \
             CREATE TABLE t (n int); GRANT ALL ON t TO rotating",
        )
        .expect("role");
    cluster
}

fn connect_config(cluster: &TempCluster) -> ConnectConfig {
    ConnectConfig::from_url(&format!(
        "postgres://rotating@127.0.0.1:{}/postgres",
        cluster.port()
    ))
    .expect("url")
    .application_name(&app_name("deploy"))
}

/// 16 callers insert until told to stop; returns (successes, errors).
fn callers(pool: &Pool, stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<(u64, Vec<String>)>> {
    (0..16)
        .map(|_| {
            let (pool, stop) = (pool.clone(), Arc::clone(stop));
            tokio::spawn(async move {
                let (mut ok, mut errors) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match pool.execute("INSERT INTO t VALUES (1)", &[]).await {
                        Ok(_) => ok += 1,
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                (ok, errors)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_rotates_the_password_under_load_without_an_error() {
    let cluster = scram_cluster();
    let current = Arc::new(Mutex::new("first".to_string()));
    let asked = Arc::new(AtomicU64::new(0));
    let config = {
        let (current, asked) = (Arc::clone(&current), Arc::clone(&asked));
        connect_config(&cluster).credentials(move || {
            let password = current.lock().expect("password").clone();
            asked.fetch_add(1, Ordering::Relaxed);
            async move { Ok(Credentials::password(password)) }
        })
    };
    // Connections are recycled quickly, so new ones are made while the callers run.
    let pool = Pool::new(
        PoolConfig::new(config)
            .pool_size(4)
            .max_overflow(4)
            .recycle(Some(Duration::from_millis(200)))
            .pool_timeout(BOUND),
    )
    .expect("pool");
    let stop = Arc::new(AtomicBool::new(false));
    let running = callers(&pool, &stop);
    eventually("connections made with the first password", || async {
        asked.load(Ordering::Relaxed) >= 4
    })
    .await;
    // The rotation: the server first, then what the provider hands out.
    cluster
        .psql("postgres", "ALTER ROLE rotating PASSWORD 'second'")
        .expect("rotate");
    *current.lock().expect("password") = "second".into();
    let rotated_at = asked.load(Ordering::Relaxed);
    eventually("new connections made with the second password", || async {
        asked.load(Ordering::Relaxed) >= rotated_at + 8
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for caller in running {
        errors.extend(caller.await.expect("caller").1);
    }
    assert!(errors.is_empty(), "{} errors: {:?}", errors.len(), errors.first());
    // The old password is refused now; the provider's answer is what connects.
    let stale = connect_config(&cluster).password("first");
    let refused = holdfast_pool::connect(&stale).await.expect_err("old password");
    assert_eq!(refused.sqlstate().map(|s| s.code()), Some("28P01"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_is_the_cause_callers_are_told() {
    let cluster = scram_cluster();
    let config = connect_config(&cluster).credentials(|| async { Err("the token service is down".into()) });
    let pool = Pool::new(PoolConfig::new(config).pool_timeout(Duration::from_millis(500))).expect("pool");
    match pool.get().await {
        Err(PoolError::Unavailable { cause, .. }) => {
            assert!(matches!(*cause, ConnectError::Credentials { .. }), "{cause}");
            assert!(cause.to_string().contains("the token service is down"), "{cause}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_password_file_is_read_again_without_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    let cluster = scram_cluster();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("pgpass");
    let write = |password: &str| {
        std::fs::write(
            &path,
            format!("127.0.0.1:{}:*:rotating:{password}\n", cluster.port()),
        )
        .expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    };
    write("first");
    let config = connect_config(&cluster).passfile(&path).expect("passfile");
    holdfast_pool::connect(&config).await.expect("first password");
    cluster
        .psql("postgres", "ALTER ROLE rotating PASSWORD 'second'")
        .expect("rotate");
    let refused = holdfast_pool::connect(&config)
        .await
        .expect_err("the file still says first");
    assert_eq!(refused.sqlstate().map(|s| s.code()), Some("28P01"), "{refused}");
    write("second");
    holdfast_pool::connect(&config)
        .await
        .expect("the rewritten file is read again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_connect_runs_on_every_new_connection_and_a_failure_is_counted() {
    let cluster = holdfast_testkit::cluster();
    let ran = Arc::new(AtomicU64::new(0));
    let config = {
        let ran = Arc::clone(&ran);
        support::config_for(cluster, "hook")
            .pool_size(3)
            .after_connect(move |conn| {
                let ran = Arc::clone(&ran);
                Box::pin(async move {
                    conn.batch_execute("SET search_path TO hooked, public").await?;
                    ran.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                })
            })
    };
    let pool = Pool::new(config).expect("pool");
    let held: Vec<_> = futures_util::future::join_all((0..3).map(|_| pool.get())).await;
    for conn in &held {
        let conn = conn.as_ref().expect("get");
        let row = conn.query_one("SHOW search_path", &[]).await.expect("show");
        assert_eq!(row.get::<_, String>(0), "hooked, public");
    }
    assert_eq!(ran.load(Ordering::Relaxed), 3, "once per new connection");
    drop(held);

    // A hook that fails: no connection is handed out, and callers are told why.
    let failing = support::config_for(cluster, "hook-fails")
        .pool_timeout(Duration::from_millis(500))
        .after_connect(|conn| {
            Box::pin(async move {
                conn.batch_execute("SET ROLE no_such_role").await?;
                Ok(())
            })
        });
    let pool = Pool::new(failing).expect("pool");
    match pool.get().await {
        Err(PoolError::Unavailable { cause, .. }) => {
            assert!(matches!(*cause, ConnectError::AfterConnect { .. }), "{cause}");
            assert!(cause.to_string().contains("no_such_role"), "{cause}");
        }
        other => panic!("{other:?}"),
    }
}
