//! Pools for tests: named by test, bounded waits.

use std::time::Duration;

use holdfast_pool::{ConnectConfig, Pool, PoolConfig};
use holdfast_tempdb::TempCluster;

/// A pool config for a fresh database of `cluster`, its connections named after `test`.
pub fn config_for(cluster: &TempCluster, test: &str) -> PoolConfig {
    match cluster.create_database() {
        Ok(db) => config_for_url(&db.url, test),
        Err(e) => panic!("create database: {e}"),
    }
}

/// A pool config for `url`, its connections named after `test` (see
/// [`app_name`](crate::app_name)), waiting at most [`BOUND`](crate::BOUND).
pub fn config_for_url(url: &str, test: &str) -> PoolConfig {
    let connect = match ConnectConfig::from_url(url) {
        Ok(connect) => connect
            .application_name(&crate::app_name(test))
            .connect_timeout(Duration::from_secs(10)),
        Err(e) => panic!("bad test URL: {e}"),
    };
    PoolConfig::new(connect).pool_timeout(crate::BOUND)
}

/// A pool of `size` (and as much overflow) to `url`, its connections named exactly `app`,
/// reconnecting quickly: for tests whose faults come and go within seconds.
pub fn pool(url: &str, app: &str, size: usize) -> Pool {
    let connect = match ConnectConfig::from_url(url) {
        Ok(connect) => connect
            .application_name(app)
            .connect_timeout(Duration::from_secs(5)),
        Err(e) => panic!("bad test URL: {e}"),
    };
    let config = PoolConfig::new(connect)
        .pool_size(size)
        .max_overflow(size)
        .pool_timeout(Duration::from_secs(10))
        .reconnect_backoff_max(Duration::from_millis(200));
    match Pool::new(config) {
        Ok(pool) => pool,
        Err(e) => panic!("pool: {e}"),
    }
}
