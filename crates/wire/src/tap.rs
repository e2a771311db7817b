//! The wire tap: a transparent stream wrapper that frames the bytes passing through it in
//! both directions and keeps a [`WireState`] up to date.

use std::fmt;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::framing::{Direction, Framer};
use crate::state::{Liveness, WireState};
use crate::tracker::{Hint, Tracker};

/// Wraps the stream a PostgreSQL client talks over (give it to
/// `tokio_postgres::Config::connect_raw`). Bytes pass through unchanged and uncopied; the
/// framing runs over them in place.
pub struct Tap<S> {
    inner: S,
    frontend: Framer,
    backend: Framer,
    tracker: Tracker,
}

impl<S> Tap<S> {
    /// Taps a fresh connection, before the client's first byte.
    pub fn new(inner: S) -> Tap<S> {
        Tap {
            inner,
            frontend: Framer::new(Direction::Frontend),
            backend: Framer::new(Direction::Backend),
            tracker: Tracker::new(WireState::new()),
        }
    }

    /// The state this tap publishes; clone it freely.
    pub fn state(&self) -> WireState {
        self.tracker.state().clone()
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Frames bytes the client wrote.
    fn wrote(&mut self, data: &[u8]) {
        let tracker = &mut self.tracker;
        let mut hint = Hint::None;
        let result = self.frontend.feed(data, |frame| {
            let h = tracker.frontend(&frame);
            if h != Hint::None {
                hint = h;
            }
        });
        if hint == Hint::ExpectNegotiationByte {
            self.backend.expect_negotiation_byte();
        }
        self.tracker.transferred(data.len(), 0);
        if result.is_err() {
            self.tracker.died(Liveness::Malformed);
        }
        self.tracker.state().cells.wake_watchers();
    }

    /// Frames bytes the server sent.
    fn read(&mut self, data: &[u8]) {
        let tracker = &mut self.tracker;
        let mut hint = Hint::None;
        let result = self.backend.feed(data, |frame| {
            let h = tracker.backend(&frame);
            if h != Hint::None {
                hint = h;
            }
        });
        if hint == Hint::ExpectStartupPacket {
            self.frontend.expect_startup_packet();
        }
        self.tracker.transferred(0, data.len());
        if result.is_err() {
            self.tracker.died(Liveness::Malformed);
        }
        self.tracker.state().cells.wake_watchers();
    }

    fn failed<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if result.is_err() {
            self.died(Liveness::IoError);
        }
        result
    }

    fn died(&mut self, how: Liveness) {
        self.tracker.died(how);
        self.tracker.state().cells.wake_watchers();
    }
}

impl<S> Drop for Tap<S> {
    fn drop(&mut self) {
        self.died(Liveness::Dropped);
    }
}

impl<S> fmt::Debug for Tap<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tap")
            .field("state", self.tracker.state())
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
                this.died(Liveness::Closed);
            } else {
                this.read(filled);
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
            this.wrote(&buf[..n]);
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
                this.wrote(&slice[..take]);
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
