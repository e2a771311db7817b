//! Opening a tapped connection, and the connection itself: a tokio-postgres `Client` that
//! knows its own state.

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::Path;
use std::time::{Duration, Instant};

use holdfast_wire::{Tap, WireState};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::config::{Host, SslMode as PgSslMode, SslNegotiation};
use tokio_postgres::{AsyncMessage, Client, Notification};

use crate::connect_config::ConnectConfig;
use crate::error::ConnectError;
use crate::socket::Socket;
use crate::tls_config::{SslMode, Tls};
use crate::tls_stream::{
    failure_from_rustls, find_rustls_error, negotiate, CancelTls, Handover, NegotiateError, Transport,
};

/// One open connection: a tokio-postgres [`Client`] (it derefs to it) plus the
/// [`WireState`] its tap keeps and the task that drives it.
///
/// Dropping it closes the connection: with no reply owed, the driver ends the session with
/// `Terminate`; with a reply still owed, the socket is closed at once (see `Drop`).
#[derive(Debug)]
pub struct Connection {
    client: Client,
    state: WireState,
    driver: JoinHandle<()>,
    opened_at: Instant,
    peer: Peer,
    /// How a cancel request reaches the server: over TLS when the session uses it.
    cancel_tls: CancelTls,
    tls: bool,
}

/// Where the server was reached, for cancel requests (which go over a new socket).
#[derive(Debug, Clone)]
enum Peer {
    Tcp(SocketAddr),
    Unix(std::path::PathBuf),
}

/// Bound on sending a cancel request.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

impl Connection {
    /// The driver's client, for queries.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The driver's client, mutably (tokio-postgres' `transaction()` needs it).
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// What the wire tap has observed; reading it costs a few atomic loads.
    pub fn state(&self) -> &WireState {
        &self.state
    }

    /// The server process serving this connection.
    pub fn backend_pid(&self) -> Option<i32> {
        self.state.backend_pid()
    }

    /// True when the session is encrypted with TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// When the connection finished start-up.
    pub fn opened_at(&self) -> Instant {
        self.opened_at
    }

    /// Time since the connection finished start-up.
    pub fn age(&self) -> Duration {
        self.opened_at.elapsed()
    }

    /// True when the connection can no longer be used: the wire saw it end, or the driver
    /// stopped.
    pub fn is_closed(&self) -> bool {
        self.state.liveness().is_dead() || self.client.is_closed() || self.driver.is_finished()
    }

    /// Asks the server to cancel whatever this connection is running (a cancel request over
    /// a new socket to the same server, as libpq's `PQcancel` does). The running request then
    /// ends with SQLSTATE 57014; if nothing runs, nothing happens.
    pub async fn cancel_query(&self) -> Result<(), ConnectError> {
        let target = match &self.peer {
            Peer::Tcp(addr) => addr.to_string(),
            Peer::Unix(path) => path.display().to_string(),
        };
        let send = async {
            let socket = match &self.peer {
                Peer::Tcp(addr) => Socket::Tcp(tokio::net::TcpStream::connect(addr).await?),
                Peer::Unix(path) => Socket::Unix(tokio::net::UnixStream::connect(path).await?),
            };
            Ok::<_, std::io::Error>(socket)
        };
        let socket = match tokio::time::timeout(CANCEL_TIMEOUT, send).await {
            Ok(Ok(socket)) => socket,
            Ok(Err(source)) => return Err(ConnectError::Io { target, source }),
            Err(_) => {
                return Err(ConnectError::Timeout {
                    target,
                    timeout: CANCEL_TIMEOUT,
                })
            }
        };
        let token = self.client.cancel_token();
        let cancel = token.cancel_query_raw(socket, self.cancel_tls.clone());
        match tokio::time::timeout(CANCEL_TIMEOUT, cancel).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(ConnectError::Postgres { target, source }),
            Err(_) => Err(ConnectError::Timeout {
                target,
                timeout: CANCEL_TIMEOUT,
            }),
        }
    }

    /// A handle that ends the driver (closing the socket) from elsewhere.
    pub(crate) fn driver_handle(&self) -> tokio::task::AbortHandle {
        self.driver.abort_handle()
    }

    /// Closes the socket at once, without a `Terminate` (for connections that may be stuck).
    pub fn abort(self) {
        self.driver.abort();
    }
}

