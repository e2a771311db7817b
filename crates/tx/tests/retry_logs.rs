//! The retry story told in logs. A test binary of its own: tracing caches whether a log
//! site is enabled process-wide, so sites first hit by other tests' threads (which have no
//! subscriber) would stay silent here.

use std::net::SocketAddr;
use std::time::Duration;

use holdfast_faults::{Action, FaultProxy, Faults, MessageRule, Trigger};
use holdfast_pool::{ConnectConfig, Pool, PoolConfig};
use holdfast_testkit::{capture_logs, cluster};
use holdfast_tx::{TransactionExt, TxOptions};

#[tokio::test(flavor = "current_thread")]
async fn retries_are_logged_in_the_incidents_words() {
    let (logs, _guard) = capture_logs();

    let cluster = cluster();
    let db = cluster.create_database().expect("database");
    cluster
        .psql(&db.name, "CREATE TABLE items (key int)")
        .expect("schema");
    let proxy = FaultProxy::start_local(SocketAddr::from(([127, 0, 0, 1], cluster.port())))
        .await
        .expect("proxy");
    let url = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port(), db.name);
    let pool = Pool::new(
        PoolConfig::new(ConnectConfig::from_url(&url).expect("url")).pool_timeout(Duration::from_secs(10)),
    )
    .expect("pool");
    // The client writes COMMIT, the proxy never forwards it: outcome unknown to the client,
    // resolved from the server (aborted), then retried.
    proxy
        .set(Faults {
            rule: Some(MessageRule {
                trigger: Trigger::Commit,
                action: Action::CutBefore,
                once: true,
            }),
            ..Faults::none()
        })
        .expect("rule");
    pool.transaction(TxOptions::new(), |tx| {
        Box::pin(async move { tx.execute("INSERT INTO items VALUES (1)", &[]).await.map(drop) })
    })
    .await
    .expect("succeeds on the second attempt");
    let text = logs.text();
    assert!(
        text.contains("connection lost after COMMIT was sent: asking the server whether it committed"),
        "{text}"
    );
    assert!(text.contains("connection error on commit (attempt 1, "), "{text}");
}
