//! A fresh database of the shared cluster behind a fault proxy.

use std::net::SocketAddr;

use holdfast_faults::{FaultProxy, ProxyHandle};
use holdfast_tempdb::Database;

/// A database reached through a fault proxy: its direct URL and the proxied one.
#[derive(Debug)]
pub struct Proxied {
    /// The proxy (faults are set on it).
    pub proxy: ProxyHandle,
    /// The database.
    pub db: Database,
    /// A URL to the database through the proxy.
    pub url: String,
}

/// A fresh database of the shared cluster, and a fault proxy in front of the cluster.
pub async fn behind_a_proxy() -> Proxied {
    let cluster = crate::cluster();
    let db = match cluster.create_database() {
        Ok(db) => db,
        Err(e) => panic!("create database: {e}"),
    };
    let upstream = SocketAddr::from(([127, 0, 0, 1], cluster.port()));
    let proxy = match FaultProxy::start_local(upstream).await {
        Ok(proxy) => proxy,
        Err(e) => panic!("fault proxy: {e}"),
    };
    let url = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port(), db.name);
    Proxied { proxy, db, url }
}
