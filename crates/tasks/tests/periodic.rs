//! Periodic tasks against a real PostgreSQL: one task per slot however many schedulers
//! run at once (a controlled clock), the missed-slot policies, bad expressions, and
//! workers that run a schedule on the wall clock.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holdfast_tasks::{Missed, NewTask, Periodic, Worker};
use holdfast_testkit::cluster;
use serde_json::json;
use support::{database, eventually, fast, pool, worker_pools};

/// 2030-01-01 00:00:00 UTC plus `secs`.
fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_893_456_000 + secs)
}

/// The tasks' slots (`run_at`), in order.
async fn slots(admin: &holdfast_pool::Pool, schema: &str) -> Vec<SystemTime> {
    admin
        .get()
        .await
        .expect("get")
        .query(&format!("SELECT run_at FROM {schema}.tasks ORDER BY run_at"), &[])
        .await
        .expect("slots")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_slot_is_enqueued_once_however_many_schedulers_run() {
    let (url, queue, admin) = database(cluster(), "t_cron").await;
    let hourly = Periodic::new("hourly", "0 * * * *", NewTask::new("report", json!({}))).expect("cron");
    let schedulers: Vec<_> = (0..4).map(|i| pool(&url, &format!("s{i}"), 1)).collect();
    // Run every scheduler at once at `now`; the ids all of them enqueued.
    let all_at = |now: SystemTime| {
        let (queue, hourly) = (&queue, &hourly);
        let runs = schedulers
            .iter()
            .map(move |p| async move { queue.enqueue_due(p, std::slice::from_ref(hourly), now).await });
        async move {
            futures_util::future::join_all(runs)
                .await
                .into_iter()
                .flat_map(|r| r.expect("enqueue_due"))
                .count()
        }
    };
    // First sight at 00:10: the schedule starts at 01:00, nothing now.
    assert_eq!(all_at(at(600)).await, 0);
    assert_eq!(all_at(at(3599)).await, 0, "before the slot");
    assert_eq!(
        all_at(at(3600)).await,
        1,
        "the 01:00 slot, once across four schedulers"
    );
    assert_eq!(all_at(at(3700)).await, 0, "already done");
    assert_eq!(all_at(at(7205)).await, 1, "the 02:00 slot, a little late");
    // Down from 02:00 to 05:30: three slots passed; the latest runs, once.
    assert_eq!(all_at(at(5 * 3600 + 1800)).await, 1);
    assert_eq!(
        slots(&admin, "t_cron").await,
        [at(3600), at(7200), at(5 * 3600)],
        "each task carries its slot as run_at"
    );
}

#[tokio::test]
async fn skipped_slots_are_not_run_and_a_due_slot_is() {
    let (_url, queue, admin) = database(cluster(), "t_cron_skip").await;
    let p = Periodic::new("quarter", "*/15 * * * *", NewTask::new("sync", json!({})))
        .expect("cron")
        .missed(Missed::Skip);
    let due = |now| {
        let (queue, admin, p) = (&queue, &admin, &p);
        async move {
            queue
                .enqueue_due(admin, std::slice::from_ref(p), now)
                .await
                .expect("due")
                .len()
        }
    };
    assert_eq!(due(at(0)).await, 0, "first sight: starts at 00:15");
    assert_eq!(
        due(at(3600 + 60)).await,
        0,
        "00:15 to 01:00 passed while down: skipped"
    );
    assert_eq!(due(at(3600 + 15 * 60)).await, 1, "01:15 has just come: run");
    assert_eq!(slots(&admin, "t_cron_skip").await, [at(3600 + 15 * 60)]);
}

#[test]
fn a_bad_expression_is_refused_naming_the_schedule() {
    let err = Periodic::new("nightly", "61 * * * *", NewTask::new("x", json!({}))).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("\"nightly\"") && text.contains("61 * * * *") && text.contains("such as"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_on_the_wall_clock_enqueue_each_second_once() {
    let (url, queue, admin) = database(cluster(), "t_cron_live").await;
    // Every second (a seconds field first); two workers run the same schedule.
    let every_second = Periodic::new("tick", "* * * * * *", NewTask::new("tick", json!({}))).expect("cron");
    let workers: Vec<_> = (0..2)
        .map(|i| {
            Worker::new(
                queue.clone(),
                worker_pools(&url, &format!("w{i}")),
                fast(1).poll_interval(Duration::from_millis(100)),
            )
            .periodic(every_second.clone())
            .handle("tick", |_ctx| Box::pin(async { Ok(()) }))
            .spawn()
            .expect("worker")
        })
        .collect();
    eventually("four slots enqueued", || async {
        slots(&admin, "t_cron_live").await.len() >= 4
    })
    .await;
    for w in workers {
        w.shutdown().await;
    }
    let slots = slots(&admin, "t_cron_live").await;
    let mut distinct = slots.clone();
    distinct.dedup();
    assert_eq!(distinct, slots, "no slot enqueued twice");
}
