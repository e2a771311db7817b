//! Opening the socket under a connection: TCP with keepalive and `TCP_USER_TIMEOUT`, or a
//! unix socket.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, UnixStream};

use super::config::ConnectConfig;

/// A connected TCP or unix stream.
#[derive(Debug)]
pub enum Socket {
    /// TCP, with keepalive and user timeout applied.
    Tcp(TcpStream),
    /// A unix domain socket.
    Unix(UnixStream),
}

impl Socket {
    /// Connects over TCP to `addr` and applies the keepalive and user-timeout settings.
    pub(crate) async fn tcp(addr: SocketAddr, config: &ConnectConfig) -> io::Result<Socket> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_nodelay(true)?;
        {
            let sock = SockRef::from(&socket);
            if let Some(k) = config.get_keepalive() {
                let keepalive = TcpKeepalive::new()
                    .with_time(k.idle)
                    .with_interval(k.interval)
                    .with_retries(k.retries);
                sock.set_tcp_keepalive(&keepalive)?;
            }
            if let Some(timeout) = config.get_tcp_user_timeout() {
                sock.set_tcp_user_timeout(Some(timeout))?;
            }
        }
        Ok(Socket::Tcp(socket.connect(addr).await?))
    }

    /// Connects to the unix socket at `path` (`<dir>/.s.PGSQL.<port>`).
    pub(crate) async fn unix(path: &Path) -> io::Result<Socket> {
        Ok(Socket::Unix(UnixStream::connect(path).await?))
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Socket::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Socket::Tcp(s) => s.is_write_vectored(),
            Socket::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::Keepalive;
    use std::time::Duration;

    #[tokio::test]
    async fn tcp_sockets_get_keepalive_and_user_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = ConnectConfig::from_url(&format!("postgres://u@{addr}/d"))
            .expect("url")
            .keepalive(Some(Keepalive {
                idle: Duration::from_secs(7),
                interval: Duration::from_secs(3),
                retries: 4,
            }))
            .tcp_user_timeout(Some(Duration::from_millis(12_500)));
        let Socket::Tcp(stream) = Socket::tcp(addr, &config).await.expect("connect") else {
            panic!("expected TCP");
        };
        let sock = SockRef::from(&stream);
        assert!(sock.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(
            sock.keepalive_time().expect("TCP_KEEPIDLE"),
            Duration::from_secs(7)
        );
        assert_eq!(
            sock.keepalive_interval().expect("TCP_KEEPINTVL"),
            Duration::from_secs(3)
        );
        assert_eq!(sock.keepalive_retries().expect("TCP_KEEPCNT"), 4);
        assert_eq!(
            sock.tcp_user_timeout().expect("TCP_USER_TIMEOUT"),
            Some(Duration::from_millis(12_500))
        );
        assert!(stream.nodelay().expect("TCP_NODELAY"));
    }

    #[tokio::test]
    async fn keepalive_can_be_left_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = ConnectConfig::from_url(&format!("postgres://u@{addr}/d"))
            .expect("url")
            .keepalive(None)
            .tcp_user_timeout(None);
        let Socket::Tcp(stream) = Socket::tcp(addr, &config).await.expect("connect") else {
            panic!("expected TCP");
        };
        assert!(!SockRef::from(&stream).keepalive().expect("SO_KEEPALIVE"));
    }
}
