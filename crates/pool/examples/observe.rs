//! Starts a throwaway PostgreSQL, opens one tapped connection and prints what the wire tap
//! observes at each step of a transaction: no query is ever sent to find the state out.
//!
//! Run: `cargo run -p holdfast-pool --example observe`

use holdfast_pool::{connect, ConnectConfig, Connection};
use holdfast_tempdb::{ClusterOptions, TempCluster};

fn show(step: &str, conn: &Connection) {
    let s = conn.state().snapshot();
    println!(
        "{step:<44} status={:<13} in_flight={} commit={:<10} tag={:<12} liveness={:?}",
        format!("{:?}", s.tx_status),
        s.in_flight,
        format!("{:?}", s.commit),
        format!("{:?}", s.last_command_tag),
        s.liveness,
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("starting a throwaway PostgreSQL cluster...");
    let cluster = TempCluster::start(ClusterOptions::demo())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = ConnectConfig::from_url(&cluster.url())?.application_name("holdfast-observe");
        let conn = connect(&config).await?;
        println!("connected to backend pid {:?}\n", conn.backend_pid());
        show("after connect", &conn);
        conn.batch_execute("CREATE TABLE episodes (id int PRIMARY KEY, title text)")
            .await?;
        show("CREATE TABLE", &conn);
        conn.batch_execute("BEGIN").await?;
        show("BEGIN (raw, the driver does not know)", &conn);
        conn.execute("INSERT INTO episodes VALUES (1, 'pilot')", &[])
            .await?;
        show("INSERT", &conn);
        let err = conn
            .execute("INSERT INTO episodes VALUES (1, 'again')", &[])
            .await;
        conn.state().wait_for(|s| s.in_flight() == 0).await;
        show(&format!("duplicate INSERT ({})", sqlstate(&err)), &conn);
        conn.batch_execute("COMMIT").await?;
        show("COMMIT of a failed transaction", &conn);
        conn.batch_execute("BEGIN; INSERT INTO episodes VALUES (2, 'two')")
            .await?;
        show("BEGIN; INSERT", &conn);
        conn.batch_execute("COMMIT").await?;
        show("COMMIT", &conn);
        let admin = connect(&config).await?;
        let pid = conn.backend_pid().unwrap_or_default();
        admin.execute("SELECT pg_terminate_backend($1)", &[&pid]).await?;
        conn.state().wait_for(|s| s.liveness().is_dead()).await;
        show("after pg_terminate_backend (nothing sent)", &conn);
        let snap = conn.state().snapshot();
        println!(
            "\n{} bytes sent, {} received; {} messages sent, {} received; last SQLSTATE {:?}",
            snap.bytes_sent,
            snap.bytes_received,
            snap.messages_sent,
            snap.messages_received,
            snap.last_sqlstate
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    println!("stopping the cluster and removing its directory");
    Ok(())
}

fn sqlstate(result: &Result<u64, tokio_postgres::Error>) -> String {
    match result {
        Ok(_) => "no error".to_string(),
        Err(e) => e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| e.to_string()),
    }
}
