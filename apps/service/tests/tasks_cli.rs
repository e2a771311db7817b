//! `holdfast tasks` against a real cluster: the commands an operator runs, on DATABASE_URL
//! and TASK_SCHEMA, and the errors they give.

use std::process::{Command, Output};

use holdfast::tasks::{NewTask, TaskState};
use holdfast_testkit::{cluster, queue_database};
use serde_json::json;

fn holdfast_tasks(url: &str, schema: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .arg("tasks")
        .args(args)
        .env("DATABASE_URL", url)
        .env("TASK_SCHEMA", schema)
        .output()
        .expect("run holdfast tasks")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn an_operator_lists_shows_retries_cancels_and_prunes() {
    let (url, queue, admin) = queue_database(cluster(), "cli_q").await;
    let conn = admin.get().await.expect("get");
    let ids = queue
        .enqueue_many(
            &conn,
            &[
                NewTask::new("assemble", json!({ "episode": 1 })),
                NewTask::new("assemble", json!({ "episode": 2 })),
                NewTask::new("notify", json!({})),
            ],
        )
        .await
        .expect("enqueue");
    let [a, b, n] = [ids[0], ids[1], ids[2]].map(|id| id.expect("id"));
    conn.execute(
        "UPDATE cli_q.tasks SET state = 'failed', attempt = 5, finished_at = now(), last_error = 'boom' WHERE id = $1",
        &[&a],
    )
    .await
    .expect("fail one");

    let list = stdout(&holdfast_tasks(&url, "cli_q", &["list", "--kind", "assemble"]));
    assert!(
        list.contains(&a.to_string()) && list.contains(&b.to_string()),
        "{list}"
    );
    assert!(!list.contains("notify"), "{list}");
    let failed = stdout(&holdfast_tasks(&url, "cli_q", &["list", "--state", "failed"]));
    assert!(
        failed.contains("boom") && !failed.contains(&format!(" {b} ")),
        "{failed}"
    );

    let show = stdout(&holdfast_tasks(&url, "cli_q", &["show", &a.to_string()]));
    assert!(
        show.contains("failed") && show.contains("\"episode\":1") && show.contains("last error: boom"),
        "{show}"
    );

    let retried = stdout(&holdfast_tasks(&url, "cli_q", &["retry", &a.to_string()]));
    assert!(retried.contains("queued again"), "{retried}");
    let task = queue.get(&conn, a).await.expect("get").expect("task");
    assert_eq!((task.state, task.max_attempts), (TaskState::Available, 6));

    stdout(&holdfast_tasks(&url, "cli_q", &["cancel", &n.to_string()]));
    assert_eq!(
        queue.get(&conn, n).await.expect("get").expect("task").state,
        TaskState::Cancelled
    );

    let stats = stdout(&holdfast_tasks(&url, "cli_q", &["stats"]));
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("assemble") && l.contains(" 2 ")),
        "{stats}"
    );

    let pruned = stdout(&holdfast_tasks(
        &url,
        "cli_q",
        &["prune", "--state", "cancelled", "--older-than-s", "0"],
    ));
    assert!(pruned.starts_with("1 cancelled"), "{pruned}");
    assert!(queue.get(&conn, n).await.expect("get").is_none());

    // Errors name the cause.
    let missing = holdfast_tasks(&url, "cli_q", &["show", "999999"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no task 999999"));
    let bad = holdfast_tasks(&url, "cli_q", &["list", "--state", "done"]);
    let text = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && text.contains("accepted: available"),
        "{text}"
    );
    let again = holdfast_tasks(&url, "cli_q", &["delete", &b.to_string()]);
    assert!(again.status.success(), "a waiting task can be deleted");
    let gone = holdfast_tasks(&url, "cli_q", &["retry", &b.to_string()]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not queued again"));
}
