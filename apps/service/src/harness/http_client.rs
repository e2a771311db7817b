//! A minimal HTTP/1.1 client for the demo and load runs against the service on loopback:
//! one request per connection, JSON in and out.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a request got.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The HTTP status, or 0 when no answer came (connection refused, timeout).
    pub status: u16,
    /// The body as JSON (`Null` if it was not JSON).
    pub body: Value,
}

impl Reply {
    /// 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why no answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing within the timeout.
    Timeout,
    /// The connection could not be made.
    Connect,
    /// The connection broke, or the answer was not HTTP.
    Broken,
}

impl Failure {
    /// A short name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Connect => "connect",
            Failure::Broken => "broken",
        }
    }
}

/// An answer: status and body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReply {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub text: String,
}

/// Sends one request and reads the whole answer, bounded by `timeout`.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Reply {
    match fetch(addr, method, path, body, timeout).await {
        Ok(raw) => Reply {
            status: raw.status,
            body: serde_json::from_str(&raw.text).unwrap_or(Value::Null),
        },
        Err(_) => Reply {
            status: 0,
            body: Value::Null,
        },
    }
}

/// Sends one request and returns the answer as text, or why none came.
pub async fn fetch(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<RawReply, Failure> {
    match tokio::time::timeout(timeout, exchange(addr, method, path, body)).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Timeout),
    }
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<RawReply, Failure> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|_| Failure::Connect)?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    let mut raw = Vec::new();
    let sent = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(payload.as_bytes()).await?;
        stream.read_to_end(&mut raw).await
    };
    sent.await.map_err(|_| Failure::Broken)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(Failure::Broken)?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok(RawReply {
        status,
        text: body.to_string(),
    })
}
