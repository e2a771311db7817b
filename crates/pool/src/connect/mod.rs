//! Connecting: where to connect and how ([`ConnectConfig`], read from a URL and the
//! environment), the socket under a connection, TLS negotiated by holdfast itself so that the
//! wire tap reads the plaintext protocol, and the open [`Connection`] that knows its state.
//!
//! Nothing here knows about the pool: `pool/` uses [`connect`] like any caller.

mod config;
mod connection;
mod credentials;
mod driver;
mod env;
mod open;
pub(crate) mod passfile;
mod pooler;
mod socket;
pub(crate) mod statement_spans;
mod target;
pub(crate) mod tls;
mod url_params;

use tokio::sync::mpsc;
use tokio_postgres::Notification;

use crate::error::ConnectError;
pub use config::{
    redact_url, ConnectConfig, Keepalive, DEFAULT_APPLICATION_NAME, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TCP_USER_TIMEOUT,
};
pub use connection::Connection;
pub(crate) use credentials::box_error_text;
pub use credentials::{BoxError, Credentials};
pub use pooler::Pooler;
pub(crate) use target::Role;
pub use target::TargetSessionAttrs;
pub use tls::config::{RootCerts, SslMode, Tls, TlsOptions};

/// Opens a connection, trying each configured host in order (or shuffled, with
/// `load_balance_hosts=random`) until one qualifies under `target_session_attrs`. Each
/// host's attempt (name lookup, TCP, start-up, authentication) is bounded by the connect
/// timeout, as in libpq.
pub async fn connect(config: &ConnectConfig) -> Result<Connection, ConnectError> {
    open::open(config, None).await
}

/// Like [`connect`], and delivers the server's `NOTIFY` messages (after a `LISTEN`) on the
/// returned channel. The channel ends when the connection does.
pub async fn connect_listening(
    config: &ConnectConfig,
) -> Result<(Connection, mpsc::UnboundedReceiver<Notification>), ConnectError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let connection = open::open(config, Some(tx)).await?;
    Ok((connection, rx))
}
