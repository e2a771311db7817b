//! The wire tap: a transparent stream wrapper that frames the bytes passing through it in
//! both directions and keeps a [`WireState`] up to date.

use std::fmt;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::observer::Observer;
use crate::state::{Liveness, WireState};

/// Wraps the stream a PostgreSQL client talks over (give it to
/// `tokio_postgres::Config::connect_raw`). Bytes pass through unchanged and uncopied; the
/// framing runs over them in place.
pub struct Tap<S> {
    inner: S,
    observer: Observer,
}

impl<S> Tap<S> {
    /// Taps a fresh connection, before the client's first byte.
    pub fn new(inner: S) -> Tap<S> {
        Tap {
            inner,
            observer: Observer::new(),
        }
    }

    /// Tells `listener` of every request written and answered through this tap (for
    /// tracing statements); attach it before the stream is handed to the client.
    pub fn listen(&mut self, listener: crate::Listener) {
        self.observer.listen(listener);
    }

    /// The state this tap publishes; clone it freely.
    pub fn state(&self) -> WireState {
        self.observer.state().clone()
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn failed<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if result.is_err() {
            self.observer.died(Liveness::IoError);
        }
        result
    }
}

impl<S> Drop for Tap<S> {
    fn drop(&mut self) {
        self.observer.died(Liveness::Dropped);
    }
}

impl<S> fmt::Debug for Tap<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tap")
            .field("state", self.observer.state())
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut this.inner).poll_read(cx, buf));
        let result = this.failed(result);
        if result.is_ok() {
            let filled = &buf.filled()[before..];
            if filled.is_empty() && buf.remaining() > 0 {
                this.observer.died(Liveness::Closed);
            } else {
                this.observer.backend_bytes(filled);
            }
        }
        Poll::Ready(result)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = ready!(Pin::new(&mut this.inner).poll_write(cx, buf));
        let result = this.failed(result);
        if let Ok(n) = result {
            this.observer.frontend_bytes(&buf[..n]);
        }
        Poll::Ready(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs));
        let result = this.failed(result);
        if let Ok(mut n) = result {
            for slice in bufs {
                if n == 0 {
                    break;
                }
                let take = n.min(slice.len());
                this.observer.frontend_bytes(&slice[..take]);
                n -= take;
            }
        }
        Poll::Ready(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = ready!(Pin::new(&mut this.inner).poll_flush(cx));
        Poll::Ready(this.failed(result))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = ready!(Pin::new(&mut this.inner).poll_shutdown(cx));
        Poll::Ready(this.failed(result))
    }
}
