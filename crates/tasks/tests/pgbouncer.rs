//! Workers through a real PgBouncer in transaction mode: every control statement works there
//! (no named statement outlives a transaction), LISTEN is not attempted through it (polling
//! instead), a direct LISTEN connection still wakes workers at once, and asking for LISTEN
//! through the pooler is refused with a clear error.

mod support;

use std::sync::Arc;
use std::time::Duration;

use holdfast_pool::{ConnectConfig, Pool, PoolConfig, Pooler};
use holdfast_tasks::{Listen, NewTask, Queue, TaskError, TaskState, Worker, WorkerPools};
use holdfast_tempdb::{PgBouncerOptions, TempPgBouncer};
use holdfast_testkit::cluster;
use serde_json::json;
use support::{eventually, fast, settled, BOUND};
use tokio_postgres::types::Type;

/// A database with the queue migrated, a PgBouncer in front of it, and a function making
/// pools through PgBouncer.
async fn setup(schema: &str) -> (String, TempPgBouncer, Queue, impl Fn(&str, usize) -> Pool) {
    let db = cluster().create_database().expect("database");
    cluster()
        .psql(
            &db.name,
            "CREATE TABLE effects (task_id bigint NOT NULL, attempt int NOT NULL)",
        )
        .expect("tables");
    let bouncer =
        TempPgBouncer::start(cluster(), PgBouncerOptions::default().default_pool_size(4)).expect("pgbouncer");
    let url = bouncer.url_for(&db.name);
    let make = move |app: &str, size: usize| {
        let connect = ConnectConfig::from_url(&url)
            .expect("url")
            .application_name(app)
            .pooler(Pooler::Transaction);
        Pool::new(
            PoolConfig::new(connect)
                .pool_size(size)
                .pool_timeout(Duration::from_secs(10)),
        )
        .expect("pool")
    };
    let queue = Queue::new(schema).expect("queue");
    queue
        .migrate(&make("hf-migrate", 1))
        .await
        .expect("migrate through PgBouncer");
    (db.url, bouncer, queue, make)
}

fn record_effect() -> impl Fn(
    holdfast_tasks::TaskContext,
) -> futures_util::future::BoxFuture<'static, Result<(), holdfast_tasks::TaskFailure>>
       + Send
       + Sync
       + 'static {
    |ctx| {
        Box::pin(async move {
            let conn = ctx.pool.get().await?;
            conn.execute_typed_cached(
                "INSERT INTO effects (task_id, attempt) VALUES ($1, $2)",
                &[(&ctx.id, Type::INT8), (&ctx.attempt, Type::INT4)],
            )
            .await?;
            Ok(())
        })
    }
}

#[tokio::test]
async fn two_workers_run_every_task_once_through_pgbouncer_by_polling() {
    let (direct_url, _bouncer, queue, make) = setup("t_bouncer").await;
    let admin = make("hf-admin", 2);
    let conn = admin.get().await.expect("get");
    for i in 0..40 {
        queue
            .enqueue(&conn, &NewTask::new("effect", json!({ "i": i })))
            .await
            .expect("enqueue through PgBouncer");
    }
    drop(conn);
    let workers: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            Worker::new(
                queue.clone(),
                WorkerPools {
                    control: make(&format!("hf-ctl-{name}"), 2),
                    work: make(&format!("hf-work-{name}"), 2),
                },
                fast(3),
            )
            .handle("effect", record_effect())
            .spawn()
            .expect("worker")
        })
        .collect();
    let counts = settled(&queue, &admin, 40).await;
    assert_eq!(counts[&TaskState::Succeeded], 40, "{counts:?}");
    let effects = cluster()
        .psql(
            &db_name(&direct_url),
            "SELECT count(*), count(DISTINCT task_id) FROM effects",
        )
        .expect("effects");
    assert_eq!(effects, "40|40", "each task ran once");
    let listening = cluster()
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND query LIKE 'LISTEN %'",
                db_name(&direct_url)
            ),
        )
        .expect("activity");
    assert_eq!(listening, "0", "no LISTEN was sent through the pooler");
    for worker in workers {
        worker.shutdown().await;
    }
}

#[tokio::test]
async fn a_direct_listen_connection_wakes_workers_behind_a_pooler() {
    let (direct_url, _bouncer, queue, make) = setup("t_bouncer_listen").await;
    let mut config = fast(1);
    config = config.poll_interval(Duration::from_secs(3600));
    config = config.listen(Listen::Direct(Box::new(
        ConnectConfig::from_url(&direct_url).expect("url"),
    )));
    let ran = Arc::new(tokio::sync::Notify::new());
    let r = Arc::clone(&ran);
    let worker = Worker::new(
        queue.clone(),
        WorkerPools {
            control: make("hf-ctl", 2),
            work: make("hf-work", 2),
        },
        config,
    )
    .handle("ping", move |_| {
        let r = Arc::clone(&r);
        Box::pin(async move {
            r.notify_one();
            Ok(())
        })
    })
    .spawn()
    .expect("worker");
    let db = db_name(&direct_url);
    eventually("listening on the direct connection", || async {
        cluster()
            .psql(
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND query LIKE 'LISTEN %'"
                ),
            )
            .expect("activity")
            != "0"
    })
    .await;
    let admin = make("hf-admin", 1);
    let conn = admin.get().await.expect("get");
    queue
        .enqueue(&conn, &NewTask::new("ping", json!(null)))
        .await
        .expect("enqueue through PgBouncer");
    // With an hour-long poll interval only the notification can start it within the bound.
    tokio::time::timeout(BOUND, ran.notified())
        .await
        .expect("woken by the NOTIFY of an enqueue made through PgBouncer");
    worker.shutdown().await;
}

#[tokio::test]
async fn asking_to_listen_through_a_pooler_is_refused() {
    let (_direct_url, bouncer, queue, make) = setup("t_bouncer_refuse").await;
    let mut config = fast(1);
    config = config.listen(Listen::Direct(Box::new(
        ConnectConfig::from_url(&bouncer.url_for("postgres"))
            .expect("url")
            .pooler(Pooler::Transaction),
    )));
    let err = Worker::new(
        queue,
        WorkerPools {
            control: make("hf-ctl", 1),
            work: make("hf-work", 1),
        },
        config,
    )
    .spawn()
    .expect_err("LISTEN through a transaction pooler cannot work");
    assert!(
        matches!(
            err,
            TaskError::Config(holdfast_pool::ConfigError::InvalidValue { ref setting, .. }) if setting == "listen"
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("a direct connection to PostgreSQL"),
        "{err}"
    );
}

/// The database name at the end of a URL.
fn db_name(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_string()
}
