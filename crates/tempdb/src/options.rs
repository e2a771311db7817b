//! How a throwaway cluster is set up.

use std::time::Duration;

/// What the cluster is for; decides its durability settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Purpose {
    /// Fast and disposable: `fsync` and `full_page_writes` off. Acknowledged commits survive a
    /// killed server (not a machine crash).
    #[default]
    Test,
    /// Behaves like a real server (durable commits), for demos and load runs.
    Demo,
}

/// How to stop the server (the `pg_ctl stop -m` modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopMode {
    /// Wait for every session to end on its own (SIGTERM).
    Smart,
    /// Roll back open transactions, end every session, shut down cleanly (SIGINT).
    #[default]
    Fast,
    /// Quit at once without a checkpoint, like a crash; recovery runs at the next start
    /// (SIGQUIT).
    Immediate,
}

/// Settings for [`TempCluster::start`](crate::TempCluster::start).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Durability profile.
    pub purpose: Purpose,
    /// `max_connections` of the server.
    pub max_connections: u32,
    /// Extra `postgresql.conf` settings, written after holdfast's own (so they win).
    pub settings: Vec<(String, String)>,
    /// Lines placed at the top of `pg_hba.conf`, before the default `trust` rules; for
    /// example `host all md5_user 127.0.0.1/32 md5`.
    pub hba_lines: Vec<String>,
    /// Files written into the data directory before the server starts (certificates and
    /// keys for `ssl = on`, say): name relative to the data directory, contents, and Unix
    /// permission bits. They belong to the account that runs the server.
    pub files: Vec<(String, Vec<u8>, u32)>,
    /// How long to wait for the server to accept connections.
    pub start_timeout: Duration,
    /// How long to wait for the server to stop.
    pub stop_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            purpose: Purpose::Test,
            max_connections: 100,
            settings: Vec::new(),
            hba_lines: Vec::new(),
            files: Vec::new(),
            start_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(60),
        }
    }
}

impl ClusterOptions {
    /// Options for a demo cluster (durable settings).
    pub fn demo() -> Self {
        ClusterOptions {
            purpose: Purpose::Demo,
            ..Default::default()
        }
    }

    /// Adds a `postgresql.conf` setting.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Adds a `pg_hba.conf` line ahead of the default rules.
    pub fn hba_line(mut self, line: impl Into<String>) -> Self {
        self.hba_lines.push(line.into());
        self
    }

    /// Adds a file to write into the data directory before the server starts (for example
    /// `server_file("server.key", pem, 0o600)` with `setting("ssl_key_file", "'server.key'")`).
    pub fn server_file(mut self, name: impl Into<String>, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.files.push((name.into(), contents.into(), mode));
        self
    }

    /// Sets `max_connections`.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }
}
