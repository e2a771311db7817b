//! Many tasks in one statement: ids in input order, unique keys respected (also within the
//! batch), all or nothing, one notification, and inside a caller's transaction.

mod support;

use futures_util::StreamExt;
use holdfast_tasks::{NewTask, TaskState};
use holdfast_testkit::cluster;
use holdfast_tx::{TransactionExt, TxOptions};
use serde_json::json;
use support::{database, state_of};
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

#[tokio::test]
async fn a_batch_gets_ids_in_order_and_skips_active_unique_keys() {
    let (_url, queue, admin) = database(cluster(), "t_many").await;
    let conn = admin.get().await.expect("get");
    let active = queue
        .enqueue(&conn, &NewTask::new("x", json!(0)).unique_key("k-active"))
        .await
        .expect("enqueue")
        .expect("id");
    let batch = vec![
        NewTask::new("x", json!(1)),
        NewTask::new("x", json!(2)).unique_key("k-active"),
        NewTask::new("y", json!(3)).unique_key("k-new").priority(3),
        NewTask::new("y", json!(4)).unique_key("k-new"),
        NewTask::new("x", json!(5)),
    ];
    let ids = queue.enqueue_many(&conn, &batch).await.expect("enqueue_many");
    assert_eq!(ids.len(), batch.len(), "one answer per task");
    assert!(ids[1].is_none(), "k-active is already active");
    assert!(ids[3].is_none(), "k-new came earlier in the same batch");
    for (i, id) in ids.iter().enumerate() {
        let Some(id) = id else { continue };
        let task = queue.get(&conn, *id).await.expect("get").expect("stored");
        assert_eq!(task.payload, batch[i].payload, "answer {i} is the id of task {i}");
        assert_eq!(task.kind, batch[i].kind);
        assert_eq!(task.state, TaskState::Available);
    }
    assert_eq!(state_of(&queue, &admin, active).await, TaskState::Available);
    let stored: i64 = conn
        .query_one("SELECT count(*) FROM t_many.tasks", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 4, "the active one and three of the batch");
    assert_eq!(queue.enqueue_many(&conn, &[]).await.expect("empty"), vec![]);
}

#[tokio::test]
async fn an_invalid_task_enqueues_none_of_the_batch() {
    let (_url, queue, admin) = database(cluster(), "t_many_bad").await;
    let conn = admin.get().await.expect("get");
    let batch = [
        NewTask::new("x", json!(1)),
        NewTask::new("x", json!(2)).max_attempts(0),
    ];
    let err = queue.enqueue_many(&conn, &batch).await.expect_err("refused");
    assert!(err.to_string().contains("max_attempts"), "{err}");
    let stored: i64 = conn
        .query_one("SELECT count(*) FROM t_many_bad.tasks", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 0);
}

/// A connection listening on `channel`, and the payloads of what it hears.
async fn listen(url: &str, channel: &str) -> (tokio_postgres::Client, mpsc::UnboundedReceiver<String>) {
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("listener");
    let (heard, notes) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = heard.send(n.payload().to_string());
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .expect("LISTEN");
    (client, notes)
}

#[tokio::test]
async fn a_batch_in_a_transaction_is_all_or_nothing_and_wakes_workers_on_commit() {
    let (url, queue, admin) = database(cluster(), "t_many_tx").await;
    let (listener, mut notes) = listen(&url, &queue.channel()).await;
    let batch: Vec<NewTask> = (0..50).map(|i| NewTask::new("x", json!(i))).collect();
    let (q, b) = (&queue, &batch);
    let rolled_back = admin
        .transaction(TxOptions::new(), move |tx| {
            Box::pin(async move {
                q.enqueue_many(tx, b).await?;
                Err::<(), _>(holdfast_tasks::TaskError::InvalidSchema("abandon".into()))
            })
        })
        .await;
    assert!(rolled_back.is_err());
    let ids = admin
        .transaction(TxOptions::new(), move |tx| {
            Box::pin(async move { q.enqueue_many(tx, b).await })
        })
        .await
        .expect("committed");
    assert!(ids.iter().all(Option::is_some));
    let stored: i64 = admin
        .get()
        .await
        .expect("get")
        .query_one("SELECT count(*) FROM t_many_tx.tasks", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 50, "only the committed batch");
    // A marker sent after the commit: every notification of the batch arrives before it.
    listener
        .batch_execute(&format!("NOTIFY {}, 'marker'", queue.channel()))
        .await
        .expect("marker");
    let mut before_marker = 0;
    while let Some(payload) = notes.recv().await {
        if payload == "marker" {
            break;
        }
        before_marker += 1;
    }
    // One for the batch (the rolled-back one sent none; PostgreSQL would fold a
    // notification per row of one transaction into one anyway).
    assert_eq!(before_marker, 1, "the committed batch woke the listeners");
}
