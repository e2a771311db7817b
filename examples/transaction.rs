//! A transaction that commits exactly once: retried on serialization failures, deadlocks and
//! lost connections, with a lost COMMIT reply resolved from the server instead of guessed.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --example transaction
//! ```

use holdfast::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::from_env()?;
    pool.execute(
        "CREATE TABLE IF NOT EXISTS example_accounts (id int8 PRIMARY KEY, balance int8 NOT NULL)",
        &[],
    )
    .await?;
    pool.execute(
        "INSERT INTO example_accounts VALUES (1, 100), (2, 0) ON CONFLICT (id) DO NOTHING",
        &[],
    )
    .await?;

    let amount = 10i64;
    // The closure may run more than once (each attempt on a fresh transaction); its effects
    // commit once. Returning an error rolls back.
    let balances = pool
        .transaction(TxOptions::new().serializable(), move |tx| {
            Box::pin(async move {
                tx.execute(
                    "UPDATE example_accounts SET balance = balance - $1 WHERE id = 1",
                    &[&amount],
                )
                .await?;
                tx.execute(
                    "UPDATE example_accounts SET balance = balance + $1 WHERE id = 2",
                    &[&amount],
                )
                .await?;
                let rows = tx
                    .query("SELECT id, balance FROM example_accounts ORDER BY id", &[])
                    .await?;
                Ok::<_, holdfast::tokio_postgres::Error>(
                    rows.iter()
                        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
                        .collect::<Vec<_>>(),
                )
            })
        })
        .await;

    match balances {
        Ok(balances) => println!("committed: {balances:?}"),
        // The error names its stage (begin, the body, commit) and the server's message and
        // SQLSTATE.
        Err(e) => eprintln!("transfer failed: {e}"),
    }
    pool.close().await;
    Ok(())
}