impl Drop for Connection {
    /// tokio-postgres keeps the socket open after its `Client` is dropped until every reply
    /// owed has arrived, and nobody reads them any more. If the server or the network hung,
    /// that is forever: the socket, the driver task and the server session (perhaps idle in a
    /// transaction, holding locks) would all leak. So a connection dropped while owed a reply
    /// is closed at once; the server rolls back what it had open.
    fn drop(&mut self) {
        if self.state.in_flight() > 0 {
            self.driver.abort();
        }
    }
}

impl Deref for Connection {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Opens a connection, trying each configured host in order. The whole attempt (name lookup,
/// TCP, start-up, authentication) is bounded by the connect timeout.
pub async fn connect(config: &ConnectConfig) -> Result<Connection, ConnectError> {
    open(config, None).await
}

/// Like [`connect`], and delivers the server's `NOTIFY` messages (after a `LISTEN`) on the
/// returned channel. The channel ends when the connection does.
pub async fn connect_listening(
    config: &ConnectConfig,
) -> Result<(Connection, mpsc::UnboundedReceiver<Notification>), ConnectError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let connection = open(config, Some(tx)).await?;
    Ok((connection, rx))
}

async fn open(
    config: &ConnectConfig,
    notify: Option<mpsc::UnboundedSender<Notification>>,
) -> Result<Connection, ConnectError> {
    let pg = config.pg();
    let hosts = pg.get_hosts();
    if hosts.is_empty() {
        return Err(ConnectError::NoHost);
    }
    let timeout = config.get_connect_timeout();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    for (i, host) in hosts.iter().enumerate() {
        let ports = pg.get_ports();
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let target = describe(host, port);
        let hostaddr = pg.get_hostaddrs().get(i).copied();
        match tokio::time::timeout_at(
            deadline,
            connect_host(config, host, hostaddr, port, &target, notify.clone()),
        )
        .await
        {
            Ok(Ok(connection)) => return Ok(connection),
            Ok(Err(e)) => {
                tracing::debug!(target = %target, error = %e, "connect attempt failed");
                last = Some(e);
            }
            Err(_) => return Err(ConnectError::Timeout { target, timeout }),
        }
    }
    Err(last.unwrap_or(ConnectError::NoHost))
}

async fn connect_host(
    config: &ConnectConfig,
    host: &Host,
    hostaddr: Option<std::net::IpAddr>,
    port: u16,
    target: &str,
    notify: Option<mpsc::UnboundedSender<Notification>>,
) -> Result<Connection, ConnectError> {
    let io_error = |source| ConnectError::Io {
        target: target.to_string(),
        source,
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
/// and the password file is searched for.
#[derive(Debug, Clone)]
struct Endpoint<'a> {
    target: &'a str,
    peer: Peer,
    host: &'a str,
    port: u16,
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
    } = to;
    let prefer = tls_settings.mode() == SslMode::Prefer;
    let negotiated = negotiate(tls_settings, socket, host).await.map_err(|e| match e {
        NegotiateError::Io(source) => Failed {
            error: ConnectError::Io {
                target: target.to_string(),
                source,
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
    let tap = Tap::new(negotiated.transport);
    let state = tap.state();
    let mut pg = config.startup_config(host, port);
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
                source,
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
    let driver = tokio::spawn(async move {
        let mut driver = driver;
        // Driving it message by message hands notifications on; notices are dropped.
        loop {
            match std::future::poll_fn(|cx| driver.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if let Some(tx) = &notify {
                        let _ = tx.send(n);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::debug!(%error, "connection ended with an error");
                    break;
                }
                None => break,
            }
        }
    });
    tracing::debug!(target = %target, backend_pid = state.backend_pid(), "connected");
    Ok(Connection {
        client,
        state,
        driver,
        opened_at: Instant::now(),
        peer,
        cancel_tls: CancelTls {
            tls: tls_settings.clone(),
            host: host.to_string(),
        },
        tls,
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
