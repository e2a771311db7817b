//! A TCP relay in front of PostgreSQL that counts the client's requests (`Query`, `Sync`,
//! `FunctionCall`): each is one round trip. Used to count what a pool sends per checkout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use holdfast_wire::{Direction, Framer, Tag, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running relay; requests are counted across all its connections.
pub struct Relay {
    pub port: u16,
    requests: Arc<AtomicU64>,
}

impl Relay {
    pub async fn start(upstream_port: u16) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let requests = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        relay(client, server, counter).await;
                    }
                });
            }
        });
        Ok(Relay { port, requests })
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

async fn relay(client: TcpStream, server: TcpStream, requests: Arc<AtomicU64>) {
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = server.into_split();
    let upstream = async move {
        let mut framer = Framer::new(Direction::Frontend);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut negotiating = false;
            let fed = framer.feed(&buf[..n], |frame| {
                if matches!(frame.tag, Tag::Typed(b'Q' | b'S' | b'F')) {
                    requests.fetch_add(1, Ordering::Relaxed);
                }
                negotiating |= matches!(frame.startup_code(), Some(SSL_REQUEST_CODE | GSSENC_REQUEST_CODE));
            });
            if fed.is_err() {
                // Miscounting silently would print a wrong figure: stop relaying instead,
                // so the benchmark fails on the dropped connection.
                break;
            }
            if negotiating {
                // The servers benchmarked here decline encryption ('N'), after which the
                // client sends its StartupMessage in the clear.
                framer.expect_startup_packet();
            }
            if server_w.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_w.shutdown().await;
    };
    let downstream = async move {
        let _ = tokio::io::copy(&mut server_r, &mut client_w).await;
        let _ = client_w.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}
