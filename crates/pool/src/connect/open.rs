//! Opening a tapped connection: each host in turn (or shuffled), TLS negotiated by holdfast
//! under the wire tap, start-up and authentication by tokio-postgres over the tapped stream,
//! then the server's role checked against `target_session_attrs`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use holdfast_wire::{Gathering, Tap};
use tokio::sync::mpsc;
use tokio_postgres::config::{Host, SslMode as PgSslMode, SslNegotiation};
use tokio_postgres::Notification;

use super::config::ConnectConfig;
use super::connection::{Connection, Peer};
use super::credentials::Credentials;
use super::socket::Socket;
use super::statement_spans::{StatementSpans, Target as StatementTarget};
use super::target::{self, Role, TargetSessionAttrs};
use super::tls::config::{SslMode, Tls};
use super::tls::stream::{
    failure_from_rustls, find_rustls_error, negotiate, CancelTls, Handover, NegotiateError, Transport,
};
use crate::error::ConnectError;

pub(super) async fn open(
    config: &ConnectConfig,
    notify: Option<mpsc::UnboundedSender<Notification>>,
) -> Result<Connection, ConnectError> {
    let pg = config.pg();
    let hosts = pg.get_hosts();
    if hosts.is_empty() {
        return Err(ConnectError::NoHost);
    }
    let wanted = config.get_target_session_attrs();
    let timeout = config.get_connect_timeout();
    let credentials = match config.get_credentials() {
        Some(provider) => match tokio::time::timeout(timeout, provider.fetch()).await {
            Ok(Ok(credentials)) => Some(credentials),
            Ok(Err(error)) => {
                return Err(ConnectError::Credentials {
                    reason: super::box_error_text(&error),
                })
            }
            Err(_) => {
                return Err(ConnectError::Credentials {
                    reason: format!("no answer within connect_timeout ({timeout:?})"),
                })
            }
        },
        None => None,
    };
    let mut attempts = Vec::new();
    // prefer-standby: the first server that is not a standby is kept aside, and handed out
    // only when no host is a standby (libpq tries every host a second time instead).
    let mut fallback = None;
    for i in target::host_order(hosts.len(), config.get_load_balance_hosts()) {
        let host = &hosts[i];
        let ports = pg.get_ports();
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let target = describe(host, port);
        let hostaddr = pg.get_hostaddrs().get(i).copied();
        // As libpq: each host gets the whole connect_timeout.
        let attempt = tokio::time::timeout(
            timeout,
            connect_host(
                config,
                host,
                hostaddr,
                port,
                &target,
                credentials.as_ref(),
                notify.clone(),
            ),
        )
        .await
        .unwrap_or_else(|_| {
            Err(ConnectError::Timeout {
                target: target.clone(),
                timeout,
            })
        });
        let error = match attempt {
            Ok(connection) if !wanted.needs_role() => return Ok(connection),
            Ok(connection) => match qualify(connection, config, &target).await {
                Ok(connection) => return Ok(connection),
                Err((error, Some(other))) if fallback.is_none() => {
                    fallback = Some(other);
                    error
                }
                Err((error, _)) => error,
            },
            Err(error) => error,
        };
        tracing::debug!(target = %target, %error, "connect attempt failed");
        attempts.push(error);
    }
    if let Some(connection) = fallback {
        return Ok(connection);
    }
    if attempts.len() == 1 && !wanted.needs_role() {
        if let Some(only) = attempts.pop() {
            return Err(only);
        }
    }
    Err(ConnectError::NoHostQualified { wanted, attempts })
}

/// Checks a fresh connection's server against `wanted`: from what it reported at start-up,
/// else (an older server, or a pooler that does not pass the parameters on) by asking. A
/// refused prefer-standby connection comes back beside its error, as the fallback.
async fn qualify(
    mut connection: Connection,
    config: &ConnectConfig,
    target: &str,
) -> Result<Connection, (ConnectError, Option<Connection>)> {
    let wanted = config.get_target_session_attrs();
    let timeout = config.get_connect_timeout();
    let role = match Role::reported(connection.state().server_role()) {
        Some(role) => role,
        None => match tokio::time::timeout(timeout, ask_role(&connection)).await {
            Ok(Ok(role)) => role,
            Ok(Err(error)) => {
                return Err((
                    ConnectError::Postgres {
                        target: target.to_string(),
                        error,
                    },
                    None,
                ))
            }
            Err(_) => {
                return Err((
                    ConnectError::Timeout {
                        target: target.to_string(),
                        timeout,
                    },
                    None,
                ))
            }
        },
    };
    connection.role = Some(role);
    let lag = match config.get_max_standby_lag() {
        Some(bound) if role.hot_standby && wanted.accepts(role) => {
            match tokio::time::timeout(timeout, standby_lag(&connection)).await {
                Ok(Ok(lag)) if lag > bound => Some((lag, bound)),
                Ok(Ok(_)) => None,
                Ok(Err(error)) => {
                    let error = ConnectError::Postgres {
                        target: target.to_string(),
                        error,
                    };
                    return Err((error, None));
                }
                Err(_) => {
                    let error = ConnectError::Timeout {
                        target: target.to_string(),
                        timeout,
                    };
                    return Err((error, None));
                }
            }
        }
        _ => None,
    };
    if wanted.accepts(role) && lag.is_none() {
        return Ok(connection);
    }
    let error = match lag {
        Some((lag, bound)) => ConnectError::StandbyBehind {
            target: target.to_string(),
            lag,
            bound,
        },
        None => ConnectError::WrongRole {
            target: target.to_string(),
            wanted,
            server: role.describe(),
        },
    };
    // A standby behind its bound is no fallback: the primary (or nothing) is.
    let fallback = (wanted == TargetSessionAttrs::PreferStandby && lag.is_none()).then_some(connection);
    Err((error, fallback))
}

