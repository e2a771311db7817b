//! Spans against a real server: the wire's statement spans (one per request, named by its
//! command, under the span current at checkout, with the SQLSTATE of a failure), the
//! statement text only with `DB_TRACE_STATEMENT_TEXT`, the acquire span, and `Pool::query`'s
//! span per call on a shared lane.

use holdfast_pool::{Pool, PoolConfig};
use holdfast_testkit::{cluster, config_for, record_spans, SeenSpan as Seen, Spans};
use tracing::Instrument;

/// Runs statements on a checked-out connection inside a span `work`, with `config`.
async fn statements_in_a_span(config: PoolConfig) -> Spans {
    let (spans, _guard) = record_spans();
    let pool = Pool::new(config.pool_size(1).max_overflow(0)).expect("pool");
    async {
        let conn = pool.get().await.expect("connection");
        conn.batch_execute("CREATE TEMP TABLE t (a int)")
            .await
            .expect("create");
        conn.query("SELECT a FROM t WHERE a = $1", &[&1_i32])
            .await
            .expect("select");
        let error = conn
            .query("SELECT nope FROM t", &[])
            .await
            .expect_err("no such column");
        assert_eq!(error.code().map(|c| c.code()), Some("42703"));
    }
    .instrument(tracing::info_span!("work"))
    .await;
    pool.close().await;
    spans
}

fn ops(spans: &[Seen]) -> Vec<String> {
    let mut ops: Vec<String> = spans
        .iter()
        .filter_map(|s| s.fields.get("db.operation.name").cloned())
        .collect();
    ops.sort();
    ops
}

#[tokio::test]
async fn each_statement_on_a_checked_out_connection_is_a_span_under_the_holders() {
    let spans = statements_in_a_span(config_for(cluster(), "spans-off")).await;
    let statements: Vec<Seen> = spans
        .named("statement")
        .into_iter()
        .filter(|s| s.parent.as_deref() == Some("work"))
        .collect();
    // CREATE, the SELECT's run, and requests without a command tag (prepares), among them
    // the failing one's, which the server refused.
    assert_eq!(ops(&statements), ["CREATE", "SELECT"], "{statements:#?}");
    let failed: Vec<&Seen> = statements
        .iter()
        .filter(|s| s.fields.get("db.response.status_code").map(String::as_str) == Some("42703"))
        .collect();
    assert_eq!(failed.len(), 1, "{statements:#?}");
    assert_eq!(
        failed[0].fields.get("error.type").map(String::as_str),
        Some("42703")
    );
    for s in &statements {
        assert_eq!(
            s.fields.get("db.system.name").map(String::as_str),
            Some("postgresql")
        );
        assert_eq!(s.fields.get("server.port"), Some(&cluster().port().to_string()));
        assert!(
            !s.fields.contains_key("db.query.text"),
            "no text unless asked: {s:?}"
        );
    }
    let acquire = spans.named("acquire");
    assert_eq!(acquire.len(), 1, "{acquire:#?}");
    assert_eq!(acquire[0].parent.as_deref(), Some("work"));
    assert!(acquire[0]
        .fields
        .contains_key("db.client.connection.wait_time_ms"));
    // Nothing of the pool's own (its reset or close) after the holder gave the connection
    // back.
    assert!(spans
        .named("statement")
        .iter()
        .all(|s| s.parent.as_deref() == Some("work")));
}

#[tokio::test]
async fn with_trace_statement_text_on_the_spans_carry_the_text_and_never_the_parameters() {
    let mut config = config_for(cluster(), "spans-text");
    config.connect = config.connect.trace_statement_text(true);
    let spans = statements_in_a_span(config).await;
    let texts: Vec<String> = spans
        .named("statement")
        .iter()
        .filter_map(|s| s.fields.get("db.query.text").cloned())
        .collect();
    assert!(
        texts.contains(&"CREATE TEMP TABLE t (a int)".to_string()),
        "{texts:?}"
    );
    assert!(
        texts.contains(&"SELECT a FROM t WHERE a = $1".to_string()),
        "{texts:?}"
    );
}

#[tokio::test]
async fn pool_query_on_a_shared_lane_is_one_span_per_call_in_the_callers_context() {
    let (spans, _guard) = record_spans();
    let pool = Pool::new(config_for(cluster(), "spans-lane")).expect("pool");
    async {
        let rows = pool.query("SELECT 1::int4", &[]).await.expect("query");
        assert_eq!(rows.len(), 1);
    }
    .instrument(tracing::info_span!("request"))
    .await;
    // Outside any span: not traced.
    pool.query("SELECT 2::int4", &[]).await.expect("query");
    pool.close().await;
    let statements = spans.named("statement");
    assert_eq!(statements.len(), 1, "{statements:#?}");
    assert_eq!(statements[0].parent.as_deref(), Some("request"));
    assert_eq!(
        statements[0].fields.get("db.operation.name").map(String::as_str),
        Some("SELECT")
    );
    assert_eq!(
        statements[0].fields.get("holdfast.pipelined").map(String::as_str),
        Some("true")
    );
}
