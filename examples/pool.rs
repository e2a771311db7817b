//! The pool: settings from `DATABASE_URL` and the `DB_*` variables, a connection checked out,
//! used and given back.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --example pool
//! ```

use holdfast::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Every setting has a `DB_*` variable and a setter; a bad value fails here, naming the
    // setting, the value and what is accepted.
    let pool = Pool::new(PoolConfig::from_env()?.pool_size(4))?;

    {
        let conn = pool.get().await?;
        let row = conn
            .query_one("SELECT current_database(), current_user", &[])
            .await?;
        let (database, user): (String, String) = (row.get(0), row.get(1));
        println!(
            "connected to {database} as {user} (server process {:?})",
            conn.backend_pid()
        );
        // Whatever happens here (an error, a panic, a BEGIN left open), the connection is
        // rolled back or discarded before anyone else gets it.
    }

    println!("{:?}", pool.status());
    pool.close().await;
    Ok(())
}
