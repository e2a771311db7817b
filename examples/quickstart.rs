//! A complete program on holdfast alone: the pool from the environment, a table, a
//! transaction, a statement through `pool.query`. The facade's README shows the same program.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --example quickstart
//! ```

use holdfast::prelude::*;
use holdfast::tokio_postgres;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // DATABASE_URL and the DB_* settings; a bad value fails here, naming the setting.
    let pool = Pool::new(PoolConfig::from_env()?)?;
    pool.execute(
        "CREATE TABLE IF NOT EXISTS notes (id bigserial PRIMARY KEY, body text NOT NULL)",
        &[],
    )
    .await?;

    // A transaction: retried when a retry can help, committed exactly once. The closure may
    // run more than once and may borrow the caller's locals: take the references first and
    // move them in. Its future is boxed; the error type is named once, on the `Ok`.
    let body = String::from("hello");
    let body = &body;
    let id: i64 = pool
        .transaction(TxOptions::new(), move |tx| {
            Box::pin(async move {
                let row = tx
                    .query_one("INSERT INTO notes (body) VALUES ($1) RETURNING id", &[body])
                    .await?;
                Ok::<_, tokio_postgres::Error>(row.get(0))
            })
        })
        .await?;

    // One statement, no checkout: pipelined with other callers' on shared connections.
    let rows = pool.query("SELECT body FROM notes WHERE id = $1", &[&id]).await?;
    let body: String = rows[0].get(0);
    println!("note {id}: {body}");

    pool.close().await;
    Ok(())
}
