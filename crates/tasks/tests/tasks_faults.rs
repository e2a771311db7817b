//! Promise 7 under real faults: connections cut mid-task and during the final write, the
//! final COMMIT's reply lost, the database stopped and started, a worker aborted, a worker
//! process killed. After each, every task is final, none is stuck, each enqueued task exists
//! once with its row, and a success is written once.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use holdfast_faults::{Action, FaultProxy, Faults, MessageRule, ProxyHandle, Trigger};
use holdfast_pool::Pool;
use holdfast_tasks::{
    NewTask, Queue, TaskContext, TaskFailure, TaskState, Worker, WorkerHandle, WorkerPools,
};
use holdfast_tempdb::{ClusterOptions, TempCluster};
use holdfast_testkit::cluster;
use holdfast_tx::{TransactionExt, TxOptions};
use serde_json::json;
use support::{counts, database, eventually, fast, pool, settled, worker_pools};
use tokio::sync::watch;

/// Enqueues `n` tasks, each in one transaction with its episode row.
async fn enqueue_episodes(queue: &Queue, admin: &Pool, n: i64) {
    for i in 0..n {
        let q = queue.clone();
        admin
            .transaction(TxOptions::new(), move |tx| {
                let q = q.clone();
                Box::pin(async move {
                    let id = q
                        .enqueue(tx, &NewTask::new("assemble", json!({ "episode": i })))
                        .await?
                        .ok_or("no id")?;
                    tx.execute("INSERT INTO episodes (id, task_id) VALUES ($1, $2)", &[&i, &id])
                        .await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                })
            })
            .await
            .expect("enqueue with its row");
    }
}

/// The body: record the attempt's side effect, then wait for the test to let it finish.
fn assemble(
    go: watch::Receiver<bool>,
    started: Arc<AtomicU32>,
) -> impl Fn(TaskContext) -> futures_util::future::BoxFuture<'static, Result<(), TaskFailure>>
       + Send
       + Sync
       + 'static {
    move |ctx| {
        let mut go = go.clone();
        let started = Arc::clone(&started);
        Box::pin(async move {
            let conn = ctx.pool.get().await?;
            conn.execute(
                "INSERT INTO effects (task_id, attempt) VALUES ($1, $2)",
                &[&ctx.id, &ctx.attempt],
            )
            .await?;
            drop(conn);
            started.fetch_add(1, Ordering::SeqCst);
            let _ = go.wait_for(|go| *go).await;
            Ok(())
        })
    }
}

struct Fleet {
    workers: Vec<WorkerHandle>,
    go: watch::Sender<bool>,
    started: Arc<AtomicU32>,
}

/// `n` workers of `concurrency` each, through `url`.
fn fleet(queue: &Queue, url: &str, n: usize, concurrency: usize) -> Fleet {
    let (go, rx) = watch::channel(false);
    let started = Arc::new(AtomicU32::new(0));
    let workers = (0..n)
        .map(|i| {
            Worker::new(
                queue.clone(),
                worker_pools(url, &i.to_string()),
                fast(concurrency),
            )
            .handle("assemble", assemble(rx.clone(), Arc::clone(&started)))
            .spawn()
            .expect("worker")
        })
        .collect();
    Fleet { workers, go, started }
}

