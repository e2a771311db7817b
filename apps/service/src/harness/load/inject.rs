//! Playing faults for real: through the run's own fault proxies or a `holdfast faults`
//! control port, on the run's own database (restart, failover, switchover), or with SQL
//! (terminate).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use holdfast::Pool;

use crate::error::ServiceError;
use holdfast_faults::{Faults, Latency, ProxyHandle};
use holdfast_tempdb::StopMode;
use serde_json::json;

use super::nodes::{Handover, Nodes};
use super::plan::FaultKind;
use crate::harness::http_client::fetch;

/// Where proxy faults go.
#[derive(Debug)]
pub enum Proxy {
    /// The run's own proxies (one in front of each server).
    Local(Vec<ProxyHandle>),
    /// A `holdfast faults` control port.
    Remote(SocketAddr),
    /// No proxy in front of the database.
    Absent,
}

/// Plays faults.
#[derive(Debug)]
pub struct Injector {
    /// Where proxy faults go.
    pub proxy: Proxy,
    /// The run's own database servers, if it has them.
    pub nodes: Option<Arc<Nodes>>,
    /// A direct connection to the service's database (not through the proxy).
    pub admin: Pool,
    /// Delay of the latency fault, each way.
    pub latency: Duration,
}

/// The application name of the run's own sessions, which `terminate` spares.
pub const OWN_APPLICATION_NAME: &str = "holdfast-load";

impl Injector {
    /// Refuses, before anything starts, a plan this setup cannot play; the error says why
    /// and what would make it playable.
    pub fn check(&self, kinds: &[FaultKind]) -> Result<(), ServiceError> {
        for kind in kinds {
            if kind.needs_proxy() && matches!(self.proxy, Proxy::Absent) {
                return Err(ServiceError::Run(format!(
                    "--faults {}: needs the fault proxy; against a running service give --faults-control (the control port of `holdfast faults` in front of its database)",
                    kind.as_str()
                )));
            }
            if *kind == FaultKind::Restart && self.nodes.is_none() {
                return Err(ServiceError::Run(
                    "--faults restart: only the run's own database is restarted; leave out --url to let the run start its own"
                        .into(),
                ));
            }
            if kind.needs_standby() && !self.nodes.as_ref().is_some_and(|n| n.has_standby()) {
                return Err(ServiceError::Run(format!(
                    "--faults {}: only the run's own database fails over (it then starts a synchronous standby); leave out --url and --database-url",
                    kind.as_str()
                )));
            }
        }
        Ok(())
    }

    /// Starts a fault; returns what was done, for the report.
    pub async fn begin(&self, kind: FaultKind) -> Result<String, ServiceError> {
        match kind {
            FaultKind::None => Ok("nothing".into()),
            FaultKind::Kill => {
                let n = match &self.proxy {
                    Proxy::Local(proxies) => proxies.iter().map(|p| p.reset_all() as u64).sum(),
                    Proxy::Remote(control) => {
                        let reply = control_call(*control, "POST", "/reset", None).await?;
                        reply["reset"].as_u64().unwrap_or(0)
                    }
                    Proxy::Absent => return Err(no_proxy()),
                };
                Ok(format!("reset {n} connections through the proxy"))
            }
            FaultKind::Failover | FaultKind::Switchover => {
                let nodes = self
                    .nodes
                    .as_ref()
                    .ok_or_else(|| ServiceError::Run("no database of the run's own to fail over".into()))?;
                let how = if kind == FaultKind::Failover {
                    Handover::Failover
                } else {
                    Handover::Switchover
                };
                nodes.hand_over(how).await
            }
            FaultKind::Restart => {
                let cluster = self
                    .nodes
                    .as_ref()
                    .map(|n| n.primary())
                    .ok_or_else(|| ServiceError::Run("no database of the run's own to restart".into()))?;
                tokio::task::spawn_blocking(move || cluster.restart(StopMode::Fast))
                    .await
                    .map_err(|e| ServiceError::Run(format!("restarting the database: {e}")))??;
                Ok("restarted the database (fast shutdown)".into())
            }
            FaultKind::Terminate => {
                let conn = self.admin.get().await?;
                let n: i64 = conn
                    .query_one(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
                         FROM pg_stat_activity
                         WHERE datname = current_database() AND backend_type = 'client backend'
                           AND pid <> pg_backend_pid() AND application_name <> $1",
                        &[&OWN_APPLICATION_NAME],
                    )
                    .await
                    .map_err(ServiceError::database("terminating backends"))?
                    .get(0);
                Ok(format!("terminated {n} backends"))
            }
            FaultKind::Blackhole => {
                let mut faults = Faults::none();
                faults.upstream.blackhole = true;
                faults.downstream.blackhole = true;
                self.set(faults).await?;
                Ok("the proxy swallows every byte both ways".into())
            }
            FaultKind::Latency => {
                let ms = self.latency.as_millis() as u64;
                let mut faults = Faults::none();
                let delay = Latency {
                    base_ms: ms,
                    jitter_ms: 0,
                };
                faults.upstream.latency = Some(delay);
                faults.downstream.latency = Some(delay);
                self.set(faults).await?;
                Ok(format!("the proxy delays every chunk by {ms} ms each way"))
            }
        }
    }

    /// Ends a lasting fault (instant ones need nothing).
    pub async fn end(&self, kind: FaultKind) -> Result<(), ServiceError> {
        if kind.lasts() {
            self.set(Faults::none()).await?;
        }
        Ok(())
    }

    async fn set(&self, faults: Faults) -> Result<(), ServiceError> {
        match &self.proxy {
            Proxy::Local(proxies) => {
                for proxy in proxies {
                    proxy.set(faults.clone())?;
                }
                Ok(())
            }
            Proxy::Remote(control) => {
                let body = serde_json::to_value(&faults)
                    .map_err(|e| ServiceError::Run(format!("the faults as JSON: {e}")))?;
                control_call(*control, "PUT", "/faults", Some(&body))
                    .await
                    .map(drop)
            }
            Proxy::Absent => Err(no_proxy()),
        }
    }
}

async fn control_call(
    control: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<serde_json::Value, ServiceError> {
    let reply = fetch(control, method, path, body, Duration::from_secs(5))
        .await
        .map_err(|f| {
            ServiceError::Run(format!(
                "--faults-control {control}: {method} {path}: {}",
                f.as_str()
            ))
        })?;
    if !(200..300).contains(&reply.status) {
        return Err(ServiceError::Run(format!(
            "--faults-control {control}: {method} {path} answered {}: {}",
            reply.status, reply.text
        )));
    }
    Ok(serde_json::from_str(&reply.text).unwrap_or(json!(null)))
}

fn no_proxy() -> ServiceError {
    ServiceError::Run("no fault proxy in front of the database".into())
}
