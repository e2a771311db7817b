//! `pool.query`: one statement in autocommit, without checking out a connection. Statements
//! from many callers are pipelined on a few shared connections.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --example query
//! ```

use holdfast::prelude::*;
use holdfast::tokio_postgres::types::Type;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::from_env()?;

    // Parameters take the types the server infers, as with tokio-postgres's `query`.
    let rows = pool
        .query("SELECT n, n * n FROM generate_series(1, $1::int4) AS n", &[&5i32])
        .await?;
    for row in &rows {
        let (n, square): (i32, i32) = (row.get(0), row.get(1));
        println!("{n}^2 = {square}");
    }

    // Or say each parameter's type, as with tokio-postgres's `query_typed`.
    let rows = pool
        .query_typed(
            "SELECT $1 || ' from ' || current_database()",
            &[(&"hello", Type::TEXT)],
        )
        .await?;
    let greeting: String = rows[0].get(0);
    println!("{greeting}");

    // Many callers at once share connections: 100 statements, a handful of connections.
    let mut calls = Vec::new();
    for i in 0..100i64 {
        let pool = pool.clone();
        calls.push(tokio::spawn(async move {
            pool.query("SELECT $1::int8 * 2", &[&i]).await
        }));
    }
    let mut sum = 0i64;
    for call in calls {
        sum += call.await??[0].get::<_, i64>(0);
    }
    println!("sum {sum}; {:?}", pool.status());
    pool.close().await;
    Ok(())
}
