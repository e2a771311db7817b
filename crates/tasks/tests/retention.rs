//! Finished tasks are deleted after their retention, in pages, by one rescuer at a time; the
//! state gauges count only the states that come and go.

mod support;

use std::time::Duration;

use holdfast_tasks::{NewTask, Rescuer, TaskState};
use holdfast_testkit::cluster;
use serde_json::json;
use support::{database, pool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_tasks_past_their_retention_are_deleted_once_and_others_kept() {
    let (url, queue, admin) = database(cluster(), "t_retention").await;
    let conn = admin.get().await.expect("get");
    // 2,500 succeeded two days ago (past 1 day), 10 succeeded just now, 20 failed two days ago
    // (within 7 days), 5 cancelled ten days ago (past 7 days), 3 still available.
    let s = queue.schema();
    conn.batch_execute(&format!(
        "INSERT INTO {s}.tasks (kind, state, finished_at)
         SELECT 'k', 'succeeded', now() - interval '2 days' FROM generate_series(1, 2500);
         INSERT INTO {s}.tasks (kind, state, finished_at)
         SELECT 'k', 'succeeded', now() FROM generate_series(1, 10);
         INSERT INTO {s}.tasks (kind, state, finished_at)
         SELECT 'k', 'failed', now() - interval '2 days' FROM generate_series(1, 20);
         INSERT INTO {s}.tasks (kind, state, finished_at)
         SELECT 'k', 'cancelled', now() - interval '10 days' FROM generate_series(1, 5);"
    ))
    .await
    .expect("rows");
    for _ in 0..3 {
        queue
            .enqueue(&conn, &NewTask::new("k", json!(null)))
            .await
            .expect("enqueue");
    }
    // Two rescuers at once (two workers' passes): each old row is deleted by exactly one.
    let rescuer = |name: &str| {
        Rescuer::new(queue.clone(), pool(&url, name, 2)).retention(
            Some(Duration::from_secs(86_400)),
            Some(Duration::from_secs(7 * 86_400)),
        )
    };
    let (a, b) = (rescuer("r1"), rescuer("r2"));
    let (x, y) = tokio::join!(a.expire_once(), b.expire_once());
    let (x, y) = (x.expect("first"), y.expect("second"));
    // The second may find the lock held and stop; a later pass finishes what is left.
    let z = a.expire_once().await.expect("again");
    assert_eq!(
        x + y + z,
        2505,
        "2,500 succeeded and 5 cancelled deleted, each once"
    );
    let counts = queue.counts(&conn).await.expect("counts");
    assert_eq!(counts[&TaskState::Succeeded], 10);
    assert_eq!(counts[&TaskState::Failed], 20);
    assert_eq!(counts[&TaskState::Cancelled], 0);
    let active = queue.active_counts(&conn).await.expect("active counts");
    assert_eq!(active[&TaskState::Available], 3);
    assert_eq!(active[&TaskState::Running], 0);
    assert!(
        !active.contains_key(&TaskState::Succeeded),
        "finished rows are not counted"
    );

    // Kept forever without a retention.
    let keep = Rescuer::new(queue.clone(), pool(&url, "r3", 1));
    assert_eq!(keep.expire_once().await.expect("nothing"), 0);
}