/// How far a standby is behind: nothing when it has replayed all it received, else the time
/// since the last commit it replayed (or since it started, if it replayed none yet).
async fn standby_lag(connection: &Connection) -> Result<std::time::Duration, tokio_postgres::Error> {
    let row = connection
        .client()
        .query_one(
            "SELECT CASE WHEN pg_catalog.pg_last_wal_receive_lsn() = pg_catalog.pg_last_wal_replay_lsn() \
             THEN 0 ELSE extract(epoch FROM now() - coalesce(pg_catalog.pg_last_xact_replay_timestamp(), \
             pg_catalog.pg_postmaster_start_time())) END::float8",
            &[],
        )
        .await?;
    let seconds: f64 = row.get(0);
    Ok(std::time::Duration::from_secs_f64(seconds.max(0.0)))
}

/// The role of a server that did not report it (PostgreSQL 13 and older).
async fn ask_role(connection: &Connection) -> Result<Role, tokio_postgres::Error> {
    let row = connection
        .client()
        .query_one(
            "SELECT pg_catalog.pg_is_in_recovery(), \
             pg_catalog.current_setting('default_transaction_read_only') = 'on'",
            &[],
        )
        .await?;
    Ok(Role {
        hot_standby: row.get(0),
        default_read_only: row.get(1),
    })
}

async fn connect_host(
    config: &ConnectConfig,
    host: &Host,
    hostaddr: Option<std::net::IpAddr>,
    port: u16,
    target: &str,
    credentials: Option<&Credentials>,
    notify: Option<mpsc::UnboundedSender<Notification>>,
) -> Result<Connection, ConnectError> {
    let io_error = |source| ConnectError::Io {
        target: target.to_string(),
        error: source,
    };
    match host {
        Host::Unix(dir) => {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            let socket = Socket::unix(&path).await.map_err(io_error)?;
            // libpq looks up "localhost" in the password file for socket connections.
            let to = Endpoint {
                target,
                peer: Peer::Unix(path),
                host: "localhost",
                port,
                credentials,
            };
            start(config, config.get_tls(), socket, to, notify)
                .await
                .map_err(|f| f.error)
        }
        Host::Tcp(name) => {
            // `hostaddr` (libpq): connect there, and verify the certificate against `host`.
            let addrs = match hostaddr {
                Some(ip) => vec![SocketAddr::new(ip, port)],
                None => resolve(name, port).await.map_err(io_error)?,
            };
            let mut last = None;
            for addr in addrs {
                let socket = match Socket::tcp(addr, config).await {
                    Ok(socket) => socket,
                    Err(source) => {
                        last = Some(source);
                        continue;
                    }
                };
                let to = Endpoint {
                    target,
                    peer: Peer::Tcp(addr),
                    host: name,
                    port,
                    credentials,
                };
                return match start(config, config.get_tls(), socket, to.clone(), notify.clone()).await {
                    Ok(connection) => Ok(connection),
                    // libpq's prefer: when TLS fails, or the server refuses the session over
                    // TLS (a `hostnossl` rule), try once more without it.
                    Err(Failed {
                        error,
                        retry_plain: true,
                    }) => {
                        tracing::debug!(target = %target, %error, "TLS failed with sslmode=prefer: trying without TLS");
                        let socket = Socket::tcp(addr, config).await.map_err(io_error)?;
                        start(config, &Tls::disabled(), socket, to, notify)
                            .await
                            .map_err(|f| f.error)
                    }
                    Err(f) => Err(f.error),
                };
            }
            Err(io_error(last.unwrap_or_else(|| {
                std::io::Error::other("the host name resolved to no address")
            })))
        }
    }
}

async fn resolve(name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    Ok(tokio::net::lookup_host((name, port)).await?.collect())
}

