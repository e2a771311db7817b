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
        read_answer(&mut stream, &mut raw).await
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

/// Reads an answer: up to its `Content-Length` when it gives one (some servers keep the
/// connection open despite `Connection: close`), else to the end of the stream.
async fn read_answer(stream: &mut tokio::net::TcpStream, raw: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(total) = answer_length(raw) {
            if raw.len() >= total {
                return Ok(());
            }
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        raw.extend_from_slice(&chunk[..n]);
    }
}

/// The whole answer's length in bytes, once its head is in and gives a `Content-Length`.
fn answer_length(raw: &[u8]) -> Option<usize> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    })?;
    Some(end + length)
}

#[cfg(test)]
mod tests {
    use super::answer_length;

    #[test]
    fn an_answer_ends_at_its_content_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length:5\r\n\r\nhello";
        assert_eq!(answer_length(raw), Some(raw.len()));
        assert_eq!(answer_length(b"HTTP/1.1 200 OK\r\nContent-Le"), None);
        assert_eq!(answer_length(b"HTTP/1.1 200 OK\r\n\r\nto the end"), None);
    }
}
