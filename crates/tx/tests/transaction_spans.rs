//! The `transaction` span says how each transaction ended, a COMMIT whose reply the proxy
//! dropped (resolved from the server) included, and its statements are its children.

use std::time::Duration;

use holdfast_faults::{Action, Faults, MessageRule, Trigger};
use holdfast_pool::{ConnectConfig, Pool, PoolConfig};
use holdfast_testkit::{behind_a_proxy, cluster, record_spans};
use holdfast_tx::{TransactionExt, TxOptions};
use tracing::Instrument;

fn pool(url: &str) -> Pool {
    let connect = ConnectConfig::from_url(url)
        .expect("url")
        .connect_timeout(Duration::from_secs(5));
    Pool::new(
        PoolConfig::new(connect)
            .pool_size(2)
            .reconnect_backoff_max(Duration::from_millis(100)),
    )
    .expect("pool")
}

#[tokio::test]
async fn a_lost_commit_reply_resolved_as_committed_shows_on_the_transactions_span() {
    let (spans, _guard) = record_spans();
    let proxied = behind_a_proxy().await;
    cluster()
        .psql(&proxied.db.name, "CREATE TABLE items (key int NOT NULL)")
        .expect("schema");
    let pool = pool(&proxied.url);
    proxied
        .proxy
        .set(Faults {
            rule: Some(MessageRule {
                trigger: Trigger::Commit,
                action: Action::DropReply,
                once: true,
            }),
            ..Faults::none()
        })
        .expect("faults");
    pool.transaction(TxOptions::new(), |tx| {
        Box::pin(async move {
            tx.execute("INSERT INTO items (key) VALUES (1)", &[]).await?;
            Ok::<_, tokio_postgres::Error>(())
        })
    })
    .instrument(tracing::info_span!("request"))
    .await
    .expect("the server says it committed");
    proxied.proxy.clear();

    let tx = spans.named("transaction");
    assert_eq!(tx.len(), 1, "{tx:#?}");
    assert_eq!(tx[0].parent.as_deref(), Some("request"));
    assert_eq!(tx[0].field("holdfast.tx.commit"), Some("committed"));
    assert_eq!(tx[0].field("holdfast.tx.lost_reply"), Some("committed"));
    assert_eq!(tx[0].field("holdfast.tx.attempts"), Some("1"));
    let insert = spans
        .named("statement")
        .into_iter()
        .find(|s| s.field("db.operation.name") == Some("INSERT"))
        .expect("the INSERT's span");
    assert_eq!(insert.parent.as_deref(), Some("transaction"));
    pool.close().await;
}

#[tokio::test]
async fn a_failed_transaction_says_why_on_its_span() {
    let (spans, _guard) = record_spans();
    let db = cluster().create_database().expect("database");
    let pool = pool(&db.url);
    let result = pool
        .transaction(TxOptions::new(), |tx| {
            Box::pin(async move {
                tx.execute("SELECT 1 FROM no_such_table", &[]).await?;
                Ok::<_, tokio_postgres::Error>(())
            })
        })
        .await;
    assert!(result.is_err());
    let tx = spans.named("transaction");
    assert_eq!(tx.len(), 1, "{tx:#?}");
    assert_eq!(tx[0].field("holdfast.tx.commit"), Some("failed"));
    assert_eq!(tx[0].field("error.type"), Some("closure_error"));
    let refused = spans
        .named("statement")
        .into_iter()
        .find(|s| s.field("db.response.status_code") == Some("42P01"))
        .expect("the refused statement's span");
    assert_eq!(refused.parent.as_deref(), Some("transaction"));
    pool.close().await;
}
