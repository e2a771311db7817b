//! A database's address and credentials, taken apart so a fault proxy can go in front of
//! it: the demo and the load run connect the service to the proxy, and the proxy to this.

use crate::error::ServiceError;

/// Where a database is, and who connects to it.
#[derive(Clone)]
pub struct Target {
    /// The TCP host.
    pub host: String,
    /// The port.
    pub port: u16,
    user: Option<String>,
    password: Option<Vec<u8>>,
    dbname: Option<String>,
}

impl Target {
    /// Reads a connection URL (or key=value string); the error names DATABASE_URL.
    pub fn parse(url: &str) -> Result<Target, ServiceError> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| {
            ServiceError::Run(format!(
                "DATABASE_URL: invalid connection URL {:?}: {e}",
                holdfast::pool::redact_url(url)
            ))
        })?;
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => {
                return Err(ServiceError::Run(
                    "DATABASE_URL: a TCP host is needed to put the fault proxy in front of it".into(),
                ))
            }
        };
        Ok(Target {
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            user: config.get_user().map(str::to_string),
            password: config.get_password().map(<[u8]>::to_vec),
            dbname: config.get_dbname().map(str::to_string),
        })
    }

    /// A key=value connection string to database `dbname` as `user` on 127.0.0.1 at each of
    /// `ports` in order, to whichever of them accepts writes (a primary and its standbys).
    pub fn on_hosts(ports: &[u16], user: &str, dbname: &str) -> String {
        let hosts = vec!["127.0.0.1"; ports.len()].join(",");
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        format!(
            "host={hosts} port={} user={user} dbname={dbname} target_session_attrs=read-write",
            ports.join(",")
        )
    }

    /// A key=value connection string to the same database through the proxy.
    pub fn through(&self, port: u16) -> String {
        let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut s = format!("host=127.0.0.1 port={port}");
        if let Some(user) = &self.user {
            s.push_str(&format!(" user={}", quote(user)));
        }
        if let Some(password) = &self.password {
            s.push_str(&format!(
                " password={}",
                quote(&String::from_utf8_lossy(password))
            ));
        }
        if let Some(dbname) = &self.dbname {
            s.push_str(&format!(" dbname={}", quote(dbname)));
        }
        s
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Resolves the host to the address a proxy relays to.
    pub async fn resolve(&self) -> Result<std::net::SocketAddr, ServiceError> {
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(ServiceError::io(format!(
                "DATABASE_URL: cannot resolve {}",
                self.host
            )))?
            .next()
            .ok_or_else(|| ServiceError::Run(format!("DATABASE_URL: {} resolves to no address", self.host)))
    }
}
