//! The pool's numbers reach the `metrics` facade.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_pool::{Pool, PoolError, UnansweredTimeout};
use holdfast_testkit::cluster;
use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// Records counters and gauges by name and labels; ignores histograms.
#[derive(Default)]
struct Counters(Mutex<HashMap<String, Arc<Cell>>>);

impl metrics::GaugeFn for Cell {
    fn increment(&self, value: f64) {
        self.set(self.value() + value);
    }
    fn decrement(&self, value: f64) {
        self.set(self.value() - value);
    }
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

impl Cell {
    fn value(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

#[derive(Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

fn render(key: &Key) -> String {
    let mut s = key.name().to_string();
    let mut labels: Vec<String> = key
        .labels()
        .filter(|l| l.key() != "pool")
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    if !labels.is_empty() {
        s.push_str(&format!("{{{}}}", labels.join(",")));
    }
    s
}

impl Counters {
    fn gauge(&self, name: &str) -> f64 {
        self.0
            .lock()
            .expect("gauges")
            .get(name)
            .map_or(0.0, |c| c.value())
    }

    fn get(&self, name: &str) -> u64 {
        self.0
            .lock()
            .expect("counters")
            .get(name)
            .map_or(0, |c| c.0.load(Ordering::Relaxed))
    }
}

impl Recorder for Counters {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let cell = Arc::clone(self.0.lock().expect("counters").entry(render(key)).or_default());
        Counter::from_arc(cell)
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let cell = Arc::clone(self.0.lock().expect("gauges").entry(render(key)).or_default());
        Gauge::from_arc(cell)
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test]
async fn counters_count_what_happened() {
    let cluster = cluster();
    let recorder = Counters::default();
    let config = support::config_for(cluster, "metrics")
        .pool_size(1)
        .max_overflow(1)
        .pool_timeout(Duration::from_millis(200));
    // Handles are registered when the pool is created: the recorder must be there then.
    let pool = metrics::with_local_recorder(&recorder, || Pool::new(config)).expect("pool");
    let a = pool.get().await.expect("a");
    let b = pool.get().await.expect("b (overflow)");
    assert!(matches!(pool.get().await, Err(PoolError::Timeout { .. })));
    b.batch_execute("BEGIN").await.expect("begin");
    drop(a);
    drop(b);
    // The overflow one was dirty: rolled back, then closed as overflow.
    support::eventually("reset finished", || async { pool.status().open == 1 }).await;
    assert_eq!(recorder.get("holdfast_pool_acquired_total"), 2);
    assert_eq!(recorder.get("holdfast_pool_acquire_timeouts_total"), 1);
    assert_eq!(recorder.get("holdfast_pool_connections_opened_total"), 2);
    assert_eq!(recorder.get("holdfast_pool_resets_total{kind=rollback}"), 1);
    assert_eq!(
        recorder.get("holdfast_pool_connections_closed_total{reason=overflow}"),
        1
    );
    support::assert_no_idle_in_transaction(&pool).await;
}

#[tokio::test]
async fn named_statements_outside_transactions_are_counted_behind_a_pooler() {
    let cluster = cluster();
    let recorder = Counters::default();
    let mut config = support::config_for(cluster, "named").pool_size(1).max_overflow(0);
    // The flag only changes what the client does; no pooler is needed to see the count.
    config.connect = config.connect.pooler(holdfast_pool::Pooler::Transaction);
    let pool = metrics::with_local_recorder(&recorder, || Pool::new(config)).expect("pool");
    let named = "holdfast_pool_named_statements_behind_pooler_total";

    let conn = pool.get().await.expect("get");
    conn.query_cached("SELECT $1::int", &[&1i32])
        .await
        .expect("unnamed");
    conn.batch_execute("BEGIN").await.expect("begin");
    conn.query("SELECT $1::int", &[&2i32])
        .await
        .expect("named, inside a transaction");
    conn.batch_execute("COMMIT").await.expect("commit");
    drop(conn);
    assert_eq!(recorder.get(named), 0, "unnamed, or inside a transaction: fine");

    let conn = pool.get().await.expect("get");
    conn.query("SELECT $1::int", &[&3i32])
        .await
        .expect("named, outside a transaction");
    drop(conn);
    assert_eq!(
        recorder.get(named),
        1,
        "what breaks behind a transaction pooler is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_for_silence_is_counted() {
    let recorder = Counters::default();
    let support::Proxied { proxy, url, .. } = support::behind_a_proxy().await;
    let mut config = support::config_for_url(&url, "silence-metric")
        .pool_size(1)
        .unanswered_timeout(UnansweredTimeout::After(Duration::from_millis(800)));
    config.connect = config.connect.statement_timeout(Some(Duration::from_millis(300)));
    let pool = metrics::with_local_recorder(&recorder, || Pool::new(config)).expect("pool");
    let conn = pool.get().await.expect("get");
    conn.batch_execute("SELECT 1").await.expect("through the proxy");
    let counted = "holdfast_pool_unanswered_closed_total";
    assert_eq!(recorder.get(counted), 0);
    proxy.update(|f| f.upstream.blackhole = true).expect("blackhole");
    let answer = tokio::time::timeout(support::BOUND, conn.batch_execute("SELECT 2"))
        .await
        .expect("closed for its silence");
    assert!(answer.is_err());
    assert_eq!(recorder.get(counted), 1);
}

#[tokio::test]
async fn a_failing_after_connect_hook_is_counted() {
    let recorder = Counters::default();
    let config = support::config_for(cluster(), "hook-metric")
        .pool_timeout(Duration::from_millis(300))
        .after_connect(|conn| {
            Box::pin(async move {
                conn.batch_execute("SET ROLE no_such_role").await?;
                Ok(())
            })
        });
    let pool = metrics::with_local_recorder(&recorder, || Pool::new(config)).expect("pool");
    assert!(pool.get().await.is_err(), "no connection passes the hook");
    assert!(recorder.get("holdfast_pool_after_connect_failures_total") >= 1);
    assert_eq!(recorder.get("holdfast_pool_acquired_total"), 0);
}

#[tokio::test]
async fn the_gauges_agree_with_the_status_right_after_the_first_checkout() {
    let recorder = Counters::default();
    let config = support::config_for(cluster(), "gauges").pool_size(2);
    let pool = metrics::with_local_recorder(&recorder, || Pool::new(config)).expect("pool");
    let conn = pool.get().await.expect("get");
    // No maintenance pass has run yet: the connect published them.
    let status = pool.status();
    assert_eq!(recorder.gauge("holdfast_pool_open"), status.open as f64);
    assert_eq!(recorder.gauge("holdfast_pool_in_use"), status.in_use as f64);
    assert_eq!(status.in_use, 1);
    drop(conn);
}

#[tokio::test]
async fn the_waiting_gauge_counts_callers_waiting_for_a_lane_being_made() {
    use futures_util::FutureExt;
    let recorder = Counters::default();
    let config = support::config_for(cluster(), "gauges-lane")
        .pool_size(1)
        .max_overflow(0)
        .pool_timeout(Duration::from_secs(60));
    let pool = metrics::with_local_recorder(&recorder, || Pool::new(config)).expect("pool");
    // The only connection is held: A queues for it to make a lane of, B waits for A's lane.
    let held = pool.get().await.expect("the only connection");
    let mut a = Box::pin(pool.query("SELECT 1", &[]));
    assert!(a.as_mut().now_or_never().is_none(), "A queues for the connection");
    let mut b = Box::pin(pool.query("SELECT 2", &[]));
    assert!(b.as_mut().now_or_never().is_none(), "B waits for A's lane");
    assert_eq!(pool.status().waiting, 2, "{}", pool.status());
    assert_eq!(
        recorder.gauge("holdfast_pool_waiting"),
        2.0,
        "the gauge says what the status says"
    );
    drop(held);
    let (a, b) = tokio::join!(a, b);
    assert_eq!(a.expect("A")[0].get::<_, i32>(0), 1);
    assert_eq!(b.expect("B")[0].get::<_, i32>(0), 2);
}