/// The invariants every fault test ends with.
async fn assert_settled_once(queue: &Queue, admin: &Pool, n: i64) {
    let c = settled(queue, admin, n).await;
    assert_eq!(c[&TaskState::Succeeded], n, "every task succeeded: {c:?}");
    let conn = admin.get().await.expect("get");
    let row = conn
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT e.task_id), count(t.id)
                 FROM episodes e LEFT JOIN {}.tasks t ON t.id = e.task_id",
                queue.schema()
            ),
            &[],
        )
        .await
        .expect("join");
    let (episodes, distinct, joined): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (episodes, distinct, joined),
        (n, n, n),
        "each episode has its one task, none lost or doubled"
    );
    let missing: i64 = conn
        .query_one(
            &format!("SELECT count(*) FROM {}.tasks t WHERE NOT EXISTS (SELECT 1 FROM effects e WHERE e.task_id = t.id)", queue.schema()),
            &[],
        )
        .await
        .expect("effects")
        .get(0);
    assert_eq!(missing, 0, "every succeeded task ran");
    let live: i64 = conn
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.tasks
                 WHERE lease_expires_at IS NOT NULL OR (lease_owner IS NOT NULL AND state <> 'succeeded')",
                queue.schema()
            ),
            &[],
        )
        .await
        .expect("leases")
        .get(0);
    assert_eq!(live, 0, "no lease left behind");
}

