//! One cluster per test process, shared by every test in it.

use std::sync::OnceLock;

use crate::cluster::TempCluster;
use crate::error::Error;
use crate::options::ClusterOptions;

/// The cluster shared by all tests of this process, started on first use with default
/// options. Give each test its own database with
/// [`create_database`](TempCluster::create_database); tests that stop, restart or kill the
/// server must start a cluster of their own.
///
/// It lives until the process exits; its watchdog then stops the server and removes the
/// directory.
pub fn shared() -> Result<&'static TempCluster, &'static Error> {
    static SHARED: OnceLock<Result<TempCluster, Error>> = OnceLock::new();
    SHARED
        .get_or_init(|| TempCluster::start(ClusterOptions::default()))
        .as_ref()
}
