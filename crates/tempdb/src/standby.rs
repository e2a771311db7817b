//! Streaming replication between throwaway clusters: a standby of a cluster (asynchronous, or
//! synchronous on request), its promotion, and an old primary rebuilt as a standby of the
//! new one, which is what a failover or a switchover leaves behind.

use std::process::Stdio;
use std::time::Instant;

use crate::cluster::{append, io_error, quote, TempCluster};
use crate::error::{Error, Result};
use crate::options::StopMode;
use crate::process::{output_tail, POLL};

/// How a standby follows its primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Replication {
    /// The primary does not wait for the standby (PostgreSQL's default).
    #[default]
    Asynchronous,
    /// The primary's commits wait until the standby has flushed them
    /// (`synchronous_standby_names` names it): nothing acknowledged is lost on a failover.
    Synchronous,
}

impl TempCluster {
    /// Starts a streaming standby of this cluster (a base backup, then hot standby on a port
    /// of its own), and waits until it streams (and, synchronous, until the primary counts it
    /// as its synchronous standby).
    pub fn start_standby(&self, replication: Replication) -> Result<TempCluster> {
        let mut standby = TempCluster::prepare(self.bin.clone(), self.options.clone())?;
        standby.become_standby_of(self)?;
        standby.start_on_free_port()?;
        self.follow(&standby, replication)?;
        Ok(standby)
    }

    /// Promotes this standby to a primary and waits until it accepts writes.
    pub fn promote(&self) -> Result<()> {
        let done = self.psql("postgres", "SELECT pg_promote(true, 60)")?;
        if done == "t" {
            Ok(())
        } else {
            Err(Error::Command {
                program: "pg_promote".into(),
                status: done,
                output: self.log_tail(20),
            })
        }
    }

    /// True while the server is a standby in recovery.
    pub fn is_in_recovery(&self) -> Result<bool> {
        Ok(self.psql("postgres", "SELECT pg_is_in_recovery()")? == "t")
    }

    /// Turns this cluster (a primary that failed over or was switched over) into a standby of
    /// `primary`: stopped if running, its data replaced by a base backup of `primary`, and
    /// started again on the same port. (What `pg_rewind` or a rebuild does in production.)
    pub fn rejoin_as_standby_of(&self, primary: &TempCluster, replication: Replication) -> Result<()> {
        if self.is_running() {
            self.stop_with(StopMode::Fast)?;
        }
        std::fs::remove_dir_all(&self.data).map_err(|source| io_error("remove", &self.data, source))?;
        self.become_standby_of(primary)?;
        self.start_server()?;
        primary.follow(self, replication)
    }

    /// The name this cluster streams under (its directory's), as `synchronous_standby_names`
    /// and `pg_stat_replication` know it.
    pub fn standby_name(&self) -> String {
        let dir = self
            .root
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let clean: String = dir
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("standby_{clean}")
    }

    /// Base backup of `primary` into this cluster's (absent) data directory, then the
    /// settings of a standby that streams from it.
    fn become_standby_of(&self, primary: &TempCluster) -> Result<()> {
        let output = self
            .command("pg_basebackup")
            .arg("-h")
            .arg(&primary.root)
            .args(["-p", &primary.port.to_string(), "-U", crate::SUPERUSER, "-D"])
            .arg(&self.data)
            .args(["-X", "stream", "-c", "fast", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Spawn {
                program: self.bin.program("pg_basebackup"),
                error: source,
            })?;
        if !output.status.success() {
            return Err(Error::Command {
                program: "pg_basebackup".into(),
                status: output.status.to_string(),
                output: output_tail(&output),
            });
        }
        // The backup carries the primary's settings (and its ALTER SYSTEM ones): the
        // standby's own come after them, so they win.
        let auto = self.data.join("postgresql.auto.conf");
        std::fs::write(&auto, "").map_err(|source| io_error("empty", &auto, source))?;
        self.configure()?;
        let conninfo = format!(
            "host={} port={} user={} application_name={}",
            primary.root.display(),
            primary.port,
            crate::SUPERUSER,
            self.standby_name()
        );
        append(
            &self.data.join("postgresql.conf"),
            &format!("primary_conninfo = {}\n", quote(&conninfo)),
        )?;
        self.write_server_file("standby.signal", b"", 0o600)
    }

    /// Waits until `standby` streams from this primary; synchronous, makes it the primary's
    /// synchronous standby first.
    fn follow(&self, standby: &TempCluster, replication: Replication) -> Result<()> {
        let name = standby.standby_name();
        if replication == Replication::Synchronous {
            self.psql(
                "postgres",
                &format!("ALTER SYSTEM SET synchronous_standby_names = '\"{name}\"'"),
            )?;
            self.psql("postgres", "SELECT pg_reload_conf()")?;
        }
        let wanted_sync = if replication == Replication::Synchronous {
            "sync"
        } else {
            "async"
        };
        let query = format!(
            "SELECT count(*) FROM pg_stat_replication \
             WHERE application_name = '{name}' AND state = 'streaming' AND sync_state = '{wanted_sync}'"
        );
        let deadline = Instant::now() + self.options.start_timeout;
        loop {
            if self.psql("postgres", &query)? == "1" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::StartTimeout {
                    seconds: self.options.start_timeout.as_secs(),
                    log: standby.log_tail(20),
                });
            }
            std::thread::sleep(POLL * 10);
        }
    }
}