async fn attempts(queue: &Queue, admin: &Pool) -> Vec<i32> {
    let conn = admin.get().await.expect("get");
    conn.query(
        &format!("SELECT attempt FROM {}.tasks ORDER BY id", queue.schema()),
        &[],
    )
    .await
    .expect("attempts")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn proxied(schema: &str) -> (ProxyHandle, String, Queue, Pool) {
    let cluster = cluster();
    let (direct, queue, admin) = database(cluster, schema).await;
    let proxy = FaultProxy::start_local(SocketAddr::from(([127, 0, 0, 1], cluster.port())))
        .await
        .expect("proxy");
    let db = direct.rsplit('/').next().expect("db name").to_string();
    let via = format!("postgres://postgres@127.0.0.1:{}/{db}", proxy.port());
    (proxy, via, queue, admin)
}

async fn all_started(fleet: &Fleet, n: u32) {
    eventually("tasks running", || async {
        fleet.started.load(Ordering::SeqCst) >= n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_every_connection_mid_task() {
    let (proxy, via, queue, admin) = proxied("f_cut").await;
    let n = 24;
    enqueue_episodes(&queue, &admin, n).await;
    let fleet = fleet(&queue, &via, 3, 8);
    all_started(&fleet, n as u32).await;
    assert!(proxy.reset_all() > 0);
    fleet.go.send_replace(true);
    assert_settled_once(&queue, &admin, n).await;
    for w in fleet.workers {
        w.shutdown().await;
    }
}

/// Applies `action` to every execution of statements starting with `prefix` (the final
/// writes), lets the tasks finish, and clears the fault once it has fired `n` times.
async fn fault_every_final_write(proxy: &ProxyHandle, prefix: &str, action: Action, fleet: &Fleet, n: i64) {
    proxy
        .set(Faults {
            rule: Some(MessageRule {
                trigger: Trigger::Execute {
                    prefix: prefix.into(),
                },
                action,
                once: false,
            }),
            ..Faults::none()
        })
        .expect("rule");
    fleet.go.send_replace(true);
    eventually("every final write hit", || async {
        proxy.counters().faults_fired >= n as u64
    })
    .await;
    proxy.clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_the_final_write() {
    let (proxy, via, queue, admin) = proxied("f_final").await;
    let n = 12;
    enqueue_episodes(&queue, &admin, n).await;
    let fleet = fleet(&queue, &via, 2, 6);
    all_started(&fleet, n as u32).await;
    // The final write is one statement; the proxy cuts the connection before it arrives,
    // every time, until it has done so once per task.
    fault_every_final_write(
        &proxy,
        "UPDATE f_final.tasks SET state",
        Action::CutBefore,
        &fleet,
        n,
    )
    .await;
    assert_settled_once(&queue, &admin, n).await;
    for w in fleet.workers {
        w.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_final_writes_reply() {
    let (proxy, via, queue, admin) = proxied("f_reply").await;
    let n = 12;
    enqueue_episodes(&queue, &admin, n).await;
    let fleet = fleet(&queue, &via, 2, 6);
    all_started(&fleet, n as u32).await;
    // Final writes run on the server and their replies are lost, every time, until that
    // has happened once per task.
    fault_every_final_write(
        &proxy,
        "UPDATE f_reply.tasks SET state",
        Action::DropReply,
        &fleet,
        n,
    )
    .await;
    assert_settled_once(&queue, &admin, n).await;
    assert!(
        attempts(&queue, &admin).await.iter().all(|a| *a == 1),
        "a success whose reply was lost is resolved, never run again"
    );
    assert!(
        proxy.counters().faults_fired >= n as u64,
        "every final write lost its reply"
    );
    for w in fleet.workers {
        w.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_database_for_a_while() {
    let cluster = TempCluster::start(ClusterOptions::default()).expect("own cluster");
    let (url, queue, admin) = database(&cluster, "f_down").await;
    let n = 10;
    enqueue_episodes(&queue, &admin, n).await;
    let fleet = fleet(&queue, &url, 2, 5);
    all_started(&fleet, n as u32).await;
    tokio::task::block_in_place(|| cluster.stop()).expect("stop");
    // The outage itself: longer than the lease, so leases run out while the database is away.
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| cluster.start_again()).expect("start");
    fleet.go.send_replace(true);
    assert_settled_once(&queue, &admin, n).await;
    for w in fleet.workers {
        w.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_that_swallows_everything_for_longer_than_the_lease() {
    let (proxy, via, queue, admin) = proxied("f_hole").await;
    let n = 10;
    enqueue_episodes(&queue, &admin, n).await;
    // Two slots more than tasks: idle slots keep polling, so claims are sent into the hole.
    let fleet = fleet(&queue, &via, 2, 6);
    all_started(&fleet, n as u32).await;
    // Connections stay open and nothing arrives either way: heartbeats, claims, rescue passes
    // and final writes sent now are never answered. Each must give up on its own.
    proxy
        .update(|f| {
            f.upstream.blackhole = true;
            f.downstream.blackhole = true;
        })
        .expect("blackhole");
    // The outage itself: longer than the lease (1.5 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    proxy.clear();
    fleet.go.send_replace(true);
    assert_settled_once(&queue, &admin, n).await;
    for w in fleet.workers {
        tokio::time::timeout(Duration::from_secs(30), w.shutdown())
            .await
            .expect("shutdown is not held by a connection that never answers");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_workers_tasks_are_rescued() {
    let cluster = cluster();
    let (url, queue, admin) = database(cluster, "f_abort").await;
    let n = 6;
    enqueue_episodes(&queue, &admin, n).await;
    let doomed = fleet(&queue, &url, 1, 6);
    all_started(&doomed, n as u32).await;
    for w in doomed.workers {
        w.abort();
    }
    let survivor = fleet(&queue, &url, 1, 6);
    survivor.go.send_replace(true);
    assert_settled_once(&queue, &admin, n).await;
    assert!(
        attempts(&queue, &admin).await.iter().all(|a| *a == 2),
        "each ran again, once"
    );
    for w in survivor.workers {
        w.shutdown().await;
    }
}

/// The child side of the two-process test: a worker that starts every task and never
/// finishes, until the parent kills the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_process_is_rescued_by_another() {
    if let Ok(url) = std::env::var("HOLDFAST_TASKS_CHILD_URL") {
        let queue = Queue::new("f_process").expect("queue");
        let fleet = fleet(&queue, &url, 1, 8);
        all_started(&fleet, 4).await;
        println!("CHILD RUNNING");
        std::future::pending::<()>().await;
    }
    let cluster = cluster();
    let (url, queue, admin) = database(cluster, "f_process").await;
    let n = 4;
    enqueue_episodes(&queue, &admin, n).await;
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "a_killed_worker_process_is_rescued_by_another",
            "--nocapture",
        ])
        .env("HOLDFAST_TASKS_CHILD_URL", &url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("child worker process");
    let stdout = child.stdout.take().expect("stdout");
    tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        lines.any(|l| l.is_ok_and(|l| l.contains("CHILD RUNNING")))
    })
    .await
    .expect("reader")
    .then_some(())
    .expect("the child started its tasks");
    let c = counts(&queue, &admin).await;
    assert_eq!(c[&TaskState::Running], n, "the child holds every task: {c:?}");
    child.kill().expect("SIGKILL the worker process");
    child.wait().expect("reap");
    let survivor = fleet(&queue, &url, 1, 4);
    survivor.go.send_replace(true);
    assert_settled_once(&queue, &admin, n).await;
    for w in survivor.workers {
        w.shutdown().await;
    }
}

/// Counts drops of the value it guards.
struct OnDrop(Arc<AtomicU32>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_stuck_on_a_request_nobody_answers_is_stopped_by_its_run_timeout() {
    // The incident's own shape: the worker lives and its heartbeats land (its control plane
    // reaches the database directly), but the body's statement went into a network that
    // swallows it. Nothing would ever end that body; its run timeout must.
    let cluster = cluster();
    let (direct, queue, admin) = database(cluster, "f_stuck").await;
    let proxy = FaultProxy::start_local(SocketAddr::from(([127, 0, 0, 1], cluster.port())))
        .await
        .expect("proxy");
    let db = direct.rsplit('/').next().expect("db name").to_string();
    let via = format!("postgres://postgres@127.0.0.1:{}/{db}", proxy.port());
    enqueue_episodes(&queue, &admin, 1).await;
    let (go, go_rx) = watch::channel(false);
    let ready = Arc::new(tokio::sync::Notify::new());
    let dropped = Arc::new(AtomicU32::new(0));
    let mut config = fast(1);
    config = config.run_timeout(Some(Duration::from_secs(2)));
    let body = {
        let (ready, dropped) = (Arc::clone(&ready), Arc::clone(&dropped));
        move |ctx: TaskContext| {
            let (mut go, ready, guard) = (go_rx.clone(), Arc::clone(&ready), OnDrop(Arc::clone(&dropped)));
            Box::pin(async move {
                let _guard = guard;
                let conn = ctx.pool.get().await?;
                if ctx.attempt == 1 {
                    // Connected; the test now opens the hole, then lets the statement go.
                    ready.notify_one();
                    let _ = go.wait_for(|go| *go).await;
                }
                conn.execute(
                    "INSERT INTO effects (task_id, attempt) VALUES ($1, $2)",
                    &[&ctx.id, &ctx.attempt],
                )
                .await?;
                Ok(())
            }) as futures_util::future::BoxFuture<'static, Result<(), TaskFailure>>
        }
    };
    let worker = Worker::new(
        queue.clone(),
        WorkerPools {
            control: pool(&direct, "hf-ctl", 2),
            work: pool(&via, "hf-work", 2),
        },
        config,
    )
    .handle("assemble", body)
    .spawn()
    .expect("worker");
    tokio::time::timeout(support::BOUND, ready.notified())
        .await
        .expect("the first attempt holds its connection");
    proxy
        .update(|f| {
            f.upstream.blackhole = true;
            f.downstream.blackhole = true;
        })
        .expect("blackhole");
    go.send_replace(true);
    eventually("the stuck body is stopped", || async {
        dropped.load(Ordering::SeqCst) >= 1
    })
    .await;
    proxy.clear();
    assert_settled_once(&queue, &admin, 1).await;
    assert_eq!(
        attempts(&queue, &admin).await,
        vec![2],
        "stopped once, then run again"
    );
    let effects: Vec<i32> = admin
        .get()
        .await
        .expect("get")
        .query("SELECT attempt FROM effects ORDER BY attempt", &[])
        .await
        .expect("effects")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        effects,
        vec![2],
        "the swallowed statement never landed; the second attempt's did"
    );
    tokio::time::timeout(Duration::from_secs(30), worker.shutdown())
        .await
        .expect("shutdown");
}
