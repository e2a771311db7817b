//! The run's own database servers: one, or, when the plan fails over or switches over, a
//! primary and its synchronous standby. After a failover (the primary killed) or a
//! switchover (the primary stopped), the standby is promoted and the old primary is rebuilt
//! as the new one's synchronous standby in the background, ready for the next fault.

use std::sync::{Arc, Mutex};

use holdfast_tempdb::{ClusterOptions, Replication, StopMode, TempCluster};
use tokio::task::JoinHandle;

use crate::error::ServiceError;

/// One server, or a primary and its standby.
#[derive(Debug)]
pub struct Nodes {
    servers: Vec<Arc<TempCluster>>,
    primary: Mutex<usize>,
    /// The old primary being rebuilt as a standby after the last failover or switchover.
    rejoining: tokio::sync::Mutex<Option<JoinHandle<Result<(), ServiceError>>>>,
}

/// How the primary goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// Killed (immediate shutdown, as a crash), then the standby promoted.
    Failover,
    /// Stopped (fast shutdown: sessions end, the standby receives everything), then the
    /// standby promoted.
    Switchover,
}

impl Nodes {
    /// Starts one server, or (`standby`) a primary and its synchronous standby. Blocking.
    pub fn start(standby: bool) -> Result<Nodes, ServiceError> {
        let primary = TempCluster::start(ClusterOptions::demo())?;
        let mut servers = vec![Arc::new(primary)];
        if standby {
            let standby = servers[0].start_standby(Replication::Synchronous)?;
            servers.push(Arc::new(standby));
        }
        Ok(Nodes {
            servers,
            primary: Mutex::new(0),
            rejoining: tokio::sync::Mutex::new(None),
        })
    }

    /// Every server's port, in the order the service lists them.
    pub fn ports(&self) -> Vec<u16> {
        self.servers.iter().map(|s| s.port()).collect()
    }

    /// The current primary.
    pub fn primary(&self) -> Arc<TempCluster> {
        Arc::clone(&self.servers[self.primary_index()])
    }

    /// Whether there is a standby to fail over to.
    pub fn has_standby(&self) -> bool {
        self.servers.len() > 1
    }

    fn primary_index(&self) -> usize {
        *self.primary.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the standby the primary (`how` the old one goes), returns once the new one
    /// accepts writes; the old one rejoins as its synchronous standby in the background.
    pub async fn hand_over(&self, how: Handover) -> Result<String, ServiceError> {
        if !self.has_standby() {
            return Err(ServiceError::Run("no standby to fail over to".into()));
        }
        // The previous handover's rebuild must be done: a standby is needed now.
        let mut rejoining = self.rejoining.lock().await;
        if let Some(previous) = rejoining.take() {
            previous
                .await
                .map_err(|e| ServiceError::Run(format!("rebuilding the old primary: {e}")))??;
        }
        let old = self.primary_index();
        let new = 1 - old;
        let (from, to) = (Arc::clone(&self.servers[old]), Arc::clone(&self.servers[new]));
        let (stopped, promoted) = (Arc::clone(&from), Arc::clone(&to));
        tokio::task::spawn_blocking(move || {
            match how {
                Handover::Failover => stopped.kill()?,
                Handover::Switchover => stopped.stop_with(StopMode::Fast)?,
            }
            promoted.promote()
        })
        .await
        .map_err(|e| ServiceError::Run(format!("promoting the standby: {e}")))??;
        *self.primary.lock().unwrap_or_else(|p| p.into_inner()) = new;
        *rejoining = Some(tokio::task::spawn_blocking(move || {
            Ok(from.rejoin_as_standby_of(&to, Replication::Synchronous)?)
        }));
        let verb = match how {
            Handover::Failover => "killed",
            Handover::Switchover => "stopped",
        };
        Ok(format!(
            "{verb} the primary (port {}), promoted the standby (port {}); the old primary rejoins as its standby",
            self.servers[old].port(),
            self.servers[new].port()
        ))
    }
}
