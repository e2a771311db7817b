//! Statements prepared once per connection across schema changes: a migration that changes a
//! cached statement's result columns costs callers nothing, a statement the change really
//! broke fails with the server's message, and the per-connection cache stays bounded.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use holdfast_pool::Pool;
use support::{cluster, config_for, eventually};

async fn prepared_statements(conn: &holdfast_pool::PooledConnection) -> u64 {
    let rows = conn
        .simple_query("SELECT count(*) FROM pg_prepared_statements")
        .await
        .expect("count");
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .expect("a row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_cache_is_bounded_and_evicted_statements_are_closed() {
    let pool = Pool::new(config_for(cluster(), "lru").pool_size(1).statement_cache_size(4)).expect("pool");
    let conn = pool.get().await.expect("get");
    for n in 0..20_i32 {
        let sql = format!("SELECT {n}::int");
        let row = conn.query_cached(&sql, &[]).await.expect("query");
        assert_eq!(row[0].get::<_, i32>(0), n);
    }
    assert_eq!(
        prepared_statements(&conn).await,
        4,
        "only the 4 most recent stay prepared"
    );
    // The most recently used survive: these are answered from the cache (no new prepare).
    for n in 16..20_i32 {
        conn.query_cached(&format!("SELECT {n}::int"), &[])
            .await
            .expect("cached");
    }
    assert_eq!(prepared_statements(&conn).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_under_load_cost_callers_nothing() {
    let pool = Pool::new(config_for(cluster(), "migrations").pool_size(4)).expect("pool");
    pool.execute("CREATE TABLE t (id int, keep text, gone int)", &[])
        .await
        .expect("create");
    pool.execute(
        "INSERT INTO t SELECT g, 'x', g FROM generate_series(1, 10) g",
        &[],
    )
    .await
    .expect("rows");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut callers = Vec::new();
    for i in 0..16 {
        let (pool, stop, done, errors) = (
            pool.clone(),
            Arc::clone(&stop),
            Arc::clone(&done),
            Arc::clone(&errors),
        );
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // Half through pool.query (shared connections), half through query_cached.
                let result = if i % 2 == 0 {
                    pool.query("SELECT * FROM t ORDER BY id", &[])
                        .await
                        .map(|r| r.len())
                } else {
                    match pool.get().await {
                        Ok(conn) => conn
                            .query_cached("SELECT * FROM t ORDER BY id", &[])
                            .await
                            .map(|r| r.len())
                            .map_err(holdfast_pool::PoolError::from),
                        Err(e) => Err(e),
                    }
                };
                match result {
                    Ok(_) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.lock().expect("errors").push(e.to_string()),
                }
            }
        }));
    }
    let admin = support::admin(&pool).await;
    for ddl in [
        "ALTER TABLE t ADD COLUMN added int DEFAULT 7",
        "ALTER TABLE t DROP COLUMN gone",
        "ALTER TABLE t ALTER COLUMN id TYPE bigint",
    ] {
        // Callers run before and after each change.
        let before = done.load(Ordering::Relaxed);
        eventually("callers make progress", || async {
            done.load(Ordering::Relaxed) > before + 200
        })
        .await;
        admin.batch_execute(ddl).await.expect(ddl);
    }
    let before = done.load(Ordering::Relaxed);
    eventually("callers make progress after the last change", || async {
        done.load(Ordering::Relaxed) > before + 200
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("caller");
    }
    let errors = errors.lock().expect("errors").clone();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );

    // A statement the change really broke fails with the server's own message.
    let error = pool.query("SELECT gone FROM t", &[]).await.expect_err("gone");
    let text = error.to_string();
    assert!(text.contains("gone") && text.contains("42703"), "{text}");
}