/// Where one connect goes: for messages and cancel requests, and the host name TLS verifies
/// and the password file is searched for; and as whom, when a provider said.
#[derive(Debug, Clone)]
struct Endpoint<'a> {
    target: &'a str,
    peer: Peer,
    host: &'a str,
    port: u16,
    credentials: Option<&'a Credentials>,
}

/// Why a start failed, and whether libpq's `prefer` would try again without TLS.
struct Failed {
    error: ConnectError,
    retry_plain: bool,
}

/// Negotiates TLS as `tls_settings` say, then runs start-up and authentication over the
/// tapped stream and spawns the driver.
async fn start(
    config: &ConnectConfig,
    tls_settings: &Tls,
    socket: Socket,
    to: Endpoint<'_>,
    notify: Option<mpsc::UnboundedSender<Notification>>,
) -> Result<Connection, Failed> {
    let Endpoint {
        target,
        peer,
        host,
        port,
        credentials,
    } = to;
    let prefer = tls_settings.mode() == SslMode::Prefer;
    let negotiated = negotiate(tls_settings, socket, host).await.map_err(|e| match e {
        NegotiateError::Io(source) => Failed {
            error: ConnectError::Io {
                target: target.to_string(),
                error: source,
            },
            retry_plain: false,
        },
        NegotiateError::Tls(f) => Failed {
            error: ConnectError::Tls {
                target: target.to_string(),
                problem: f.problem,
                detail: f.detail,
            },
            retry_plain: prefer,
        },
    })?;
    let tls = matches!(negotiated.transport, Transport::Tls(_));
    let mut tap = Tap::new(negotiated.transport);
    let state = tap.state();
    let gathering = Gathering::new();
    tap.gather(gathering.clone());
    let mut pg = config.startup_config(host, port, credentials);
    let statements = StatementSpans::wanted(StatementTarget {
        database: pg.get_dbname().or(pg.get_user()).unwrap_or_default().to_string(),
        address: host.to_string(),
        port,
        text: config.get_trace_statement_text(),
    })
    .map(Arc::new);
    if let Some(spans) = &statements {
        tap.listen(spans.clone());
    }
    if tls {
        // TLS is already up: tokio-postgres must not send an SSLRequest of its own.
        pg.ssl_mode(PgSslMode::Require)
            .ssl_negotiation(SslNegotiation::Direct);
    } else {
        pg.ssl_mode(PgSslMode::Disable);
    }
    let handover = Handover {
        binding: negotiated.binding,
    };
    let (client, driver) = pg.connect_raw(tap, handover).await.map_err(|source| {
        // A certificate the server refused shows as an alert on the first read.
        let error = match find_rustls_error(&source) {
            Some(e) => {
                let f = failure_from_rustls(e, host);
                ConnectError::Tls {
                    target: target.to_string(),
                    problem: f.problem,
                    detail: f.detail,
                }
            }
            None => ConnectError::Postgres {
                target: target.to_string(),
                error: source,
            },
        };
        let refused_over_tls = matches!(error, ConnectError::Tls { .. })
            || error.sqlstate()
                == Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
        Failed {
            error,
            retry_plain: prefer && tls && refused_over_tls,
        }
    })?;
    let shared = Arc::new(AtomicBool::new(false));
    let driver = super::driver::spawn(driver, notify, Arc::clone(&shared));
    tracing::debug!(target = %target, backend_pid = state.backend_pid(), "connected");
    let role = Role::reported(state.server_role());
    Ok(Connection {
        client,
        state,
        statements,
        driver,
        shared,
        gathering,
        opened_at: Instant::now(),
        peer,
        cancel_tls: CancelTls {
            tls: tls_settings.clone(),
            host: host.to_string(),
        },
        tls,
        role,
        timeline: std::sync::OnceLock::new(),
    })
}

fn describe(host: &Host, port: u16) -> String {
    match host {
        Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
        Host::Tcp(name) => format!("{name}:{port}"),
        Host::Unix(dir) => Path::new(dir)
            .join(format!(".s.PGSQL.{port}"))
            .display()
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallback for servers that do not report their role (PostgreSQL 13 and older, whose
    /// query is the same on a newer server).
    #[tokio::test]
    async fn a_server_that_does_not_report_its_role_is_asked() {
        let url = holdfast_testkit::cluster().url();
        let config = ConnectConfig::from_url(&url).expect("url");
        let conn = open(&config, None).await.expect("connect");
        let role = ask_role(&conn).await.expect("asked");
        assert_eq!(Role::reported(conn.state().server_role()), Some(role));
        conn.batch_execute("SET default_transaction_read_only = on")
            .await
            .expect("set");
        let role = ask_role(&conn).await.expect("asked");
        assert!(role.default_read_only && !role.hot_standby && role.read_only());
    }
}
